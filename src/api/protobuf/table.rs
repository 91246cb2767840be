//! The shape of the generated schema (`schema.rs`): what the decoder knows about each message.

/// One protobuf message.
#[derive(Debug)]
pub struct Message {
    /// Full proto name, for error messages.
    pub name: &'static str,
    pub shape: Shape,
}

/// How a message turns into JSON.
#[derive(Debug)]
pub enum Shape {
    /// An ordinary struct: each field under its JSON name.
    Fields(&'static [Field]),
    /// A Go named slice (`type ExtraValue []string`): `repeated items = 1` on the wire, a plain
    /// JSON array.
    List(Kind),
    /// `meta.v1.Time`: RFC 3339 with seconds; the empty message is Go's zero time, `null`.
    Time,
    /// `meta.v1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `meta.v1.Duration`: a Go duration string (`1h2m3s`).
    Duration,
    /// `runtime.RawExtension`, `meta.v1.FieldsV1`: bytes that are already JSON.
    RawJson,
    /// `intstr.IntOrString`: a JSON number or string.
    IntOrString,
    /// `resource.Quantity`: its canonical string.
    Quantity,
}

/// What one field holds on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int32,
    Int64,
    Double,
    String,
    /// Base64 in JSON, as Go encodes `[]byte`.
    Bytes,
    /// Index into `schema::MESSAGES`.
    Message(usize),
}

/// How a field appears in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// Always present when on the wire (a Go pointer, a non-`omitempty` field, or a struct).
    One,
    /// A non-pointer `omitempty` scalar or `omitzero` field: Go's protobuf encoder writes it
    /// even when zero, its JSON encoder drops it then, so a zero value is dropped here too.
    OmitZero,
    /// `repeated`: a JSON array, omitted when empty.
    List,
    /// `map<string, V>`: a JSON object.
    Map,
    /// A Go embedded struct (`json:",inline"`): its fields merge into the parent object.
    Inline,
}

#[derive(Debug)]
pub struct Field {
    pub tag: u32,
    pub json: &'static str,
    pub kind: Kind,
    pub label: Label,
}

impl Field {
    const fn new(tag: u32, json: &'static str, kind: Kind, label: Label) -> Field {
        Field {
            tag,
            json,
            kind,
            label,
        }
    }
    pub const fn one(tag: u32, json: &'static str, kind: Kind) -> Field {
        Field::new(tag, json, kind, Label::One)
    }
    pub const fn omit_zero(tag: u32, json: &'static str, kind: Kind) -> Field {
        Field::new(tag, json, kind, Label::OmitZero)
    }
    pub const fn list(tag: u32, json: &'static str, kind: Kind) -> Field {
        Field::new(tag, json, kind, Label::List)
    }
    pub const fn map(tag: u32, json: &'static str, kind: Kind) -> Field {
        Field::new(tag, json, kind, Label::Map)
    }
    pub const fn inline(tag: u32, json: &'static str, kind: Kind) -> Field {
        Field::new(tag, json, kind, Label::Inline)
    }
}

/// A kind a request body may carry, and the message that encodes it.
#[derive(Debug)]
pub struct Root {
    /// Empty: any group version (clients send DeleteOptions under the resource's).
    pub api_version: &'static str,
    pub kind: &'static str,
    pub message: usize,
}
