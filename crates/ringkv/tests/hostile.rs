//! Hostile input against running nodes: thousands of idle and half-finished connections,
//! and malformed frames of every kind on the node's port. Each is refused (closed, and
//! counted by reason in `ringkv_net_refused_total`), the node keeps serving, and its
//! memory stays bounded.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Cluster, Opts, wait_until};
use ringkv_proto::frame::{FrameHeader, FrameKind};

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// `ringkv_net_refused_total{reason=...}` summed over other labels.
fn refused(metrics: &str, reason: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("ringkv_net_refused_total{")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the peer closes `s` (EOF or reset; any answer before it is returned).
fn closed_within(s: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, String> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let t = Instant::now();
    match s.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(out),
        Err(e) => Err(format!("still open after {:?}: {e}", t.elapsed())),
    }
}

fn frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
    let mut f = FrameHeader::for_body(kind, body).encode().to_vec();
    f.extend_from_slice(body);
    f
}

#[test]
fn thousands_of_idle_and_half_finished_connections_neither_stop_nor_bloat_a_node() {
    let c = Cluster::new("idle", Opts::default());
    let l = c.leader();
    let f = (l + 1) % 3;
    let port = c.ports[f];
    let rss_before = rss_kib(c.pid(f));
    let connect = || TcpStream::connect(("127.0.0.1", port)).unwrap();
    // 2,000 connections that never send a byte.
    let idle: Vec<TcpStream> = (0..2000).map(|_| connect()).collect();
    // 300 each of: half an HTTP request (a body promised, one byte sent), half a native
    // frame (a 1,000-byte body promised, 10 sent), half a peer handshake.
    let mut half: Vec<(&str, TcpStream)> = Vec::new();
    let native = {
        let mut h = FrameHeader::for_body(FrameKind::Client, &[0u8; 1000])
            .encode()
            .to_vec();
        h.extend_from_slice(&[0u8; 10]);
        h
    };
    let handshake = {
        let mut h = FrameHeader::for_body(FrameKind::Handshake, &[0u8; 100])
            .encode()
            .to_vec();
        h.extend_from_slice(&[1u8; 5]);
        h
    };
    for i in 0..900 {
        let mut s = connect();
        let (what, bytes): (&str, &[u8]) = match i % 3 {
            0 => (
                "http",
                b"POST /put HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
            ),
            1 => ("native", &native),
            _ => ("handshake", &handshake),
        };
        s.write_all(bytes).unwrap();
        half.push((what, s));
    }
    // The cluster serves meanwhile, through this node too.
    for k in 0..30 {
        let (st, b) = c.put(f, &format!("k{k}"), "v");
        assert_eq!(st, 200, "{b}");
    }
    let (st, b) = c.get(f, "k29", "linearizable");
    assert_eq!((st, b["value"].as_str()), (200, Some("v")), "{b}");
    let grown = rss_kib(c.pid(f)).saturating_sub(rss_before);
    assert!(
        grown < 256 * 1024,
        "2,900 held connections grew the node by {grown} KiB"
    );
    // Half-finished requests are dropped within their limits (10 s for an HTTP request or
    // a native frame body, 5 s for a handshake); an HTTP one is told why first.
    for (what, s) in &mut half {
        let answer = closed_within(s, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("half {what}: {e}"));
        if *what == "http" {
            let text = String::from_utf8_lossy(&answer);
            assert!(
                text.is_empty() || text.starts_with("HTTP/1.1 408"),
                "{text}"
            );
        }
    }
    drop(idle);
    drop(half);
    let (st, b) = c.put(f, "after", "all");
    assert_eq!(st, 200, "{b}");
}

#[test]
fn malformed_frames_are_refused_by_reason_and_the_node_keeps_serving() {
    let c = Cluster::new(
        "malformed",
        Opts {
            metrics: true,
            ..Opts::default()
        },
    );
    let l = c.leader();
    let f = (l + 1) % 3;
    let before = c.metrics(f);
    let body = b"not an archive at all";
    let mut oversized = FrameHeader::for_body(FrameKind::Client, b"x")
        .encode()
        .to_vec();
    oversized[8..12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let mut bad_version = frame(FrameKind::Client, body);
    bad_version[4] = 9;
    let mut bad_kind = frame(FrameKind::Client, body);
    bad_kind[5] = 77;
    let mut bad_crc = frame(FrameKind::Handshake, body);
    bad_crc[12] ^= 0xFF;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("an oversized length", oversized, "too_large"),
        ("an unknown version", bad_version, "bad_header"),
        ("an unknown kind", bad_kind, "bad_header"),
        ("a handshake with a bad checksum", bad_crc, "checksum"),
        (
            "a handshake that is not one",
            frame(FrameKind::Handshake, body),
            "bad_handshake",
        ),
        (
            "a Raft message before any handshake",
            frame(FrameKind::Raft, body),
            "unexpected_frame",
        ),
    ];
    for (what, bytes, _) in &cases {
        let mut s = TcpStream::connect(("127.0.0.1", c.ports[f])).unwrap();
        s.write_all(bytes).unwrap();
        closed_within(&mut s, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // A native client frame whose body does not validate is answered as an error on the
    // same connection or closes it; either way the node goes on.
    let mut s = TcpStream::connect(("127.0.0.1", c.ports[f])).unwrap();
    s.write_all(&frame(FrameKind::Client, body)).unwrap();
    let _ = closed_within(&mut s, Duration::from_secs(5));
    let after = wait_until(5, "the refusals to be counted", || {
        let m = c.metrics(f);
        cases
            .iter()
            .all(|(_, _, reason)| refused(&m, reason) > refused(&before, reason))
            .then_some(m)
    });
    for (what, _, reason) in &cases {
        assert!(
            refused(&after, reason) > refused(&before, reason),
            "{what}: no {reason} refusal counted"
        );
    }
    let (st, b) = c.put(f, "still", "serving");
    assert_eq!(st, 200, "{b}");
    let (st, b) = c.get(l, "still", "linearizable");
    assert_eq!((st, b["value"].as_str()), (200, Some("serving")), "{b}");
}
