//! Responses as bytes, for the native protocol: a stable, versioned binary encoding.
//!
//! Pure. `[version u8 = 1][kind u8][fields]` (little endian, as `command`): a key-value is
//! `[key][create i64][mod i64][version i64][value][lease i64]` with bytes as
//! `[len u32][bytes]`; lists are `[count u32][items]`; flags one byte. Decoding checks
//! every length against the buffer and refuses trailing bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::command::{CommandError, Reader, put_bytes};
use crate::types::{
    DeleteRangeResponse, KeyValue, LeaseGrantResponse, PutResponse, RangeResponse, Response,
    ResponseOp, TxnResponse,
};

const VERSION: u8 = 1;
const RANGE: u8 = 1;
const PUT: u8 = 2;
const DELETE: u8 = 3;
const TXN: u8 = 4;
const COMPACTED: u8 = 5;
const LEASE_GRANTED: u8 = 6;
const LEASE_REVOKED: u8 = 7;
const DONE: u8 = 8;

/// Nesting depth of txn responses a payload may carry.
const DEPTH_MAX: usize = crate::command::TXN_DEPTH_MAX;

pub fn encode_response(r: &Response) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u8(VERSION);
    match r {
        Response::Range(x) => {
            b.put_u8(RANGE);
            put_range(&mut b, x);
        }
        Response::Put(x) => {
            b.put_u8(PUT);
            put_put(&mut b, x);
        }
        Response::DeleteRange(x) => {
            b.put_u8(DELETE);
            put_delete(&mut b, x);
        }
        Response::Txn(x) => {
            b.put_u8(TXN);
            put_txn(&mut b, x);
        }
        Response::Compacted => b.put_u8(COMPACTED),
        Response::LeaseGranted(g) => {
            b.put_u8(LEASE_GRANTED);
            b.put_i64_le(g.id);
            b.put_i64_le(g.ttl);
        }
        Response::LeaseRevoked => b.put_u8(LEASE_REVOKED),
        Response::Done => b.put_u8(DONE),
    }
    b.freeze()
}

pub fn decode_response(payload: &Bytes) -> Result<Response, CommandError> {
    let mut r = Reader(payload.clone());
    let v = r.u8("version")?;
    if v != VERSION {
        return Err(CommandError(format!(
            "response format version {v} is unknown"
        )));
    }
    let out = match r.u8("kind")? {
        RANGE => Response::Range(range(&mut r)?),
        PUT => Response::Put(put(&mut r)?),
        DELETE => Response::DeleteRange(delete(&mut r)?),
        TXN => Response::Txn(txn(&mut r, 0)?),
        COMPACTED => Response::Compacted,
        LEASE_GRANTED => Response::LeaseGranted(LeaseGrantResponse {
            id: r.i64("lease id")?,
            ttl: r.i64("ttl")?,
        }),
        LEASE_REVOKED => Response::LeaseRevoked,
        DONE => Response::Done,
        k => return Err(CommandError(format!("response kind {k} is unknown"))),
    };
    if r.0.has_remaining() {
        return Err(CommandError("trailing bytes after the response".into()));
    }
    Ok(out)
}

fn put_kv(b: &mut BytesMut, kv: &KeyValue) {
    put_bytes(b, &kv.key);
    b.put_i64_le(kv.create_revision);
    b.put_i64_le(kv.mod_revision);
    b.put_i64_le(kv.version);
    put_bytes(b, &kv.value);
    b.put_i64_le(kv.lease);
}

fn put_kvs(b: &mut BytesMut, kvs: &[KeyValue]) {
    b.put_u32_le(kvs.len() as u32);
    for kv in kvs {
        put_kv(b, kv);
    }
}

fn put_range(b: &mut BytesMut, r: &RangeResponse) {
    put_kvs(b, &r.kvs);
    b.put_u8(r.more as u8);
    b.put_i64_le(r.count);
}

fn put_put(b: &mut BytesMut, p: &PutResponse) {
    match &p.prev_kv {
        Some(kv) => {
            b.put_u8(1);
            put_kv(b, kv);
        }
        None => b.put_u8(0),
    }
}

fn put_delete(b: &mut BytesMut, d: &DeleteRangeResponse) {
    b.put_i64_le(d.deleted);
    put_kvs(b, &d.prev_kvs);
}

