use super::*;
use crate::admission::Operation;
use serde_json::json;

fn policy(spec: Value) -> ValidatingAdmissionPolicy {
    serde_json::from_value(json!({"metadata": {"name": "replica-limit"}, "spec": spec}))
        .expect("policy")
}

fn binding(spec: Value) -> ValidatingAdmissionPolicyBinding {
    serde_json::from_value(json!({"metadata": {"name": "replica-limit-binding"}, "spec": spec}))
        .expect("binding")
}

fn deployment_write<'a>(old: Option<&'a Value>) -> Attributes<'a> {
    Attributes {
        operation: if old.is_some() {
            Operation::Update
        } else {
            Operation::Create
        },
        resource: resources::find("apps", "v1", "deployments").expect("deployments"),
        subresource: None,
        namespace: "default",
        name: "web",
        old,
        dry_run: false,
        user: None,
    }
}

fn deployment(replicas: i64) -> Value {
    json!({"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"replicas": replicas}})
}

fn validations(rules: Value) -> Vec<Validation> {
    serde_json::from_value(rules).expect("validations")
}

#[test]
fn a_failed_validation_without_message_names_its_expression() {
    let object = deployment(6);
    let a = deployment_write(None);
    let activation = cel_request::activation(&a, Some(&object));
    let rules = validations(json!([{"expression": "object.spec.replicas <= 5"}]));
    let failure = check(&rules[0], &activation).expect("evaluates");
    assert_eq!(
        failure,
        Some(Failure {
            message: "failed expression: object.spec.replicas <= 5".into(),
            reason: None
        })
    );
    let ok = cel_request::activation(&a, Some(&deployment(5)));
    assert_eq!(check(&rules[0], &ok), Ok(None));
}

#[test]
fn message_expressions_win_over_messages_unless_they_fail() {
    let object = deployment(6);
    let a = deployment_write(None);
    let activation = cel_request::activation(&a, Some(&object));
    let rules = validations(json!([
        {"expression": "object.spec.replicas <= 5", "message": "static",
         "messageExpression": "'replicas ' + string(object.spec.replicas) + ' > 5'"},
        {"expression": "object.spec.replicas <= 5", "message": "static",
         "messageExpression": "object.nope"},
    ]));
    let first = check(&rules[0], &activation).expect("evaluates");
    assert_eq!(first.map(|f| f.message), Some("replicas 6 > 5".into()));
    let second = check(&rules[1], &activation).expect("evaluates");
    assert_eq!(second.map(|f| f.message), Some("static".into()));
}

#[test]
fn an_expression_that_fails_is_an_error_naming_it() {
    let object = deployment(6);
    let a = deployment_write(None);
    let activation = cel_request::activation(&a, Some(&object));
    let rules = validations(json!([{"expression": "object.spec.paused == false"}]));
    let err = check(&rules[0], &activation).unwrap_err();
    assert_eq!(
        err,
        "expression 'object.spec.paused == false' resulted in error: no such key: paused"
    );
}

#[test]
fn variables_are_bound_in_order_and_visible_to_validations() {
    let object = deployment(6);
    let a = deployment_write(None);
    let mut activation = cel_request::activation(&a, Some(&object));
    let variables = serde_json::from_value::<Vec<_>>(json!([
        {"name": "replicas", "expression": "object.spec.replicas"},
        {"name": "doubled", "expression": "variables.replicas * 2"},
    ]))
    .expect("variables");
    bind_variables(&variables, &mut activation);
    let rules = validations(json!([{"expression": "variables.doubled == 12"}]));
    assert_eq!(check(&rules[0], &activation), Ok(None));
}

#[test]
fn deny_refuses_with_upstreams_message_and_warn_only_warns() {
    let p = policy(json!({}));
    let a = deployment_write(None);
    let failure = || {
        vec![Failure {
            message: "failed expression: object.spec.replicas <= 5".into(),
            reason: None,
        }]
    };
    let deny = binding(json!({"policyName": "replica-limit", "validationActions": ["Deny"]}));
    let err = enforce(&p, &deny, &a, failure()).unwrap_err();
    assert_eq!(err.code, 422);
    assert_eq!(err.reason, "Invalid");
    assert_eq!(
        err.message,
        "deployments.apps \"web\" is forbidden: ValidatingAdmissionPolicy 'replica-limit' with \
         binding 'replica-limit-binding' denied request: failed expression: object.spec.replicas <= 5"
    );
    assert_eq!(err.causes.len(), 1);
    let forbidden = enforce(
        &p,
        &deny,
        &a,
        vec![Failure {
            message: "no".into(),
            reason: Some("Forbidden".into()),
        }],
    )
    .unwrap_err();
    assert_eq!((forbidden.code, forbidden.reason), (403, "Forbidden"));

    let warn = binding(json!({"policyName": "replica-limit", "validationActions": ["Warn"]}));
    let (result, given) = futures::executor::block_on(warnings::collect(async {
        enforce(&p, &warn, &a, failure())
    }));
    assert!(result.is_ok());
    assert_eq!(
        given,
        vec![
            "Validation failed for ValidatingAdmissionPolicy 'replica-limit' with binding \
              'replica-limit-binding': failed expression: object.spec.replicas <= 5"
        ]
    );
}

#[test]
fn match_constraints_select_by_rule_name_and_labels() {
    let object = deployment(3);
    let a = deployment_write(None);
    let constraints = |m: Value| -> k8s_openapi::api::admissionregistration::v1::MatchResources {
        serde_json::from_value(m).expect("match resources")
    };
    let rule = json!({"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]});
    let all = constraints(json!({"resourceRules": [rule]}));
    assert!(matching::matches(
        Some(&all),
        false,
        &a,
        Some(&object),
        None
    ));
    let other = constraints(
        json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["*"], "resources": ["pods"]}]}),
    );
    assert!(!matching::matches(
        Some(&other),
        false,
        &a,
        Some(&object),
        None
    ));
    let mut named = rule.clone();
    named["resourceNames"] = json!(["other"]);
    let named = constraints(json!({"resourceRules": [named]}));
    assert!(!matching::matches(
        Some(&named),
        false,
        &a,
        Some(&object),
        None
    ));
    let excluded = constraints(json!({"resourceRules": [rule], "excludeResourceRules": [rule]}));
    assert!(!matching::matches(
        Some(&excluded),
        false,
        &a,
        Some(&object),
        None
    ));
    let labelled = constraints(
        json!({"resourceRules": [rule], "objectSelector": {"matchLabels": {"app": "db"}}}),
    );
    assert!(!matching::matches(
        Some(&labelled),
        false,
        &a,
        Some(&object),
        None
    ));
    let in_prod = constraints(
        json!({"resourceRules": [rule], "namespaceSelector": {"matchLabels": {"env": "prod"}}}),
    );
    let prod = json!({"metadata": {"name": "default", "labels": {"env": "prod"}}});
    assert!(matching::matches(
        Some(&in_prod),
        false,
        &a,
        Some(&object),
        Some(&prod)
    ));
    assert!(!matching::matches(
        Some(&in_prod),
        false,
        &a,
        Some(&object),
        Some(&json!({}))
    ));
    assert!(!matching::matches(None, false, &a, Some(&object), None));
    // A binding's matchResources may leave the rules to the policy and only add selectors.
    let selectors_only =
        constraints(json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}}));
    assert!(matching::matches(
        Some(&selectors_only),
        true,
        &a,
        Some(&object),
        Some(&prod)
    ));
    assert!(!matching::matches(
        Some(&selectors_only),
        false,
        &a,
        Some(&object),
        Some(&prod)
    ));
}
