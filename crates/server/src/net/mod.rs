//! Client and peer networking.
//!
//! Owns connections and framing on each pinned executor (the connection tasks arrive with
//! the node). Must not touch the Raft core or a shard's state directly: it hands requests
//! on through bounded channels.
//!
//! - `call`: a client call as the node carries it out, whatever protocol it came by.
//! - `etcd`: etcd's v3 messages to store requests, store answers to etcd's messages.
//! - `gateway`: etcd's v3 JSON gateway on the HTTP port: `/v3/` routes to gRPC methods,
//!   JSON bodies to protobuf and back, the gateway's error and stream renderings.
//! - `http2`: the server side of HTTP/2 as gRPC uses it, as a pure state machine (frames,
//!   HPACK, streams, flow control).
//! - `http`: the curl API: request parsing with limits, routes, JSON replies; and the
//!   metrics port's parsing (`GET /metrics` only).
//! - `peer`: the peer transport (handshake, per-peer queues, reconnects) on glommio sockets.
//! - `wire`: Raft messages as rkyv archives, validated in place, payloads sliced from the
//!   receive buffer.

pub mod call;
pub mod etcd;
pub mod gateway;
pub mod http;
pub mod http2;
pub mod peer;
pub mod wire;
