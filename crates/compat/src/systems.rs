//! Fresh systems for one run of the differential tester: a one-member etcd and a
//! three-node ringkv (its default two shards per node), each in its own directory under
//! `dir`, on free loopback ports.
//!
//! Runs on the caller's thread, which owns the processes (they die with it). Must not
//! touch node internals.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringkv_harness::etcd::EtcdCluster;
use ringkv_harness::{Cluster, NodeSpec, Opts};

/// A free loopback port below the ephemeral range (a node restarting must find it free).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = std::process::id() as u64 * 6151
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + ((seed + n * 104_729) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Both systems of one run; dropped, they stop and their directories go.
pub struct Systems {
    pub etcd: EtcdCluster,
    pub ringkv: Cluster,
    dir: PathBuf,
}

impl Drop for Systems {
    fn drop(&mut self) {
        self.ringkv.stop_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Systems {
    /// Starts both in `dir` (emptied first) with the ringkv binary `bin`; returns once
    /// ringkv's nodes agree on a leader and etcd reports itself healthy.
    pub fn start(bin: &Path, dir: &Path) -> Result<Systems, String> {
        let _ = std::fs::remove_dir_all(dir);
        let etcd = EtcdCluster::start(&dir.join("etcd"), 1, free_port)?;
        // Election timeouts as etcd's defaults, so both raise a lease's TTL to 2 s.
        let opts = Opts {
            election_ms: (500, 1000),
            heartbeat_ms: 100,
            ..Opts::default()
        };
        let mut ringkv = Cluster::new(bin, &dir.join("ringkv"), opts, |_, _| {
            SocketAddr::from(([127, 0, 0, 1], free_port()))
        })?;
        for id in 1..=3 {
            ringkv.add(id, NodeSpec::default())?;
        }
        for id in 1..=3 {
            ringkv.start(id)?;
        }
        let t = Instant::now();
        while ringkv.agreed_leader(&[1, 2, 3]).is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "ringkv elected no leader in 30 s (logs in {})",
                    dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Systems {
            etcd,
            ringkv,
            dir: dir.to_path_buf(),
        })
    }

    /// The client addresses the tester talks to: etcd's member, ringkv's node 1 (a
    /// follower or the leader: calls are forwarded as a client's would be).
    pub fn addresses(&self) -> (SocketAddr, SocketAddr) {
        (self.etcd.clients[0], self.ringkv.address(1))
    }
}
