//! CEL in admission and CRDs, driven by the real kubectl against a real `berth server` in a
//! test-made network namespace: ValidatingAdmissionPolicy with Deny and Warn bindings, and CRD
//! `x-kubernetes-validations` with a transition rule. Needs root (network namespaces); CI runs as
//! root.

mod common;

use std::time::{Duration, Instant};

use common::netns::Netns;
use common::server::BerthServer;

const POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: strict, labels: {env: strict}}
---
apiVersion: v1
kind: Namespace
metadata: {name: lenient, labels: {env: lenient}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: replica-limit.example.com}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [deployments]
  matchConditions:
  - name: not-the-system
    expression: "request.namespace != 'kube-system'"
  variables:
  - name: replicas
    expression: "object.spec.replicas"
  validations:
  - expression: "variables.replicas <= 5"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: replica-limit-deny}
spec:
  policyName: replica-limit.example.com
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {matchLabels: {env: strict}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: replica-limit-warn}
spec:
  policyName: replica-limit.example.com
  validationActions: [Warn]
  matchResources:
    namespaceSelector: {matchLabels: {env: lenient}}
"#;

fn deployment(namespace: &str, replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: busybox}}]
"#
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Policies reach admission through a watch: retry until `done` holds or time runs out.
fn eventually(what: &str, mut done: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match done() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn a_policy_denies_too_many_replicas_in_one_namespace_and_warns_in_another() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let out = server.kubectl_stdin(&["apply", "-f", "-"], POLICY);
    assert!(out.status.success(), "apply policy: {}", text(&out.stderr));

    eventually("the Deny binding refuses 6 replicas", || {
        let out = server.kubectl_stdin(&["apply", "-f", "-"], &deployment("strict", 6));
        let stderr = text(&out.stderr);
        if out.status.success() {
            server.kubectl(&["delete", "deployment", "web", "-n", "strict"]);
            return Err("the deployment was created".into());
        }
        let wanted = "ValidatingAdmissionPolicy 'replica-limit.example.com' with binding \
                      'replica-limit-deny' denied request: failed expression: variables.replicas <= 5";
        if stderr.contains(wanted) && stderr.contains("The deployments \"web\" is invalid") {
            Ok(())
        } else {
            Err(format!("unexpected refusal: {stderr}"))
        }
    });
    // Within the limit the policy admits.
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &deployment("strict", 5));
    assert!(out.status.success(), "5 replicas: {}", text(&out.stderr));

    // The Warn binding admits with a warning kubectl prints.
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &deployment("lenient", 6));
    assert!(out.status.success(), "warned apply: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "Warning: Validation failed for ValidatingAdmissionPolicy 'replica-limit.example.com' \
             with binding 'replica-limit-warn': failed expression: variables.replicas <= 5"
        ),
        "no warning: {}",
        text(&out.stderr)
    );

    // Removing the binding lifts the refusal.
    server.kubectl_ok(&[
        "delete",
        "validatingadmissionpolicybinding",
        "replica-limit-deny",
    ]);
    eventually("the deleted binding stops refusing", || {
        let out = server.kubectl_stdin(&["apply", "-f", "-"], &deployment("strict", 6));
        match out.status.success() {
            true => Ok(()),
            false => Err(text(&out.stderr)),
        }
    });
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "self.replicas <= self.maxReplicas"
              message: "replicas must be <= maxReplicas"
            - rule: "self.mode == oldSelf.mode"
              message: "mode is immutable"
              fieldPath: ".mode"
            properties:
              replicas: {type: integer}
              maxReplicas: {type: integer}
              mode: {type: string}
"#;

fn gadget(replicas: u32, mode: &str) -> String {
    format!(
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {{name: g1, namespace: default}}\n\
         spec: {{replicas: {replicas}, maxReplicas: 3, mode: {mode}}}\n"
    )
}

#[test]
fn crd_validation_rules_refuse_bad_objects_and_changes_to_immutable_fields() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let out = server.kubectl_stdin(&["apply", "-f", "-"], CRD);
    assert!(out.status.success(), "apply CRD: {}", text(&out.stderr));
    server.kubectl_ok(&[
        "wait",
        "--for=condition=established",
        "crd/gadgets.example.com",
        "--timeout=30s",
    ]);

    let out = server.kubectl_stdin(&["apply", "-f", "-"], &gadget(4, "fast"));
    assert!(!out.status.success(), "4 > 3 replicas was admitted");
    assert!(
        text(&out.stderr)
            .contains("spec: Invalid value: \"object\": replicas must be <= maxReplicas"),
        "{}",
        text(&out.stderr)
    );

    let out = server.kubectl_stdin(&["apply", "-f", "-"], &gadget(2, "fast"));
    assert!(out.status.success(), "valid gadget: {}", text(&out.stderr));
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &gadget(3, "fast"));
    assert!(
        out.status.success(),
        "replicas change: {}",
        text(&out.stderr)
    );

    let out = server.kubectl_stdin(&["apply", "-f", "-"], &gadget(3, "slow"));
    assert!(!out.status.success(), "the mode change was admitted");
    assert!(
        text(&out.stderr).contains("spec.mode: Invalid value: \"object\": mode is immutable"),
        "{}",
        text(&out.stderr)
    );

    // A rule that does not compile refuses the CRD itself.
    let broken = CRD
        .replace("gadgets", "brokens")
        .replace("gadget", "broken")
        .replace("Gadget", "Broken")
        .replace("self.replicas <= self.maxReplicas", "self.replicas <=");
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &broken);
    assert!(
        !out.status.success(),
        "a CRD with a broken rule was admitted"
    );
    assert!(
        text(&out.stderr).contains("x-kubernetes-validations[0].rule"),
        "{}",
        text(&out.stderr)
    );
}
