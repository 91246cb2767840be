//! The byte layout of one log entry.
//!
//! `kind: u8 | create_revision: u64 LE | prev_revision: u64 LE | key_len: u32 LE | key | payload`
//!
//! where the payload is the value as is (kind 1), nothing (kind 2, tombstone), or
//! `raw_len: u32 LE | zstd frame` (kind 3). Values are compressed when that saves space: an SD
//! card wears with every byte written, and Kubernetes JSON shrinks several times over.
//!
//! Hand-rolled rather than a redb tuple so the on-disk format is ours, stable across redb
//! releases, and a damaged entry decodes to an error instead of a panic.

use std::borrow::Cow;

const PUT: u8 = 1;
const TOMBSTONE: u8 = 2;
const PUT_ZSTD: u8 = 3;
const HEADER_LEN: usize = 1 + 8 + 8 + 4;

/// Values shorter than this are stored as is: a zstd frame has fixed overhead, and a small
/// value costs little either way.
const COMPRESS_MIN: usize = 128;
/// zstd's fastest level: most of the gain for little CPU, which a Raspberry Pi has little of.
const ZSTD_LEVEL: i32 = 1;

/// A value as stored: decompressed only when someone needs the bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Payload<'a> {
    Raw(&'a [u8]),
    Zstd { frame: &'a [u8], raw_len: usize },
}

/// One entry of the revision log, borrowed from the stored bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LogEntry<'a> {
    /// A tombstone records a delete; its payload is empty and `prev_revision` is the last put.
    pub tombstone: bool,
    pub create_revision: u64,
    /// The revision this entry superseded, 0 when none (a create).
    pub prev_revision: u64,
    pub key: &'a str,
    pub payload: Payload<'a>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum DecodeError {
    #[error("entry is {0} bytes, shorter than its header")]
    TooShort(usize),
    #[error("unknown entry kind {0}")]
    UnknownKind(u8),
    #[error("key length {0} runs past the end of the entry")]
    KeyOverrun(usize),
    #[error("key is not UTF-8")]
    KeyNotUtf8,
    #[error("compressed value is damaged: {0}")]
    BadCompression(String),
}

impl<'a> LogEntry<'a> {
    pub fn put(create_revision: u64, prev_revision: u64, key: &'a str, value: &'a [u8]) -> Self {
        LogEntry {
            tombstone: false,
            create_revision,
            prev_revision,
            key,
            payload: Payload::Raw(value),
        }
    }

    pub fn tombstone(create_revision: u64, prev_revision: u64, key: &'a str) -> Self {
        LogEntry {
            tombstone: true,
            create_revision,
            prev_revision,
            key,
            payload: Payload::Raw(&[]),
        }
    }

    /// Encodes the entry, compressing a raw value when that makes it smaller.
    pub fn encode(&self) -> Vec<u8> {
        let frame;
        let payload = match self.payload {
            Payload::Raw(_) if self.tombstone => Payload::Raw(&[]),
            Payload::Raw(value) => {
                frame = compress(value);
                match &frame {
                    Some(frame) => Payload::Zstd {
                        frame,
                        raw_len: value.len(),
                    },
                    None => Payload::Raw(value),
                }
            }
            Payload::Zstd { frame, raw_len } => Payload::Zstd { frame, raw_len },
        };
        let (kind, payload_len) = match (&payload, self.tombstone) {
            (_, true) => (TOMBSTONE, 0),
            (Payload::Zstd { frame, .. }, false) => (PUT_ZSTD, 4 + frame.len()),
            (Payload::Raw(value), false) => (PUT, value.len()),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + self.key.len() + payload_len);
        out.push(kind);
        out.extend_from_slice(&self.create_revision.to_le_bytes());
        out.extend_from_slice(&self.prev_revision.to_le_bytes());
        // Keys and values are bounded far below 4 GiB by the store's entry size limit.
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        match payload {
            Payload::Raw(value) => out.extend_from_slice(value),
            Payload::Zstd { frame, raw_len } => {
                out.extend_from_slice(&(raw_len as u32).to_le_bytes());
                out.extend_from_slice(frame);
            }
        }
        out
    }

    /// Length of the value once decompressed.
    #[cfg(test)]
    pub fn value_len(&self) -> usize {
        match self.payload {
            Payload::Raw(value) => value.len(),
            Payload::Zstd { raw_len, .. } => raw_len,
        }
    }

