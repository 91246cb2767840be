//! The Kubernetes CEL libraries in ValidatingAdmissionPolicies, driven by the real kubectl
//! against a real `berth server` in a test-made network namespace: `quantity()` and `url()` in
//! validations, `authorizer` answered by RBAC for an impersonated user, `auditAnnotations` and
//! an `Audit` binding in the audit log, type-checking warnings in a policy's status, and a CRD
//! rule naming a field its schema lacks refused with the CRD. Needs root (network namespaces);
//! CI runs as root.

mod common;

use std::time::{Duration, Instant};

use common::netns::Netns;
use common::server::BerthServer;
use serde_json::Value;

const POLICIES: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: configmap-writer, namespace: team}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [create, get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bob-writes-configmaps, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-writer}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: limits.example.com}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [configmaps]}
  matchConditions:
  - name: in-team
    expression: "request.namespace == 'team'"
  validations:
  - expression: "!('memory' in object.data) || quantity(object.data.memory).isLessThan(quantity('1Gi'))"
    messageExpression: "'memory ' + object.data.memory + ' must be below 1Gi'"
  - expression: "!('endpoint' in object.data) || url(object.data.endpoint).getScheme() == 'https'"
    messageExpression: "'endpoint ' + object.data.endpoint + ' must use https'"
  - expression: >-
      !('secretRef' in object.data) ||
      authorizer.group('').resource('secrets').namespace(request.namespace).check('get').allowed()
    message: "only users who may read secrets may refer to one"
    reason: Forbidden
  auditAnnotations:
  - key: memory
    valueExpression: "'memory' in object.data ? 'memory ' + object.data.memory : null"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: limits}
spec:
  policyName: limits.example.com
  validationActions: [Deny]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: deprecations.example.com}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}
  validations:
  - expression: "!('legacy' in object.data)"
    message: "the legacy key is deprecated"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: deprecations}
spec:
  policyName: deprecations.example.com
  validationActions: [Audit]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: typo.example.com}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}
  validations:
  - expression: "object.spec.replicas <= 10"
  - expression: "object.spec.replica <= 10"
