//! The protobuf wire format: varints, keys, length-delimited slices. Never panics on input.

use super::Problem;

pub const VARINT: u8 = 0;
pub const FIXED64: u8 = 1;
pub const LEN: u8 = 2;
pub const FIXED32: u8 = 5;

/// A cursor over one message's bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn is_done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn varint(&mut self) -> Result<u64, Problem> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos).ok_or(Problem::Truncated)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Problem::VarintTooLong)
    }

    /// The next field's tag and wire type.
    pub fn key(&mut self) -> Result<(u32, u8), Problem> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| Problem::BadTag(key >> 3))?;
        if tag == 0 {
            return Err(Problem::BadTag(0));
        }
        Ok((tag, (key & 7) as u8))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Problem> {
        let end = self.pos.checked_add(n).ok_or(Problem::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(Problem::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    pub fn len_delimited(&mut self) -> Result<&'a [u8], Problem> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| Problem::Truncated)?;
        self.take(len)
    }

    pub fn fixed64(&mut self) -> Result<u64, Problem> {
        let bytes = self.take(8)?;
        let mut le = [0u8; 8];
        le.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(le))
    }

    /// Skips a field this decoder does not know (newer servers add fields).
    pub fn skip(&mut self, wire_type: u8) -> Result<(), Problem> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            other => Err(Problem::UnsupportedWireType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_decode_little_endian_groups_of_seven_bits() {
        assert_eq!(Reader::new(&[0x96, 0x01]).varint().unwrap(), 150);
        let minus_one = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Reader::new(&minus_one).varint().unwrap() as i64, -1);
    }

    #[test]
    fn a_varint_longer_than_ten_bytes_is_rejected() {
        let long = [0x80u8; 11];
        assert!(matches!(
            Reader::new(&long).varint(),
            Err(Problem::VarintTooLong)
        ));
    }

    #[test]
    fn a_length_past_the_end_is_truncation_not_a_panic() {
        let mut r = Reader::new(&[0x05, b'a']);
        assert!(matches!(r.len_delimited(), Err(Problem::Truncated)));
        let mut huge = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(matches!(huge.len_delimited(), Err(Problem::Truncated)));
    }

    #[test]
    fn tag_zero_is_invalid() {
        assert!(matches!(
            Reader::new(&[0x00]).key(),
            Err(Problem::BadTag(0))
        ));
    }
}
