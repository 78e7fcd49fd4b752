//! Node processes: starting `ringkv serve` on a config, signals, waiting for an exit.
//!
//! Runs on the caller's thread. Must not touch node internals: a node is a process, its
//! config file, its log directory and the signals an operator could send.
//!
//! Every node started here gets PR_SET_PDEATHSIG (SIGKILL): it dies with the thread that
//! started it, however that ends (a failed test, a killed runner), so no node outlives
//! its starter and keeps ports or a directory busy. Hence: start a cluster's nodes from
//! the thread that owns the cluster (a test's thread, the runner's main thread).

use std::fs::OpenOptions;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where a node's stderr goes.
pub enum Stderr {
    /// Appended to `stderr.log` in its log directory: a panic's message lands beside the
    /// node's log, which never has it.
    ToLogDir,
    /// A pipe the caller reads (`start_expecting_exit`).
    Piped,
}

/// Starts `bin serve --config <config>`, logging into `log_dir` (`LOG_DIR`, at
/// `LOG_LEVEL=info`).
pub fn spawn(bin: &Path, config: &Path, log_dir: &Path, stderr: Stderr) -> Result<Child, String> {
    let mut cmd = Command::new(bin);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    std::fs::create_dir_all(log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
    let stderr = match stderr {
        Stderr::ToLogDir => OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join("stderr.log"))
            .map_err(|e| format!("{}: {e}", log_dir.display()))?
            .into(),
        Stderr::Piped => Stdio::piped(),
    };
    cmd.args(["serve", "--config"])
        .arg(config)
        // d.log in the run's directory, not the repository's logs/.
        .env("LOG_DIR", log_dir)
        .env("LOG_LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))
}

/// Waits up to `limit` for `child` to exit; its status, or `None` while it still runs.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>, String> {
    let until = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(Some(st));
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a node expected to exit on its own within `limit` (a refused start): its exit
/// status and stderr. One that still runs then is killed, and that is an error.
pub fn run_to_exit(
    bin: &Path,
    config: &Path,
    log_dir: &Path,
    limit: Duration,
) -> Result<(ExitStatus, String), String> {
    let mut child = spawn(bin, config, log_dir, Stderr::Piped)?;
    let Some(status) = wait_exit(&mut child, limit)? else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("the node still ran after {limit:?}"));
    };
    let mut err = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut err).map_err(|e| e.to_string())?;
    }
    Ok((status, err))
}

/// `kill -SIG PID` (a name: "STOP", "CONT", "TERM", ...), from any thread.
pub fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let st = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("kill -{sig} {pid}: {st}"))
    }
}
