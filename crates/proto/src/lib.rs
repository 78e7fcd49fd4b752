//! What crosses a ringkv node's port, shared by the server and its clients.
//!
//! Pure encoding and decoding, no I/O: used by the node's connection tasks (any executor)
//! and by the clients. Must not touch node state.
//!
//! - `admin`: operator calls (join, promote, remove, transfer leadership, snapshot).
//! - `frame`: the 16-byte frame header (magic, version, kind, length, CRC32C), checked
//!   before a body is read.
//! - `native`: the native client protocol (pipelined rkyv frames with request ids).
//! - `outcome`: typed answers and errors of client calls, and their JSON rendering.

pub mod admin;
pub mod frame;
pub mod native;
pub mod outcome;
