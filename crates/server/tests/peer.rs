//! The peer transport on real loopback sockets (ephemeral ports): three nodes exchange Raft
//! messages; wrong cluster ids and tokens, unknown nodes, oversized, corrupt and foreign
//! input are refused and counted while the node keeps serving.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use ringkv_proto::frame::{FrameHeader, FrameKind};
use ringkv_raft::{Body, Entry, EntryKind, Message};
use ringkv_server::net::peer::{HttpHandler, Inbound, PeerConfig, Transport};

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move { f().await })
        .unwrap()
        .join()
        .unwrap();
}

fn cfg(id: u64, peers: &BTreeMap<u64, std::net::SocketAddr>, token: &str) -> PeerConfig {
    PeerConfig {
        node_id: id,
        cluster_id: 0xC0FFEE,
        token: token.into(),
        peers: peers.clone(),
        frame_bytes_max: 1 << 20,
        outbox_max: 1024,
        reconnect_backoff_max_ms: 200,
        dial: BTreeMap::new(),
        source_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        incarnation: id,
        known: None,
    }
}

fn no_http() -> HttpHandler {
    Rc::new(|_s, _b| {})
}

fn append(from: u64, to: u64, n: u64) -> Message {
    Message {
        from,
        to,
        term: 3,
        body: Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: (1..=n)
                .map(|i| Entry {
                    index: i,
                    term: 3,
                    kind: EntryKind::Normal,
                    data: Bytes::from(format!("payload-{from}-{i}")),
                })
                .collect(),
            commit: 0,
        },
    }
}

/// A transport that accepts on its own listener (in the node, shards accept and hand
/// frame connections over).
fn start_on(
    c: PeerConfig,
    l: TcpListener,
    tx: local_channel::LocalSender<Inbound>,
    http: HttpHandler,
) -> Transport {
    let mut t = Transport::start(c, tx);
    t.serve_listener(l, http);
    t
}

fn raft(i: Inbound) -> Message {
    match i {
        Inbound::Raft(m) => m,
        other => panic!("expected a Raft message, got {other:?}"),
    }
}

async fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(v) = f() {
            return v;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting");
}

#[test]
fn three_nodes_exchange_messages_over_loopback() {
    run(|| async {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let peers: BTreeMap<u64, _> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap()))
            .collect();
        let mut nodes = Vec::new();
        let mut inboxes = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let (tx, rx) = local_channel::new_bounded(1024);
            nodes.push(start_on(cfg(i as u64 + 1, &peers, "t"), l, tx, no_http()));
            inboxes.push(rx);
        }
        for (from, to) in [(1u64, 2u64), (2, 3), (3, 1), (1, 3)] {
            for n in 1..=20 {
                assert!(nodes[from as usize - 1].send(append(from, to, n % 5)));
            }
        }
        // Node 1 receives 20 from node 3, node 2 20 from node 1, node 3 40.
        for (node, want) in [(0usize, 20usize), (1, 20), (2, 40)] {
            let mut got = Vec::new();
            while got.len() < want {
                got.push(raft(inboxes[node].recv().await.unwrap()));
            }
            // Messages from one peer arrive in the order sent.
            for from in 1..=3u64 {
                let counts: Vec<usize> = got
                    .iter()
                    .filter(|m| m.from == from)
                    .map(|m| match &m.body {
                        Body::Append { entries, .. } => entries.len(),
                        _ => usize::MAX,
                    })
                    .collect();
                if !counts.is_empty() {
                    let sent: Vec<usize> = (1..=20).map(|n| n % 5).collect();
                    assert_eq!(counts, sent, "from {from} to {}", node + 1);
                }
            }
            for m in &got {
                assert_eq!(m.to, node as u64 + 1);
                if let Body::Append { entries, .. } = &m.body {
                    for e in entries {
                        assert_eq!(
                            e.data,
                            Bytes::from(format!("payload-{}-{}", m.from, e.index))
                        );
                    }
                }
            }
        }
        assert!(nodes.iter().all(|n| n.stats.borrow().refused.is_empty()));
    });
}

