//! Jute's primitives: a bounded reader that says where and what it expected when a packet is
//! malformed, and a writer that frames what it wrote as a packet.

use super::*;

/// A packet that does not decode: where and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad ZooKeeper packet at byte {offset}: expected {expected}")]
pub struct DecodeError {
    pub offset: usize,
    pub expected: String,
}

/// Reads jute primitives from a packet body.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    pub(super) fn error(&self, expected: &str) -> DecodeError {
        DecodeError {
            offset: self.at,
            expected: expected.to_string(),
        }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub(super) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.error(&format!("{what} ({n} bytes, {} left)", self.remaining())));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    pub fn int(&mut self, what: &str) -> Result<i32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn long(&mut self, what: &str) -> Result<i64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub fn boolean(&mut self, what: &str) -> Result<bool, DecodeError> {
        Ok(self.take(1, what)?[0] != 0)
    }

    /// A length-prefixed byte buffer; -1 is an absent (empty) buffer.
    pub fn buffer(&mut self, what: &str) -> Result<Vec<u8>, DecodeError> {
        let length = self.int(what)?;
        if length < 0 {
            return Ok(Vec::new());
        }
        Ok(self.take(length as usize, what)?.to_vec())
    }

    pub fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let at = self.at;
        let bytes = self.buffer(what)?;
        String::from_utf8(bytes).map_err(|_| DecodeError {
            offset: at,
            expected: format!("{what} as UTF-8"),
        })
    }

    fn vector<T>(
        &mut self,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = self.int(what)?;
        if count < 0 {
            return Ok(Vec::new());
        }
        // Every element takes at least one byte: a count beyond the packet is a lie.
        if count as usize > self.remaining() {
            return Err(self.error(&format!(
                "{what}: {count} elements in {} bytes",
                self.remaining()
            )));
        }
        (0..count).map(|_| item(self)).collect()
    }

    pub(super) fn strings(&mut self, what: &str) -> Result<Vec<String>, DecodeError> {
        self.vector(what, |r| r.string(what))
    }

    pub(crate) fn acls(&mut self) -> Result<Vec<Acl>, DecodeError> {
        self.vector("acl list", |r| {
            Ok(Acl {
                perms: r.int("acl perms")?,
                scheme: r.string("acl scheme")?,
                id: r.string("acl id")?,
            })
        })
    }

    pub fn stat(&mut self) -> Result<Stat, DecodeError> {
        Ok(Stat {
            czxid: self.long("stat czxid")?,
            mzxid: self.long("stat mzxid")?,
            ctime: self.long("stat ctime")?,
            mtime: self.long("stat mtime")?,
            version: self.int("stat version")?,
            cversion: self.int("stat cversion")?,
            aversion: self.int("stat aversion")?,
            ephemeral_owner: self.long("stat ephemeralOwner")?,
            data_length: self.int("stat dataLength")?,
            num_children: self.int("stat numChildren")?,
            pzxid: self.long("stat pzxid")?,
        })
    }
}

/// Writes jute primitives.
#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn int(&mut self, v: i32) {
        self.bytes.extend_from_slice(&v.to_be_bytes());
    }

    pub fn long(&mut self, v: i64) {
        self.bytes.extend_from_slice(&v.to_be_bytes());
    }

    pub fn boolean(&mut self, v: bool) {
        self.bytes.push(u8::from(v));
    }

    pub fn buffer(&mut self, v: &[u8]) {
        self.int(v.len() as i32);
        self.bytes.extend_from_slice(v);
    }

    pub fn string(&mut self, v: &str) {
        self.buffer(v.as_bytes());
    }

    pub fn strings(&mut self, v: &[String]) {
        self.int(v.len() as i32);
        for s in v {
            self.string(s);
        }
    }

    pub fn acls(&mut self, acls: &[Acl]) {
        self.int(acls.len() as i32);
        for acl in acls {
            self.int(acl.perms);
            self.string(&acl.scheme);
            self.string(&acl.id);
        }
    }

    pub fn stat(&mut self, s: &Stat) {
        self.long(s.czxid);
        self.long(s.mzxid);
        self.long(s.ctime);
        self.long(s.mtime);
        self.int(s.version);
        self.int(s.cversion);
        self.int(s.aversion);
        self.long(s.ephemeral_owner);
        self.int(s.data_length);
        self.int(s.num_children);
        self.long(s.pzxid);
    }

    /// The packet: length prefix and body.
    pub fn into_packet(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 4);
        out.extend_from_slice(&(self.bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(&self.bytes);
        out
    }
}
