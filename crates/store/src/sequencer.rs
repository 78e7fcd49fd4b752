//! The sequencer: numbers the store's revisions, decides multi-shard txns, and joins the
//! parts of answers.
//!
//! Pure and single-threaded; on the node it lives on the raft core. Input: the entries the
//! raft core routes (`expect`), shards' reports and partials; output: resolutions (to every
//! shard), decisions (to a txn's participants) and merged answers. The revision of an
//! entry is decided here, in index order, from which entries changed something on any
//! shard: it depends on the log alone. Must not touch shard state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::command::Command;
use crate::controls::{Controls, SKIP_EVERY};
use crate::parts::{Decision, Index, Part, Partial, decide, is_resolved, merge_with, resolve_part};
use crate::shard::{Report, Resolution, Routed};
use crate::types::{Applied, Revision, StoreError};

struct Waiting {
    cmd: Arc<Command>,
    participants: u64,
    answer: bool,
    parts: Vec<Result<Part, StoreError>>,
    partials: Vec<Partial>,
    decided: bool,
    /// The store revision once this entry is applied (known at its resolution).
    revision: Option<Revision>,
}

pub struct Sequencer {
    shards: usize,
    /// Per shard: every entry through here is applied and reported.
    through: Vec<Index>,
    /// Per shard: the last resolution it has taken in.
    seen: Vec<Index>,
    state_bytes: Vec<u64>,
    /// Reported changes not numbered yet.
    changed: BTreeSet<Index>,
    res_index: Index,
    res_revision: Revision,
    /// Numbered changes still needed to fill in answers, after `base`.
    numbered: VecDeque<(Index, Revision)>,
    /// The store revision at `base.0`, before the first of `numbered`.
    base: (Index, Revision),
    waiting: BTreeMap<Index, Waiting>,
    controls: Controls,
}

impl Sequencer {
    /// A sequencer for `shards` shards, all resolved through `index` at `revision`.
    pub fn new(shards: usize, index: Index, revision: Revision) -> Sequencer {
        Sequencer {
            shards,
            through: vec![index; shards],
            seen: vec![index; shards],
            state_bytes: vec![0; shards],
            changed: BTreeSet::new(),
            res_index: index,
            res_revision: revision,
            numbered: VecDeque::new(),
            base: (index, revision),
            waiting: BTreeMap::new(),
            controls: Controls::default(),
        }
    }

    /// Turns negative controls on (builds with `negative-controls` only: the simulator and
    /// the fault campaign's nodes).
    pub fn set_controls(&mut self, controls: Controls) {
        controls.check();
        self.controls = controls;
    }

    /// The last resolution: (index, store revision there).
    pub fn resolved(&self) -> (Index, Revision) {
        (self.res_index, self.res_revision)
    }

    /// Bytes of state over every shard, as last reported.
    pub fn state_bytes(&self) -> u64 {
        self.state_bytes.iter().sum()
    }

    /// The sequencer's progress in one line, for a stall report: what each shard reported
    /// through and had taken in, and the first entries still waiting.
    pub fn describe(&self) -> String {
        let first: Vec<String> = self
            .waiting
            .iter()
            .take(3)
            .map(|(i, w)| {
                format!(
                    "{i}: participants {:#b}, partials {}, decided {}, parts {}, revision {:?}",
                    w.participants,
                    w.partials.len(),
                    w.decided,
                    w.parts.len(),
                    w.revision
                )
            })
            .collect();
        format!(
            "resolved through {} (revision {}); shards through {:?}, seen {:?}; \
             {} changes unnumbered; {} waiting, first: [{}]",
            self.res_index,
            self.res_revision,
            self.through,
            self.seen,
            self.changed.len(),
            self.waiting.len(),
            first.join("; ")
        )
    }

    /// Entries waiting for an answer or a decision.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// An entry was routed: track it when someone waits for its answer or its
    /// participants need a decision.
    pub fn expect(&mut self, e: &Routed) {
        let multi_txn = matches!(&*e.cmd, Command::Txn(_)) && e.participants.count_ones() > 1;
        if !e.answer && !multi_txn {
            return;
        }
        assert!(
            e.index > self.res_index,
            "entry {} routed after its resolution",
            e.index
        );
        let old = self.waiting.insert(
            e.index,
            Waiting {
                cmd: e.cmd.clone(),
                participants: e.participants,
                answer: e.answer,
                parts: Vec::new(),
                partials: Vec::new(),
                decided: !multi_txn,
                revision: None,
            },
        );
        assert!(old.is_none(), "entry {} routed twice", e.index);
    }

    pub fn report(&mut self, r: Report) {
        let s = r.shard;
        assert!(r.through >= self.through[s], "shard {s} went back");
        self.through[s] = r.through;
        self.seen[s] = self.seen[s].max(r.resolved_seen);
        self.state_bytes[s] = r.state_bytes;
        for i in r.changes {
            assert!(
                i > self.res_index,
                "change at {i} reported after its resolution"
            );
            self.changed.insert(i);
        }
        for (i, mut part) in r.parts {
            // Its pending fields are above what the shard had taken in, whose numbering
            // is still kept: fill in what is numbered already, the rest at resolutions.
            if let Ok(p) = &mut part {
                resolve_part(p, &|j| self.number(j));
            }
            let w = self
                .waiting
                .get_mut(&i)
                .unwrap_or_else(|| panic!("a part for entry {i}, which nobody waits for"));
            w.parts.push(part);
        }
    }

