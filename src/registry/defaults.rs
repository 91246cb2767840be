//! API defaulting, as upstream's `pkg/apis/*/v1/defaults.go` (and the generated
//! `zz_generated.defaults.go` that decides which functions apply to which nested objects).
//!
//! Defaults are applied on every write (upstream applies them while decoding a request), so a
//! client that omits a field reads back the same object whoever wrote it. A few pod fields come
//! from admission plugins on create only (`on_create`): priority and the not-ready/unreachable
//! tolerations. Service defaults live with the service IP allocation in `services.rs`.
//!
//! Every function here is pure and only fills in what is absent: an explicit value always wins.

use serde_json::{json, Map, Value};

use crate::api::resources::Resource;

/// Fills in the defaults of `obj`, a decoded object of `resource`, on create and on update.
pub fn apply(resource: &Resource, obj: &mut Value) {
    match (resource.group, resource.kind) {
        ("", "Pod") => pod(obj),
        ("", "ReplicationController") => replication_controller(obj),
        ("", "PodTemplate") => template_at(obj, "/template"),
        ("apps", "Deployment") => deployment(obj),
        ("apps", "ReplicaSet") => replica_set(obj),
        ("apps", "DaemonSet") => daemon_set(obj),
        ("apps", "StatefulSet") => stateful_set(obj),
        ("batch", "Job") => job(obj),
        ("batch", "CronJob") => cron_job(obj),
        ("", "Endpoints") => endpoints(obj),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice(obj),
        _ => {}
    }
}

/// Defaults that upstream sets once, on create: the job's generated selector (its strategy's
/// PrepareForCreate, which needs the new uid) and what pod admission plugins add.
pub fn on_create(resource: &Resource, obj: &mut Value) {
    match (resource.group, resource.kind) {
        ("", "Pod") => pod_admission(obj),
        ("batch", "Job") => job_selector(obj),
        _ => {}
    }
}

/// Sets `obj[key] = value` when the key is absent or null.
fn default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), value);
    }
}

/// The object at `pointer`, made an (empty) object when absent or null.
fn object_at<'a>(obj: &'a mut Value, pointer: &str) -> Option<&'a mut Map<String, Value>> {
    let mut current = obj;
    for key in pointer.split('/').skip(1) {
        let map = current.as_object_mut()?;
        let entry = map.entry(key.to_string()).or_insert_with(|| json!({}));
        if entry.is_null() {
            *entry = json!({});
        }
        current = entry;
    }
    current.as_object_mut()
}

fn items_mut<'a>(
    obj: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Value> {
    obj.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

// ---- core/v1 Pod ----

/// SetDefaults_Pod plus everything nested (PodSpec, containers, volumes, probes).
fn pod(obj: &mut Value) {
    let Some(spec) = object_at(obj, "/spec") else {
        return;
    };
    // Only pods (not templates) get requests from limits and service links.
    for key in ["containers", "initContainers"] {
        for c in items_mut(spec, key) {
            requests_from_limits(c);
        }
    }
    default(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        host_network_ports(spec);
    }
    pod_spec(spec);
}

/// A container with limits but no request for a resource requests what it limits.
fn requests_from_limits(container: &mut Value) {
    let Some(limits) = container
        .pointer("/resources/limits")
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    let Some(requests) = object_at(container, "/resources/requests") else {
        return;
    };
    for (name, quantity) in limits {
        default(requests, &name, quantity);
    }
}

/// With the host's network a container port is also a host port.
fn host_network_ports(spec: &mut Map<String, Value>) {
    for key in ["containers", "initContainers"] {
        for c in items_mut(spec, key) {
            for port in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(container_port) = port_number(port, "containerPort") {
                    if let Some(p) = port.as_object_mut() {
                        default(p, "hostPort", json!(container_port));
                    }
                }
            }
        }
    }
}

fn port_number(port: &Value, key: &str) -> Option<i64> {
    port.get(key).and_then(Value::as_i64)
}

/// SetDefaults_PodSpec and the nested defaults of a pod spec, shared by pods and pod templates.
fn pod_spec(spec: &mut Map<String, Value>) {
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "securityContext", json!({}));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "schedulerName", json!("default-scheduler"));
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in items_mut(spec, key) {
            container(c);
        }
    }
    for v in items_mut(spec, "volumes") {
        volume(v);
    }
}

