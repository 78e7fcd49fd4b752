//! `ringkv snapshot restore FILE --config C`: the data directory of one founder of a new
//! cluster, from a snapshot file saved from ringkv (`etcdctl snapshot save`, which streams
//! Maintenance.Snapshot: the node's newest snapshot file as it is on disk).
//!
//! The new directory holds one snapshot: the file's state (keys, every version since its
//! compaction, revisions, leases, alarm) at the file's index and term, with the membership
//! and member addresses replaced by the config's `initial_cluster`, as etcd's restore
//! replaces the old cluster's members. Every founder restored from the same file holds the
//! same snapshot, so they start agreeing; the node claims its identity (a new cluster id
//! from the config) at its first start, and elects a leader in a term after the file's.
//!
//! Runs on the calling thread (an offline tool) with a glommio executor of its own for
//! the snapshot store's O_DIRECT writes. Writes only `<data_dir>/snapshots/`; refuses a
//! data directory that holds any node state. Must not touch a running node's files.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use ringkv_raft::{Membership, NodeId, SnapshotMeta};

use super::members;
use crate::config::{MemberRole, NodeConfig};
use crate::wal::snapshot::decode_snapshot;
use crate::wal::{DmaDisk, SnapshotStore};

/// The snapshot file within what `etcdctl snapshot save` wrote: the stream ends with the
/// SHA-256 of the file (etcd's rule: 32 bytes past a multiple of 512), checked here; a
/// file copied from a node's `snapshots/` (a multiple of 4096 bytes) is taken as it is.
fn checked_body(bytes: &[u8]) -> Result<&[u8], String> {
    use sha2::{Digest, Sha256};
    match bytes.len() % 512 {
        0 => Ok(bytes),
        32 => {
            let (body, sum) = bytes.split_at(bytes.len() - 32);
            if Sha256::digest(body).as_slice() == sum {
                Ok(body)
            } else {
                Err("its SHA-256 does not match: the file is damaged".into())
            }
        }
        _ => Err(format!(
            "{} bytes is neither a snapshot file nor one with its SHA-256 appended: the file \
             is cut short or is not a snapshot",
            bytes.len()
        )),
    }
}

/// Restores `file` into `cfg`'s data directory; what was restored, for the operator.
pub fn restore(file: &Path, cfg: &NodeConfig) -> Result<String, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let body = checked_body(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let snap = decode_snapshot(body).map_err(|e| {
        format!(
            "{} is not a ringkv snapshot ({e}): ringkv restores what its Maintenance.Snapshot \
             streams (`etcdctl snapshot save` against ringkv), not etcd's database files",
            file.display()
        )
    })?;
    let (_, kv) =
        members::decode_snapshot(&snap.data).map_err(|e| format!("{}: {e}", file.display()))?;
    let h = ringkv_store::snapshot::header(kv).map_err(|e| format!("{}: {e}", file.display()))?;

    let id = cfg.cluster.node_id;
    let all = cfg.members();
    let voters: Vec<NodeId> = all
        .iter()
        .filter(|m| m.2 == MemberRole::Voter)
        .map(|m| m.0)
        .collect();
    if !voters.contains(&id) {
        return Err(format!(
            "node {id} is not a founder (a voter of initial_cluster) in its config: restore \
             the founders of the new cluster, then add members as learners"
        ));
    }
    let data_dir = cfg.data_dir();
    for held in ["wal", "hardstate", "snapshots", "meta", "peers"] {
        if data_dir.join(held).exists() {
            return Err(format!(
                "{} holds a node's state already ({held}): restore into an empty data \
                 directory",
                data_dir.display()
            ));
        }
    }
    let book: BTreeMap<NodeId, SocketAddr> = all
        .iter()
        .filter(|m| m.2 == MemberRole::Voter)
        .map(|m| (m.0, m.1))
        .collect();
    let meta = SnapshotMeta {
        index: snap.meta.index,
        term: snap.meta.term,
        membership: Membership::with_voters(voters.iter().copied()),
    };
    let data = members::encode_snapshot(&book, kv);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let keep = cfg.raft.snapshot.keep;
    let dir = data_dir.clone();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("restore")
        .spawn(move || async move {
            let disk = DmaDisk::new(&dir)
                .await
                .map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
            let store = SnapshotStore::open(disk, dir.clone(), keep)
                .await
                .map_err(|e| e.to_string())?;
            store.save(&meta, &data).await.map_err(|e| e.to_string())
        })
        .map_err(|e| format!("cannot start an executor: {e}"))?
        .join()
        .map_err(|e| format!("the restore executor failed: {e}"))??;
    Ok(format!(
        "restored revision {} (compacted through {}, {} leases) at log index {}, term {} into \
         {} for node {id} of the cluster {voters:?}",
        h.revision,
        h.compacted,
        h.leases.len(),
        snap.meta.index,
        snap.meta.term,
        data_dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn a_saved_stream_is_checked_by_its_sha256() {
        let file = vec![7u8; 4096];
        let mut saved = file.clone();
        saved.extend_from_slice(&Sha256::digest(&file));
        assert_eq!(checked_body(&saved).unwrap(), &file[..]);
        assert_eq!(
            checked_body(&file).unwrap(),
            &file[..],
            "a copied snapshot file"
        );
        saved[100] ^= 1;
        assert!(checked_body(&saved).unwrap_err().contains("does not match"));
        assert!(
            checked_body(&file[..4000])
                .unwrap_err()
                .contains("cut short")
        );
    }
}