    /// A participant's partial: once every participant's is in, the decision for them all
    /// (the txn's index, its participants, the decision).
    pub fn partial(&mut self, p: Partial) -> Option<(Index, u64, Arc<Decision>)> {
        let i = p.index;
        let w = self
            .waiting
            .get_mut(&i)
            .unwrap_or_else(|| panic!("a partial for entry {i}, which is not a multi-shard txn"));
        assert!(
            w.participants >> p.shard & 1 == 1,
            "partial from a non-participant"
        );
        assert!(!w.decided, "partial after the decision");
        w.partials.push(p);
        if w.partials.len() < w.participants.count_ones() as usize {
            return None;
        }
        let Command::Txn(t) = &*w.cmd else {
            unreachable!("partials are for txns")
        };
        w.partials.sort_by_key(|p| p.shard);
        let d = Arc::new(decide(t, &w.partials));
        w.decided = true;
        w.partials = Vec::new();
        let out = (i, w.participants, d);
        if !w.answer {
            self.waiting.remove(&i);
        }
        Some(out)
    }

    /// Numbers what every shard has reported through: the resolution for every shard, if
    /// the point moved.
    pub fn resolve(&mut self) -> Option<Resolution> {
        let m = *self.through.iter().min().expect("a shard");
        if m <= self.res_index {
            return None;
        }
        let mut changes = Vec::new();
        while let Some(&i) = self.changed.first() {
            if i > m {
                break;
            }
            self.changed.pop_first();
            self.res_revision += 1;
            if self.controls.on(|c| c.sequencer_skips_revisions)
                && (self.res_revision - 1) % SKIP_EVERY == 0
            {
                self.res_revision += 1;
            }
            changes.push((i, self.res_revision));
            self.numbered.push_back((i, self.res_revision));
        }
        let from = self.res_index;
        self.res_index = m;
        // Entries resolved now learn their revision; parts their pending fields.
        let mut at = 0;
        let mut rev = self.revision_at_start(from);
        let ids: Vec<Index> = self.waiting.range(from + 1..=m).map(|(&i, _)| i).collect();
        for i in ids {
            while at < changes.len() && changes[at].0 <= i {
                rev = changes[at].1;
                at += 1;
            }
            self.waiting.get_mut(&i).expect("listed").revision = Some(rev);
        }
        let number = |j: Index| -> Option<Revision> {
            changes
                .binary_search_by_key(&j, |c| c.0)
                .ok()
                .map(|k| changes[k].1)
        };
        for w in self.waiting.values_mut() {
            for p in w.parts.iter_mut().flatten() {
                resolve_part(p, &number);
            }
        }
        self.prune();
        Some(Resolution {
            through: m,
            revision: self.res_revision,
            changes,
        })
    }

    /// The store revision at index `from` (the previous resolution point).
    fn revision_at_start(&self, from: Index) -> Revision {
        let n = self.numbered.partition_point(|c| c.0 <= from);
        if n == 0 {
            self.base.1
        } else {
            self.numbered[n - 1].1
        }
    }

    /// Keeps only the numbering a later part may need: above what every shard had taken
    /// in when it computed the parts still to come.
    fn prune(&mut self) {
        let keep_after = *self.seen.iter().min().expect("a shard");
        while let Some(&(i, r)) = self.numbered.front() {
            if i > keep_after || i > self.res_index {
                break;
            }
            self.base = (i, r);
            self.numbered.pop_front();
        }
    }

    fn number(&self, i: Index) -> Option<Revision> {
        if i > self.res_index {
            return None;
        }
        assert!(
            i > self.base.0,
            "pending stamp of entry {i}, whose revision is not kept"
        );
        let at = self
            .numbered
            .binary_search_by_key(&i, |c| c.0)
            .unwrap_or_else(|_| panic!("pending stamp of entry {i}, which changed nothing"));
        Some(self.numbered[at].1)
    }

    /// Answers whose entries are resolved and whose parts are all in, in index order.
    pub fn answers(&mut self) -> Vec<(Index, Applied)> {
        let ready: Vec<Index> = self
            .waiting
            .range(..=self.res_index)
            .filter(|(_, w)| {
                w.answer && w.decided && w.parts.len() == w.participants.count_ones() as usize
            })
            .map(|(&i, _)| i)
            .collect();
        let mut out = Vec::with_capacity(ready.len());
        for i in ready {
            let w = self.waiting.remove(&i).expect("ready");
            for p in w.parts.iter().flatten() {
                assert!(is_resolved(p), "entry {i} answered with a pending revision");
            }
            out.push((
                i,
                Applied {
                    revision: w.revision.expect("resolved"),
                    result: merge_with(&w.cmd, w.parts, &self.controls),
                },
            ));
        }
        out
    }

    pub fn shards(&self) -> usize {
        self.shards
    }
}
