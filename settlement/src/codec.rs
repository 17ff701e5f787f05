//! The canonical binary encoding: big-endian integers, length-prefixed byte
//! strings, no optional whitespace or field order freedom. Every top-level
//! encoding starts with a versioned domain tag (see the `*_TAG` constants of
//! the modules that use it), and a conformance test pins sample hashes.

use std::fmt;

use iso_currency::Currency;

use crate::hash::Digest32;

/// A canonical encoding could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// Why it failed.
    pub reason: String,
}

impl DecodeError {
    /// Builds an error.
    pub fn new(what: &'static str, reason: impl fmt::Display) -> Self {
        Self { what, reason: reason.to_string() }
    }
}

/// Appends canonical encodings to a byte buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { buf: Vec::with_capacity(capacity) }
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets what was written, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Raw bytes with no length prefix (tags, fixed-size fields).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// One byte.
    pub fn u8(&mut self, value: u8) {
        self.buf.push(value);
    }

    /// Big-endian u16.
    pub fn u16(&mut self, value: u16) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    /// Big-endian u32.
    pub fn u32(&mut self, value: u32) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    /// Big-endian u64.
    pub fn u64(&mut self, value: u64) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    /// Big-endian i128 (two's complement).
    pub fn i128(&mut self, value: i128) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    /// A length-counted sequence: the u32 count that precedes its items.
    pub fn len(&mut self, len: usize) {
        self.u32(u32::try_from(len).expect("encoded collections are bounded far below u32::MAX"));
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.raw(bytes);
    }

    /// Length-prefixed UTF-8.
    pub fn str(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    /// A 32-byte digest.
    pub fn digest(&mut self, digest: &Digest32) {
        self.raw(&digest.0);
    }

    /// A currency, as its three-letter ISO 4217 code.
    pub fn currency(&mut self, currency: Currency) {
        self.raw(currency.code().as_bytes());
    }

    /// `0` for none, `1` followed by the value for some.
    pub fn option<T>(&mut self, value: Option<&T>, mut write: impl FnMut(&mut Self, &T)) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                write(self, value);
            }
        }
    }
}

/// The currency with the three-letter ISO 4217 `code`. A binary search in a
/// table built once: `Currency::from_code` compares the string with every
/// code in turn, and every transfer decoded carries a currency.
pub fn currency_by_code(code: [u8; 3]) -> Option<Currency> {
    static TABLE: std::sync::OnceLock<Vec<([u8; 3], Currency)>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        // Every three-letter code, asked once (17,576 lookups, a few
        // milliseconds); the result is sorted because the codes are tried in order.
        let mut table = Vec::new();
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                for c in b'A'..=b'Z' {
                    let code = [a, b, c];
                    let text = std::str::from_utf8(&code).expect("ASCII letters");
                    if let Some(currency) = Currency::from_code(text) {
                        table.push((code, currency));
                    }
                }
            }
        }
        table
    });
    table.binary_search_by_key(&code, |(code, _)| *code).ok().map(|i| table[i].1)
}

/// Reads canonical encodings, refusing trailing or missing bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`, naming `what` in errors.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    /// An error about the structure being read.
    pub fn error(&self, reason: impl fmt::Display) -> DecodeError {
        DecodeError::new(self.what, reason)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.error(format!("{} trailing bytes", self.bytes.len())))
        }
    }

    /// Exactly `n` raw bytes.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(self.error(format!("truncated: wanted {n} bytes, {} left", self.bytes.len())));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// Expects the exact tag bytes.
    pub fn tag(&mut self, tag: &[u8]) -> Result<(), DecodeError> {
        let got = self.raw(tag.len())?;
        if got != tag {
            return Err(self.error(format!("expected tag {:?}", String::from_utf8_lossy(tag))));
        }
        Ok(())
    }

    /// Fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.raw(1)?[0])
    }

    /// Big-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Big-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Big-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Big-endian i128.
    pub fn i128(&mut self) -> Result<i128, DecodeError> {
        Ok(i128::from_be_bytes(self.array()?))
    }

    /// A collection count, refused above `max`.
    pub fn len(&mut self, max: usize) -> Result<usize, DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(self.error(format!("count {len} exceeds the limit of {max}")));
        }
        Ok(len)
    }

    /// Length-prefixed bytes of at most `max` bytes.
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.len(max)?;
        self.raw(len)
    }

    /// Length-prefixed UTF-8 of at most `max` bytes.
    pub fn str(&mut self, max: usize) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes(max)?;
        std::str::from_utf8(bytes).map_err(|_| self.error("invalid UTF-8"))
    }

    /// A 32-byte digest.
    pub fn digest(&mut self) -> Result<Digest32, DecodeError> {
        Ok(Digest32(self.array()?))
    }

    /// A currency code.
    pub fn currency(&mut self) -> Result<Currency, DecodeError> {
        let code: [u8; 3] = self.array()?;
        currency_by_code(code)
            .ok_or_else(|| self.error(format!("unknown currency {:?}", String::from_utf8_lossy(&code))))
    }

    /// An option written by [`Writer::option`].
    pub fn option<T>(
        &mut self,
        mut read: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(read(self)?)),
            other => Err(self.error(format!("bad option marker {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_resolve_like_iso_currency() {
        for code in ["AED", "USD", "JPY", "KWD", "EUR", "PHP", "XAU", "ZWL"] {
            let bytes: [u8; 3] = code.as_bytes().try_into().expect("3 bytes");
            assert_eq!(currency_by_code(bytes), Currency::from_code(code), "{code}");
            assert!(currency_by_code(bytes).is_some(), "{code}");
        }
        for bytes in [*b"usd", *b"XYZ", *b"US\0", [0xff; 3]] {
            assert_eq!(currency_by_code(bytes), None, "{bytes:?}");
        }
        let mut r = Reader::new(b"XYZ", "currency");
        assert_eq!(r.currency().expect_err("unknown").reason, "unknown currency \"XYZ\"");
    }
}
