//! What crosses a ringkv node's port, shared by the server and its clients.
//!
//! Pure encoding and decoding, no I/O: used by the node's connection tasks (any executor)
//! and by the clients. Must not touch node state.
//!
//! - `admin`: operator calls (join, promote, remove, transfer leadership, snapshot).
//! - `etcdpb`: etcd's v3 API messages, with etcd's field numbers.
//! - `frame`: the 16-byte frame header (magic, version, kind, length, CRC32C), checked
//!   before a body is read.
//! - `grpc`: gRPC status codes, etcd's error codes and messages, message framing,
//!   `grpc-timeout`.
//! - `jsonpb`: `etcdpb` messages as JSON the way etcd's HTTP gateway writes and reads them,
//!   and its renderings of errors and streams.
//! - `native`: the native client protocol (pipelined rkyv frames with request ids).
//! - `outcome`: typed answers and errors of client calls, and their JSON rendering.

pub mod admin;
pub mod etcdpb;
pub mod frame;
pub mod grpc;
pub mod jsonpb;
pub mod native;
pub mod outcome;
