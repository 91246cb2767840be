//! The other API groups: leases, endpoint slices, events.k8s.io, networking, RBAC, priority and
//! storage classes.

use serde_json::Value;

use super::{
    age, col, created_at, format_selector, int, list, list_with_more, load_balancer_ingress, name,
    or_none, text, wide, Column, Printer, AGE, CREATED_AT, NAME,
};

pub fn printer(group: &str, kind: &str) -> Option<&'static Printer> {
    Some(match (group, kind) {
        ("coordination.k8s.io", "Lease") => &LEASE,
        ("discovery.k8s.io", "EndpointSlice") => &ENDPOINT_SLICE,
        ("events.k8s.io", "Event") => &EVENT,
        ("networking.k8s.io", "Ingress") => &INGRESS,
        ("networking.k8s.io", "IngressClass") => &INGRESS_CLASS,
        ("networking.k8s.io", "NetworkPolicy") => &NETWORK_POLICY,
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => &ROLE,
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => &ROLE_BINDING,
        ("scheduling.k8s.io", "PriorityClass") => &PRIORITY_CLASS,
        ("storage.k8s.io", "StorageClass") => &STORAGE_CLASS,
        _ => return None,
    })
}

static LEASE: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Holder",
            "string",
            "holderIdentity contains the identity of the holder of a current lease.",
        ),
        AGE,
    ],
    row: |l, now| {
        vec![
            name(l),
            Value::from(text(l, "/spec/holderIdentity")),
            age(l, now),
        ]
    },
};

static ENDPOINT_SLICE: Printer = Printer {
    columns: &[
        NAME,
        col(
            "AddressType",
            "string",
            "addressType specifies the type of address carried by this EndpointSlice.",
        ),
        col(
            "Ports",
            "string",
            "ports specifies the list of network ports exposed by each endpoint in this slice.",
        ),
        col(
            "Endpoints",
            "string",
            "endpoints is a list of unique endpoints in this slice.",
        ),
        AGE,
    ],
    row: |slice, now| {
        let ports: Vec<String> = list(slice, "/ports")
            .iter()
            .map(
                |p| match (p.get("port").and_then(Value::as_i64), text(p, "/name")) {
                    (Some(port), _) => port.to_string(),
                    (None, "") => "*".into(),
                    (None, name) => name.to_string(),
                },
            )
            .collect();
        let addresses: Vec<String> = list(slice, "/endpoints")
            .iter()
            .flat_map(|e| list(e, "/addresses"))
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        vec![
            name(slice),
            Value::from(text(slice, "/addressType")),
            Value::from(list_with_more(&ports, "<unset>")),
            Value::from(list_with_more(&addresses, "<unset>")),
            age(slice, now),
        ]
    },
};

/// events.k8s.io events print exactly like core events.
static EVENT: Printer = Printer {
    columns: EVENT_COLUMNS,
    row: super::core::event_row,
};

const EVENT_COLUMNS: &[Column] = &[
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
];

static INGRESS: Printer = Printer {
    columns: &[
        NAME,
        col("Class", "string", "The name of the IngressClass resource that should be used for additional configuration"),
        col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
        col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
        col("Ports", "string", "Ports of TLS configurations that open"),
        AGE,
    ],
    row: |ing, now| {
        let rules = list(ing, "/spec/rules");
        let hosts: Vec<String> = rules
            .iter()
            .map(|r| text(r, "/host"))
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        let hosts = if hosts.is_empty() {
            "*".to_string()
        } else if hosts.len() > 3 {
            format!("{} + {} more...", hosts[..3].join(","), rules.len() - 3)
        } else {
            hosts.join(",")
        };
        let ports = if list(ing, "/spec/tls").is_empty() {
            "80"
        } else {
            "80, 443"
        };
        vec![
            name(ing),
            Value::from(or_none(text(ing, "/spec/ingressClassName"))),
            Value::from(hosts),
            Value::from(load_balancer_ingress(ing.pointer("/status/loadBalancer"))),
            Value::from(ports),
            age(ing, now),
        ]
    },
};

static INGRESS_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Controller",
            "string",
            "Controller that is responsible for handling this class",
        ),
        col(
            "Parameters",
            "string",
            "A reference to a resource with additional parameters",
        ),
        AGE,
    ],
    row: |class, now| {
        let parameters = match class.pointer("/spec/parameters").filter(|p| !p.is_null()) {
            None => "<none>".to_string(),
            Some(p) => {
                let kind = match text(p, "/apiGroup") {
                    "" => text(p, "/kind").to_string(),
                    group => format!("{}.{group}", text(p, "/kind")),
                };
                format!("{kind}/{}", text(p, "/name"))
            }
        };
        vec![
            name(class),
            Value::from(text(class, "/spec/controller")),
            Value::from(parameters),
            age(class, now),
        ]
    },
};

static NETWORK_POLICY: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Pod-Selector",
            "string",
            "podSelector selects the pods to which this NetworkPolicy object applies.",
        ),
        AGE,
    ],
    row: |np, now| {
        let selector = format_selector(np.pointer("/spec/podSelector"), "<none>");
        vec![name(np), Value::from(selector), age(np, now)]
    },
};

static ROLE: Printer = Printer {
    columns: &[NAME, CREATED_AT],
    row: |role, _| vec![name(role), created_at(role)],
};

