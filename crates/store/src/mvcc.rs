//! One shard's keys and their histories: the multi-version map.
//!
//! Owned by one `ShardStore`, single-threaded. Keys are kept in order (a B-tree), each with
//! its versions since the compaction point, oldest first. A version is stamped with its
//! revision, or, until the sequencer has numbered it, with a *pending* stamp: the index of
//! the log entry that wrote it with the top bit set, so that it orders after every
//! revision and pending stamps order among themselves by log index (the order their
//! revisions will have). Must not touch anything but its own map.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use crate::types::{End, KeyValue, LeaseId, Revision};

/// A revision, or `PENDING | index` until the sequencer numbers the entry at `index`.
pub type Stamp = u64;
/// The top bit: a stamp with it is pending.
pub const PENDING: Stamp = 1 << 63;
/// Reads "at the latest state", pending versions included (inside an entry being applied).
pub const LATEST: Stamp = u64::MAX;

/// Bytes a key costs against the state limit beyond its own length (map node, vector).
pub const KEY_OVERHEAD_BYTES: u64 = 128;
/// Bytes a version costs beyond its value.
pub const VERSION_OVERHEAD_BYTES: u64 = 48;

pub fn pending(index: u64) -> Stamp {
    assert!(index & PENDING == 0, "log index {index} out of range");
    PENDING | index
}

pub fn is_pending(s: Stamp) -> bool {
    s & PENDING != 0 && s != LATEST
}

/// The stamp as a revision field of a `KeyValue`: a resolved stamp is its revision; a
/// pending one is negative (`i64` of the same bits), for the sequencer to fill in.
pub fn stamp_field(s: Stamp) -> Revision {
    s as i64
}

/// The log index of a pending stamp carried in a `KeyValue` revision field.
pub fn pending_index_of_field(v: Revision) -> Option<u64> {
    (v < 0).then_some(v as u64 & !PENDING)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub stamp: Stamp,
    /// The stamp of the version that created the key (this generation's first put).
    pub create: Stamp,
    pub version: i64,
    pub lease: LeaseId,
    /// `None`: a tombstone (the key was deleted at `stamp`).
    pub value: Option<Bytes>,
}

impl Version {
    pub fn is_live(&self) -> bool {
        self.value.is_some()
    }

    fn bytes(&self) -> u64 {
        VERSION_OVERHEAD_BYTES + self.value.as_ref().map_or(0, |v| v.len() as u64)
    }

    pub fn to_kv(&self, key: &Bytes) -> KeyValue {
        KeyValue {
            key: key.clone(),
            create_revision: stamp_field(self.create),
            mod_revision: stamp_field(self.stamp),
            version: self.version,
            value: self.value.clone().unwrap_or_default(),
            lease: self.lease,
        }
    }
}

/// Where a key's history lives in `Keys` (stable while the key exists), so that work
/// queued against a key (a pending stamp to resolve) needs no second search by key.
pub type Slot = u32;

/// Keys a shard can hold (slots are `u32`).
pub const KEYS_MAX: usize = u32::MAX as usize;

#[derive(Debug, Default)]
pub struct Keys {
    /// Key order for ranges; the history itself is in `hist`.
    map: BTreeMap<Bytes, Slot>,
    /// The same keys hashed, for the point lookups of every put, get and compare: a
    /// B-tree search compares the key with a dozen or more others, each a cache miss
    /// away (keys are slices of log buffers); this is one hash and one compare.
    index: HashMap<Bytes, Slot>,
    /// Each key's versions by slot; a free slot holds an empty vector. Shared so that a
    /// snapshot copies a key's history by its reference count (`iter_shared`): a write
    /// to a key a snapshot still holds copies that key's vector first (`Arc::make_mut`).
    hist: Vec<Arc<Vec<Version>>>,
    /// Slots freed by compaction, reused before `hist` grows.
    free: Vec<Slot>,
    bytes: u64,
    /// Keys whose newest version is live.
    live: usize,
}

