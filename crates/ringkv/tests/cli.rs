//! The client commands (`ringkv put|get|delete|status` and the admin commands
//! `join|promote|remove|transfer-leader|snapshot`) as operators run them: the real binary
//! against small fake nodes on 127.0.0.1 ephemeral ports that answer with canned typed
//! outcomes and record every request they receive, over the native protocol, as a node's
//! port does.
//!
//! Asserted: fallback past a refused port and a 503 `unavailable`, the `not_leader`
//! redirect (and no redirect loop), a write never resent once it was sent (connection
//! dropped, no reply in time, 504), reads retried elsewhere, awkward keys and values sent
//! unchanged, `status --all`, and the exit codes; for admin commands the call and token
//! sent (`--token` or `RINGKV_TOKEN`), no resend once sent, and usage errors caught before
//! any connection. Before a put or delete the client asks the endpoints' status to find
//! the leader: those status requests are recorded too. Nothing goes over HTTP.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ringkv_proto::admin::AdminOp;
use ringkv_proto::frame::{FrameHeader, FrameKind, HEADER_BYTES, MAGIC};
use ringkv_proto::native::{self, Request};
use ringkv_proto::outcome::{
    Answer, ApiError, NodeRole, NodeStatus, Outcome, TimeoutKind, UnavailableReason, WalStatus,
};

/// What a fake node does with a request it has read whole.
#[derive(Clone)]
enum Act {
    /// Answer with this outcome.
    Reply(Outcome),
    /// Close the connection without answering.
    Close,
    /// Never answer; wait until the client gives up and closes.
    Hang,
}

/// A native request as a line: `status`, `put "k" "v"`, `get "k" 1` (the consistency
/// code), `delete "k"`, `admin promote 4 token=t`.
fn describe(r: &Request) -> String {
    let s = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(b));
    match r {
        Request::Put { key, value, .. } => format!("put {} {}", s(key), s(value)),
        Request::Get {
            key, consistency, ..
        } => format!("get {} {consistency}", s(key)),
        Request::Delete { key, .. } => format!("delete {}", s(key)),
        Request::Status { .. } => "status".into(),
        Request::Admin { op, token, .. } => format!("admin {op:?} token={token:?}"),
        Request::Write { command, .. } => format!("write {} bytes", command.len()),
        Request::Range {
            request,
            consistency,
            ..
        } => format!("range {} bytes {consistency}", request.len()),
        Request::LeaseKeepAlive { lease, .. } => format!("lease keep-alive {lease}"),
        Request::LeaseTimeToLive { lease, keys, .. } => format!("lease ttl {lease} {keys}"),
        Request::LeaseLeases { .. } => "lease list".into(),
        Request::Hash { revision, .. } => format!("hash {revision}"),
    }
}

/// A fake node: one accept thread, one thread per connection. Dropping it stops the
/// accept thread and frees the port.
struct FakeNode {
    addr: String,
    act: Arc<Mutex<Act>>,
    /// What native status requests get, when not `act`.
    status_act: Arc<Mutex<Option<Act>>>,
    /// Connections that did not open with the frame magic (HTTP, say).
    other: Arc<AtomicUsize>,
    native: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Clone)]
struct Shared {
    act: Arc<Mutex<Act>>,
    status_act: Arc<Mutex<Option<Act>>>,
    other: Arc<AtomicUsize>,
    native: Arc<Mutex<Vec<Request>>>,
}

