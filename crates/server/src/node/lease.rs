//! The raft core's published view for shards: (term, lease expiry, commit index), read
//! and written as one value.
//!
//! Written only by the raft core's driver, read by every shard executor without locks
//! (a sequence lock over three atomics: a reader retries while a write is in progress, so
//! it never sees the term of one publication with the commit of another). Must not hold
//! anything else: it is how a shard serves a lease read with no round trip.

use std::sync::atomic::{AtomicU64, Ordering, fence};

#[derive(Debug, Default)]
pub struct LeaseView {
    seq: AtomicU64,
    term: AtomicU64,
    /// Nanoseconds on the node's shared clock; 0 = no lease.
    expiry_ns: AtomicU64,
    commit: AtomicU64,
}

/// One consistent reading of the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub term: u64,
    pub expiry_ns: u64,
    pub commit: u64,
}

impl LeaseView {
    /// Publishes a new view. Single writer (the raft core).
    pub fn publish(&self, l: Lease) {
        let s = self.seq.load(Ordering::Relaxed);
        debug_assert!(s % 2 == 0, "two writers");
        self.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.term.store(l.term, Ordering::Relaxed);
        self.expiry_ns.store(l.expiry_ns, Ordering::Relaxed);
        self.commit.store(l.commit, Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
    }

    /// A consistent reading (retries while a publication is in progress).
    pub fn read(&self) -> Lease {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let l = Lease {
                term: self.term.load(Ordering::Relaxed),
                expiry_ns: self.expiry_ns.load(Ordering::Relaxed),
                commit: self.commit.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return l;
            }
        }
    }

    /// The commit index a lease read may be served at, if the lease holds at `now_ns`.
    pub fn valid_commit(&self, now_ns: u64) -> Option<u64> {
        let l = self.read();
        (l.expiry_ns != 0 && now_ns < l.expiry_ns).then_some(l.commit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn readers_never_see_a_torn_publication() {
        let v = Arc::new(LeaseView::default());
        let w = {
            let v = v.clone();
            std::thread::spawn(move || {
                for i in 1..200_000u64 {
                    v.publish(Lease {
                        term: i,
                        expiry_ns: i * 3,
                        commit: i * 7,
                    });
                }
            })
        };
        let mut seen = 0;
        while !w.is_finished() || seen == 0 {
            let l = v.read();
            assert_eq!(l.expiry_ns, l.term * 3, "torn read {l:?}");
            assert_eq!(l.commit, l.term * 7, "torn read {l:?}");
            seen += 1;
        }
        w.join().unwrap();
    }

    #[test]
    fn a_lease_holds_only_before_its_expiry() {
        let v = LeaseView::default();
        assert_eq!(v.valid_commit(1), None, "no lease published");
        v.publish(Lease {
            term: 2,
            expiry_ns: 1000,
            commit: 9,
        });
        assert_eq!(v.valid_commit(999), Some(9));
        assert_eq!(v.valid_commit(1000), None);
    }
}
