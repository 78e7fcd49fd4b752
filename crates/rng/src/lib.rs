//! Seeded, replayable randomness for everything outside the consensus core: the
//! simulator, the fault campaign, `ringkv bench`, the WAL's simulated disk and the tests.
//!
//! One generator for all of them, so a seed means the same thing everywhere and nobody
//! writes another. The Raft core does not use it: its only dependency is `bytes`, so it keeps
//! a private SplitMix64 for election jitter. Pure: no clock, no OS entropy (a caller that
//! wants a fresh seed passes one in). Must not be used where unpredictability matters
//! (tokens, incarnations): it is deterministic by design.

/// A deterministic generator: the same seed gives the same sequence, on every run.
#[derive(Clone, Debug)]
pub struct Rng(fastrand::Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.u64(..)
    }

    /// Uniform in `0..n`; 0 when `n` is 0 (callers draw from sizes that may be empty).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.0.u64(..n) }
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo { lo } else { self.0.u64(lo..=hi) }
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// An index into a slice of `len` elements (0 when it is empty).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn a_seed_replays_and_ranges_hold() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..64).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut r = Rng::new(1);
        assert_eq!(r.below(0), 0);
        assert_eq!(r.range(5, 5), 5);
        assert_eq!(r.range(9, 3), 9);
        let mut seen = [false; 4];
        for _ in 0..1000 {
            let v = r.range(2, 5);
            assert!((2..=5).contains(&v), "{v}");
            seen[(v - 2) as usize] = true;
            assert!(r.below(3) < 3);
        }
        assert!(seen.iter().all(|s| *s), "every value of 2..=5 drawn");
        assert!(!(0..100).any(|_| r.chance(0)));
        assert!((0..100).all(|_| r.chance(1000)));
    }
}
