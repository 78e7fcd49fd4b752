//! WAL tests: random operations with power cuts on the simulated disk, crash images on
//! real O_DIRECT files through io_uring, fault injection (failed fsync, full disk), MemFirst
//! buffering, snapshots and the `ringkv wal check` verdicts.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use ringkv::raft::{Entry, EntryKind, HardState, Membership, SnapshotMeta, SplitMix64};
use ringkv::wal::disk::Disk;
use ringkv::wal::{
    DmaDisk, MemFirstPolicy, SimDisk, SnapshotStore, Wal, WalError, WalOptions, inspect,
};

/// Runs `f` on a fresh glommio executor (the WAL's flush workers are local tasks).
fn run<T: 'static, F: Future<Output = T> + 'static>(f: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move { f().await })
        .expect("executor starts")
        .join()
        .expect("executor ran")
}

/// A directory on the real filesystem (ext4: O_DIRECT works there, not on tmpfs), removed
/// when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "wal-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn entry(index: u64, term: u64, len: usize, salt: u64) -> Entry {
    let data: Vec<u8> = (0..len)
        .map(|i| (index.wrapping_mul(31) ^ salt ^ i as u64) as u8)
        .collect();
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::from(data),
    }
}

/// Small segments and batches so rotation, truncation across segments and torn windows
/// are exercised with few entries.
fn small_opts(dir: &Path) -> WalOptions {
    WalOptions {
        segment_bytes_max: 40 << 10,
        batch_bytes_max: 8 << 10,
        flush_workers: 3,
        ..WalOptions::new(dir)
    }
}

fn key(e: &Entry) -> (u64, u64, Bytes) {
    (e.index, e.term, e.data.clone())
}

/// The model: the log after each persisted Ready, with the truncation point each one had.
struct Model {
    /// (ready number, log after it (entries above base), truncated-from index if any)
    states: Vec<(u64, Vec<Entry>, Option<u64>)>,
}

impl Model {
    /// Recovery is correct when the log lies between the states after two consecutive
    /// Readies k and k+1, with k at or after the last reported one: the state after k plus
    /// a prefix of k+1's writes (a Ready may span several batches; a truncating Ready may
    /// have deleted segments before its batch landed).
    fn accepts(&self, reported: u64, base: u64, got: &[Entry]) -> bool {
        let got: Vec<_> = got.iter().map(key).collect();
        let above = |st: &[Entry]| -> Vec<_> {
            st.iter().filter(|e| e.index > base).map(key).collect()
        };
        for (i, (n, st, _)) in self.states.iter().enumerate() {
            if *n < reported {
                continue;
            }
            let st = above(st);
            if st == got {
                return true;
            }
            if let Some((_, next, cut)) = self.states.get(i + 1) {
                let next = above(next);
                let keep = match cut {
                    Some(c) => st.iter().filter(|e| e.0 < *c).count(),
                    None => st.len(),
                };
                if got.len() >= keep && next.starts_with(&got) {
                    return true;
                }
                // Mid-truncation: segments past the cut deleted, the new batch not landed.
                if cut.is_some() && got.len() >= keep && st.starts_with(&got) {
                    return true;
                }
            }
        }
        false
    }
}

/// Random appends, truncations, compactions and hard-state changes on the simulated
/// disk, with power cuts at random points; after each cut, recovery must give a log that
/// holds everything reported persisted (unless truncated later) and no truncated entry.
#[test]
fn random_operations_with_power_cuts_recover_exactly_what_was_persisted() {
    let seeds: Vec<u64> = match std::env::var("WAL_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => (0..300).collect(),
    };
    let (mut torn, mut torn_with_later) = (0, 0);
    for seed in seeds {
        let (t, l) = run(move || async move { random_ops_seed(seed).await });
        torn += t;
        torn_with_later += l;
    }
    eprintln!("torn tails cut: {torn}, with intact batches after the damage: {torn_with_later}");
}