fn put_txn(b: &mut BytesMut, t: &TxnResponse) {
    b.put_u8(t.succeeded as u8);
    b.put_u32_le(t.responses.len() as u32);
    for op in &t.responses {
        match op {
            ResponseOp::Range(x) => {
                b.put_u8(RANGE);
                put_range(b, x);
            }
            ResponseOp::Put(x) => {
                b.put_u8(PUT);
                put_put(b, x);
            }
            ResponseOp::DeleteRange(x) => {
                b.put_u8(DELETE);
                put_delete(b, x);
            }
            ResponseOp::Txn(x) => {
                b.put_u8(TXN);
                put_txn(b, x);
            }
        }
    }
}

fn kv(r: &mut Reader) -> Result<KeyValue, CommandError> {
    Ok(KeyValue {
        key: r.bytes("key")?,
        create_revision: r.i64("create revision")?,
        mod_revision: r.i64("mod revision")?,
        version: r.i64("version")?,
        value: r.bytes("value")?,
        lease: r.i64("lease")?,
    })
}

fn kvs(r: &mut Reader) -> Result<Vec<KeyValue>, CommandError> {
    let n = r.count("key-values", 40)?;
    (0..n).map(|_| kv(r)).collect()
}

fn range(r: &mut Reader) -> Result<RangeResponse, CommandError> {
    Ok(RangeResponse {
        kvs: kvs(r)?,
        more: r.flag("more")?,
        count: r.i64("count")?,
    })
}

fn put(r: &mut Reader) -> Result<PutResponse, CommandError> {
    Ok(PutResponse {
        prev_kv: if r.flag("has prev_kv")? {
            Some(kv(r)?)
        } else {
            None
        },
    })
}

fn delete(r: &mut Reader) -> Result<DeleteRangeResponse, CommandError> {
    Ok(DeleteRangeResponse {
        deleted: r.i64("deleted")?,
        prev_kvs: kvs(r)?,
    })
}

fn txn(r: &mut Reader, depth: usize) -> Result<TxnResponse, CommandError> {
    if depth >= DEPTH_MAX {
        return Err(CommandError(format!(
            "txn responses nested deeper than {DEPTH_MAX}"
        )));
    }
    let succeeded = r.flag("succeeded")?;
    let n = r.count("responses", 2)?;
    let mut responses = Vec::with_capacity(n);
    for _ in 0..n {
        responses.push(match r.u8("response kind")? {
            RANGE => ResponseOp::Range(range(r)?),
            PUT => ResponseOp::Put(put(r)?),
            DELETE => ResponseOp::DeleteRange(delete(r)?),
            TXN => ResponseOp::Txn(txn(r, depth + 1)?),
            k => return Err(CommandError(format!("txn response kind {k} is unknown"))),
        });
    }
    Ok(TxnResponse {
        succeeded,
        responses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str, m: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(k.as_bytes()),
            create_revision: 2,
            mod_revision: m,
            version: 3,
            value: Bytes::copy_from_slice(v.as_bytes()),
            lease: 7,
        }
    }

    #[test]
    fn every_response_round_trips_and_every_truncation_is_refused() {
        let range = RangeResponse {
            kvs: vec![kv("a", "1", 4), kv("b", "", 5)],
            more: true,
            count: 9,
        };
        let all = [
            Response::Range(range.clone()),
            Response::Put(PutResponse { prev_kv: None }),
            Response::Put(PutResponse {
                prev_kv: Some(kv("k", "v", 3)),
            }),
            Response::DeleteRange(DeleteRangeResponse {
                deleted: 2,
                prev_kvs: vec![kv("x", "y", 8)],
            }),
            Response::Txn(TxnResponse {
                succeeded: false,
                responses: vec![
                    ResponseOp::Range(range),
                    ResponseOp::Txn(TxnResponse {
                        succeeded: true,
                        responses: vec![ResponseOp::Put(PutResponse::default())],
                    }),
                    ResponseOp::DeleteRange(DeleteRangeResponse::default()),
                ],
            }),
            Response::Compacted,
            Response::LeaseGranted(LeaseGrantResponse { id: 5, ttl: 60 }),
            Response::LeaseRevoked,
            Response::Done,
        ];
        for r in all {
            let e = encode_response(&r);
            assert_eq!(decode_response(&e).unwrap(), r);
            for cut in 0..e.len() {
                assert!(
                    decode_response(&e.slice(..cut)).is_err(),
                    "{r:?} cut at {cut}"
                );
            }
        }
    }
}
