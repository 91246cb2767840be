//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) decoded into the
//! same `serde_json::Value` a JSON body of that object would parse to.
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown` whose `typeMeta` names the kind and whose
//! `raw` is the object's message. The decoder walks the wire format with a generated table of
//! every message it may meet (`schema.rs`): field tags, JSON names, and which zero values Go's
//! JSON encoder would have dropped. Types with their own JSON form in Go (Time, Quantity,
//! IntOrString, RawExtension, ...) are decoded by hand. Responses stay JSON, so there is no
//! encoder.

#[rustfmt::skip]
mod schema;
pub mod table;
mod wire;

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use table::{Kind, Label, Message, Shape};
use wire::{Reader, FIXED64, LEN, VARINT};

/// The media type of protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Every protobuf body starts with these four bytes.
const MAGIC: &[u8] = b"k8s\0";

/// Real objects nest about fifteen messages deep; the bound keeps hostile input from
/// exhausting the stack.
const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf magic number")]
    NoMagic,
    #[error("the protobuf envelope (runtime.Unknown) is invalid: {0}")]
    Envelope(Problem),
    #[error("the protobuf body uses content encoding {0:?}, which is not supported")]
    ContentEncoding(String),
    #[error("cannot decode kind {kind:?} of {api_version:?} from protobuf")]
    UnknownKind { api_version: String, kind: String },
    #[error("the protobuf {kind} is invalid at {path}: {problem}")]
    Invalid {
        kind: String,
        path: String,
        problem: Problem,
    },
}

/// What was wrong with the bytes.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("the message ends in the middle of a field")]
    Truncated,
    #[error("a varint is longer than ten bytes")]
    VarintTooLong,
    #[error("field number {0} is invalid")]
    BadTag(u64),
    #[error("wire type {0} is not supported")]
    UnsupportedWireType(u8),
    #[error("wire type {found} where {expected} was expected")]
    WireType { found: u8, expected: &'static str },
    #[error("a string is not valid UTF-8")]
    NotUtf8,
    #[error("a double is not a finite number")]
    NotFinite,
    #[error("the embedded JSON is invalid: {0}")]
    BadJson(String),
    #[error("the time is out of range")]
    BadTime,
    #[error("messages are nested more than {MAX_DEPTH} deep")]
    TooDeep,
    #[error("the schema has no message {0} (a bug in the generated table)")]
    NoSuchMessage(usize),
}

/// An error while decoding, with the JSON path to it collected on the way out (innermost first).
struct Failure {
    path: Vec<String>,
    problem: Problem,
}

impl From<Problem> for Failure {
    fn from(problem: Problem) -> Failure {
        Failure {
            path: Vec::new(),
            problem,
        }
    }
}

impl Failure {
    fn within(mut self, segment: impl Into<String>) -> Failure {
        self.path.push(segment.into());
        self
    }

    fn render_path(&self) -> String {
        let mut out = String::new();
        for segment in self.path.iter().rev() {
            if !segment.starts_with('[') && !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
        if out.is_empty() {
            out.push_str("the top level");
        }
        out
    }
}

/// Does this `Content-Type` (parameters allowed) name protobuf?
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or("").trim() == MEDIA_TYPE
}

/// Decodes a protobuf request body into the JSON object a client would have sent instead,
/// `apiVersion` and `kind` included.
pub fn decode_object(body: &[u8]) -> Result<Value, ProtobufError> {
    let unknown = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let envelope = read_envelope(unknown).map_err(ProtobufError::Envelope)?;
    if !envelope.content_encoding.is_empty() {
        return Err(ProtobufError::ContentEncoding(envelope.content_encoding));
    }
    let root = schema::ROOTS
        .iter()
        .find(|r| r.kind == envelope.kind && r.api_version == envelope.api_version)
        .or_else(|| {
            schema::ROOTS
                .iter()
                .find(|r| r.kind == envelope.kind && r.api_version.is_empty())
        })
        .ok_or_else(|| ProtobufError::UnknownKind {
            api_version: envelope.api_version.clone(),
            kind: envelope.kind.clone(),
        })?;
    let mut value =
        decode_message(root.message, envelope.raw, 0).map_err(|f| ProtobufError::Invalid {
            kind: envelope.kind.clone(),
            path: f.render_path(),
            problem: f.problem,
        })?;
    if let Value::Object(object) = &mut value {
        if !envelope.api_version.is_empty() {
            object.insert("apiVersion".into(), Value::String(envelope.api_version));
        }
        object.insert("kind".into(), Value::String(envelope.kind));
    }
    Ok(value)
}

struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

/// `runtime.Unknown`: typeMeta = 1 {apiVersion = 1, kind = 2}, raw = 2, contentEncoding = 3,
/// contentType = 4.
fn read_envelope(bytes: &[u8]) -> Result<Envelope<'_>, Problem> {
    let mut envelope = Envelope {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
        content_encoding: String::new(),
    };
    let mut r = Reader::new(bytes);
    while !r.is_done() {
        match r.key()? {
            (1, LEN) => {
                let mut type_meta = Reader::new(r.len_delimited()?);
                while !type_meta.is_done() {
                    match type_meta.key()? {
                        (1, LEN) => envelope.api_version = utf8(type_meta.len_delimited()?)?,
                        (2, LEN) => envelope.kind = utf8(type_meta.len_delimited()?)?,
                        (_, wire_type) => type_meta.skip(wire_type)?,
                    }
                }
            }
            (2, LEN) => envelope.raw = r.len_delimited()?,
            (3, LEN) => envelope.content_encoding = utf8(r.len_delimited()?)?,
            (_, wire_type) => r.skip(wire_type)?,
        }
    }
    Ok(envelope)
}

fn message(index: usize) -> Result<&'static Message, Problem> {
    schema::MESSAGES
        .get(index)
        .ok_or(Problem::NoSuchMessage(index))
}

fn decode_message(index: usize, bytes: &[u8], depth: usize) -> Result<Value, Failure> {
    if depth > MAX_DEPTH {
        return Err(Problem::TooDeep.into());
    }
    let fields = match message(index)?.shape {
        Shape::Fields(fields) => fields,
        Shape::List(kind) => return decode_list_wrapper(kind, bytes, depth),
        Shape::Time => return Ok(decode_time(bytes, false)?),
        Shape::MicroTime => return Ok(decode_time(bytes, true)?),
        Shape::Duration => return Ok(decode_duration(bytes)?),
        Shape::RawJson => return Ok(decode_raw_json(bytes)?),
        Shape::IntOrString => return Ok(decode_int_or_string(bytes)?),
        Shape::Quantity => return Ok(decode_quantity(bytes)?),
    };
    let mut object = Map::new();
    let mut r = Reader::new(bytes);
    while !r.is_done() {
        let (tag, wire_type) = r.key()?;
        let Some(field) = fields.iter().find(|f| f.tag == tag) else {
            r.skip(wire_type)?;
            continue;
        };
        let name = field.json;
        match field.label {
            Label::One | Label::OmitZero => {
                let value = decode_value(field.kind, wire_type, &mut r, depth)
                    .map_err(|f| f.within(name))?;
                if field.label == Label::OmitZero && is_zero(&value) {
                    object.remove(name);
                } else {
                    object.insert(name.to_string(), value);
                }
            }
            Label::Inline => {
                if let Value::Object(inner) = decode_value(field.kind, wire_type, &mut r, depth)? {
                    object.extend(inner);
                }
            }
            Label::List => {
                let list = object
                    .entry(name)
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(items) = list else {
                    continue;
                };
                let at = items.len();
                decode_list_item(field.kind, wire_type, &mut r, depth, items)
                    .map_err(|f| f.within(format!("[{at}]")).within(name))?;
            }
            Label::Map => {
                let map = object
                    .entry(name)
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(entries) = map else {
                    continue;
                };
                let (key, value) = decode_map_entry(field.kind, wire_type, &mut r, depth)
                    .map_err(|f| f.within(name))?;
                entries.insert(key, value);
            }
        }
    }
    Ok(Value::Object(object))
}

/// Go's JSON encoder drops these under `omitempty` (scalars) or `omitzero` (also structs: the
/// zero Time decodes to null, an all-zero struct to `{}`).
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Array(_) => false,
    }
}

fn expect_wire(kind: Kind, wire_type: u8) -> Result<(), Problem> {
    let (expected, name) = match kind {
        Kind::Bool | Kind::Int32 | Kind::Int64 => (VARINT, "a varint"),
        Kind::Double => (FIXED64, "a fixed64"),
        Kind::String | Kind::Bytes | Kind::Message(_) => (LEN, "a length-delimited field"),
    };
    if wire_type == expected {
        Ok(())
    } else {
        Err(Problem::WireType {
            found: wire_type,
            expected: name,
        })
    }
}

fn decode_value(kind: Kind, wire_type: u8, r: &mut Reader, depth: usize) -> Result<Value, Failure> {
    expect_wire(kind, wire_type)?;
    Ok(match kind {
        Kind::Bool => Value::Bool(r.varint()? != 0),
        // Both are sign-extended to ten bytes on the wire; int32 keeps the low 32 bits as Go does.
        Kind::Int32 => Value::from(r.varint()? as i64 as i32),
        Kind::Int64 => Value::from(r.varint()? as i64),
        Kind::Double => {
            let f = f64::from_bits(r.fixed64()?);
            Value::Number(Number::from_f64(f).ok_or(Problem::NotFinite)?)
        }
        Kind::String => Value::String(utf8(r.len_delimited()?)?),
        Kind::Bytes => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(r.len_delimited()?))
        }
        Kind::Message(index) => decode_message(index, r.len_delimited()?, depth + 1)?,
    })
}

/// One occurrence of a repeated field: one element, or for numbers possibly a packed run (Go
/// writes proto2 numbers unpacked, other encoders may pack them).
fn decode_list_item(
    kind: Kind,
    wire_type: u8,
    r: &mut Reader,
    depth: usize,
    items: &mut Vec<Value>,
) -> Result<(), Failure> {
    let numeric = matches!(kind, Kind::Bool | Kind::Int32 | Kind::Int64 | Kind::Double);
    if numeric && wire_type == LEN {
        let mut packed = Reader::new(r.len_delimited()?);
        let element_wire = if kind == Kind::Double {
            FIXED64
        } else {
            VARINT
        };
        while !packed.is_done() {
            items.push(decode_value(kind, element_wire, &mut packed, depth)?);
        }
        return Ok(());
    }
    items.push(decode_value(kind, wire_type, r, depth)?);
    Ok(())
}

/// A map entry is a message {key = 1, value = 2}; either may be missing (zero).
fn decode_map_entry(
    kind: Kind,
    wire_type: u8,
    r: &mut Reader,
    depth: usize,
) -> Result<(String, Value), Failure> {
    expect_wire(Kind::Message(0), wire_type)?;
    let mut entry = Reader::new(r.len_delimited()?);
    let mut key = String::new();
    let mut value = None;
    while !entry.is_done() {
        match entry.key()? {
            (1, wire_type) => {
                expect_wire(Kind::String, wire_type)?;
                key = utf8(entry.len_delimited()?)?;
            }
            (2, wire_type) => {
                value = Some(
                    decode_value(kind, wire_type, &mut entry, depth)
                        .map_err(|f| f.within(format!("[{key:?}]")))?,
                )
            }
            (_, wire_type) => entry.skip(wire_type)?,
        }
    }
    let value = match value {
        Some(v) => v,
        None => match kind {
            Kind::Message(index) => decode_message(index, &[], depth + 1)?,
            Kind::String | Kind::Bytes => Value::String(String::new()),
            Kind::Bool => Value::Bool(false),
            Kind::Int32 | Kind::Int64 => Value::from(0),
            Kind::Double => Value::from(0.0),
        },
    };
    Ok((key, value))
}

fn decode_list_wrapper(kind: Kind, bytes: &[u8], depth: usize) -> Result<Value, Failure> {
    let mut items = Vec::new();
    let mut r = Reader::new(bytes);
    while !r.is_done() {
        match r.key()? {
            (1, wire_type) => {
                let at = items.len();
                decode_list_item(kind, wire_type, &mut r, depth, &mut items)
                    .map_err(|f| f.within(format!("[{at}]")))?
            }
            (_, wire_type) => r.skip(wire_type)?,
        }
    }
    Ok(Value::Array(items))
}

fn utf8(bytes: &[u8]) -> Result<String, Problem> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Problem::NotUtf8)
}

/// Reads the varint fields of a small special message into `slots` (index = tag - 1).
fn read_varints<const N: usize>(bytes: &[u8]) -> Result<[Option<u64>; N], Problem> {
    let mut slots = [None; N];
    let mut r = Reader::new(bytes);
    while !r.is_done() {
        let (tag, wire_type) = r.key()?;
        match slots.get_mut(tag as usize - 1) {
            Some(slot) if wire_type == VARINT => *slot = Some(r.varint()?),
            _ => r.skip(wire_type)?,
        }
    }
    Ok(slots)
}

/// Reads the one string field (tag `want`) of a small special message.
fn read_string(bytes: &[u8], want: u32) -> Result<Option<String>, Problem> {
    let mut out = None;
    let mut r = Reader::new(bytes);
    while !r.is_done() {
        match r.key()? {
            (tag, LEN) if tag == want => out = Some(utf8(r.len_delimited()?)?),
            (_, wire_type) => r.skip(wire_type)?,
        }
    }
    Ok(out)
}

/// `meta.v1.Time` / `MicroTime`: {seconds = 1, nanos = 2}, written in UTC as Go does.
fn decode_time(bytes: &[u8], micros: bool) -> Result<Value, Problem> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let [seconds, nanos] = read_varints::<2>(bytes)?;
    let seconds = seconds.unwrap_or(0) as i64;
    let nanos = nanos.unwrap_or(0) as i64 as i32;
    let at = jiff::Timestamp::new(seconds, if micros { nanos } else { 0 })
        .map_err(|_| Problem::BadTime)?;
    let format = if micros {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Value::String(at.strftime(format).to_string()))
}

/// `meta.v1.Duration`: {duration = 1} in nanoseconds.
fn decode_duration(bytes: &[u8]) -> Result<Value, Problem> {
    let [nanos] = read_varints::<1>(bytes)?;
    Ok(Value::String(go_duration(nanos.unwrap_or(0) as i64)))
}

/// Go's `time.Duration.String()`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    const SECOND: u64 = 1_000_000_000;
    let body = if n < SECOND {
        let (unit, scale) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        format!("{}{unit}", with_fraction(n, scale))
    } else {
        let hours = n / (3600 * SECOND);
        let minutes = n % (3600 * SECOND) / (60 * SECOND);
        let seconds = with_fraction(n % (60 * SECOND), SECOND);
        if hours > 0 {
            format!("{hours}h{minutes}m{seconds}s")
        } else if minutes > 0 {
            format!("{minutes}m{seconds}s")
        } else {
            format!("{seconds}s")
        }
    };
    format!("{sign}{body}")
}

/// `value / scale` in decimal, trailing zeros of the fraction dropped.
fn with_fraction(value: u64, scale: u64) -> String {
    let whole = value / scale;
    let fraction = value % scale;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// `runtime.RawExtension` / `meta.v1.FieldsV1`: {raw = 1}, bytes that are JSON already.
fn decode_raw_json(bytes: &[u8]) -> Result<Value, Problem> {
    let mut raw: &[u8] = &[];
    let mut r = Reader::new(bytes);
    while !r.is_done() {
        match r.key()? {
            (1, LEN) => raw = r.len_delimited()?,
            (_, wire_type) => r.skip(wire_type)?,
        }
    }
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(raw).map_err(|e| Problem::BadJson(e.to_string()))
}

/// `intstr.IntOrString`: {type = 1 (0 int, 1 string), intVal = 2, strVal = 3}.
fn decode_int_or_string(bytes: &[u8]) -> Result<Value, Problem> {
    let mut kind = 0;
    let mut int = 0i32;
    let mut string = String::new();
    let mut r = Reader::new(bytes);
    while !r.is_done() {
        match r.key()? {
            (1, VARINT) => kind = r.varint()? as i64,
            (2, VARINT) => int = r.varint()? as i64 as i32,
            (3, LEN) => string = utf8(r.len_delimited()?)?,
            (_, wire_type) => r.skip(wire_type)?,
        }
    }
    Ok(if kind == 1 {
        Value::String(string)
    } else {
        Value::from(int)
    })
}

/// `resource.Quantity`: {string = 1}; the zero Quantity reads "0" in JSON.
fn decode_quantity(bytes: &[u8]) -> Result<Value, Problem> {
    let quantity = read_string(bytes, 1)?.unwrap_or_else(|| "0".into());
    Ok(Value::String(quantity))
}

#[cfg(test)]
mod tests;
