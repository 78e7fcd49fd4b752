//! The store's check against the reference model: the committed log replayed on
//! `ringkv_store::reference::Reference`, and every node's revisions and answers held to it.
//!
//! Runs once at the end of a DiskFirst run, on the simulator's thread. Input: the payload
//! of every applied entry as first applied (every node applies that one sequence:
//! `check_apply`) and the revision and answer each index got on the first node to apply
//! it (every other node computed the same: `check_store_entries`). Pure: it reads only
//! those; must not touch the world.

use std::collections::BTreeMap;

use bytes::Bytes;
use ringkv_raft::Index;
use ringkv_store::reference::Reference;
use ringkv_store::{Applied, Command, Revision};

/// Replays `log` (contiguous from index 1) on the reference model and compares each
/// index's revision and answer with what the nodes computed (`entries`).
pub(crate) fn replay(
    log: &BTreeMap<Index, Option<Bytes>>,
    entries: &BTreeMap<Index, (Revision, Option<Applied>)>,
) -> Result<(), String> {
    let mut reference = Reference::new();
    for (n, (&i, payload)) in log.iter().enumerate() {
        if i != n as Index + 1 {
            return Err(format!("sim: the applied log has no entry {}", n + 1));
        }
        let (rev, applied) = match payload {
            Some(data) => {
                let cmd = Command::decode(data).map_err(|e| format!("entry {i}: {e}"))?;
                let a = reference.apply(&cmd);
                (a.revision, Some(a))
            }
            None => (reference.revision(), None),
        };
        let Some((node_rev, node_applied)) = entries.get(&i) else {
            return Err(format!("sim: no node's answer recorded for entry {i}"));
        };
        if *node_rev != rev || *node_applied != applied {
            return Err(format!(
                "store: entry {i}: the nodes computed revision {node_rev} and answer \
                 {node_applied:?}; the reference model revision {rev} and answer {applied:?}"
            ));
        }
    }
    Ok(())
}
