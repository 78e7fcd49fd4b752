//! One shard's keys and their histories: the multi-version map.
//!
//! Owned by one `ShardStore`, single-threaded. Keys are kept in order (a B-tree), each with
//! its versions since the compaction point, oldest first. A version is stamped with its
//! revision, or, until the sequencer has numbered it, with a *pending* stamp: the index of
//! the log entry that wrote it with the top bit set, so that it orders after every
//! revision and pending stamps order among themselves by log index (the order their
//! revisions will have). Must not touch anything but its own map.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use crate::types::{End, KeyValue, LeaseId, Revision};

/// A revision, or `PENDING | index` until the sequencer numbers the entry at `index`.
pub type Stamp = u64;
/// The top bit: a stamp with it is pending.
pub const PENDING: Stamp = 1 << 63;
/// Reads "at the latest state", pending versions included (inside an entry being applied).
pub const LATEST: Stamp = u64::MAX;

/// Bytes a key costs against the state limit beyond its own length (map node, vector).
pub const KEY_OVERHEAD_BYTES: u64 = 64;
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

#[derive(Debug, Default)]
pub struct Keys {
    map: BTreeMap<Bytes, Vec<Version>>,
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

    /// The live version of `key` visible at `at` (the newest with a stamp <= `at`).
    pub fn get_at(&self, key: &[u8], at: Stamp) -> Option<&Version> {
        visible(self.map.get(key)?, at)
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
        range.filter_map(move |(k, vs)| visible(vs, at).map(|v| (k, v)))
    }

    /// Appends `v` as the newest version of `key`.
    pub fn write(&mut self, key: &Bytes, v: Version) {
        self.bytes += v.bytes();
        let now_live = v.is_live();
        match self.map.get_mut(key) {
            Some(vs) => {
                let last = vs.last().expect("a key has a version");
                assert!(last.stamp <= v.stamp, "versions out of order");
                let was_live = last.is_live();
                self.live = self.live + now_live as usize - was_live as usize;
                if last.stamp == v.stamp {
                    // A txn writing a key twice (possible through etcd's checkIntervals,
                    // which sees a delete to [0] as empty): one record per key and
                    // revision, the last write's (the reference model's rule).
                    let old = vs.pop().expect("last");
                    self.bytes -= old.bytes();
                }
                vs.push(v);
            }
            None => {
                self.bytes += KEY_OVERHEAD_BYTES + key.len() as u64;
                self.live += now_live as usize;
                self.map.insert(key.clone(), vec![v]);
            }
        }
    }

    /// Replaces the pending stamps through index `through` of `key`'s versions by their
    /// revisions (`number` maps a log index to its revision). Every such stamp must have
    /// one: a version written at an index is a change the shard reported there.
    pub fn resolve(&mut self, key: &[u8], through: u64, number: impl Fn(u64) -> Option<Revision>) {
        let Some(vs) = self.map.get_mut(key) else {
            return;
        };
        let fix = |s: &mut Stamp| {
            if is_pending(*s) && *s & !PENDING <= through {
                let i = *s & !PENDING;
                let r = number(i).unwrap_or_else(|| panic!("no revision for the change at {i}"));
                *s = r as Stamp;
            }
        };
        for v in vs.iter_mut().rev() {
            if !is_pending(v.stamp) && !is_pending(v.create) {
                break; // older versions are resolved too
            }
            fix(&mut v.stamp);
            fix(&mut v.create);
        }
    }

    /// Frees history below `revision`: each key keeps its newest version at or below it
    /// (unless that is a tombstone) and everything after. Returns the bytes freed.
    pub fn compact(&mut self, revision: Revision) -> u64 {
        let at = revision as Stamp;
        let before = self.bytes;
        let mut freed = 0;
        let mut emptied = Vec::new();
        for (k, vs) in self.map.iter_mut() {
            // Versions with stamp <= at: the newest of them may stay.
            let upto = vs.partition_point(|v| v.stamp <= at);
            if upto == 0 {
                continue;
            }
            let keep_from = if vs[upto - 1].is_live() {
                upto - 1
            } else {
                upto
            };
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
            self.map.remove(&k);
        }
        self.bytes -= freed;
        before - self.bytes
    }

    /// Every key with its versions (for snapshots and hashes), in key order.
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, Bytes, Vec<Version>> {
        self.map.iter()
    }

    /// Every key with its history, moved out.
    pub fn into_entries(self) -> impl Iterator<Item = (Bytes, Vec<Version>)> {
        self.map.into_iter()
    }

    /// Installs a key's whole history (snapshot loading); versions oldest first.
    pub fn load(&mut self, key: Bytes, versions: Vec<Version>) -> Result<(), String> {
        if versions.is_empty() {
            return Err("a key without versions".into());
        }
        if self.map.contains_key(&key) {
            return Err("a key listed twice".into());
        }
        self.bytes += KEY_OVERHEAD_BYTES + key.len() as u64;
        self.bytes += versions.iter().map(Version::bytes).sum::<u64>();
        self.live += versions.last().is_some_and(Version::is_live) as usize;
        self.map.insert(key, versions);
        Ok(())
    }
}

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

        keys.resolve(b"c", 9, |i| (i == 9).then_some(6));
        let c = keys.get_at(b"c", 6).unwrap();
        assert_eq!((c.stamp, c.create), (6, 6));
    }
}
