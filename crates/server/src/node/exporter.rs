//! The metrics listener: `GET /metrics` in Prometheus text format on
//! `cluster.metrics_address`.
//!
//! Runs on its own small glommio executor (`ringkv<id>-metrics`, pinned to the raft core's
//! CPU; it sleeps between scrapes). Owns the listener `serve` bound at start-up, the
//! connections to it (at most `CONNECTIONS_MAX` at once, each with read timeouts) and the
//! recorder's upkeep timer (`run_upkeep` every `UPKEEP_INTERVAL`). Requests are parsed by
//! `net::http::parse_metrics`: anything but `GET /metrics` gets a 404 (or 405) JSON error,
//! a malformed request an error and a closed connection; nothing a client sends can stop
//! the listener. Must not touch Raft or shard state: it renders only what the other
//! executors recorded through their cached handles (`crate::metrics`).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::metrics::{ConnKind, NetMetrics};
use crate::net::http::{self, HttpLimits, Parsed};

/// The Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Recorder upkeep (drains histogram samples into their buckets).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Open connections to the metrics port at once; more are closed at once.
const CONNECTIONS_MAX: usize = 64;
/// A keep-alive connection may idle this long between scrapes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Within a request, the longest silence.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapers send a head and no body.
const LIMITS: HttpLimits = HttpLimits {
    head_bytes_max: 8 << 10,
    body_bytes_max: 4 << 10,
    key_bytes_max: 0,
    value_bytes_max: 0,
};

/// Binds the metrics address (a plain bind: a port anything holds is refused). Right after
/// this node's previous process exited the kernel may hold the port a moment: retried for
/// `wait` when in use.
pub(super) fn bind(addr: SocketAddr, wait: Duration) -> Result<std::net::TcpListener, String> {
    let t = std::time::Instant::now();
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && t.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(format!(
                    "cannot listen on {addr} (cluster.metrics_address): {e}; another process \
                     holds the port"
                ));
            }
        }
    }
}

/// Serves `GET /metrics` on `listener` and runs the recorder's upkeep, for as long as the
/// process lives.
pub(super) async fn serve(listener: std::net::TcpListener, handle: PrometheusHandle) {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: a listening socket we own, handed over once.
    let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
    let handle = Rc::new(handle);
    {
        let handle = handle.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(UPKEEP_INTERVAL).await;
                handle.run_upkeep();
            }
        })
        .detach();
    }
    let net = Rc::new(NetMetrics::new());
    let open = Rc::new(Cell::new(0usize));
    loop {
        let s = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, usually: back off instead of spinning.
                tracing::warn!("metrics listener: accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= CONNECTIONS_MAX {
            NetMetrics::refused("metrics_connections_max");
            continue; // dropping the stream closes it
        }
        open.set(open.get() + 1);
        let (handle, net, open) = (handle.clone(), net.clone(), open.clone());
        glommio::spawn_local(async move {
            let _open = net.open(ConnKind::Metrics);
            connection(s, &handle).await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// One connection: requests answered in order until the client closes, idles too long,
/// asks to close, or sends something that is not HTTP.
async fn connection(mut s: TcpStream, handle: &PrometheusHandle) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        match http::parse_metrics(&buf, &LIMITS) {
            Parsed::Incomplete => {
                let limit = if buf.is_empty() {
                    IDLE_TIMEOUT
                } else {
                    READ_TIMEOUT
                };
                match super::conn::read_within(&mut s, &mut chunk, limit).await {
                    Some(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            Parsed::Fatal(e) => {
                let _ = s.write_all(&e.reply(true)).await;
                return;
            }
            Parsed::Request {
                consumed,
                call,
                keep_alive,
            } => {
                buf.drain(..consumed);
                let out = match call {
                    Ok(()) => {
                        let text = by_name(&handle.render());
                        http::response_with(200, CONTENT_TYPE, &text, !keep_alive)
                    }
                    Err(e) => e.reply(!keep_alive),
                };
                if s.write_all(&out).await.is_err() || !keep_alive {
                    return;
                }
            }
        }
    }
}

/// The recorder renders metric families (a `# HELP`/`# TYPE` head, the samples, a blank
/// line) in hash order; an operator reading a scrape finds them sorted by name. The
/// families themselves are kept whole.
fn by_name(text: &str) -> String {
    let mut families: Vec<&str> = text.split("\n\n").filter(|f| !f.is_empty()).collect();
    let name = |f: &str| {
        let first = f.lines().next().unwrap_or("");
        let rest = first
            .strip_prefix("# HELP ")
            .or_else(|| first.strip_prefix("# TYPE "))
            .unwrap_or(first);
        rest.split([' ', '{']).next().unwrap_or("").to_string()
    };
    families.sort_by_cached_key(|f| name(f));
    let mut out = String::with_capacity(text.len() + 1);
    for f in families {
        out.push_str(f.trim_end_matches('\n'));
        out.push_str("\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn families_sorted_by_name_and_kept_whole() {
        let text = "# HELP b_total B.\n# TYPE b_total counter\nb_total 1\n\n\
                    # TYPE a gauge\na{x=\"1\"} 2\na{x=\"2\"} 3\n\n";
        assert_eq!(
            super::by_name(text),
            "# TYPE a gauge\na{x=\"1\"} 2\na{x=\"2\"} 3\n\n\
             # HELP b_total B.\n# TYPE b_total counter\nb_total 1\n\n"
        );
        assert_eq!(super::by_name(""), "");
    }
}
