//! A ValidatingAdmissionPolicy is refused when one of its expressions does not compile, as
//! upstream's validation does: a broken policy never reaches admission.

use serde_json::Value;

use crate::api::Cause;
use crate::cel;

/// Causes for the policy's expressions that do not compile, at upstream's field paths.
pub fn expression_causes(policy: &Value, causes: &mut Vec<Cause>) {
    let fields: [(&str, &[&str]); 4] = [
        ("matchConditions", &["expression"]),
        ("variables", &["expression"]),
        ("validations", &["expression", "messageExpression"]),
        ("auditAnnotations", &["valueExpression"]),
    ];
    for (list, keys) in fields {
        let items = policy
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array);
        for (i, item) in items.into_iter().flatten().enumerate() {
            for key in keys {
                let Some(source) = item.get(*key).and_then(Value::as_str) else {
                    continue;
                };
                if let Err(e) = cel::compile(source) {
                    causes.push(Cause::invalid(
                        &format!("spec.{list}[{i}].{key}"),
                        source,
                        &e.to_string(),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expressions_that_do_not_compile_are_causes_at_their_field() {
        let policy = json!({"spec": {
            "matchConditions": [{"name": "a", "expression": "true"}],
            "variables": [{"name": "v", "expression": "object.x +"}],
            "validations": [
                {"expression": "object.x > 1"},
                {"expression": "true", "messageExpression": "'a' +"}],
            "auditAnnotations": [{"key": "k", "valueExpression": "'fine'"}],
        }});
        let mut causes = Vec::new();
        expression_causes(&policy, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.variables[0].expression",
                "spec.validations[1].messageExpression"
            ]
        );
        assert!(
            causes[0]
                .message
                .starts_with("Invalid value: \"object.x +\": compilation failed: "),
            "{}",
            causes[0].message
        );
    }
}