async fn random_ops_seed(seed: u64) -> (u32, u32) {
    let (mut torn, mut torn_with_later) = (0, 0);
    let mut rng = SplitMix64::new(seed);
    let disk = SimDisk::new();
    let dir = PathBuf::from("/sim/node");
    let opts = WalOptions {
        flush_workers: 1 + rng.below(4) as usize,
        ..small_opts(&dir)
    };
    let mut base = (0u64, 0u64);
    let mut log: Vec<Entry> = Vec::new();
    let mut hs = HardState::default();
    let mut term = 1;
    let mut salt = seed << 32;
    for _crash in 0..4 {
        let (mut wal, rec) = Wal::open(disk.clone(), opts.clone(), base)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
        // The model continues from what was recovered.
        log = rec.entries;
        assert!(log.first().is_none_or(|e| e.index == base.0 + 1), "seed {seed}");
        hs = rec.hard_state;
        term = term.max(hs.term).max(log.last().map_or(0, |e| e.term));
        let mut model = Model {
            states: vec![(0, log.clone(), None)],
        };
        let mut reported = 0;
        let mut hs_reported: Vec<(u64, HardState)> = vec![(0, hs)];
        let ops = 20 + rng.below(60);
        for number in 1..=ops {
            let last = base.0 + log.len() as u64;
            let mut new_hs = None;
            if rng.below(8) == 0 {
                term += 1;
                hs = HardState {
                    term,
                    vote: rng.below(4),
                    commit: hs.commit,
                };
                new_hs = Some(hs);
            }
            // Commit can move up to what is durable (as in Raft: acknowledged by a quorum).
            if rng.below(3) == 0 && wal.persisted_index() > hs.commit {
                hs.commit = hs.commit + rng.below(wal.persisted_index() - hs.commit + 1);
                new_hs = Some(hs);
            }
            let mut cut = None;
            let entries: Vec<Entry> = match rng.below(10) {
                0 if last > hs.commit.max(base.0) => {
                    // Truncate a conflicting suffix: a new leader's entries from `from`.
                    let from = hs.commit.max(base.0) + 1 + rng.below(last - hs.commit.max(base.0));
                    term += 1;
                    cut = Some(from);
                    let n = 1 + rng.below(12);
                    (from..from + n)
                        .map(|i| {
                            salt += 1;
                            entry(i, term, rng.below(900) as usize, salt)
                        })
                        .collect()
                }
                1 if hs.commit > base.0 => {
                    // A snapshot at a committed index: compact.
                    let at = base.0 + 1 + rng.below(hs.commit - base.0);
                    let t = log[(at - base.0 - 1) as usize].term;
                    wal.compact(at, t).await.unwrap();
                    log.drain(..(at - base.0) as usize);
                    base = (at, t);
                    Vec::new()
                }
                _ => {
                    let n = rng.below(20);
                    (last + 1..last + 1 + n)
                        .map(|i| {
                            salt += 1;
                            entry(i, term, rng.below(1500) as usize, salt)
                        })
                        .collect()
                }
            };
            if std::env::var("WAL_TRACE").is_ok() {
                eprintln!(
                    "seed {seed} op {number}: hs {new_hs:?} cut {cut:?} entries {:?} base {base:?} persisted {}",
                    entries.first().map(|e| (e.index, entries.len())),
                    wal.persisted_index()
                );
            }
            if let Some(from) = cut {
                log.truncate((from - base.0 - 1) as usize);
            }
            log.extend(entries.iter().cloned());
            wal.persist(number, new_hs, false, None, &entries)
                .await
                .unwrap();
            model.states.push((number, log.clone(), cut));
            if new_hs.is_some() {
                hs_reported.push((number, hs));
            }
            match rng.below(4) {
                0 => {
                    if let Some(n) = wal.next_persisted().await.unwrap() {
                        reported = reported.max(n);
                    }
                }
                1 => {
                    for n in wal.take_completed() {
                        reported = reported.max(n);
                    }
                }
                _ => {}
            }
            // Read back a random range that is durable.
            if rng.below(6) == 0 && !log.is_empty() {
                let lo = base.0 + 1 + rng.below(log.len() as u64);
                let hi = lo + rng.below(base.0 + log.len() as u64 - lo + 1);
                let got = wal.read_range(lo, hi).await.unwrap();
                let want = &log[(lo - base.0 - 1) as usize..=(hi - base.0 - 1) as usize];
                assert_eq!(
                    got.iter().map(key).collect::<Vec<_>>(),
                    want.iter().map(key).collect::<Vec<_>>(),
                    "seed {seed}: read_range({lo}, {hi})"
                );
            }
            for n in wal.take_completed() {
                reported = reported.max(n);
            }
        }
        // Sometimes let everything finish before the cut.
        if rng.below(3) == 0 {
            while let Some(n) = wal.next_persisted().await.unwrap() {
                reported = reported.max(n);
            }
        }
        drop(wal);
        disk.crash(&mut rng);
        if std::env::var("WAL_TRACE").is_ok() {
            eprintln!("seed {seed}: crash (reported {reported})");
        }
        // Verify by reopening read-only first (the next loop iteration reopens for real).
        let (_w, rec) = Wal::open(disk.clone(), opts.clone(), base)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: recovery refused: {e}"));
        assert!(
            model.accepts(reported, base.0, &rec.entries),
            "seed {seed}: recovered {:?} (last reported Ready {reported}) is no state the \
             model allows",
            rec.entries
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>()
        );
        let hs_floor = hs_reported
            .iter()
            .filter(|(n, _)| *n <= reported)
            .map(|(_, h)| h.term)
            .max()
            .unwrap_or(0);
        assert!(
            rec.hard_state.term >= hs_floor,
            "seed {seed}: hard state term {} went below the reported {hs_floor}",
            rec.hard_state.term
        );
        assert!(
            hs_reported
                .iter()
                .any(|(_, h)| (h.term, h.vote) == (rec.hard_state.term, rec.hard_state.vote)),
            "seed {seed}: recovered a (term, vote) never written"
        );
        if let Some(t) = &rec.torn {
            torn += 1;
            torn_with_later += (t.batches_after > 0) as u32;
        }
        hs.term = rec.hard_state.term;
    }
    (torn, torn_with_later)
}
