//! EndpointSlices for not-ready pods and for hand-made Endpoints, foreground deletion held by
//! `blockOwnerDeletion`, and the reclaim policies of provisioned volumes, with the real kubectl
//! against a real `berth server` (and real containers where pods must run).
//!
//! Needs root (network namespaces, cgroups, mounts, nftables), as in CI.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(90);
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn apply(server: &BerthServer, manifest: &str) {
    let out = server.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The object, or Null when kubectl cannot get it.
fn get(server: &BerthServer, what: &str) -> Value {
    let out = server.kubectl(&["get", what, "-o", "json"]);
    match out.status.success() {
        true => json(&String::from_utf8_lossy(&out.stdout)),
        false => Value::Null,
    }
}

/// The EndpointSlices labelled for Service `service`.
fn slices_of(server: &BerthServer, service: &str) -> Vec<Value> {
    let selector = format!("kubernetes.io/service-name={service}");
    let list = json(&server.kubectl_ok(&["get", "endpointslices", "-l", &selector, "-o", "json"]));
    list["items"].as_array().cloned().unwrap_or_default()
}

/// (address, ready, serving) of every endpoint of the slices, sorted.
fn endpoints_of(slices: &[Value]) -> Vec<(String, Value, Value)> {
    let mut all: Vec<(String, Value, Value)> = slices
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["addresses"][0].as_str().unwrap_or_default().to_string(),
                e["conditions"]["ready"].clone(),
                e["conditions"]["serving"].clone(),
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// Waits until `check` holds for the slices of `service`, and returns them.
fn wait_for_slices(
    server: &BerthServer,
    service: &str,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut slices = Vec::new();
    let ok = wait_until(TIMEOUT, || {
        slices = slices_of(server, service);
        check(&slices)
    });
    assert!(ok, "the slices of {service} never {what}: {slices:#?}");
    slices
}

#[test]
fn a_service_publishing_not_ready_addresses_lists_a_not_ready_pod_as_ready() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    apply(
        server,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: slow, labels: {app: slow}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      exec: {command: ["cat", "/never"]}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: strict}
spec:
  selector: {app: slow}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: eager}
spec:
  selector: {app: slow}
  publishNotReadyAddresses: true
  ports: [{name: http, port: 80, targetPort: http}]
"#,
    );
    let pod = cluster.wait_for("slow", "an IP", |p| {
        p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()
    });
    let ip = pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let not_ready = (ip.clone(), Value::Bool(false), Value::Bool(false));
    let published = (ip.clone(), Value::Bool(true), Value::Bool(false));

    let has = |expected: &(String, Value, Value)| {
        let expected = expected.clone();
        move |slices: &[Value]| endpoints_of(slices) == [expected.clone()]
    };
    let strict = wait_for_slices(
        server,
        "strict",
        "listed the pod not ready",
        has(&not_ready),
    );
    assert_eq!(strict[0]["ports"][0]["port"], 8080);
    wait_for_slices(server, "eager", "listed the pod ready", has(&published));
    // The pod really is not ready: the probe never passes.
    let pod = get(server, "pod/slow");
    let ready = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["status"].clone());
    assert_eq!(ready, Some(Value::from("False")), "{pod:#}");

    // The legacy Endpoints agree.
    let eager = get(server, "endpoints/eager");
    assert_eq!(
        eager["subsets"][0]["addresses"][0]["ip"],
        ip.as_str(),
        "{eager:#}"
    );
    let strict = get(server, "endpoints/strict");
    assert_eq!(
        strict["subsets"][0]["notReadyAddresses"][0]["ip"],
        ip.as_str(),
        "{strict:#}"
    );
}

const EXTERNAL_ENDPOINTS: &str = r#"
apiVersion: v1
kind: Endpoints
metadata: {name: external, labels: {team: data}}
subsets:
- addresses: [{ip: 10.9.0.1}]
  notReadyAddresses: [{ip: 10.9.0.2}]
  ports: [{name: sql, port: 5432, protocol: TCP}]
