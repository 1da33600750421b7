//! Checksummed records for files that are appended to: `u32 length, u8 kind, u64 checksum
//! (FNV-1a of kind and body), body`. A reader takes records up to the first one that is torn (a
//! crash cut it) or damaged; what follows it is not trusted.

use crate::env::Fnv64;

/// The bytes before a record's body.
pub const HEADER: usize = 13;

fn checksum(kind: u8, body: &[u8]) -> u64 {
    let mut hash = Fnv64::default();
    hash.write(&[kind]);
    hash.write(body);
    hash.finish()
}

/// Appends one record of `kind` holding `body` to `out`.
pub fn put(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.reserve(body.len() + HEADER);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&checksum(kind, body).to_be_bytes());
    out.extend_from_slice(body);
}

/// One record of `kind` holding `body`.
pub fn encode(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, kind, body);
    out
}

/// The first whole, intact record of `bytes`: (kind, body, its length on disk).
pub fn next(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let header = bytes.get(..HEADER)?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let kind = header[4];
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&header[5..13]);
    let body = bytes.get(HEADER..HEADER.checked_add(length)?)?;
    (checksum(kind, body) == u64::from_be_bytes(sum)).then_some((kind, body, HEADER + length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_up_to_a_torn_or_damaged_one() {
        let mut file = Vec::new();
        put(&mut file, 1, b"first");
        put(&mut file, 2, b"");
        let whole = file.len();
        put(&mut file, 1, b"third");
        let (kind, body, used) = next(&file).unwrap();
        assert_eq!((kind, body), (1, &b"first"[..]));
        let (kind, body, _) = next(&file[used..]).unwrap();
        assert_eq!((kind, body), (2, &b""[..]));
        // Torn: the last record cut short.
        assert!(next(&file[whole..file.len() - 1]).is_none());
        // Damaged: one byte of its body flipped.
        let mut damaged = file[whole..].to_vec();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(next(&damaged).is_none());
        // A length past the end, even a huge one, is torn, not a panic.
        assert!(next(&[0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
    }
}
