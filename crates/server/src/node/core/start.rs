//! The raft core's start-up: the data directory's identity (claimed once, checked after),
//! WAL recovery and the newest snapshot, the shards' queues, the peer transport, and the
//! first contact with the cluster (a joiner's join; a fresh node's wait for its peers'
//! handshakes, which may refuse it). Then it hands over to the driver loop (`Core::run`).
//!
//! Runs once, on the raft core's task queue, before any client call is carried out. Must
//! not touch a shard's state other than sending the snapshot it recovered to every shard.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::local_channel;
use glommio::net::TcpStream;

use super::admin::AdminWaits;
use super::export::Export;
use super::join::{JOIN_WAIT, MemberBook, join_cluster};
use super::requests::Requests;
use super::snap::Snapshots;
use super::{Core, Event, refused_start, wiped};
use crate::config::{MemberRole, NodeConfig};
use crate::net::peer::{Handshake, Inbound, PeerConfig, PeerRecord, Transport};
use crate::node::members;
use crate::node::{CoreQueues, Shared, ToRaft, ToShard};
use crate::shard::Sequencer;
use crate::wal::meta::{KnownPeers, NodeMeta, cluster_id, new_incarnation};
use crate::wal::{DmaDisk, SnapshotStore, Wal};
use ringkv_raft::{Membership, NodeId, Raft, Restore, Role};

/// The founders (voters of initial_cluster) name the cluster: a joiner lists them and
/// itself as a learner, and gets the same id.
fn founders(members: &[(NodeId, SocketAddr, MemberRole)]) -> Vec<(NodeId, String)> {
    members
        .iter()
        .filter(|m| m.2 == MemberRole::Voter)
        .map(|(i, a, _)| (*i, a.to_string()))
        .collect()
}

/// The cluster id etcd's response headers carry: the founders' alone, so clients learn
/// nothing about the cluster token (which names the cluster in the data directory).
pub(in crate::node) fn header_cluster_id(cfg: &NodeConfig) -> u64 {
    cluster_id(&founders(&cfg.members()), "")
}

