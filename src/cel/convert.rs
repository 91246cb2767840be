//! JSON objects to CEL values and back. Integers become CEL `int` (Kubernetes integer fields are
//! int64), other numbers `double`.

use std::collections::HashMap;
use std::sync::Arc;

use cel_interpreter::objects::{Key, Map};
use cel_interpreter::Value;
use serde_json::Value as Json;

pub fn to_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(to_value).collect())),
        Json::Object(members) => {
            let map: HashMap<Key, Value> = members
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_value(v)))
                .collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}

/// The JSON form of a CEL value; values JSON has no form for become their text.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::String(s) => Json::String(s.to_string()),
        Value::Bytes(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
        Value::List(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(map) => Json::Object(
            map.map
                .iter()
                .map(|(k, v)| (key_text(k), to_json(v)))
                .collect(),
        ),
        Value::Function(name, _) => Json::String(name.to_string()),
    }
}

fn key_text(key: &Key) -> String {
    match key {
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
        Key::String(s) => s.to_string(),
    }
}

/// The CEL name of a value's type, for error messages.
pub fn type_name(value: &Value) -> &str {
    if let Some(library_type) = super::opaque::type_of(value) {
        return library_type;
    }
    match value {
        Value::Null => "null_type",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Function(..) => "function",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_cel_values() {
        let object = json!({"a": [1, -2, 2.5, "x", true, null], "b": {"c": {}}});
        assert_eq!(to_json(&to_value(&object)), object);
        assert_eq!(to_value(&json!(6)), Value::Int(6));
    }
}
