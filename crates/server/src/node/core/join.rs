//! A learner joining a running cluster: it asks the founders, one after the other, to add
//! it (`Request::Admin` with `AdminOp::Join` over the native protocol, forwarded by any
//! founder to the leader) until one says it is done or refuses for good.
//!
//! Runs in a task on the raft core's task queue during start-up (peers' handshakes are
//! answered meanwhile). Touches only the sockets it opens; the caller applies the answer
//! (the member addresses) to the transport.

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use ringkv_proto::admin::AdminOp;
use ringkv_proto::frame::{FrameHeader, FrameKind, HEADER_BYTES};
use ringkv_proto::native::{self, Request};
use ringkv_proto::outcome::{Answer, ApiError, Outcome};
use ringkv_raft::NodeId;

/// Every member's address (id, `ip:port`), as a join's answer gives it.
pub(super) type MemberBook = Vec<(NodeId, String)>;

/// How long a joiner keeps asking the founders to add it.
pub(super) const JOIN_WAIT: Duration = Duration::from_secs(30);
/// One attempt at one founder: connect, send, answer.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(10);
/// The largest answer accepted (a member list).
const ANSWER_BYTES_MAX: usize = 1 << 20;
/// Between rounds over the founders.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Asks the founders to add node `id` at `me` as a learner; retries while none can (no
/// leader, a change or transfer in progress, unreachable). Returns every member's address
/// from the answer, or the refusal of a founder that said no for good.
pub(super) async fn join_cluster(
    id: NodeId,
    me: &str,
    founders: &[(NodeId, SocketAddr)],
    token: &str,
    last_answer: &std::cell::RefCell<String>,
) -> Result<MemberBook, String> {
    let op = AdminOp::Join {
        node_id: id,
        address: me.to_string(),
    };
    let token = (!token.is_empty()).then(|| token.to_string());
    let mut last = String::from("no founder tried");
    loop {
        for (fid, addr) in founders {
            let req = Request::Admin {
                id: 1,
                op: op.clone(),
                token: token.clone(),
            };
            match call_once(*addr, &req).await {
                Ok(Ok(Answer::Joined { members, .. })) => return Ok(members),
                Ok(Ok(other)) => {
                    return Err(format!("node {fid} ({addr}) answered {other:?} to a join"));
                }
                Ok(Err(e)) if !retry(&e) => {
                    return Err(format!("node {fid} ({addr}) refused: {} {e}", e.code()));
                }
                Ok(Err(e)) => last = format!("node {fid} ({addr}): {} {e}", e.code()),
                Err(e) => last = format!("node {fid} ({addr}): {e}"),
            }
        }
        tracing::warn!(node = id, "join not done yet ({last}); retrying");
        *last_answer.borrow_mut() = last.clone();
        glommio::timer::sleep(RETRY_PAUSE).await;
    }
}

/// Worth asking again: another change or a transfer is under way, or the cluster cannot
/// serve the call now (no leader, unreachable, timed out). Any other refusal is final.
fn retry(e: &ApiError) -> bool {
    matches!(e, ApiError::ChangeInProgress | ApiError::TransferInProgress) || e.http_status() >= 500
}

/// One request on a new native connection to `addr`, within `ATTEMPT_LIMIT`.
async fn call_once(addr: SocketAddr, req: &Request) -> Result<Outcome, String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let body = native::encode(req);
        let mut frame = FrameHeader::for_body(FrameKind::Client, &body)
            .encode()
            .to_vec();
        frame.extend_from_slice(&body);
        s.write_all(&frame).await.map_err(|e| e.to_string())?;
        let mut h = [0u8; HEADER_BYTES];
        s.read_exact(&mut h).await.map_err(|e| e.to_string())?;
        let hdr = FrameHeader::decode(&h, ANSWER_BYTES_MAX).map_err(|e| e.to_string())?;
        let mut body = rkyv::util::AlignedVec::<16>::with_capacity(hdr.body_bytes as usize);
        body.resize(hdr.body_bytes as usize, 0);
        s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        hdr.check_body(&body).map_err(|e| e.to_string())?;
        Ok(native::decode_response(&body)?.outcome)
    };
    futures_lite::future::or(exchange, async {
        glommio::timer::sleep(ATTEMPT_LIMIT).await;
        Err(format!("no answer within {ATTEMPT_LIMIT:?}"))
    })
    .await
}
