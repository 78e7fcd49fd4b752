//! The edges of etcd's gRPC protocol on ringkv, each compared with a real etcd where etcd
//! has the same edge: an unknown method and service (grpc-go's Unimplemented wording), a
//! request over the message size limit (ResourceExhausted), `hasleader` on a member that
//! has lost its leader (Unavailable "etcdserver: no leader", at once), `grpc-timeout` on a
//! write that cannot commit (the call ends at its deadline), and Watch, not served yet (Unimplemented
//! with a message that says so).
//!
//! Needs etcd installed (`make test` installs it through `need-etcd`).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, Opts, loopback};
use ringkv_client::etcd_grpc::{self, CallError};
use ringkv_harness::etcd::{EtcdCluster, installed};
use ringkv_proto::etcdpb as pb;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An unknown method, an unknown service, and a put over the size limit: their errors.
async fn edges(addr: SocketAddr, value_bytes: usize) -> Vec<CallError> {
    let ch = etcd_grpc::connect(addr).await.unwrap();
    let mut out = Vec::new();
    let e = etcd_grpc::unary::<_, pb::RangeResponse>(
        &ch,
        "/etcdserverpb.KV/Nope",
        pb::RangeRequest::default(),
    )
    .await
    .unwrap_err();
    out.push(e);
    let e = etcd_grpc::unary::<_, pb::RangeResponse>(
        &ch,
        "/etcdserverpb.Nope/Range",
        pb::RangeRequest::default(),
    )
    .await
    .unwrap_err();
    out.push(e);
    let big = pb::PutRequest {
        key: Bytes::from_static(b"big"),
        value: Bytes::from(vec![b'x'; value_bytes]),
        ..Default::default()
    };
    out.push(
        etcd_grpc::unary::<_, pb::PutResponse>(&ch, "/etcdserverpb.KV/Put", big)
            .await
            .unwrap_err(),
    );
    out
}

#[test]
fn protocol_edges_answer_as_etcds() {
    assert!(
        installed(),
        "etcd is not installed: run `make test` (it installs etcd-server)"
    );
    let mut c = Cluster::new("etcd-grpc-edges", Opts::default());
    c.leader();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("etcd-grpc-edges-{}", std::process::id()));
    let e = EtcdCluster::start(&dir, 1, common::free_port).unwrap_or_else(|e| panic!("{e}"));
    let rt = rt();
    // Over both systems' request limits (etcd: 1.5 MiB plus gRPC's margin; ringkv:
    // limits.frame_bytes_max, 8 MiB by default).
    let theirs = rt.block_on(edges(e.clients[0], 9 << 20));
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
    let ours = rt.block_on(edges(loopback(c.ports[0]), 9 << 20));
    assert_eq!(ours[0], theirs[0]);
    assert_eq!(
        ours[0].message,
        "unknown method Nope for service etcdserverpb.KV"
    );
    assert_eq!(ours[1], theirs[1]);
    assert_eq!(
        theirs[2].code,
        ringkv_proto::grpc::Code::ResourceExhausted as i32,
        "{:?}",
        theirs[2]
    );
    assert_eq!(ours[2].code, theirs[2].code, "{:?}", ours[2]);
    assert!(
        ours[2]
            .message
            .starts_with("grpc: received message larger than max ("),
        "{:?}",
        ours[2]
    );

    rt.block_on(async {
        let ch = etcd_grpc::connect(loopback(c.ports[0])).await.unwrap();
        let w = etcd_grpc::unary::<_, pb::RangeResponse>(
            &ch,
            "/etcdserverpb.Watch/Watch",
            pb::RangeRequest::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(w.code, ringkv_proto::grpc::Code::Unimplemented as i32);
        assert!(w.message.contains("Watch is not implemented yet"), "{w:?}");
    });

    // One node left alone: no leader.
    let alone = (c.leader() + 1) % 3;
    for i in 0..3 {
        if i != alone {
            c.kill(i);
        }
    }
    let addr = loopback(c.ports[alone]);
    rt.block_on(async {
        let ch = etcd_grpc::connect(addr).await.unwrap();
        // Wait for the lone node to notice (its election timeout).
        let t = Instant::now();
        let no_leader = loop {
            let r = etcd_grpc::unary_with::<_, pb::RangeResponse>(
                &ch,
                "/etcdserverpb.KV/Range",
                pb::RangeRequest {
                    key: Bytes::from_static(b"k"),
                    ..Default::default()
                },
                &[("hasleader", "true")],
                None,
            )
            .await;
            match r {
                Err(e) if e.message == "etcdserver: no leader" => break e,
                _ if t.elapsed() < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => panic!("no `no leader` within 20 s: {other:?}"),
            }
        };
        assert_eq!(no_leader.code, ringkv_proto::grpc::Code::Unavailable as i32);
        // A deadline shorter than the node's own request timeout ends the call at it.
        // (tonic keeps its own timer for `grpc-timeout` too and may report first:
        // Cancelled "Timeout expired" rather than the node's DeadlineExceeded.)
        let t = Instant::now();
        let r = etcd_grpc::unary_with::<_, pb::PutResponse>(
            &ch,
            "/etcdserverpb.KV/Put",
            pb::PutRequest {
                key: Bytes::from_static(b"k"),
                ..Default::default()
            },
            &[("grpc-timeout", "300m")],
            None,
        )
        .await
        .unwrap_err();
        assert!(
            r.code == ringkv_proto::grpc::Code::DeadlineExceeded as i32
                || (r.code == ringkv_proto::grpc::Code::Canceled as i32
                    && r.message == "Timeout expired"),
            "{r:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    });
}
