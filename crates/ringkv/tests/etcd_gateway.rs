//! etcd's JSON gateway (`curl -X POST host:port/v3/kv/put -d '{...}'`) on ringkv and on a
//! real etcd 3.4: the same requests (puts, ranges with prefix, limit, sort, revision and
//! their flags, deletes with prev_kv, txns with compares and nested ops, compaction,
//! leases with grant, time-to-live, list, keep-alive and revoke, members, status, alarms,
//! leadership transfer, and the error cases: etcd's own refusals, bodies that do not
//! decode, paths and methods the gateway does not serve) go through the workspace's
//! HTTP/1.1 client to a three-node ringkv and a three-member etcd. Each reply's status
//! and body are recorded with what differs by nature normalised (cluster and member ids,
//! raft terms and indexes, member names and URLs, database sizes, hashes, the lease ids
//! and remaining TTLs a server chooses, the wording of JSON syntax errors), and the two
//! records must be equal. Bodies are compared as text: field names, their order, quoting
//! and escapes all count.
//!
//! Needs etcd installed (`make test` installs it through `need-etcd`).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::{Cluster, Opts, loopback, wait_until};
use ringkv_client::http1;
use ringkv_harness::etcd::{EtcdCluster, installed};

/// base64, as the gateway carries keys and values.
fn b(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn exchange(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let r = http1::exchange(
        &addr.to_string(),
        method,
        path,
        &[],
        body.as_bytes(),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"));
    (r.status, r.body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// What normalising a value does.
enum Rewrite {
    Keep,
    Replace(String),
    Drop,
}

/// Where the JSON value starting at `i` ends (at the `,`, `}` or `]` after it).
fn value_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i = string_end(b, i);
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return i,
            b'}' | b']' => depth -= 1,
            b',' if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Where the JSON string starting at `i` (its opening quote) ends: after its closing one.
fn string_end(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while b[i] != b'"' {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i + 1
}

/// The elements of a JSON array's text.
fn elements(a: &str) -> Vec<&str> {
    let b = a.as_bytes();
    let mut out = Vec::new();
    let mut i = 1;
    while i < b.len() - 1 {
        let end = value_end(b, i);
        out.push(&a[i..end]);
        i = end + 1;
    }
    out
}

/// `text` (compact JSON) with the value of each key rewritten as `f` says; the elements
/// of the arrays under `sorted` keys are normalised and sorted (members and leases come in
/// each server's own order). Everything else is kept byte for byte.
fn rewrite(text: &str, f: &dyn Fn(&str, &str) -> Rewrite, sorted: &[&str]) -> String {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            let next = text[i..].find('"').map_or(b.len(), |n| i + n);
            out.push_str(&text[i..next]);
            i = next;
            continue;
        }
        let (start, end) = (i, string_end(b, i));
        let key_at = out.len();
        out.push_str(&text[start..end]);
        i = end;
        if b.get(i) != Some(&b':') {
            continue;
        }
        let key = &text[start + 1..end - 1];
        out.push(':');
        i += 1;
        let vend = value_end(b, i);
        let v = &text[i..vend];
        match f(key, v) {
            Rewrite::Replace(r) => {
                out.push_str(&r);
                i = vend;
            }
            Rewrite::Drop => {
                out.truncate(key_at);
                i = vend;
                if out.ends_with(',') {
                    out.pop();
                } else if b.get(i) == Some(&b',') {
                    i += 1;
                }
            }
            Rewrite::Keep if sorted.contains(&key) && v.starts_with('[') => {
                let mut els: Vec<String> = elements(v)
                    .into_iter()
                    .map(|e| rewrite(e, f, sorted))
                    .collect();
                els.sort();
                out.push_str(&format!("[{}]", els.join(",")));
                i = vend;
            }
            // Into the value: its own keys are rewritten in turn.
            Rewrite::Keep => {}
        }
    }
    out
}

/// One reply as sent: what asked for it, its status and body, and the keys to blank or
/// drop in it alone.
struct Reply {
    what: String,
    status: u16,
    body: String,
    blank: &'static [&'static str],
    drop: &'static [&'static str],
}

/// One cluster as the requests see it.
struct Ctx {
    nodes: Vec<SocketAddr>,
    /// Member ids (decimal, as the gateway writes them): the learner's too once added.
    members: Vec<String>,
    /// Lease ids the server chose.
    leases: Vec<String>,
    replies: Vec<Reply>,
}

impl Ctx {
    fn new(nodes: Vec<SocketAddr>) -> Ctx {
        let (_, list) = exchange(nodes[0], "POST", "/v3/cluster/member/list", "{}");
        let members = json(&list)["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["ID"].as_str().expect("an ID").to_string())
            .collect();
        Ctx {
            nodes,
            members,
            leases: Vec::new(),
            replies: Vec::new(),
        }
    }

    /// The member id of node `i` (found by its client URL).
    fn member_of(&self, i: usize) -> String {
        let (_, list) = exchange(self.nodes[0], "POST", "/v3/cluster/member/list", "{}");
        let url = format!("http://{}", self.nodes[i]);
        json(&list)["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["clientURLs"][0] == url.as_str())
            .map(|m| m["ID"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no member with client URL {url}: {list}"))
    }

    /// The index of the node that leads.
    fn leader(&self) -> usize {
        let (_, st) = exchange(self.nodes[0], "POST", "/v3/maintenance/status", "{}");
        let leader = json(&st)["leader"].as_str().expect("a leader").to_string();
        (0..self.nodes.len())
            .find(|i| self.member_of(*i) == leader)
            .expect("the leader is a node")
    }

    /// POSTs `body` to `path` on node `node`; the reply's body. `blank`: keys whose values
    /// differ by nature in this reply; `drop`: keys one server writes and the other does
    /// not, by nature.
    fn call(
        &mut self,
        what: &str,
        node: usize,
        path: &str,
        body: &str,
        blank: &'static [&'static str],
        drop: &'static [&'static str],
    ) -> String {
        self.call_as(what, "POST", node, path, body, blank, drop)
    }

    #[allow(clippy::too_many_arguments)]
    fn call_as(
        &mut self,
        what: &str,
        method: &str,
        node: usize,
        path: &str,
        body: &str,
        blank: &'static [&'static str],
        drop: &'static [&'static str],
    ) -> String {
        let (status, reply) = exchange(self.nodes[node], method, path, body);
        self.replies.push(Reply {
            what: format!("{what}: {method} {path}"),
            status,
            body: reply.clone(),
            blank,
            drop,
        });
        reply
    }

    /// The record: each reply's status and body, normalised once every id the cluster
    /// chose is known.
    fn record(&self) -> Vec<String> {
        self.replies
            .iter()
            .map(|r| {
                let f = |k: &str, v: &str| {
                    let unquoted = v.trim_matches('"');
                    match k {
                        _ if r.drop.contains(&k) => Rewrite::Drop,
                        "cluster_id" | "member_id" | "raft_term" | "raftTerm" | "leader"
                        | "dbSize" | "dbSizeInUse" | "raftIndex" | "raftAppliedIndex" | "hash"
                        | "name" | "peerURLs" | "clientURLs" => Rewrite::Replace(format!("<{k}>")),
                        _ if r.blank.contains(&k) => Rewrite::Replace(format!("<{k}>")),
                        "ID" | "memberID" | "targetID"
                            if self.members.iter().any(|m| m == unquoted) =>
                        {
                            Rewrite::Replace("<member>".into())
                        }
                        "ID" if self.leases.iter().any(|l| l == unquoted) => {
                            Rewrite::Replace("<lease>".into())
                        }
                        _ => Rewrite::Keep,
                    }
                };
                let body = rewrite(&r.body, &f, &["members", "leases"]);
                format!("{}\n  -> {} {body}", r.what, r.status)
            })
            .collect()
    }
}

/// Every request, in order, against one cluster: the record of its replies.
fn record(ctx: &mut Ctx) -> Vec<String> {
    let (a, bk, c) = (b("a"), b("b"), b("c"));
    let all = b("\0");
    // Keys and values.
    ctx.call(
        "put a",
        0,
        "/v3/kv/put",
        &format!(r#"{{"key":"{a}","value":"{}"}}"#, b("1")),
        &[],
        &[],
    );
    ctx.call(
        "put b, prev_kv of nothing",
        0,
        "/v3/kv/put",
        &format!(r#"{{"key":"{bk}","value":"{}","prev_kv":true}}"#, b("2")),
        &[],
        &[],
    );
    ctx.call(
        "put a again, prevKv",
        0,
        "/v3/kv/put",
        &format!(r#"{{"key":"{a}","value":"{}","prevKv":true}}"#, b("3")),
        &[],
        &[],
    );
    for (k, v) in [("c", "4"), ("d/x", "5"), ("d/y", "6"), ("e", "<&>")] {
        ctx.call(
            &format!("put {k}"),
            0,
            "/v3/kv/put",
            &format!(r#"{{"key":"{}","value":"{}"}}"#, b(k), b(v)),
            &[],
            &[],
        );
    }
    let ranges = [
        ("range a", format!(r#"{{"key":"{a}"}}"#)),
        (
            "range prefix d/",
            format!(r#"{{"key":"{}","range_end":"{}"}}"#, b("d/"), b("d0")),
        ),
        (
            "range everything, limit 2",
            format!(r#"{{"key":"{all}","range_end":"{all}","limit":2}}"#),
        ),
        (
            "range sorted by value, descending (names)",
            format!(
                r#"{{"key":"{all}","range_end":"{all}","sort_order":"DESCEND","sort_target":"VALUE"}}"#
            ),
        ),
        (
            "range sorted by mod revision, ascending (numbers, camelCase), keys only",
            format!(
                r#"{{"key":"{all}","rangeEnd":"{all}","sortOrder":1,"sortTarget":3,"keysOnly":true}}"#
            ),
        ),
        (
            "range count only",
            format!(r#"{{"key":"{all}","range_end":"{all}","count_only":true}}"#),
        ),
        (
            "range a at revision 2",
            format!(r#"{{"key":"{a}","revision":"2"}}"#),
        ),
        (
            "range by mod revision bounds",
            format!(
                r#"{{"key":"{all}","range_end":"{all}","min_mod_revision":"4","maxModRevision":6}}"#
            ),
        ),
        ("range missing key", format!(r#"{{"key":"{}"}}"#, b("nope"))),
        (
            "range with unknown fields and nulls",
            format!(r#"{{"key":"{a}","bogus":{{"x":[1]}},"limit":null,"keys_only":null}}"#),
        ),
    ];
    for (what, body) in &ranges {
        ctx.call(what, 0, "/v3/kv/range", body, &[], &[]);
    }
    // Linearizable first: the serializable read then sees the writes on that node.
    ctx.call(
        "range b on node 2",
        1,
        "/v3/kv/range",
        &format!(r#"{{"key":"{bk}"}}"#),
        &[],
        &[],
    );
    ctx.call(
        "range b on node 2, serializable",
        1,
        "/v3/kv/range",
        &format!(r#"{{"key":"{bk}","serializable":true}}"#),
        &[],
        &[],
    );
    ctx.call(
        "deleterange c, prev_kv",
        0,
        "/v3/kv/deleterange",
        &format!(r#"{{"key":"{c}","prev_kv":true}}"#),
        &[],
        &[],
    );
    ctx.call(
        "deleterange prefix d/, prevKv",
        0,
        "/v3/kv/deleterange",
        &format!(
            r#"{{"key":"{}","range_end":"{}","prevKv":true}}"#,
            b("d/"),
            b("d0")
        ),
        &[],
        &[],
    );
    ctx.call(
        "deleterange missing key",
        0,
        "/v3/kv/deleterange",
        &format!(r#"{{"key":"{}"}}"#, b("zz")),
        &[],
        &[],
    );
    // Transactions.
    ctx.call(
        "txn that succeeds, with a nested txn",
        0,
        "/v3/kv/txn",
        &format!(
            r#"{{"compare":[{{"key":"{a}","result":"EQUAL","target":"VALUE","value":"{}"}},
                            {{"key":"{bk}","target":"VERSION","result":"GREATER","version":"0"}}],
                 "success":[{{"request_put":{{"key":"{a}","value":"{}","prev_kv":true}}}},
                            {{"requestRange":{{"key":"{bk}"}}}},
                            {{"request_txn":{{"compare":[{{"key":"{e}","target":"CREATE","result":"LESS","createRevision":"100"}}],
                                              "success":[{{"request_delete_range":{{"key":"{e}","prev_kv":true}}}}]}}}}],
                 "failure":[{{"request_put":{{"key":"{a}","value":"{}"}}}}]}}"#,
            b("3"),
            b("10"),
            b("11"),
            e = b("e"),
        ),
        &[],
        &[],
    );
    ctx.call(
        "txn that fails",
        0,
        "/v3/kv/txn",
        &format!(
            r#"{{"compare":[{{"key":"{bk}","target":"MOD","result":"GREATER","mod_revision":"1000"}}],
                 "success":[{{"request_put":{{"key":"{bk}","value":"{}"}}}}],
                 "failure":[{{"request_range":{{"key":"{bk}","count_only":true}}}},
                            {{"request_delete_range":{{"key":"{}"}}}}]}}"#,
            b("x"),
            b("nothing")
        ),
        &[],
        &[],
    );
    ctx.call(
        "txn comparing a lease and a range (numbers for enums)",
        0,
        "/v3/kv/txn",
        &format!(
            r#"{{"compare":[{{"key":"{a}","target":4,"lease":"0"}},
                            {{"key":"{all}","range_end":"{all}","target":0,"result":1,"version":0}}]}}"#
        ),
        &[],
        &[],
    );
    ctx.call("txn of nothing", 0, "/v3/kv/txn", "{}", &[], &[]);
    // Leases.
    ctx.call(
        "lease grant with an id",
        0,
        "/v3/lease/grant",
        r#"{"TTL":60,"ID":7001}"#,
        &[],
        &[],
    );
    let chosen = ctx.call(
        "lease grant, the server picks the id",
        0,
        "/v3/lease/grant",
        r#"{"TTL":"30"}"#,
        &[],
        &[],
    );
    let chosen = json(&chosen)["ID"].as_str().expect("an ID").to_string();
    ctx.leases.push(chosen.clone());
    ctx.call(
        "lease grant of an id in use",
        0,
        "/v3/lease/grant",
        r#"{"TTL":60,"ID":7001}"#,
        &[],
        &[],
    );
    ctx.call(
        "put with a lease",
        0,
        "/v3/kv/put",
        &format!(
            r#"{{"key":"{}","value":"{}","lease":7001}}"#,
            b("lk"),
            b("v")
        ),
        &[],
        &[],
    );
    ctx.call(
        "put with a lease that does not exist",
        0,
        "/v3/kv/put",
        &format!(
            r#"{{"key":"{}","value":"{}","lease":"999"}}"#,
            b("lk2"),
            b("v")
        ),
        &[],
        &[],
    );
    ctx.call(
        "lease timetolive with keys",
        0,
        "/v3/lease/timetolive",
        r#"{"ID":7001,"keys":true}"#,
        &["TTL"],
        &[],
    );
    ctx.call(
        "lease timetolive under /v3/kv/lease",
        0,
        "/v3/kv/lease/timetolive",
        r#"{"ID":"7001"}"#,
        &["TTL"],
        &[],
    );
    ctx.call(
        "lease revoke under /v3/kv/lease",
        0,
        "/v3/kv/lease/revoke",
        &format!(r#"{{"ID":"{chosen}"}}"#),
        &[],
        &[],
    );
    ctx.call("lease leases", 0, "/v3/lease/leases", "{}", &[], &[]);
    ctx.call(
        "lease leases under /v3/kv/lease, empty body",
        0,
        "/v3/kv/lease/leases",
        "",
        &[],
        &[],
    );
    ctx.call(
        "lease keepalive",
        0,
        "/v3/lease/keepalive",
        r#"{"ID":7001}"#,
        &[],
        &[],
    );
    ctx.call(
        "lease keepalive of two, one unknown",
        0,
        "/v3/lease/keepalive",
        r#"{"ID":7001} {"ID":"999"}"#,
        &[],
        &[],
    );
    ctx.call(
        "lease keepalive, empty body",
        0,
        "/v3/lease/keepalive",
        "",
        &[],
        &[],
    );
    ctx.call(
        "lease keepalive, body not JSON",
        0,
        "/v3/lease/keepalive",
        "x",
        &["error", "message"],
        &[],
    );
    ctx.call(
        "lease keepalive, body not an object",
        0,
        "/v3/lease/keepalive",
        "[1]",
        &[],
        &[],
    );
    ctx.call(
        "lease revoke",
        0,
        "/v3/lease/revoke",
        r#"{"ID":7001}"#,
        &[],
        &[],
    );
    ctx.call(
        "lease revoke again",
        0,
        "/v3/lease/revoke",
        r#"{"ID":7001}"#,
        &[],
        &[],
    );
    ctx.call(
        "lease timetolive of a revoked lease",
        0,
        "/v3/lease/timetolive",
        r#"{"ID":7001}"#,
        &[],
        &[],
    );
    ctx.call(
        "range the revoked lease's key",
        0,
        "/v3/kv/range",
        &format!(r#"{{"key":"{}"}}"#, b("lk")),
        &[],
        &[],
    );
    // Compaction.
    ctx.call(
        "compaction at 5, physical",
        0,
        "/v3/kv/compaction",
        r#"{"revision":5,"physical":true}"#,
        &[],
        &[],
    );
    ctx.call(
        "compaction at 4",
        0,
        "/v3/kv/compaction",
        r#"{"revision":"4"}"#,
        &[],
        &[],
    );
    ctx.call(
        "range at a compacted revision",
        0,
        "/v3/kv/range",
        &format!(r#"{{"key":"{a}","revision":3}}"#),
        &[],
        &[],
    );
    ctx.call(
        "range at a future revision",
        0,
        "/v3/kv/range",
        &format!(r#"{{"key":"{a}","revision":"999"}}"#),
        &[],
        &[],
    );
    // etcd's refusals.
    for (what, path, body) in [
        ("range with an empty key", "/v3/kv/range", r#"{"key":""}"#),
        ("range, empty body", "/v3/kv/range", ""),
        ("put without a key", "/v3/kv/put", r#"{"value":"dg=="}"#),
        ("deleterange without a key", "/v3/kv/deleterange", "{}"),
        (
            "put ignore_value of a missing key",
            "/v3/kv/put",
            r#"{"key":"bm9wZQ==","ignore_value":true}"#,
        ),
        (
            "txn putting one key twice",
            "/v3/kv/txn",
            r#"{"success":[{"request_put":{"key":"YQ=="}},{"request_put":{"key":"YQ=="}}]}"#,
        ),
        // Bodies that do not make the message.
        // Go's encoder escapes <, > and &.
        (
            "range, unknown enum name",
            "/v3/kv/range",
            r#"{"key":"YQ==","sort_order":"<descend&>"}"#,
        ),
        ("range, key not base64", "/v3/kv/range", r#"{"key":"YQ"}"#),
        ("range, key a number", "/v3/kv/range", r#"{"key":5}"#),
        (
            "range, limit a fraction",
            "/v3/kv/range",
            r#"{"key":"YQ==","limit":1.5}"#,
        ),
        (
            "range, limit a string of no number",
            "/v3/kv/range",
            r#"{"key":"YQ==","limit":"x"}"#,
        ),
        (
            "range, keys_only a string",
            "/v3/kv/range",
            r#"{"key":"YQ==","keys_only":"true"}"#,
        ),
        ("range, body an array", "/v3/kv/range", "[1]"),
        (
            "member add, peerURLs a string",
            "/v3/cluster/member/add",
            r#"{"peerURLs":"http://127.0.0.1:1"}"#,
        ),
        (
            "member remove, ID negative",
            "/v3/cluster/member/remove",
            r#"{"ID":-1}"#,
        ),
    ] {
        ctx.call(what, 0, path, body, &[], &[]);
    }
    ctx.call(
        "range, body not JSON",
        0,
        "/v3/kv/range",
        r#"{"key":"#,
        &["error", "message"],
        &[],
    );
    // What the gateway itself does not serve.
    ctx.call("no such path", 0, "/v3/kv/nope", "{}", &[], &[]);
    ctx.call(
        "no HashKV route",
        0,
        "/v3/maintenance/hashkv",
        "{}",
        &[],
        &[],
    );
    ctx.call_as("GET, not POST", "GET", 0, "/v3/kv/range", "", &[], &[]);
    // Cluster and maintenance.
    ctx.call("member list", 0, "/v3/cluster/member/list", "{}", &[], &[]);
    ctx.call("status", 0, "/v3/maintenance/status", "{}", &[], &[]);
    ctx.call(
        "status of node 3",
        2,
        "/v3/maintenance/status",
        "",
        &[],
        &[],
    );
    ctx.call(
        "alarm get",
        0,
        "/v3/maintenance/alarm",
        r#"{"action":"GET"}"#,
        &[],
        &[],
    );
    ctx.call(
        "alarm list (action by default)",
        1,
        "/v3/maintenance/alarm",
        "{}",
        &[],
        &[],
    );
    let learner_url = format!("http://127.0.0.1:{}", common::free_port());
    // A member that never starts: etcd knows its name and client URLs only once it has,
    // ringkv derives both from its one address.
    let added = wait_until(30, "a member add", || {
        let added = ctx.call(
            "member add a learner",
            0,
            "/v3/cluster/member/add",
            &format!(r#"{{"peerURLs":["{learner_url}"],"isLearner":true}}"#),
            &[],
            &["name", "clientURLs"],
        );
        // etcd refuses membership changes until its members have been connected for 5 s
        // (its strict reconfiguration check): not part of the record.
        if added.contains("etcdserver: unhealthy cluster") {
            ctx.replies.pop();
            std::thread::sleep(Duration::from_millis(200));
            return None;
        }
        Some(added)
    });
    let learner = json(&added)["member"]["ID"]
        .as_str()
        .unwrap_or_else(|| panic!("no learner added: {added}"))
        .to_string();
    ctx.members.push(learner.clone());
    ctx.call(
        "member list with the learner",
        0,
        "/v3/cluster/member/list",
        "{}",
        &[],
        &["name", "clientURLs"],
    );
    ctx.call(
        "member promote a learner that never started",
        0,
        "/v3/cluster/member/promote",
        &format!(r#"{{"ID":"{learner}"}}"#),
        &[],
        &[],
    );
    ctx.call(
        "member remove of an unknown member",
        0,
        "/v3/cluster/member/remove",
        r#"{"ID":"4242"}"#,
        &[],
        &[],
    );
    ctx.call(
        "member remove the learner",
        0,
        "/v3/cluster/member/remove",
        &format!(r#"{{"ID":"{learner}"}}"#),
        &[],
        &[],
    );
    // Leadership moves to a follower; the call goes to the leader.
    let leader = ctx.leader();
    let follower = (leader + 1) % ctx.nodes.len();
    let target = ctx.member_of(follower);
    ctx.call(
        "transfer leadership",
        leader,
        "/v3/maintenance/transfer-leadership",
        &format!(r#"{{"targetID":"{target}"}}"#),
        &[],
        &[],
    );
    wait_until(30, "the new leader", || {
        (ctx.leader() == follower).then_some(())
    });
    ctx.call(
        "put after the transfer",
        0,
        "/v3/kv/put",
        &format!(r#"{{"key":"{a}","value":"{}"}}"#, b("after")),
        &[],
        &[],
    );
    ctx.record()
}

/// What ringkv answers and etcd does not: the methods ringkv's gRPC service refuses
/// (Unimplemented), rendered as the gateway renders a failed call or stream.
fn ringkv_refusals(node: SocketAddr) -> usize {
    let unary = [
        ("/v3/maintenance/hash", "Hash"),
        ("/v3/maintenance/defragment", "defragment"),
        ("/v3/cluster/member/update", "cannot be changed in place"),
        ("/v3/auth/enable", "Auth.AuthEnable"),
    ];
    for (path, says) in unary {
        let (status, body) = exchange(node, "POST", path, "{}");
        assert_eq!(status, 501, "{path}: {body}");
        let v = json(&body);
        assert_eq!(v["code"], 12, "{path}: {body}");
        assert_eq!(v["error"], v["message"], "{path}: {body}");
        assert!(
            v["error"].as_str().unwrap().contains(says),
            "{path}: {body}"
        );
    }
    for (path, says) in [
        ("/v3/watch", "not implemented yet"),
        ("/v3/maintenance/snapshot", "served over gRPC only"),
    ] {
        let (status, body) = exchange(node, "POST", path, "{}");
        assert_eq!(status, 501, "{path}: {body}");
        let e = &json(&body)["error"];
        assert_eq!(
            (&e["grpc_code"], &e["http_code"], &e["http_status"]),
            (&12.into(), &501.into(), &"Not Implemented".into()),
            "{path}: {body}"
        );
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{path}: {body}"
        );
    }
    unary.len() + 2
}

#[test]
fn the_json_gateway_answers_as_etcds() {
    assert!(
        installed(),
        "etcd is not installed: run `make test` (it installs etcd-server)"
    );
    let c = Cluster::new("etcd-gateway", Opts::default());
    c.leader();
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("etcd-gateway-{}", std::process::id()));
    let e = EtcdCluster::start(&dir, 3, common::free_port).unwrap_or_else(|e| panic!("{e}"));
    let theirs = record(&mut Ctx::new(e.clients.clone()));
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
    let nodes: Vec<SocketAddr> = c.ports.iter().map(|p| loopback(*p)).collect();
    let ours = record(&mut Ctx::new(nodes.clone()));
    // The record means something only if the requests did what they should.
    let find = |what: &str| {
        theirs
            .iter()
            .find(|r| r.starts_with(&format!("{what}: ")))
            .unwrap_or_else(|| panic!("no {what}"))
    };
    assert!(find("put a").contains("-> 200 {\"header\""));
    assert!(find("compaction at 4").contains("required revision has been compacted"));
    assert!(find("lease keepalive").contains("{\"result\":"));
    assert!(find("lease grant of an id in use").contains("-> 412 "));
    assert!(find("member list").contains("\"members\":[{\"ID\":<member>,"));
    common::assert_records_equal(&theirs, &ours, "replies");
    let refusals = ringkv_refusals(nodes[0]);
    eprintln!(
        "{} gateway replies equal to etcd's; {refusals} refusals of ringkv's own checked",
        ours.len()
    );
}
