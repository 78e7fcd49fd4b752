//! The log payload of a store write: a stable, versioned binary encoding.
//!
//! Pure data. Entries stay in the WAL and in snapshots across versions, so the format is
//! explicit and every length is checked against the buffer on decoding. Version 2 carries
//! every operation of the etcd data model; version 1 payloads (put and delete of one key,
//! written before it) still decode, as the same operations.
//!
//! Layout (little endian): `[version u8 = 2][op u8][fields...]`; bytes fields are
//! `[len u32][bytes]`, integers `i64`, flags one byte each, lists `[count u32][items]`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, LeaseId, PutRequest, RangeRequest,
    RequestOp, Revision, SortOrder, SortTarget, TxnRequest,
};

const V1: u8 = 1;
const V2: u8 = 2;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_TXN: u8 = 3;
const OP_COMPACT: u8 = 4;
const OP_LEASE_GRANT: u8 = 5;
const OP_LEASE_REVOKE: u8 = 6;
const OP_LEASE_CHECKPOINT: u8 = 7;
const OP_ALARM: u8 = 8;
const OP_RANGE: u8 = 9;

/// Nesting depth of txns a payload may carry (etcd's ops limit keeps real ones far below).
pub const TXN_DEPTH_MAX: usize = 64;

/// A store write as it travels through the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact {
        revision: Revision,
        physical: bool,
    },
    /// `id` and `ttl` are final: the proposer chose the id and raised the TTL to the
    /// minimum, so every replica applies the same values.
    LeaseGrant {
        id: LeaseId,
        ttl: i64,
    },
    LeaseRevoke {
        id: LeaseId,
    },
    /// Remaining TTLs the leader recorded, so that a new leader does not restart a
    /// lease's countdown from its full TTL (etcd's lease checkpoints).
    LeaseCheckpoint {
        checkpoints: Vec<(LeaseId, i64)>,
    },
    /// Raise (true) or disarm (false) the NOSPACE alarm.
    Alarm {
        nospace: bool,
    },
}

/// A payload that is not a command of this format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandError(pub String);

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad command payload: {}", self.0)
    }
}

impl std::error::Error for CommandError {}

impl Command {
    pub fn encode(&self) -> Bytes {
        // Sized up front: growing the buffer copied every value once or twice.
        let mut b = BytesMut::with_capacity(2 + self.encoded_len_bound());
        b.put_u8(V2);
        match self {
            Command::Put(p) => {
                b.put_u8(OP_PUT);
                put_put(&mut b, p);
            }
            Command::DeleteRange(d) => {
                b.put_u8(OP_DELETE);
                put_delete(&mut b, d);
            }
            Command::Txn(t) => {
                b.put_u8(OP_TXN);
                put_txn(&mut b, t);
            }
            Command::Compact { revision, physical } => {
                b.put_u8(OP_COMPACT);
                b.put_i64_le(*revision);
                b.put_u8(*physical as u8);
            }
            Command::LeaseGrant { id, ttl } => {
                b.put_u8(OP_LEASE_GRANT);
                b.put_i64_le(*id);
                b.put_i64_le(*ttl);
            }
            Command::LeaseRevoke { id } => {
                b.put_u8(OP_LEASE_REVOKE);
                b.put_i64_le(*id);
            }
            Command::LeaseCheckpoint { checkpoints } => {
                b.put_u8(OP_LEASE_CHECKPOINT);
                b.put_u32_le(checkpoints.len() as u32);
                for (id, ttl) in checkpoints {
                    b.put_i64_le(*id);
                    b.put_i64_le(*ttl);
                }
            }
            Command::Alarm { nospace } => {
                b.put_u8(OP_ALARM);
                b.put_u8(*nospace as u8);
            }
        }
        debug_assert!(b.len() <= 2 + self.encoded_len_bound(), "bound too low");
        b.freeze()
    }

