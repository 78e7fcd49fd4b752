//! The whole store at one log index, independent of the shard count: what a snapshot
//! carries (history since the compaction point, leases, the compaction revision, the
//! alarm, the revision and the index it was taken at).
//!
//! Pure bytes. Taken from shards that have applied and resolved everything through the
//! same index; loaded by each shard keeping the keys that route to it, so a node restarted
//! with another number of cores re-splits them. Layout (little endian):
//! `[version u8 = 2][index u64][revision i64][compacted i64][nospace u8]`
//! `[leases u32]{[id i64][ttl i64][remaining i64, i64::MIN for none]}`
//! `[keys u64]{[klen u32][key][versions u32]{[mod i64][create i64][version i64][lease i64]`
//! `[live u8][vlen u32][value]}}` with each key's versions oldest first.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};

use crate::mvcc::{Version, is_pending};
use crate::parts::Index;
use crate::shard::{ShardStore, route};
use crate::types::{LeaseId, Revision};

const VERSION: u8 = 2;
/// Bytes of the fixed header.
const HEADER_BYTES: usize = 1 + 8 + 8 + 8 + 1;

/// Store-wide values every shard holds the same copy of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub index: Index,
    pub revision: Revision,
    pub compacted: Revision,
    pub nospace: bool,
    /// (id, ttl, remaining ttl of the last checkpoint)
    pub leases: Vec<(LeaseId, i64, Option<i64>)>,
}

/// Encodes the store from all its shards (each resolved through the same index).
pub fn encode(shards: &[&ShardStore]) -> Vec<u8> {
    let h = shards[0].header();
    for s in shards {
        assert_eq!(s.header(), h, "shards at different points");
    }
    let parts: Vec<(Vec<u8>, u64)> = shards
        .iter()
        .map(|s| {
            let mut out = Vec::new();
            let mut c = KeyCopier::new(s);
            while !c.copy(usize::MAX) {}
            let mut e = c.finish();
            while !e.encode(&mut out, usize::MAX) {}
            (out, e.count)
        })
        .collect();
    assemble(&header_bytes(&h), &parts)
}

/// The header as the snapshot starts with it (without the key count).
pub fn header_bytes(h: &Header) -> Vec<u8> {
    let mut out = Vec::new();
    put_header(&mut out, h);
    out
}

/// A snapshot body from a header (`header_bytes`) and every shard's keys (`KeyEncoder`
/// output and count).
pub fn assemble(header: &[u8], parts: &[(Vec<u8>, u64)]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(header.len() + 8 + parts.iter().map(|p| p.0.len()).sum::<usize>());
    out.extend_from_slice(header);
    out.put_u64_le(parts.iter().map(|p| p.1).sum());
    for (keys, _) in parts {
        out.extend_from_slice(keys);
    }
    out
}

/// One shard's keys being copied at a snapshot's index, a step at a time (a caller that
/// shares its thread yields between steps). The copy shares each key and its history (a
/// reference count each; a later write to the key copies its history then): the store is
/// held still only for the copy, and goes on applying while `KeyEncoder` writes it out.
pub struct KeyCopier<'a> {
    keys: Box<dyn ExactSizeIterator<Item = (&'a Bytes, &'a Arc<Vec<Version>>)> + 'a>,
    copy: Vec<(Bytes, Arc<Vec<Version>>)>,
}

