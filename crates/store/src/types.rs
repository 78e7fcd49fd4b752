//! The etcd data model's requests, responses and errors, as the store sees them.
//!
//! Pure data, shaped after etcd's `rpc.proto` and `kv.proto` (64-bit signed integers where
//! etcd has them, so the gRPC layer maps field for field). The store fills in everything
//! but the response header's cluster id, member id and raft term, which belong to the node.

use bytes::Bytes;

/// A store revision: 1 for an empty store, +1 per change (etcd's main revision).
pub type Revision = i64;
/// A lease id; 0 means "no lease".
pub type LeaseId = i64;

/// Ops per txn (all branches, nested ones included), as etcd's `--max-txn-ops` default.
pub const TXN_OPS_MAX: usize = 128;

/// The longest lease TTL etcd grants (its lessor's `MaxLeaseTTL`), in seconds.
pub const LEASE_TTL_MAX_SECS: i64 = 9_000_000_000;

/// One key's state at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// 1 at creation, +1 per put; a deleted key starts again at 1.
    pub version: i64,
    pub value: Bytes,
    pub lease: LeaseId,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// etcd's `RangeRequest`. `range_end` empty: the one key; `[0]`: every key >= `key`;
/// otherwise `[key, range_end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    /// 0: no limit.
    pub limit: i64,
    /// <= 0: the current revision.
    pub revision: Revision,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: Revision,
    pub max_mod_revision: Revision,
    pub min_create_revision: Revision,
    pub max_create_revision: Revision,
}

impl RangeRequest {
    /// Whether a revision filter (min/max mod/create revision) is set.
    pub fn has_filters(&self) -> bool {
        self.min_mod_revision != 0
            || self.max_mod_revision != 0
            || self.min_create_revision != 0
            || self.max_create_revision != 0
    }

