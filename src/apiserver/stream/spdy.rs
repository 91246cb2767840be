//! SPDY/3.1 framing, as far as `kubectl port-forward` needs it: the frames a client sends or
//! expects (SYN_STREAM, SYN_REPLY, DATA, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS,
//! WINDOW_UPDATE) and the zlib-compressed header blocks.
//!
//! Header blocks of one direction form a single zlib stream, each block ending on a sync
//! flush: so the codec keeps one compressor and one decompressor for the whole connection, and
//! they must see every block in order. Peers prime their compressor with the SPDY/3
//! dictionary; the zlib backend here has no preset-dictionary call, so the decompressor gets
//! the same window by inflating a raw deflate stream that begins with the dictionary as a
//! stored block. Our own blocks are compressed without a dictionary, which zlib readers
//! accept (the stream header says so).
//!
//! Flow control is not enforced: the Go client kubectl uses (spdystream) neither honours nor
//! sends WINDOW_UPDATE, so counting windows would only stall it after 64 KiB.

use std::sync::LazyLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

const VERSION: u16 = 3;
const CONTROL_BIT: u8 = 0x80;
const HEADER_LEN: usize = 8;
/// Frame lengths are 24 bits.
const MAX_FRAME_LEN: usize = 0xff_ffff;
/// A decompressed header block larger than this is refused (a zlib bomb guard).
const MAX_HEADER_BLOCK: usize = 256 * 1024;

pub const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    #[error("header block: {0}")]
    Headers(String),
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
}

/// Header names and values in wire order; names are lower case on the wire.
pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings,
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame type this server has no use for (SPDY says: ignore it).
    Unknown {
        kind: u16,
    },
}

/// The header value of `name` (names compare case-insensitively).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The SPDY/3 header compression dictionary (SPDY/3 draft, section 2.6.10.1): 65
/// length-prefixed header words, then a run of common status lines, dates and values.
static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: [&str; 65] = [
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,",
        "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    );
    let mut dict = Vec::with_capacity(1423);
    for word in WORDS {
        dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dict.extend_from_slice(word.as_bytes());
    }
    dict.extend_from_slice(TAIL.as_bytes());
    dict
});

/// Encodes and decodes the frames of one connection (one direction each).
pub struct Codec {
    deflate: Compress,
    /// Raw inflate, its window preloaded with the dictionary.
    inflate: Decompress,
    /// The zlib stream header of the peer's header blocks is read once, on the first block.
    seen_zlib_header: bool,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

/// zlib's FDICT flag: a dictionary id follows the two header bytes.
const FDICT: u8 = 0x20;

impl Codec {
    pub fn new() -> Codec {
        Codec {
            deflate: Compress::new(Compression::default(), true),
            inflate: Decompress::new(false),
            seen_zlib_header: false,
        }
    }

    /// Starts the raw inflate stream with the dictionary as a non-final stored block, so
    /// back-references into the dictionary resolve; the dictionary's own output is discarded.
    fn prime_inflate(&mut self) -> Result<(), SpdyError> {
        let len = DICTIONARY.len() as u16;
        let mut stored = vec![0u8];
        stored.extend_from_slice(&len.to_le_bytes());
        stored.extend_from_slice(&(!len).to_le_bytes());
        stored.extend_from_slice(&DICTIONARY);
        let mut sink = Vec::with_capacity(DICTIONARY.len() + 16);
        self.inflate
            .decompress_vec(&stored, &mut sink, FlushDecompress::Sync)
            .map_err(|e| SpdyError::Headers(e.to_string()))?;
        if sink.as_slice() != DICTIONARY.as_slice() {
            return Err(SpdyError::Headers("cannot load the dictionary".into()));
        }
        Ok(())
    }

