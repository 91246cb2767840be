//! The CEL variables an admission request gives policies and webhook `matchConditions`
//! (`object`, `oldObject`, `request`), and evaluation of `matchConditions`, shared by both.

use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use serde_json::{json, Value};

use super::{Attributes, Operation};
use crate::cel::{self, Activation};

/// `object` (null on delete), `oldObject` (null on create) and `request`, as upstream binds them.
pub fn activation(a: &Attributes<'_>, object: Option<&Value>) -> Activation {
    let mut activation = Activation::new();
    let object = match a.operation {
        Operation::Delete => None,
        _ => object,
    };
    activation.bind_json("object", object);
    activation.bind_json("oldObject", a.old);
    activation.bind_json("request", Some(&request(a)));
    activation
}

/// The `request` variable: the AdmissionRequest's attributes without the objects.
fn request(a: &Attributes<'_>) -> Value {
    let r = a.resource;
    let kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let resource = json!({"group": r.group, "version": r.version, "resource": r.plural});
    json!({
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "subResource": a.subresource.unwrap_or(""),
        "name": a.name,
        "namespace": a.namespace,
        "operation": a.operation.as_str(),
        "userInfo": match &a.user {
            Some(u) => json!({"username": u.name, "uid": u.uid, "groups": u.groups}),
            None => json!({"username": "", "uid": "", "groups": []}),
        },
        "dryRun": a.dry_run,
    })
}

/// Do all `conditions` hold? The first false one ends the check; an error (a condition that
/// does not compile or fails) is returned for the caller's failure policy to decide.
pub fn conditions_hold(
    conditions: &[MatchCondition],
    activation: &Activation,
) -> Result<bool, String> {
    let mut first_error = None;
    for condition in conditions {
        let result =
            cel::compile(&condition.expression).and_then(|program| program.eval_bool(activation));
        match result {
            Ok(true) => {}
            // A false condition wins over an error in another one, as upstream.
            Ok(false) => return Ok(false),
            Err(e) if first_error.is_none() => {
                first_error = Some(format!("matchCondition '{}' failed: {e}", condition.name))
            }
            Err(_) => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources;
    use crate::apiserver::authn::UserInfo;

    fn condition(name: &str, expression: &str) -> MatchCondition {
        MatchCondition {
            name: name.into(),
            expression: expression.into(),
        }
    }

    #[test]
    fn conditions_see_the_object_and_the_request() {
        let object = json!({"metadata": {"name": "cm", "labels": {"team": "a"}}});
        let a = Attributes {
            operation: Operation::Create,
            resource: resources::find("", "v1", "configmaps").expect("configmaps"),
            subresource: None,
            namespace: "default",
            name: "cm",
            old: None,
            dry_run: false,
            user: Some(UserInfo::anonymous()),
        };
        let activation = activation(&a, Some(&object));
        let holds = |exprs: &[&str]| {
            let conditions: Vec<_> = exprs.iter().map(|e| condition("c", e)).collect();
            conditions_hold(&conditions, &activation)
        };
        assert_eq!(holds(&["object.metadata.labels.team == 'a'"]), Ok(true));
        assert_eq!(
            holds(&[
                "request.operation == 'CREATE'",
                "request.userInfo.username == 'system:anonymous'",
                "request.resource.resource == 'configmaps'",
                "oldObject == null",
            ]),
            Ok(true)
        );
        assert_eq!(holds(&["request.namespace == 'kube-system'"]), Ok(false));
        // A false condition beats an error; an error alone is reported with its condition.
        assert_eq!(holds(&["object.nope == 1", "false"]), Ok(false));
        let err = holds(&["object.nope == 1"]).unwrap_err();
        assert!(err.starts_with("matchCondition 'c' failed"), "{err}");
    }
}
