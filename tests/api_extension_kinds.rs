//! The remaining built-in kinds (admission configuration, API services, runtime classes, CSI
//! objects, certificate signing requests) stored and served to the real kubectl. Needs root
//! (network namespaces); CI runs as root.

mod common;

use common::netns::Netns;
use common::server::BerthServer;
use serde_json::Value;

const OBJECTS: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: vwc}
webhooks:
- name: check.example.com
  clientConfig: {url: "https://127.0.0.1:1/check"}
  rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}]
  sideEffects: None
  admissionReviewVersions: [v1]
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: mwc}
webhooks: []
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: vap}
spec:
  matchConstraints:
    resourceRules: [{operations: [CREATE], apiGroups: [apps], apiVersions: [v1], resources: [deployments]}]
  validations: [{expression: "object.spec.replicas <= 5"}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: vapb}
spec: {policyName: vap, validationActions: [Deny]}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1alpha1.kinds.example.com}
spec:
  group: kinds.example.com
  version: v1alpha1
  service: {namespace: default, name: kinds-api, port: 443}
  groupPriorityMinimum: 1000
  versionPriority: 15
  insecureSkipTLSVerify: true
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: gvisor}
handler: runsc
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: csi.example.com}
spec: {attachRequired: false, podInfoOnMount: true}
---
apiVersion: storage.k8s.io/v1
kind: CSINode
metadata: {name: node-a}
spec:
  drivers: [{name: csi.example.com, nodeID: node-a}]
---
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata: {name: va}
spec:
  attacher: csi.example.com
  nodeName: node-a
  source: {persistentVolumeName: pv-a}
"#;

fn csr(name: &str) -> String {
    format!(
        r#"
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata: {{name: {name}}}
spec:
  request: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K
  signerName: example.com/test
  expirationSeconds: 86400
  usages: [client auth]
  username: someone-else
"#
    )
}

fn get_json(server: &BerthServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&all)).expect("kubectl prints JSON")
}

#[test]
fn every_remaining_kind_is_stored_listed_and_discoverable() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let out = server.kubectl_stdin(&["apply", "-f", "-"], OBJECTS);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let vwc = get_json(&server, &["get", "validatingwebhookconfiguration", "vwc"]);
    assert_eq!(vwc["webhooks"][0]["name"], "check.example.com");
    // Defaults upstream sets, so stored configurations behave the same when called.
    let table = server.kubectl_ok(&["get", "validatingwebhookconfigurations"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("vwc ") && table.contains(" 1 "), "{table}");

    let runtime = server.kubectl_ok(&["get", "runtimeclass", "gvisor"]);
    assert!(runtime.contains("runsc"), "{runtime}");
    let attachment = server.kubectl_ok(&["get", "volumeattachments"]);
    assert!(
        attachment.contains("csi.example.com") && attachment.contains("pv-a"),
        "{attachment}"
    );
    let csinode = get_json(&server, &["get", "csinode", "node-a"]);
    assert_eq!(csinode["spec"]["drivers"][0]["nodeID"], "node-a");
    let api_service = server.kubectl_ok(&["get", "apiservices"]);
    assert!(api_service.contains("default/kinds-api"), "{api_service}");
    let policy = get_json(&server, &["get", "validatingadmissionpolicy", "vap"]);
    assert_eq!(
        policy["spec"]["validations"][0]["expression"],
        "object.spec.replicas <= 5"
    );

    let resources = server.kubectl_ok(&["api-resources", "--no-headers"]);
    for (name, group) in [
        (
            "validatingwebhookconfigurations",
            "admissionregistration.k8s.io/v1",
        ),
        (
            "mutatingwebhookconfigurations",
            "admissionregistration.k8s.io/v1",
        ),
        (
            "validatingadmissionpolicies",
            "admissionregistration.k8s.io/v1",
        ),
        (
            "validatingadmissionpolicybindings",
            "admissionregistration.k8s.io/v1",
        ),
        ("apiservices", "apiregistration.k8s.io/v1"),
        ("runtimeclasses", "node.k8s.io/v1"),
        ("csidrivers", "storage.k8s.io/v1"),
        ("csinodes", "storage.k8s.io/v1"),
        ("volumeattachments", "storage.k8s.io/v1"),
        ("certificatesigningrequests", "certificates.k8s.io/v1"),
    ] {
        let line = resources
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from api-resources:\n{resources}"));
        assert!(line.contains(group), "{line}");
        assert!(line.contains("false"), "{name} is cluster-scoped: {line}");
    }
    let csr_line = resources
        .lines()
        .find(|l| l.starts_with("certificatesigningrequests "))
        .unwrap_or_default();
    assert!(csr_line.contains(" csr "), "{csr_line}");
    let extensions = server.kubectl_ok(&["get", "api-extensions", "-o", "name"]);
    assert!(
        extensions.contains("validatingwebhookconfiguration.admissionregistration.k8s.io/vwc"),
        "{extensions}"
    );

    server.kubectl_ok(&["delete", "runtimeclass", "gvisor"]);
    let gone = server.kubectl(&["get", "runtimeclass", "gvisor"]);
    assert!(!gone.status.success());
}

#[test]
fn kubectl_certificate_approve_and_deny_set_only_the_conditions() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    for name in ["approve-me", "deny-me"] {
        let out = server.kubectl_stdin(&["create", "-f", "-"], &csr(name));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let created = get_json(&server, &["get", "csr", "approve-me"]);
    assert_ne!(
        created["spec"]["username"], "someone-else",
        "the requester is recorded by the server"
    );
    let pending = server.kubectl_ok(&["get", "csr", "approve-me"]);
    assert!(
        pending.contains("example.com/test")
            && pending.contains("24h")
            && pending.contains("Pending"),
        "{pending}"
    );

    server.kubectl_ok(&["certificate", "approve", "approve-me"]);
    server.kubectl_ok(&["certificate", "deny", "deny-me"]);
    let approved = get_json(&server, &["get", "csr", "approve-me"]);
    let condition = &approved["status"]["conditions"][0];
    assert_eq!(condition["type"], "Approved");
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["reason"], "KubectlApprove");
    let table = server.kubectl_ok(&["get", "csr"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("approve-me ") && l.ends_with("Approved")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("deny-me ") && l.ends_with("Denied")),
        "{table}"
    );

    // Adding Denied to an approved request would make it both: refused as upstream does
    // (kubectl itself refuses before asking, so the raw subresource is used).
    let mut both = approved.clone();
    both["status"]["conditions"]
        .as_array_mut()
        .expect("conditions")
        .push(serde_json::json!({"type": "Denied", "status": "True", "reason": "Test"}));
    let out = server.kubectl_stdin(
        &[
            "replace",
            "--raw",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests/approve-me/approval",
            "-f",
            "-",
        ],
        &both.to_string(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mutually exclusive"), "{stderr}");
    // A status write cannot approve.
    let patched = server.kubectl_ok(&[
        "patch",
        "csr",
        "deny-me",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Approved","status":"True"}]}}"#,
        "-o",
        "json",
    ]);
    let patched: Value = serde_json::from_str(&patched).expect("json");
    assert_eq!(patched["status"]["conditions"][0]["type"], "Denied");
}
