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
                if let Some(error) = compile_error(source) {
                    causes.push(Cause::invalid(
                        &format!("spec.{list}[{i}].{key}"),
                        source,
                        &error,
                    ));
                }
            }
        }
    }
}

/// Why `source` does not compile. Upstream types the objects a policy sees as `dyn` when it
/// is written, so only what fails whatever they hold is refused (`1 + 'a'`); the fields of
/// the kinds it matches are checked later, as the status's warnings.
fn compile_error(source: &str) -> Option<String> {
    let no_definitions = |_: &str| -> Option<&Value> { None };
    match cel::compile(source) {
        Err(e) => Some(e.to_string()),
        Ok(program) => cel::typecheck::check(&program, &[], &no_definitions)
            .map(|errors| format!("compilation failed: {errors}")),
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
                {"expression": "true", "messageExpression": "'a' +"},
                {"expression": "object.x + 1 > size(object.y) && object.z == 'a' + 1"}],
            "auditAnnotations": [{"key": "k", "valueExpression": "'fine'"}],
        }});
        let mut causes = Vec::new();
        expression_causes(&policy, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.variables[0].expression",
                "spec.validations[1].messageExpression",
                "spec.validations[2].expression",
            ]
        );
        assert_eq!(
            causes[0].message,
            "Invalid value: \"object.x +\": compilation failed: ERROR: <input>:1:11: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}\n | object.x +\n | ..........^"
        );
        assert_eq!(
            causes[2].message,
            "Invalid value: \"object.x + 1 > size(object.y) && object.z == 'a' + 1\": compilation failed: ERROR: <input>:1:50: found no matching overload for '_+_' applied to '(string, int)'\n | object.x + 1 > size(object.y) && object.z == 'a' + 1\n | .................................................^"
        );
    }
}
