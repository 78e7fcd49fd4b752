//! ringkv's clients, apart from the server: the native-protocol library (`native_client`),
//! the CLI's client commands (`client`), the load generator (`bench`, and `bench_etcd`
//! against etcd with the `etcd` feature, over `etcd_grpc`, a raw gRPC client of etcd's
//! API: the only place tokio and tonic are linked), the live view (`top`) and the
//! workspace's one HTTP/1.1 client (`http1`).

pub mod bench;
#[cfg(feature = "etcd")]
pub mod bench_etcd;
pub mod client;
#[cfg(feature = "etcd")]
pub mod etcd_grpc;
pub mod http1;
pub mod native_client;
pub mod top;
pub mod txn;
