//! One shard's partition of the key space, its applied watermark, and snapshot encoding.
//!
//! Owned by one shard executor; single-threaded. Must not touch the log or the network.
//! Keys route to shards by CRC32C of the key, so the mapping is stable across restarts and
//! versions; snapshots hold keys regardless of shard count, so a node restarted with a
//! different number of cores re-splits them on load.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes};

use ringkv_raft::{Entry, EntryKind, Index};

use super::command::{Command, CommandError};

/// The shard owning `key` among `shards`.
pub fn route(key: &[u8], shards: usize) -> usize {
    assert!(shards > 0, "no shard");
    crc32c::crc32c(key) as usize % shards
}

/// Bytes a key-value pair counts for against `state_bytes_max`.
pub fn pair_bytes(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len() + 48) as u64
}

/// A stored value and the index of the write that last changed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    pub value: Bytes,
    pub revision: Index,
}

/// What applying one entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The key now holds the value, at this revision (the entry's index).
    Put { revision: Index },
    /// The key is gone (`existed`: it was there).
    Deleted { existed: bool },
    /// Not a client write (no-op or membership entry).
    Internal,
}

#[derive(Debug)]
pub struct Partition {
    shard: usize,
    shards: usize,
    map: HashMap<Bytes, Value>,
    /// Every entry up to here has been applied (or belonged to another shard).
    applied: Index,
    bytes: u64,
}

impl Partition {
    pub fn new(shard: usize, shards: usize) -> Self {
        assert!(shard < shards);
        Self {
            shard,
            shards,
            map: HashMap::new(),
            applied: 0,
            bytes: 0,
        }
    }

    pub fn applied(&self) -> Index {
        self.applied
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of state held (keys, values, per-pair overhead).
    pub fn state_bytes(&self) -> u64 {
        self.bytes
    }

    pub fn get(&self, key: &[u8]) -> Option<&Value> {
        self.map.get(key)
    }

    /// Entries of other shards (or none) up to `index` are done: moves the watermark.
    pub fn advance(&mut self, index: Index) {
        self.applied = self.applied.max(index);
    }

    /// Applies a committed entry that routes here. Entries arrive in index order; a
    /// payload that is not a command is a bug upstream (the leader encodes every one).
    pub fn apply(&mut self, e: &Entry) -> Result<Applied, CommandError> {
        assert!(
            e.index > self.applied,
            "entry {} applied twice (watermark {})",
            e.index,
            self.applied
        );
        self.applied = e.index;
        if e.kind != EntryKind::Normal {
            return Ok(Applied::Internal);
        }
        let cmd = Command::decode(&e.data)?;
        debug_assert_eq!(route(cmd.key(), self.shards), self.shard, "misrouted entry");
        Ok(match cmd {
            Command::Put { key, value } => {
                let add = pair_bytes(&key, &value);
                if let Some(old) = self.map.insert(
                    key.clone(),
                    Value {
                        value,
                        revision: e.index,
                    },
                ) {
                    self.bytes -= pair_bytes(&key, &old.value);
                }
                self.bytes += add;
                Applied::Put { revision: e.index }
            }
            Command::Delete { key } => match self.map.remove(&key) {
                Some(old) => {
                    self.bytes -= pair_bytes(&key, &old.value);
                    Applied::Deleted { existed: true }
                }
                None => Applied::Deleted { existed: false },
            },
        })
    }

    /// Appends this partition's pairs to a snapshot body (see `Snapshot`).
    pub fn encode_pairs(&self, out: &mut Vec<u8>) -> u64 {
        let mut e = self.pair_encoder();
        while !e.encode(out, usize::MAX) {}
        e.count
    }

    /// Every pair, moved out (dropping the iterator part way keeps nothing): lets a caller
    /// free a large partition a step at a time.
    pub fn into_pairs(self) -> impl Iterator<Item = (Bytes, Value)> {
        self.map.into_iter()
    }

    /// The same encoding in steps, for a caller that must let other work run between them.
    pub fn pair_encoder(&self) -> PairEncoder<'_> {
        PairEncoder {
            pairs: self.map.iter(),
            count: 0,
        }
    }
}

/// A partition's pairs being appended to a snapshot body, a chunk at a time.
pub struct PairEncoder<'a> {
    pairs: std::collections::hash_map::Iter<'a, Bytes, Value>,
    /// Pairs appended so far.
    pub count: u64,
}

impl PairEncoder<'_> {
    /// Appends pairs until `out` has grown by at least `bytes_max` (or every pair is in);
    /// true once every pair is in `out`.
    pub fn encode(&mut self, out: &mut Vec<u8>, bytes_max: usize) -> bool {
        let until = out.len().saturating_add(bytes_max);
        while out.len() < until {
            let Some((k, v)) = self.pairs.next() else {
                return true;
            };
            out.put_u32_le(k.len() as u32);
            out.put_slice(k);
            out.put_u32_le(v.value.len() as u32);
            out.put_slice(&v.value);
            out.put_u64_le(v.revision);
            self.count += 1;
        }
        self.pairs.len() == 0
    }
}