#[test]
fn wrong_cluster_token_and_unknown_nodes_are_refused() {
    run(|| async {
        let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
        let l_bad = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peers = BTreeMap::new();
        peers.insert(1, l1.local_addr().unwrap());
        peers.insert(2, l_bad.local_addr().unwrap());
        let (tx1, rx1) = local_channel::new_bounded(16);
        let n1 = start_on(cfg(1, &peers, "right"), l1, tx1, no_http());
        // Node 2 with the wrong token.
        let (tx2, _rx2) = local_channel::new_bounded(16);
        let n2 = start_on(cfg(2, &peers, "wrong"), l_bad, tx2, no_http());
        n2.send(append(2, 1, 1));
        wait_for(|| n1.stats.borrow().refused.get("wrong_token").copied()).await;
        // Another cluster, and a node id that is no member.
        let mut other = cfg(2, &peers, "right");
        other.cluster_id = 7;
        for (c, why) in [(other, "wrong_cluster")] {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let (tx, _rx) = local_channel::new_bounded(16);
            let t = start_on(c, l, tx, no_http());
            t.send(append(2, 1, 1));
            wait_for(|| n1.stats.borrow().refused.get(why).copied()).await;
        }
        let mut stranger_peers = peers.clone();
        stranger_peers.insert(9, "127.0.0.1:1".parse().unwrap());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (tx, _rx) = local_channel::new_bounded(16);
        let s = start_on(cfg(9, &stranger_peers, "right"), l, tx, no_http());
        s.send(append(9, 1, 1));
        wait_for(|| n1.stats.borrow().refused.get("unknown_node").copied()).await;
        assert_eq!(
            n1.stats.borrow().delivered,
            0,
            "nothing refused reached the inbox"
        );
        drop(rx1);
    });
}

#[test]
fn oversized_corrupt_and_foreign_input_is_refused_and_the_node_keeps_serving() {
    run(|| async {
        let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l1.local_addr().unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peers = BTreeMap::new();
        peers.insert(1, addr);
        peers.insert(2, l2.local_addr().unwrap());
        let (tx1, rx1) = local_channel::new_bounded(16);
        let seen_http: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
        let h = seen_http.clone();
        let http: HttpHandler = Rc::new(move |_s, first| h.borrow_mut().push(first));
        let n1 = start_on(cfg(1, &peers, "t"), l1, tx1, http);
        // A frame header announcing 1 GiB: refused from the header, nothing allocated.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut hdr = FrameHeader::for_body(FrameKind::Raft, b"").encode();
        hdr[8..12].copy_from_slice(&(1u32 << 30).to_le_bytes());
        s.write_all(&hdr).await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0, "connection closed");
        wait_for(|| n1.stats.borrow().refused.get("too_large").copied()).await;
        // A body that fails its checksum.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let body = b"0123456789";
        let mut hdr = FrameHeader::for_body(FrameKind::Handshake, body).encode();
        hdr[12] ^= 1;
        s.write_all(&hdr).await.unwrap();
        s.write_all(body).await.unwrap();
        wait_for(|| n1.stats.borrow().refused.get("checksum").copied()).await;
        // Not a frame at all: handed to the HTTP handler with the bytes read.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /status HTTP/1.1\r\n\r\n").await.unwrap();
        wait_for(|| seen_http.borrow().first().cloned()).await;
        assert_eq!(seen_http.borrow()[0], b"GET ".to_vec());
        // And a real peer still gets through.
        let (tx2, _rx2) = local_channel::new_bounded(16);
        let n2 = start_on(cfg(2, &peers, "t"), l2, tx2, no_http());
        n2.send(append(2, 1, 2));
        let m = raft(rx1.recv().await.unwrap());
        assert_eq!(m.from, 2);
    });
}