    /// At least the bytes `encode` writes after the version and operation bytes (an upper
    /// bound, so the buffer never grows).
    fn encoded_len_bound(&self) -> usize {
        fn ops(o: &[RequestOp]) -> usize {
            o.iter()
                .map(|op| {
                    1 + match op {
                        RequestOp::Range(r) => RANGE_FIXED_BYTES + r.key.len() + r.range_end.len(),
                        RequestOp::Put(p) => PUT_FIXED_BYTES + p.key.len() + p.value.len(),
                        RequestOp::DeleteRange(d) => 16 + d.key.len() + d.range_end.len(),
                        RequestOp::Txn(t) => txn(t),
                    }
                })
                .sum()
        }
        fn txn(t: &TxnRequest) -> usize {
            let compares: usize = t
                .compare
                .iter()
                .map(|c| {
                    COMPARE_FIXED_BYTES
                        + c.key.len()
                        + c.range_end.len()
                        + match &c.target {
                            CompareTarget::Value(v) => v.len(),
                            _ => 0,
                        }
                })
                .sum();
            12 + compares + ops(&t.success) + ops(&t.failure)
        }
        match self {
            Command::Put(p) => PUT_FIXED_BYTES + p.key.len() + p.value.len(),
            Command::DeleteRange(d) => 16 + d.key.len() + d.range_end.len(),
            Command::Txn(t) => txn(t),
            Command::LeaseCheckpoint { checkpoints } => 4 + 16 * checkpoints.len(),
            _ => 32,
        }
    }

    /// Decodes without copying: keys and values are slices of `payload`.
    pub fn decode(payload: &Bytes) -> Result<Command, CommandError> {
        let mut r = Reader(payload.clone());
        let version = r.u8("version")?;
        let op = r.u8("operation")?;
        let cmd = match (version, op) {
            (V1, OP_PUT) => {
                let key = r.bytes("key")?;
                let value = r.bytes("value")?;
                Command::Put(PutRequest {
                    key,
                    value,
                    ..Default::default()
                })
            }
            (V1, OP_DELETE) => Command::DeleteRange(DeleteRangeRequest {
                key: r.bytes("key")?,
                ..Default::default()
            }),
            (V1, other) => return Err(CommandError(format!("operation {other} is unknown"))),
            (V2, OP_PUT) => Command::Put(r.put()?),
            (V2, OP_DELETE) => Command::DeleteRange(r.delete()?),
            (V2, OP_TXN) => Command::Txn(r.txn(0)?),
            (V2, OP_COMPACT) => Command::Compact {
                revision: r.i64("revision")?,
                physical: r.flag("physical")?,
            },
            (V2, OP_LEASE_GRANT) => Command::LeaseGrant {
                id: r.i64("lease id")?,
                ttl: r.i64("ttl")?,
            },
            (V2, OP_LEASE_REVOKE) => Command::LeaseRevoke {
                id: r.i64("lease id")?,
            },
            (V2, OP_LEASE_CHECKPOINT) => {
                let n = r.count("checkpoints", 16)?;
                let mut checkpoints = Vec::with_capacity(n);
                for _ in 0..n {
                    checkpoints.push((r.i64("lease id")?, r.i64("remaining ttl")?));
                }
                Command::LeaseCheckpoint { checkpoints }
            }
            (V2, OP_ALARM) => Command::Alarm {
                nospace: r.flag("alarm")?,
            },
            (V2, other) => return Err(CommandError(format!("operation {other} is unknown"))),
            (v, _) => return Err(CommandError(format!("format version {v} is unknown"))),
        };
        if r.0.has_remaining() {
            return Err(CommandError("trailing bytes after the command".into()));
        }
        Ok(cmd)
    }
}

/// A range request on its own (the native protocol's reads), in the same layout as a
/// txn's range op: `[version u8 = 2][fields]`.
pub fn encode_range(r: &RangeRequest) -> Bytes {
    let mut b = BytesMut::with_capacity(64 + r.key.len() + r.range_end.len());
    b.put_u8(V2);
    put_range(&mut b, r);
    b.freeze()
}

/// The inverse of `encode_range`.
pub fn decode_range(payload: &Bytes) -> Result<RangeRequest, CommandError> {
    let mut r = Reader(payload.clone());
    let v = r.u8("version")?;
    if v != V2 {
        return Err(CommandError(format!("range format version {v} is unknown")));
    }
    let req = r.range()?;
    if r.0.has_remaining() {
        return Err(CommandError("trailing bytes after the range".into()));
    }
    Ok(req)
}

pub(crate) fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_u32_le(v.len() as u32);
    b.put_slice(v);
}

/// Bytes of a put, a range and a compare besides their keys, values and range ends (upper
/// bounds for `Command::encoded_len_bound`; the encoders below write fewer).
const PUT_FIXED_BYTES: usize = 24;
const RANGE_FIXED_BYTES: usize = 80;
const COMPARE_FIXED_BYTES: usize = 32;

fn put_put(b: &mut BytesMut, p: &PutRequest) {
    put_bytes(b, &p.key);
    put_bytes(b, &p.value);
    b.put_i64_le(p.lease);
    b.put_u8(p.prev_kv as u8 | (p.ignore_value as u8) << 1 | (p.ignore_lease as u8) << 2);
}