/// SetDefaults_Container with its ports, probes and env.
fn container(c: &mut Value) {
    let Some(map) = c.as_object_mut() else {
        return;
    };
    let image = map.get("image").and_then(Value::as_str).unwrap_or("");
    default(map, "imagePullPolicy", json!(pull_policy_for(image)));
    default(map, "terminationMessagePath", json!("/dev/termination-log"));
    default(map, "terminationMessagePolicy", json!("File"));
    default(map, "resources", json!({}));
    for port in items_mut(map, "ports") {
        if let Some(p) = port.as_object_mut() {
            default(p, "protocol", json!("TCP"));
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = map.get_mut(key).and_then(Value::as_object_mut) {
            probe(p);
        }
    }
    for key in ["postStart", "preStop"] {
        if let Some(get) = map
            .get_mut("lifecycle")
            .and_then(|l| l.get_mut(key))
            .and_then(|h| h.get_mut("httpGet"))
            .and_then(Value::as_object_mut)
        {
            http_get(get);
        }
    }
    for env in items_mut(map, "env") {
        if let Some(field_ref) = env
            .pointer_mut("/valueFrom/fieldRef")
            .and_then(Value::as_object_mut)
        {
            default(field_ref, "apiVersion", json!("v1"));
        }
    }
}

/// `Always` for `:latest` or no tag at all, otherwise `IfNotPresent` (a digest alone has no tag).
pub fn pull_policy_for(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let has_digest = without_digest.len() != image.len();
    // A tag follows the last ':' after the last '/', so a registry port is not a tag.
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last_segment.split_once(':') {
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
        None if has_digest => "IfNotPresent",
        None => "Always",
    }
}

fn probe(p: &mut Map<String, Value>) {
    default(p, "timeoutSeconds", json!(1));
    default(p, "periodSeconds", json!(10));
    default(p, "successThreshold", json!(1));
    default(p, "failureThreshold", json!(3));
    if let Some(get) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
        http_get(get);
    }
    if let Some(grpc) = p.get_mut("grpc").and_then(Value::as_object_mut) {
        default(grpc, "service", json!(""));
    }
}

fn http_get(get: &mut Map<String, Value>) {
    default(get, "path", json!("/"));
    default(get, "scheme", json!("HTTP"));
}

/// A volume without a source is an emptyDir; file modes default to 0644 (420).
fn volume(v: &mut Value) {
    let Some(map) = v.as_object_mut() else {
        return;
    };
    const SOURCES: &[&str] = &[
        "emptyDir",
        "hostPath",
        "secret",
        "configMap",
        "persistentVolumeClaim",
        "projected",
        "downwardAPI",
        "nfs",
        "csi",
        "ephemeral",
        "image",
        "iscsi",
        "fc",
        "cephfs",
        "rbd",
        "gitRepo",
        "awsElasticBlockStore",
        "gcePersistentDisk",
        "azureDisk",
        "azureFile",
        "cinder",
        "flexVolume",
        "flocker",
        "glusterfs",
        "photonPersistentDisk",
        "portworxVolume",
        "quobyte",
        "scaleIO",
        "storageos",
        "vsphereVolume",
    ];
    if !SOURCES
        .iter()
        .any(|s| map.get(*s).is_some_and(|v| !v.is_null()))
    {
        map.insert("emptyDir".into(), json!({}));
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(source) = map.get_mut(key).and_then(Value::as_object_mut) {
            default(source, "defaultMode", json!(420));
        }
    }
    if let Some(host_path) = map.get_mut("hostPath").and_then(Value::as_object_mut) {
        default(host_path, "type", json!(""));
    }
    for item in map
        .get_mut("downwardAPI")
        .and_then(|d| d.get_mut("items"))
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(field_ref) = item.get_mut("fieldRef").and_then(Value::as_object_mut) {
            default(field_ref, "apiVersion", json!("v1"));
        }
    }
}

