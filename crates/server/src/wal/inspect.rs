//! `ringkv wal check DIR` and `ringkv wal dump DIR`: read-only views of a `wal/` directory.
//!
//! Runs on the calling thread with plain std reads (an offline tool: no executor, never
//! writes). Uses the same judgement as start-up recovery (`scan`), without a snapshot, so
//! it accepts a log whose oldest segments were compacted away.

use std::fmt::Write as _;
use std::path::Path;

use super::scan::{self, Scan, SegmentImage, parse_segment_name, segment_name};

/// Outcome of `check`: the text to print and the exit code (0 clean or torn tail only,
/// 1 corruption, 2 unreadable).
pub struct Report {
    pub text: String,
    pub exit_code: i32,
}

/// Segment images by first index, and the names of other files.
type Loaded = (Vec<(u64, Vec<u8>)>, Vec<String>);
/// The scan verdict, the number of segments, other files.
type Scanned = (Result<Scan, scan::Corruption>, usize, Vec<String>);

fn load(dir: &Path) -> Result<Loaded, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut segs = Vec::new();
    let mut other = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        match parse_segment_name(&name) {
            Some(i) => {
                let b = std::fs::read(ent.path())
                    .map_err(|e| format!("cannot read {}: {e}", ent.path().display()))?;
                segs.push((i, b));
            }
            None => other.push(name),
        }
    }
    segs.sort_by_key(|s| s.0);
    other.sort();
    Ok((segs, other))
}

fn scan_dir(dir: &Path) -> Result<Scanned, String> {
    let (segs, other) = load(dir)?;
    let images: Vec<SegmentImage<'_>> = segs
        .iter()
        .map(|(i, b)| SegmentImage {
            first_index: *i,
            bytes: b,
        })
        .collect();
    Ok((scan::scan(&images, None), segs.len(), other))
}

/// Verifies every segment in `dir` and summarizes.
pub fn check(dir: &Path) -> Report {
    let mut t = String::new();
    let (res, nsegs, other) = match scan_dir(dir) {
        Ok(x) => x,
        Err(e) => {
            return Report {
                text: format!("error: {e}\n"),
                exit_code: 2,
            };
        }
    };
    let _ = writeln!(t, "wal: {}", dir.display());
    let _ = writeln!(t, "segments: {nsegs}");
    for n in &other {
        let _ = writeln!(t, "ignored: {n} (not a segment)");
    }
    match res {
        Err(c) => {
            let _ = writeln!(t, "CORRUPTION: {c}");
            let _ = writeln!(t, "refusing: recovery would not start on this log");
            Report {
                text: t,
                exit_code: 1,
            }
        }
        Ok(s) => {
            match (s.entries.first(), s.entries.last()) {
                (Some(f), Some(l)) => {
                    let _ = writeln!(t, "first index: {}", f.index);
                    let _ = writeln!(t, "last index: {}", l.index);
                }
                _ => {
                    let _ = writeln!(t, "entries: none");
                }
            }
            let _ = writeln!(t, "live entries: {}", s.entries.len());
            let _ = writeln!(t, "records read: {}", s.records);
            if let Some((lo, hi)) = s.term_range {
                let _ = writeln!(t, "terms: {lo}..={hi}");
            }
            let _ = writeln!(t, "commit recorded: {}", s.commit);
            match &s.torn {
                None => {
                    let _ = writeln!(t, "status: clean");
                }
                Some(tt) => {
                    let _ = writeln!(
                        t,
                        "status: torn tail in {} from offset {} to {} ({}; {} intact batches after it)",
                        segment_name(tt.segment),
                        tt.from_offset,
                        tt.to_offset,
                        tt.reason,
                        tt.batches_after
                    );
                    let _ = writeln!(
                        t,
                        "repair at start-up: zero bytes {}..{} of {}; the log then ends at {}",
                        tt.from_offset,
                        tt.to_offset,
                        segment_name(tt.segment),
                        s.entries.last().map_or(0, |e| e.index)
                    );
                }
            }
            Report {
                text: t,
                exit_code: 0,
            }
        }
    }
}

/// Prints every live record (`index term kind bytes payload-prefix`).
pub fn dump(dir: &Path) -> Report {
    let (res, _, _) = match scan_dir(dir) {
        Ok(x) => x,
        Err(e) => {
            return Report {
                text: format!("error: {e}\n"),
                exit_code: 2,
            };
        }
    };
    match res {
        Err(c) => Report {
            text: format!("CORRUPTION: {c}\n"),
            exit_code: 1,
        },
        Ok(s) => {
            let mut t = String::new();
            let _ = writeln!(t, "# index term kind bytes data (hex, first 32 bytes)");
            for e in &s.entries {
                let hex: String = e.data.iter().take(32).map(|b| format!("{b:02x}")).collect();
                let _ = writeln!(
                    t,
                    "{} {} {:?} {} {}",
                    e.index,
                    e.term,
                    e.kind,
                    e.data.len(),
                    hex
                );
            }
            Report {
                text: t,
                exit_code: 0,
            }
        }
    }
}