"#;

#[test]
fn hand_made_endpoints_of_a_selector_less_service_are_mirrored_into_a_slice() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    apply(
        &server,
        r#"
apiVersion: v1
kind: Service
metadata: {name: external}
spec:
  ports: [{name: sql, port: 5432}]
"#,
    );
    apply(&server, EXTERNAL_ENDPOINTS);
    let mirrored = |slices: &[Value]| {
        slices.len() == 1
            && slices[0]["metadata"]["labels"][MANAGED_BY]
                == "endpointslicemirroring-controller.k8s.io"
    };
    let slices = wait_for_slices(&server, "external", "mirrored the endpoints", |s| {
        mirrored(s) && !endpoints_of(s).is_empty()
    });
    let slice = &slices[0];
    assert_eq!(
        endpoints_of(&slices),
        [
            ("10.9.0.1".to_string(), Value::Bool(true), Value::Null),
            ("10.9.0.2".to_string(), Value::Bool(false), Value::Null),
        ]
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"][0]["name"], "sql");
    assert_eq!(slice["ports"][0]["port"], 5432);
    assert_eq!(slice["metadata"]["labels"]["team"], "data");
    let endpoints = get(&server, "endpoints/external");
    let owner = &slice["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Endpoints");
    assert_eq!(owner["uid"], endpoints["metadata"]["uid"]);

    // An edit of the Endpoints is mirrored.
    server.kubectl_ok(&[
        "patch",
        "endpoints",
        "external",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/subsets/0/addresses/0/ip","value":"10.9.0.3"}]"#,
    ]);
    wait_for_slices(&server, "external", "followed the edit", |s| {
        mirrored(s)
            && endpoints_of(s).first().map(|e| e.0.as_str()) == Some("10.9.0.2")
            && endpoints_of(s).get(1).map(|e| e.0.as_str()) == Some("10.9.0.3")
    });

    // The slice goes with the Endpoints, comes back with them, and goes with the Service.
    server.kubectl_ok(&["delete", "endpoints", "external"]);
    wait_for_slices(&server, "external", "went with the endpoints", |s| {
        s.is_empty()
    });
    apply(&server, EXTERNAL_ENDPOINTS);
    wait_for_slices(&server, "external", "came back", mirrored);
    server.kubectl_ok(&["delete", "service", "external"]);
    wait_for_slices(&server, "external", "went with the service", |s| {
        s.is_empty()
    });
    // The hand-made Endpoints go with their Service too, as upstream's endpoints controller
    // deletes them.
    assert!(
        wait_until(TIMEOUT, || !server
            .kubectl(&["get", "endpoints", "external"])
            .status
            .success()),
        "the Endpoints outlived their Service"
    );

    // A Service with a selector has its slices from the EndpointSlice controller only.
    apply(
        &server,
        r#"
apiVersion: v1
kind: Service
metadata: {name: selected}
spec:
  selector: {app: nothing}
  ports: [{port: 80}]
"#,
    );
    let slices = wait_for_slices(&server, "selected", "appeared", |s| !s.is_empty());
    std::thread::sleep(Duration::from_secs(2));
    let slices_later = slices_of(&server, "selected");
    assert_eq!(slices_later.len(), 1, "{slices_later:#?}");
    assert_eq!(
        slices[0]["metadata"]["labels"][MANAGED_BY],
        "endpointslice-controller.k8s.io"
    );
}

/// The Warning events on Endpoints `name` as kubectl lists them: (reason, message, times seen).
fn endpoints_warnings(server: &BerthServer, name: &str) -> Vec<(String, String, u64)> {
    let selector = format!("involvedObject.kind=Endpoints,involvedObject.name={name},type=Warning");
    server
        .kubectl_items(&["events", "--field-selector", &selector])
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
                // One occurrence has no series; a repeated one counts them there.
                e["series"]["count"].as_u64().unwrap_or(1),
            )
        })
        .collect()
}

