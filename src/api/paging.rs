//! `continue` tokens for paged lists (`?limit=N&continue=...`).
//!
//! A token pins the store revision the first page was read at (so every page shows the same
//! snapshot) and the key of the last object returned. To clients it is opaque: URL-safe base64
//! of a small versioned JSON document, so the format can change without breaking old tokens
//! silently.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The format version written into every token; anything else is refused.
const TOKEN_VERSION: &str = "meta.k8s.io/v1";

/// Where the next page of a list starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContinueToken {
    /// The store revision the list is read at; never 0.
    pub revision: u64,
    /// The store key of the last object already returned; the next page starts after it.
    pub start_after: String,
}

/// Why a `continue` value was refused. Every case is a client error (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagingError {
    #[error(
        "continue key is not valid: not URL-safe base64; pass the `continue` value of the previous \
         list response unchanged"
    )]
    NotBase64,
    #[error("continue key is not valid: {reason}")]
    Malformed { reason: String },
    #[error(
        "continue key is not valid: version {version:?} is not supported, \
         expected {TOKEN_VERSION:?}"
    )]
    UnsupportedVersion { version: String },
    #[error(
        "continue key is not valid: incorrect encoded start resourceVersion \
         (version {TOKEN_VERSION})"
    )]
    ZeroRevision,
    #[error("continue key is not valid: encoded start key is empty")]
    EmptyStartKey,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: String,
    rv: u64,
    start: String,
}

impl ContinueToken {
    /// The opaque string handed to clients in `metadata.continue`.
    pub fn encode(&self) -> String {
        let wire = Wire {
            v: TOKEN_VERSION.to_string(),
            rv: self.revision,
            start: self.start_after.clone(),
        };
        // Serializing a struct of strings and an integer to JSON cannot fail.
        let json = serde_json::to_vec(&wire).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a token from a client. Garbage of any kind is an error, never a panic.
    pub fn decode(s: &str) -> Result<ContinueToken, PagingError> {
        // Tolerate padding some clients or proxies may have added.
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| PagingError::NotBase64)?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| PagingError::Malformed {
                reason: format!("not JSON: {e}"),
            })?;
        // The version is checked before the shape, so a future format gets a version error.
        let version = value
            .get("v")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        if version != TOKEN_VERSION {
            return Err(PagingError::UnsupportedVersion {
                version: version.to_string(),
            });
        }
        let wire: Wire = serde_json::from_value(value).map_err(|e| PagingError::Malformed {
            reason: e.to_string(),
        })?;
        if wire.rv == 0 {
            return Err(PagingError::ZeroRevision);
        }
        if wire.start.is_empty() {
            return Err(PagingError::EmptyStartKey);
        }
        Ok(ContinueToken {
            revision: wire.rv,
            start_after: wire.start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_raw(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn a_token_survives_an_encode_decode_round_trip() {
        let token = ContinueToken {
            revision: 42,
            start_after: "default/web-0".to_string(),
        };
        assert_eq!(ContinueToken::decode(&token.encode()), Ok(token));
    }

    #[test]
    fn keys_with_unusual_characters_round_trip() {
        let token = ContinueToken {
            revision: u64::MAX,
            start_after: "ns/ünïcode/with \"quotes\"/and\0nul".to_string(),
        };
        assert_eq!(ContinueToken::decode(&token.encode()), Ok(token));
    }

    #[test]
    fn encoded_tokens_are_url_safe() {
        // Keys chosen so the base64 of the JSON contains 62 and 63 (`+`/`/` in standard base64).
        for start in ["??>>??>>", "~~~~~~", "a/b/c/d", "\u{ffff}\u{fffe}"] {
            let encoded = ContinueToken {
                revision: 7,
                start_after: start.to_string(),
            }
            .encode();
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{encoded} is not URL-safe"
            );
        }
    }

    #[test]
    fn a_padded_token_is_accepted() {
        let token = ContinueToken {
            revision: 3,
            start_after: "a".to_string(),
        };
        let mut encoded = token.encode();
        while !encoded.len().is_multiple_of(4) {
            encoded.push('=');
        }
        assert_eq!(ContinueToken::decode(&encoded), Ok(token));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        assert_eq!(
            ContinueToken::decode("not base64 at all!"),
            Err(PagingError::NotBase64)
        );
        assert_eq!(ContinueToken::decode("a"), Err(PagingError::NotBase64));
        assert!(matches!(
            ContinueToken::decode(&encode_raw("hello")),
            Err(PagingError::Malformed { .. })
        ));
        assert!(matches!(
            ContinueToken::decode(""),
            Err(PagingError::Malformed { .. })
        ));
        let message = ContinueToken::decode("%%%").unwrap_err().to_string();
        assert!(
            message.starts_with("continue key is not valid"),
            "{message}"
        );
    }

    #[test]
    fn a_token_of_another_version_is_refused() {
        let encoded = encode_raw(r#"{"v":"meta.k8s.io/v2","rv":5,"start":"a"}"#);
        assert_eq!(
            ContinueToken::decode(&encoded),
            Err(PagingError::UnsupportedVersion {
                version: "meta.k8s.io/v2".to_string()
            })
        );
        let unversioned = encode_raw(r#"{"rv":5,"start":"a"}"#);
        assert!(matches!(
            ContinueToken::decode(&unversioned),
            Err(PagingError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn a_token_with_wrong_field_types_is_malformed() {
        for json in [
            r#"{"v":"meta.k8s.io/v1","rv":"5","start":"a"}"#,
            r#"{"v":"meta.k8s.io/v1","rv":-5,"start":"a"}"#,
            r#"{"v":"meta.k8s.io/v1","rv":5}"#,
            r#"["meta.k8s.io/v1",5,"a"]"#,
        ] {
            let result = ContinueToken::decode(&encode_raw(json));
            assert!(
                matches!(
                    result,
                    Err(PagingError::Malformed { .. } | PagingError::UnsupportedVersion { .. })
                ),
                "{json} gave {result:?}"
            );
        }
    }

    #[test]
    fn a_zero_revision_or_empty_start_key_is_refused() {
        let zero = encode_raw(r#"{"v":"meta.k8s.io/v1","rv":0,"start":"a"}"#);
        assert_eq!(ContinueToken::decode(&zero), Err(PagingError::ZeroRevision));
        let empty = encode_raw(r#"{"v":"meta.k8s.io/v1","rv":9,"start":""}"#);
        assert_eq!(
            ContinueToken::decode(&empty),
            Err(PagingError::EmptyStartKey)
        );
    }

    #[test]
    fn decoding_random_strings_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let alphabet: Vec<char> = "AZaz09-_=+/ {}\":,é\u{0}".chars().collect();
        for _ in 0..2000 {
            let len = rng.random_range(0..40);
            let s: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let _ = ContinueToken::decode(&s);
        }
        // And random bytes that are valid base64, so the JSON layer sees garbage too.
        for _ in 0..2000 {
            let len = rng.random_range(0..40);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            assert!(ContinueToken::decode(&URL_SAFE_NO_PAD.encode(bytes)).is_err());
        }
    }
}