/// What the Priority and DefaultTolerationSeconds admission plugins add to a new pod.
fn pod_admission(obj: &mut Value) {
    let Some(spec) = object_at(obj, "/spec") else {
        return;
    };
    if spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        default(spec, "priority", json!(0));
    }
    default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if !tolerations.is_array() {
        *tolerations = json!([]);
    }
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for taint in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !list.iter().any(|t| tolerates_no_execute(t, taint)) {
            list.push(json!({
                "key": taint,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }));
        }
    }
}

/// Does toleration `t` already tolerate a NoExecute taint with `key` (any value)?
fn tolerates_no_execute(t: &Value, key: &str) -> bool {
    let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
    let t_key = t.get("key").and_then(Value::as_str).unwrap_or("");
    let operator = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
    (effect.is_empty() || effect == "NoExecute")
        && (t_key == key || (t_key.is_empty() && operator == "Exists"))
}

/// The pod template at `pointer` (e.g. `/spec/template`) gets pod spec defaults.
fn template_at(obj: &mut Value, pointer: &str) {
    if obj.pointer(pointer).is_none() {
        return;
    }
    if let Some(spec) = object_at(obj, &format!("{pointer}/spec")) {
        pod_spec(spec);
    }
}

// ---- workloads ----

fn replication_controller(obj: &mut Value) {
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let Some(labels) = template_labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
        if let Some(spec) = object_at(obj, "/spec") {
            if spec
                .get("selector")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
            {
                spec.insert("selector".into(), labels.clone());
            }
        }
        if let Some(meta) = object_at(obj, "/metadata") {
            if meta
                .get("labels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
            {
                meta.insert("labels".into(), labels);
            }
        }
    }
    if let Some(spec) = object_at(obj, "/spec") {
        default(spec, "replicas", json!(1));
    }
    template_at(obj, "/spec/template");
}

fn deployment(obj: &mut Value) {
    if let Some(spec) = object_at(obj, "/spec") {
        default(spec, "replicas", json!(1));
        default(spec, "revisionHistoryLimit", json!(10));
        default(spec, "progressDeadlineSeconds", json!(600));
        let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
        if let Some(strategy) = strategy.as_object_mut() {
            default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(rolling) = rolling.as_object_mut() {
                    default(rolling, "maxUnavailable", json!("25%"));
                    default(rolling, "maxSurge", json!("25%"));
                }
            }
        }
    }
    template_at(obj, "/spec/template");
}

fn replica_set(obj: &mut Value) {
    if let Some(spec) = object_at(obj, "/spec") {
        default(spec, "replicas", json!(1));
    }
    template_at(obj, "/spec/template");
}

fn daemon_set(obj: &mut Value) {
    if let Some(spec) = object_at(obj, "/spec") {
        default(spec, "revisionHistoryLimit", json!(10));
        let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
        if let Some(strategy) = strategy.as_object_mut() {
            default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(rolling) = rolling.as_object_mut() {
                    default(rolling, "maxUnavailable", json!(1));
                    default(rolling, "maxSurge", json!(0));
                }
            }
        }
    }
    template_at(obj, "/spec/template");
}

fn stateful_set(obj: &mut Value) {
    if let Some(spec) = object_at(obj, "/spec") {
        default(spec, "replicas", json!(1));
        default(spec, "revisionHistoryLimit", json!(10));
        default(spec, "podManagementPolicy", json!("OrderedReady"));
        let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
        if let Some(strategy) = strategy.as_object_mut() {
            default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(rolling) = rolling.as_object_mut() {
                    default(rolling, "partition", json!(0));
                }
            }
        }
        let retention = spec
            .entry("persistentVolumeClaimRetentionPolicy")
            .or_insert_with(|| json!({}));
        if let Some(retention) = retention.as_object_mut() {
            default(retention, "whenDeleted", json!("Retain"));
            default(retention, "whenScaled", json!("Retain"));
        }
        for claim in items_mut(spec, "volumeClaimTemplates") {
            if let Some(claim_spec) = object_at(claim, "/spec") {
                default(claim_spec, "volumeMode", json!("Filesystem"));
            }
        }
    }
    template_at(obj, "/spec/template");
}

