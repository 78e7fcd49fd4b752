//! Automatic compaction on the leader (`[compaction]`, etcd's `--auto-compaction-mode`):
//! every `check_interval_ms` the leader proposes a compaction that keeps the configured
//! history, by revisions (`revision`: the current revision less `retention_revisions`) or
//! by time (`periodic`: the revision the store had `retention_ms` ago, from samples of the
//! revision taken at each check).
//!
//! Part of the raft core's driver (its task queue; same state). Only the leader proposes;
//! a follower keeps no samples (as etcd's compactor pauses there). Must not touch a
//! shard's state: a compaction is a log entry like any write.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Core;
use super::requests::{Op, Origin};
use crate::config::{CompactionMode, CompactionSection};
use crate::shard::Command;
use ringkv_raft::Role;
use ringkv_store::Revision;

pub(super) struct Compactor {
    cfg: CompactionSection,
    next_check: Option<Instant>,
    /// (when, the store revision then), oldest first (periodic mode).
    samples: VecDeque<(Instant, Revision)>,
    /// The last compaction this leader proposed.
    proposed: Revision,
}

/// Samples kept at most (one per check; periodic mode needs retention / interval of them).
const SAMPLES_MAX: usize = 100_000;

impl Compactor {
    pub fn new(cfg: CompactionSection) -> Compactor {
        Compactor {
            cfg,
            next_check: None,
            samples: VecDeque::new(),
            proposed: 0,
        }
    }

    /// The revision to compact to now, if one is due (`current`: the store's revision).
    fn due(&mut self, now: Instant, current: Revision) -> Option<Revision> {
        let interval = Duration::from_millis(self.cfg.check_interval_ms);
        match self.next_check {
            Some(t) if now < t => return None,
            _ => self.next_check = Some(now + interval),
        }
        let target = match self.cfg.mode {
            CompactionMode::Off => return None,
            CompactionMode::Revision => current - self.cfg.retention_revisions as Revision,
            CompactionMode::Periodic => {
                self.samples.push_back((now, current));
                let keep = Duration::from_millis(self.cfg.retention_ms);
                // The newest sample at least `retention` old is the target; older ones go.
                let mut target = None;
                while let Some(&(t, r)) = self.samples.front() {
                    if now.duration_since(t) < keep {
                        break;
                    }
                    target = Some(r);
                    self.samples.pop_front();
                }
                while self.samples.len() > SAMPLES_MAX {
                    self.samples.pop_front();
                }
                target?
            }
        };
        (target > self.proposed && target > 1).then(|| {
            self.proposed = target;
            target
        })
    }

    fn pause(&mut self) {
        self.samples.clear();
        self.next_check = None;
    }
}

impl Core {
    /// Each tick: on the leader, a compaction when one is due.
    pub(super) fn compaction_turn(&mut self) {
        if self.raft.role() != Role::Leader {
            self.compactor.pause();
            return;
        }
        let current = self.seq.resolved().1;
        let now = Instant::now();
        if let Some(revision) = self.compactor.due(now, current) {
            tracing::info!(node = self.id, revision, "automatic compaction");
            let cmd = Command::Compact {
                revision,
                physical: true,
            }
            .encode();
            self.submit(Origin::Core, Op::Write(cmd), now + self.request_timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: CompactionMode) -> CompactionSection {
        CompactionSection {
            mode,
            retention_ms: 10_000,
            retention_revisions: 100,
            check_interval_ms: 1000,
        }
    }

    #[test]
    fn revision_mode_keeps_the_last_revisions_at_each_check() {
        let mut c = Compactor::new(cfg(CompactionMode::Revision));
        let t = Instant::now();
        assert_eq!(c.due(t, 50), None, "not 100 revisions yet");
        assert_eq!(
            c.due(t + Duration::from_millis(500), 500),
            None,
            "between checks"
        );
        assert_eq!(c.due(t + Duration::from_millis(1000), 500), Some(400));
        assert_eq!(
            c.due(t + Duration::from_millis(2000), 500),
            None,
            "already there"
        );
        assert_eq!(c.due(t + Duration::from_millis(3000), 650), Some(550));
        let mut off = Compactor::new(cfg(CompactionMode::Off));
        assert_eq!(off.due(t, 1_000_000), None);
    }

    #[test]
    fn periodic_mode_compacts_to_the_revision_of_retention_ago() {
        let mut c = Compactor::new(cfg(CompactionMode::Periodic));
        let t = Instant::now();
        for s in 0..10 {
            assert_eq!(c.due(t + Duration::from_secs(s), 10 + s as i64 * 10), None);
        }
        // 10 s after the first sample (revision 10): compact to it.
        assert_eq!(c.due(t + Duration::from_secs(10), 200), Some(10));
        assert_eq!(c.due(t + Duration::from_secs(11), 210), Some(20));
        c.pause();
        assert_eq!(
            c.due(t + Duration::from_secs(12), 220),
            None,
            "samples start again"
        );
    }
}