impl Keys {
    /// Bytes held (keys, values, per-key and per-version overhead).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Keys with any history (deleted ones until compaction frees them).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Keys that exist now (their newest version is not a deletion).
    pub fn live(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The slot of `key`'s history, if it has any.
    pub fn find(&self, key: &[u8]) -> Option<Slot> {
        self.index.get(key).copied()
    }

    /// The newest version of the key at `slot` if it is live (the key exists now).
    pub fn newest_live(&self, slot: Slot) -> Option<&Version> {
        self.hist[slot as usize].last().filter(|v| v.is_live())
    }

    /// The live version of `key` visible at `at` (the newest with a stamp <= `at`).
    pub fn get_at(&self, key: &[u8], at: Stamp) -> Option<&Version> {
        visible(&self.hist[self.find(key)? as usize], at)
    }

    /// Live versions visible at `at` of the keys in `[key, end)`, in key order.
    pub fn scan_at<'a>(
        &'a self,
        key: &'a [u8],
        end: End<'a>,
        at: Stamp,
    ) -> impl Iterator<Item = (&'a Bytes, &'a Version)> + 'a {
        let upper = match end {
            End::One => Bound::Included(key),
            End::Unbounded => Bound::Unbounded,
            End::Before(e) if e <= key => Bound::Excluded(key),
            End::Before(e) => Bound::Excluded(e),
        };
        let range = self.map.range::<[u8], _>((Bound::Included(key), upper));
        range.filter_map(move |(k, s)| visible(&self.hist[*s as usize], at).map(|v| (k, v)))
    }

    /// Appends `v` as the newest version of `key`; returns the key's slot.
    pub fn write(&mut self, key: &Bytes, v: Version) -> Slot {
        match self.find(key) {
            Some(slot) => {
                self.write_slot(slot, v);
                slot
            }
            None => {
                self.bytes += v.bytes() + KEY_OVERHEAD_BYTES + key.len() as u64;
                self.live += v.is_live() as usize;
                let slot = self.alloc(Arc::new(vec![v]));
                self.map.insert(key.clone(), slot);
                self.index.insert(key.clone(), slot);
                slot
            }
        }
    }

    /// Appends `v` as the newest version of the key at `slot` (found by `find`).
    pub fn write_slot(&mut self, slot: Slot, v: Version) {
        let vs = Arc::make_mut(&mut self.hist[slot as usize]);
        let last = vs.last().expect("a key has a version");
        assert!(last.stamp <= v.stamp, "versions out of order");
        self.bytes += v.bytes();
        self.live = self.live + v.is_live() as usize - last.is_live() as usize;
        if last.stamp == v.stamp {
            // A txn writing a key twice (possible through etcd's checkIntervals, which
            // sees a delete to [0] as empty): one record per key and revision, the last
            // write's (the reference model's rule).
            let old = vs.pop().expect("last");
            self.bytes -= old.bytes();
        }
        vs.push(v);
    }

    fn alloc(&mut self, vs: Arc<Vec<Version>>) -> Slot {
        match self.free.pop() {
            Some(s) => {
                debug_assert!(self.hist[s as usize].is_empty());
                self.hist[s as usize] = vs;
                s
            }
            None => {
                assert!(self.hist.len() < KEYS_MAX, "more than {KEYS_MAX} keys");
                self.hist.push(vs);
                (self.hist.len() - 1) as Slot
            }
        }
    }

    /// Replaces the pending stamps through index `through` of the versions at `slot` by
    /// their revisions (`number` maps a log index to its revision). Every such stamp must
    /// have one: a version written at an index is a change the shard reported there.
    pub fn resolve(&mut self, slot: Slot, through: u64, number: impl Fn(u64) -> Option<Revision>) {
        let fix = |s: &mut Stamp| {
            if is_pending(*s) && *s & !PENDING <= through {
                let i = *s & !PENDING;
                let r = number(i).unwrap_or_else(|| panic!("no revision for the change at {i}"));
                *s = r as Stamp;
            }
        };
        let vs = &mut self.hist[slot as usize];
        let newest = vs.last().expect("a key has a version");
        if !is_pending(newest.stamp) && !is_pending(newest.create) {
            return; // nothing to fix: leave a snapshot's shared copy be
        }
        for v in Arc::make_mut(vs).iter_mut().rev() {
            if !is_pending(v.stamp) && !is_pending(v.create) {
                break; // older versions are resolved too
            }
            fix(&mut v.stamp);
            fix(&mut v.create);
        }
    }

    /// Frees history below `revision`: each key keeps its newest version at or below it
    /// (unless that is a tombstone) and everything after. Returns the bytes freed. A key
    /// with nothing left gives up its slot (it had no pending version: those are newer
    /// than any revision compaction may reach).
    pub fn compact(&mut self, revision: Revision) -> u64 {
        let at = revision as Stamp;
        let before = self.bytes;
        let mut freed = 0;
        let mut emptied = Vec::new();
        for (k, s) in self.map.iter() {
            let shared = &mut self.hist[*s as usize];
            // Versions with stamp <= at: the newest of them may stay.
            let upto = shared.partition_point(|v| v.stamp <= at);
            if upto == 0 {
                continue;
            }
            let keep_from = if shared[upto - 1].is_live() {
                upto - 1
            } else {
                upto
            };
            if keep_from == 0 {
                continue;
            }
            let vs = Arc::make_mut(shared);
            for v in vs.drain(..keep_from) {
                freed += v.bytes();
            }
            if vs.is_empty() {
                freed += KEY_OVERHEAD_BYTES + k.len() as u64;
                emptied.push(k.clone());
            } else if vs.capacity() > 2 * vs.len() + 4 {
                vs.shrink_to_fit();
            }
        }
        for k in emptied {
            let s = self.map.remove(&k).expect("emptied key");
            self.index.remove(&k);
            self.hist[s as usize] = Arc::default();
            self.free.push(s);
        }
        self.bytes -= freed;
        before - self.bytes
    }

    /// Every key with its versions (for snapshots and hashes), in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            keys: self.map.iter(),
            hist: &self.hist,
        }
    }

    /// Every key with a shared reference to its history (for snapshots: the store
    /// applies on while they are encoded), in key order.
    pub fn iter_shared(&self) -> impl ExactSizeIterator<Item = (&Bytes, &Arc<Vec<Version>>)> {
        self.map.iter().map(|(k, s)| (k, &self.hist[*s as usize]))
    }

    /// Every key with its history, moved out.
    pub fn into_entries(self) -> impl Iterator<Item = (Bytes, Vec<Version>)> {
        let mut hist = self.hist;
        self.map.into_iter().map(move |(k, s)| {
            (
                k,
                Arc::unwrap_or_clone(std::mem::take(&mut hist[s as usize])),
            )
        })
    }

    /// Installs a key's whole history (snapshot loading); versions oldest first.
    pub fn load(&mut self, key: Bytes, versions: Vec<Version>) -> Result<(), String> {
        if versions.is_empty() {
            return Err("a key without versions".into());
        }
        if self.index.contains_key(&key) {
            return Err("a key listed twice".into());
        }
        self.bytes += KEY_OVERHEAD_BYTES + key.len() as u64;
        self.bytes += versions.iter().map(Version::bytes).sum::<u64>();
        self.live += versions.last().is_some_and(Version::is_live) as usize;
        let slot = self.alloc(Arc::new(versions));
        self.index.insert(key.clone(), slot);
        self.map.insert(key, slot);
        Ok(())
    }
}

