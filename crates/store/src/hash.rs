//! The hash of one stored version record, the unit of a store hash.
//!
//! A store hash (HashKV) is the wrapping sum of `record_hash` over the version records it
//! covers, so it does not depend on the order records are visited in: the real store adds
//! up its shards' sums, the reference model walks one sorted map, and both get the same
//! number for the same history.
//!
//! The record is encoded as (little endian)
//!
//! ```text
//! [key length u32][key][mod_revision i64][create_revision i64][version i64][lease i64]
//! then [0u8]                         for a tombstone
//!   or [1u8][value length u32][value] for a value
//! ```
//!
//! A tombstone's create revision, version and lease are 0 (as etcd's tombstone record,
//! `KeyValue{Key}`), its mod revision the revision of the delete. The hash is two CRC-32C
//! of that encoding, computed with `crc32c::crc32c_append` from two different starting
//! values (`SEED_HIGH`, `SEED_LOW`): the first gives the high 32 bits, the second the low.

use crate::types::{LeaseId, Revision};

/// The starting CRC value of the high half of `record_hash`.
pub const SEED_HIGH: u32 = 0x9e37_79b9;
/// The starting CRC value of the low half of `record_hash`.
pub const SEED_LOW: u32 = 0x85eb_ca6b;

/// The hash of one version record of `key`: `value` is `None` for a tombstone (whose
/// `create_revision`, `version` and `lease` the caller passes as 0).
pub fn record_hash(
    key: &[u8],
    mod_revision: Revision,
    create_revision: Revision,
    version: i64,
    lease: LeaseId,
    value: Option<&[u8]>,
) -> u64 {
    let mut b = Vec::with_capacity(key.len() + value.map_or(0, <[u8]>::len) + 45);
    b.extend_from_slice(&(key.len() as u32).to_le_bytes());
    b.extend_from_slice(key);
    for n in [mod_revision, create_revision, version, lease] {
        b.extend_from_slice(&n.to_le_bytes());
    }
    match value {
        None => b.push(0),
        Some(v) => {
            b.push(1);
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(v);
        }
    }
    (crc32c::crc32c_append(SEED_HIGH, &b) as u64) << 32 | crc32c::crc32c_append(SEED_LOW, &b) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented encoding, written out again here as the specification.
    fn encoded(key: &[u8], m: i64, c: i64, v: i64, l: i64, value: Option<&[u8]>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(key.len() as u32).to_le_bytes());
        b.extend_from_slice(key);
        for n in [m, c, v, l] {
            b.extend_from_slice(&n.to_le_bytes());
        }
        match value {
            None => b.push(0),
            Some(x) => {
                b.push(1);
                b.extend_from_slice(&(x.len() as u32).to_le_bytes());
                b.extend_from_slice(x);
            }
        }
        b
    }

    #[test]
    fn the_hash_is_the_documented_encoding() {
        for (key, value) in [
            (&b"k"[..], Some(&b"v"[..])),
            (b"", Some(b"")),
            (b"\xff\x00", None),
        ] {
            let e = encoded(key, 7, 3, 2, 9, value);
            let want = (crc32c::crc32c_append(SEED_HIGH, &e) as u64) << 32
                | crc32c::crc32c_append(SEED_LOW, &e) as u64;
            assert_eq!(record_hash(key, 7, 3, 2, 9, value), want);
        }
    }

    #[test]
    fn every_field_counts() {
        let base = record_hash(b"k", 5, 2, 3, 0, Some(b"v"));
        let others = [
            record_hash(b"j", 5, 2, 3, 0, Some(b"v")),
            record_hash(b"k", 6, 2, 3, 0, Some(b"v")),
            record_hash(b"k", 5, 1, 3, 0, Some(b"v")),
            record_hash(b"k", 5, 2, 4, 0, Some(b"v")),
            record_hash(b"k", 5, 2, 3, 1, Some(b"v")),
            record_hash(b"k", 5, 2, 3, 0, Some(b"w")),
            record_hash(b"k", 5, 2, 3, 0, Some(b"")),
            record_hash(b"k", 5, 0, 0, 0, None),
            // The length prefixes keep key and value apart: "k"+"v" is not "kv"+"".
            record_hash(b"kv", 5, 2, 3, 0, Some(b"")),
        ];
        for (i, h) in others.iter().enumerate() {
            assert_ne!(*h, base, "variant {i}");
        }
        assert_ne!(
            record_hash(b"k", 5, 0, 0, 0, None),
            record_hash(b"k", 5, 0, 0, 0, Some(b""))
        );
    }
}
