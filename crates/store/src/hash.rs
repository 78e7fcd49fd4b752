//! The store hash (etcd's HashKV idea): equal on every node that applied the same log.
//!
//! A wrapping sum of one 64-bit hash per stored version record, so shards hash their own
//! keys independently and the sum does not depend on how keys are split among shards.
//! A record is encoded as `[klen u32][key][mod i64][create i64][version i64][lease i64]`
//! then `[1][vlen u32][value]` for a value or `[0]` for a tombstone (little endian); its
//! hash is CRC32C of that with two different seeds, one in each half.

use crate::types::{LeaseId, Revision};

const SEED_LOW: u32 = 0x5249_4e47; // "RING"
const SEED_HIGH: u32 = 0x4b56_5354; // "KVST"

pub fn record_hash(
    key: &[u8],
    mod_revision: Revision,
    create_revision: Revision,
    version: i64,
    lease: LeaseId,
    value: Option<&[u8]>,
) -> u64 {
    let mut rec = Vec::with_capacity(key.len() + 45 + value.map_or(0, |v| v.len()));
    rec.extend_from_slice(&(key.len() as u32).to_le_bytes());
    rec.extend_from_slice(key);
    for n in [mod_revision, create_revision, version, lease] {
        rec.extend_from_slice(&n.to_le_bytes());
    }
    match value {
        Some(v) => {
            rec.push(1);
            rec.extend_from_slice(&(v.len() as u32).to_le_bytes());
            rec.extend_from_slice(v);
        }
        None => rec.push(0),
    }
    let low = crc32c::crc32c_append(SEED_LOW, &rec) as u64;
    let high = crc32c::crc32c_append(SEED_HIGH, &rec) as u64;
    high << 32 | low
}