/// SetDefaults_Job.
fn job_spec(spec: &mut Map<String, Value>) {
    let completions_set = spec.get("completions").is_some_and(|v| !v.is_null());
    let parallelism_set = spec.get("parallelism").is_some_and(|v| !v.is_null());
    if !completions_set && !parallelism_set {
        spec.insert("completions".into(), json!(1));
    }
    default(spec, "parallelism", json!(1));
    if spec.get("backoffLimitPerIndex").is_none_or(Value::is_null) {
        default(spec, "backoffLimit", json!(6));
    } else {
        default(spec, "backoffLimit", json!(i32::MAX));
    }
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    let replacement = if spec.get("podFailurePolicy").is_some_and(|v| !v.is_null()) {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    default(spec, "podReplacementPolicy", json!(replacement));
}

fn job(obj: &mut Value) {
    if let Some(spec) = object_at(obj, "/spec") {
        job_spec(spec);
    }
    template_at(obj, "/spec/template");
}

/// Unless the user asked for a manual selector, a job selects its pods by its own uid: the
/// selector and the template labels are generated (upstream's job strategy `generateSelector`).
fn job_selector(obj: &mut Value) {
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(labels) = object_at(obj, "/spec/template/metadata/labels") {
        default(labels, "controller-uid", json!(uid));
        default(labels, "batch.kubernetes.io/controller-uid", json!(uid));
        default(labels, "job-name", json!(name));
        default(labels, "batch.kubernetes.io/job-name", json!(name));
    }
    if let Some(spec) = object_at(obj, "/spec") {
        if spec.get("selector").is_none_or(Value::is_null) {
            spec.insert(
                "selector".into(),
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
            );
        }
    }
}

fn cron_job(obj: &mut Value) {
    if let Some(spec) = object_at(obj, "/spec") {
        default(spec, "concurrencyPolicy", json!("Allow"));
        default(spec, "suspend", json!(false));
        default(spec, "successfulJobsHistoryLimit", json!(3));
        default(spec, "failedJobsHistoryLimit", json!(1));
    }
    template_at(obj, "/spec/jobTemplate/spec/template");
}

// ---- Endpoints and EndpointSlices ----

/// SetDefaults_Endpoints: a port's protocol is TCP.
fn endpoints(obj: &mut Value) {
    let subsets = obj.get_mut("subsets").and_then(Value::as_array_mut);
    for subset in subsets.into_iter().flatten() {
        if let Some(subset) = subset.as_object_mut() {
            for port in items_mut(subset, "ports") {
                if let Some(port) = port.as_object_mut() {
                    default(port, "protocol", json!("TCP"));
                }
            }
        }
    }
}

/// discovery/v1 SetDefaults_EndpointPort: a port's name is "" and its protocol TCP.
fn endpoint_slice(obj: &mut Value) {
    let Some(slice) = obj.as_object_mut() else {
        return;
    };
    for port in items_mut(slice, "ports") {
        if let Some(port) = port.as_object_mut() {
            default(port, "name", json!(""));
            default(port, "protocol", json!("TCP"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;

    fn defaulted(group: &str, plural: &str, mut obj: Value) -> Value {
        let r = find(group, "v1", plural).unwrap();
        apply(r, &mut obj);
        on_create(r, &mut obj);
        obj
    }

    #[test]
    fn a_minimal_pod_gets_the_upstream_spec_defaults() {
        let pod = defaulted(
            "",
            "pods",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]}]}}),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["resources"], json!({}));
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        let tolerations = spec["tolerations"].as_array().unwrap();
        assert_eq!(tolerations.len(), 2);
        assert_eq!(tolerations[0]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(tolerations[1]["key"], "node.kubernetes.io/unreachable");
        assert_eq!(tolerations[1]["tolerationSeconds"], 300);
    }

    #[test]
    fn explicit_values_are_never_overwritten() {
        let pod = defaulted(
            "",
            "pods",
            json!({"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "Never"}]}}),
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 5);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(
            pod["spec"]["tolerations"].as_array().unwrap().len(),
            1,
            "a tolerate-everything toleration already covers the node taints"
        );
    }

    #[test]
    fn pull_policy_follows_the_image_tag() {
        assert_eq!(pull_policy_for("busybox"), "Always");
        assert_eq!(pull_policy_for("busybox:latest"), "Always");
        assert_eq!(pull_policy_for("busybox:1.36"), "IfNotPresent");
        assert_eq!(pull_policy_for("registry:5000/busybox"), "Always");
        assert_eq!(pull_policy_for("registry:5000/busybox:1"), "IfNotPresent");
        assert_eq!(pull_policy_for("busybox@sha256:abcd"), "IfNotPresent");
    }

    #[test]
    fn pod_requests_default_to_limits_and_probes_and_volumes_get_defaults() {
        let pod = defaulted(
            "",
            "pods",
            json!({"spec": {"containers": [{"name": "c", "image": "x:1",
                "resources": {"limits": {"cpu": "1", "memory": "64Mi"}, "requests": {"cpu": "500m"}},
                "livenessProbe": {"httpGet": {"port": 80}}}],
                "volumes": [{"name": "a"}, {"name": "b", "configMap": {"name": "cm"}}]}}),
        );
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["resources"]["requests"]["cpu"], "500m");
        assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
        let probe = &c["livenessProbe"];
        assert_eq!(probe["timeoutSeconds"], 1);
        assert_eq!(probe["periodSeconds"], 10);
        assert_eq!(probe["successThreshold"], 1);
        assert_eq!(probe["failureThreshold"], 3);
        assert_eq!(probe["httpGet"]["path"], "/");
        assert_eq!(probe["httpGet"]["scheme"], "HTTP");
        assert_eq!(pod["spec"]["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(pod["spec"]["volumes"][1]["configMap"]["defaultMode"], 420);
    }

    #[test]
    fn deployments_get_strategy_history_deadline_replicas_and_template_defaults() {
        let d = defaulted(
            "apps",
            "deployments",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}}),
        );
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        let template = &d["spec"]["template"]["spec"];
        assert_eq!(template["restartPolicy"], "Always");
        assert_eq!(template["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert!(
            template.get("enableServiceLinks").is_none() && template.get("tolerations").is_none(),
            "pod-only defaults and admission stay off templates"
        );
    }

    #[test]
    fn a_recreate_deployment_gets_no_rolling_update_parameters() {
        let d = defaulted(
            "apps",
            "deployments",
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn daemonsets_and_statefulsets_get_their_update_strategies() {
        let ds = defaulted("apps", "daemonsets", json!({"spec": {}}));
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
        let sts = defaulted("apps", "statefulsets", json!({"spec": {}}));
        assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(sts["spec"]["replicas"], 1);
        assert_eq!(
            sts["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
    }

    #[test]
    fn jobs_get_counts_policies_and_a_selector_on_their_own_uid() {
        let job = defaulted(
            "batch",
            "jobs",
            json!({"metadata": {"name": "j", "uid": "u-1"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}),
        );
        let spec = &job["spec"];
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(
            spec["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        let labels = &spec["template"]["metadata"]["labels"];
        assert_eq!(labels["controller-uid"], "u-1");
        assert_eq!(labels["batch.kubernetes.io/job-name"], "j");
        assert_eq!(labels["job-name"], "j");
    }

    #[test]
    fn a_job_with_only_parallelism_keeps_completions_unset() {
        let job = defaulted("batch", "jobs", json!({"spec": {"parallelism": 3}}));
        assert!(job["spec"].get("completions").is_none());
        assert_eq!(job["spec"]["parallelism"], 3);
    }

    #[test]
    fn cronjobs_get_concurrency_suspend_and_history_limits() {
        let cj = defaulted(
            "batch",
            "cronjobs",
            json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}}}),
        );
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cj["spec"]["suspend"], false);
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(
            cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
            "ClusterFirst"
        );
    }

    #[test]
    fn replication_controllers_take_selector_and_labels_from_their_template() {
        let rc = defaulted(
            "",
            "replicationcontrollers",
            json!({"metadata": {"name": "rc"}, "spec": {"template": {"metadata": {"labels": {"app": "a"}}, "spec": {}}}}),
        );
        assert_eq!(rc["spec"]["selector"], json!({"app": "a"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "a"}));
        assert_eq!(rc["spec"]["replicas"], 1);
    }
}
