//! The core group (except pods): services, endpoints, nodes, namespaces, config, accounts,
//! events, volumes, quotas and replication controllers.

use jiff::Timestamp;
use serde_json::Value;

use super::{
    age, col, containers_and_images, created_at, format_labels, has, int, list, list_with_more,
    load_balancer_ingress, name, or_none, since, text, wide, Column, Printer, AGE, CONTAINERS,
    CREATED_AT, IMAGES, NAME,
};

pub fn printer(kind: &str) -> Option<&'static Printer> {
    Some(match kind {
        "Service" => &SERVICE,
        "Endpoints" => &ENDPOINTS,
        "Node" => &NODE,
        "Namespace" => &NAMESPACE,
        "ConfigMap" => &CONFIG_MAP,
        "Secret" => &SECRET,
        "ServiceAccount" => &SERVICE_ACCOUNT,
        "Event" => &EVENT,
        "PersistentVolume" => &PERSISTENT_VOLUME,
        "PersistentVolumeClaim" => &PERSISTENT_VOLUME_CLAIM,
        "LimitRange" => &LIMIT_RANGE,
        "ResourceQuota" => &RESOURCE_QUOTA,
        "ReplicationController" => &REPLICATION_CONTROLLER,
        _ => return None,
    })
}

static SERVICE: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", "type determines how the Service is exposed."),
        col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly."),
        col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
        col("Port(s)", "string", "The list of ports that are exposed by this service."),
        AGE,
        wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
    ],
    row: |svc, now| {
        let cluster_ip = list(svc, "/spec/clusterIPs")
            .first()
            .and_then(Value::as_str)
            .unwrap_or_else(|| text(svc, "/spec/clusterIP"));
        let ports = or_none(&service_ports(svc));
        vec![
            name(svc),
            Value::from(service_type(svc)),
            Value::from(or_none(cluster_ip)),
            Value::from(external_ip(svc)),
            Value::from(ports),
            age(svc, now),
            Value::from(format_labels(svc.pointer("/spec/selector"))),
        ]
    },
};

fn service_type(svc: &Value) -> &str {
    match text(svc, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    }
}

fn external_ip(svc: &Value) -> String {
    let external: Vec<&str> = list(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match service_type(svc) {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".into(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            let lb = load_balancer_ingress(svc.pointer("/status/loadBalancer"));
            let mut all: Vec<&str> = lb.split(',').filter(|s| !s.is_empty()).collect();
            all.extend(external);
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    }
}

/// `80/TCP,443:30443/TCP`.
fn service_ports(svc: &Value) -> String {
    list(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = match text(p, "/protocol") {
                "" => "TCP",
                proto => proto,
            };
            match int(p, "/nodePort") {
                0 => format!("{}/{protocol}", int(p, "/port")),
                node => format!("{}:{node}/{protocol}", int(p, "/port")),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

static ENDPOINTS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Endpoints",
            "string",
            "The set of all endpoints is the union of all subsets.",
        ),
        AGE,
    ],
    row: |obj, now| vec![name(obj), Value::from(format_endpoints(obj)), age(obj, now)],
};

/// `10.42.0.5:80,10.42.0.6:80 + 3 more...`; `<none>` without subsets.
fn format_endpoints(obj: &Value) -> String {
    let subsets = list(obj, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut all = Vec::new();
    for subset in subsets {
        let addresses: Vec<&str> = list(subset, "/addresses")
            .iter()
            .map(|a| text(a, "/ip"))
            .collect();
        let ports = list(subset, "/ports");
        if ports.is_empty() {
            all.extend(addresses.iter().map(|a| a.to_string()));
            continue;
        }
        for port in ports {
            let port = int(port, "/port");
            for ip in &addresses {
                let host = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip.to_string()
                };
                all.push(format!("{host}:{port}"));
            }
        }
    }
    list_with_more(&all, "")
}

static NODE: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "The status of the node"),
        col("Roles", "string", "The roles of the node"),
        AGE,
        col("Version", "string", "Kubelet Version reported by the node."),
        wide("Internal-IP", "string", "List of addresses reachable to the node."),
        wide("External-IP", "string", "List of addresses reachable to the node."),
        wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
        wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
        wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
    ],
    row: |node, now| {
        let address = |kind: &str| {
            list(node, "/status/addresses")
                .iter()
                .find(|a| text(a, "/type") == kind)
                .map(|a| text(a, "/address").to_string())
                .unwrap_or_else(|| "<none>".into())
        };
        let info = |field: &str| match text(node, &format!("/status/nodeInfo/{field}")) {
            "" => "<unknown>".to_string(),
            v => v.to_string(),
        };
        vec![
            name(node),
            Value::from(node_status(node)),
            Value::from(node_roles(node)),
            age(node, now),
            Value::from(text(node, "/status/nodeInfo/kubeletVersion")),
            Value::from(address("InternalIP")),
            Value::from(address("ExternalIP")),
            Value::from(info("osImage")),
            Value::from(info("kernelVersion")),
            Value::from(info("containerRuntimeVersion")),
        ]
    },
};