/// Starts the raft core: claims or checks the data directory, recovers the WAL and the
/// newest snapshot, connects the shards' queues, starts the peer transport, joins the
/// cluster (a learner) or waits for the founders' handshakes (a fresh node), then runs
/// the driver loop until the node stops.
pub(in crate::node) async fn run(
    cfg: NodeConfig,
    shared: Arc<Shared>,
    q: CoreQueues,
) -> Result<(), String> {
    let id = cfg.cluster.node_id;
    let data_dir = cfg.data_dir();
    let members = cfg.members();
    let cid = cluster_id(&founders(&members), &cfg.cluster.cluster_token);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let has_state = data_dir.join("wal").exists() || data_dir.join("hardstate").exists();
    let (meta, fresh) = NodeMeta::check_or_create(
        &data_dir,
        NodeMeta {
            cluster_id: cid,
            node_id: id,
            incarnation: new_incarnation(),
        },
        has_state,
    )
    .map_err(|e| e.to_string())?;
    let known = KnownPeers::load(&data_dir).map_err(|e| e.to_string())?;
    if !fresh && !has_state && !known.is_empty() {
        // This node met its peers, so it took part: its term, vote and log are gone.
        return Err(format!(
            "{} has this node's identity but no Raft state (no hardstate, no wal/): it was \
             partly wiped, and the votes and entries it acknowledged are lost. It must not \
             rejoin under node id {id}: remove the whole directory and add the node back \
             under a new node id",
            data_dir.display()
        ));
    }
    let disk = DmaDisk::new(&data_dir)
        .await
        .map_err(|e| format!("cannot open {}: {e}", data_dir.display()))?
        .with_sync_delay(Duration::from_micros(cfg.testing.sync_delay_us));
    let snaps = SnapshotStore::open(disk.clone(), data_dir.clone(), cfg.raft.snapshot.keep)
        .await
        .map_err(|e| e.to_string())?;
    let snaps = std::rc::Rc::new(snaps);
    let snap = snaps.load_latest().await.map_err(|e| e.to_string())?;
    let base = snap
        .as_ref()
        .map_or((0, 0), |s| (s.meta.index, s.meta.term));
    let (mut wal, rec) = Wal::open(disk.clone(), cfg.wal_options(), base)
        .await
        .map_err(|e| e.to_string())?;
    // Addresses: the config's, then the snapshot's, then address entries in the log.
    let mut addresses: BTreeMap<NodeId, SocketAddr> = members.iter().map(|m| (m.0, m.1)).collect();
    let snap = match snap {
        Some(s) => {
            let data = Bytes::from(s.data);
            let kv_at = {
                let (book, kv) = members::decode_snapshot(&data)
                    .map_err(|e| format!("snapshot {}: {e}", s.meta.index))?;
                addresses.extend(book);
                data.len() - kv.len()
            };
            Some((s.meta, data, kv_at))
        }
        None => None,
    };
    for e in &rec.entries {
        if let Some(Ok((nid, addr))) = members::decode_address(&e.data) {
            addresses.insert(nid, addr);
        }
    }
    let voters: Vec<_> = members
        .iter()
        .filter(|m| m.2 == MemberRole::Voter)
        .map(|m| m.0)
        .collect();
    let raft_cfg = cfg.raft_config();
    for w in raft_cfg.startup_warnings() {
        tracing::warn!(node = id, "{w}");
    }
    let raft = Raft::new(
        raft_cfg,
        Restore {
            hard_state: rec.hard_state,
            snapshot: snap.as_ref().map(|s| s.0.clone()),
            entries: rec.entries,
            initial_membership: Membership::with_voters(voters),
        },
    )
    .map_err(|e| format!("raft: {e}"))?;

    // A channel end's `connect` waits for the other end's: connect all at once.
    let to_shards: Vec<_> = q
        .to_shards
        .into_iter()
        .map(|s| glommio::spawn_local(s.connect()))
        .collect();
    let from_shards: Vec<_> = q
        .from_shards
        .into_iter()
        .map(|r| glommio::spawn_local(r.connect()))
        .collect();
    let mut connected = Vec::new();
    for t in to_shards {
        connected.push(t.await);
    }
    let to_shards = connected;
    let mut latest = None;
    // The sequencer starts where the store does: empty, or the snapshot's state.
    let mut seq = Sequencer::new(to_shards.len(), 0, 1);
    // The fault campaign's store control (`[testing] controls`; refused by the config in
    // a build without `negative-controls`).
    let store_controls = cfg.testing.store_controls();
    seq.set_controls(store_controls);
    let mut lease_table = Vec::new();
    let mut nospace = false;
    if let Some((meta, data, kv_at)) = snap {
        let h = ringkv_store::snapshot::header(&data[kv_at..]).map_err(|e| {
            format!(
                "snapshot {} in {}: {e} (a snapshot this version cannot read: an older \
                 version's, or damaged)",
                meta.index,
                cfg.data_dir().display()
            )
        })?;
        seq = Sequencer::new(to_shards.len(), meta.index, h.revision);
        seq.set_controls(store_controls);
        lease_table = h.leases;
        nospace = h.nospace;
        for tx in &to_shards {
            tx.send(ToShard::Install {
                data: data.slice(kv_at..),
                epoch: 0,
            })
            .await
            .map_err(|_| "a shard stopped during start-up".to_string())?;
        }
        latest = Some(meta);
    }
    let (ev_tx, ev_rx) = local_channel::new_bounded::<Event>(4096);
    let ev_tx = std::rc::Rc::new(ev_tx);
    for rx in from_shards {
        let ev_tx = ev_tx.clone();
        let rx = rx.await;
        glommio::spawn_local(async move {
            while let Some(m) = rx.recv().await {
                if ev_tx.send(Event::Shard(m)).await.is_err() {
                    return;
                }
            }
        })
        .detach();
    }
    let (peer_tx, peer_rx) = local_channel::new_bounded::<Inbound>(4096);
    let transport = Transport::start(
        PeerConfig {
            node_id: id,
            cluster_id: cid,
            token: cfg.cluster.cluster_token.clone(),
            peers: addresses
                .iter()
                .filter(|(nid, _)| raft.membership().is_member(**nid))
                .map(|(a, b)| (*a, *b))
                .collect(),
            frame_bytes_max: cfg.limits.frame_bytes_max,
            outbox_max: 4096,
            reconnect_backoff_max_ms: 1000,
            dial: cfg.testing.dial_overrides(),
            source_ip: cfg
                .cluster
                .listen_address
                .parse::<SocketAddr>()
                .ok()
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified()),
            incarnation: meta.incarnation,
            known: Some(Rc::new(PeerRecord::new(known))),
        },
        peer_tx,
    );
    let mut early = Vec::new();
    // A joiner that is not a member yet (a first start, or one whose join failed before)
    // asks the cluster to add it as a learner first (in a task: peers' connections must be
    // answered meanwhile). It advertises its own initial_cluster address (listen_address
    // may be a wildcard).
    let joiner = cfg.is_joiner() && !raft.membership().is_member(id);
    let joined: Rc<std::cell::RefCell<Option<Result<MemberBook, String>>>> = Rc::default();
    let join_last: Rc<std::cell::RefCell<String>> = Rc::default();
    if joiner {
        let me = members
            .iter()
            .find(|m| m.0 == id)
            .map(|m| m.1.to_string())
            .expect("a joiner lists itself");
        let (founders, token) = (cfg.founders(), cfg.cluster.cluster_token.clone());
        let (done, last) = (joined.clone(), join_last.clone());
        glommio::spawn_local(async move {
            let r = join_cluster(id, &me, &founders, &token, &last).await;
            *done.borrow_mut() = Some(r);
        })
        .detach();
    }
    if fresh || joiner {
        // initial_cluster counts only if no peer already knows this node under another
        // incarnation, or refuses it: wait for every peer's handshake (or one election
        // timeout: peers that are down cannot object, as in a first start of all nodes).
        // A joiner waits for its join instead (peers refuse it until they know it).
        let until = Instant::now()
            + if joiner {
                JOIN_WAIT
            } else {
                Duration::from_millis(cfg.raft.election_timeout_min_ms)
            };
        while Instant::now() < until
            && if joiner {
                joined.borrow().is_none()
            } else {
                transport.handshakes.borrow().len() + 1 < members.len()
            }
        {
            if wiped(&transport).is_some() {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
            // Answer peers' handshakes meanwhile (other fresh nodes wait for ours); keep
            // everything else for the loop.
            while let Some(Some(e)) = futures_lite::future::poll_once(ev_rx.recv()).await {
                match e {
                    Event::Shard(ToRaft::PeerConn { fd, first }) => {
                        // SAFETY: the shard handed over sole ownership of this descriptor.
                        let s = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
                        transport.adopt(s, first);
                    }
                    other => early.push(other),
                }
            }
        }
        if joiner {
            match joined.borrow_mut().take() {
                Some(Ok(book)) => {
                    tracing::warn!(node = id, members = ?book, "joined the cluster as a learner");
                    // Every member's address: whoever leads may contact us first.
                    for (nid, a) in book {
                        match a.parse::<SocketAddr>() {
                            Ok(addr) => {
                                addresses.insert(nid, addr);
                                transport.add_peer(nid, addr);
                            }
                            Err(e) => tracing::warn!(
                                node = id,
                                "the join answer names node {nid} at {a:?}, not an address: {e}"
                            ),
                        }
                    }
                }
                Some(Err(e)) => return Err(format!("cannot join the cluster: {e}")),
                None => {
                    return Err(format!(
                        "cannot join the cluster: not added within {JOIN_WAIT:?} (last answer: \
                         {}); is the cluster running?",
                        join_last.borrow()
                    ));
                }
            }
        }
        let refusal = transport
            .handshakes
            .borrow()
            .iter()
            .find_map(|(p, h)| match h {
                Handshake::Refused(why) => Some((*p, why.clone())),
                _ => None,
            })
            .filter(|_| !joiner);
        if let Some((peer, why)) = refusal {
            return Err(format!(
                "refusing to start with an empty data directory: peer {peer} refused this \
                 node ({why}); fix the configuration (initial_cluster, cluster_token, node_id) \
                 so it matches the running cluster"
            ));
        }
    }
    if let Some(why) = wiped(&transport) {
        return Err(refused_start(&data_dir, &why));
    }
    {
        let ev_tx = ev_tx.clone();
        glommio::spawn_local(async move {
            while let Some(m) = peer_rx.recv().await {
                if ev_tx.send(Event::Peer(m)).await.is_err() {
                    return;
                }
            }
        })
        .detach();
    }
    tracing::warn!(
        node = id,
        listen = %cfg.cluster.listen_address,
        metrics = cfg.cluster.metrics_address.as_deref().unwrap_or("none"),
        data_dir = %data_dir.display(),
        shards = to_shards.len(),
        cores = ?cfg.runtime.cores,
        raft_core = cfg.runtime.raft_core,
        strategy = ?cfg.raft.persistence.strategy,
        "ringkv node started: peers and HTTP on {}", cfg.cluster.listen_address
    );
    // A drifting clock (fault campaign) ticks faster or slower in real time.
    let tick = shared
        .clock
        .real(Duration::from_millis(cfg.raft.tick_interval_ms));
    let mut core = Core {
        id,
        raft,
        transport,
        addresses,
        to_shards,
        out: Vec::new(),
        shared,
        ev_tx: ev_tx.clone(),
        fatal: None,
        req: Requests::new(),
        snap: Snapshots::new(snaps, latest, &cfg),
        admin: AdminWaits::new(cfg.raft.membership.promote_lag_entries_max),
        export: Export::new(),
        wal_stats: wal.stats_handle(),
        wal_stalled: false,
        metrics_address: cfg.cluster.metrics_address.clone(),
        data_dir: data_dir.clone(),
        membership_seen: Membership::default(),
        retiring: Vec::new(),
        removed_self: false,
        request_timeout: Duration::from_millis(cfg.raft.request_timeout_ms),
        tick,
        last_role: Role::Follower,
        last_leader: (0, 0, false),
        stop_at: None,
        state_bytes_max: cfg.limits.state_bytes_max,
        append_entries_max: cfg.raft.replication.append_entries_max,
        batch_delay: Duration::from_millis(cfg.raft.replication.batch_delay_ms),
        last_lag_log: Instant::now(),
        seq,
        store_controls,
        store_epoch: 0,
        dispatched: 0,
        store_stall: None,
        applying: std::collections::HashMap::new(),
        leases: super::leases::Leases::new(
            Duration::from_millis(cfg.raft.election_timeout_max_ms),
            &lease_table,
        ),
        nospace,
        nospace_proposed: None,
        compactor: super::compactor::Compactor::new(cfg.compaction.clone()),
    };
    for e in early {
        core.handle(e);
    }
    core.run(&mut wal, ev_rx).await
}