#[test]
fn forwarded_calls_arrive_in_order_and_expired_ones_are_never_sent() {
    use ringkv_server::net::wire::ClientFrame;
    use std::time::Instant;
    run(|| async {
        let listeners: Vec<TcpListener> = (0..2)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let peers: BTreeMap<u64, _> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap()))
            .collect();
        let mut nodes = Vec::new();
        let mut inboxes = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let (tx, rx) = local_channel::new_bounded(64);
            nodes.push(start_on(cfg(i as u64 + 1, &peers, "t"), l, tx, no_http()));
            inboxes.push(rx);
        }
        let later = Instant::now() + Duration::from_secs(30);
        let past = Instant::now() - Duration::from_millis(1);
        let write = |id| ClientFrame::Write {
            id,
            command: vec![id as u8; 3],
        };
        assert!(nodes[0].send_client(2, write(1), later));
        assert!(
            nodes[0].send_client(2, write(2), past),
            "queued, then dropped unsent"
        );
        assert!(nodes[0].send_client(2, write(3), later));
        let reply = ClientFrame::Reply {
            id: 3,
            outcome: Ok(ringkv_proto::outcome::Answer::Written { revision: 9 }),
        };
        assert!(nodes[1].send_client(1, reply.clone(), later));
        for want in [write(1), write(3)] {
            match inboxes[1].recv().await.unwrap() {
                Inbound::Client { from, frame } => assert_eq!((from, frame), (1, want)),
                other => panic!("{other:?}"),
            }
        }
        match inboxes[0].recv().await.unwrap() {
            Inbound::Client { from, frame } => assert_eq!((from, frame), (2, reply)),
            other => panic!("{other:?}"),
        }
    });
}

/// An established connection that breaks is reported to the driver as
/// `Inbound::Unreachable` (the frames queued on it are lost: the core should probe that
/// peer instead of pipelining into the void). The peer here is a bare listener that
/// answers the handshake, then closes.
#[test]
fn a_broken_connection_is_reported_as_unreachable() {
    use ringkv_server::net::peer::{ACK_OK, HelloAck};
    run(|| async {
        let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
        let peers: BTreeMap<u64, _> =
            [(1, l1.local_addr().unwrap()), (2, l2.local_addr().unwrap())]
                .into_iter()
                .collect();
        let (tx, rx) = local_channel::new_bounded(1024);
        let t1 = start_on(cfg(1, &peers, "t"), l1, tx, no_http());
        let peer = glommio::spawn_local(async move {
            let mut s: TcpStream = l2.accept().await.unwrap();
            let mut h = [0u8; 16];
            s.read_exact(&mut h).await.unwrap();
            let hdr = FrameHeader::decode(&h, 1 << 20).unwrap();
            let mut hello = vec![0u8; hdr.body_bytes as usize];
            s.read_exact(&mut hello).await.unwrap();
            let ack = HelloAck {
                code: ACK_OK,
                incarnation: 2,
                reason: String::new(),
            };
            let body = rkyv::to_bytes::<rkyv::rancor::Error>(&ack).unwrap();
            s.write_all(&FrameHeader::for_body(FrameKind::Handshake, &body).encode())
                .await
                .unwrap();
            s.write_all(&body).await.unwrap();
            // One Raft frame arrives; then the peer goes away.
            s.read_exact(&mut h).await.unwrap();
            drop(s);
            l2
        });
        assert!(t1.send(append(1, 2, 1)));
        let _listener = peer.await;
        // Writes into the closed connection fail within a few attempts.
        let mut got = None;
        for _ in 0..500 {
            let _ = t1.send(append(1, 2, 1));
            glommio::timer::sleep(Duration::from_millis(10)).await;
            if let Some(Some(Inbound::Unreachable(id))) =
                futures_lite::future::poll_once(rx.recv()).await
            {
                got = Some(id);
                break;
            }
        }
        assert_eq!(got, Some(2), "the lost connection was reported");
        assert!(!t1.stats.borrow().connected.contains(&2));
    });
}
