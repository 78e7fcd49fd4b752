//! Where members live: the node's address book in the log and in snapshots.
//!
//! Pure data, used by the raft core. The Raft core knows members by id only; a node that
//! joins later tells the cluster its address, and every node must know it (any of them may
//! lead). So the leader logs an *address entry* just before the membership change that adds
//! the node; nodes read address entries as they append them (not when they commit: the
//! membership change that follows takes effect on append) and on restart from the log and
//! the snapshot. Must not touch sockets or files.
//!
//! Address entry payload: `[0x80][op u8 = 1][node id u64][len u16][address utf8]` (a
//! client command starts with its version byte 1, so the two never mix).
//! Node snapshot body: `[magic "RKVN"][version u8 = 1][n u32][n x (id u64, len u16,
//! address)][key-value body (shard::Snapshot)]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use ringkv_raft::NodeId;

/// First byte of a node meta entry.
pub const META_TAG: u8 = 0x80;
const OP_ADDRESS: u8 = 1;
const SNAP_MAGIC: &[u8; 4] = b"RKVN";

/// The payload of an address entry.
pub fn encode_address(id: NodeId, addr: SocketAddr) -> Bytes {
    let a = addr.to_string();
    let mut b = BytesMut::with_capacity(12 + a.len());
    b.put_u8(META_TAG);
    b.put_u8(OP_ADDRESS);
    b.put_u64_le(id);
    b.put_u16_le(a.len() as u16);
    b.put_slice(a.as_bytes());
    b.freeze()
}

/// An address entry's (id, address); `None` when `data` is not a node meta entry.
pub fn decode_address(data: &[u8]) -> Option<Result<(NodeId, SocketAddr), String>> {
    if data.first() != Some(&META_TAG) {
        return None;
    }
    let mut b = &data[1..];
    Some((|| {
        if b.remaining() < 11 {
            return Err("address entry cut off".to_string());
        }
        let op = b.get_u8();
        if op != OP_ADDRESS {
            return Err(format!("node meta operation {op} is unknown"));
        }
        let id = b.get_u64_le();
        let n = b.get_u16_le() as usize;
        if b.remaining() != n {
            return Err("address entry length disagrees".to_string());
        }
        let s = std::str::from_utf8(b).map_err(|e| format!("address: {e}"))?;
        let addr = s.parse().map_err(|e| format!("address {s:?}: {e}"))?;
        Ok((id, addr))
    })())
}

/// A node snapshot body: the address book, then the key-value body.
pub fn encode_snapshot(book: &BTreeMap<NodeId, SocketAddr>, kv: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + book.len() * 32 + kv.len());
    out.put_slice(SNAP_MAGIC);
    out.put_u8(1);
    out.put_u32_le(book.len() as u32);
    for (id, addr) in book {
        let a = addr.to_string();
        out.put_u64_le(*id);
        out.put_u16_le(a.len() as u16);
        out.put_slice(a.as_bytes());
    }
    out.put_slice(kv);
    out
}

/// The address book and the key-value body of a node snapshot.
pub fn decode_snapshot(data: &[u8]) -> Result<(BTreeMap<NodeId, SocketAddr>, &[u8]), String> {
    let mut b = data;
    if b.remaining() < 9 || &b[..4] != SNAP_MAGIC {
        return Err("not a node snapshot (magic)".into());
    }
    b.advance(4);
    let v = b.get_u8();
    if v != 1 {
        return Err(format!("node snapshot version {v} is unknown"));
    }
    let n = b.get_u32_le();
    let mut book = BTreeMap::new();
    for i in 0..n {
        if b.remaining() < 10 {
            return Err(format!("address {i} cut off"));
        }
        let id = b.get_u64_le();
        let len = b.get_u16_le() as usize;
        if b.remaining() < len {
            return Err(format!("address {i} runs past the end"));
        }
        let s = std::str::from_utf8(&b[..len]).map_err(|e| format!("address {i}: {e}"))?;
        book.insert(
            id,
            s.parse().map_err(|e| format!("address {i} {s:?}: {e}"))?,
        );
        b.advance(len);
    }
    Ok((book, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_entries_and_snapshots_round_trip_and_damage_is_named() {
        let a: SocketAddr = "127.0.0.1:9084".parse().unwrap();
        let e = encode_address(4, a);
        assert_eq!(decode_address(&e), Some(Ok((4, a))));
        // A client command (version byte 1) is not a meta entry.
        assert_eq!(decode_address(&[1, 1, 0, 0]), None);
        assert!(decode_address(&e[..e.len() - 1]).unwrap().is_err());
        let mut book = BTreeMap::new();
        book.insert(1, "127.0.0.1:9081".parse().unwrap());
        book.insert(4, a);
        let s = encode_snapshot(&book, b"kv-body");
        let (b2, kv) = decode_snapshot(&s).unwrap();
        assert_eq!((b2, kv), (book, &b"kv-body"[..]));
        assert!(decode_snapshot(&s[..10]).is_err());
        assert!(decode_snapshot(b"nope").is_err());
    }
}
