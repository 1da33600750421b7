//! Checksummed records for files that are appended to: `u32 length, u8 kind, u64 checksum,
//! body`. A reader takes records up to the first one that is torn (a crash cut it) or damaged;
//! what follows it is not trusted.
//!
//! Records are written with a CRC-32 of kind and body (`crc32fast`: hardware instructions on
//! x86_64 and aarch64) and the kind's high bit set. Records of earlier versions, without that bit,
//! carry an FNV-1a checksum (one multiply per byte: a tenth of a coord leader's CPU under 1 KB
//! writes went into it) and are still read. Kinds are below 0x80.

use crate::env::Fnv64;

/// The bytes before a record's body.
pub const HEADER: usize = 13;

/// Set in the kind byte of a record whose checksum is a CRC-32.
const CRC: u8 = 0x80;

fn crc(kind: u8, body: &[u8]) -> u64 {
    let mut hash = crc32fast::Hasher::new();
    hash.update(&[kind]);
    hash.update(body);
    u64::from(hash.finalize())
}

fn fnv(kind: u8, body: &[u8]) -> u64 {
    let mut hash = Fnv64::default();
    hash.write(&[kind]);
    hash.write(body);
    hash.finish()
}

/// Appends one record of `kind` (below 0x80) holding `body` to `out`.
pub fn put(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    debug_assert!(kind < CRC, "record kinds are below 0x80");
    let stored = kind | CRC;
    out.reserve(body.len() + HEADER);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.push(stored);
    out.extend_from_slice(&crc(stored, body).to_be_bytes());
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
    let stored = header[4];
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&header[5..13]);
    let body = bytes.get(HEADER..HEADER.checked_add(length)?)?;
    let expected = if stored & CRC != 0 {
        crc(stored, body)
    } else {
        fnv(stored, body)
    };
    (expected == u64::from_be_bytes(sum)).then_some((stored & !CRC, body, HEADER + length))
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

    #[test]
    fn records_of_earlier_versions_with_fnv_checksums_still_read() {
        // Written as versions before the CRC did: kind without the high bit, FNV-1a.
        let mut old = Vec::new();
        old.extend_from_slice(&5u32.to_be_bytes());
        old.push(2);
        old.extend_from_slice(&fnv(2, b"hello").to_be_bytes());
        old.extend_from_slice(b"hello");
        put(&mut old, 2, b"world");
        let (kind, body, used) = next(&old).unwrap();
        assert_eq!((kind, body), (2, &b"hello"[..]));
        let (kind, body, _) = next(&old[used..]).unwrap();
        assert_eq!((kind, body), (2, &b"world"[..]));
        // An FNV record whose kind byte was flipped to claim a CRC is damaged, not misread.
        let mut flipped = old[..used].to_vec();
        flipped[4] |= CRC;
        assert!(next(&flipped).is_none());
    }
}