fn put_delete(b: &mut BytesMut, d: &DeleteRangeRequest) {
    put_bytes(b, &d.key);
    put_bytes(b, &d.range_end);
    b.put_u8(d.prev_kv as u8);
}

fn put_range(b: &mut BytesMut, r: &RangeRequest) {
    put_bytes(b, &r.key);
    put_bytes(b, &r.range_end);
    for v in [
        r.limit,
        r.revision,
        r.min_mod_revision,
        r.max_mod_revision,
        r.min_create_revision,
        r.max_create_revision,
    ] {
        b.put_i64_le(v);
    }
    b.put_u8(match r.sort_order {
        SortOrder::None => 0,
        SortOrder::Ascend => 1,
        SortOrder::Descend => 2,
    });
    b.put_u8(match r.sort_target {
        SortTarget::Key => 0,
        SortTarget::Version => 1,
        SortTarget::Create => 2,
        SortTarget::Mod => 3,
        SortTarget::Value => 4,
    });
    b.put_u8(r.serializable as u8 | (r.keys_only as u8) << 1 | (r.count_only as u8) << 2);
}

fn put_txn(b: &mut BytesMut, t: &TxnRequest) {
    b.put_u32_le(t.compare.len() as u32);
    for c in &t.compare {
        b.put_u8(match c.result {
            CompareResult::Equal => 0,
            CompareResult::Greater => 1,
            CompareResult::Less => 2,
            CompareResult::NotEqual => 3,
        });
        match &c.target {
            CompareTarget::Version(v) => {
                b.put_u8(0);
                b.put_i64_le(*v);
            }
            CompareTarget::Create(v) => {
                b.put_u8(1);
                b.put_i64_le(*v);
            }
            CompareTarget::Mod(v) => {
                b.put_u8(2);
                b.put_i64_le(*v);
            }
            CompareTarget::Value(v) => {
                b.put_u8(3);
                put_bytes(b, v);
            }
            CompareTarget::Lease(v) => {
                b.put_u8(4);
                b.put_i64_le(*v);
            }
        }
        put_bytes(b, &c.key);
        put_bytes(b, &c.range_end);
    }
    for branch in [&t.success, &t.failure] {
        b.put_u32_le(branch.len() as u32);
        for op in branch {
            match op {
                RequestOp::Range(r) => {
                    b.put_u8(OP_RANGE);
                    put_range(b, r);
                }
                RequestOp::Put(p) => {
                    b.put_u8(OP_PUT);
                    put_put(b, p);
                }
                RequestOp::DeleteRange(d) => {
                    b.put_u8(OP_DELETE);
                    put_delete(b, d);
                }
                RequestOp::Txn(t) => {
                    b.put_u8(OP_TXN);
                    put_txn(b, t);
                }
            }
        }
    }
}

pub(crate) struct Reader(pub(crate) Bytes);

impl Reader {
    fn need(&self, n: usize, what: &str) -> Result<(), CommandError> {
        self.need_of(n, what, "")
    }

    /// `need` for a part of a field (`what` then `part`, e.g. "key" " length"): the message
    /// is only put together for a payload that is cut off.
    fn need_of(&self, n: usize, what: &str, part: &str) -> Result<(), CommandError> {
        if self.0.remaining() < n {
            return Err(CommandError(format!("{what}{part} is cut off")));
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, CommandError> {
        self.need(1, what)?;
        Ok(self.0.get_u8())
    }

    pub(crate) fn flag(&mut self, what: &str) -> Result<bool, CommandError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(CommandError(format!("{what} flag {v} is neither 0 nor 1"))),
        }
    }

    fn flags(&mut self, what: &str, n: u32) -> Result<u8, CommandError> {
        let v = self.u8(what)?;
        if v >> n != 0 {
            return Err(CommandError(format!("{what} has unknown bits {v:#x}")));
        }
        Ok(v)
    }

    pub(crate) fn i64(&mut self, what: &str) -> Result<i64, CommandError> {
        self.need(8, what)?;
        Ok(self.0.get_i64_le())
    }

    pub(crate) fn bytes(&mut self, what: &str) -> Result<Bytes, CommandError> {
        self.need_of(4, what, " length")?;
        let n = self.0.get_u32_le() as usize;
        if self.0.remaining() < n {
            return Err(CommandError(format!(
                "{what} of {n} bytes runs past the payload"
            )));
        }
        Ok(self.0.split_to(n))
    }

