//! Real etcd clusters beside ringkv's, for the tests that compare the two (the
//! differential tester, the etcdctl and etcd-client comparisons).
//!
//! Runs on the caller's thread, which must own the cluster (its processes die with that
//! thread, as ringkv's nodes do). Owns the etcd processes (killed on drop) and the files
//! in its directory; the directory itself is the caller's. Must not touch anything of
//! ringkv's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringkv_client::http1;

/// The etcd server binary (Debian's `etcd-server` installs it here; `ETCD_BIN` overrides).
pub fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// Whether etcd and etcdctl are installed (the Makefile's `need-etcd` installs both).
pub fn installed() -> bool {
    etcd_bin().exists() && Path::new("/usr/bin/etcdctl").exists()
}

pub struct EtcdCluster {
    pub dir: PathBuf,
    /// Each member's client address.
    pub clients: Vec<SocketAddr>,
    children: Vec<Child>,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl EtcdCluster {
    /// Starts `n` members in `dir` (emptied first), the client and peer ports from
    /// `port()`, and waits until every member reports itself healthy. Election timeout
    /// 1000 ms, heartbeat 100 ms (etcd's defaults: its shortest lease TTL is then 2 s).
    pub fn start(dir: &Path, n: usize, mut port: impl FnMut() -> u16) -> Result<Self, String> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (port(), port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}"))
            .collect();
        let mut c = EtcdCluster {
            dir: dir.to_path_buf(),
            clients: ports
                .iter()
                .map(|(c, _)| SocketAddr::from(([127, 0, 0, 1], *c)))
                .collect(),
            children: Vec::new(),
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.join(format!("e{i}.log")))
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut cmd = Command::new(etcd_bin());
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            cmd.arg(format!("--name=e{i}"))
                .arg(format!(
                    "--data-dir={}",
                    dir.join(format!("e{i}")).display()
                ))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster={}", initial.join(",")))
                .arg("--initial-cluster-state=new")
                .arg("--log-level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            c.children.push(
                cmd.spawn()
                    .map_err(|e| format!("cannot start {}: {e}", etcd_bin().display()))?,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for a in c.clients.clone() {
            loop {
                let healthy = http1::exchange(
                    &a.to_string(),
                    "GET",
                    "/health",
                    &[],
                    b"",
                    Duration::from_secs(2),
                )
                .is_ok_and(|r| r.status == 200 && r.body.contains("true"));
                if healthy {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "etcd member {a} not healthy within 30 s (logs in {})",
                        dir.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(c)
    }

    /// The members' client URLs, comma-separated (etcdctl's `--endpoints`).
    pub fn endpoints(&self) -> String {
        self.clients
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}
