//! The Raft core driven through the real WAL (O_DIRECT on io_uring): Readies persisted,
//! numbers reported back in order, a snapshot taken and the log compacted, then a restart
//! from what the disk holds.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use ringkv_raft::{Config, Membership, Raft, Restore, Role};
use ringkv_server::wal::{DmaDisk, SnapshotStore, Wal, WalOptions};

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs every Ready through the WAL until the core is idle; returns applied payloads.
async fn drive(raft: &mut Raft, wal: &mut Wal<DmaDisk>, applied: &mut Vec<Bytes>) {
    loop {
        while raft.has_ready() {
            let rd = raft.ready();
            if rd.must_persist() {
                wal.persist(
                    rd.number,
                    rd.hard_state,
                    rd.reset,
                    rd.snapshot.as_ref().map(|s| (s.index, s.term)),
                    &rd.entries,
                )
                .await
                .unwrap();
            }
            for e in &rd.committed {
                if !e.data.is_empty() {
                    applied.push(e.data.clone());
                }
            }
            if let Some(last) = rd.committed.last() {
                raft.on_applied(last.index);
            }
        }
        match wal.next_persisted().await.unwrap() {
            Some(n) => raft.on_persisted(n),
            None => break,
        }
    }
}

fn opts(dir: &Path) -> WalOptions {
    WalOptions {
        segment_bytes_max: 64 << 10,
        batch_bytes_max: 16 << 10,
        flush_workers: 3,
        ..WalOptions::new(dir)
    }
}

#[test]
fn raft_core_persists_through_the_wal_and_restarts_from_disk() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("wal-raft-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let guard = TempDir(dir.clone());
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let disk = DmaDisk::new(&dir).await.unwrap();
            let snaps = SnapshotStore::open(disk.clone(), dir.clone(), 2)
                .await
                .unwrap();
            let (mut wal, rec) = Wal::open(disk.clone(), opts(&dir), (0, 0)).await.unwrap();
            let restore = Restore {
                hard_state: rec.hard_state,
                entries: rec.entries,
                initial_membership: Membership::with_voters([1]),
                ..Restore::default()
            };
            let mut raft = Raft::new(Config::new(1), restore).unwrap();
            raft.campaign_now();
            assert_eq!(raft.role(), Role::Leader);
            let mut applied = Vec::new();
            for i in 0..300u32 {
                let cmds = (0..(1 + i % 7))
                    .map(|j| Bytes::from(format!("cmd-{i}-{j}").into_bytes()))
                    .collect();
                raft.propose(cmds).unwrap();
                if i % 5 == 0 {
                    drive(&mut raft, &mut wal, &mut applied).await;
                }
            }
            drive(&mut raft, &mut wal, &mut applied).await;
            let st = raft.status();
            assert_eq!(st.commit, st.last_index);
            assert_eq!(st.persisted_index, st.last_index);
            // Snapshot at the applied index (the "state machine" is the applied list).
            let snap_at = st.applied - 10;
            let meta = raft.compact(snap_at);
            snaps.save(&meta, b"state-bytes").await.unwrap();
            wal.compact(meta.index, meta.term).await.unwrap();
            let term = st.term;
            let last = st.last_index;
            let total = applied.len();
            wal.sync_all().await.unwrap();
            drop(wal);

            // Restart from disk.
            let snap = snaps.load_latest().await.unwrap().expect("snapshot saved");
            assert_eq!(snap.data, b"state-bytes");
            let (mut wal, rec) =
                Wal::open(disk.clone(), opts(&dir), (snap.meta.index, snap.meta.term))
                    .await
                    .unwrap();
            assert!(rec.torn.is_none());
            assert_eq!(rec.hard_state.term, term);
            assert_eq!(
                rec.hard_state.commit, last,
                "sync_all made the commit durable"
            );
            assert_eq!(rec.entries.first().unwrap().index, snap_at + 1);
            assert_eq!(rec.entries.last().unwrap().index, last);
            let restore = Restore {
                hard_state: rec.hard_state,
                snapshot: Some(snap.meta.clone()),
                entries: rec.entries,
                initial_membership: Membership::with_voters([1]),
            };
            let mut raft = Raft::new(Config::new(1), restore).unwrap();
            let mut replayed = Vec::new();
            drive(&mut raft, &mut wal, &mut replayed).await;
            // Entries after the snapshot are applied again, up to the persisted commit
            // (index 1 is the no-op, each later entry one command).
            assert_eq!(replayed.len(), total - (snap_at as usize - 1));
            assert_eq!(replayed[..], applied[snap_at as usize - 1..]);
            raft.campaign_now();
            assert_eq!(raft.role(), Role::Leader);
            assert!(raft.status().term > term);
            raft.propose(vec![Bytes::from_static(b"after-restart")])
                .unwrap();
            drive(&mut raft, &mut wal, &mut replayed).await;
            assert_eq!(replayed.last().unwrap().as_ref(), b"after-restart");
        })
        .unwrap()
        .join()
        .unwrap();
    drop(guard);
}
