//! The client commands (`ringkv put|get|delete|status` and the admin commands
//! `join|promote|remove|transfer-leader|snapshot`) as operators run them: the real binary
//! against small fake nodes on 127.0.0.1 ephemeral ports that answer with canned replies and
//! record every request they receive.
//!
//! Asserted: fallback past a refused port and a 503 `unavailable`, the `not_leader`
//! redirect (and no redirect loop), a write never resent once it was sent (connection
//! dropped, no reply in time, 504), reads retried elsewhere, awkward keys and values
//! escaped correctly, `status --all`, and the exit codes; for admin commands the path, body
//! and token header sent (`--token` or `RINGKV_TOKEN`), no resend once sent, and usage
//! errors caught before any connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a fake node does with a request it has read whole.
#[derive(Clone)]
enum Act {
    /// Answer with this status and JSON body.
    Reply(u16, String),
    /// Close the connection without answering.
    Close,
    /// Never answer; wait until the client gives up and closes.
    Hang,
}

/// A request as a fake node received it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("the client sends JSON bodies")
    }
}

/// A fake node: one accept thread, one connection at a time. Dropping it stops the thread
/// and frees the port.
struct FakeNode {
    addr: String,
    act: Arc<Mutex<Act>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeNode {
    fn start(act: Act) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let act = Arc::new(Mutex::new(act));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (act, seen, stop) = (act.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(c) = conn {
                        let act = act.lock().unwrap().clone();
                        serve_one(c, &act, &seen);
                    }
                }
            })
        };
        Self {
            addr,
            act,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn ok(body: &str) -> Self {
        Self::start(Act::Reply(200, body.into()))
    }

    fn error(status: u16, code: &str, extra: serde_json::Value) -> Self {
        Self::start(error_reply(status, code, extra))
    }

    fn set(&self, act: Act) {
        *self.act.lock().unwrap() = act;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
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
    }
}

fn error_reply(status: u16, code: &str, extra: serde_json::Value) -> Act {
    let mut body = serde_json::json!({ "error": format!("test says {code}"), "code": code });
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    Act::Reply(status, body.to_string())
}

fn serve_one(mut c: TcpStream, act: &Act, seen: &Mutex<Vec<Seen>>) {
    // A stuck client must not hang the test forever.
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let req = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = r.parse(&buf) {
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    let v = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_string(), v)
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            if buf.len() >= head + len {
                break Seen {
                    method: r.method.unwrap().to_string(),
                    target: r.path.unwrap().to_string(),
                    body: String::from_utf8(buf[head..head + len].to_vec()).unwrap(),
                    headers,
                };
            }
        }
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    seen.lock().unwrap().push(req);
    match act {
        Act::Reply(status, body) => {
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(body.as_bytes());
            let _ = c.shutdown(Shutdown::Both);
        }
        Act::Close => drop(c),
        Act::Hang => while matches!(c.read(&mut chunk), Ok(n) if n > 0) {},
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

/// The node's decoding of a query value (`%XX` as bytes, `+` as a space), for round trips.
fn query_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn a_refused_endpoint_or_an_unavailable_node_moves_on_to_the_next() {
    let dead = refused_addr();
    let busy = FakeNode::error(503, "unavailable", serde_json::json!({}));
    let live = FakeNode::ok(r#"{"index":7}"#);
    let eps = endpoints(&[&dead, &busy.addr, &live.addr]);
    let (code, out, err) = ringkv(&["put", "k", "v", "--endpoints", &eps]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "{\"index\":7}\n", "")
    );
    // Nothing was written at the busy node (503), so trying the next one was safe.
    assert_eq!(busy.seen().len(), 1);
    let seen = live.seen();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/put"));
    assert_eq!(r.json(), serde_json::json!({ "key": "k", "value": "v" }));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("content-length"), Some(&*r.body.len().to_string()));
}