static ROLE_BINDING: Printer = Printer {
    columns: &[
        NAME,
        col("Role", "string", "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace."),
        AGE,
        wide("Users", "string", "Users in the roleBinding"),
        wide("Groups", "string", "Groups in the roleBinding"),
        wide("ServiceAccounts", "string", "ServiceAccounts in the roleBinding"),
    ],
    row: |binding, now| {
        let subjects = list(binding, "/subjects");
        let named = |kind: &str| {
            subjects
                .iter()
                .filter(|s| text(s, "/kind") == kind)
                .map(|s| match (kind, text(s, "/namespace")) {
                    ("ServiceAccount", ns) => format!("{ns}/{}", text(s, "/name")),
                    _ => text(s, "/name").to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let role = format!(
            "{}/{}",
            text(binding, "/roleRef/kind"),
            text(binding, "/roleRef/name")
        );
        vec![
            name(binding),
            Value::from(role),
            age(binding, now),
            Value::from(named("User")),
            Value::from(named("Group")),
            Value::from(named("ServiceAccount")),
        ]
    },
};

static PRIORITY_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col("Value", "integer", "value represents the integer value of this priority class."),
        col("Global-Default", "boolean", "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class."),
        AGE,
        col("PreemptionPolicy", "string", "preemptionPolicy is the Policy for preempting pods with lower priority."),
    ],
    row: |pc, now| {
        vec![
            name(pc),
            Value::from(int(pc, "/value")),
            Value::from(pc.get("globalDefault").and_then(Value::as_bool).unwrap_or(false)),
            age(pc, now),
            Value::from(match text(pc, "/preemptionPolicy") {
                "" => "<unset>",
                p => p,
            }),
        ]
    },
};

static STORAGE_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col("Provisioner", "string", "provisioner indicates the type of the provisioner."),
        col("ReclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class."),
        col("VolumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound."),
        col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
        AGE,
    ],
    row: |sc, now| {
        let is_default = ["storageclass.kubernetes.io~1is-default-class", "storageclass.beta.kubernetes.io~1is-default-class"]
            .iter()
            .any(|a| text(sc, &format!("/metadata/annotations/{a}")) == "true");
        let mut shown_name = text(sc, "/metadata/name").to_string();
        if is_default {
            shown_name.push_str(" (default)");
        }
        let or = |pointer: &str, default: &'static str| match text(sc, pointer) {
            "" => default.to_string(),
            v => v.to_string(),
        };
        vec![
            Value::from(shown_name),
            Value::from(text(sc, "/provisioner")),
            Value::from(or("/reclaimPolicy", "Delete")),
            Value::from(or("/volumeBindingMode", "Immediate")),
            Value::from(sc.get("allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false)),
            age(sc, now),
        ]
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::table::printers::test_now;
    use serde_json::json;

    #[test]
    fn endpoint_slices_list_ports_and_addresses() {
        let slice = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4",
            "ports": [{"port": 80}, {"name": "metrics"}],
            "endpoints": [{"addresses": ["10.42.0.5"]}, {"addresses": ["10.42.0.6"]}]});
        let row = (ENDPOINT_SLICE.row)(&slice, test_now());
        assert_eq!(
            &row[1..4],
            &[
                json!("IPv4"),
                json!("80,metrics"),
                json!("10.42.0.5,10.42.0.6")
            ]
        );
    }

    #[test]
    fn ingresses_show_class_hosts_and_tls_ports() {
        let ing = json!({"metadata": {"name": "web"}, "spec": {"ingressClassName": "traefik",
            "rules": [{"host": "a.example"}, {"host": "b.example"}], "tls": [{"hosts": ["a.example"]}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.5"}]}}});
        let row = (INGRESS.row)(&ing, test_now());
        assert_eq!(
            &row[1..5],
            &[
                json!("traefik"),
                json!("a.example,b.example"),
                json!("192.168.1.5"),
                json!("80, 443")
            ]
        );
    }

    #[test]
    fn bindings_name_their_role_and_subjects() {
        let rb = json!({"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"},
                         {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}]});
        let row = (ROLE_BINDING.row)(&rb, test_now());
        assert_eq!(row[1], "ClusterRole/view");
        assert_eq!(&row[3..6], &[json!("alice"), json!(""), json!("build/ci")]);
    }

    #[test]
    fn the_default_storage_class_is_marked_and_policies_default() {
        let sc = json!({"metadata": {"name": "local", "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "berth.io/local"});
        let row = (STORAGE_CLASS.row)(&sc, test_now());
        assert_eq!(
            &row[0..5],
            &[
                json!("local (default)"),
                json!("berth.io/local"),
                json!("Delete"),
                json!("Immediate"),
                json!(false)
            ]
        );
    }

    #[test]
    fn network_policies_and_priority_classes() {
        let np = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
        assert_eq!((NETWORK_POLICY.row)(&np, test_now())[1], "<none>");
        let pc = json!({"metadata": {"name": "high"}, "value": 1000, "globalDefault": true});
        let row = (PRIORITY_CLASS.row)(&pc, test_now());
        assert_eq!(&row[1..3], &[json!(1000), json!(true)]);
        assert_eq!(row[4], "<unset>");
    }
}