impl FakeNode {
    fn start(act: Act) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let sh = Shared {
            act: Arc::new(Mutex::new(act)),
            status_act: Arc::default(),
            other: Arc::default(),
            native: Arc::default(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sh, stop) = (sh.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(c) = conn {
                        let sh = sh.clone();
                        std::thread::spawn(move || serve_conn(c, &sh));
                    }
                }
            })
        };
        Self {
            addr,
            act: sh.act,
            status_act: sh.status_act,
            other: sh.other,
            native: sh.native,
            stop,
            thread: Some(thread),
        }
    }

    fn ok(answer: Answer) -> Self {
        Self::start(Act::Reply(Ok(answer)))
    }

    fn error(e: ApiError) -> Self {
        Self::start(Act::Reply(Err(e)))
    }

    fn set(&self, act: Act) {
        *self.act.lock().unwrap() = act;
    }

    /// Native status requests get `act` instead.
    fn set_status(&self, act: Act) {
        *self.status_act.lock().unwrap() = Some(act);
    }

    /// The native requests received, as `describe` lines.
    fn native(&self) -> Vec<String> {
        self.native.lock().unwrap().iter().map(describe).collect()
    }

    /// The native requests received.
    fn requests_seen(&self) -> Vec<Request> {
        self.native.lock().unwrap().clone()
    }

    /// The native puts, deletes and operator calls received.
    fn writes(&self) -> Vec<String> {
        let w = |d: &String| {
            d.starts_with("put ") || d.starts_with("delete ") || d.starts_with("admin ")
        };
        self.native().into_iter().filter(w).collect()
    }

    /// Requests of either kind received.
    fn requests(&self) -> usize {
        self.other.load(Ordering::SeqCst) + self.native().len()
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept; the thread sees `stop` and returns, closing the listener.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        assert_eq!(self.other.load(Ordering::SeqCst), 0, "a client spoke HTTP");
    }
}

fn written(revision: u64) -> Answer {
    Answer::Written { revision }
}

fn unavailable() -> ApiError {
    ApiError::Unavailable {
        reason: UnavailableReason::ReadsPending,
    }
}

fn not_leader(leader: Option<&str>) -> ApiError {
    ApiError::NotLeader {
        leader_id: leader.map(|_| 2),
        leader_address: leader.map(str::to_string),
    }
}

fn write_timeout() -> ApiError {
    ApiError::Timeout {
        what: TimeoutKind::Write,
    }
}

/// A node's status naming `leader` (its address) as the leader.
fn status(node_id: u64, role: NodeRole, leader: Option<&str>) -> Answer {
    Answer::Status(Box::new(NodeStatus {
        node_id,
        role,
        term: 1,
        leader_id: leader.map(|_| 9),
        leader_address: leader.map(str::to_string),
        commit_index: 0,
        applied_index: 0,
        last_index: 0,
        snapshot_index: 0,
        leader_ready: false,
        membership_change_in_progress: false,
        transfer_in_progress: false,
        removed: Vec::new(),
        members: Vec::new(),
        metrics_address: None,
        wal: WalStatus::default(),
        alarms: Vec::new(),
    }))
}

/// One connection: native frames (it opens with the frame magic, as a node tells them
/// apart); anything else is counted and closed.
fn serve_conn(mut c: TcpStream, sh: &Shared) {
    // A stuck client must not hang the test forever.
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut first = [0u8; 4];
    if c.read_exact(&mut first).is_err() {
        return;
    }
    if first == MAGIC {
        serve_native(c, first, sh);
    } else {
        sh.other.fetch_add(1, Ordering::SeqCst);
    }
}

/// Native requests, each recorded and met with its act, until the client closes.
fn serve_native(mut c: TcpStream, first: [u8; 4], sh: &Shared) {
    let mut h = [0u8; HEADER_BYTES];
    h[..4].copy_from_slice(&first);
    let mut have = 4;
    loop {
        if c.read_exact(&mut h[have..]).is_err() {
            return;
        }
        have = 0;
        let hdr = FrameHeader::decode(&h, 1 << 20).expect("a native frame header");
        let mut body = rkyv::util::AlignedVec::<16>::new();
        body.resize(hdr.body_bytes as usize, 0);
        if c.read_exact(&mut body).is_err() {
            return;
        }
        let req = native::decode_request(&body).expect("a native request");
        let id = req.id();
        let status = matches!(req, Request::Status { .. });
        sh.native.lock().unwrap().push(req);
        let act = match sh.status_act.lock().unwrap().clone() {
            Some(a) if status => a,
            _ => sh.act.lock().unwrap().clone(),
        };
        match act {
            Act::Reply(outcome) => {
                let body = native::encode(&native::Response { id, outcome });
                let mut frame = FrameHeader::for_body(FrameKind::Client, &body)
                    .encode()
                    .to_vec();
                frame.extend_from_slice(&body);
                if c.write_all(&frame).is_err() {
                    return;
                }
            }
            Act::Close => return,
            Act::Hang => {}
        }
    }
}

