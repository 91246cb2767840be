//! The byte layout of one log entry.
//!
//! `kind: u8 | create_revision: u64 LE | prev_revision: u64 LE | key_len: u32 LE | key | value`
//!
//! Hand-rolled rather than a redb tuple so the on-disk format is ours, stable across redb
//! releases, and a damaged entry decodes to an error instead of a panic.

const PUT: u8 = 1;
const TOMBSTONE: u8 = 2;
const HEADER_LEN: usize = 1 + 8 + 8 + 4;

/// One entry of the revision log, borrowed from the stored bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LogEntry<'a> {
    /// A tombstone records a delete; its `value` is empty and `prev_revision` is the last put.
    pub tombstone: bool,
    pub create_revision: u64,
    /// The revision this entry superseded, 0 when none (a create).
    pub prev_revision: u64,
    pub key: &'a str,
    pub value: &'a [u8],
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
}

impl<'a> LogEntry<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.key.len() + self.value.len());
        out.push(if self.tombstone { TOMBSTONE } else { PUT });
        out.extend_from_slice(&self.create_revision.to_le_bytes());
        out.extend_from_slice(&self.prev_revision.to_le_bytes());
        // Keys are bounded far below 4 GiB by the caller (the store checks entry size).
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(self.value);
        out
    }

    pub fn decode(bytes: &'a [u8]) -> Result<LogEntry<'a>, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        let tombstone = match bytes[0] {
            PUT => false,
            TOMBSTONE => true,
            other => return Err(DecodeError::UnknownKind(other)),
        };
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let create_revision = u64_at(1);
        let prev_revision = u64_at(9);
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[17..21]);
        let key_len = u32::from_le_bytes(len) as usize;
        let rest = &bytes[HEADER_LEN..];
        if key_len > rest.len() {
            return Err(DecodeError::KeyOverrun(key_len));
        }
        let (key, value) = rest.split_at(key_len);
        let key = std::str::from_utf8(key).map_err(|_| DecodeError::KeyNotUtf8)?;
        Ok(LogEntry {
            tombstone,
            create_revision,
            prev_revision,
            key,
            value,
        })
    }
}

/// Bytes an entry for this key and value takes, to refuse oversized writes before redb does.
pub(super) fn encoded_len(key: &str, value_len: usize) -> usize {
    HEADER_LEN + key.len() + value_len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_entry_decodes_to_what_was_encoded() {
        let entry = LogEntry {
            tombstone: false,
            create_revision: 7,
            prev_revision: 9,
            key: "/pods/default/web",
            value: b"{\"x\":1}",
        };
        let bytes = entry.encode();
        assert_eq!(bytes.len(), encoded_len(entry.key, entry.value.len()));
        assert_eq!(LogEntry::decode(&bytes), Ok(entry));
    }

    #[test]
    fn a_tombstone_decodes_as_a_tombstone() {
        let entry = LogEntry {
            tombstone: true,
            create_revision: 1,
            prev_revision: 3,
            key: "k",
            value: b"",
        };
        let decoded_bytes = entry.encode();
        let decoded = LogEntry::decode(&decoded_bytes);
        assert_eq!(decoded, Ok(entry));
    }

    #[test]
    fn damaged_entries_are_errors_not_panics() {
        assert_eq!(LogEntry::decode(b"\x01abc"), Err(DecodeError::TooShort(4)));
        let mut bytes = LogEntry {
            tombstone: false,
            create_revision: 1,
            prev_revision: 0,
            key: "key",
            value: b"v",
        }
        .encode();
        bytes[0] = 9;
        assert_eq!(LogEntry::decode(&bytes), Err(DecodeError::UnknownKind(9)));
        bytes[0] = 1;
        bytes[17] = 200;
        assert_eq!(LogEntry::decode(&bytes), Err(DecodeError::KeyOverrun(200)));
        bytes[17] = 3;
        bytes[21] = 0xff;
        assert_eq!(LogEntry::decode(&bytes), Err(DecodeError::KeyNotUtf8));
    }
}
