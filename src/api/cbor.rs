//! CBOR (RFC 8949) bodies as kube-apiserver reads and writes them, mapped onto the same JSON
//! object model as every other format.
//!
//! Writing follows apimachinery's CBOR serializer: every data item is enclosed in the
//! self-described CBOR tag (55799, bytes `d9 d9 f7`), strings and map keys are byte strings
//! (upstream encodes Go strings that way so unvalidated UTF-8 can never make the output
//! invalid), map keys are sorted bytewise (RFC 8949 4.2.1, so equal objects give equal bytes),
//! integers stay integers and floats take the shortest width that keeps their value.
//!
//! Reading is as lenient as upstream's decoder: text or byte strings, definite or indefinite
//! lengths, the self-described tag anywhere, unknown tags read as their content; and as strict:
//! no duplicate map keys, no NaN or infinities, no integers beyond int64, no simple values other
//! than true, false and null, no trailing bytes.

use minicbor::data::Type;
use minicbor::Decoder;
use serde_json::{Map, Number, Value};

pub const MEDIA_TYPE: &str = "application/cbor";
/// A watch answers with one CBOR data item per event (RFC 8742).
pub const SEQUENCE_MEDIA_TYPE: &str = "application/cbor-seq";
/// Server-side apply with a CBOR body.
pub const APPLY_PATCH_MEDIA_TYPE: &str = "application/apply-patch+cbor";

/// The head of tag 55799, which upstream writes before every data item.
pub const SELF_DESCRIBED: [u8; 3] = [0xd9, 0xd9, 0xf7];
const SELF_DESCRIBED_TAG: u64 = 55799;

/// Deeper bodies are refused, as the JSON reader refuses them (serde_json's limit), so a hostile
/// body cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum CborError {
    #[error("malformed CBOR: {0}")]
    Malformed(#[from] minicbor::decode::Error),
    #[error("{0} bytes of extraneous data after the CBOR data item")]
    Trailing(usize),
    #[error("CBOR map keys must be strings, found {0}")]
    KeyType(Type),
    #[error("duplicate map key {0:?}")]
    DuplicateKey(String),
    #[error("a CBOR string is not valid UTF-8")]
    Utf8,
    #[error("integer overflows int64")]
    IntegerOverflow,
    #[error("NaN and infinite floating-point values have no JSON representation")]
    NotFinite,
    #[error("CBOR {0} is not allowed")]
    NotAllowed(String),
    #[error("CBOR nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// `value` as one self-described CBOR data item.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&SELF_DESCRIBED);
    write_value(&mut out, value);
    out
}

/// Reads one CBOR data item (tagged or not) that must fill `bytes` exactly.
pub fn decode(bytes: &[u8]) -> Result<Value, CborError> {
    let mut decoder = Decoder::new(bytes);
    let value = read_value(&mut decoder, 0, None)?;
    match bytes.len() - decoder.position() {
        0 => Ok(value),
        rest => Err(CborError::Trailing(rest)),
    }
}

/// Reads the next data item of a CBOR sequence starting at `bytes`, with its length; `None`
/// when `bytes` holds only the start of an item (more must be read first).
pub fn decode_next(bytes: &[u8]) -> Result<Option<(Value, usize)>, CborError> {
    let mut decoder = Decoder::new(bytes);
    match read_value(&mut decoder, 0, None) {
        Ok(value) => Ok(Some((value, decoder.position()))),
        Err(CborError::Malformed(e)) if e.is_end_of_input() => Ok(None),
        Err(e) => Err(e),
    }
}

// ---- writing ----

const UNSIGNED: u8 = 0;
const NEGATIVE: u8 = 1;
const BYTES: u8 = 2;
const ARRAY: u8 = 4;
const MAP: u8 = 5;