fn node_status(node: &Value) -> String {
    let ready = list(node, "/status/conditions")
        .iter()
        .find(|c| text(c, "/type") == "Ready");
    let mut status = vec![match ready.map(|c| text(c, "/status")) {
        Some("True") => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    status.join(",")
}

/// Roles from `node-role.kubernetes.io/<role>` labels and the older `kubernetes.io/role`.
fn node_roles(node: &Value) -> String {
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if key == "kubernetes.io/role" {
                if let Some(role) = value.as_str().filter(|r| !r.is_empty()) {
                    roles.push(role.to_string());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    or_none(&roles.join(","))
}

static NAMESPACE: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "The status of the namespace"),
        AGE,
    ],
    row: |ns, now| {
        vec![
            name(ns),
            Value::from(text(ns, "/status/phase")),
            age(ns, now),
        ]
    },
};

fn count(obj: &Value, pointer: &str) -> usize {
    obj.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

static CONFIG_MAP: Printer = Printer {
    columns: &[
        NAME,
        col("Data", "string", "Data contains the configuration data."),
        AGE,
    ],
    row: |cm, now| {
        let entries = count(cm, "/data") + count(cm, "/binaryData");
        vec![name(cm), Value::from(entries), age(cm, now)]
    },
};

static SECRET: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Type",
            "string",
            "Used to facilitate programmatic handling of secret data.",
        ),
        col("Data", "string", "Data contains the secret data."),
        AGE,
    ],
    row: |s, now| {
        vec![
            name(s),
            Value::from(text(s, "/type")),
            Value::from(count(s, "/data")),
            age(s, now),
        ]
    },
};

static SERVICE_ACCOUNT: Printer = Printer {
    columns: &[
        NAME,
        col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
        AGE,
    ],
    row: |sa, now| vec![name(sa), Value::from(list(sa, "/secrets").len()), age(sa, now)],
};

static EVENT: Printer = Printer {
    columns: &[
        col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
        col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
        col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
        col("Object", "string", "The object that this event is about."),
        wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement."),
        wide("Source", "string", "The component reporting this event."),
        col("Message", "string", "A human-readable description of the status of this operation."),
        wide("First Seen", "string", "The time at which the event was first recorded."),
        wide("Count", "string", "The number of times this event has occurred."),
        Column {
            priority: 1,
            ..NAME
        },
    ],
    row: event_row,
};