    /// A list length, checked against what the rest of the payload could hold (each item
    /// takes at least `item_bytes_min`), so a corrupt count cannot reserve memory.
    pub(crate) fn count(
        &mut self,
        what: &str,
        item_bytes_min: usize,
    ) -> Result<usize, CommandError> {
        self.need_of(4, what, " count")?;
        let n = self.0.get_u32_le() as usize;
        if n.saturating_mul(item_bytes_min) > self.0.remaining() {
            return Err(CommandError(format!(
                "{n} {what} cannot fit in the payload"
            )));
        }
        Ok(n)
    }

    fn put(&mut self) -> Result<PutRequest, CommandError> {
        let key = self.bytes("key")?;
        let value = self.bytes("value")?;
        let lease = self.i64("lease")?;
        let f = self.flags("put flags", 3)?;
        Ok(PutRequest {
            key,
            value,
            lease,
            prev_kv: f & 1 != 0,
            ignore_value: f & 2 != 0,
            ignore_lease: f & 4 != 0,
        })
    }

    fn delete(&mut self) -> Result<DeleteRangeRequest, CommandError> {
        Ok(DeleteRangeRequest {
            key: self.bytes("key")?,
            range_end: self.bytes("range end")?,
            prev_kv: self.flag("prev_kv")?,
        })
    }

    fn range(&mut self) -> Result<RangeRequest, CommandError> {
        let key = self.bytes("key")?;
        let range_end = self.bytes("range end")?;
        let mut n = [0i64; 6];
        for v in &mut n {
            *v = self.i64("range field")?;
        }
        let sort_order = match self.u8("sort order")? {
            0 => SortOrder::None,
            1 => SortOrder::Ascend,
            2 => SortOrder::Descend,
            v => return Err(CommandError(format!("sort order {v} is unknown"))),
        };
        let sort_target = match self.u8("sort target")? {
            0 => SortTarget::Key,
            1 => SortTarget::Version,
            2 => SortTarget::Create,
            3 => SortTarget::Mod,
            4 => SortTarget::Value,
            v => return Err(CommandError(format!("sort target {v} is unknown"))),
        };
        let f = self.flags("range flags", 3)?;
        Ok(RangeRequest {
            key,
            range_end,
            limit: n[0],
            revision: n[1],
            min_mod_revision: n[2],
            max_mod_revision: n[3],
            min_create_revision: n[4],
            max_create_revision: n[5],
            sort_order,
            sort_target,
            serializable: f & 1 != 0,
            keys_only: f & 2 != 0,
            count_only: f & 4 != 0,
        })
    }