/// The head of a data item: major type and argument in the shortest form.
fn write_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let major = major << 5;
    match n {
        0..=23 => out.push(major | n as u8),
        24..=0xff => out.extend_from_slice(&[major | 24, n as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_head(out, BYTES, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(0xf6),
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_bytes(out, s.as_bytes()),
        Value::Array(items) => {
            write_head(out, ARRAY, items.len() as u64);
            for item in items {
                write_value(out, item);
            }
        }
        Value::Object(map) => {
            // Byte-string keys compare bytewise by their encoding: shorter keys first (the head
            // holds the length), then by content.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes())));
            write_head(out, MAP, entries.len() as u64);
            for (key, value) in entries {
                write_bytes(out, key.as_bytes());
                write_value(out, value);
            }
        }
    }
}

fn write_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(u) = n.as_u64() {
        write_head(out, UNSIGNED, u);
    } else if let Some(i) = n.as_i64() {
        // Negative: CBOR stores -1 - i, which cannot overflow for any negative i64.
        write_head(out, NEGATIVE, (-1 - i) as u64);
    } else if let Some(f) = n.as_f64() {
        write_float(out, f);
    }
}

/// The shortest of float16, float32 and float64 that holds `x` exactly, as upstream's
/// `ShortestFloat16` (serde_json numbers are always finite).
fn write_float(out: &mut Vec<u8>, x: f64) {
    if let Some(half) = exact_f16(x) {
        out.push(0xf9);
        out.extend_from_slice(&half.to_be_bytes());
    } else if f64::from(x as f32) == x {
        out.push(0xfa);
        out.extend_from_slice(&(x as f32).to_bits().to_be_bytes());
    } else {
        out.push(0xfb);
        out.extend_from_slice(&x.to_bits().to_be_bytes());
    }
}

/// The IEEE 754 half-precision bits of `x` when it has them without rounding.
fn exact_f16(x: f64) -> Option<u16> {
    let sign: u16 = if x.is_sign_negative() { 0x8000 } else { 0 };
    if x == 0.0 {
        return Some(sign);
    }
    let bits = x.abs().to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let fraction = bits & ((1 << 52) - 1);
    match exponent {
        16.. => None,
        -14..=15 => {
            // A normal half keeps the top 10 of the 52 fraction bits.
            (fraction & ((1 << 42) - 1) == 0)
                .then(|| sign | (((exponent + 15) as u16) << 10) | (fraction >> 42) as u16)
        }
        _ => {
            // A subnormal half is m × 2^-24 with 0 < m < 1024.
            let m = x.abs() * f64::from(1u32 << 24);
            (m.fract() == 0.0 && m < 1024.0).then(|| sign | m as u16)
        }
    }
}

fn f16_to_f64(half: u16) -> f64 {
    let sign = if half & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((half >> 10) & 0x1f);
    let fraction = f64::from(half & 0x3ff);
    match exponent {
        0 => sign * fraction * 2f64.powi(-24),
        31 if fraction == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        _ => sign * (1024.0 + fraction) * 2f64.powi(exponent - 25),
    }
}

// ---- reading ----

/// How byte strings under an "expected later encoding" tag (RFC 8949 3.4.5.2) become text.
#[derive(Debug, Clone, Copy)]
enum LaterEncoding {
    Base64Url,
    Base64,
    Base16,
}

fn read_value(
    d: &mut Decoder<'_>,
    depth: usize,
    later: Option<LaterEncoding>,
) -> Result<Value, CborError> {
    if depth > MAX_DEPTH {
        return Err(CborError::TooDeep);
    }
    Ok(match d.datatype()? {
        Type::Bool => Value::Bool(d.bool()?),
        Type::Null => {
            d.null()?;
            Value::Null
        }
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
            let n = d.u64()?;
            Value::from(i64::try_from(n).map_err(|_| CborError::IntegerOverflow)?)
        }
        Type::I8 | Type::I16 | Type::I32 | Type::I64 => {
            Value::from(d.i64().map_err(|_| CborError::IntegerOverflow)?)
        }
        Type::Int => return Err(CborError::IntegerOverflow),
        Type::F16 => {
            let at = d.position();
            let head = d.input().get(at + 1..at + 3).ok_or_else(|| {
                CborError::Malformed(minicbor::decode::Error::end_of_input().at(at))
            })?;
            d.set_position(at + 3);
            float(f16_to_f64(u16::from_be_bytes([head[0], head[1]])))?
        }
        Type::F32 => float(f64::from(d.f32()?))?,
        Type::F64 => float(d.f64()?)?,
        Type::String | Type::StringIndef => Value::String(read_text(d)?),
        Type::Bytes | Type::BytesIndef => {
            let bytes = read_bytes(d)?;
            Value::String(match later {
                None => String::from_utf8(bytes).map_err(|_| CborError::Utf8)?,
                Some(LaterEncoding::Base64Url) => {
                    use base64::Engine;
                    base64::engine::general_purpose::URL_SAFE.encode(bytes)
                }
                Some(LaterEncoding::Base64) => {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                }
                Some(LaterEncoding::Base16) => hex::encode(bytes),
            })
        }
        Type::Array | Type::ArrayIndef => {
            let len = d.array()?;
            let mut items = Vec::new();
            match len {
                Some(n) => {
                    for _ in 0..n {
                        items.push(read_value(d, depth + 1, later)?);
                    }
                }
                None => {
                    while d.datatype()? != Type::Break {
                        items.push(read_value(d, depth + 1, later)?);
                    }
                    d.skip()?;
                }
            }
            Value::Array(items)
        }
        Type::Map | Type::MapIndef => {
            let len = d.map()?;
            let mut map = Map::new();
            let mut remaining = len;
            loop {
                match remaining {
                    Some(0) => break,
                    Some(ref mut n) => *n -= 1,
                    None if d.datatype()? == Type::Break => {
                        d.skip()?;
                        break;
                    }
                    None => {}
                }
                let key = read_key(d)?;
                let value = read_value(d, depth + 1, later)?;
                if map.contains_key(&key) {
                    return Err(CborError::DuplicateKey(key));
                }
                map.insert(key, value);
            }
            Value::Object(map)
        }
        Type::Tag => {
            let tag = d.tag()?.as_u64();
            match tag {
                // RFC 3339 text: read as the string it encloses.
                0 => match d.datatype()? {
                    Type::String | Type::StringIndef => Value::String(read_text(d)?),
                    other => return Err(CborError::NotAllowed(format!("tag 0 enclosing {other}"))),
                },
                1 => epoch_time(read_value(d, depth + 1, None)?)?,
                2 | 3 => return Err(CborError::NotAllowed("bignum".into())),
                21 => read_value(d, depth + 1, Some(LaterEncoding::Base64Url))?,
                22 => read_value(d, depth + 1, Some(LaterEncoding::Base64))?,
                23 => read_value(d, depth + 1, Some(LaterEncoding::Base16))?,
                // Upstream encloses every item in the self-described tag: it means its content.
                SELF_DESCRIBED_TAG => read_value(d, depth + 1, later)?,
                // So do tags we do not know.
                _ => read_value(d, depth + 1, later)?,
            }
        }
        Type::Undefined => return Err(CborError::NotAllowed("undefined".into())),
        Type::Simple => return Err(CborError::NotAllowed("simple value".into())),
        Type::Break => return Err(CborError::NotAllowed("break outside a container".into())),
        Type::Unknown(b) => return Err(CborError::NotAllowed(format!("initial byte {b:#04x}"))),
    })
}