/// Core events and `events.k8s.io` events print alike; the field names differ.
pub fn event_row(ev: &Value, now: Timestamp) -> Vec<Value> {
    let new_api = text(ev, "/apiVersion").starts_with("events.k8s.io");
    let field = |core: &str, events: &str| {
        let pointer = if new_api { events } else { core };
        text(ev, pointer).to_string()
    };
    let first_seen_at = field("/firstTimestamp", "/deprecatedFirstTimestamp");
    let first_seen = if first_seen_at.is_empty() {
        since(ev, "/eventTime", now)
    } else {
        since(
            ev,
            if new_api {
                "/deprecatedFirstTimestamp"
            } else {
                "/firstTimestamp"
            },
            now,
        )
    };
    let last_pointer = if new_api {
        "/deprecatedLastTimestamp"
    } else {
        "/lastTimestamp"
    };
    let mut last_seen = if text(ev, last_pointer).is_empty() {
        first_seen.clone()
    } else {
        since(ev, last_pointer, now)
    };
    let mut count = int(
        ev,
        if new_api {
            "/deprecatedCount"
        } else {
            "/count"
        },
    );
    if has(ev, "/series") {
        last_seen = since(ev, "/series/lastObservedTime", now);
        count = int(ev, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let regarding = if new_api {
        ev.get("regarding")
    } else {
        ev.get("involvedObject")
    };
    let regarding = regarding.unwrap_or(&Value::Null);
    let kind = text(regarding, "/kind").to_lowercase();
    let target = match text(regarding, "/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = match field("/source/component", "/deprecatedSource/component") {
        c if c.is_empty() => text(ev, "/reportingController").to_string(),
        c => c,
    };
    let instance = match field("/source/host", "/deprecatedSource/host") {
        h if h.is_empty() => text(ev, "/reportingInstance").to_string(),
        h => h,
    };
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        Value::from(last_seen),
        Value::from(text(ev, "/type")),
        Value::from(text(ev, "/reason")),
        Value::from(target),
        Value::from(text(regarding, "/fieldPath")),
        Value::from(source),
        Value::from(field("/message", "/note").trim()),
        Value::from(first_seen),
        Value::from(count),
        name(ev),
    ]
}

/// `RWO,ROX,RWX,RWOP`.
fn access_modes(modes: &[Value]) -> String {
    let mut short = Vec::new();
    for (long, abbreviation) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if modes.iter().any(|m| m.as_str() == Some(long)) {
            short.push(abbreviation);
        }
    }
    short.join(",")
}

fn storage_class(obj: &Value) -> String {
    match text(obj, "/spec/storageClassName") {
        "" => text(
            obj,
            "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
        )
        .to_string(),
        c => c.to_string(),
    }
}

fn unset_if_empty(s: &str) -> String {
    if s.is_empty() {
        "<unset>".into()
    } else {
        s.to_string()
    }
}

fn phase_or_terminating(obj: &Value) -> String {
    if super::is_deleting(obj) {
        "Terminating".into()
    } else {
        text(obj, "/status/phase").to_string()
    }
}

static PERSISTENT_VOLUME: Printer = Printer {
    columns: &[
        NAME,
        col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
        col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
        col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
        col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
        col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
        col("StorageClass", "string", "StorageClass of the pv"),
        col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
        col("Reason", "string", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
        AGE,
        wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state."),
    ],
    row: |pv, now| {
        let claim = if has(pv, "/spec/claimRef") {
            format!(
                "{}/{}",
                text(pv, "/spec/claimRef/namespace"),
                text(pv, "/spec/claimRef/name")
            )
        } else {
            String::new()
        };
        vec![
            name(pv),
            Value::from(text(pv, "/spec/capacity/storage")),
            Value::from(access_modes(list(pv, "/spec/accessModes"))),
            Value::from(text(pv, "/spec/persistentVolumeReclaimPolicy")),
            Value::from(phase_or_terminating(pv)),
            Value::from(claim),
            Value::from(storage_class(pv)),
            Value::from(unset_if_empty(text(pv, "/spec/volumeAttributesClassName"))),
            Value::from(text(pv, "/status/reason")),
            age(pv, now),
            Value::from(unset_if_empty(text(pv, "/spec/volumeMode"))),
        ]
    },
};

static PERSISTENT_VOLUME_CLAIM: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Status",
            "string",
            "phase represents the current phase of PersistentVolumeClaim.",
        ),
        col(
            "Volume",
            "string",
            "volumeName is the binding reference to the PersistentVolume backing this claim.",
        ),
        col(
            "Capacity",
            "string",
            "capacity represents the actual resources of the underlying volume.",
        ),
        col(
            "Access Modes",
            "string",
            "accessModes contains the actual access modes the volume backing the PVC has.",
        ),
        col("StorageClass", "string", "StorageClass of the pvc"),
        col(
            "VolumeAttributesClass",
            "string",
            "VolumeAttributesClass of the pvc",
        ),
        AGE,
        wide(
            "VolumeMode",
            "string",
            "volumeMode defines what type of volume is required by the claim.",
        ),
    ],
    row: |pvc, now| {
        let volume = text(pvc, "/spec/volumeName");
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            (
                text(pvc, "/status/capacity/storage").to_string(),
                access_modes(list(pvc, "/status/accessModes")),
            )
        };
        vec![
            name(pvc),
            Value::from(phase_or_terminating(pvc)),
            Value::from(volume),
            Value::from(capacity),
            Value::from(modes),
            Value::from(storage_class(pvc)),
            Value::from(unset_if_empty(text(pvc, "/spec/volumeAttributesClassName"))),
            age(pvc, now),
            Value::from(unset_if_empty(text(pvc, "/spec/volumeMode"))),
        ]
    },
};