    /// etcd fetches only the first `limit + 1` keys in key order, and sorts and cuts
    /// those, when no sort order and no revision filter is given (its applier's Range):
    /// with a sort target other than the key, the answer is then the smallest of those
    /// keys by the target, not of the whole range. `Some(limit + 1)` in that case.
    pub fn key_window(&self) -> Option<usize> {
        (self.sort_order == SortOrder::None && !self.has_filters() && self.limit > 0)
            .then(|| self.limit as usize + 1)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` let through.
    pub more: bool,
    /// Keys in the range at the revision read (before the min/max revision filters, as etcd).
    pub count: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: Bytes,
    pub value: Bytes,
    pub lease: LeaseId,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What a compare looks at, with the operand (etcd's `target` + `target_union`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    Create(Revision),
    Mod(Revision),
    Value(Bytes),
    Lease(LeaseId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub key: Bytes,
    /// As a range's `range_end`: the compare must hold for every key in the range.
    pub range_end: Bytes,
}

impl Compare {
    /// Whether the compare holds for `kv` (etcd's apply.go `compareKV`: VALUE compares
    /// bytes lexicographically, the others integers). A missing key is compared as
    /// `KeyValue::default()` by the callers that allow it.
    pub fn holds_for(&self, kv: &KeyValue) -> bool {
        let ord = match &self.target {
            CompareTarget::Version(v) => kv.version.cmp(v),
            CompareTarget::Create(v) => kv.create_revision.cmp(v),
            CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
            CompareTarget::Value(v) => kv.value[..].cmp(&v[..]),
            CompareTarget::Lease(v) => kv.lease.cmp(v),
        };
        match self.result {
            CompareResult::Equal => ord.is_eq(),
            CompareResult::NotEqual => ord.is_ne(),
            CompareResult::Greater => ord.is_gt(),
            CompareResult::Less => ord.is_lt(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrantResponse {
    pub id: LeaseId,
    /// The TTL granted (a request below the minimum is raised to it).
    pub ttl: i64,
}

/// Errors an applied or validated request ends in. The messages are etcd's, word for word
/// (clients match them); `code` is the gRPC status etcd answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    Compacted,
    FutureRevision,
    KeyNotFound,
    LeaseNotFound,
    LeaseExists,
    DuplicateKey,
    TooManyOps,
    EmptyKey,
    ValueProvided,
    LeaseProvided,
    NoSpace,
    LeaseTtlTooLarge,
}

/// gRPC status codes used by `StoreError` (numbers as in gRPC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    InvalidArgument = 3,
    NotFound = 5,
    FailedPrecondition = 9,
    ResourceExhausted = 8,
    OutOfRange = 11,
}

impl StoreError {
    pub fn message(&self) -> &'static str {
        match self {
            StoreError::Compacted => "etcdserver: mvcc: required revision has been compacted",
            StoreError::FutureRevision => {
                "etcdserver: mvcc: required revision is a future revision"
            }
            StoreError::KeyNotFound => "etcdserver: key not found",
            StoreError::LeaseNotFound => "etcdserver: requested lease not found",
            StoreError::LeaseExists => "etcdserver: lease already exists",
            StoreError::DuplicateKey => "etcdserver: duplicate key given in txn request",
            StoreError::TooManyOps => "etcdserver: too many operations in txn request",
            StoreError::EmptyKey => "etcdserver: key is not provided",
            StoreError::ValueProvided => "etcdserver: value is provided",
            StoreError::LeaseProvided => "etcdserver: lease is provided",
            StoreError::NoSpace => "etcdserver: mvcc: database space exceeded",
            StoreError::LeaseTtlTooLarge => "etcdserver: too large lease TTL",
        }
    }

    pub fn code(&self) -> Code {
        match self {
            StoreError::Compacted | StoreError::FutureRevision => Code::OutOfRange,
            StoreError::KeyNotFound
            | StoreError::DuplicateKey
            | StoreError::TooManyOps
            | StoreError::EmptyKey
            | StoreError::ValueProvided
            | StoreError::LeaseProvided => Code::InvalidArgument,
            StoreError::LeaseNotFound => Code::NotFound,
            StoreError::LeaseExists => Code::FailedPrecondition,
            StoreError::NoSpace => Code::ResourceExhausted,
            StoreError::LeaseTtlTooLarge => Code::OutOfRange,
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for StoreError {}

/// The end of a range as the store uses it: `range_end` empty = the one key, `[0]` = no
/// end, else exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End<'a> {
    One,
    Unbounded,
    Before(&'a [u8]),
}

impl<'a> End<'a> {
    pub fn of(range_end: &'a [u8]) -> End<'a> {
        match range_end {
            [] => End::One,
            [0] => End::Unbounded,
            e => End::Before(e),
        }
    }

    /// Whether `k` (>= the range's key) is inside the range.
    pub fn admits(&self, start: &[u8], k: &[u8]) -> bool {
        match self {
            End::One => k == start,
            End::Unbounded => k >= start,
            End::Before(e) => k >= start && k < *e,
        }
    }
}

/// The range_end that makes `[prefix, end)` every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`): the prefix with its last byte below 0xff raised by one, or `[0]`
/// (every key) when there is none.
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("not empty") += 1;
            return Bytes::from(end);
        }
        end.pop();
    }
    Bytes::from_static(&[0])
}

impl RequestOp {
    /// True when the op and everything nested in it only read.
    pub fn is_read_only(&self) -> bool {
        match self {
            RequestOp::Range(_) => true,
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
            RequestOp::Txn(t) => t.is_read_only(),
        }
    }

    /// etcd's `checkRequestOp`: each op's own checks, a nested txn with what is left of
    /// the budget.
    fn validate(&self, ops_max: usize) -> Result<(), StoreError> {
        match self {
            RequestOp::Range(r) if r.key.is_empty() => Err(StoreError::EmptyKey),
            RequestOp::Put(p) => p.validate(),
            RequestOp::DeleteRange(d) if d.key.is_empty() => Err(StoreError::EmptyKey),
            RequestOp::Txn(t) => t.check(ops_max),
            _ => Ok(()),
        }
    }
}