"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Policies reach admission through a watch: retry until `done` holds or time runs out.
fn eventually<T>(what: &str, mut done: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match done() {
            Ok(value) => return value,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn audit_events(server: &BerthServer) -> Vec<Value> {
    let log =
        std::fs::read_to_string(server.data_dir().join("audit/audit.log")).unwrap_or_default();
    log.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The audit event of the configmap create that made `name`.
fn create_event(server: &BerthServer, name: &str) -> Result<Value, String> {
    audit_events(server)
        .into_iter()
        .find(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "configmaps"
                && e["responseStatus"]["code"] == 201
                && e["annotations"].to_string().contains(name)
        })
        .ok_or_else(|| format!("no audit event for {name}"))
}

fn create_configmap(
    server: &BerthServer,
    name: &str,
    literal: &str,
    user: Option<&str>,
) -> (bool, String) {
    let from_literal = format!("--from-literal={literal}");
    let mut args = vec![
        "create",
        "configmap",
        name,
        "-n",
        "team",
        from_literal.as_str(),
    ];
    let as_user;
    if let Some(user) = user {
        as_user = format!("--as={user}");
        args.push(&as_user);
    }
    let out = server.kubectl(&args);
    (out.status.success(), text(&out.stderr))
}

#[test]
fn policies_use_quantities_urls_the_authorizer_and_audit_annotations() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let out = server.kubectl_stdin(&["apply", "-f", "-"], POLICIES);
    assert!(
        out.status.success(),
        "apply policies: {}",
        text(&out.stderr)
    );

    // quantity(): 2Gi is refused with the messageExpression's text.
    eventually("the quantity rule refuses 2Gi", || {
        match create_configmap(&server, "big", "memory=2Gi", None) {
            (false, stderr) if stderr.contains("memory 2Gi must be below 1Gi") => Ok(()),
            (true, _) => {
                server.kubectl(&["delete", "configmap", "big", "-n", "team"]);
                Err("2Gi was admitted".to_string())
            }
            (false, stderr) => Err(stderr),
        }
    });
    let (ok, stderr) = create_configmap(&server, "small", "memory=512Mi", None);
    assert!(ok, "512Mi: {stderr}");

    // url(): a plain-http endpoint is refused, https admitted.
    let (ok, stderr) = create_configmap(&server, "plain", "endpoint=http://example.com/x", None);
    assert!(!ok, "http endpoint admitted");
    assert!(
        stderr.contains("endpoint http://example.com/x must use https"),
        "{stderr}"
    );
    let (ok, stderr) = create_configmap(&server, "tls", "endpoint=https://example.com/x", None);
    assert!(ok, "https endpoint: {stderr}");

    // authorizer: bob may write configmaps but not read secrets, so he may not refer to one;
    // the admin may.
    let (ok, stderr) = create_configmap(&server, "bobs", "plain=1", Some("bob"));
    assert!(ok, "bob's plain configmap: {stderr}");
    let (ok, stderr) = create_configmap(&server, "bobs-ref", "secretRef=db", Some("bob"));
    assert!(!ok, "bob's secretRef admitted");
    assert!(
        stderr.contains(
            "configmaps \"bobs-ref\" is forbidden: ValidatingAdmissionPolicy 'limits.example.com' \
             with binding 'limits' denied request: only users who may read secrets may refer to one"
        ),
        "{stderr}"
    );
    let (ok, stderr) = create_configmap(&server, "admins-ref", "secretRef=db", None);
    assert!(ok, "admin's secretRef: {stderr}");

    // auditAnnotations: `<policy>/<key>` on the event of the write that matched.
    let event = eventually("the audit annotation is logged", || {
        create_event(&server, "memory 512Mi")
    });
    assert_eq!(event["objectRef"]["namespace"], "team");
    assert_eq!(
        event["annotations"]["limits.example.com/memory"],
        "memory 512Mi"
    );

    // An Audit binding admits and records the failure as upstream's annotation.
    let (ok, stderr) = create_configmap(&server, "old", "legacy=1", None);
    assert!(ok, "the Audit binding refused: {stderr}");
    let event = eventually("the validation failure is logged", || {
        create_event(&server, "the legacy key is deprecated")
    });
    let failures: Value = serde_json::from_str(
        event["annotations"]["validation.policy.admission.k8s.io/validation_failure"]
            .as_str()
            .expect("the annotation is a string"),
    )
    .expect("the annotation holds JSON");
    assert_eq!(
        failures,
        serde_json::json!([{
            "message": "the legacy key is deprecated",
            "policy": "deprecations.example.com",
            "binding": "deprecations",
            "expressionIndex": 0,
            "validationActions": ["Audit"],
        }])
    );

    // Type checking: the typo is warned about in the policy's status.
    let status = eventually("the policy's status is type-checked", || {
        let out = server.kubectl(&[
            "get",
            "validatingadmissionpolicy",
            "typo.example.com",
            "-o",
            "jsonpath={.status}",
        ]);
        let status: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        match status["observedGeneration"].as_i64() {
            Some(1) => Ok(status),
            _ => Err(format!("status {status}")),
        }
    });
    assert_eq!(
        status["typeChecking"]["expressionWarnings"],
        serde_json::json!([{
            "fieldRef": "spec.validations[1].expression",
            "warning": "apps/v1, Kind=Deployment: ERROR: <input>:1:12: undefined field 'replica'\n | object.spec.replica <= 10\n | ...........^\n",
        }])
    );

    // A policy whose expression does not compile is refused.
    let broken = POLICIES
        .split("---")
        .last()
        .unwrap_or_default()
        .replace("typo.example.com", "broken.example.com")
        .replace("object.spec.replica <= 10", "object.spec.replicas <");
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &broken);
    assert!(
        !out.status.success(),
        "a policy that does not compile was admitted"
    );
    assert!(
        text(&out.stderr).contains(
            "spec.validations[1].expression: Invalid value: \"object.spec.replicas <\": compilation failed: \
             ERROR: <input>:1:23: Syntax error: mismatched input '<EOF>' expecting"
        ),
        "{}",
        text(&out.stderr)
    );

    // Nor one whose operator cannot take its operands, whatever the object holds.
    let mistyped = broken.replace("object.spec.replicas <", "size(object.spec) > '3'");
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &mistyped);
    assert!(!out.status.success(), "a mistyped policy was admitted");
    assert!(
        text(&out.stderr).contains(
            "spec.validations[1].expression: Invalid value: \"size(object.spec) > '3'\": compilation failed: \
             ERROR: <input>:1:19: found no matching overload for '_>_' applied to '(int, string)'\n \
             | size(object.spec) > '3'\n \
             | ..................^"
        ),
        "{}",
        text(&out.stderr)
    );
}

