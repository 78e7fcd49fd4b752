//! A native-protocol client connection (`net::native`) for glommio executors: requests
//! pipelined on one connection, answers matched by id.
//!
//! Runs on the caller's executor: one writer task (batches frames queued by callers into
//! one write) and one reader task (hands each answer to its waiting caller). Many tasks may
//! share one connection. Must not retry anything: a request whose answer does not come is
//! the caller's to judge (a write's outcome is then unknown).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;

use crate::net::frame::{FrameHeader, FrameKind, HEADER_BYTES};
use crate::net::native::{self, Request, Response};

/// Frames queued for the writer, per connection.
const QUEUE_MAX: usize = 4096;
/// The largest answer accepted (a value of 1.5 MiB in JSON, with room).
const ANSWER_BYTES_MAX: usize = 8 << 20;

pub struct Conn {
    out: LocalSender<Vec<u8>>,
    pending: Rc<RefCell<HashMap<u64, LocalSender<Response>>>>,
    next: Cell<u64>,
    /// Set when the connection broke: every waiting and later call fails.
    broken: Rc<Cell<bool>>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Rc<Conn>> {
        let s = TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        let (mut rd, mut wr) = futures_lite::io::split(s);
        let (out, rx) = local_channel::new_bounded::<Vec<u8>>(QUEUE_MAX);
        let pending: Rc<RefCell<HashMap<u64, LocalSender<Response>>>> = Rc::default();
        let broken: Rc<Cell<bool>> = Rc::default();
        {
            let broken = broken.clone();
            glommio::spawn_local(async move {
                let mut buf = Vec::new();
                while let Some(first) = rx.recv().await {
                    buf.extend_from_slice(&first);
                    while buf.len() < 1 << 20 {
                        match futures_lite::future::poll_once(rx.recv()).await {
                            Some(Some(more)) => buf.extend_from_slice(&more),
                            _ => break,
                        }
                    }
                    if wr.write_all(&buf).await.is_err() {
                        broken.set(true);
                        return;
                    }
                    buf.clear();
                }
            })
            .detach();
        }
        {
            let (pending, broken) = (pending.clone(), broken.clone());
            glommio::spawn_local(async move {
                loop {
                    let mut h = [0u8; HEADER_BYTES];
                    if rd.read_exact(&mut h).await.is_err() {
                        break;
                    }
                    let Ok(hdr) = FrameHeader::decode(&h, ANSWER_BYTES_MAX) else {
                        break;
                    };
                    let mut body =
                        rkyv::util::AlignedVec::<16>::with_capacity(hdr.body_bytes as usize);
                    body.resize(hdr.body_bytes as usize, 0);
                    if rd.read_exact(&mut body).await.is_err() || hdr.check_body(&body).is_err() {
                        break;
                    }
                    let Ok(r) = native::decode_response(&body) else {
                        break;
                    };
                    if let Some(tx) = pending.borrow_mut().remove(&r.id) {
                        let _ = tx.try_send(r);
                    }
                }
                broken.set(true);
                // Waiting callers see their channel closed.
                pending.borrow_mut().clear();
            })
            .detach();
        }
        Ok(Rc::new(Conn {
            out,
            pending,
            next: Cell::new(1),
            broken,
        }))
    }

    /// Sends the request `make(id)` and waits for its answer. `Err` when the connection
    /// broke before the answer came (for a write: outcome unknown).
    pub async fn call(&self, make: impl FnOnce(u64) -> Request) -> Result<Response, String> {
        if self.broken.get() {
            return Err("connection broken".into());
        }
        let id = self.next.get();
        self.next.set(id + 1);
        let body = native::encode(&make(id));
        let mut frame = FrameHeader::for_body(FrameKind::Client, &body)
            .encode()
            .to_vec();
        frame.extend_from_slice(&body);
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, tx);
        if self.out.send(frame).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err("connection closed".into());
        }
        rx.recv()
            .await
            .ok_or_else(|| "connection broke before the answer".to_string())
    }
}
