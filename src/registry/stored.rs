//! Objects serialised for the store before their resourceVersion is known.
//!
//! The store's single writer thread picks the revision, so it is the one that must produce the
//! final bytes. Serialising a whole object there (and freeing its tree) made that thread the
//! bottleneck of concurrent writes. Instead the caller serialises the object once with a
//! placeholder resourceVersion, and the writer only splices the revision's digits in: a copy of
//! the bytes, no parsing, no allocation churn on the hot thread.

use std::sync::OnceLock;

use serde_json::Value;

use crate::api::meta;

/// A JSON string no client can guess, so it cannot collide with user data: random per process.
fn placeholder() -> &'static str {
    static PLACEHOLDER: OnceLock<String> = OnceLock::new();
    PLACEHOLDER.get_or_init(|| format!("berth-revision-{:016x}", rand::random::<u64>()))
}

/// An object's JSON bytes with a hole where its resourceVersion goes.
pub enum RevisionTemplate {
    /// The bytes without the revision's digits, and where they go.
    Spliced { bytes: Vec<u8>, hole: usize },
    /// The object itself, serialised at render time (the old, slow way): only if the placeholder
    /// could not be found, which serde_json's output makes impossible in practice.
    Whole(Value),
}

impl RevisionTemplate {
    /// Serialises `obj`, leaving its resourceVersion as it was.
    pub fn new(obj: &mut Value) -> RevisionTemplate {
        let metadata = meta::metadata_mut(obj);
        let previous = metadata.insert(
            "resourceVersion".into(),
            Value::String(placeholder().to_string()),
        );
        let bytes = serde_json::to_vec(obj).unwrap_or_default();
        let metadata = meta::metadata_mut(obj);
        match previous {
            Some(previous) => metadata.insert("resourceVersion".into(), previous),
            None => metadata.remove("resourceVersion"),
        };
        Self::from_bytes(bytes).unwrap_or_else(|| RevisionTemplate::Whole(obj.clone()))
    }

    fn from_bytes(mut bytes: Vec<u8>) -> Option<RevisionTemplate> {
        let needle = placeholder().as_bytes();
        let hole = bytes
            .windows(needle.len())
            .position(|window| window == needle)?;
        bytes.drain(hole..hole + needle.len());
        Some(RevisionTemplate::Spliced { bytes, hole })
    }

    /// The final bytes, with `revision` as the resourceVersion.
    pub fn render(self, revision: u64) -> Vec<u8> {
        match self {
            RevisionTemplate::Spliced { bytes, hole } => {
                let digits = revision.to_string();
                let mut out = Vec::with_capacity(bytes.len() + digits.len());
                out.extend_from_slice(&bytes[..hole]);
                out.extend_from_slice(digits.as_bytes());
                out.extend_from_slice(&bytes[hole..]);
                out
            }
            RevisionTemplate::Whole(mut obj) => {
                meta::set_resource_version(&mut obj, revision);
                serde_json::to_vec(&obj).unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rendering_gives_the_same_bytes_as_serialising_with_the_revision_set() {
        let obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "default", "resourceVersion": "7"},
            "data": {"resourceVersion": "\"x\"", "k": "v"},
        });
        let mut copy = obj.clone();
        let template = RevisionTemplate::new(&mut copy);
        assert_eq!(copy, obj, "the object itself is left as it was");
        let mut expected = obj.clone();
        meta::set_resource_version(&mut expected, 123456);
        assert_eq!(
            template.render(123456),
            serde_json::to_vec(&expected).unwrap()
        );
        let reparsed: Value =
            serde_json::from_slice(&RevisionTemplate::new(&mut copy).render(9)).unwrap();
        assert_eq!(reparsed["metadata"]["resourceVersion"], "9");
        assert_eq!(reparsed["data"]["resourceVersion"], "\"x\"");
    }

    #[test]
    fn an_object_without_a_resource_version_keeps_having_none() {
        let obj = json!({"metadata": {"name": "a"}});
        let mut copy = obj.clone();
        let template = RevisionTemplate::new(&mut copy);
        assert_eq!(copy, obj);
        assert!(matches!(template, RevisionTemplate::Spliced { .. }));
        assert!(RevisionTemplate::from_bytes(b"{\"metadata\":{}}".to_vec()).is_none());
    }
}