impl<'a> KeyCopier<'a> {
    pub fn new(s: &'a ShardStore) -> KeyCopier<'a> {
        let keys = Box::new(s.keys().iter_shared());
        let copy = Vec::with_capacity(keys.len());
        KeyCopier { keys, copy }
    }

    /// Copies up to `keys_max` keys; true once every key is copied.
    pub fn copy(&mut self, keys_max: usize) -> bool {
        for (k, vs) in self.keys.by_ref().take(keys_max) {
            self.copy.push((k.clone(), vs.clone()));
        }
        self.keys.len() == 0
    }

    /// The copy, to be encoded.
    pub fn finish(self) -> KeyEncoder {
        assert_eq!(self.keys.len(), 0, "a snapshot copy finished early");
        KeyEncoder {
            keys: self.copy.into_iter(),
            count: 0,
        }
    }
}

/// A shard's copied keys being appended to a snapshot, a chunk at a time; each key's copy
/// is freed once it is written.
pub struct KeyEncoder {
    keys: std::vec::IntoIter<(Bytes, Arc<Vec<Version>>)>,
    /// Keys appended so far.
    pub count: u64,
}

impl KeyEncoder {
    /// Appends keys until `out` grew by at least `bytes_max` or every key is in; true
    /// once every key is in.
    pub fn encode(&mut self, out: &mut Vec<u8>, bytes_max: usize) -> bool {
        let until = out.len().saturating_add(bytes_max);
        while out.len() < until {
            let Some((k, vs)) = self.keys.next() else {
                return true;
            };
            put_key(out, &k, &vs);
            self.count += 1;
        }
        self.keys.len() == 0
    }
}

fn put_header(out: &mut Vec<u8>, h: &Header) {
    out.put_u8(VERSION);
    out.put_u64_le(h.index);
    out.put_i64_le(h.revision);
    out.put_i64_le(h.compacted);
    out.put_u8(h.nospace as u8);
    out.put_u32_le(h.leases.len() as u32);
    for (id, ttl, rem) in &h.leases {
        out.put_i64_le(*id);
        out.put_i64_le(*ttl);
        out.put_i64_le(rem.unwrap_or(i64::MIN));
    }
}

fn put_key(out: &mut Vec<u8>, k: &[u8], vs: &[Version]) {
    out.put_u32_le(k.len() as u32);
    out.put_slice(k);
    out.put_u32_le(vs.len() as u32);
    for v in vs {
        assert!(
            !is_pending(v.stamp) && !is_pending(v.create),
            "snapshot of a pending version"
        );
        out.put_i64_le(v.stamp as i64);
        out.put_i64_le(v.create as i64);
        out.put_i64_le(v.version);
        out.put_i64_le(v.lease);
        match &v.value {
            Some(val) => {
                out.put_u8(1);
                out.put_u32_le(val.len() as u32);
                out.put_slice(val);
            }
            None => out.put_u8(0),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn need(&self, n: usize, what: &str) -> Result<(), String> {
        if self.0.remaining() < n {
            return Err(format!("snapshot: {what} is cut off"));
        }
        Ok(())
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        self.need(1, what)?;
        Ok(self.0.get_u8())
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.need(4, what)?;
        Ok(self.0.get_u32_le())
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.need(8, what)?;
        Ok(self.0.get_u64_le())
    }
    fn i64(&mut self, what: &str) -> Result<i64, String> {
        self.need(8, what)?;
        Ok(self.0.get_i64_le())
    }
    fn bytes(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.u32(what)? as usize;
        self.need(n, what)?;
        let (v, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(v)
    }
}

/// Reads the header of a snapshot body.
pub fn header(data: &[u8]) -> Result<Header, String> {
    let mut r = Reader(data);
    read_header(&mut r)
}

fn read_header(r: &mut Reader<'_>) -> Result<Header, String> {
    if r.0.len() < HEADER_BYTES {
        return Err("snapshot: shorter than its header".into());
    }
    let v = r.u8("version")?;
    if v != VERSION {
        return Err(format!("snapshot: format version {v} is unknown"));
    }
    let index = r.u64("index")?;
    let revision = r.i64("revision")?;
    let compacted = r.i64("compaction revision")?;
    let nospace = match r.u8("alarm")? {
        0 => false,
        1 => true,
        x => return Err(format!("snapshot: alarm flag {x}")),
    };
    if revision < 1 || compacted < 0 || compacted > revision {
        return Err(format!(
            "snapshot: revision {revision} and compaction revision {compacted} do not fit"
        ));
    }
    let n = r.u32("lease count")? as usize;
    if n.saturating_mul(24) > r.0.remaining() {
        return Err(format!("snapshot: {n} leases cannot fit"));
    }
    let mut leases = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.i64("lease id")?;
        let ttl = r.i64("lease ttl")?;
        let rem = r.i64("lease remaining ttl")?;
        leases.push((id, ttl, (rem != i64::MIN).then_some(rem)));
    }
    Ok(Header {
        index,
        revision,
        compacted,
        nospace,
        leases,
    })
}

/// Shard `shard` of `shards` from a snapshot body: its keys, and the store-wide state.
pub fn decode(data: &[u8], shard: usize, shards: usize) -> Result<ShardStore, String> {
    let mut d = Decoder::new(data, shard, shards)?;
    while !d.step(usize::MAX)? {}
    d.finish()
}

/// A snapshot body being decoded into one shard, a step at a time. Only the keys the
/// shard owns are copied.
pub struct Decoder<'a> {
    r: Reader<'a>,
    header: Header,
    keys: u64,
    done: u64,
    store: ShardStore,
}

impl<'a> Decoder<'a> {
    pub fn new(data: &'a [u8], shard: usize, shards: usize) -> Result<Decoder<'a>, String> {
        let mut r = Reader(data);
        let header = read_header(&mut r)?;
        let store = ShardStore::restore(shard, shards, &header);
        let keys = r.u64("key count")?;
        Ok(Decoder {
            r,
            header,
            keys,
            done: 0,
            store,
        })
    }

    /// Decodes keys until at least `bytes_max` bytes were read (or the last key); true
    /// once every key is decoded.
    pub fn step(&mut self, bytes_max: usize) -> Result<bool, String> {
        let (shard, shards) = (self.store.shard(), self.store.shards());
        let start = self.r.0.len();
        while self.done < self.keys && start - self.r.0.len() < bytes_max {
            let i = self.done;
            let r = &mut self.r;
            let key = r.bytes("key")?;
            let n = r.u32("version count")? as usize;
            if n == 0 || n.saturating_mul(33) > r.0.remaining() {
                return Err(format!("snapshot: key {i} has {n} versions"));
            }
            let mine = route(key, shards) == shard;
            let mut versions = Vec::with_capacity(if mine { n } else { 0 });
            let mut prev: Option<Revision> = None;
            for _ in 0..n {
                let stamp = r.i64("mod revision")?;
                let create = r.i64("create revision")?;
                let version = r.i64("version")?;
                let lease = r.i64("lease")?;
                let value = match r.u8("live flag")? {
                    1 => Some(r.bytes("value")?),
                    0 => None,
                    x => return Err(format!("snapshot: key {i}: live flag {x}")),
                };
                if stamp < 1 || stamp > self.header.revision || prev.is_some_and(|p| p >= stamp) {
                    return Err(format!(
                        "snapshot: key {i}: revision {stamp} out of order or past {}",
                        self.header.revision
                    ));
                }
                prev = Some(stamp);
                if mine {
                    versions.push(Version {
                        stamp: stamp as u64,
                        create: create as u64,
                        version,
                        lease,
                        value: value.map(Bytes::copy_from_slice),
                    });
                }
            }
            if mine {
                self.store.load_key(Bytes::copy_from_slice(key), versions)?;
            }
            self.done += 1;
        }
        Ok(self.done == self.keys)
    }

    /// The shard, once `step` returned true.
    pub fn finish(self) -> Result<ShardStore, String> {
        assert_eq!(self.done, self.keys, "finish before the last step");
        if self.r.0.has_remaining() {
            return Err("snapshot: trailing bytes after the last key".into());
        }
        Ok(self.store)
    }
}