    fn txn(&mut self, depth: usize) -> Result<TxnRequest, CommandError> {
        if depth >= TXN_DEPTH_MAX {
            return Err(CommandError(format!(
                "txns nested deeper than {TXN_DEPTH_MAX}"
            )));
        }
        let n = self.count("compares", 18)?;
        let mut compare = Vec::with_capacity(n);
        for _ in 0..n {
            let result = match self.u8("compare result")? {
                0 => CompareResult::Equal,
                1 => CompareResult::Greater,
                2 => CompareResult::Less,
                3 => CompareResult::NotEqual,
                v => return Err(CommandError(format!("compare result {v} is unknown"))),
            };
            let target = match self.u8("compare target")? {
                0 => CompareTarget::Version(self.i64("compare version")?),
                1 => CompareTarget::Create(self.i64("compare create revision")?),
                2 => CompareTarget::Mod(self.i64("compare mod revision")?),
                3 => CompareTarget::Value(self.bytes("compare value")?),
                4 => CompareTarget::Lease(self.i64("compare lease")?),
                v => return Err(CommandError(format!("compare target {v} is unknown"))),
            };
            compare.push(Compare {
                result,
                target,
                key: self.bytes("compare key")?,
                range_end: self.bytes("compare range end")?,
            });
        }
        let mut branches = [Vec::new(), Vec::new()];
        for branch in &mut branches {
            let n = self.count("ops", 9)?;
            branch.reserve(n);
            for _ in 0..n {
                branch.push(match self.u8("op")? {
                    OP_RANGE => RequestOp::Range(self.range()?),
                    OP_PUT => RequestOp::Put(self.put()?),
                    OP_DELETE => RequestOp::DeleteRange(self.delete()?),
                    OP_TXN => RequestOp::Txn(self.txn(depth + 1)?),
                    v => return Err(CommandError(format!("txn op {v} is unknown"))),
                });
            }
        }
        let [success, failure] = branches;
        Ok(TxnRequest {
            compare,
            success,
            failure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn samples() -> Vec<Command> {
        let range = RangeRequest {
            key: b("a"),
            range_end: b("b"),
            limit: 3,
            revision: 7,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Value,
            keys_only: true,
            min_mod_revision: 2,
            max_create_revision: 9,
            ..Default::default()
        };
        let inner = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::NotEqual,
                target: CompareTarget::Value(b("v")),
                key: b("x"),
                range_end: Bytes::new(),
            }],
            success: vec![RequestOp::Range(range.clone())],
            failure: vec![],
        };
        vec![
            Command::Put(PutRequest {
                key: b("k"),
                value: b("v"),
                lease: 42,
                prev_kv: true,
                ignore_value: false,
                ignore_lease: true,
            }),
            Command::DeleteRange(DeleteRangeRequest {
                key: b("a"),
                range_end: Bytes::from_static(&[0]),
                prev_kv: true,
            }),
            Command::Txn(TxnRequest {
                compare: vec![
                    Compare {
                        result: CompareResult::Equal,
                        target: CompareTarget::Mod(5),
                        key: b("k"),
                        range_end: Bytes::new(),
                    },
                    Compare {
                        result: CompareResult::Less,
                        target: CompareTarget::Lease(3),
                        key: b("k"),
                        range_end: b("l"),
                    },
                ],
                success: vec![
                    RequestOp::Put(PutRequest {
                        key: b("k"),
                        value: b("w"),
                        ..Default::default()
                    }),
                    RequestOp::Txn(inner),
                ],
                failure: vec![
                    RequestOp::Range(range),
                    RequestOp::DeleteRange(DeleteRangeRequest {
                        key: b("z"),
                        ..Default::default()
                    }),
                ],
            }),
            Command::Compact {
                revision: 12,
                physical: true,
            },
            Command::LeaseGrant { id: 9, ttl: 30 },
            Command::LeaseRevoke { id: 9 },
            Command::LeaseCheckpoint {
                checkpoints: vec![(1, 5), (2, 6)],
            },
            Command::Alarm { nospace: true },
        ]
    }

    #[test]
    fn every_command_round_trips_and_every_truncation_is_refused() {
        for c in samples() {
            let e = c.encode();
            assert_eq!(Command::decode(&e).unwrap(), c);
            for cut in 0..e.len() {
                assert!(
                    Command::decode(&e.slice(..cut)).is_err(),
                    "{c:?} cut at {cut}"
                );
            }
            let mut longer = e.to_vec();
            longer.push(0);
            assert!(Command::decode(&Bytes::from(longer)).is_err());
        }
    }

    #[test]
    fn version_one_payloads_still_decode() {
        // [1][op][klen][key][vlen][value], as written before version 2.
        let put = Bytes::from_static(&[1, 1, 1, 0, 0, 0, b'k', 2, 0, 0, 0, b'v', b'w']);
        assert_eq!(
            Command::decode(&put).unwrap(),
            Command::Put(PutRequest {
                key: b("k"),
                value: b("vw"),
                ..Default::default()
            })
        );
        let del = Bytes::from_static(&[1, 2, 1, 0, 0, 0, b'k']);
        assert_eq!(
            Command::decode(&del).unwrap(),
            Command::DeleteRange(DeleteRangeRequest {
                key: b("k"),
                ..Default::default()
            })
        );
        let v3 = Bytes::from_static(&[3, 1]);
        assert_eq!(
            Command::decode(&v3).unwrap_err().0,
            "format version 3 is unknown"
        );
    }

    #[test]
    fn a_corrupt_count_is_refused_without_reserving_memory() {
        let mut b = BytesMut::new();
        b.put_u8(V2);
        b.put_u8(OP_LEASE_CHECKPOINT);
        b.put_u32_le(u32::MAX);
        let e = Command::decode(&b.freeze()).unwrap_err();
        assert!(e.0.contains("cannot fit"), "{e}");
    }

    #[test]
    fn nesting_is_bounded() {
        let mut t = TxnRequest::default();
        for _ in 0..TXN_DEPTH_MAX + 1 {
            t = TxnRequest {
                success: vec![RequestOp::Txn(t)],
                ..Default::default()
            };
        }
        let e = Command::decode(&Command::Txn(t).encode()).unwrap_err();
        assert!(e.0.contains("nested deeper"), "{e}");
    }
}