/// `Keys::iter`: keys in order with their versions.
pub struct Iter<'a> {
    keys: std::collections::btree_map::Iter<'a, Bytes, Slot>,
    hist: &'a [Arc<Vec<Version>>],
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Bytes, &'a [Version]);

    fn next(&mut self) -> Option<Self::Item> {
        let (k, s) = self.keys.next()?;
        Some((k, &self.hist[*s as usize][..]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.keys.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

fn visible(vs: &[Version], at: Stamp) -> Option<&Version> {
    let n = vs.partition_point(|v| v.stamp <= at);
    let v = vs[..n].last()?;
    v.is_live().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put(keys: &mut Keys, k: &str, stamp: Stamp, create: Stamp, version: i64, val: &str) {
        keys.write(
            &b(k),
            Version {
                stamp,
                create,
                version,
                lease: 0,
                value: Some(b(val)),
            },
        );
    }

    #[test]
    fn pending_stamps_order_after_revisions_and_among_themselves_by_index() {
        assert!(pending(1) > 1_000_000_000);
        assert!(pending(2) > pending(1));
        assert!(LATEST > pending(1 << 40));
        assert!(!is_pending(LATEST) && is_pending(pending(0)) && !is_pending(5));
        assert_eq!(pending_index_of_field(stamp_field(pending(77))), Some(77));
        assert_eq!(pending_index_of_field(stamp_field(77)), None);
    }

    #[test]
    fn reads_see_the_version_of_their_revision_and_compaction_keeps_the_visible_one() {
        let mut keys = Keys::default();
        put(&mut keys, "a", 2, 2, 1, "a1");
        put(&mut keys, "a", 4, 2, 2, "a2");
        put(&mut keys, "b", 3, 3, 1, "b1");
        keys.write(
            &b("b"),
            Version {
                stamp: 5,
                create: 0,
                version: 0,
                lease: 0,
                value: None,
            },
        );
        put(&mut keys, "c", pending(9), pending(9), 1, "c1");
        assert_eq!(keys.get_at(b"a", 3).unwrap().value, Some(b("a1")));
        assert_eq!(keys.get_at(b"a", 4).unwrap().value, Some(b("a2")));
        assert!(keys.get_at(b"b", 5).is_none());
        assert!(keys.get_at(b"b", 4).is_some());
        assert!(
            keys.get_at(b"c", 100).is_none(),
            "pending is after every revision"
        );
        assert!(keys.get_at(b"c", LATEST).is_some());
        let all: Vec<_> = keys
            .scan_at(b"a", End::Unbounded, LATEST)
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(all, vec![b("a"), b("c")]);
        assert_eq!(keys.scan_at(b"c", End::Before(b"a"), LATEST).count(), 0);

        let before = keys.bytes();
        let freed = keys.compact(5);
        assert!(freed > 0 && keys.bytes() == before - freed);
        assert_eq!(keys.get_at(b"a", 5).unwrap().value, Some(b("a2")));
        assert!(
            keys.get_at(b"a", 3).is_none(),
            "history below the compaction is gone"
        );
        assert_eq!(keys.len(), 2, "b's tombstone and history are freed");
        assert_eq!(keys.live(), 2, "a and c (b was deleted)");

        keys.resolve(keys.find(b"c").unwrap(), 9, |i| (i == 9).then_some(6));
        let c = keys.get_at(b"c", 6).unwrap();
        assert_eq!((c.stamp, c.create), (6, 6));
    }
}