static LIMIT_RANGE: Printer = Printer {
    columns: &[NAME, CREATED_AT],
    row: |obj, _| vec![name(obj), created_at(obj)],
};

static RESOURCE_QUOTA: Printer = Printer {
    columns: &[
        NAME,
        AGE,
        col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
        col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
    ],
    row: |quota, now| {
        let mut requests = Vec::new();
        let mut limits = Vec::new();
        if let Some(hard) = quota.pointer("/status/hard").and_then(Value::as_object) {
            let mut names: Vec<&String> = hard.keys().collect();
            names.sort();
            for resource in names {
                let used = quota
                    .pointer("/status/used")
                    .and_then(|u| u.get(resource.as_str()))
                    .and_then(Value::as_str)
                    .unwrap_or("0");
                let limit = hard.get(resource.as_str()).and_then(Value::as_str).unwrap_or("");
                let entry = format!("{resource}: {used}/{limit}");
                if resource.starts_with("limits.") {
                    limits.push(entry);
                } else {
                    requests.push(entry);
                }
            }
        }
        vec![
            name(quota),
            age(quota, now),
            Value::from(requests.join(", ")),
            Value::from(limits.join(", ")),
        ]
    },
};

static REPLICATION_CONTROLLER: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Desired",
            "integer",
            "Replicas is the number of desired replicas.",
        ),
        col(
            "Current",
            "integer",
            "Replicas is the most recently observed number of replicas.",
        ),
        col(
            "Ready",
            "integer",
            "The number of ready replicas for this replication controller.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            "string",
            "Selector is a label query over pods that should match the Replicas count.",
        ),
    ],
    row: |rc, now| {
        let (containers, images) = containers_and_images(rc.pointer("/spec/template/spec"));
        vec![
            name(rc),
            Value::from(
                rc.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1),
            ),
            Value::from(int(rc, "/status/replicas")),
            Value::from(int(rc, "/status/readyReplicas")),
            age(rc, now),
            containers,
            images,
            Value::from(format_labels(rc.pointer("/spec/selector"))),
        ]
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::table::printers::test_now;
    use serde_json::json;

    #[test]
    fn services_show_type_cluster_ip_and_ports() {
        let svc = json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T11:59:50Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                     "selector": {"app": "web"},
                     "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080},
                               {"port": 53, "protocol": "UDP"}]}});
        let row = (SERVICE.row)(&svc, test_now());
        assert_eq!(
            row,
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.43.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("10s"),
                json!("app=web")
            ]
        );
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"}});
        assert_eq!((SERVICE.row)(&lb, test_now())[3], "<pending>");
        let ext = json!({"metadata": {"name": "x"},
                         "spec": {"type": "ExternalName", "externalName": "example.com"}});
        let row = (SERVICE.row)(&ext, test_now());
        assert_eq!(
            (row[3].as_str(), row[4].as_str()),
            (Some("example.com"), Some("<none>"))
        );
    }

    #[test]
    fn endpoints_list_address_port_pairs() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.42.0.5"}, {"ip": "10.42.0.6"}],
            "ports": [{"port": 8080}, {"port": 9090}]}]});
        assert_eq!(
            format_endpoints(&ep),
            "10.42.0.5:8080,10.42.0.6:8080,10.42.0.5:9090 + 1 more..."
        );
        assert_eq!(format_endpoints(&json!({})), "<none>");
    }

    #[test]
    fn nodes_show_readiness_roles_and_system_info() {
        let node = json!({"metadata": {"name": "pi1", "labels": {
                "node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "edge"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.5"}],
                       "nodeInfo": {"kubeletVersion": "v1.35.0", "osImage": "Debian"}}});
        let row = (NODE.row)(&node, test_now());
        assert_eq!(row[1], "Ready,SchedulingDisabled");
        assert_eq!(row[2], "control-plane,edge");
        assert_eq!(row[4], "v1.35.0");
        assert_eq!(
            &row[5..8],
            &[json!("192.168.1.5"), json!("<none>"), json!("Debian")]
        );
        assert_eq!(row[8], "<unknown>");
        let bare = json!({"metadata": {"name": "n"}});
        assert_eq!((NODE.row)(&bare, test_now())[1], "Unknown");
    }

    #[test]
    fn namespaces_config_and_accounts_show_counts_and_phase() {
        let ns = json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}});
        assert_eq!((NAMESPACE.row)(&ns, test_now())[1], "Active");
        let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"},
                        "binaryData": {"c": "AA=="}});
        assert_eq!((CONFIG_MAP.row)(&cm, test_now())[1], 3);
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}});
        assert_eq!(
            &(SECRET.row)(&secret, test_now())[1..3],
            &[json!("Opaque"), json!(1)]
        );
        let sa = json!({"metadata": {"name": "default"}});
        assert_eq!((SERVICE_ACCOUNT.row)(&sa, test_now())[1], 0);
    }

    #[test]
    fn events_show_when_what_and_about_which_object() {
        let ev = json!({"apiVersion": "v1", "metadata": {"name": "web.1"},
            "type": "Warning", "reason": "BackOff", "message": "Back-off restarting\n",
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
            "source": {"component": "kubelet", "host": "pi1"},
            "firstTimestamp": "2026-01-01T11:50:00Z", "lastTimestamp": "2026-01-01T11:59:00Z",
            "count": 4});
        let row = event_row(&ev, test_now());
        assert_eq!(
            row,
            vec![
                json!("60s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web"),
                json!("spec.containers{app}"),
                json!("kubelet, pi1"),
                json!("Back-off restarting"),
                json!("10m"),
                json!(4),
                json!("web.1")
            ]
        );
        let new = json!({"apiVersion": "events.k8s.io/v1", "metadata": {"name": "e"},
            "eventTime": "2026-01-01T11:59:30.000000Z", "reportingController": "berth",
            "regarding": {"kind": "Node", "name": "pi1"}, "note": "hello"});
        let row = event_row(&new, test_now());
        assert_eq!(&row[0..1], &[json!("30s")]);
        assert_eq!(
            &row[3..9],
            &[
                json!("node/pi1"),
                json!(""),
                json!("berth"),
                json!("hello"),
                json!("30s"),
                json!(1)
            ]
        );
    }

    #[test]
    fn volumes_and_claims_show_binding_and_capacity() {
        let pv = json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany"], "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "local"},
            "status": {"phase": "Bound"}});
        let row = (PERSISTENT_VOLUME.row)(&pv, test_now());
        assert_eq!(
            &row[1..8],
            &[
                json!("1Gi"),
                json!("RWO,ROX"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("local"),
                json!("<unset>")
            ]
        );
        let pvc = json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pv1"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}});
        let row = (PERSISTENT_VOLUME_CLAIM.row)(&pvc, test_now());
        assert_eq!(
            &row[1..5],
            &[json!("Bound"), json!("pv1"), json!("1Gi"), json!("RWO")]
        );
    }

    #[test]
    fn quotas_split_requests_from_limits() {
        let quota = json!({"metadata": {"name": "q"}, "status": {
            "hard": {"pods": "10", "limits.cpu": "2", "requests.memory": "1Gi"},
            "used": {"pods": "3"}}});
        let row = (RESOURCE_QUOTA.row)(&quota, test_now());
        assert_eq!(row[2], "pods: 3/10, requests.memory: 0/1Gi");
        assert_eq!(row[3], "limits.cpu: 0/2");
    }
}
