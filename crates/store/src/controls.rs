//! Deliberate bugs in the store, for the negative controls: each breaks one rule of the
//! design (ARCHITECTURE.md, "The etcd data model across shards") in a way the simulator's
//! store checkers must catch; `sequencer_skips_revisions` also runs in the fault
//! campaign's nodes (`[testing] controls`), whose store checker must catch it too.
//!
//! Plain data. The switches are honoured only in builds with the `negative-controls`
//! feature (`on` is always false without it), and `Store::set_controls` refuses to turn one
//! on in a build without it, as the Raft core's `Config::validate` does for its own
//! controls. Never set outside the simulator and the fault campaign's builds.

/// The store's negative controls (all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Controls {
    /// A shard decides a txn compare on a mod or create revision still pending (written by
    /// an entry the sequencer has not numbered yet) from the lowest revision it may get, as
    /// if that were exact, instead of waiting for the resolution.
    pub compare_without_waiting: bool,
    /// A txn whose branches only read reports a change, so the sequencer gives it a
    /// revision of its own.
    pub read_only_txn_bumps_revision: bool,
    /// A range answered from several shards' parts leaves out the last part that found a
    /// key (in a top-level read and in a txn's answer).
    pub range_drops_a_part: bool,
    /// The sequencer skips a revision number now and then: the one after every multiple of
    /// `SKIP_EVERY` it hands out.
    pub sequencer_skips_revisions: bool,
}

/// With `sequencer_skips_revisions`, the revision after each multiple of this is skipped.
pub const SKIP_EVERY: i64 = 40;

impl Controls {
    /// Whether the control `f` picks is on (always false without the feature).
    pub fn on(&self, f: impl Fn(&Controls) -> bool) -> bool {
        cfg!(feature = "negative-controls") && f(self)
    }

    /// Refuses controls in a build that cannot honour them (a control that silently did
    /// nothing would be "caught" by nothing and look like a checker's failure).
    pub(crate) fn check(&self) {
        assert!(
            cfg!(feature = "negative-controls") || *self == Controls::default(),
            "store negative controls need the negative-controls build feature"
        );
    }
}