    /// Takes one whole frame off the front of `buf`, or `None` if more bytes are needed.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let flags = buf[4];
        let payload: Vec<u8> = buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        buf.drain(..HEADER_LEN + len);
        if buf.capacity() > 64 * 1024 && buf.len() < 16 * 1024 {
            buf.shrink_to(16 * 1024);
        }
        if buf_is_data(first) {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                flags,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = (first & 0xffff) as u16;
        self.control(kind, flags, &payload).map(Some)
    }

    fn control(&mut self, kind: u16, flags: u8, p: &[u8]) -> Result<Frame, SpdyError> {
        let word = |at: usize, name| {
            p.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(SpdyError::Malformed(name))
        };
        Ok(match kind {
            SYN_STREAM => {
                let priority = p.get(8).ok_or(SpdyError::Malformed("SYN_STREAM"))? >> 5;
                Frame::SynStream {
                    stream_id: word(0, "SYN_STREAM")? & 0x7fff_ffff,
                    associated_to: word(4, "SYN_STREAM")? & 0x7fff_ffff,
                    priority,
                    flags,
                    headers: self.read_headers(p.get(10..).unwrap_or_default())?,
                }
            }
            SYN_REPLY => Frame::SynReply {
                stream_id: word(0, "SYN_REPLY")? & 0x7fff_ffff,
                flags,
                headers: self.read_headers(p.get(4..).unwrap_or_default())?,
            },
            HEADERS => Frame::Headers {
                stream_id: word(0, "HEADERS")? & 0x7fff_ffff,
                flags,
                headers: self.read_headers(p.get(4..).unwrap_or_default())?,
            },
            RST_STREAM => Frame::RstStream {
                stream_id: word(0, "RST_STREAM")? & 0x7fff_ffff,
                status: word(4, "RST_STREAM")?,
            },
            SETTINGS => Frame::Settings,
            PING => Frame::Ping {
                id: word(0, "PING")?,
            },
            GOAWAY => Frame::GoAway {
                last_good_stream_id: word(0, "GOAWAY")? & 0x7fff_ffff,
                // SPDY/3 added the status; tolerate its absence.
                status: word(4, "GOAWAY").unwrap_or(0),
            },
            WINDOW_UPDATE => Frame::WindowUpdate {
                stream_id: word(0, "WINDOW_UPDATE")? & 0x7fff_ffff,
                delta: word(4, "WINDOW_UPDATE")? & 0x7fff_ffff,
            },
            kind => Frame::Unknown { kind },
        })
    }

