//! The swagger 2.0 document in gnostic's protobuf form (`openapi.v2.Document`), which kubectl asks
//! for alone (no JSON fallback) in `explain --output plaintext-openapiv2` and its v2 model parser.
//!
//! Only what kubectl reads is encoded: `swagger`, `info` and `definitions`, with every schema
//! keyword the catalog uses. Field numbers are those of gnostic's `OpenAPIv2.proto`. Vendor
//! extensions travel as YAML text, and JSON text is YAML.

use serde_json::Value;

/// Encode the JSON swagger document `doc` as a gnostic `Document`.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(swagger) = doc.get("swagger").and_then(Value::as_str) {
        string_field(&mut out, 1, swagger);
    }
    if let Some(info) = doc.get("info") {
        let mut info_bytes = Vec::new();
        for (number, key) in [(1, "title"), (2, "version")] {
            if let Some(s) = info.get(key).and_then(Value::as_str) {
                string_field(&mut info_bytes, number, s);
            }
        }
        message_field(&mut out, 2, &info_bytes);
    }
    if let Some(Value::Object(definitions)) = doc.get("definitions") {
        let mut defs = Vec::new();
        for (name, schema) in definitions {
            message_field(&mut defs, 1, &named_schema(name, schema));
        }
        message_field(&mut out, 9, &defs);
    }
    out
}

/// `NamedSchema { name = 1; value = 2 }`.
fn named_schema(name: &str, schema: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 1, name);
    message_field(&mut out, 2, &schema_message(schema));
    out
}

/// `openapi.v2.Schema`.
fn schema_message(schema: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let Value::Object(map) = schema else {
        return out;
    };
    let text = |key: &str| map.get(key).and_then(Value::as_str);
    if let Some(r) = text("$ref") {
        string_field(&mut out, 1, r);
    }
    if let Some(f) = text("format") {
        string_field(&mut out, 2, f);
    }
    if let Some(t) = text("title") {
        string_field(&mut out, 3, t);
    }
    if let Some(d) = text("description") {
        string_field(&mut out, 4, d);
    }
    if let Some(default) = map.get("default") {
        message_field(&mut out, 5, &any_message(default));
    }
    if let Some(Value::Array(required)) = map.get("required") {
        for r in required.iter().filter_map(Value::as_str) {
            string_field(&mut out, 19, r);
        }
    }
    if let Some(Value::Array(values)) = map.get("enum") {
        for v in values {
            message_field(&mut out, 20, &any_message(v));
        }
    }
    match map.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut item = Vec::new();
            bool_field(&mut item, 2, *b);
            message_field(&mut out, 21, &item);
        }
        Some(s @ Value::Object(_)) => {
            let mut item = Vec::new();
            message_field(&mut item, 1, &schema_message(s));
            message_field(&mut out, 21, &item);
        }
        _ => {}
    }
    let types: Vec<&str> = match map.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let mut item = Vec::new();
        for t in types {
            string_field(&mut item, 1, t);
        }
        message_field(&mut out, 22, &item);
    }
    let items: Vec<&Value> = match map.get("items") {
        Some(s @ Value::Object(_)) => vec![s],
        Some(Value::Array(list)) => list.iter().collect(),
        _ => Vec::new(),
    };
    if !items.is_empty() {
        let mut item = Vec::new();
        for s in items {
            message_field(&mut item, 1, &schema_message(s));
        }
        message_field(&mut out, 23, &item);
    }
    if let Some(Value::Array(all_of)) = map.get("allOf") {
        for s in all_of {
            message_field(&mut out, 24, &schema_message(s));
        }
    }
    if let Some(Value::Object(properties)) = map.get("properties") {
        let mut props = Vec::new();
        for (name, s) in properties {
            message_field(&mut props, 1, &named_schema(name, s));
        }
        message_field(&mut out, 25, &props);
    }
    if let Some(Value::Bool(read_only)) = map.get("readOnly") {
        bool_field(&mut out, 27, *read_only);
    }
    for (name, value) in map.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut named = Vec::new();
        string_field(&mut named, 1, name);
        message_field(&mut named, 2, &any_message(value));
        message_field(&mut out, 31, &named);
    }
    out
}

/// `openapi.v2.Any { yaml = 2 }`.
fn any_message(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 2, &format!("{value}\n"));
    out
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn key(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

fn bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    key(out, number, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn string_field(out: &mut Vec<u8>, number: u32, s: &str) {
    bytes_field(out, number, s.as_bytes());
}

fn message_field(out: &mut Vec<u8>, number: u32, message: &[u8]) {
    bytes_field(out, number, message);
}

fn bool_field(out: &mut Vec<u8>, number: u32, b: bool) {
    key(out, number, 0);
    varint(out, u64::from(b));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn varints_use_seven_bits_per_byte() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }

    #[test]
    fn a_document_encodes_swagger_and_a_definition_with_a_vendor_extension() {
        let doc = json!({
            "swagger": "2.0",
            "definitions": {"A": {"type": "object", "x-k": "v"}},
        });
        let bytes = encode(&doc);
        // swagger = 1, "2.0"
        assert_eq!(&bytes[..5], &[0x0a, 3, b'2', b'.', b'0']);
        // definitions = 9 (key 0x4a) holding NamedSchema "A" whose schema has type = 22.
        assert_eq!(bytes[5], 0x4a);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("object") && text.contains("x-k") && text.contains("\"v\"\n"));
    }
}
