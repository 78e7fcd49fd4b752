//! The reference model: etcd 3.4's MVCC semantics written as plainly as they can be, for
//! the model-based test of the real store (`tests/model.rs`) and the simulator's checker.
//!
//! Not in the server (feature `reference`). Everything is a linear walk over one sorted map
//! of every version record ever written and not yet compacted away, tombstones included;
//! nothing is indexed or cached, so what it answers follows from the history alone. The
//! etcd 3.4 code each rule reproduces is named where it is implemented (`apply.go` is
//! `etcdserver/apply.go`, `kvstore*.go` and `key_index.go` are in `mvcc/`, `lessor.go` in
//! `lease/`, `quota.go` in `etcdserver/`).
//!
//! Where this model and etcd 3.4 differ, on purpose:
//! - The compaction revision starts at 0; etcd's `compactMainRev` starts at -1. So
//!   `Compact(0)` on a never-compacted store is `Compacted` here (etcd accepts it once), and
//!   a range with a negative revision inside a txn is `Compacted` here, as in etcd once
//!   anything was compacted (etcd's `checkRequestRange` checks every revision but 0).
//! - A txn put with `ignore_value`/`ignore_lease` whose key an earlier op of the same txn
//!   deleted (only possible through a delete with range_end `[0]`, which etcd's
//!   `checkIntervals` sees as an empty interval) makes etcd panic in `applyTxn` on every
//!   replica. Here the whole txn fails with `KeyNotFound` and changes nothing.
//! - One record per key and revision: when a txn writes a key twice (a put in one nested
//!   txn and a delete in a later sibling, or deletes with range_end `[0]`), etcd keeps both
//!   under sub-revisions; here the last write replaces the earlier one. Reads, versions and
//!   compaction see the same as etcd (the last write of a revision is what etcd reads);
//!   only the hash, which is ours, is defined over the last write.
//! - Ties of a sort: etcd uses Go's `sort.Sort`, which is not stable (it keeps ties in
//!   order only on inputs small enough for a plain insertion sort), so etcd leaves their
//!   order unspecified; here the sort is stable over the key-ordered input (ties stay in
//!   ascending key order, also for DESCEND, a stable sort with the comparison reversed).
//! - No backend size quota: only the NOSPACE alarm refuses writes (etcd's `quotaApplierV3`
//!   also answers `NoSpace` for a write that would exceed the quota while no alarm is up).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::command::Command;
use crate::hash::record_hash;
use crate::types::{
    Applied, Compare, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, End, KeyValue,
    LeaseGrantResponse, LeaseId, LeaseInfo, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, Response, ResponseOp, Revision, SortOrder, SortTarget, StoreError, TxnRequest,
    TxnResponse,
};

/// etcd's `lease.MaxLeaseTTL`: the largest TTL `lessor.Grant` accepts, in seconds.
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;

/// A key's state as of one revision (the key and that revision are the map's key).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    create_revision: Revision,
    version: i64,
    value: Bytes,
    lease: LeaseId,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Lease {
    ttl: i64,
    remaining_ttl: Option<i64>,
}

/// The branch a txn takes and, in op order, the paths of the txns nested in that branch:
/// etcd's `compareToPath` (a flat pre-order list there, a tree here).
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

/// etcd 3.4's store as a plain map of every version. See the module documentation.
#[derive(Clone, Debug)]
pub struct Reference {
    /// Every stored version: `(key, revision)` to the record written there, `None` for a
    /// tombstone. Versions below the compaction revision are gone (see `compact`).
    versions: BTreeMap<(Bytes, Revision), Option<Record>>,
    /// The current revision: 1 for an empty store.
    revision: Revision,
    /// The revision of the last compaction, 0 before any.
    compacted: Revision,
    /// The lease table. The keys attached to a lease are not kept: they are the live keys
    /// whose record names the lease (etcd's `itemMap` is exactly that: a put attaches and
    /// detaches, a delete detaches).
    leases: BTreeMap<LeaseId, Lease>,
    /// The NOSPACE alarm.
    nospace: bool,
}

impl Default for Reference {
    fn default() -> Self {
        Reference::new()
    }
}

impl Reference {
    pub fn new() -> Reference {
        Reference {
            versions: BTreeMap::new(),
            revision: 1,
            compacted: 0,
            leases: BTreeMap::new(),
            nospace: false,
        }
    }

    /// Applies the write a log entry carries: the store revision after it (the header
    /// revision) and the result. A refused write changes nothing.
    pub fn apply(&mut self, cmd: &Command) -> Applied {
        let result = match cmd {
            Command::Put(p) => self.put(p).map(Response::Put),
            Command::DeleteRange(d) => Ok(Response::DeleteRange(self.delete_range(d))),
            Command::Txn(t) => self.txn(t).map(Response::Txn),
            Command::Compact {
                revision,
                physical: _,
            } => self.compact(*revision).map(|()| Response::Compacted),
            Command::LeaseGrant { id, ttl } => {
                self.lease_grant(*id, *ttl).map(Response::LeaseGranted)
            }
            Command::LeaseRevoke { id } => self.lease_revoke(*id).map(|()| Response::LeaseRevoked),
            Command::LeaseCheckpoint { checkpoints } => {
                // lessor.go `Checkpoint`: sets the remaining TTL of a lease that exists,
                // ignores an unknown id, never fails.
                for (id, remaining) in checkpoints {
                    if let Some(l) = self.leases.get_mut(id) {
                        l.remaining_ttl = Some(*remaining);
                    }
                }
                Ok(Response::Done)
            }
            Command::Alarm { nospace } => {
                self.nospace = *nospace;
                Ok(Response::Done)
            }
        };
        Applied {
            revision: self.revision,
            result,
        }
    }

    /// A read at the current state (`req.revision <= 0`) or at `req.revision`: the header
    /// revision (the current one, whatever revision was read) and the response.
    pub fn range(&self, req: &RangeRequest) -> Result<(Revision, RangeResponse), StoreError> {
        let at = self.read_revision(req.revision)?;
        Ok((self.revision, self.range_at(req, at)))
    }

    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn compact_revision(&self) -> Revision {
        self.compacted
    }

    /// The lease, with its attached keys in key order.
    pub fn lease(&self, id: LeaseId) -> Option<LeaseInfo> {
        let l = self.leases.get(&id)?;
        Some(LeaseInfo {
            id,
            ttl: l.ttl,
            remaining_ttl: l.remaining_ttl,
            keys: self.lease_keys(id),
        })
    }

    /// Every lease id, in order.
    pub fn leases(&self) -> Vec<LeaseId> {
        self.leases.keys().copied().collect()
    }

    pub fn alarm(&self) -> bool {
        self.nospace
    }

    /// The store hash at `revision` (<= 0: the current one): the wrapping sum of
    /// `hash::record_hash` over every stored version record at or below it, tombstones
    /// included; after a compaction, over what it kept. Same errors as a range.
    pub fn hash(&self, revision: Revision) -> Result<u64, StoreError> {
        let at = self.read_revision(revision)?;
        let mut h = 0u64;
        for ((key, rev), record) in &self.versions {
            if *rev > at {
                continue;
            }
            h = h.wrapping_add(match record {
                Some(r) => record_hash(
                    key,
                    *rev,
                    r.create_revision,
                    r.version,
                    r.lease,
                    Some(&r.value),
                ),
                None => record_hash(key, *rev, 0, 0, 0, None),
            });
        }
        Ok(h)
    }

    /// The revision a read of `revision` is served at, as kvstore_txn.go `rangeKeys`: above
    /// the current one is a future revision; <= 0 is the current one; below the compaction
    /// revision is compacted (reading AT it is allowed).
    fn read_revision(&self, revision: Revision) -> Result<Revision, StoreError> {
        if revision > self.revision {
            return Err(StoreError::FutureRevision);
        }
        let at = if revision <= 0 {
            self.revision
        } else {
            revision
        };
        if at < self.compacted {
            return Err(StoreError::Compacted);
        }
        Ok(at)
    }

    /// `key` as of revision `at`: its latest version at or below `at`, if not a tombstone.
    fn get(&self, key: &Bytes, at: Revision) -> Option<KeyValue> {
        let ((_, rev), record) = self
            .versions
            .range((key.clone(), Revision::MIN)..=(key.clone(), at))
            .next_back()?;
        let r = record.as_ref()?;
        Some(KeyValue {
            key: key.clone(),
            create_revision: r.create_revision,
            mod_revision: *rev,
            version: r.version,
            value: r.value.clone(),
            lease: r.lease,
        })
    }