/// The whole key-value state at one index, independent of the shard count:
/// `[version u8 = 1][applied u64][pairs u64]{[klen u32][key][vlen u32][value][revision u64]}`.
#[derive(Debug)]
pub struct Snapshot;

impl Snapshot {
    /// Encodes every partition (all taken at the same applied index).
    pub fn encode(parts: &[&Partition]) -> Vec<u8> {
        let applied = parts.first().map_or(0, |p| p.applied);
        assert!(
            parts.iter().all(|p| p.applied == applied),
            "partitions at different indexes"
        );
        let mut out = Vec::new();
        out.put_u8(1);
        out.put_u64_le(applied);
        out.put_u64_le(0);
        let mut n = 0;
        for p in parts {
            n += p.encode_pairs(&mut out);
        }
        out[9..17].copy_from_slice(&n.to_le_bytes());
        out
    }

    /// A snapshot body from every shard's `encode_pairs` output (all taken at `applied`).
    pub fn assemble(applied: Index, parts: &[(Vec<u8>, u64)]) -> Vec<u8> {
        let len: usize = parts.iter().map(|p| p.0.len()).sum();
        let mut out = Vec::with_capacity(17 + len);
        out.put_u8(1);
        out.put_u64_le(applied);
        out.put_u64_le(parts.iter().map(|p| p.1).sum());
        for (pairs, _) in parts {
            out.extend_from_slice(pairs);
        }
        out
    }

    /// The partition of shard `shard` of `shards` from a snapshot body.
    pub fn decode(data: &[u8], shard: usize, shards: usize) -> Result<Partition, String> {
        let mut d = Snapshot::decoder(data, shard, shards)?;
        while !d.step(usize::MAX)? {}
        d.finish()
    }

    /// The same decoding in steps, for a caller that must let other work run between them.
    pub fn decoder(
        data: &[u8],
        shard: usize,
        shards: usize,
    ) -> Result<SnapshotDecoder<'_>, String> {
        let mut b = data;
        if b.remaining() < 17 || b.get_u8() != 1 {
            return Err("snapshot body has no version-1 header".into());
        }
        let applied = b.get_u64_le();
        let pairs = b.get_u64_le();
        let mut part = Partition::new(shard, shards);
        part.applied = applied;
        Ok(SnapshotDecoder {
            rest: b,
            pairs,
            done: 0,
            part,
        })
    }
}

/// A snapshot body being decoded into one shard's partition, a step at a time.
pub struct SnapshotDecoder<'a> {
    rest: &'a [u8],
    pairs: u64,
    done: u64,
    part: Partition,
}

impl SnapshotDecoder<'_> {
    /// Decodes pairs until at least `bytes_max` bytes of the body were read (or the last
    /// pair); true once every pair is decoded. Only the pairs this shard owns are copied.
    pub fn step(&mut self, bytes_max: usize) -> Result<bool, String> {
        let (shard, shards, applied) = (self.part.shard, self.part.shards, self.part.applied);
        let start = self.rest.len();
        while self.done < self.pairs && start - self.rest.len() < bytes_max {
            let i = self.done;
            let b = &mut self.rest;
            let mut take = |what: &str| -> Result<&[u8], String> {
                if b.remaining() < 4 {
                    return Err(format!("pair {i}: {what} length cut off"));
                }
                let len = b.get_u32_le() as usize;
                if b.remaining() < len {
                    return Err(format!("pair {i}: {what} of {len} bytes runs past the end"));
                }
                let (v, rest) = b.split_at(len);
                *b = rest;
                Ok(v)
            };
            let key = take("key")?;
            let value = take("value")?;
            if b.remaining() < 8 {
                return Err(format!("pair {i}: revision cut off"));
            }
            let revision = b.get_u64_le();
            if revision > applied {
                return Err(format!(
                    "pair {i}: revision {revision} after the snapshot index {applied}"
                ));
            }
            if route(key, shards) == shard {
                let (key, value) = (Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
                self.part.bytes += pair_bytes(&key, &value);
                self.part.map.insert(key, Value { value, revision });
            }
            self.done += 1;
        }
        Ok(self.done == self.pairs)
    }

    /// The partition, once `step` returned true.
    pub fn finish(self) -> Result<Partition, String> {
        assert_eq!(self.done, self.pairs, "finish before the last step");
        if self.rest.has_remaining() {
            return Err("trailing bytes after the last pair".into());
        }
        Ok(self.part)
    }
}