/// Map keys are text or byte strings, both read as JSON object keys.
fn read_key(d: &mut Decoder<'_>) -> Result<String, CborError> {
    match d.datatype()? {
        Type::String | Type::StringIndef => read_text(d),
        Type::Bytes | Type::BytesIndef => {
            String::from_utf8(read_bytes(d)?).map_err(|_| CborError::Utf8)
        }
        other => Err(CborError::KeyType(other)),
    }
}

fn read_text(d: &mut Decoder<'_>) -> Result<String, CborError> {
    let mut text = String::new();
    for chunk in d.str_iter()? {
        text.push_str(chunk?);
    }
    Ok(text)
}

fn read_bytes(d: &mut Decoder<'_>) -> Result<Vec<u8>, CborError> {
    let mut bytes = Vec::new();
    for chunk in d.bytes_iter()? {
        bytes.extend_from_slice(chunk?);
    }
    Ok(bytes)
}

fn float(x: f64) -> Result<Value, CborError> {
    Number::from_f64(x)
        .map(Value::Number)
        .ok_or(CborError::NotFinite)
}

/// Tag 1 (seconds since the epoch) read as the RFC 3339 text the JSON form carries.
fn epoch_time(seconds: Value) -> Result<Value, CborError> {
    let nanos = match &seconds {
        Value::Number(n) if n.is_i64() => n.as_i64().map(|s| i128::from(s) * 1_000_000_000),
        Value::Number(n) => n.as_f64().map(|s| (s * 1e9) as i128),
        _ => None,
    };
    nanos
        .and_then(|n| jiff::Timestamp::from_nanosecond(n).ok())
        .map(|t| Value::String(t.to_string()))
        .ok_or_else(|| CborError::NotAllowed(format!("tag 1 enclosing {seconds}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(value: Value) {
        assert_eq!(decode(&encode(&value)).unwrap(), value, "{value}");
    }

    #[test]
    fn every_item_starts_with_the_self_described_tag() {
        assert_eq!(&encode(&json!({}))[..], &[0xd9, 0xd9, 0xf7, 0xa0]);
        assert_eq!(&encode(&json!(null))[..], &[0xd9, 0xd9, 0xf7, 0xf6]);
    }

    #[test]
    fn objects_are_written_as_upstream_writes_them() {
        // Upstream's bytes for {'apiVersion': 'v', 'kind': 'k', 'metadata': {'name': 'foo'}}:
        // byte-string keys, shorter keys first.
        let object = json!({"metadata": {"name": "foo"}, "kind": "k", "apiVersion": "v"});
        assert_eq!(
            encode(&object),
            b"\xd9\xd9\xf7\xa3\x44kind\x41k\x48metadata\xa1\x44name\x43foo\x4aapiVersion\x41v"
        );
    }

    #[test]
    fn upstream_bytes_read_back_as_the_json_object() {
        let upstream =
            b"\xd9\xd9\xf7\xa3\x4aapiVersion\x41v\x44kind\x41k\x48metadata\xa1\x44name\x43foo";
        assert_eq!(
            decode(upstream).unwrap(),
            json!({"apiVersion": "v", "kind": "k", "metadata": {"name": "foo"}})
        );
    }

    #[test]
    fn integers_stay_integers_and_floats_stay_floats() {
        assert_eq!(&encode(&json!(1))[3..], &[0x01]);
        assert_eq!(&encode(&json!(-1))[3..], &[0x20]);
        assert_eq!(&encode(&json!(500))[3..], &[0x19, 0x01, 0xf4]);
        assert_eq!(
            &encode(&json!(i64::MIN))[3..],
            &[0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        // 1.0 is a float in JSON's model too: it stays a float, in its shortest exact width.
        assert_eq!(&encode(&json!(1.0))[3..], &[0xf9, 0x3c, 0x00]);
        assert_eq!(&encode(&json!(1.5))[3..], &[0xf9, 0x3e, 0x00]);
        assert_eq!(&encode(&json!(-0.0))[3..], &[0xf9, 0x80, 0x00]);
        assert_eq!(&encode(&json!(65504.0))[3..], &[0xf9, 0x7b, 0xff]);
        assert_eq!(
            &encode(&json!(5.960464477539063e-8))[3..],
            &[0xf9, 0x00, 0x01]
        );
        assert_eq!(
            &encode(&json!(100000.0))[3..],
            &[0xfa, 0x47, 0xc3, 0x50, 0x00]
        );
        assert_eq!(
            &encode(&json!(1.1))[3..],
            &[0xfb, 0x3f, 0xf1, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a]
        );
        for value in [
            json!(1),
            json!(-7),
            json!(1.0),
            json!(0.5),
            json!(1.1),
            json!(1e300),
        ] {
            let back = decode(&encode(&value)).unwrap();
            assert_eq!(back, value);
            assert_eq!(back.is_f64(), value.is_f64(), "{value}");
        }
    }

    #[test]
    fn kubernetes_objects_round_trip() {
        round_trip(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {}},
            "spec": {"replicas": 3, "paused": false, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "c", "image": "busybox",
                        "args": ["sleep", "3600"], "env": null}]}}},
            "status": {"ratio": 0.25, "huge": 9007199254740993i64, "neg": -42}
        }));
        round_trip(json!("ünïcødé ✓"));
        round_trip(json!([[], {}, "", 0]));
    }

    #[test]
    fn text_strings_and_indefinite_lengths_are_read_too() {
        // {_ "a": [_ 1, 2], "b": (_ "x", "y")} written with text strings, untagged.
        let bytes = [
            0xbf, 0x61, b'a', 0x9f, 0x01, 0x02, 0xff, 0x61, b'b', 0x7f, 0x61, b'x', 0x61, b'y',
            0xff, 0xff,
        ];
        assert_eq!(decode(&bytes).unwrap(), json!({"a": [1, 2], "b": "xy"}));
    }

    #[test]
    fn tags_read_as_upstream_reads_them() {
        // 22(h'0102') is base64 in the JSON form; unknown tags mean their content.
        assert_eq!(decode(&[0xd6, 0x42, 0x01, 0x02]).unwrap(), json!("AQI="));
        assert_eq!(decode(&[0xd7, 0x42, 0x01, 0xff]).unwrap(), json!("01ff"));
        assert_eq!(decode(&[0xd8, 0x64, 0x05]).unwrap(), json!(5));
        assert_eq!(
            decode(&[0xc1, 0x1a, 0x65, 0x92, 0x00, 0x80]).unwrap(),
            json!("2024-01-01T00:00:00Z")
        );
    }

    #[test]
    fn invalid_items_are_refused() {
        let cases: &[(&[u8], &str)] = &[
            (
                &[0xa2, 0x41, b'a', 0x01, 0x61, b'a', 0x02],
                "duplicate map key",
            ),
            (&[0xa1, 0x01, 0x02], "map keys must be strings"),
            (&[0xf9, 0x7e, 0x00], "NaN"),
            (&[0xfa, 0x7f, 0x80, 0x00, 0x00], "NaN and infinite"),
            (&[0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0], "overflows int64"),
            (&[0xc2, 0x41, 0x01], "bignum"),
            (&[0xf7], "undefined"),
            (&[0xf0], "simple value"),
            (&[0x41, 0xff], "UTF-8"),
            (&[0x01, 0x02], "extraneous"),
            (&[0xa1, 0x41], "malformed"),
            (&[0xff], "break"),
        ];
        for (bytes, message) in cases {
            let err = decode(bytes).unwrap_err().to_string();
            assert!(err.contains(message), "{bytes:02x?}: {err}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        let deep = vec![0x81; 100_000];
        assert!(matches!(decode(&deep), Err(CborError::TooDeep)));
    }

    #[test]
    fn a_sequence_reads_item_by_item_and_waits_for_a_partial_item() {
        let mut seq = encode(&json!({"type": "ADDED"}));
        let first = seq.len();
        seq.extend(encode(&json!({"type": "DELETED"})));
        let (value, used) = decode_next(&seq).unwrap().unwrap();
        assert_eq!((value, used), (json!({"type": "ADDED"}), first));
        assert!(decode_next(&seq[first..seq.len() - 1]).unwrap().is_none());
    }
}
