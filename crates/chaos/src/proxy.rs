//! Link proxies between founders: delay, reordering and loss of whole peer frames, the
//! faults `tc netem` would give and this kernel lacks.
//!
//! Runs on plain threads of the runner (an acceptor per directed link, two pumps per
//! connection). Owns its sockets and nothing else. Node `a` dials founder `b` at
//! `proxy_addr(a, b)` (the node's `testing.peer_dial`); the proxy connects on to `b` from
//! `a`'s own address, so the runner's iptables partitions still apply to the link.
//! Handshake frames always pass: a lost one would only look like a refused peer.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cluster::{node_addr, proxy_addr};
use ringkv_proto::frame::HEADER_BYTES;
use ringkv_raft::NodeId;
use ringkv_rng::Rng;

/// Frames larger than this end the connection (a proxy must not allocate without bound).
const FRAME_BYTES_MAX: usize = 64 << 20;
const FRAME_KIND_HANDSHAKE: u8 = 1;

/// What the proxies do to frames now. All zero: they pass everything at once, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Each frame waits up to this long (uniform) before it is passed on.
    pub delay_ms_max: u64,
    /// Chance (per mille) that a frame is held back and sent after the next one.
    pub reorder_per_mille: u64,
    /// Chance (per mille) that a frame is dropped.
    pub drop_per_mille: u64,
}

/// The proxies of one run and what they did.
pub struct Proxies {
    faults: Arc<Mutex<Faults>>,
    pub dropped: Arc<AtomicU64>,
    pub reordered: Arc<AtomicU64>,
    pub delayed: Arc<AtomicU64>,
}

impl Proxies {
    /// Listens on `proxy_addr(a, b)` for every ordered pair of `founders`.
    pub fn start(founders: &[NodeId], seed: u64) -> Result<Proxies, String> {
        let p = Proxies {
            faults: Arc::new(Mutex::new(Faults::default())),
            dropped: Arc::new(AtomicU64::new(0)),
            reordered: Arc::new(AtomicU64::new(0)),
            delayed: Arc::new(AtomicU64::new(0)),
        };
        let mut n = seed;
        for &a in founders {
            for &b in founders.iter().filter(|b| **b != a) {
                let l = TcpListener::bind(proxy_addr(a, b))
                    .map_err(|e| format!("link proxy {}: {e}", proxy_addr(a, b)))?;
                let ctx = p.ctx();
                n += 1;
                let seed = n;
                std::thread::Builder::new()
                    .name(format!("proxy-{a}-{b}"))
                    .spawn(move || accept(l, a, b, ctx, seed))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(p)
    }

    pub fn set(&self, f: Faults) {
        *self.faults.lock().expect("faults") = f;
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            faults: self.faults.clone(),
            dropped: self.dropped.clone(),
            reordered: self.reordered.clone(),
            delayed: self.delayed.clone(),
        }
    }
}

#[derive(Clone)]
struct Ctx {
    faults: Arc<Mutex<Faults>>,
    dropped: Arc<AtomicU64>,
    reordered: Arc<AtomicU64>,
    delayed: Arc<AtomicU64>,
}

fn accept(l: TcpListener, from: NodeId, to: NodeId, ctx: Ctx, seed: u64) {
    let mut conn_no = 0u64;
    for inbound in l.incoming() {
        let Ok(inbound) = inbound else { continue };
        conn_no += 1;
        let Ok(outbound) = connect_from(node_addr(from), node_addr(to)) else {
            continue; // the dialer sees a closed connection and backs off
        };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        for (dir, (r, w)) in [(0u64, (&inbound, &outbound)), (1, (&outbound, &inbound))] {
            let (Ok(r), Ok(w)) = (r.try_clone(), w.try_clone()) else {
                continue;
            };
            let ctx = ctx.clone();
            let seed = seed.wrapping_mul(1_000_003) ^ (conn_no << 1 | dir);
            let _ = std::thread::Builder::new()
                .name(format!("pump-{from}-{to}"))
                .spawn(move || pump(r, w, ctx, seed));
        }
    }
}

/// Connects to `to` with `from`'s address as the source.
fn connect_from(from: SocketAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::new(from.ip(), 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(1))?;
    Ok(s.into())
}

/// Frames queued between a pump's reader and its writer (then the reader waits: the
/// link's backpressure, as TCP's).
const QUEUE_FRAMES_MAX: usize = 1024;

/// Copies frames from `r` to `w`, applying the faults in force; ends both sockets when
/// either side ends. The reader stamps each frame with its due time and a writer thread
/// sends it then, so delays overlap (a link is slowed, not serialized behind sleeps).
fn pump(mut r: TcpStream, w: TcpStream, ctx: Ctx, seed: u64) {
    let mut rng = Rng::new(seed);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Instant, Vec<u8>)>(QUEUE_FRAMES_MAX);
    let (r2, mut w2) = match (r.try_clone(), w.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return,
    };
    let writer = std::thread::Builder::new()
        .name("pump-writer".into())
        .spawn(move || {
            for (due, frame) in rx {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if w2.write_all(&frame).is_err() {
                    break;
                }
            }
            let _ = r2.shutdown(Shutdown::Both);
            let _ = w2.shutdown(Shutdown::Both);
        });
    if writer.is_err() {
        return;
    }
    let mut held: Option<Vec<u8>> = None;
    loop {
        let mut frame = vec![0u8; HEADER_BYTES];
        if r.read_exact(&mut frame).is_err() {
            break;
        }
        let body = u32::from_le_bytes(frame[8..12].try_into().expect("4 bytes")) as usize;
        if body > FRAME_BYTES_MAX {
            break;
        }
        frame.resize(HEADER_BYTES + body, 0);
        if r.read_exact(&mut frame[HEADER_BYTES..]).is_err() {
            break;
        }
        let f = *ctx.faults.lock().expect("faults");
        let mut due = Instant::now();
        if frame[5] != FRAME_KIND_HANDSHAKE {
            if rng.below(1000) < f.drop_per_mille {
                ctx.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if f.delay_ms_max > 0 {
                ctx.delayed.fetch_add(1, Ordering::Relaxed);
                due += Duration::from_millis(rng.below(f.delay_ms_max + 1));
            }
            if held.is_none() && rng.below(1000) < f.reorder_per_mille {
                ctx.reordered.fetch_add(1, Ordering::Relaxed);
                held = Some(frame);
                continue;
            }
        }
        if tx.send((due, frame)).is_err() {
            break;
        }
        if let Some(h) = held.take()
            && tx.send((due, h)).is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = r.shutdown(Shutdown::Both);
    let _ = w.shutdown(Shutdown::Both);
}