    /// Inflates one header block (continuing the connection's zlib stream) and parses it.
    fn read_headers(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        if compressed.is_empty() {
            return Ok(Vec::new());
        }
        let mut input = compressed;
        if !self.seen_zlib_header {
            let (cmf, flg) = match input {
                [cmf, flg, ..] => (*cmf, *flg),
                _ => return Err(SpdyError::Headers("short zlib header".into())),
            };
            if cmf & 0x0f != 8 || (u16::from(cmf) << 8 | u16::from(flg)) % 31 != 0 {
                return Err(SpdyError::Headers("not a zlib stream".into()));
            }
            input = &input[2..];
            if flg & FDICT != 0 {
                let id = input
                    .get(..4)
                    .ok_or_else(|| SpdyError::Headers("short zlib header".into()))?;
                if id != adler32(&DICTIONARY).to_be_bytes() {
                    return Err(SpdyError::Headers("unknown zlib dictionary".into()));
                }
                input = &input[4..];
            }
            self.prime_inflate()?;
            self.seen_zlib_header = true;
        }
        let mut raw = Vec::with_capacity(compressed.len() * 4 + 64);
        loop {
            let before = self.inflate.total_in();
            match self
                .inflate
                .decompress_vec(input, &mut raw, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) => return Err(SpdyError::Headers(e.to_string())),
            }
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            if raw.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::Headers("header block too large".into()));
            }
            if input.is_empty() && raw.len() < raw.capacity() {
                break;
            }
            if raw.len() == raw.capacity() {
                raw.reserve(raw.capacity().max(256));
            }
        }
        parse_header_block(&raw)
    }

    /// Deflates one header block with a sync flush, so the peer can inflate it on its own.
    fn write_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let raw = header_block(headers);
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw.as_slice();
        loop {
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Headers(e.to_string()))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            // The flush is complete once all input is taken and output space is left over.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().max(64));
        }
    }

    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
        let (kind, flags, payload) = match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_FRAME_LEN {
                    return Err(SpdyError::TooLarge(data.len()));
                }
                let mut out = Vec::with_capacity(HEADER_LEN + data.len());
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                return Ok(out);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let mut p = Vec::new();
                p.extend_from_slice(&stream_id.to_be_bytes());
                p.extend_from_slice(&associated_to.to_be_bytes());
                p.push(priority << 5);
                p.push(0);
                p.extend(self.write_headers(headers)?);
                (SYN_STREAM, *flags, p)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend(self.write_headers(headers)?);
                (SYN_REPLY, *flags, p)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend(self.write_headers(headers)?);
                (HEADERS, *flags, p)
            }
            Frame::RstStream { stream_id, status } => {
                (RST_STREAM, 0, two_words(*stream_id, *status))
            }
            Frame::Settings => (SETTINGS, 0, 0u32.to_be_bytes().to_vec()),
            Frame::Ping { id } => (PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => (GOAWAY, 0, two_words(*last_good_stream_id, *status)),
            Frame::WindowUpdate { stream_id, delta } => {
                (WINDOW_UPDATE, 0, two_words(*stream_id, *delta))
            }
            Frame::Unknown { kind } => (*kind, 0, Vec::new()),
        };
        if payload.len() > MAX_FRAME_LEN {
            return Err(SpdyError::TooLarge(payload.len()));
        }
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.push(CONTROL_BIT | (VERSION >> 8) as u8);
        out.push(VERSION as u8);
        out.extend_from_slice(&kind.to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend(payload);
        Ok(out)
    }
}

/// zlib's checksum, which names a dictionary in a stream header.
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    b << 16 | a
}

fn buf_is_data(first_word: u32) -> bool {
    first_word & 0x8000_0000 == 0
}

fn two_words(a: u32, b: u32) -> Vec<u8> {
    let mut p = a.to_be_bytes().to_vec();
    p.extend_from_slice(&b.to_be_bytes());
    p
}

/// The uncompressed block: a pair count, then length-prefixed names and values (32-bit big
/// endian lengths).
fn header_block(headers: &Headers) -> Vec<u8> {
    let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
    for (name, value) in headers {
        raw.extend_from_slice(&(name.len() as u32).to_be_bytes());
        raw.extend(name.to_ascii_lowercase().into_bytes());
        raw.extend_from_slice(&(value.len() as u32).to_be_bytes());
        raw.extend_from_slice(value.as_bytes());
    }
    raw
}