/// An address nothing listens on: connections are refused.
fn refused_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Runs `ringkv ARGS`: (exit code, stdout, stderr).
fn ringkv(args: &[&str]) -> (i32, String, String) {
    ringkv_env(args, None)
}

/// Runs `ringkv ARGS` with `RINGKV_TOKEN` set to `token`, or unset when `None`.
fn ringkv_env(args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringkv"));
    cmd.args(args);
    match token {
        Some(t) => cmd.env("RINGKV_TOKEN", t),
        None => cmd.env_remove("RINGKV_TOKEN"),
    };
    let out = cmd.output().unwrap();
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn endpoints(nodes: &[&str]) -> String {
    nodes.join(",")
}

#[test]
fn a_refused_endpoint_or_an_unavailable_node_moves_on_to_the_next() {
    let dead = refused_addr();
    let busy = FakeNode::error(unavailable());
    let live = FakeNode::ok(written(7));
    let eps = endpoints(&[&dead, &busy.addr, &live.addr]);
    let (code, out, err) = ringkv(&["put", "k", "v", "--endpoints", &eps]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "{\"revision\":7}\n", "")
    );
    // Nothing was written at the busy node (503), so trying the next one was safe. Each
    // was asked its status first (none named a leader), then the write in order.
    assert_eq!(busy.native(), ["status", r#"put "k" "v""#]);
    assert_eq!(live.native(), ["status", r#"put "k" "v""#]);
}

#[test]
fn not_leader_is_retried_once_at_the_leader_it_names() {
    let leader = FakeNode::ok(written(3));
    let follower = FakeNode::error(not_leader(Some(&leader.addr)));
    // Its status names no leader, so the write itself meets the not_leader.
    follower.set_status(Act::Reply(Ok(status(1, NodeRole::Follower, None))));
    let (code, out, _) = ringkv(&["delete", "k", "--endpoints", &follower.addr]);
    assert_eq!((code, out.as_str()), (0, "{\"revision\":3}\n"));
    assert_eq!(follower.native(), ["status", r#"delete "k""#]);
    assert_eq!(leader.native(), [r#"delete "k""#]);

    // A status naming the leader: the write goes straight there.
    let named = FakeNode::ok(written(4));
    follower.set_status(Act::Reply(Ok(status(
        1,
        NodeRole::Follower,
        Some(&named.addr),
    ))));
    let (code, out, _) = ringkv(&["put", "k", "v", "--endpoints", &follower.addr]);
    assert_eq!((code, out.as_str()), (0, "{\"revision\":4}\n"));
    assert_eq!(
        follower.writes(),
        [r#"delete "k""#],
        "the put did not go there"
    );
    assert_eq!(named.native(), [r#"put "k" "v""#]);

    // Two nodes naming each other: each is asked once, then the error is reported.
    let (a, b) = (FakeNode::start(Act::Close), FakeNode::start(Act::Close));
    a.set(Act::Reply(Err(not_leader(Some(&b.addr)))));
    b.set(Act::Reply(Err(not_leader(Some(&a.addr)))));
    let (code, out, err) = ringkv(&["put", "k", "v", "--endpoints", &a.addr]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("\"code\":\"not_leader\""), "{err}");
    assert!(err.contains("no endpoint could serve it"), "{err}");
    // a's status named b; the put went to b, which named a, which named b again.
    assert_eq!((a.writes().len(), b.writes().len()), (1, 1));
    assert_eq!(a.native().len() + b.native().len(), 3, "one status");
}

#[test]
fn a_write_is_never_resent_once_sent() {
    let good = FakeNode::ok(written(9));

    // The node reads the whole request, then closes without answering.
    let dropper = FakeNode::start(Act::Close);
    for args in [&["put", "k", "v"][..], &["delete", "k"][..]] {
        let eps = endpoints(&[&dropper.addr, &good.addr]);
        let (code, out, err) = ringkv(&[args, &["--endpoints", &eps]].concat());
        assert_eq!((code, out.as_str()), (3, ""), "{args:?}: {err}");
        assert!(err.contains("outcome unknown"), "{err}");
        assert!(err.contains(&dropper.addr), "{err}");
        assert!(err.contains("not resent"), "{err}");
    }
    // Each command asked the status first (the dropper closed on it too), then sent the
    // write once.
    assert_eq!(
        dropper.native(),
        ["status", r#"put "k" "v""#, "status", r#"delete "k""#],
        "one write per command"
    );
    assert_eq!(good.writes().len(), 0, "a write was resent");

    // No reply within --timeout-ms.
    let hanger = FakeNode::start(Act::Hang);
    let eps = endpoints(&[&hanger.addr, &good.addr]);
    let (code, _, err) = ringkv(&["put", "k", "v", "--endpoints", &eps, "--timeout-ms", "300"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("outcome unknown") && err.contains("timed out"),
        "{err}"
    );

    // The node's own 504 timeout: outcome unknown too; its reply is shown.
    let slow = FakeNode::error(write_timeout());
    let eps = endpoints(&[&slow.addr, &good.addr]);
    let (code, _, err) = ringkv(&["put", "k", "v", "--endpoints", &eps]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("\"code\":\"timeout\"") && err.contains("outcome unknown"));
    assert_eq!((hanger.writes().len(), slow.writes().len()), (1, 1));
    assert_eq!(good.writes().len(), 0, "a write was resent");

    // Reads and status are safe to retry on the next endpoint.
    let eps = endpoints(&[&dropper.addr, &hanger.addr, &slow.addr, &good.addr]);
    let (code, out, err) = ringkv(&["get", "k", "--endpoints", &eps, "--timeout-ms", "300"]);
    assert_eq!((code, out.as_str()), (0, "{\"revision\":9}\n"), "{err}");
    let (code, _, err) = ringkv(&["status", "--endpoints", &eps, "--timeout-ms", "300"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dropper.native()[4..], [r#"get "k" 0"#, "status"]);
    assert_eq!(hanger.native()[2..], [r#"get "k" 0"#, "status"]);
    assert_eq!(slow.native()[2..], [r#"get "k" 0"#, "status"]);
    let seen = good.native();
    assert_eq!(seen[seen.len() - 2..], [r#"get "k" 0"#, "status"]);
}

#[test]
fn awkward_keys_and_values_round_trip() {
    let node = FakeNode::ok(written(1));
    let key = "a b&c=d%e+f\"g'h/ü?#✓";
    let value = "say \"hi\"\n\t& 100% = done ✓ \\ end";
    for args in [
        vec!["put", key, value],
        vec!["get", key, "--consistency", "linearizable"],
        vec!["get", key],
        vec!["delete", key],
        vec!["put", "-dash", "-5"],
    ] {
        let (code, _, err) = ringkv(&[&args[..], &["--endpoints", &node.addr]].concat());
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    // The bytes as given, ids left out; each write after its status request.
    let seen: Vec<Request> = node
        .native
        .lock()
        .unwrap()
        .iter()
        .filter(|r| !matches!(r, Request::Status { .. }))
        .map(|r| match r.clone() {
            Request::Put { key, value, .. } => Request::Put { id: 0, key, value },
            Request::Get {
                key, consistency, ..
            } => Request::Get {
                id: 0,
                key,
                consistency,
            },
            Request::Delete { key, .. } => Request::Delete { id: 0, key },
            other => unreachable!("{other:?}"),
        })
        .collect();
    let (k, v) = (key.as_bytes().to_vec(), value.as_bytes().to_vec());
    assert_eq!(
        seen,
        [
            Request::Put {
                id: 0,
                key: k.clone(),
                value: v
            },
            Request::Get {
                id: 0,
                key: k.clone(),
                consistency: native::CONSISTENCY_LINEARIZABLE
            },
            Request::Get {
                id: 0,
                key: k.clone(),
                consistency: native::CONSISTENCY_DEFAULT
            },
            Request::Delete { id: 0, key: k },
            Request::Put {
                id: 0,
                key: b"-dash".to_vec(),
                value: b"-5".to_vec()
            },
        ]
    );
    assert_eq!(node.native().len(), 5 + 3, "a status before each write");
}

#[test]
fn exit_codes() {
    // Usage errors: 2, before any connection.
    let node = FakeNode::ok(written(1));
    let ep = node.addr.as_str();
    for args in [
        &["put", "k", "--endpoints", ep][..],
        &["put", "k", "v", "--endpoints", "no-port"],
        &["put", "k", "v", "--endpoints", "127.0.0.1:0"],
        &["put", "k", "v", "--endpoints", ","],
        &["get", "k", "--consistency", "strong", "--endpoints", ep],
        &["get", "k", "--timeout-ms", "0", "--endpoints", ep],
        &["status", "--bogus", "--endpoints", ep],
        &["frobnicate"],
    ] {
        let (code, _, err) = ringkv(args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    assert_eq!(node.requests(), 0);

    // An error reply: its JSON on stderr, exit 1, no other endpoint asked.
    let missing = FakeNode::error(ApiError::NotFound {
        key: b"nokey".to_vec(),
    });
    let eps = endpoints(&[&missing.addr, &node.addr]);
    let (code, out, err) = ringkv(&["get", "nokey", "--endpoints", &eps]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&err).unwrap()["code"],
        "not_found"
    );
    assert_eq!((missing.requests(), node.requests()), (1, 0));

    // Every node answers 503: an error reply (1), naming what each said.
    let busy = FakeNode::error(unavailable());
    let (code, _, err) = ringkv(&["put", "k", "v", "--endpoints", &busy.addr]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("{}: 503 unavailable", busy.addr)),
        "{err}"
    );

    // Nothing reachable: 3, naming every endpoint and its error.
    let (d1, d2) = (refused_addr(), refused_addr());
    for cmd in [&["put", "k", "v"][..], &["get", "k"], &["status"]] {
        let (code, out, err) = ringkv(&[cmd, &["--endpoints", &endpoints(&[&d1, &d2])]].concat());
        assert_eq!((code, out.as_str()), (3, ""), "{cmd:?}");
        assert!(err.contains("no endpoint reachable"), "{err}");
        for d in [&d1, &d2] {
            assert!(err.contains(&format!("{d}: Connection refused")), "{err}");
        }
    }
}

#[test]
fn status_prints_the_first_answer_or_every_endpoint_with_all() {
    let n1 = FakeNode::ok(status(1, NodeRole::Follower, None));
    let n3 = FakeNode::ok(status(3, NodeRole::Leader, None));
    let dead = refused_addr();
    let eps = endpoints(&[&dead, &n1.addr, &n3.addr]);

    let (code, out, _) = ringkv(&["status", "--endpoints", &eps]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&st["node_id"], &st["role"]),
        (&1.into(), &"follower".into())
    );
    assert_eq!(n3.requests(), 0);

    let (code, out, _) = ringkv(&["status", "--all", "--endpoints", &eps]);
    assert_eq!(code, 1, "one endpoint did not answer");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["endpoint"], dead.as_str());
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("Connection refused")
    );
    assert_eq!(
        (&lines[1]["node_id"], &lines[2]["node_id"]),
        (&1.into(), &3.into())
    );
    assert_eq!(n3.native(), ["status"]);

    let all_up = endpoints(&[&n1.addr, &n3.addr]);
    assert_eq!(ringkv(&["status", "--all", "--endpoints", &all_up]).0, 0);
    let all_down = endpoints(&[&dead]);
    assert_eq!(ringkv(&["status", "--all", "--endpoints", &all_down]).0, 3);
}

/// Each admin command, its arguments, and the operator call it must send.
fn admin_commands() -> Vec<(Vec<&'static str>, AdminOp)> {
    vec![
        (
            vec!["join", "4", "127.0.0.1:9084"],
            AdminOp::Join {
                node_id: 4,
                address: "127.0.0.1:9084".into(),
            },
        ),
        (vec!["promote", "4"], AdminOp::Promote { node_id: 4 }),
        (vec!["remove", "2"], AdminOp::Remove { node_id: 2 }),
        (
            vec!["transfer-leader", "3"],
            AdminOp::TransferLeader { node_id: 3 },
        ),
        (vec!["snapshot"], AdminOp::Snapshot),
    ]
}

/// The operator call and token of the last native request `node` received.
fn last_admin(node: &FakeNode) -> (AdminOp, Option<String>) {
    match node.requests_seen().pop() {
        Some(Request::Admin { op, token, .. }) => (op, token),
        other => panic!("not an operator call: {other:?}"),
    }
}

#[test]
fn admin_commands_send_their_request_and_token() {
    let node = FakeNode::ok(Answer::Promoted { node_id: 4 });
    for (args, op) in admin_commands() {
        let (code, out, err) = ringkv(
            &[
                &args[..],
                &["--endpoints", &node.addr, "--token", "s3cret-T0ken"],
            ]
            .concat(),
        );
        assert_eq!(
            (code, out.as_str()),
            (0, "{\"node_id\":4,\"role\":\"voter\"}\n"),
            "{args:?}: {err}"
        );
        assert_eq!(last_admin(&node), (op, Some("s3cret-T0ken".into())));
    }
    assert_eq!(
        node.native().len(),
        5,
        "one call per command, no status round"
    );

    // The token from RINGKV_TOKEN; --token wins over it; none when both are absent or the
    // variable is empty.
    let promote = ["promote", "4", "--endpoints", &node.addr];
    let token_sent = |args: &[&str], env: Option<&str>| {
        let (code, _, err) = ringkv_env(args, env);
        assert_eq!(code, 0, "{args:?} {env:?}: {err}");
        last_admin(&node).1
    };
    assert_eq!(
        token_sent(&promote, Some("from-env")),
        Some("from-env".into())
    );
    assert_eq!(
        token_sent(
            &[&promote[..], &["--token", "flag"]].concat(),
            Some("from-env")
        ),
        Some("flag".into())
    );
    assert_eq!(token_sent(&promote, None), None);
    assert_eq!(token_sent(&promote, Some("")), None);
    // Plain writes never carry it.
    let (code, _, err) = ringkv_env(&["put", "k", "v", "--endpoints", &node.addr], Some("t"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(node.native().last().unwrap(), r#"put "k" "v""#);
}

#[test]
fn admin_commands_are_never_resent_once_sent() {
    let good = FakeNode::ok(Answer::Promoted { node_id: 5 });
    let dropper = FakeNode::start(Act::Close);
    let eps = endpoints(&[&dropper.addr, &good.addr]);
    for (args, _) in admin_commands() {
        let (code, out, err) = ringkv(&[&args[..], &["--endpoints", &eps]].concat());
        assert_eq!((code, out.as_str()), (3, ""), "{args:?}: {err}");
        assert!(
            err.contains(&format!("ringkv {}: outcome unknown", args[0])),
            "{err}"
        );
        assert!(
            err.contains(&dropper.addr) && err.contains("not resent"),
            "{err}"
        );
        assert!(err.contains("check with ringkv status"), "{err}");
    }
    assert_eq!(dropper.writes().len(), 5, "one request per command");

    // No reply in time, or the node's own 504: outcome unknown too.
    let hanger = FakeNode::start(Act::Hang);
    let eps = endpoints(&[&hanger.addr, &good.addr]);
    let (code, _, err) = ringkv(&["promote", "4", "--endpoints", &eps, "--timeout-ms", "300"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("outcome unknown") && err.contains("timed out"),
        "{err}"
    );
    let slow = FakeNode::error(ApiError::Timeout {
        what: TimeoutKind::Call,
    });
    let eps = endpoints(&[&slow.addr, &good.addr]);
    let (code, _, err) = ringkv(&["transfer-leader", "2", "--endpoints", &eps]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("\"code\":\"timeout\"") && err.contains("outcome unknown"));
    assert_eq!(good.requests(), 0, "an admin call was resent");

    // Before anything was done they move on as writes do: a refused port, 503 unavailable,
    // and not_leader (redirected to the leader it names).
    let dead = refused_addr();
    let busy = FakeNode::error(unavailable());
    let follower = FakeNode::error(not_leader(Some(&good.addr)));
    let eps = endpoints(&[&dead, &busy.addr, &follower.addr]);
    let (code, _, err) = ringkv(&["promote", "5", "--endpoints", &eps, "--token", "t"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(good.requests(), 1);
    let promote5 = (AdminOp::Promote { node_id: 5 }, Some("t".to_string()));
    assert_eq!(last_admin(&good), promote5);
    assert_eq!(last_admin(&follower), promote5);

    // The node refuses (a lagging learner): its JSON on stderr, exit 1, nothing resent.
    let lagging = FakeNode::error(ApiError::LearnerLagging {
        node_id: 4,
        lag: Some(900),
        lag_max: 100,
    });
    let eps = endpoints(&[&lagging.addr, &good.addr]);
    let (code, out, err) = ringkv(&["promote", "4", "--endpoints", &eps]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&err).unwrap()["code"],
        "learner_lagging"
    );
    assert_eq!((lagging.requests(), good.requests()), (1, 1));
}

#[test]
fn admin_usage_errors_send_nothing() {
    let node = FakeNode::ok(written(1));
    let ep = node.addr.as_str();
    for (args, token) in [
        (&["promote", "0", "--endpoints", ep][..], None),
        (&["promote", "four", "--endpoints", ep], None),
        (&["promote", "--endpoints", ep], None),
        (&["remove", "-1", "--endpoints", ep], None),
        (&["transfer-leader", "--endpoints", ep], None),
        (&["join", "4", "--endpoints", ep], None),
        (&["join", "4", "localhost:9084", "--endpoints", ep], None),
        (&["join", "4", "127.0.0.1", "--endpoints", ep], None),
        (&["join", "0", "127.0.0.1:9084", "--endpoints", ep], None),
        (&["snapshot", "now", "--endpoints", ep], None),
        (&["snapshot", "--token", "", "--endpoints", ep], None),
        (&["snapshot", "--token", "a b", "--endpoints", ep], None),
        (&["snapshot", "--endpoints", ep], Some("bad\r\nX-Evil: 1")),
        (
            &["promote", "4", "--timeout-ms", "0", "--endpoints", ep],
            None,
        ),
    ] {
        let (code, _, err) = ringkv_env(args, token);
        assert_eq!(code, 2, "{args:?} {token:?}: {err}");
    }
    assert_eq!(node.requests(), 0);
    let (_, _, err) = ringkv_env(&["snapshot", "--endpoints", ep], Some("a b"));
    assert!(
        err.contains("RINGKV_TOKEN: a token is printable ASCII"),
        "{err}"
    );
    let (_, _, err) = ringkv(&["join", "4", "localhost:9084", "--endpoints", ep]);
    assert!(
        err.contains("is not an address like 127.0.0.1:9084"),
        "{err}"
    );
}