const CRD_WITH_TYPO: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
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
            - rule: "self.replicas <= self.maxReplica"
            - rule: "self.replicas + self.name > 0"
            properties:
              replicas: {type: integer}
              maxReplicas: {type: integer}
              name: {type: string}
"#;

#[test]
fn a_crd_rule_naming_a_field_its_schema_lacks_is_refused_with_the_crd() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let out = server.kubectl_stdin(&["apply", "-f", "-"], CRD_WITH_TYPO);
    assert!(!out.status.success(), "the CRD with a typo was admitted");
    let stderr = text(&out.stderr);
    let rules = "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations";
    // The invalid value is the whole rule, as Go prints upstream's internal type.
    let rule = |source: &str| {
        format!(
            "apiextensions.ValidationRule{{Rule:\"{source}\", Message:\"\", MessageExpression:\"\", \
             Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", \
             OptionalOldSelf:(*bool)(nil)}}"
        )
    };
    // Each error as cel-go displays it: position, message, the source line and a caret.
    for expected in [
        format!(
            "{rules}[0].rule: Invalid value: {}: compilation failed: \
             ERROR: <input>:1:22: undefined field 'maxReplica'\n | self.replicas <= self.maxReplica\n \
             | .....................^",
            rule("self.replicas <= self.maxReplica")
        ),
        format!(
            "{rules}[1].rule: Invalid value: {}: compilation failed: \
             ERROR: <input>:1:15: found no matching overload for '_+_' applied to '(int, string)'\n \
             | self.replicas + self.name > 0\n | ..............^",
            rule("self.replicas + self.name > 0")
        ),
    ] {
        assert!(stderr.contains(&expected), "{expected}\nnot in:\n{stderr}");
    }
    let fixed = CRD_WITH_TYPO
        .replace("self.maxReplica\"", "self.maxReplicas\"")
        .replace(
            "self.replicas + self.name > 0",
            "self.replicas + size(self.name) > 0",
        );
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &fixed);
    assert!(out.status.success(), "the fixed CRD: {}", text(&out.stderr));
}

const TEAM_POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: optional-team}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: team-label.example.com}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [configmaps]}
  matchConditions:
  - name: in-namespace
    expression: "request.namespace == 'optional-team'"
  validations:
  - expression: "object.?metadata.labels[?'team'].orValue('none') != 'none'"
    messageExpression: "'team is ' + object.?metadata.labels[?'team'].orValue('none')"
  - expression: "!('version' in object.data) || isSemver(object.data.version)"
    message: "version must be a semantic version"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: team-label}
spec:
  policyName: team-label.example.com
  validationActions: [Deny]
"#;

fn configmap(name: &str, labels: &str, version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: optional-team, labels: {{{labels}}}}}\ndata: {{version: \"{version}\"}}\n"
    )
}

#[test]
fn policies_use_optional_selects_with_defaults_and_the_semver_library() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let out = server.kubectl_stdin(&["apply", "-f", "-"], TEAM_POLICY);
    assert!(out.status.success(), "the policy: {}", text(&out.stderr));

    // No labels at all: the optional chain falls back to 'none' instead of failing.
    let refused = eventually("the policy refuses a configmap without a team", || {
        let out = server.kubectl_stdin(&["apply", "-f", "-"], &configmap("a", "", "1.2.3"));
        if out.status.success() {
            let _ = server.kubectl(&["delete", "configmap", "a", "-n", "optional-team"]);
            return Err("admitted".into());
        }
        Ok(text(&out.stderr))
    });
    assert!(refused.contains("team is none"), "{refused}");

    let out = server.kubectl_stdin(&["apply", "-f", "-"], &configmap("b", "tier: web", "1.2.3"));
    assert!(
        !out.status.success(),
        "a configmap without a team label was admitted"
    );
    assert!(
        text(&out.stderr).contains("team is none"),
        "{}",
        text(&out.stderr)
    );

    let out = server.kubectl_stdin(&["apply", "-f", "-"], &configmap("c", "team: blue", "v1.2"));
    assert!(
        !out.status.success(),
        "a configmap with a bad version was admitted"
    );
    assert!(
        text(&out.stderr).contains("version must be a semantic version"),
        "{}",
        text(&out.stderr)
    );

    let out = server.kubectl_stdin(
        &["apply", "-f", "-"],
        &configmap("d", "team: blue", "1.2.3-rc.1"),
    );
    assert!(
        out.status.success(),
        "a valid configmap: {}",
        text(&out.stderr)
    );
}