#[test]
fn an_address_that_is_no_ip_is_refused_and_excess_addresses_are_skipped_with_a_warning() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let service = |name: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{port: 80}}]\n")
    };
    apply(&server, &service("odd"));
    apply(&server, &service("big"));
    // As upstream: an Endpoints address must be an IP.
    let refused = server.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Endpoints
metadata: {name: odd}
subsets:
- addresses: [{ip: 10.9.1.1}, {ip: not-an-ip}]
  ports: [{port: 80}]
"#,
    );
    assert!(!refused.status.success());
    let refused = String::from_utf8_lossy(&refused.stderr);
    assert!(
        refused.contains(
            r#"subsets[0].addresses[1].ip: Invalid value: "not-an-ip": must be a valid IP address"#
        ),
        "{refused}"
    );
    let addresses: Vec<Value> = (0..1001)
        .map(|i| serde_json::json!({"ip": format!("10.8.{}.{}", i / 250, i % 250 + 1)}))
        .collect();
    let big = serde_json::json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "big"},
        "subsets": [{"addresses": addresses, "ports": [{"port": 80}]}],
    });
    apply(&server, &big.to_string());

    // What upstream mirrors: the first 1,000 of the subset.
    let big_slices = wait_for_slices(&server, "big", "mirrored the first 1000", |s| {
        endpoints_of(s).len() == 1000
    });
    assert_eq!(big_slices.len(), 1, "one slice per subset");
    assert!(
        !endpoints_of(&big_slices).iter().any(|e| e.0 == "10.8.4.1"),
        "the 1001st address is not mirrored"
    );

    // Upstream's warning, on the Endpoints, as kubectl shows it.
    let mut big_warnings = Vec::new();
    let warned = wait_until(TIMEOUT, || {
        big_warnings = endpoints_warnings(&server, "big");
        !big_warnings.is_empty()
    });
    assert!(warned, "no warnings: {big_warnings:?}");
    let reasons: Vec<(String, String)> = big_warnings
        .iter()
        .map(|(r, m, _)| (r.clone(), m.clone()))
        .collect();
    assert_eq!(
        reasons,
        [(
            "TooManyAddressesToMirror".to_string(),
            "A max of 1000 addresses can be mirrored to EndpointSlices per Endpoints subset. 1 addresses were skipped".to_string()
        )]
    );
    let table = server.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Endpoints",
    ]);
    assert!(table.contains("TooManyAddressesToMirror"), "{table}");

    // No flood: the controller's own slice writes bring it back to the Endpoints, but the
    // warning stays one event, recorded once for this version of the Endpoints.
    std::thread::sleep(Duration::from_secs(3));
    let again = endpoints_warnings(&server, "big");
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(
        again[0].2, 1,
        "warned more than once for one version: {again:?}"
    );
}

fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(String::from))
        .collect()
}

#[test]
fn a_foreground_delete_waits_for_dependents_that_block_their_owners_deletion_only() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    apply(
        &server,
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: owner}
spec:
  replicas: 0
  selector: {matchLabels: {app: owner}}
  template:
    metadata: {labels: {app: owner}}
    spec:
      containers: [{name: main, image: busybox}]
