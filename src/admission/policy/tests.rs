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
            reason: None,
            expression_index: 0,
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
fn optional_values_pass_through_variables() {
    let object = deployment(6);
    let a = deployment_write(None);
    let mut activation = cel_request::activation(&a, Some(&object));
    let variables = serde_json::from_value::<Vec<_>>(json!([
        {"name": "spec", "expression": "object.?spec"},
        {"name": "paused", "expression": "object.spec.?paused"},
        {"name": "labels", "expression": "object.metadata.?labels.orValue({})"},
    ]))
    .expect("variables");
    bind_variables(&variables, &mut activation);
    for expression in [
        "variables.spec.hasValue() && variables.spec.?replicas.orValue(0) == 6",
        "variables.spec.?replicas.value() == 6",
        "!variables.paused.hasValue() && variables.paused.orValue(false) == false",
        "variables.?spec.hasValue() && !variables.?nothing.hasValue()",
        "variables.labels.?app.orValue('') == variables.labels.?app.orValue('')",
    ] {
        let rules = validations(json!([{ "expression": expression }]));
        assert_eq!(check(&rules[0], &activation), Ok(None), "{expression}");
    }
}

#[test]
fn deny_refuses_with_upstreams_message_and_warn_only_warns() {
    let p = policy(json!({}));
    let a = deployment_write(None);
    let failure = || {
        vec![Failure {
            message: "failed expression: object.spec.replicas <= 5".into(),
            reason: None,
            expression_index: 0,
        }]
    };
    let deny = binding(json!({"policyName": "replica-limit", "validationActions": ["Deny"]}));
    let mut audit = Audit::default();
    let err = enforce(&p, &deny, &a, failure(), &mut audit).unwrap_err();
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
            expression_index: 0,
        }],
        &mut audit,
    )
    .unwrap_err();
    assert_eq!((forbidden.code, forbidden.reason), (403, "Forbidden"));

    let warn = binding(json!({"policyName": "replica-limit", "validationActions": ["Warn"]}));
    let (result, given) = futures::executor::block_on(warnings::collect(async {
        enforce(&p, &warn, &a, failure(), &mut Audit::default())
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

#[test]
fn audit_bindings_record_the_failure_as_upstreams_annotation() {
    let p = policy(json!({}));
    let a = deployment_write(None);
    let failure = Failure {
        message: "too many".into(),
        reason: None,
        expression_index: 1,
    };
    let audited =
        binding(json!({"policyName": "replica-limit", "validationActions": ["Warn", "Audit"]}));
    let mut audit = Audit::default();
    let (result, _) = futures::executor::block_on(warnings::collect(async {
        enforce(&p, &audited, &a, vec![failure], &mut audit)
    }));
    assert!(result.is_ok());
    assert_eq!(
        audit.failures,
        [json!({"message": "too many", "policy": "replica-limit",
                "binding": "replica-limit-binding", "expressionIndex": 1,
                "validationActions": ["Warn", "Audit"]})]
    );
}

#[test]
fn audit_annotations_give_strings_and_leave_out_null_and_empty_ones() {
    let object = deployment(7);
    let a = deployment_write(None);
    let activation = cel_request::activation(&a, Some(&object));
    assert_eq!(
        audit_annotation(
            "'replicas set to ' + string(object.spec.replicas)",
            &activation
        ),
        Ok(Some("replicas set to 7".into()))
    );
    assert_eq!(
        audit_annotation(
            "object.spec.replicas > 5 ? 'high' : null",
            &deployment_activation(3)
        ),
        Ok(None)
    );
    assert_eq!(audit_annotation("''", &activation), Ok(None));
    let err = audit_annotation("object.spec.replicas", &activation).unwrap_err();
    assert!(err.contains("must evaluate to a string or null"), "{err}");

    let mut audit = Audit::default();
    let p = policy(json!({}));
    audit.annotate(&p, &[("level".into(), "high".into())]);
    audit.annotate(
        &p,
        &[
            ("level".into(), "high".into()),
            ("level".into(), "low".into()),
        ],
    );
    assert_eq!(
        audit.annotations,
        [(
            "replica-limit/level".to_string(),
            vec!["high".to_string(), "low".to_string()]
        )]
    );
}

fn deployment_activation(replicas: i64) -> Activation {
    let object = deployment(replicas);
    cel_request::activation(&deployment_write(None), Some(&object))
}

#[tokio::test]
async fn the_authorizer_answers_from_rbac_for_the_writing_user() {
    use crate::apiserver::authn::UserInfo;
    use crate::apiserver::rbac::{policy::Policy, Rbac};
    let mut rbac_policy = Policy::default();
    rbac_policy.apply(
        "/rbac.authorization.k8s.io/clusterroles/deployer",
        Some(&json!({"rules": [{"verbs": ["create"], "apiGroups": ["apps"], "resources": ["deployments"]}]})),
    );
    rbac_policy.apply(
        "/rbac.authorization.k8s.io/rolebindings/default/alice",
        Some(&json!({"roleRef": {"kind": "ClusterRole", "name": "deployer"}, "subjects": [{"kind": "User", "name": "alice"}]})),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let store = crate::store::Store::open(
        &dir.path().join("s.redb"),
        crate::store::StoreOptions {
            history_revisions: 100,
            watch_buffer: 16,
        },
    )
    .expect("store");
    let network = crate::registry::services::ServiceNetwork::parse("10.43.0.0/16", (30000, 32767))
        .expect("network");
    let registry = Registry::new(store, network);
    let plugin = ValidatingAdmissionPolicies::start(&registry);
    plugin.use_rbac(Arc::new(Rbac::from_policy(rbac_policy)));
    let object = deployment(1);
    let mut a = deployment_write(None);
    a.user = Some(UserInfo {
        name: "alice".into(),
        uid: String::new(),
        groups: vec!["system:authenticated".into()],
    });
    let mut activation = cel_request::activation(&a, Some(&object));
    plugin.bind_authorizer(&mut activation, &a);
    let holds = |source: &str| {
        crate::cel::compile(source)
            .and_then(|p| p.eval_bool(&activation))
            .expect("evaluates")
    };
    assert!(holds(
        "authorizer.requestResource.check('create').allowed()"
    ));
    assert!(!holds(
        "authorizer.requestResource.check('delete').allowed()"
    ));
    assert!(holds("authorizer.group('apps').resource('deployments').namespace('default').check('create').reason().contains('deployer')"));
    assert!(!holds("authorizer.group('apps').resource('deployments').namespace('other').check('create').allowed()"));
    assert!(!holds("authorizer.path('/healthz').check('get').allowed()"));
}