    /// The keys live at revision `at` in `[key, range_end)` (range_end empty: the one key;
    /// `[0]`: every key >= `key`), in key order.
    fn live(&self, key: &[u8], range_end: &[u8], at: Revision) -> Vec<KeyValue> {
        let end = End::of(range_end);
        let mut kvs = Vec::new();
        let mut last: Option<&Bytes> = None;
        for (k, _) in self
            .versions
            .range((Bytes::copy_from_slice(key), Revision::MIN)..)
            .map(|(k, _)| k)
        {
            if !end.admits(key, k) {
                break;
            }
            if last == Some(k) {
                continue;
            }
            last = Some(k);
            kvs.extend(self.get(k, at));
        }
        kvs
    }

    /// The live keys (at the current revision) whose lease is `id`, in key order.
    fn lease_keys(&self, id: LeaseId) -> Vec<Bytes> {
        self.live(&[], &[0], self.revision)
            .into_iter()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key)
            .collect()
    }

    /// apply.go `applierV3backend.Range` at revision `at` (already checked).
    fn range_at(&self, r: &RangeRequest, at: Revision) -> RangeResponse {
        let mut kvs = self.live(&r.key, &r.range_end, at);
        // rangeKeys: the count is every key in the range, before the filters below; with
        // count_only no key is returned (so `more` is never set).
        let count = kvs.len() as i64;
        if r.count_only {
            kvs.clear();
        }
        // With no sort order and no filter, etcd fetches the first limit + 1 keys only,
        // and the sort below orders those.
        if let Some(w) = r.key_window() {
            kvs.truncate(w);
        }
        // pruneKVs, each only when its bound is non-zero, in this order.
        if r.max_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
        }
        if r.min_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
        }
        if r.max_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
        }
        if r.min_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
        }
        // A target other than the key with no order sorts ascending.
        let order = if r.sort_target != SortTarget::Key && r.sort_order == SortOrder::None {
            SortOrder::Ascend
        } else {
            r.sort_order
        };
        let by = |a: &KeyValue, b: &KeyValue| match r.sort_target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        match order {
            SortOrder::None => {}
            SortOrder::Ascend => kvs.sort_by(by),
            SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
        }
        // A limit <= 0 is no limit.
        let mut more = false;
        if r.limit > 0 && kvs.len() as i64 > r.limit {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        RangeResponse { kvs, more, count }
    }

    /// A put outside a txn: apply.go `Put` behind `applierV3Capped` (NOSPACE first), the
    /// lease looked up before the key (inside a txn it is the other way round).
    fn put(&mut self, p: &PutRequest) -> Result<PutResponse, StoreError> {
        if self.nospace {
            return Err(StoreError::NoSpace);
        }
        if p.lease != 0 && !self.leases.contains_key(&p.lease) {
            return Err(StoreError::LeaseNotFound);
        }
        let rev = self.revision + 1;
        let resp = self.put_at(p, rev)?;
        self.revision = rev;
        Ok(resp)
    }

    /// Writes `p` at revision `rev`, reading the key's state at `rev` (so a txn's put sees
    /// the txn's earlier writes, as kvstore_txn.go `put` reads the index at beginRev + 1).
    /// `KeyNotFound` (nothing written) when ignore_value or ignore_lease finds no key.
    fn put_at(&mut self, p: &PutRequest, rev: Revision) -> Result<PutResponse, StoreError> {
        let prev = self.get(&p.key, rev);
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(StoreError::KeyNotFound);
        }
        let value = match &prev {
            Some(kv) if p.ignore_value => kv.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match &prev {
            Some(kv) if p.ignore_lease => kv.lease,
            _ => p.lease,
        };
        // A live key keeps its create revision and counts one more version; a new or
        // deleted one starts a new generation at this revision, version 1.
        let (create_revision, version) = match &prev {
            Some(kv) => (kv.create_revision, kv.version + 1),
            None => (rev, 1),
        };
        self.versions.insert(
            (p.key.clone(), rev),
            Some(Record {
                create_revision,
                version,
                value,
                lease,
            }),
        );
        Ok(PutResponse {
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    /// A delete outside a txn: allowed under NOSPACE; a new revision iff it deleted a key.
    fn delete_range(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let rev = self.revision + 1;
        let resp = self.delete_at(d, rev);
        if resp.deleted > 0 {
            self.revision = rev;
        }
        resp
    }

    /// Tombstones at `rev` every key live at `rev` in the range (which detaches it from its
    /// lease); prev_kvs in key order.
    fn delete_at(&mut self, d: &DeleteRangeRequest, rev: Revision) -> DeleteRangeResponse {
        let kvs = self.live(&d.key, &d.range_end, rev);
        for kv in &kvs {
            self.versions.insert((kv.key.clone(), rev), None);
        }
        DeleteRangeResponse {
            deleted: kvs.len() as i64,
            prev_kvs: if d.prev_kv { kvs } else { Vec::new() },
        }
    }

    /// apply.go `applierV3backend.Txn` behind `applierV3Capped.Txn`.
    fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, StoreError> {
        // quota.go `costTxn` counts the puts directly in either branch only: a put nested
        // deeper costs nothing and is applied under NOSPACE.
        let top_level_put = t
            .success
            .iter()
            .chain(&t.failure)
            .any(|op| matches!(op, RequestOp::Put(_)));
        if self.nospace && top_level_put {
            return Err(StoreError::NoSpace);
        }
        // 1. Every compare on the path, nested ones too, against the state before the txn.
        let path = self.path(t);
        // 2. The puts on the path (etcd checks them only for a txn that writes; a txn that
        //    does not has no put to check), 3. then the ranges on the path. First error wins.
        if !t.is_read_only() {
            self.check_puts(t, &path)?;
        }
        self.check_ranges(t, &path)?;
        // 4. The ops in order, all writes at the next revision.
        let before = self.versions.clone();
        let rev = self.revision + 1;
        let mut changed = false;
        match self.exec(t, &path, rev, &mut changed) {
            Ok(resp) => {
                if changed {
                    self.revision = rev;
                }
                Ok(resp)
            }
            Err(e) => {
                // Only a put that finds its key deleted by this txn (see the module doc).
                self.versions = before;
                Err(e)
            }
        }
    }

    /// apply.go `compareToPath`.
    fn path(&self, t: &TxnRequest) -> Path {
        let succeeded = t.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { &t.success } else { &t.failure };
        let nested = ops
            .iter()
            .filter_map(|op| match op {
                RequestOp::Txn(n) => Some(self.path(n)),
                _ => None,
            })
            .collect();
        Path { succeeded, nested }
    }

    /// apply.go `applyCompare`: over the keys in the compare's range at the current
    /// revision; with none, a VALUE compare is false and the others compare the zero
    /// KeyValue; otherwise it must hold for every key.
    fn compare(&self, c: &Compare) -> bool {
        let kvs = self.live(&c.key, &c.range_end, self.revision);
        if kvs.is_empty() {
            return !matches!(c.target, CompareTarget::Value(_))
                && c.holds_for(&KeyValue::default());
        }
        kvs.iter().all(|kv| c.holds_for(kv))
    }

    /// apply.go `checkRequests` with `checkRequestPut` over the taken path: the key first
    /// (ignore_value/ignore_lease need it), then the lease.
    fn check_puts(&self, t: &TxnRequest, path: &Path) -> Result<(), StoreError> {
        let mut nested = path.nested.iter();
        for op in taken(t, path) {
            match op {
                RequestOp::Put(p) => {
                    if (p.ignore_value || p.ignore_lease)
                        && self.get(&p.key, self.revision).is_none()
                    {
                        return Err(StoreError::KeyNotFound);
                    }
                    if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                        return Err(StoreError::LeaseNotFound);
                    }
                }
                RequestOp::Txn(n) => self.check_puts(n, nested.next().expect("a nested path"))?,
                _ => {}
            }
        }
        Ok(())
    }

    /// apply.go `checkRequests` with `checkRequestRange`: a revision of 0 is not checked;
    /// above the current revision is a future one; below the compaction revision
    /// (negative ones too) is compacted.
    fn check_ranges(&self, t: &TxnRequest, path: &Path) -> Result<(), StoreError> {
        let mut nested = path.nested.iter();
        for op in taken(t, path) {
            match op {
                RequestOp::Range(r) if r.revision == 0 => {}
                RequestOp::Range(r) if r.revision > self.revision => {
                    return Err(StoreError::FutureRevision);
                }
                RequestOp::Range(r) if r.revision < self.compacted => {
                    return Err(StoreError::Compacted);
                }
                RequestOp::Txn(n) => self.check_ranges(n, nested.next().expect("a nested path"))?,
                _ => {}
            }
        }
        Ok(())
    }

    /// apply.go `applyTxn`: the taken branch's ops in order, writing at `rev`. Reads at
    /// `rev` see the txn's own earlier writes (etcd reads at beginRev + 1 once the txn
    /// changed something, and at beginRev, the same state, before).
    fn exec(
        &mut self,
        t: &TxnRequest,
        path: &Path,
        rev: Revision,
        changed: &mut bool,
    ) -> Result<TxnResponse, StoreError> {
        let mut nested = path.nested.iter();
        let mut responses = Vec::new();
        for op in taken(t, path) {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let at = if r.revision <= 0 { rev } else { r.revision };
                    ResponseOp::Range(self.range_at(r, at))
                }
                RequestOp::Put(p) => {
                    let resp = self.put_at(p, rev)?;
                    *changed = true;
                    ResponseOp::Put(resp)
                }
                RequestOp::DeleteRange(d) => {
                    let resp = self.delete_at(d, rev);
                    *changed |= resp.deleted > 0;
                    ResponseOp::DeleteRange(resp)
                }
                RequestOp::Txn(n) => {
                    let p = nested.next().expect("a nested path");
                    ResponseOp::Txn(self.exec(n, p, rev, changed)?)
                }
            });
        }
        Ok(TxnResponse {
            succeeded: path.succeeded,
            responses,
        })
    }

    /// kvstore.go `Compact` (`updateCompactRev`, then the index's `compact`): at or below
    /// the last compaction is `Compacted`, above the current revision `FutureRevision`.
    /// Every version below `at` goes, and so does the latest one at or below `at` if it is
    /// a tombstone; a key's latest version at or below `at` that holds a value stays, so a
    /// read at `at` or later sees the same as before (key_index.go `compact`).
    fn compact(&mut self, at: Revision) -> Result<(), StoreError> {
        if at <= self.compacted {
            return Err(StoreError::Compacted);
        }
        if at > self.revision {
            return Err(StoreError::FutureRevision);
        }
        self.compacted = at;
        let mut latest: BTreeMap<Bytes, Revision> = BTreeMap::new();
        for (key, rev) in self.versions.keys() {
            if *rev <= at {
                latest.insert(key.clone(), *rev);
            }
        }
        self.versions.retain(|(key, rev), record| {
            *rev > at || (latest.get(key) == Some(rev) && record.is_some())
        });
        Ok(())
    }

    /// lessor.go `Grant` behind `applierV3Capped` (NOSPACE first). The id and TTL are
    /// final (the proposer raised the TTL to the minimum), but apply checks what Grant does.
    fn lease_grant(&mut self, id: LeaseId, ttl: i64) -> Result<LeaseGrantResponse, StoreError> {
        if self.nospace {
            return Err(StoreError::NoSpace);
        }
        if id == 0 {
            return Err(StoreError::LeaseNotFound);
        }
        if ttl > LEASE_TTL_MAX {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(StoreError::LeaseExists);
        }
        self.leases.insert(
            id,
            Lease {
                ttl,
                remaining_ttl: None,
            },
        );
        Ok(LeaseGrantResponse { id, ttl })
    }

    /// lessor.go `Revoke`: deletes the lease's keys in key order in one write txn (so one
    /// new revision, and none when it had no key), then the lease. Allowed under NOSPACE.
    fn lease_revoke(&mut self, id: LeaseId) -> Result<(), StoreError> {
        if !self.leases.contains_key(&id) {
            return Err(StoreError::LeaseNotFound);
        }
        let keys = self.lease_keys(id);
        let rev = self.revision + 1;
        for key in &keys {
            self.versions.insert((key.clone(), rev), None);
        }
        if !keys.is_empty() {
            self.revision = rev;
        }
        self.leases.remove(&id);
        Ok(())
    }
}

