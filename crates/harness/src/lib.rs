//! Clusters of real `ringkv serve` processes for the integration tests (`crates/ringkv/
//! tests`, the benches) and the fault campaign (`ringkv-chaos`): the one place that writes
//! node configs, starts and stops node processes, reads their logs and asks them over
//! HTTP.
//!
//! - `config`: what a node's TOML says (`Opts` for the whole cluster, `NodeSpec` per node)
//!   and its writing;
//! - `process`: starting `ringkv serve` (dying with its starter), signals, waiting for an
//!   exit;
//! - `logs`: a node's log files, and the "Became leader" claims in them;
//! - `api`: HTTP calls to a node through `ringkv_client::http1` (status, leader, admin,
//!   put, get, metrics);
//! - `cluster`: `Cluster`, the nodes of one run in one directory, tying the four together;
//! - `etcd`: real etcd clusters beside ringkv's, for the comparisons with etcd.
//!
//! Runs on the caller's threads (a test's, or the campaign runner's main thread): every
//! call blocks. A dev tool: the production `ringkv` binary does not depend on it. Must not
//! touch node internals: it acts on a node only as an operator would, through processes,
//! signals, files and sockets. What is each caller's own stays there: the tests' port
//! choice and temporary directories, the campaign's namespace addresses, link proxies,
//! iptables, damage and schedule.

pub mod api;
pub mod cluster;
pub mod config;
pub mod etcd;
pub mod logs;
pub mod process;

pub use cluster::Cluster;
pub use config::{Listener, NodeSpec, Opts, Testing};
pub use ringkv_raft::NodeId;
