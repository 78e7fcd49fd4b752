//! WAL recovery on damaged segments: a valid segment is written from the input (entries,
//! batch sizes), then damaged as the input says (bit flips, zeroed ranges, a cut). The scan
//! must refuse, or return a prefix of what was written: never an entry that was not.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringkv_raft::{Entry, EntryKind};
use ringkv_server::wal::format::{BLOCK, SegmentHeader, batch_bytes, encode_batch};
use ringkv_server::wal::scan::{SegmentImage, scan};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (shape, damage) = data.split_at(data.len().min(24));
    let batches = 1 + shape[0] as usize % 6;
    let mut written: Vec<Entry> = Vec::new();
    let mut seg = vec![0u8; BLOCK];
    SegmentHeader {
        first_index: 1,
        segment_bytes: 1 << 20,
        flush_workers: 1 + u32::from(shape[1] % 4),
        torn_window_bytes: (1 + u64::from(shape[1] % 4)) * 16 * BLOCK as u64,
        seq: 1,
    }
    .encode(&mut seg[..BLOCK]);
    for b in 0..batches {
        let n = 1 + *shape.get(2 + b).unwrap_or(&3) as usize % 5;
        let es: Vec<Entry> = (0..n)
            .map(|i| {
                let index = written.len() as u64 + 1 + i as u64;
                let len = (index as usize * 37 + usize::from(shape[3 % shape.len()])) % 300;
                Entry {
                    index,
                    term: 1 + b as u64 / 2,
                    kind: EntryKind::Normal,
                    data: Bytes::from((0..len).map(|x| (x as u64 ^ index) as u8).collect::<Vec<_>>()),
                }
            })
            .collect();
        let mut buf = vec![0u8; batch_bytes(&es)];
        encode_batch(&mut buf, &es, written.len() as u64, false);
        seg.extend_from_slice(&buf);
        written.extend(es);
    }
    // Damage: 5-byte commands (offset u32, op); op 0..=7 flips that bit, 8 zeroes a
    // block-sized range, 9 cuts the file there.
    for cmd in damage.chunks_exact(5) {
        let at = u32::from_le_bytes(cmd[..4].try_into().unwrap()) as usize % seg.len();
        match cmd[4] % 10 {
            b @ 0..=7 => seg[at] ^= 1 << b,
            8 => {
                let end = (at + 512).min(seg.len());
                seg[at..end].fill(0);
            }
            _ => seg.truncate(at.max(1)),
        }
    }
    if let Ok(s) = scan(&[SegmentImage { first_index: 1, bytes: &seg }], None) {
        assert!(s.entries.len() <= written.len(), "more entries than were written");
        for (got, want) in s.entries.iter().zip(&written) {
            assert_eq!(
                (got.index, got.term, &got.data),
                (want.index, want.term, &want.data),
                "recovered an entry that was never written"
            );
        }
    }
});
