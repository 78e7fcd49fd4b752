//! A node's HTTP API as the tests and the campaign runner call it: status, who leads,
//! operator calls, puts and gets, metrics. Every call goes through the workspace's one
//! HTTP client (`ringkv_client::http1`); the functions here only build targets and bodies
//! and read the JSON answers.
//!
//! Runs on the caller's thread (blocking), from any thread: the functions take an address,
//! not a `Cluster`. Must not touch node internals: only the HTTP API an operator uses.

use std::net::SocketAddr;
use std::time::Duration;

use ringkv_client::http1::{self, ExchangeError, Response};
use ringkv_raft::NodeId;
use serde_json::Value;

/// One request to `addr` (`http1::exchange`).
fn call(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, ExchangeError> {
    http1::exchange(&addr.to_string(), method, target, &[], body, timeout)
}

/// The body of a `POST /put`.
pub fn put_body(key: &str, value: &str) -> Vec<u8> {
    serde_json::json!({ "key": key, "value": value })
        .to_string()
        .into_bytes()
}

/// A put on a new connection.
pub fn put(
    addr: SocketAddr,
    key: &str,
    value: &str,
    timeout: Duration,
) -> Result<Response, ExchangeError> {
    call(addr, "POST", "/put", &put_body(key, value), timeout)
}

/// A put on a keep-alive connection (the benches' clients).
pub fn put_on(
    conn: &mut http1::Conn,
    key: &str,
    value: &str,
    timeout: Duration,
) -> Result<Response, ExchangeError> {
    conn.exchange("POST", "/put", &put_body(key, value), timeout)
}

/// The target of a get at `consistency` ("linearizable", "lease", "eventual"). The key
/// goes in as given: callers use keys that need no escaping.
pub fn get_target(key: &str, consistency: &str) -> String {
    format!("/get?key={key}&consistency={consistency}")
}

/// `/status`, when the node answers 200 with JSON.
pub fn status(addr: SocketAddr, timeout: Duration) -> Option<Value> {
    let r = call(addr, "GET", "/status", b"", timeout).ok()?;
    (r.status == 200)
        .then(|| serde_json::from_str(&r.body).ok())
        .flatten()
}

/// An operator call about `node_id` (`/promote`, `/remove`, `/transfer-leader`), with the
/// cluster token when one is given: (status, JSON body), or `None` without an answer.
pub fn admin(
    addr: SocketAddr,
    path: &str,
    node_id: NodeId,
    token: Option<&str>,
    timeout: Duration,
) -> Option<(u16, Value)> {
    let body = format!("{{\"node_id\": {node_id}}}");
    let headers: Vec<(&str, &str)> = token.map(|t| ("X-Ringkv-Token", t)).into_iter().collect();
    let r = http1::exchange(
        &addr.to_string(),
        "POST",
        path,
        &headers,
        body.as_bytes(),
        timeout,
    )
    .ok()?;
    Some((r.status, serde_json::from_str(&r.body).unwrap_or_default()))
}

/// `GET /metrics` on a metrics address, when it answers 200.
pub fn metrics(addr: SocketAddr, timeout: Duration) -> Option<String> {
    let r = call(addr, "GET", "/metrics", b"", timeout).ok()?;
    (r.status == 200).then_some(r.body)
}

/// Whether a status says its node leads and may take operator calls (it committed an
/// entry of its term).
fn ready_leader(s: &Value) -> bool {
    s["role"] == "leader" && s["leader_ready"] == true
}

/// The leader among the nodes that answered (node, status): one that says it leads and is
/// ready; the one with the highest term if several do (an old leader not yet told).
pub fn newest_leader(statuses: &[(NodeId, Value)]) -> Option<NodeId> {
    statuses
        .iter()
        .filter(|(_, s)| ready_leader(s))
        .max_by_key(|(id, s)| (s["term"].as_u64().unwrap_or(0), std::cmp::Reverse(*id)))
        .map(|(id, _)| *id)
}

/// The leader every status agrees on: exactly one says it leads, it is ready, and every
/// status names it as the leader.
pub fn agreed_leader(statuses: &[Value]) -> Option<NodeId> {
    let leaders: Vec<&Value> = statuses.iter().filter(|s| s["role"] == "leader").collect();
    let [l] = leaders.as_slice() else {
        return None;
    };
    if !ready_leader(l) {
        return None;
    }
    let id = l["node_id"].as_u64()?;
    statuses.iter().all(|s| s["leader_id"] == id).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_newest_ready_leader_wins_and_all_must_agree_for_an_agreed_one() {
        let s = |id: u64, role: &str, ready: bool, term: u64, leader: u64| {
            json!({ "node_id": id, "role": role, "leader_ready": ready, "term": term,
                    "leader_id": leader })
        };
        let old = s(1, "leader", true, 3, 1);
        let new = s(2, "leader", true, 4, 2);
        let f = s(3, "follower", false, 4, 2);
        assert_eq!(
            newest_leader(&[(1, old.clone()), (2, new.clone()), (3, f.clone())]),
            Some(2)
        );
        assert_eq!(agreed_leader(&[old.clone(), new.clone(), f.clone()]), None);
        assert_eq!(agreed_leader(&[new.clone(), f.clone()]), Some(2));
        assert_eq!(
            agreed_leader(&[new.clone(), f, s(1, "follower", false, 4, 1)]),
            None
        );
        let unready = s(2, "leader", false, 4, 2);
        assert_eq!(newest_leader(&[(2, unready.clone())]), None);
        assert_eq!(agreed_leader(&[unready]), None);
        assert_eq!(newest_leader(&[]), None);
    }
}
