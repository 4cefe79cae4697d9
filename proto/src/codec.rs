//! The one codec discipline (CONTRIBUTING.md P5, spec §1.2): every byte Lamina
//! parses goes through [`Reader`], every byte it emits through [`Writer`].
//!
//! A decoder has three outcomes: a value, [`DecodeError::Incomplete`] (say
//! how many more bytes are needed when known) or [`DecodeError::Invalid`].
//! Whole-message decoders ([`decode_exact`]) reject trailing bytes. Length
//! fields are checked against protocol maxima by the caller *before* any
//! allocation: [`Reader::bytes`] borrows, it never allocates. Decoders are
//! deterministic: the same prefix always gives the same answer.
//!
//! All integers are big-endian (network order).

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended early; `deficit` more bytes are needed at least.
    #[error("incomplete input: {deficit} more bytes needed")]
    Incomplete {
        /// How many more bytes the decoder needs, at least.
        deficit: usize,
    },
    /// The input is malformed.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },
}

impl DecodeError {
    /// Shorthand for [`DecodeError::Invalid`].
    pub fn invalid(what: &'static str, reason: &'static str) -> Self {
        Self::Invalid { what, reason }
    }

    /// Treat a short read as malformed: inside a fixed-size container
    /// (a cell, a relay message) running out of bytes is the peer's fault,
    /// not a reason to wait for more.
    pub fn in_container(self, what: &'static str) -> Self {
        match self {
            Self::Incomplete { .. } => Self::Invalid { what, reason: "truncated" },
            other => other,
        }
    }
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field is longer than its length prefix or the protocol allows.
    #[error("{what} too long: {len} bytes, at most {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value violates a protocol rule (e.g. a zero stream id).
    #[error("cannot encode {what}: {reason}")]
    Invalid {
        /// What was being encoded.
        what: &'static str,
        /// Why it cannot be.
        reason: &'static str,
    },
}

/// A bounds-checked cursor over borrowed bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// The whole input.
    buf: &'a [u8],
    /// Bytes consumed so far.
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes consumed so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// Take exactly `n` bytes (borrowed; no allocation).
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let rest = &self.buf[self.pos..];
        if rest.len() < n {
            return Err(DecodeError::Incomplete { deficit: n - rest.len() });
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    /// Take a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// Take one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Take a big-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Take a big-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Take a big-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Take a u8 length prefix, check it against `max`, then the bytes.
    pub fn bytes_u8_len(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u8()?);
        if len > max {
            return Err(DecodeError::invalid(what, "length above protocol maximum"));
        }
        self.bytes(len)
    }

    /// Take a u16 length prefix, check it against `max`, then the bytes.
    pub fn bytes_u16_len(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(DecodeError::invalid(what, "length above protocol maximum"));
        }
        self.bytes(len)
    }

    /// Take everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos..];
        self.pos = self.buf.len();
        rest
    }

    /// Fail unless the input is exhausted (whole-message decoders).
    pub fn expect_end(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::invalid(what, "trailing bytes"))
        }
    }

    /// Fail unless every remaining byte is zero (padding), then consume it.
    pub fn expect_zero_padding(&mut self, what: &'static str) -> Result<(), DecodeError> {
        if self.rest().iter().all(|b| *b == 0) {
            Ok(())
        } else {
            Err(DecodeError::invalid(what, "non-zero padding"))
        }
    }
}

/// An appending writer over a `Vec<u8>`.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    /// The bytes written so far.
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        Self { buf: Vec::with_capacity(cap) }
    }

    /// Append bytes.
    pub fn put_bytes(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Append one byte.
    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Append a big-endian u16.
    pub fn put_u16(&mut self, v: u16) {
        self.put_bytes(&v.to_be_bytes());
    }

    /// Append a big-endian u32.
    pub fn put_u32(&mut self, v: u32) {
        self.put_bytes(&v.to_be_bytes());
    }

    /// Append a big-endian u64.
    pub fn put_u64(&mut self, v: u64) {
        self.put_bytes(&v.to_be_bytes());
    }

    /// Append a u8 length prefix and the bytes; `max` is the protocol limit.
    pub fn put_bytes_u8_len(&mut self, what: &'static str, bytes: &[u8], max: usize) -> Result<(), EncodeError> {
        let len = checked_len::<u8>(what, bytes.len(), max)?;
        self.put_u8(len);
        self.put_bytes(bytes);
        Ok(())
    }

    /// Append a u16 length prefix and the bytes; `max` is the protocol limit.
    pub fn put_bytes_u16_len(&mut self, what: &'static str, bytes: &[u8], max: usize) -> Result<(), EncodeError> {
        let len = checked_len::<u16>(what, bytes.len(), max)?;
        self.put_u16(len);
        self.put_bytes(bytes);
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The written bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Finish and take the bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Check a length against the protocol maximum and the prefix width.
fn checked_len<T: TryFrom<usize>>(what: &'static str, len: usize, max: usize) -> Result<T, EncodeError> {
    if len > max {
        return Err(EncodeError::TooLong { what, len, max });
    }
    T::try_from(len).map_err(|_| EncodeError::TooLong { what, len, max })
}

/// A type with a wire encoding.
pub trait Encode {
    /// Append the encoding of `self`.
    fn encode(&self, w: &mut Writer) -> Result<(), EncodeError>;

    /// The encoding as a fresh vector.
    fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        self.encode(&mut w)?;
        Ok(w.into_vec())
    }
}

/// A type that can be decoded from a [`Reader`].
pub trait Decode: Sized {
    /// Decode one value, consuming exactly its bytes.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

/// Decode a whole message: exactly one `T` and no trailing bytes.
pub fn decode_exact<T: Decode>(what: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    let mut r = Reader::new(bytes);
    let value = T::decode(&mut r)?;
    r.expect_end(what)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_report_the_deficit() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32(), Err(DecodeError::Incomplete { deficit: 1 }));
        // A failed read consumes nothing.
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.u16(), Ok(0x0102));
    }

    #[test]
    fn length_prefix_above_maximum_is_invalid_before_reading() {
        let mut r = Reader::new(&[0xff, 0xff]);
        assert_eq!(r.bytes_u16_len("field", 100), Err(DecodeError::invalid("field", "length above protocol maximum")));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        struct One(u8);
        impl Decode for One {
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(Self(r.u8()?))
            }
        }
        assert_eq!(decode_exact::<One>("one", &[7]).map(|o| o.0), Ok(7));
        assert_eq!(decode_exact::<One>("one", &[7, 8]).err(), Some(DecodeError::invalid("one", "trailing bytes")));
    }

    #[test]
    fn writer_refuses_overlong_fields() {
        let mut w = Writer::new();
        assert!(w.put_bytes_u8_len("name", &[0; 300], 255).is_err());
        assert!(w.put_bytes_u8_len("name", &[0; 10], 5).is_err());
        assert!(w.is_empty());
        w.put_bytes_u16_len("blob", &[9; 3], 10).unwrap();
        assert_eq!(w.as_slice(), &[0, 3, 9, 9, 9]);
    }

    #[test]
    fn zero_padding_is_checked() {
        let mut r = Reader::new(&[0, 0, 1]);
        assert!(r.expect_zero_padding("pad").is_err());
        let mut r = Reader::new(&[0, 0]);
        assert!(r.expect_zero_padding("pad").is_ok());
    }
}