/// The ops of the branch `path` took.
fn taken<'a>(t: &'a TxnRequest, path: &Path) -> &'a [RequestOp] {
    if path.succeeded {
        &t.success
    } else {
        &t.failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{CompareResult, TXN_OPS_MAX};

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn preq(k: &str, v: &str) -> PutRequest {
        PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        }
    }

    fn put(k: &str, v: &str) -> Command {
        Command::Put(preq(k, v))
    }

    fn put_lease(k: &str, v: &str, lease: LeaseId) -> Command {
        Command::Put(PutRequest {
            lease,
            ..preq(k, v)
        })
    }

    fn del(k: &str, end: &str) -> Command {
        Command::DeleteRange(DeleteRangeRequest {
            key: b(k),
            range_end: b(end),
            prev_kv: true,
        })
    }

    fn op_put(k: &str, v: &str) -> RequestOp {
        RequestOp::Put(preq(k, v))
    }

    fn op_del(k: &str, end: &[u8]) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: b(k),
            range_end: Bytes::copy_from_slice(end),
            prev_kv: false,
        })
    }

    fn op_get(k: &str, revision: Revision) -> RequestOp {
        RequestOp::Range(RangeRequest {
            key: b(k),
            revision,
            ..Default::default()
        })
    }

    fn op_txn(
        compare: Vec<Compare>,
        success: Vec<RequestOp>,
        failure: Vec<RequestOp>,
    ) -> RequestOp {
        RequestOp::Txn(TxnRequest {
            compare,
            success,
            failure,
        })
    }

    fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> Command {
        Command::Txn(TxnRequest {
            compare,
            success,
            failure,
        })
    }

    fn cmp(k: &str, result: CompareResult, target: CompareTarget) -> Compare {
        Compare {
            result,
            target,
            key: b(k),
            range_end: Bytes::new(),
        }
    }

    fn kv(k: &str, v: &str, create: Revision, m: Revision, version: i64) -> KeyValue {
        KeyValue {
            key: b(k),
            create_revision: create,
            mod_revision: m,
            version,
            value: b(v),
            lease: 0,
        }
    }

    fn get(s: &Reference, k: &str) -> Option<KeyValue> {
        get_at(s, k, 0).unwrap()
    }

    fn get_at(s: &Reference, k: &str, revision: Revision) -> Result<Option<KeyValue>, StoreError> {
        let req = RangeRequest {
            key: b(k),
            revision,
            ..Default::default()
        };
        Ok(s.range(&req)?.1.kvs.into_iter().next())
    }

    fn range(s: &Reference, req: RangeRequest) -> RangeResponse {
        let (rev, resp) = s.range(&req).unwrap();
        assert_eq!(rev, s.revision());
        resp
    }

    fn txn_resp(a: Applied) -> TxnResponse {
        match a.result {
            Ok(Response::Txn(t)) => t,
            r => panic!("not a txn response: {r:?}"),
        }
    }

    fn keys(r: &RangeResponse) -> Vec<&str> {
        r.kvs
            .iter()
            .map(|kv| std::str::from_utf8(&kv.key).unwrap())
            .collect()
    }

    fn stored(s: &Reference) -> Vec<(&str, Revision)> {
        s.versions
            .keys()
            .map(|(k, r)| (std::str::from_utf8(k).unwrap(), *r))
            .collect()
    }

    #[test]
    fn the_revision_moves_only_when_something_changed() {
        let mut s = Reference::new();
        assert_eq!(s.revision(), 1);
        assert_eq!(s.apply(&put("a", "1")).revision, 2);
        // A delete that matches nothing, a refused put, a read-only txn, a txn whose only
        // delete matches nothing, compaction, leases, checkpoints and alarms: no revision.
        assert_eq!(s.apply(&del("x", "")).revision, 2);
        let refused = s.apply(&put_lease("a", "2", 7));
        assert_eq!(refused.result, Err(StoreError::LeaseNotFound));
        assert_eq!(refused.revision, 2);
        assert_eq!(
            s.apply(&txn(vec![], vec![op_get("a", 0)], vec![])).revision,
            2
        );
        assert_eq!(
            s.apply(&txn(vec![], vec![op_del("x", b"")], vec![]))
                .revision,
            2
        );
        for c in [
            Command::Compact {
                revision: 2,
                physical: false,
            },
            Command::LeaseGrant { id: 1, ttl: 10 },
            Command::LeaseCheckpoint {
                checkpoints: vec![(1, 5), (99, 5)],
            },
            Command::Alarm { nospace: false },
        ] {
            let a = s.apply(&c);
            assert!(a.result.is_ok(), "{c:?}: {a:?}");
            assert_eq!(a.revision, 2, "{c:?}");
        }
        assert_eq!(s.lease(1).unwrap().remaining_ttl, Some(5));
        assert_eq!(s.lease(99), None);
        // A txn that writes several keys: one revision for all of them.
        let w = txn(
            vec![],
            vec![op_put("b", "1"), op_put("c", "1"), op_del("a", b"")],
            vec![],
        );
        assert_eq!(s.apply(&w).revision, 3);
        assert_eq!(get(&s, "b").unwrap().mod_revision, 3);
        assert_eq!(get(&s, "c").unwrap().mod_revision, 3);
        assert_eq!(get(&s, "a"), None);
        // A delete of two keys: one revision, prev_kvs in key order.
        let a = s.apply(&del("b", "d"));
        assert_eq!(a.revision, 4);
        assert_eq!(
            a.result,
            Ok(Response::DeleteRange(DeleteRangeResponse {
                deleted: 2,
                prev_kvs: vec![kv("b", "1", 3, 3, 1), kv("c", "1", 3, 3, 1)],
            }))
        );
    }

    #[test]
    fn a_deleted_key_starts_a_new_generation() {
        let mut s = Reference::new();
        for v in ["1", "2", "3"] {
            s.apply(&put("a", v));
        }
        assert_eq!(get(&s, "a"), Some(kv("a", "3", 2, 4, 3)));
        assert_eq!(s.apply(&del("a", "")).revision, 5);
        let a = s.apply(&Command::Put(PutRequest {
            prev_kv: true,
            ..preq("a", "4")
        }));
        assert_eq!(a.result, Ok(Response::Put(PutResponse { prev_kv: None })));
        assert_eq!(get(&s, "a"), Some(kv("a", "4", 6, 6, 1)));
        // The history stays readable.
        assert_eq!(get_at(&s, "a", 4), Ok(Some(kv("a", "3", 2, 4, 3))));
        assert_eq!(get_at(&s, "a", 5), Ok(None));
        assert_eq!(get_at(&s, "a", 7), Err(StoreError::FutureRevision));
        // prev_kv of a put over a live key.
        let a = s.apply(&Command::Put(PutRequest {
            prev_kv: true,
            ..preq("a", "5")
        }));
        assert_eq!(
            a.result,
            Ok(Response::Put(PutResponse {
                prev_kv: Some(kv("a", "4", 6, 6, 1))
            }))
        );
    }

    /// a=3 b=1 c=2 d=1 e=3 at revisions 2..=6, then b put again (version 2, mod 7).
    fn five() -> Reference {
        let mut s = Reference::new();
        for (k, v) in [
            ("a", "3"),
            ("b", "1"),
            ("c", "2"),
            ("d", "1"),
            ("e", "3"),
            ("b", "1"),
        ] {
            s.apply(&put(k, v));
        }
        s
    }

    fn all(limit: i64) -> RangeRequest {
        RangeRequest {
            key: b("a"),
            range_end: b("f"),
            limit,
            ..Default::default()
        }
    }

    #[test]
    fn limit_more_and_count_as_etcd() {
        let s = five();
        let r = range(&s, all(2));
        assert_eq!((keys(&r), r.more, r.count), (vec!["a", "b"], true, 5));
        for limit in [5, 6, 0, -1] {
            let r = range(&s, all(limit));
            assert_eq!(
                (r.kvs.len(), r.more, r.count),
                (5, false, 5),
                "limit {limit}"
            );
        }
        // count_only: no kvs, the count, never `more`.
        let r = range(
            &s,
            RangeRequest {
                count_only: true,
                ..all(1)
            },
        );
        assert_eq!((r.kvs.len(), r.more, r.count), (0, false, 5));
        // The filters drop kvs but not the count; the limit applies after them.
        let r = range(
            &s,
            RangeRequest {
                min_mod_revision: 4,
                ..all(0)
            },
        );
        assert_eq!(
            (keys(&r), r.more, r.count),
            (vec!["b", "c", "d", "e"], false, 5)
        );
        let r = range(
            &s,
            RangeRequest {
                min_mod_revision: 4,
                ..all(2)
            },
        );
        assert_eq!((keys(&r), r.more, r.count), (vec!["b", "c"], true, 5));
        let r = range(
            &s,
            RangeRequest {
                min_mod_revision: 4,
                max_mod_revision: 6,
                ..all(3)
            },
        );
        assert_eq!((keys(&r), r.more, r.count), (vec!["c", "d", "e"], false, 5));
        let r = range(
            &s,
            RangeRequest {
                max_create_revision: 3,
                min_create_revision: 3,
                ..all(0)
            },
        );
        assert_eq!((keys(&r), r.count), (vec!["b"], 5));
        // A count_only range with filters still counts everything.
        let r = range(
            &s,
            RangeRequest {
                count_only: true,
                min_mod_revision: 100,
                ..all(0)
            },
        );
        assert_eq!((r.kvs.len(), r.more, r.count), (0, false, 5));
    }

    #[test]
    fn sorts_are_stable_over_key_order() {
        let s = five();
        let sorted = |order, target, limit| {
            keys(&range(
                &s,
                RangeRequest {
                    sort_order: order,
                    sort_target: target,
                    ..all(limit)
                },
            ))
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
        };
        // Ties keep ascending key order, for DESCEND too.
        assert_eq!(
            sorted(SortOrder::Descend, SortTarget::Value, 0),
            ["a", "e", "c", "b", "d"]
        );
        // A target other than the key without an order sorts ascending.
        assert_eq!(
            sorted(SortOrder::None, SortTarget::Value, 0),
            ["b", "d", "c", "a", "e"]
        );
        assert_eq!(
            sorted(SortOrder::Descend, SortTarget::Version, 0),
            ["b", "a", "c", "d", "e"]
        );
        assert_eq!(
            sorted(SortOrder::Ascend, SortTarget::Mod, 0),
            ["a", "c", "d", "e", "b"]
        );
        assert_eq!(
            sorted(SortOrder::Descend, SortTarget::Create, 2),
            ["e", "d"]
        );
        assert_eq!(
            sorted(SortOrder::Descend, SortTarget::Key, 0),
            ["e", "d", "c", "b", "a"]
        );
        assert_eq!(
            sorted(SortOrder::None, SortTarget::Key, 0),
            ["a", "b", "c", "d", "e"]
        );
        // No order and a limit: etcd sorts only the first limit + 1 keys by key (a, b,
        // c here), so d, second by value over the range, is not in the answer; with an
        // order it is. (Found by the differential tester against etcd 3.4.23.)
        assert_eq!(sorted(SortOrder::None, SortTarget::Value, 2), ["b", "c"]);
        assert_eq!(sorted(SortOrder::Ascend, SortTarget::Value, 2), ["b", "d"]);
        assert_eq!(sorted(SortOrder::None, SortTarget::Key, 2), ["a", "b"]);
        // keys_only clears values after sorting by them; the limit applies after the sort.
        let r = range(
            &s,
            RangeRequest {
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Value,
                keys_only: true,
                ..all(3)
            },
        );
        assert_eq!((keys(&r), r.more, r.count), (vec!["a", "e", "c"], true, 5));
        assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    }

    #[test]
    fn range_ends_one_key_prefix_from_key_and_inverted() {
        let mut s = Reference::new();
        for k in ["a", "ab", "a\u{7f}", "b"] {
            s.apply(&put(k, "v"));
        }
        s.apply(&Command::Put(PutRequest {
            key: Bytes::from_static(b"\xff"),
            ..preq("", "v")
        }));
        let n = |key: &[u8], end: &[u8]| {
            range(
                &s,
                RangeRequest {
                    key: Bytes::copy_from_slice(key),
                    range_end: Bytes::copy_from_slice(end),
                    ..Default::default()
                },
            )
            .count
        };
        assert_eq!(n(b"a", b""), 1);
        assert_eq!(n(b"a", &crate::types::prefix_end(b"a")), 3);
        assert_eq!(n(b"ab", b"\0"), 4);
        assert_eq!(n(b"\0", b"\0"), 5);
        assert_eq!(n(b"\xff", &crate::types::prefix_end(b"\xff")), 1);
        assert_eq!(n(b"b", b"a"), 0);
        assert_eq!(n(b"c", b""), 0);
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_it_need() {
        let mut s = Reference::new();
        s.apply(&put("a", "1")); // 2
        s.apply(&put("a", "2")); // 3
        s.apply(&put("b", "1")); // 4
        s.apply(&del("b", "")); // 5
        s.apply(&put("c", "1")); // 6
        s.apply(&put("a", "3")); // 7
        let at5 = range(
            &s,
            RangeRequest {
                revision: 5,
                ..all(0)
            },
        );
        let at6 = range(
            &s,
            RangeRequest {
                revision: 6,
                ..all(0)
            },
        );
        let compact = |r| Command::Compact {
            revision: r,
            physical: true,
        };
        let a = s.apply(&compact(5));
        assert_eq!((a.revision, a.result), (7, Ok(Response::Compacted)));
        assert_eq!(s.compact_revision(), 5);
        // a@2 goes (a@3 is a's latest at 5); b's put and its tombstone at 5 go.
        assert_eq!(stored(&s), [("a", 3), ("a", 7), ("c", 6)]);
        // Reading at the compaction revision is allowed, below it is not.
        assert_eq!(
            range(
                &s,
                RangeRequest {
                    revision: 5,
                    ..all(0)
                }
            ),
            at5
        );
        assert_eq!(
            range(
                &s,
                RangeRequest {
                    revision: 6,
                    ..all(0)
                }
            ),
            at6
        );
        assert_eq!(at5.count, 1);
        assert_eq!(get_at(&s, "a", 4), Err(StoreError::Compacted));
        assert_eq!(s.hash(4), Err(StoreError::Compacted));
        assert!(s.hash(5).is_ok());
        assert_eq!(s.hash(8), Err(StoreError::FutureRevision));
        // Compacting again at or below, or in the future, is refused.
        for (r, e) in [
            (5, StoreError::Compacted),
            (4, StoreError::Compacted),
            (8, StoreError::FutureRevision),
        ] {
            assert_eq!(s.apply(&compact(r)).result, Err(e), "compact {r}");
        }
        // At the current revision: every key keeps its latest live version only.
        assert!(s.apply(&compact(7)).result.is_ok());
        assert_eq!(stored(&s), [("a", 7), ("c", 6)]);
        // The compaction revision starts at 0 (etcd's -1 would accept Compact(0) once).
        let mut fresh = Reference::new();
        assert_eq!(fresh.apply(&compact(0)).result, Err(StoreError::Compacted));
        assert_eq!(fresh.apply(&compact(1)).result, Ok(Response::Compacted));
        // A tombstone above the compaction revision stays.
        let mut s = Reference::new();
        s.apply(&put("a", "1")); // 2
        s.apply(&del("a", "")); // 3
        s.apply(&put("b", "1")); // 4
        assert!(s.apply(&compact(2)).result.is_ok());
        assert_eq!(stored(&s), [("a", 2), ("a", 3), ("b", 4)]);
        assert!(s.apply(&compact(3)).result.is_ok());
        assert_eq!(stored(&s), [("b", 4)]);
    }

    #[test]
    fn compares_follow_apply_compare() {
        let mut s = Reference::new();
        s.apply(&put("a", "1")); // 2
        s.apply(&put("a", "1")); // 3: version 2
        s.apply(&put("b", "10")); // 4
        let holds = |s: &mut Reference, c: Compare| {
            txn_resp(s.apply(&txn(vec![c], vec![], vec![]))).succeeded
        };
        use CompareResult::*;
        use CompareTarget as T;
        // A missing key: a VALUE compare is false whatever the result; the others
        // compare the zero KeyValue.
        assert!(!holds(&mut s, cmp("z", NotEqual, T::Value(b("x")))));
        assert!(!holds(&mut s, cmp("z", Equal, T::Value(b("")))));
        assert!(holds(&mut s, cmp("z", Equal, T::Version(0))));
        assert!(holds(&mut s, cmp("z", Less, T::Create(1))));
        assert!(holds(&mut s, cmp("z", Equal, T::Mod(0))));
        assert!(holds(&mut s, cmp("z", Equal, T::Lease(0))));
        // Values compare as bytes.
        assert!(holds(&mut s, cmp("b", Greater, T::Value(b("1")))));
        assert!(holds(&mut s, cmp("b", Less, T::Value(b("2")))));
        assert!(holds(&mut s, cmp("a", Equal, T::Version(2))));
        assert!(holds(&mut s, cmp("a", Equal, T::Create(2))));
        assert!(holds(&mut s, cmp("a", Equal, T::Mod(3))));
        // Over a range: every key must satisfy it.
        let over = |result, target| Compare {
            range_end: b("c"),
            ..cmp("a", result, target)
        };
        assert!(holds(&mut s, over(Greater, T::Version(0))));
        assert!(!holds(&mut s, over(Equal, T::Version(2))));
        assert!(holds(&mut s, over(NotEqual, T::Value(b("2")))));
        assert!(!holds(&mut s, over(Equal, T::Value(b("1")))));
        // An empty range: as a missing key.
        let none = Compare {
            range_end: b("bb"),
            ..cmp("ba", Equal, T::Version(0))
        };
        assert!(holds(&mut s, none));
    }

    #[test]
    fn the_whole_path_is_decided_before_the_txn_runs() {
        use CompareResult::*;
        use CompareTarget as T;
        let mut s = Reference::new();
        s.apply(&put("a", "1")); // 2
        // The outer txn writes a first; the nested compare still sees a = 1.
        let t = txn(
            vec![cmp("a", Equal, T::Value(b("1")))],
            vec![
                op_put("a", "2"),
                op_txn(
                    vec![cmp("a", Equal, T::Value(b("1")))],
                    vec![op_put("b", "yes")],
                    vec![op_put("b", "no")],
                ),
                op_get("a", 0),
            ],
            vec![],
        );
        let a = s.apply(&t);
        assert_eq!(a.revision, 3);
        assert_eq!(
            txn_resp(a),
            TxnResponse {
                succeeded: true,
                responses: vec![
                    ResponseOp::Put(PutResponse { prev_kv: None }),
                    ResponseOp::Txn(TxnResponse {
                        succeeded: true,
                        responses: vec![ResponseOp::Put(PutResponse { prev_kv: None })],
                    }),
                    ResponseOp::Range(RangeResponse {
                        kvs: vec![kv("a", "2", 2, 3, 2)],
                        more: false,
                        count: 1,
                    }),
                ],
            }
        );
        assert_eq!(get(&s, "b").unwrap().value, b("yes"));
        // The failure branch, with a nested txn in it and one in the success branch.
        let t = txn(
            vec![cmp("a", Equal, T::Value(b("1")))],
            vec![op_txn(vec![], vec![op_put("x", "1")], vec![])],
            vec![
                op_txn(
                    vec![cmp("b", Equal, T::Value(b("no")))],
                    vec![op_put("c", "then")],
                    vec![op_put("c", "else")],
                ),
                op_txn(vec![], vec![op_put("d", "1")], vec![]),
            ],
        );
        let r = txn_resp(s.apply(&t));
        assert!(!r.succeeded);
        assert_eq!(get(&s, "x"), None);
        assert_eq!(get(&s, "c").unwrap().value, b("else"));
        assert_eq!(get(&s, "d").unwrap().mod_revision, 4);
        assert_eq!(s.revision(), 4);
    }

    #[test]
    fn reads_in_a_txn_see_its_writes_and_its_revisions_are_checked_first() {
        let mut s = Reference::new();
        s.apply(&put("a", "1")); // 2
        let t = txn(
            vec![],
            vec![
                op_put("a", "2"),
                op_get("a", 0),
                op_get("a", 2),
                op_del("a", b""),
                op_get("a", 0),
            ],
            vec![],
        );
        let r = txn_resp(s.apply(&t));
        let ranges: Vec<_> = r
            .responses
            .iter()
            .filter_map(|op| match op {
                ResponseOp::Range(r) => Some(r.kvs.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges[0], vec![kv("a", "2", 2, 3, 2)]);
        assert_eq!(ranges[1], vec![kv("a", "1", 2, 2, 1)]);
        assert!(ranges[2].is_empty());
        assert_eq!(s.revision(), 3);
        assert_eq!(get(&s, "a"), None);
        // A range at a future revision (even the one this txn writes at) or a compacted
        // one fails the whole txn, before anything is applied.
        for (revision, e) in [(4, StoreError::FutureRevision), (-1, StoreError::Compacted)] {
            let t = txn(
                vec![],
                vec![op_put("b", "1"), op_get("b", revision)],
                vec![],
            );
            let a = s.apply(&t);
            assert_eq!((a.revision, a.result), (3, Err(e)), "revision {revision}");
        }
        assert!(
            s.apply(&Command::Compact {
                revision: 3,
                physical: false
            })
            .result
            .is_ok()
        );
        let t = txn(vec![], vec![op_get("a", 2)], vec![]);
        assert_eq!(s.apply(&t).result, Err(StoreError::Compacted));
        let t = txn(vec![], vec![op_get("a", 3)], vec![]);
        assert!(s.apply(&t).result.is_ok());
    }

    #[test]
    fn txn_checks_puts_before_ranges_only_on_the_taken_path() {
        use CompareResult::*;
        use CompareTarget as T;
        let mut s = Reference::new();
        let ignore = |k: &str, lease| {
            RequestOp::Put(PutRequest {
                ignore_value: true,
                lease,
                ..preq(k, "")
            })
        };
        // The puts are checked before the ranges, whatever their order.
        let t = txn(vec![], vec![op_get("a", 99), ignore("x", 0)], vec![]);
        assert_eq!(s.apply(&t).result, Err(StoreError::KeyNotFound));
        // In a txn the key is checked before the lease; outside, the lease first.
        let t = txn(vec![], vec![ignore("x", 7)], vec![]);
        assert_eq!(s.apply(&t).result, Err(StoreError::KeyNotFound));
        let p = Command::Put(PutRequest {
            ignore_value: true,
            lease: 7,
            ..preq("x", "")
        });
        assert_eq!(s.apply(&p).result, Err(StoreError::LeaseNotFound));
        let p = Command::Put(PutRequest {
            ignore_value: true,
            ..preq("x", "")
        });
        assert_eq!(s.apply(&p).result, Err(StoreError::KeyNotFound));
        // The first failing put in op order, nested ones in their place.
        let t = txn(
            vec![],
            vec![
                op_txn(vec![], vec![op_put("y", "1"), ignore("x", 0)], vec![]),
                RequestOp::Put(PutRequest {
                    lease: 7,
                    ..preq("z", "1")
                }),
            ],
            vec![],
        );
        assert_eq!(s.apply(&t).result, Err(StoreError::KeyNotFound));
        // Untaken branches, outer or nested, are not checked.
        let t = txn(
            vec![cmp("a", Equal, T::Version(0))],
            vec![op_txn(
                vec![cmp("a", Equal, T::Version(5))],
                vec![ignore("x", 0), op_get("a", 99)],
                vec![op_put("ok", "1")],
            )],
            vec![ignore("x", 0), op_get("a", 99)],
        );
        let a = s.apply(&t);
        assert!(a.result.is_ok(), "{a:?}");
        assert_eq!((a.revision, get(&s, "ok").is_some()), (2, true));
    }

    #[test]
    fn a_put_that_needs_a_key_this_txn_deleted_fails_the_whole_txn() {
        let mut s = Reference::new();
        s.apply(&put("a", "1")); // 2
        s.apply(&put("b", "1")); // 3
        // checkIntervals sees [a, "\0") as empty, so validate lets this through; etcd
        // 3.4 would panic in applyTxn. Here: KeyNotFound and nothing changed.
        let t = TxnRequest {
            success: vec![
                op_put("c", "1"),
                op_del("a", b"\0"),
                RequestOp::Put(PutRequest {
                    ignore_value: true,
                    ..preq("b", "")
                }),
            ],
            ..Default::default()
        };
        assert_eq!(t.validate(), Ok(()));
        let before = s.hash(0).unwrap();
        let a = s.apply(&Command::Txn(t));
        assert_eq!((a.revision, a.result), (3, Err(StoreError::KeyNotFound)));
        assert_eq!(s.hash(0).unwrap(), before);
        assert_eq!(get(&s, "c"), None);
        assert!(get(&s, "a").is_some());
        // A key deleted and put again in one txn (the same loophole): a new generation.
        let t = txn(vec![], vec![op_del("a", b"\0"), op_put("b", "2")], vec![]);
        assert_eq!(s.apply(&t).revision, 4);
        assert_eq!(get(&s, "a"), None);
        assert_eq!(get(&s, "b"), Some(kv("b", "2", 4, 4, 1)));
        // Put in one nested txn, deleted in a later sibling: deleted, one record.
        let t = TxnRequest {
            success: vec![
                op_txn(vec![], vec![op_put("d", "1")], vec![]),
                op_txn(vec![], vec![op_del("d", b"")], vec![]),
            ],
            ..Default::default()
        };
        assert_eq!(t.validate(), Ok(()));
        assert_eq!(s.apply(&Command::Txn(t)).revision, 5);
        assert_eq!(get(&s, "d"), None);
        assert_eq!(get_at(&s, "d", 4), Ok(None));
        assert_eq!(stored(&s).iter().filter(|(k, _)| *k == "d").count(), 1);
    }

    #[test]
    fn leases_attach_detach_and_revoke_in_one_revision() {
        let mut s = Reference::new();
        let grant = |id, ttl| Command::LeaseGrant { id, ttl };
        assert_eq!(
            s.apply(&grant(2, 20)).result,
            Ok(Response::LeaseGranted(LeaseGrantResponse {
                id: 2,
                ttl: 20
            }))
        );
        s.apply(&grant(1, 10));
        assert_eq!(s.leases(), [1, 2]);
        for (g, e) in [
            (grant(2, 5), StoreError::LeaseExists),
            (grant(0, 5), StoreError::LeaseNotFound),
            (grant(3, LEASE_TTL_MAX + 1), StoreError::LeaseTtlTooLarge),
        ] {
            assert_eq!(s.apply(&g).result, Err(e));
        }
        s.apply(&put_lease("a", "1", 1));
        s.apply(&put_lease("b", "1", 1));
        s.apply(&put_lease("c", "1", 2));
        let keys_of = |s: &Reference, id| s.lease(id).map(|l| l.keys);
        assert_eq!(keys_of(&s, 1), Some(vec![b("a"), b("b")]));
        // Moving a key to another lease detaches it from the first.
        s.apply(&put_lease("a", "2", 2));
        assert_eq!(keys_of(&s, 1), Some(vec![b("b")]));
        assert_eq!(keys_of(&s, 2), Some(vec![b("a"), b("c")]));
        // ignore_lease keeps the lease, ignore_value the value.
        s.apply(&Command::Put(PutRequest {
            ignore_lease: true,
            ..preq("a", "3")
        }));
        assert_eq!(get(&s, "a").unwrap().lease, 2);
        s.apply(&Command::Put(PutRequest {
            ignore_value: true,
            ..preq("a", "")
        }));
        assert_eq!(get(&s, "a").unwrap().value, b("3"));
        assert_eq!(get(&s, "a").unwrap().lease, 0);
        assert_eq!(keys_of(&s, 2), Some(vec![b("c")]));
        // A delete detaches.
        s.apply(&del("b", ""));
        assert_eq!(keys_of(&s, 1), Some(vec![]));
        // Revoke: every attached key deleted at one new revision.
        s.apply(&put_lease("b", "1", 1));
        s.apply(&put_lease("d", "1", 1));
        let rev = s.revision();
        let a = s.apply(&Command::LeaseRevoke { id: 1 });
        assert_eq!(
            (a.revision, a.result),
            (rev + 1, Ok(Response::LeaseRevoked))
        );
        assert_eq!((get(&s, "b"), get(&s, "d")), (None, None));
        assert!(stored(&s).contains(&("b", rev + 1)) && stored(&s).contains(&("d", rev + 1)));
        assert_eq!(s.lease(1), None);
        assert_eq!(s.leases(), [2]);
        let a = s.apply(&Command::LeaseRevoke { id: 1 });
        assert_eq!(
            (a.revision, a.result),
            (rev + 1, Err(StoreError::LeaseNotFound))
        );
        // A lease without keys: no revision.
        s.apply(&grant(5, 10));
        let a = s.apply(&Command::LeaseRevoke { id: 5 });
        assert_eq!(
            (a.revision, a.result),
            (rev + 1, Ok(Response::LeaseRevoked))
        );
        assert_eq!(
            s.lease(2),
            Some(LeaseInfo {
                id: 2,
                ttl: 20,
                remaining_ttl: None,
                keys: vec![b("c")]
            })
        );
    }

    #[test]
    fn nospace_refuses_puts_top_level_txn_puts_and_grants_only() {
        let mut s = Reference::new();
        s.apply(&Command::LeaseGrant { id: 1, ttl: 10 });
        s.apply(&put_lease("a", "1", 1)); // 2
        s.apply(&put("b", "1")); // 3
        assert_eq!(
            s.apply(&Command::Alarm { nospace: true }).result,
            Ok(Response::Done)
        );
        assert!(s.alarm());
        // Before any other check.
        assert_eq!(
            s.apply(&put_lease("x", "1", 9)).result,
            Err(StoreError::NoSpace)
        );
        assert_eq!(
            s.apply(&Command::LeaseGrant { id: 1, ttl: 10 }).result,
            Err(StoreError::NoSpace)
        );
        // A put directly in either branch, taken or not.
        let t = txn(
            vec![cmp("a", CompareResult::Equal, CompareTarget::Version(1))],
            vec![op_get("a", 0)],
            vec![op_put("x", "1")],
        );
        assert_eq!(s.apply(&t).result, Err(StoreError::NoSpace));
        // A put nested deeper costs nothing (quota.go costTxn) and is applied.
        let t = txn(
            vec![],
            vec![op_txn(vec![], vec![op_put("x", "1")], vec![])],
            vec![],
        );
        assert_eq!(s.apply(&t).revision, 4);
        assert!(get(&s, "x").is_some());
        // Deletes, revokes and compaction go on.
        assert_eq!(s.apply(&del("b", "")).revision, 5);
        assert_eq!(
            s.apply(&txn(vec![], vec![op_del("x", b"")], vec![]))
                .revision,
            6
        );
        assert_eq!(s.apply(&Command::LeaseRevoke { id: 1 }).revision, 7);
        assert!(
            s.apply(&Command::Compact {
                revision: 7,
                physical: false
            })
            .result
            .is_ok()
        );
        s.apply(&Command::Alarm { nospace: false });
        assert_eq!(s.apply(&put("y", "1")).revision, 8);
    }

    #[test]
    fn hashes_add_up_the_records_at_or_below_a_revision() {
        let cmds = [
            put("a", "1"),
            Command::LeaseGrant { id: 3, ttl: 5 },
            put_lease("b", "", 3),
            del("a", ""),
            put("a", "2"),
            Command::LeaseRevoke { id: 3 },
        ];
        let mut s = Reference::new();
        let mut at = vec![(s.revision(), s.hash(0).unwrap())];
        for c in &cmds {
            s.apply(c);
            at.push((s.revision(), s.hash(0).unwrap()));
        }
        assert_eq!(s.hash(0), s.hash(s.revision()));
        assert_eq!(at[0].1, 0);
        // The hash at a past revision is the hash of the store as it was then.
        for (rev, h) in &at {
            assert_eq!(s.hash(*rev), Ok(*h), "revision {rev}");
        }
        // Same history, same hash; a value, lease or order of events changed: another.
        let mut t = Reference::new();
        for c in &cmds {
            t.apply(c);
        }
        assert_eq!(t.hash(0), s.hash(0));
        let mut u = Reference::new();
        for c in &cmds[..4] {
            u.apply(c);
        }
        u.apply(&put("a", "3"));
        assert_eq!(u.hash(4), s.hash(4));
        assert_ne!(u.hash(5), s.hash(5));
        // The expected value, written out.
        let want = [
            record_hash(b"a", 2, 2, 1, 0, Some(b"1")),
            record_hash(b"b", 3, 3, 1, 3, Some(b"")),
            record_hash(b"a", 4, 0, 0, 0, None),
            record_hash(b"a", 5, 5, 1, 0, Some(b"2")),
            record_hash(b"b", 6, 0, 0, 0, None),
        ]
        .iter()
        .fold(0u64, |h, x| h.wrapping_add(*x));
        assert_eq!(s.hash(0), Ok(want));
    }

    fn valid(success: Vec<RequestOp>) -> Result<(), StoreError> {
        TxnRequest {
            success,
            ..Default::default()
        }
        .validate()
    }

    #[test]
    fn validate_refuses_a_key_written_twice_on_one_path() {
        let dup = Err(StoreError::DuplicateKey);
        let nested = |success, failure| op_txn(vec![], success, failure);
        assert_eq!(valid(vec![op_put("a", "1"), op_put("a", "2")]), dup);
        assert_eq!(valid(vec![op_put("a", "1"), op_del("a", b"")]), dup);
        assert_eq!(valid(vec![op_del("a", b"c"), op_put("b", "1")]), dup);
        assert_eq!(valid(vec![op_del("a", b"c"), op_put("c", "1")]), Ok(()));
        // A delete's range_end of [0] is the interval [key, "\0"): empty to checkIntervals.
        assert_eq!(valid(vec![op_del("a", b"\0"), op_put("b", "1")]), Ok(()));
        // Deletes may overlap deletes.
        assert_eq!(valid(vec![op_del("a", b"c"), op_del("b", b"")]), Ok(()));
        // Nested: against the puts and deletes around them.
        assert_eq!(
            valid(vec![
                nested(vec![op_put("a", "1")], vec![]),
                op_put("a", "2")
            ]),
            dup
        );
        assert_eq!(
            valid(vec![
                op_del("a", b""),
                nested(vec![op_put("a", "1")], vec![])
            ]),
            dup
        );
        assert_eq!(
            valid(vec![
                nested(vec![op_del("a", b"")], vec![]),
                op_put("a", "1")
            ]),
            dup
        );
        assert_eq!(
            valid(vec![
                nested(vec![op_put("a", "1")], vec![]),
                nested(vec![op_put("a", "2")], vec![]),
            ]),
            dup
        );
        assert_eq!(
            valid(vec![
                nested(vec![op_del("a", b"")], vec![]),
                nested(vec![op_put("a", "2")], vec![]),
            ]),
            dup
        );
        // A put in an earlier sibling and a delete in a later one pass (etcd's order).
        assert_eq!(
            valid(vec![
                nested(vec![op_put("a", "1")], vec![]),
                nested(vec![op_del("a", b"")], vec![]),
            ]),
            Ok(())
        );
        // Only one branch of a nested txn runs: the same key in both is fine, and so is
        // the same key in the outer success and failure branches.
        assert_eq!(
            valid(vec![nested(vec![op_put("a", "1")], vec![op_put("a", "2")])]),
            Ok(())
        );
        assert_eq!(
            TxnRequest {
                success: vec![op_put("a", "1")],
                failure: vec![op_put("a", "2")],
                ..Default::default()
            }
            .validate(),
            Ok(())
        );
        // ... but a key put in one branch of a nested txn and by a sibling is not.
        assert_eq!(
            valid(vec![
                nested(vec![], vec![op_put("a", "1")]),
                nested(vec![op_put("a", "2")], vec![]),
            ]),
            dup
        );
    }

    #[test]
    fn validate_counts_ops_per_level_with_nested_budgets() {
        let many = |n: usize| -> Vec<RequestOp> {
            (0..n).map(|i| op_put(&format!("k{i}"), "v")).collect()
        };
        let too_many = Err(StoreError::TooManyOps);
        assert_eq!(valid(many(TXN_OPS_MAX)), Ok(()));
        assert_eq!(valid(many(TXN_OPS_MAX + 1)), too_many);
        let compares = |n: usize| -> Vec<Compare> {
            (0..n)
                .map(|_| cmp("a", CompareResult::Equal, CompareTarget::Version(0)))
                .collect()
        };
        let t = |compare, success| TxnRequest {
            compare,
            success,
            failure: vec![],
        };
        assert_eq!(t(compares(TXN_OPS_MAX + 1), vec![]).validate(), too_many);
        // The largest of compares, success and failure counts, not their sum.
        assert_eq!(
            t(compares(TXN_OPS_MAX), many(TXN_OPS_MAX)).validate(),
            Ok(())
        );
        // A nested txn gets what its parent's count leaves: 100 ops leave 28.
        let gets = |n: usize| -> Vec<RequestOp> { (0..n).map(|_| op_get("a", 0)).collect() };
        let with_nested = |inner: usize| {
            let mut ops = gets(99);
            ops.push(op_txn(vec![], gets(inner), vec![]));
            valid(ops)
        };
        assert_eq!(with_nested(28), Ok(()));
        assert_eq!(with_nested(29), too_many);
        // 128 compares leave nothing: an empty nested txn passes, one with an op not.
        assert_eq!(
            t(compares(TXN_OPS_MAX), vec![op_txn(vec![], vec![], vec![])]).validate(),
            Ok(())
        );
        assert_eq!(
            t(compares(TXN_OPS_MAX), vec![op_txn(vec![], gets(1), vec![])]).validate(),
            too_many
        );
        // Each op's own checks, nested ones too.
        let nested_put =
            |p: PutRequest| valid(vec![op_txn(vec![], vec![RequestOp::Put(p)], vec![])]);
        assert_eq!(
            nested_put(PutRequest {
                ignore_value: true,
                ..preq("a", "v")
            }),
            Err(StoreError::ValueProvided)
        );
        assert_eq!(
            nested_put(PutRequest {
                ignore_lease: true,
                lease: 1,
                ..preq("a", "")
            }),
            Err(StoreError::LeaseProvided)
        );
        assert_eq!(nested_put(preq("", "v")), Err(StoreError::EmptyKey));
        assert_eq!(
            t(
                vec![cmp("", CompareResult::Equal, CompareTarget::Version(0))],
                vec![]
            )
            .validate(),
            Err(StoreError::EmptyKey)
        );
        // The op count is checked before the keys.
        let mut ops = many(TXN_OPS_MAX + 1);
        ops.push(op_put("", "v"));
        assert_eq!(valid(ops), too_many);
    }

    // The cases of etcd's own integration tests (integration/v3_grpc_test.go:
    // TestV3RangeRequest, TestV3DeleteRange, TestV3TxnInvalidRange, TestV3TxnRevision,
    // TestV3PutMissingLease, TestV3TxnDuplicateKeys) and key_index.go's compaction
    // example, replayed on the model.

    fn with_keys(keys: &[&str]) -> Reference {
        let mut s = Reference::new();
        for k in keys {
            s.apply(&put(k, "bar"));
        }
        s
    }

    fn span(k: &[u8], end: &[u8]) -> RangeRequest {
        RangeRequest {
            key: Bytes::copy_from_slice(k),
            range_end: Bytes::copy_from_slice(end),
            ..Default::default()
        }
    }

    #[test]
    fn etcd_range_request_cases() {
        let check = |puts: &[&str], reqs: Vec<(RangeRequest, &[&str], bool)>| {
            let s = with_keys(puts);
            for (i, (req, want, more)) in reqs.into_iter().enumerate() {
                let (rev, r) = s.range(&req).unwrap();
                assert_eq!((keys(&r), r.more), (want.to_vec(), more), "{puts:?} #{i}");
                assert_eq!(rev, puts.len() as i64 + 1);
            }
        };
        let sorted = |order, target, limit| RangeRequest {
            sort_order: order,
            sort_target: target,
            limit,
            ..span(b"a", b"z")
        };
        let everything = || span(&[0], &[0]);
        check(
            &["foo", "bar"],
            vec![
                (span(b"foo", b""), &["foo"], false),
                (span(b"baz", b""), &[], false),
            ],
        );
        let abcde = ["a", "b", "c", "d", "e"];
        check(
            &["a", "b", "c", "d", "e"],
            vec![
                (span(b"a", b"z"), &abcde, false),
                (span(b"b", b"d"), &["b", "c"], false),
                (span(b"f", b"z"), &[], false),
                (span(b"c", b"c"), &[], false),
                (span(b"d", b"b"), &[], false),
                (everything(), &abcde, false),
            ],
        );
        let at = |revision| RangeRequest {
            revision,
            ..span(b"a", b"z")
        };
        check(
            &["a", "b", "c", "d", "e"],
            vec![
                (at(0), &abcde, false),
                (at(1), &[], false),
                (at(2), &["a"], false),
                (at(3), &["a", "b"], false),
            ],
        );
        let limited = |limit| RangeRequest {
            limit,
            ..span(b"a", b"z")
        };
        check(
            &["foo", "bar"],
            vec![
                (limited(1), &["bar"], true),
                (limited(2), &["bar", "foo"], false),
            ],
        );
        use SortOrder::*;
        use SortTarget::*;
        check(
            &["b", "a", "c", "d", "c"],
            vec![
                (sorted(Ascend, Key, 1), &["a"], true),
                (sorted(Descend, Key, 1), &["d"], true),
                (sorted(Ascend, Create, 1), &["b"], true),
                (sorted(Descend, Mod, 1), &["c"], true),
                (
                    RangeRequest {
                        key: b("z"),
                        ..sorted(Descend, Create, 1)
                    },
                    &[],
                    false,
                ),
                (sorted(None, Create, 10), &["b", "a", "c", "d"], false),
            ],
        );
        let filtered = |min_mod, max_mod, min_create, max_create| RangeRequest {
            min_mod_revision: min_mod,
            max_mod_revision: max_mod,
            min_create_revision: min_create,
            max_create_revision: max_create,
            ..everything()
        };
        check(
            &["rev2", "rev3", "rev4", "rev5", "rev6"],
            vec![
                (
                    filtered(3, 0, 0, 0),
                    &["rev3", "rev4", "rev5", "rev6"],
                    false,
                ),
                (filtered(0, 3, 0, 0), &["rev2", "rev3"], false),
                (filtered(3, 5, 0, 0), &["rev3", "rev4", "rev5"], false),
                (
                    filtered(0, 10, 0, 0),
                    &["rev2", "rev3", "rev4", "rev5", "rev6"],
                    false,
                ),
            ],
        );
        check(
            &["rev2", "rev3", "rev2", "rev2", "rev6", "rev3"],
            vec![
                (filtered(0, 0, 3, 0), &["rev3", "rev6"], false),
                (filtered(0, 0, 0, 3), &["rev2", "rev3"], false),
                (filtered(0, 0, 3, 5), &["rev3"], false),
                (filtered(0, 0, 0, 10), &["rev2", "rev3", "rev6"], false),
            ],
        );
    }

    #[test]
    fn etcd_delete_range_cases() {
        let three = ["foo", "foo/abc", "fop"];
        for (set, begin, end, prev_kv, left, deleted) in [
            (&three[..], "foo/", "fop", false, &["foo", "fop"][..], 1),
            (&three, "foo/", "foo/", false, &three, 0),
            (&three, "fo", "fop", false, &["fop"], 2),
            (&three, "foo/", "fos", false, &["foo"], 2),
            (&three, "foo/abc", "", false, &["foo", "fop"], 1),
            (&["foo"], "foo", "foo", false, &["foo"], 0),
            (&three, "foo/", "fop", true, &["foo", "fop"], 1),
        ] {
            let mut s = with_keys(set);
            let a = s.apply(&Command::DeleteRange(DeleteRangeRequest {
                key: b(begin),
                range_end: b(end),
                prev_kv,
            }));
            let Ok(Response::DeleteRange(d)) = a.result else {
                panic!("{a:?}")
            };
            assert_eq!(d.deleted, deleted, "{begin}..{end}");
            assert_eq!(d.prev_kvs.len() as i64, if prev_kv { deleted } else { 0 });
            let (rev, r) = s.range(&span(&[0], &[0xff])).unwrap();
            assert_eq!((keys(&r), rev), (left.to_vec(), a.revision));
        }
    }

    #[test]
    fn etcd_txn_invalid_range_revision_and_missing_lease_cases() {
        let foo = || op_put("foo", "bar");
        let mut s = with_keys(&["foo", "foo", "foo"]);
        let compact = Command::Compact {
            revision: 2,
            physical: false,
        };
        assert!(s.apply(&compact).result.is_ok());
        let t = |revision| txn(vec![], vec![foo(), op_get("foo", revision)], vec![]);
        assert_eq!(s.apply(&t(100)).result, Err(StoreError::FutureRevision));
        assert_eq!(s.apply(&t(1)).result, Err(StoreError::Compacted));
        // The header revision of a read-only txn, of one whose delete matches nothing, of
        // one that puts.
        let mut s = with_keys(&["abc"]);
        assert_eq!(
            s.apply(&txn(vec![], vec![op_get("abc", 0)], vec![]))
                .revision,
            2
        );
        assert_eq!(
            s.apply(&txn(vec![], vec![op_del("def", b"")], vec![]))
                .revision,
            2
        );
        assert_eq!(
            s.apply(&txn(vec![], vec![op_put("abc", "123")], vec![]))
                .revision,
            3
        );
        // A missing lease: refused in a put, in a txn's success or taken failure branch,
        // ignored in an untaken one.
        let mut s = Reference::new();
        let bad = PutRequest {
            lease: 123456,
            ..preq("foo", "")
        };
        let created = cmp("bar", CompareResult::Greater, CompareTarget::Create(0));
        assert_eq!(
            s.apply(&Command::Put(bad.clone())).result,
            Err(StoreError::LeaseNotFound)
        );
        for t in [
            txn(vec![], vec![RequestOp::Put(bad.clone())], vec![]),
            txn(
                vec![created.clone()],
                vec![],
                vec![RequestOp::Put(bad.clone())],
            ),
        ] {
            assert_eq!(s.apply(&t).result, Err(StoreError::LeaseNotFound));
        }
        let t = txn(vec![], vec![op_get("bar", 0)], vec![RequestOp::Put(bad)]);
        assert!(s.apply(&t).result.is_ok());
        assert_eq!(get(&s, "foo"), None);
    }

    #[test]
    fn etcd_key_index_compaction_example() {
        // key_index.go's example, one revision later (a store starts at 1): put 2, put 3,
        // delete 4, put 5, delete 6; compacting at 3, 5, 6 keeps {3, 4t, 5, 6t}, {5, 6t}, {}.
        for (at, want) in [
            (3, &[("k", 3), ("k", 4), ("k", 5), ("k", 6)][..]),
            (5, &[("k", 5), ("k", 6)]),
            (6, &[]),
        ] {
            let mut s = Reference::new();
            for c in [
                put("k", "1"),
                put("k", "2"),
                del("k", ""),
                put("k", "3"),
                del("k", ""),
            ] {
                s.apply(&c);
            }
            let compact = Command::Compact {
                revision: at,
                physical: true,
            };
            assert!(s.apply(&compact).result.is_ok());
            assert_eq!(stored(&s), want, "compact {at}");
        }
    }

    #[test]
    fn etcd_txn_duplicate_key_cases() {
        let put = || op_put("abc", "def");
        let del_key = || op_del("abc", b"");
        let del_in = || op_del("a", b"b");
        let del_out = || op_del("abb", b"abc");
        let dup = Err(StoreError::DuplicateKey);
        assert_eq!(valid(vec![put(), put()]), dup);
        assert_eq!(valid(vec![put(), del_key()]), dup);
        assert_eq!(valid(vec![put(), del_in()]), dup);
        assert_eq!(
            valid(vec![del_key(), del_in(), del_key(), del_in()]),
            Ok(())
        );
        assert_eq!(valid(vec![put(), del_out()]), Ok(()));
    }
}