impl TxnRequest {
    /// No op in either branch (at any depth) writes: the txn never changes the store.
    pub fn is_read_only(&self) -> bool {
        self.success
            .iter()
            .chain(&self.failure)
            .all(RequestOp::is_read_only)
    }

    /// etcd's `checkTxnRequest` with `--max-txn-ops` at its default, then `checkIntervals`
    /// on both branches: no key put twice, or put and deleted, on one path.
    pub fn validate(&self) -> Result<(), StoreError> {
        self.check(TXN_OPS_MAX)?;
        intervals(&self.success)?;
        intervals(&self.failure)?;
        Ok(())
    }

    /// The largest of compares, success and failure counts against `ops_max`; nested txns
    /// get `ops_max` less that count (etcd's rule, kept exactly).
    fn check(&self, ops_max: usize) -> Result<(), StoreError> {
        let opc = self
            .compare
            .len()
            .max(self.success.len())
            .max(self.failure.len());
        if opc > ops_max {
            return Err(StoreError::TooManyOps);
        }
        if self.compare.iter().any(|c| c.key.is_empty()) {
            return Err(StoreError::EmptyKey);
        }
        for op in self.success.iter().chain(&self.failure) {
            op.validate(ops_max - opc)?;
        }
        Ok(())
    }
}

/// A delete's interval as etcd's `checkIntervals` sees it: `[key, range_end)` compared as
/// strings (so a `range_end` of `[0]` covers nothing), or the one key.
#[derive(Clone)]
struct Interval(Bytes, Option<Bytes>);

impl Interval {
    fn covers(&self, k: &[u8]) -> bool {
        match &self.1 {
            None => self.0 == k,
            Some(end) => k >= &self.0[..] && k < &end[..],
        }
    }
}

/// etcd's `checkIntervals` for one branch: returns its puts and deletes (nested branches
/// included) or `DuplicateKey`. A key put in both branches of one nested txn is fine (only
/// one runs).
fn intervals(ops: &[RequestOp]) -> Result<(Vec<Bytes>, Vec<Interval>), StoreError> {
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) if d.range_end.is_empty() => {
                Some(Interval(d.key.clone(), None))
            }
            RequestOp::DeleteRange(d) => Some(Interval(d.key.clone(), Some(d.range_end.clone()))),
            _ => None,
        })
        .collect();
    let hit = |k: &[u8], dels: &[Interval]| dels.iter().any(|iv| iv.covers(k));
    let mut puts: Vec<Bytes> = Vec::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = intervals(&t.success)?;
        let (puts_else, dels_else) = intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || hit(k, &dels) {
                return Err(StoreError::DuplicateKey);
            }
            puts.push(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || hit(k, &dels) {
                return Err(StoreError::DuplicateKey);
            }
            if !puts.contains(k) {
                puts.push(k.clone());
            }
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || hit(&p.key, &dels) {
            return Err(StoreError::DuplicateKey);
        }
        puts.push(p.key.clone());
    }
    Ok((puts, dels))
}

impl PutRequest {
    /// etcd's `checkPutRequest`.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        if self.ignore_value && !self.value.is_empty() {
            return Err(StoreError::ValueProvided);
        }
        if self.ignore_lease && self.lease != 0 {
            return Err(StoreError::LeaseProvided);
        }
        Ok(())
    }
}

/// A store-wide write or read answered by the store (a response header's revision is
/// added by whoever answers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compacted,
    LeaseGranted(LeaseGrantResponse),
    LeaseRevoked,
    /// Entries that answer nothing (checkpoints, alarms, no-ops).
    Done,
}

/// What applying one log entry did: the store revision after it (a response header's
/// revision) and its result. A refused write changes nothing and keeps the revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub revision: Revision,
    pub result: Result<Response, StoreError>,
}

/// A lease as the store holds it (the countdown itself belongs to the leader's lessor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: LeaseId,
    /// The TTL granted, in seconds.
    pub ttl: i64,
    /// The remaining TTL of the last checkpoint, if any (seconds).
    pub remaining_ttl: Option<i64>,
    /// Keys attached to the lease, in key order.
    pub keys: Vec<Bytes>,
}
