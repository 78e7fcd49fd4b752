//! The in-memory Raft log: entries after the latest snapshot.
//!
//! Owns the entries the core reasons about (a copy of what the WAL holds, sharing payload
//! buffers). Part of the Raft core: no I/O. It does not know what is persisted; the core
//! tracks that through numbered `Ready`s.

use std::collections::VecDeque;

use super::types::{Entry, Index, Term};

#[derive(Debug, Default)]
pub struct RaftLog {
    /// Index of the last entry covered by the snapshot (0 if none).
    snapshot_index: Index,
    /// Term of the entry at `snapshot_index`.
    snapshot_term: Term,
    /// Invariant: `entries[i].index == snapshot_index + 1 + i`; terms never decrease.
    entries: VecDeque<Entry>,
}

impl RaftLog {
    /// A log that starts right after a snapshot at (`index`, `term`).
    pub fn new(snapshot_index: Index, snapshot_term: Term) -> Self {
        Self {
            snapshot_index,
            snapshot_term,
            entries: VecDeque::new(),
        }
    }

    pub fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    pub fn first_index(&self) -> Index {
        self.snapshot_index + 1
    }

    pub fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as Index
    }

    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    /// Term at `index`, or `None` if it is compacted away or beyond the end.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.get(index).map(|e| e.term)
    }

    pub fn get(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// Appends entries that continue the log exactly.
    pub fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            assert_eq!(e.index, self.last_index() + 1, "log append leaves a gap");
            assert!(
                e.term >= self.last_term(),
                "log term goes backwards at {}",
                e.index
            );
            self.entries.push_back(e);
        }
    }

    /// Drops every entry at `index` and after. The caller asserts it is above commit.
    pub fn truncate_from(&mut self, index: Index) {
        assert!(
            index > self.snapshot_index,
            "truncating into the snapshot at {index}"
        );
        let keep = (index - self.snapshot_index - 1) as usize;
        self.entries.truncate(keep);
    }

    /// Drops entries up to and including `index` (now covered by a snapshot).
    pub fn compact_to(&mut self, index: Index, term: Term) {
        assert!(index >= self.snapshot_index, "compaction goes backwards");
        let drop = (index - self.snapshot_index).min(self.entries.len() as Index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
        if let Some(first) = self.entries.front() {
            assert_eq!(first.index, index + 1, "compaction left a gap");
        }
    }

    /// Clones (cheaply: payloads are shared) entries `from..=to`, capped by count and bytes.
    /// Always returns at least one entry when `from <= to`, even if it alone is too big.
    pub fn slice(&self, from: Index, to: Index, count_max: usize, bytes_max: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = from;
        while i <= to && out.len() < count_max {
            let e = self.get(i).expect("slice of a missing entry");
            bytes += e.size_bytes();
            if bytes > bytes_max && !out.is_empty() {
                break;
            }
            out.push(e.clone());
            i += 1;
        }
        out
    }

    /// Largest index <= `index` whose term is <= `term` (etcd's findConflictByTerm), or the
    /// snapshot index if none is left in memory. Used for fast backtracking on both sides.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        while i > self.snapshot_index {
            let t = self.term(i).expect("index within log");
            if t <= term {
                return (i, t);
            }
            i -= 1;
        }
        (self.snapshot_index, self.snapshot_term)
    }

    /// Whether a log ending at (`index`, `term`) is at least as up to date as ours (5.4.1).
    pub fn is_up_to_date(&self, index: Index, term: Term) -> bool {
        term > self.last_term() || (term == self.last_term() && index >= self.last_index())
    }

    /// Entries from `from` (clamped to the first entry) to the end.
    pub fn iter_from(&self, from: Index) -> impl Iterator<Item = &Entry> {
        let skip = (from.saturating_sub(self.first_index()) as usize).min(self.entries.len());
        self.entries.range(skip..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;
    use bytes::Bytes;

    fn e(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Bytes::from_static(b"xy"),
        }
    }

    #[test]
    fn append_truncate_compact() {
        let mut log = RaftLog::new(0, 0);
        log.append([e(1, 1), e(2, 1), e(3, 2), e(4, 2)]);
        assert_eq!((log.last_index(), log.last_term()), (4, 2));
        log.truncate_from(3);
        assert_eq!(log.last_index(), 2);
        log.append([e(3, 3)]);
        log.compact_to(2, 1);
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(1), None);
        assert_eq!(log.get(3).unwrap().term, 3);
    }

    #[test]
    fn find_conflict_by_term_walks_back_to_a_lower_term() {
        let mut log = RaftLog::new(0, 0);
        log.append([e(1, 1), e(2, 1), e(3, 4), e(4, 4), e(5, 5)]);
        assert_eq!(log.find_conflict_by_term(5, 3), (2, 1));
        assert_eq!(log.find_conflict_by_term(9, 4), (4, 4));
        assert_eq!(log.find_conflict_by_term(5, 0), (0, 0));
    }

    #[test]
    #[should_panic(expected = "gap")]
    fn append_with_gap_panics() {
        let mut log = RaftLog::new(0, 0);
        log.append([e(2, 1)]);
    }

    #[test]
    fn slice_respects_byte_cap_but_returns_one() {
        let mut log = RaftLog::new(0, 0);
        log.append([e(1, 1), e(2, 1), e(3, 1)]);
        assert_eq!(log.slice(1, 3, 10, 1).len(), 1);
        assert_eq!(log.slice(1, 3, 2, usize::MAX).len(), 2);
        assert_eq!(log.slice(1, 3, 10, 52).len(), 2);
    }
}