fn parse_header_block(raw: &[u8]) -> Result<Headers, SpdyError> {
    let bad = || SpdyError::Headers("truncated header block".into());
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let slice = raw
            .get(at..at.checked_add(n).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        at += n;
        Ok(slice)
    };
    let len = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = len(take(4)?);
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = len(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).into_owned();
        let n = len(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Headers {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        // zlib names a dictionary by its Adler-32; peers check it matches theirs.
        assert_eq!(adler32(&DICTIONARY), 0xe3c6_a7c2);
    }

    /// Two consecutive header blocks as zlib (with the SPDY dictionary) compresses them, as
    /// a Go client sends them: the second one refers back into the first.
    #[test]
    fn header_blocks_compressed_with_the_dictionary_by_zlib_are_read() {
        let first = unhex(
            "78f9e3c6a7c202253a48f95b044eea16061606409ab308125f99a074cc68004e892545a989b9d0c2863515141500000000ffff",
        );
        let second = unhex("225333a8a44a04000000ffff");
        let mut codec = Codec::new();
        assert_eq!(
            codec.read_headers(&first).unwrap(),
            pairs(&[
                ("port", "8080"),
                ("requestid", "0"),
                ("streamtype", "error")
            ])
        );
        assert_eq!(
            codec.read_headers(&second).unwrap(),
            pairs(&[("port", "8080"), ("requestid", "0"), ("streamtype", "data")])
        );
    }

    #[test]
    fn frames_survive_an_encode_decode_round_trip_in_order() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: FLAG_FIN,
                headers: pairs(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Vec::new(),
            },
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Vec::new(),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 7,
                flags: 0,
                headers: pairs(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::RstStream {
                stream_id: 3,
                status: 3,
            },
            Frame::Ping { id: 1 },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 65536,
            },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
            Frame::Settings,
        ];
        let mut sender = Codec::new();
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(sender.encode(f).unwrap());
        }
        let mut receiver = Codec::new();
        let mut decoded = Vec::new();
        while let Some(f) = receiver.decode(&mut wire).unwrap() {
            decoded.push(f);
        }
        assert_eq!(decoded, frames);
        assert!(wire.is_empty());
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest_of_its_bytes() {
        let mut codec = Codec::new();
        let whole = codec
            .encode(&Frame::Data {
                stream_id: 5,
                flags: 0,
                data: vec![7; 100],
            })
            .unwrap();
        let mut buf = whole[..50].to_vec();
        let mut reader = Codec::new();
        assert_eq!(reader.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 50, "nothing is consumed from a partial frame");
        buf.extend_from_slice(&whole[50..]);
        assert!(matches!(
            reader.decode(&mut buf).unwrap(),
            Some(Frame::Data { stream_id: 5, data, .. }) if data.len() == 100
        ));
    }

    #[test]
    fn control_frames_have_the_documented_wire_layout() {
        let mut codec = Codec::new();
        assert_eq!(
            codec.encode(&Frame::Ping { id: 7 }).unwrap(),
            [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]
        );
        assert_eq!(
            codec
                .encode(&Frame::RstStream {
                    stream_id: 3,
                    status: RST_PROTOCOL_ERROR
                })
                .unwrap(),
            [0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 1]
        );
        assert_eq!(
            codec
                .encode(&Frame::Data {
                    stream_id: 1,
                    flags: FLAG_FIN,
                    data: b"ab".to_vec()
                })
                .unwrap(),
            [0, 0, 0, 1, 1, 0, 0, 2, b'a', b'b']
        );
    }

    #[test]
    fn header_blocks_are_counted_length_prefixed_pairs_with_lower_case_names() {
        let raw = header_block(&pairs(&[("Port", "80")]));
        assert_eq!(
            raw,
            [0, 0, 0, 1, 0, 0, 0, 4, b'p', b'o', b'r', b't', 0, 0, 0, 2, b'8', b'0']
        );
        assert_eq!(parse_header_block(&raw).unwrap(), pairs(&[("port", "80")]));
        assert!(parse_header_block(&raw[..10]).is_err());
        assert!(parse_header_block(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn a_header_block_from_another_zlib_stream_is_an_error_not_a_panic() {
        let mut codec = Codec::new();
        let mut garbage = vec![
            0x80, 3, 0, 2, 0, 0, 0, 9, 0, 0, 0, 1, 0x78, 0x9c, 0xff, 0xff, 0xff,
        ];
        assert!(codec.decode(&mut garbage).is_err());
        let mut other_dictionary = vec![
            0x80, 3, 0, 2, 0, 0, 0, 10, 0, 0, 0, 1, 0x78, 0xbb, 0, 0, 0, 1,
        ];
        assert!(Codec::new().decode(&mut other_dictionary).is_err());
    }

    #[test]
    fn another_version_is_refused() {
        let mut wire = vec![0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert_eq!(Codec::new().decode(&mut wire), Err(SpdyError::Version(2)));
    }

    #[test]
    fn header_lookup_ignores_case() {
        let h = pairs(&[("streamtype", "data")]);
        assert_eq!(header(&h, "StreamType"), Some("data"));
        assert_eq!(header(&h, "port"), None);
    }
}