    /// The value's bytes, decompressed if need be.
    pub fn value(&self) -> Result<Cow<'a, [u8]>, DecodeError> {
        match self.payload {
            Payload::Raw(value) => Ok(Cow::Borrowed(value)),
            Payload::Zstd { frame, raw_len } => {
                let value = decompress(frame, raw_len)
                    .map_err(|e| DecodeError::BadCompression(e.to_string()))?;
                if value.len() != raw_len {
                    return Err(DecodeError::BadCompression(format!(
                        "{} bytes where {raw_len} were recorded",
                        value.len()
                    )));
                }
                Ok(Cow::Owned(value))
            }
        }
    }

    pub fn decode(bytes: &'a [u8]) -> Result<LogEntry<'a>, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        let kind = bytes[0];
        if !matches!(kind, PUT | TOMBSTONE | PUT_ZSTD) {
            return Err(DecodeError::UnknownKind(kind));
        }
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let u32_at = |bytes: &[u8], at: usize| {
            let mut word = [0u8; 4];
            word.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(word) as usize
        };
        let create_revision = u64_at(1);
        let prev_revision = u64_at(9);
        let key_len = u32_at(bytes, 17);
        let rest = &bytes[HEADER_LEN..];
        if key_len > rest.len() {
            return Err(DecodeError::KeyOverrun(key_len));
        }
        let (key, value) = rest.split_at(key_len);
        let key = std::str::from_utf8(key).map_err(|_| DecodeError::KeyNotUtf8)?;
        let payload = if kind == PUT_ZSTD {
            if value.len() < 4 {
                return Err(DecodeError::BadCompression("no length".to_owned()));
            }
            let raw_len = u32_at(value, 0);
            if raw_len > super::MAX_ENTRY_BYTES {
                return Err(DecodeError::BadCompression(format!("length {raw_len}")));
            }
            Payload::Zstd {
                frame: &value[4..],
                raw_len,
            }
        } else {
            Payload::Raw(value)
        };
        Ok(LogEntry {
            tombstone: kind == TOMBSTONE,
            create_revision,
            prev_revision,
            key,
            payload,
        })
    }
}

/// The value as a zstd frame, when that is worth it.
fn compress(value: &[u8]) -> Option<Vec<u8>> {
    if value.len() < COMPRESS_MIN {
        return None;
    }
    COMPRESSOR
        .with(|compressor| match compressor.borrow_mut().as_mut() {
            Some(compressor) => compressor.compress(value),
            None => zstd::bulk::compress(value, ZSTD_LEVEL),
        })
        .ok()
        .filter(|frame| frame.len() + 4 < value.len())
}

thread_local! {
    // One zstd context per thread, reused: setting a context up costs more than compressing or
    // decompressing a few KiB, and every write and every read of a stored value needs one.
    // None if zstd could not allocate one; each call then makes its own.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Compressor::new(ZSTD_LEVEL).ok());
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().ok());
}

fn decompress(frame: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|decompressor| match decompressor.borrow_mut().as_mut() {
        Some(decompressor) => decompressor.decompress(frame, raw_len),
        None => zstd::bulk::decompress(frame, raw_len),
    })
}

/// Bytes an entry for this key and value may take, to refuse oversized writes before redb does.
pub(super) fn encoded_len(key: &str, value_len: usize) -> usize {
    HEADER_LEN + key.len() + value_len
}

/// Whether `bytes` decode as one log entry whose value reads back (decompressed if need be).
/// The fuzz targets' way to the decoder without opening its types to the crate.
pub(crate) fn decodes(bytes: &[u8]) -> bool {
    LogEntry::decode(bytes).is_ok_and(|entry| entry.value().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_entry_decodes_to_what_was_encoded() {
        let entry = LogEntry::put(7, 9, "/pods/default/web", b"{\"x\":1}");
        let bytes = entry.encode();
        assert_eq!(bytes.len(), encoded_len(entry.key, entry.value_len()));
        assert_eq!(LogEntry::decode(&bytes), Ok(entry));
    }

    #[test]
    fn a_compressible_value_is_stored_compressed_and_reads_back_whole() {
        let value = "{\"kind\":\"Pod\",\"spec\":{}}".repeat(40);
        let entry = LogEntry::put(1, 0, "/k", value.as_bytes());
        let bytes = entry.encode();
        assert!(
            bytes.len() < value.len() / 4,
            "{} bytes stored",
            bytes.len()
        );
        let decoded = LogEntry::decode(&bytes).unwrap();
        assert!(matches!(decoded.payload, Payload::Zstd { .. }));
        assert_eq!(decoded.value_len(), value.len());
        assert_eq!(decoded.value().unwrap().as_ref(), value.as_bytes());
    }

    #[test]
    fn an_incompressible_value_is_stored_as_is() {
        let value = crate::store::bench::noise(2048, 1);
        let decoded_bytes = LogEntry::put(1, 0, "/k", &value).encode();
        let decoded = LogEntry::decode(&decoded_bytes).unwrap();
        assert_eq!(decoded.payload, Payload::Raw(&value));
    }

    #[test]
    fn a_tombstone_decodes_as_a_tombstone() {
        let entry = LogEntry::tombstone(1, 3, "k");
        let decoded_bytes = entry.encode();
        let decoded = LogEntry::decode(&decoded_bytes);
        assert_eq!(decoded, Ok(entry));
    }

    #[test]
    fn damaged_entries_are_errors_not_panics() {
        assert_eq!(LogEntry::decode(b"\x01abc"), Err(DecodeError::TooShort(4)));
        let mut bytes = LogEntry::put(1, 0, "key", b"v").encode();
        bytes[0] = 9;
        assert_eq!(LogEntry::decode(&bytes), Err(DecodeError::UnknownKind(9)));
        bytes[0] = 1;
        bytes[17] = 200;
        assert_eq!(LogEntry::decode(&bytes), Err(DecodeError::KeyOverrun(200)));
        bytes[17] = 3;
        bytes[21] = 0xff;
        assert_eq!(LogEntry::decode(&bytes), Err(DecodeError::KeyNotUtf8));

        let value = "abc".repeat(100);
        let mut bytes = LogEntry::put(1, 0, "k", value.as_bytes()).encode();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        let damaged = LogEntry::decode(&bytes).unwrap();
        assert!(matches!(
            damaged.value(),
            Err(DecodeError::BadCompression(_))
        ));
    }
}