"#,
    );
    let owner = get(&server, "deployment/owner");
    let owner_uid = owner["metadata"]["uid"].as_str().unwrap_or_default();
    // Two dependents that a finalizer of their own keeps after the collector deletes them.
    for (name, blocks) in [("blocker", true), ("bystander", false)] {
        let dependent = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "finalizers": ["example.com/hold"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                    "name": "owner", "uid": owner_uid, "blockOwnerDeletion": blocks}]},
        });
        apply(&server, &dependent.to_string());
    }

    server.kubectl_ok(&[
        "delete",
        "deployment",
        "owner",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let deleting = |name: &str| !get(&server, name)["metadata"]["deletionTimestamp"].is_null();
    let ok = wait_until(TIMEOUT, || {
        deleting("configmap/blocker") && deleting("configmap/bystander")
    });
    assert!(ok, "the collector never deleted the dependents");
    // The collector looks at a waiting owner every second: a few looks later it still waits
    // for the blocking dependent.
    std::thread::sleep(Duration::from_secs(3));
    let owner = get(&server, "deployment/owner");
    assert!(
        !owner.is_null(),
        "the owner went before its blocking dependent"
    );
    assert_eq!(finalizers(&owner), ["foregroundDeletion"], "{owner:#}");
    assert!(!owner["metadata"]["deletionTimestamp"].is_null());

    let release = r#"{"metadata":{"finalizers":null}}"#;
    server.kubectl_ok(&[
        "patch",
        "configmap",
        "blocker",
        "--type=merge",
        "-p",
        release,
    ]);
    let ok = wait_until(TIMEOUT, || get(&server, "deployment/owner").is_null());
    assert!(ok, "the owner outlived its blocking dependent");
    // The dependent that does not block is still there, being deleted.
    assert!(deleting("configmap/bystander"));
    server.kubectl_ok(&[
        "patch",
        "configmap",
        "bystander",
        "--type=merge",
        "-p",
        release,
    ]);
    let ok = wait_until(TIMEOUT, || get(&server, "configmap/bystander").is_null());
    assert!(ok, "the released bystander was not removed");
}

#[test]
fn a_retained_volume_is_released_with_its_data_and_a_deleted_one_goes_with_its_claim() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    apply(
        server,
        r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: keep}
provisioner: berth.io/local-path
reclaimPolicy: Retain
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: kept}
spec:
  storageClassName: keep
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: dropped}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo kept > /kept/data; echo dropped > /dropped/data; trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts:
    - {name: kept, mountPath: /kept}
    - {name: dropped, mountPath: /dropped}
  volumes:
  - {name: kept, persistentVolumeClaim: {claimName: kept}}
  - {name: dropped, persistentVolumeClaim: {claimName: dropped}}
"#,
    );
    cluster.wait_for("writer", "Running", |p| p["status"]["phase"] == "Running");
    let volume_of = |claim: &str| {
        get(server, &format!("pvc/{claim}"))["spec"]["volumeName"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (kept, dropped) = (volume_of("kept"), volume_of("dropped"));
    let file = |volume: &str| server.data_dir().join("storage").join(volume).join("data");
    let written = wait_until(TIMEOUT, || {
        file(&kept).is_file() && file(&dropped).is_file()
    });
    assert!(
        written,
        "the pod's writes never reached the volumes' directories"
    );
    assert_eq!(
        get(server, &format!("pv/{kept}"))["spec"]["persistentVolumeReclaimPolicy"],
        "Retain"
    );

    server.kubectl_ok(&["delete", "pod", "writer"]);
    server.kubectl_ok(&["delete", "pvc", "kept", "dropped"]);
    let mut pv = Value::Null;
    let released = wait_until(TIMEOUT, || {
        pv = get(server, &format!("pv/{kept}"));
        pv["status"]["phase"] == "Released"
    });
    assert!(released, "the retained volume was not released: {pv:#}");
    assert_eq!(pv["spec"]["claimRef"]["name"], "kept");
    let data = std::fs::read_to_string(file(&kept)).unwrap_or_default();
    assert_eq!(data.trim(), "kept", "the retained volume lost its data");

    let dropped_dir = server.data_dir().join("storage").join(&dropped);
    let gone = wait_until(TIMEOUT, || {
        !dropped_dir.exists() && get(server, &format!("pv/{dropped}")).is_null()
    });
    assert!(gone, "the volume reclaimed with Delete outlived its claim");

    // A released volume is the administrator's: it stays, data and all.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        get(server, &format!("pv/{kept}"))["status"]["phase"],
        "Released"
    );
    assert!(file(&kept).is_file());
    server.kubectl_ok(&["delete", "pv", &kept]);
}
