//! Values of the Kubernetes library types (quantity, URL, the authorizer and its checks).
//!
//! The interpreter knows only CEL's own types, so such a value is a map carrying its type name
//! under a key no CEL field selection can spell (`@type`); the library functions check that
//! key before they touch the rest. Equality between two values of one type compares their
//! fields, so each type stores a canonical form.

use std::collections::HashMap;
use std::sync::Arc;

use cel_interpreter::objects::{Key, Map};
use cel_interpreter::Value;

const TYPE_KEY: &str = "@type";

pub fn object<'a>(type_name: &str, fields: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let mut map: HashMap<Key, Value> = fields
        .into_iter()
        .map(|(k, v)| (Key::String(Arc::new(k.to_string())), v))
        .collect();
    map.insert(
        Key::String(Arc::new(TYPE_KEY.to_string())),
        Value::String(Arc::new(type_name.to_string())),
    );
    Value::Map(Map { map: Arc::new(map) })
}

/// The library type of `value`, if it is one.
pub fn type_of(value: &Value) -> Option<&str> {
    match value {
        Value::Map(map) => match map.map.get(&Key::String(Arc::new(TYPE_KEY.to_string()))) {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// Field `name` of `value` when `value` is of library type `type_name`.
pub fn field<'v>(value: &'v Value, type_name: &str, name: &str) -> Option<&'v Value> {
    if type_of(value) != Some(type_name) {
        return None;
    }
    match value {
        Value::Map(map) => map.map.get(&Key::String(Arc::new(name.to_string()))),
        _ => None,
    }
}

/// A string field of a library value ("" when absent).
pub fn string_field(value: &Value, type_name: &str, name: &str) -> String {
    match field(value, type_name, name) {
        Some(Value::String(s)) => s.to_string(),
        _ => String::new(),
    }
}

/// `value` with `fields` replaced.
pub fn with<'a>(value: &Value, fields: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let Value::Map(map) = value else {
        return value.clone();
    };
    let mut map = map.map.as_ref().clone();
    for (k, v) in fields {
        map.insert(Key::String(Arc::new(k.to_string())), v);
    }
    Value::Map(Map { map: Arc::new(map) })
}