#[test]
fn not_leader_is_retried_once_at_the_leader_it_names() {
    let leader = FakeNode::ok(r#"{"index":3}"#);
    let follower = FakeNode::error(
        503,
        "not_leader",
        serde_json::json!({ "leader_id": 2, "leader_address": leader.addr }),
    );
    let (code, out, _) = ringkv(&["delete", "k", "--endpoints", &follower.addr]);
    assert_eq!((code, out.as_str()), (0, "{\"index\":3}\n"));
    assert_eq!(follower.seen().len(), 1);
    let seen = leader.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/delete");
    assert_eq!(seen[0].json(), serde_json::json!({ "key": "k" }));

    // Two nodes naming each other: each is asked once, then the error is reported.
    let (a, b) = (FakeNode::start(Act::Close), FakeNode::start(Act::Close));
    let names = |n: &FakeNode| serde_json::json!({ "leader_id": 9, "leader_address": n.addr });
    a.set(error_reply(503, "not_leader", names(&b)));
    b.set(error_reply(503, "not_leader", names(&a)));
    let (code, out, err) = ringkv(&["put", "k", "v", "--endpoints", &a.addr]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("\"code\":\"not_leader\""), "{err}");
    assert!(err.contains("no endpoint could serve it"), "{err}");
    assert_eq!((a.seen().len(), b.seen().len()), (1, 1));
}

#[test]
fn a_write_is_never_resent_once_sent() {
    let good = FakeNode::ok(r#"{"index":9}"#);

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
    assert_eq!(dropper.seen().len(), 2, "one request per command");
    assert_eq!(good.seen().len(), 0, "a write was resent");

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
    let slow = FakeNode::error(504, "timeout", serde_json::json!({}));
    let eps = endpoints(&[&slow.addr, &good.addr]);
    let (code, _, err) = ringkv(&["put", "k", "v", "--endpoints", &eps]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("\"code\":\"timeout\"") && err.contains("outcome unknown"));
    assert_eq!((hanger.seen().len(), slow.seen().len()), (1, 1));
    assert_eq!(good.seen().len(), 0, "a write was resent");

    // Reads and status are safe to retry on the next endpoint.
    let eps = endpoints(&[&dropper.addr, &hanger.addr, &slow.addr, &good.addr]);
    let (code, out, err) = ringkv(&["get", "k", "--endpoints", &eps, "--timeout-ms", "300"]);
    assert_eq!((code, out.as_str()), (0, "{\"index\":9}\n"), "{err}");
    let (code, _, err) = ringkv(&["status", "--endpoints", &eps, "--timeout-ms", "300"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dropper.seen().len(), 4);
    assert_eq!(good.seen().len(), 2);
    assert_eq!(good.seen()[1].target, "/status");
}

#[test]
fn awkward_keys_and_values_round_trip() {
    let node = FakeNode::ok("{}");
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
    let seen = node.seen();
    assert_eq!(seen.len(), 5);
    assert_eq!(
        seen[0].json(),
        serde_json::json!({ "key": key, "value": value })
    );
    let encoded = "a%20b%26c%3Dd%25e%2Bf%22g%27h%2F%C3%BC%3F%23%E2%9C%93";
    assert_eq!(
        seen[1].target,
        format!("/get?key={encoded}&consistency=linearizable")
    );
    assert_eq!(seen[2].target, format!("/get?key={encoded}"));
    assert_eq!(query_decode(encoded), key);
    assert_eq!(seen[2].method, "GET");
    assert_eq!(seen[3].json(), serde_json::json!({ "key": key }));
    assert_eq!(
        seen[4].json(),
        serde_json::json!({ "key": "-dash", "value": "-5" })
    );
}

#[test]
fn exit_codes() {
    // Usage errors: 2, before any connection.
    let node = FakeNode::ok("{}");
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
    assert_eq!(node.seen().len(), 0);

    // An error reply: its JSON on stderr, exit 1, no other endpoint asked.
    let missing = FakeNode::error(404, "not_found", serde_json::json!({}));
    let eps = endpoints(&[&missing.addr, &node.addr]);
    let (code, out, err) = ringkv(&["get", "nokey", "--endpoints", &eps]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&err).unwrap()["code"],
        "not_found"
    );
    assert_eq!((missing.seen().len(), node.seen().len()), (1, 0));

    // Every node answers 503: an error reply (1), naming what each said.
    let busy = FakeNode::error(503, "unavailable", serde_json::json!({}));
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
    let n1 = FakeNode::ok(r#"{"node_id":1,"role":"follower"}"#);
    let n3 = FakeNode::ok(r#"{"node_id":3,"role":"leader"}"#);
    let dead = refused_addr();
    let eps = endpoints(&[&dead, &n1.addr, &n3.addr]);

    let (code, out, _) = ringkv(&["status", "--endpoints", &eps]);
    assert_eq!(
        (code, out.as_str()),
        (0, "{\"node_id\":1,\"role\":\"follower\"}\n")
    );
    assert_eq!(n3.seen().len(), 0);

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
    let seen = n3.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("GET", "/status")
    );

    let all_up = endpoints(&[&n1.addr, &n3.addr]);
    assert_eq!(ringkv(&["status", "--all", "--endpoints", &all_up]).0, 0);
    let all_down = endpoints(&[&dead]);
    assert_eq!(ringkv(&["status", "--all", "--endpoints", &all_down]).0, 3);
}

/// Each admin command, its arguments, and the (path, JSON body) it must send.
fn admin_commands() -> Vec<(Vec<&'static str>, &'static str, serde_json::Value)> {
    vec![
        (
            vec!["join", "4", "127.0.0.1:9084"],
            "/join",
            serde_json::json!({ "node_id": 4, "address": "127.0.0.1:9084" }),
        ),
        (
            vec!["promote", "4"],
            "/promote",
            serde_json::json!({ "node_id": 4 }),
        ),
        (
            vec!["remove", "2"],
            "/remove",
            serde_json::json!({ "node_id": 2 }),
        ),
        (
            vec!["transfer-leader", "3"],
            "/transfer-leader",
            serde_json::json!({ "node_id": 3 }),
        ),
        (vec!["snapshot"], "/snapshot", serde_json::json!({})),
    ]
}

#[test]
fn admin_commands_send_their_request_and_token() {
    let node = FakeNode::ok(r#"{"ok":true}"#);
    for (args, path, body) in admin_commands() {
        let (code, out, err) = ringkv(
            &[
                &args[..],
                &["--endpoints", &node.addr, "--token", "s3cret-T0ken"],
            ]
            .concat(),
        );
        assert_eq!(
            (code, out.as_str()),
            (0, "{\"ok\":true}\n"),
            "{args:?}: {err}"
        );
        let seen = node.seen();
        let r = seen.last().unwrap();
        assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", path));
        assert_eq!(r.json(), body, "{args:?}");
        assert_eq!(r.header("x-ringkv-token"), Some("s3cret-T0ken"));
        assert_eq!(r.header("authorization"), None);
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(r.header("content-length"), Some(&*r.body.len().to_string()));
    }
    assert_eq!(node.seen().len(), 5);

    // The token from RINGKV_TOKEN; --token wins over it; none (no header) when both are
    // absent or the variable is empty.
    let promote = ["promote", "4", "--endpoints", &node.addr];
    let token_sent = |args: &[&str], env: Option<&str>| {
        let (code, _, err) = ringkv_env(args, env);
        assert_eq!(code, 0, "{args:?} {env:?}: {err}");
        node.seen()
            .last()
            .unwrap()
            .header("x-ringkv-token")
            .map(String::from)
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
    // Plain writes never send it.
    assert_eq!(
        token_sent(&["put", "k", "v", "--endpoints", &node.addr], Some("t")),
        None
    );
}

#[test]
fn admin_commands_are_never_resent_once_sent() {
    let good = FakeNode::ok("{}");
    let dropper = FakeNode::start(Act::Close);
    let eps = endpoints(&[&dropper.addr, &good.addr]);
    for (args, _, _) in admin_commands() {
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
    assert_eq!(dropper.seen().len(), 5, "one request per command");

    // No reply in time, or the node's own 504: outcome unknown too.
    let hanger = FakeNode::start(Act::Hang);
    let eps = endpoints(&[&hanger.addr, &good.addr]);
    let (code, _, err) = ringkv(&["promote", "4", "--endpoints", &eps, "--timeout-ms", "300"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("outcome unknown") && err.contains("timed out"),
        "{err}"
    );
    let slow = FakeNode::error(504, "timeout", serde_json::json!({}));
    let eps = endpoints(&[&slow.addr, &good.addr]);
    let (code, _, err) = ringkv(&["transfer-leader", "2", "--endpoints", &eps]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("\"code\":\"timeout\"") && err.contains("outcome unknown"));
    assert_eq!(good.seen().len(), 0, "an admin call was resent");

    // Before anything was done they move on as writes do: a refused port, 503 unavailable,
    // and not_leader (redirected to the leader it names).
    let dead = refused_addr();
    let busy = FakeNode::error(503, "unavailable", serde_json::json!({}));
    let follower = FakeNode::error(
        503,
        "not_leader",
        serde_json::json!({ "leader_id": 1, "leader_address": good.addr }),
    );
    let eps = endpoints(&[&dead, &busy.addr, &follower.addr]);
    let (code, _, err) = ringkv(&["promote", "5", "--endpoints", &eps, "--token", "t"]);
    assert_eq!(code, 0, "{err}");
    let seen = good.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].json(), serde_json::json!({ "node_id": 5 }));
    assert_eq!(seen[0].header("x-ringkv-token"), Some("t"));
    assert_eq!(follower.seen()[0].header("x-ringkv-token"), Some("t"));

    // The node refuses (a lagging learner): its JSON on stderr, exit 1, nothing resent.
    let lagging = FakeNode::error(409, "learner_lagging", serde_json::json!({}));
    let eps = endpoints(&[&lagging.addr, &good.addr]);
    let (code, out, err) = ringkv(&["promote", "4", "--endpoints", &eps]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&err).unwrap()["code"],
        "learner_lagging"
    );
    assert_eq!((lagging.seen().len(), good.seen().len()), (1, 1));
}

#[test]
fn admin_usage_errors_send_nothing() {
    let node = FakeNode::ok("{}");
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
    assert_eq!(node.seen().len(), 0);
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
