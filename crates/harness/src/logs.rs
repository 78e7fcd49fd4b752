//! What nodes wrote in their log directories: the text (`read`) and the "Became leader"
//! claims in it (`leader_claims`), which the tests and the campaign's one-leader-per-term
//! check both read.
//!
//! Runs on the caller's thread. Must not touch node internals: it reads files a node has
//! written, as `grep -r "Became leader" logs/` would.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ringkv_raft::NodeId;

/// Every file in a node's log directory (`d.log`, rotated ones, `stderr.log`), in name
/// order, one after the other; empty when there is none.
pub fn read(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            out.push_str(&std::fs::read_to_string(f).unwrap_or_default());
        }
    }
    out
}

/// Every (term, node) some "Became leader" line of `text` claims, each once (a line is in
/// both `d.log` and `stderr.log`), in order.
pub fn leader_claims(text: &str) -> BTreeSet<(u64, NodeId)> {
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| l.contains("Became leader")) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.trim_matches('"').parse::<u64>().ok())
        };
        if let (Some(n), Some(t)) = (field("node="), field("term=")) {
            out.insert((t, n));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn claims_are_read_from_text_lines_once_each() {
        let text = "2025-01-01T00:00:00Z  WARN node{id=2}: ringkv_server::node::core: \
                    Became leader node=2 term=7\n\
                    2025-01-01T00:00:00Z  INFO node{id=2}: something else node=3 term=9\n\
                    2025-01-01T00:00:00Z  WARN node{id=2}: ringkv_server::node::core: \
                    Became leader node=2 term=7\n\
                    x WARN Became leader node=\"1\" term=\"8\"\n";
        let claims: Vec<_> = super::leader_claims(text).into_iter().collect();
        assert_eq!(claims, vec![(7, 2), (8, 1)]);
    }
}
