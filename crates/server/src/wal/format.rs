//! On-disk formats of the WAL: segment headers, batches, records, hard-state slots.
//!
//! Pure byte layout (no I/O), shared by the writer, recovery and `ringkv wal check`.
//! All integers are little-endian. Every structure carries a CRC32C.
//!
//! A segment is a pre-zeroed file of `segment_bytes` bytes:
//! ```text
//! [segment header, 4 KiB block][batch][batch]...[zeros to the end]
//! ```
//! A batch starts at a 4 KiB-aligned offset, so a block holding synced records is never
//! rewritten by a later batch:
//! ```text
//! [batch header 40 B][record][record]...[zero padding to the next 4 KiB boundary]
//! record = [crc u32][len u32][index u64][term u64][kind u8][7 zero bytes][payload][zero pad to 8]
//! ```
//! The record CRC covers its header after the CRC field and its payload.

use bytes::Bytes;

use ringkv_raft::{Entry, EntryKind, HardState, Index, Term};

/// Unit of alignment for O_DIRECT writes and of batch placement.
pub const BLOCK: usize = 4096;
pub const SEGMENT_MAGIC: &[u8; 8] = b"RKVWSEG1";
pub const SEGMENT_HEADER_BYTES: usize = 64;
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"RKVB");
pub const BATCH_HEADER_BYTES: usize = 40;
pub const RECORD_HEADER_BYTES: usize = 32;
/// The batch replaces the log from its first index (a conflicting suffix was truncated).
pub const FLAG_TRUNCATE: u32 = 1;
pub const HARD_STATE_MAGIC: u32 = u32::from_le_bytes(*b"RKVH");
/// The hard-state file: two slots, written alternately, so one is always whole.
pub const HARD_STATE_FILE_BYTES: usize = 2 * BLOCK;
const HARD_STATE_SLOT_BYTES: usize = 44;

pub fn align_up(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Fixed facts of one segment, stored in its first block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Index of the first entry written into the segment (also its file name).
    pub first_index: Index,
    /// Size the segment was created with.
    pub segment_bytes: u64,
    /// Flush workers when the segment was created: at most this many batches can be in
    /// flight, so at most this many can follow a torn one.
    pub flush_workers: u32,
    /// `flush_workers × batch_bytes_max` when created: the torn-tail window.
    pub torn_window_bytes: u64,
    /// Creation order. Recovery reads segments in this order: a segment started by a
    /// truncation can carry a lower name than older segments it supersedes.
    pub seq: u64,
}

impl SegmentHeader {
    /// Encodes into a whole zeroed block.
    pub fn encode(&self, block: &mut [u8]) {
        assert!(block.len() >= BLOCK);
        block[..BLOCK].fill(0);
        block[0..8].copy_from_slice(SEGMENT_MAGIC);
        block[8..12].copy_from_slice(&1u32.to_le_bytes()); // format version
        block[12..16].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        block[16..24].copy_from_slice(&self.first_index.to_le_bytes());
        block[24..32].copy_from_slice(&self.segment_bytes.to_le_bytes());
        block[32..36].copy_from_slice(&self.flush_workers.to_le_bytes());
        block[40..48].copy_from_slice(&self.torn_window_bytes.to_le_bytes());
        block[48..56].copy_from_slice(&self.seq.to_le_bytes());
        let crc = crc32c::crc32c(&block[0..60]);
        block[60..64].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes and verifies the first block of a segment.
    pub fn decode(block: &[u8]) -> Result<Self, String> {
        if block.len() < BLOCK {
            return Err(format!(
                "segment is {} bytes, shorter than its header block",
                block.len()
            ));
        }
        if &block[0..8] != SEGMENT_MAGIC {
            return Err("segment header magic is wrong".into());
        }
        let crc = u32_at(block, 60);
        if crc32c::crc32c(&block[0..60]) != crc {
            return Err("segment header checksum mismatch".into());
        }
        let version = u32_at(block, 8);
        if version != 1 {
            return Err(format!("segment format version {version} is not supported"));
        }
        if block[SEGMENT_HEADER_BYTES..BLOCK].iter().any(|&b| b != 0) {
            return Err("segment header block padding is not zero".into());
        }
        Ok(Self {
            first_index: u64_at(block, 16),
            segment_bytes: u64_at(block, 24),
            flush_workers: u32_at(block, 32),
            torn_window_bytes: u64_at(block, 40),
            seq: u64_at(block, 48),
        })
    }
}

/// Bytes one record takes in a batch.
pub fn record_bytes(payload_len: usize) -> usize {
    RECORD_HEADER_BYTES + payload_len.div_ceil(8) * 8
}

/// Bytes of the aligned buffer a batch of these entries needs.
pub fn batch_bytes(entries: &[Entry]) -> usize {
    let records: usize = entries.iter().map(|e| record_bytes(e.data.len())).sum();
    align_up(BATCH_HEADER_BYTES + records)
}

/// The header of a batch, as decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub flags: u32,
    pub first_index: Index,
    /// Commit index known when the batch was written (commit persisted for free).
    pub commit: Index,
    pub count: u32,
    pub records_bytes: u32,
}

impl BatchHeader {
    /// Whole aligned length of the batch on disk.
    pub fn total_bytes(&self) -> usize {
        align_up(BATCH_HEADER_BYTES + self.records_bytes as usize)
    }

    pub fn truncates(&self) -> bool {
        self.flags & FLAG_TRUNCATE != 0
    }

    /// Decodes the header at the start of `b`. `Ok(None)`: all zero (no batch here).
    pub fn decode(b: &[u8]) -> Result<Option<Self>, String> {
        if b.len() < BATCH_HEADER_BYTES {
            return Err("batch header runs past the end of the segment".into());
        }
        let h = &b[..BATCH_HEADER_BYTES];
        if h.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        if u32_at(h, 0) != BATCH_MAGIC {
            return Err("batch header magic is wrong".into());
        }
        if crc32c::crc32c(&h[0..36]) != u32_at(h, 36) {
            return Err("batch header checksum mismatch".into());
        }
        let hdr = Self {
            flags: u32_at(h, 4),
            first_index: u64_at(h, 8),
            commit: u64_at(h, 16),
            count: u32_at(h, 24),
            records_bytes: u32_at(h, 28),
        };
        if hdr.flags & !FLAG_TRUNCATE != 0 || u32_at(h, 32) != 0 {
            return Err("batch header has unknown flags".into());
        }
        if hdr.count == 0 || hdr.first_index == 0 {
            return Err("batch header describes an empty batch".into());
        }
        Ok(Some(hdr))
    }
}

/// Encodes a batch into `out` (length `batch_bytes(entries)`), every byte written.
/// `truncate`: the batch replaces any log suffix from `entries[0].index`.
pub fn encode_batch(out: &mut [u8], entries: &[Entry], commit: Index, truncate: bool) {
    assert!(!entries.is_empty(), "empty batch");
    assert_eq!(out.len(), batch_bytes(entries));
    let mut at = BATCH_HEADER_BYTES;
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.index, entries[0].index + i as u64, "batch not contiguous");
        let len = e.data.len();
        let rec = &mut out[at..at + record_bytes(len)];
        rec[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        rec[8..16].copy_from_slice(&e.index.to_le_bytes());
        rec[16..24].copy_from_slice(&e.term.to_le_bytes());
        rec[24] = e.kind as u8;
        rec[25..32].fill(0);
        rec[32..32 + len].copy_from_slice(&e.data);
        rec[32 + len..].fill(0);
        let mut crc = crc32c::crc32c(&rec[4..32]);
        crc = crc32c::crc32c_append(crc, &e.data);
        rec[0..4].copy_from_slice(&crc.to_le_bytes());
        at += rec.len();
    }
    let records_bytes = at - BATCH_HEADER_BYTES;
    out[at..].fill(0);
    let h = &mut out[..BATCH_HEADER_BYTES];
    h[0..4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
    let flags = if truncate { FLAG_TRUNCATE } else { 0 };
    h[4..8].copy_from_slice(&flags.to_le_bytes());
    h[8..16].copy_from_slice(&entries[0].index.to_le_bytes());
    h[16..24].copy_from_slice(&commit.to_le_bytes());
    h[24..28].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    h[28..32].copy_from_slice(&(records_bytes as u32).to_le_bytes());
    h[32..36].fill(0);
    let crc = crc32c::crc32c(&h[0..36]);
    h[36..40].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes and verifies a whole batch (`b` starts at its header and holds at least
/// `total_bytes`). Errors name the problem and the byte offset within the batch.
pub fn decode_batch(b: &[u8], hdr: &BatchHeader) -> Result<Vec<Entry>, (usize, String)> {
    let total = hdr.total_bytes();
    if b.len() < total {
        return Err((0, "batch runs past the end of the segment".into()));
    }
    let end = BATCH_HEADER_BYTES + hdr.records_bytes as usize;
    let mut at = BATCH_HEADER_BYTES;
    let mut out = Vec::with_capacity(hdr.count as usize);
    for i in 0..hdr.count as u64 {
        if at + RECORD_HEADER_BYTES > end {
            return Err((at, "record header runs past the batch".into()));
        }
        let len = u32_at(b, at + 4) as usize;
        let rb = record_bytes(len);
        if at + rb > end {
            return Err((at, format!("record of {len} bytes runs past the batch")));
        }
        let rec = &b[at..at + rb];
        let mut crc = crc32c::crc32c(&rec[4..32]);
        crc = crc32c::crc32c_append(crc, &rec[32..32 + len]);
        if crc != u32_at(rec, 0) {
            return Err((at, "record checksum mismatch".into()));
        }
        let index = u64_at(rec, 8);
        if index != hdr.first_index + i {
            return Err((
                at,
                format!(
                    "record index {index} where {} was expected",
                    hdr.first_index + i
                ),
            ));
        }
        let Some(kind) = EntryKind::from_u8(rec[24]) else {
            return Err((at, format!("record kind {} is unknown", rec[24])));
        };
        if rec[25..32].iter().any(|&x| x != 0) || rec[32 + len..].iter().any(|&x| x != 0) {
            return Err((at, "record padding is not zero".into()));
        }
        let term: Term = u64_at(rec, 16);
        out.push(Entry {
            index,
            term,
            kind,
            data: Bytes::copy_from_slice(&rec[32..32 + len]),
        });
        at += rb;
    }
    if at != end {
        return Err((at, "batch length disagrees with its records".into()));
    }
    if b[end..total].iter().any(|&x| x != 0) {
        return Err((end, "batch padding is not zero".into()));
    }
    Ok(out)
}

/// One slot of the hard-state file.
pub fn encode_hard_state(slot: &mut [u8], seq: u64, hs: &HardState) {
    assert!(slot.len() >= BLOCK);
    slot[..BLOCK].fill(0);
    slot[0..4].copy_from_slice(&HARD_STATE_MAGIC.to_le_bytes());
    slot[4..8].copy_from_slice(&1u32.to_le_bytes());
    slot[8..16].copy_from_slice(&seq.to_le_bytes());
    slot[16..24].copy_from_slice(&hs.term.to_le_bytes());
    slot[24..32].copy_from_slice(&hs.vote.to_le_bytes());
    slot[32..40].copy_from_slice(&hs.commit.to_le_bytes());
    let crc = crc32c::crc32c(&slot[0..40]);
    slot[40..HARD_STATE_SLOT_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// A hard-state slot: `Ok(None)` when never written (all zero), `Err` when damaged.
pub fn decode_hard_state(slot: &[u8]) -> Result<Option<(u64, HardState)>, String> {
    if slot.len() < BLOCK {
        return Err("hard-state slot is short".into());
    }
    if slot[..BLOCK].iter().all(|&b| b == 0) {
        return Ok(None);
    }
    if u32_at(slot, 0) != HARD_STATE_MAGIC || u32_at(slot, 4) != 1 {
        return Err("hard-state slot magic or version is wrong".into());
    }
    if crc32c::crc32c(&slot[0..40]) != u32_at(slot, 40) {
        return Err("hard-state slot checksum mismatch".into());
    }
    let hs = HardState {
        term: u64_at(slot, 16),
        vote: u64_at(slot, 24),
        commit: u64_at(slot, 32),
    };
    Ok(Some((u64_at(slot, 8), hs)))
}

/// The hard state in a whole hard-state file: the valid slot with the highest sequence.
/// A torn write can damage only the slot being written, whose write was never reported,
/// so one bad slot is fine; two bad slots are corruption.
pub fn decode_hard_state_file(file: &[u8]) -> Result<Option<(u64, HardState)>, String> {
    if file.is_empty() {
        return Ok(None);
    }
    if file.len() < HARD_STATE_FILE_BYTES {
        return Err(format!(
            "hard-state file is {} bytes, expected {HARD_STATE_FILE_BYTES}",
            file.len()
        ));
    }
    let a = decode_hard_state(&file[..BLOCK]);
    let b = decode_hard_state(&file[BLOCK..2 * BLOCK]);
    match (a, b) {
        (Err(ea), Err(eb)) => Err(format!("both hard-state slots are damaged: {ea}; {eb}")),
        (Ok(x), Err(_)) | (Err(_), Ok(x)) => Ok(x),
        (Ok(x), Ok(y)) => Ok(match (x, y) {
            (Some(x), Some(y)) => Some(if x.0 >= y.0 { x } else { y }),
            (x, y) => x.or(y),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: u64, term: u64, data: &'static [u8]) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn batch_round_trips_and_detects_every_flipped_bit_of_a_record() {
        let entries = vec![e(5, 2, b"hello"), e(6, 2, b""), e(7, 3, b"0123456789")];
        let mut buf = vec![0xAAu8; batch_bytes(&entries)];
        encode_batch(&mut buf, &entries, 4, true);
        let hdr = BatchHeader::decode(&buf).unwrap().unwrap();
        assert!(hdr.truncates());
        assert_eq!((hdr.first_index, hdr.commit, hdr.count), (5, 4, 3));
        assert_eq!(decode_batch(&buf, &hdr).unwrap(), entries);
        let used = BATCH_HEADER_BYTES + hdr.records_bytes as usize;
        for bit in 0..used * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let ok = match BatchHeader::decode(&bad) {
                Ok(Some(h)) => decode_batch(&bad, &h).is_ok_and(|d| d == entries),
                _ => false,
            };
            assert!(!ok, "flip of bit {bit} went unnoticed");
        }
        let mut bad = buf.clone();
        bad[used + 1] = 1;
        assert!(decode_batch(&bad, &hdr).is_err(), "padding is checked");
    }

    #[test]
    fn segment_header_checks_magic_crc_and_padding() {
        let h = SegmentHeader {
            first_index: 77,
            segment_bytes: 1 << 20,
            flush_workers: 3,
            torn_window_bytes: 3 << 16,
            seq: 9,
        };
        let mut b = vec![0u8; BLOCK];
        h.encode(&mut b);
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        for at in [0, 17, 61, 100] {
            let mut bad = b.clone();
            bad[at] ^= 0x10;
            assert!(SegmentHeader::decode(&bad).is_err(), "byte {at}");
        }
    }

    #[test]
    fn hard_state_file_takes_the_newest_whole_slot() {
        let mut f = vec![0u8; HARD_STATE_FILE_BYTES];
        assert_eq!(decode_hard_state_file(&f).unwrap(), None);
        let hs1 = HardState {
            term: 3,
            vote: 2,
            commit: 9,
        };
        let hs2 = HardState {
            term: 4,
            vote: 0,
            commit: 9,
        };
        encode_hard_state(&mut f[..BLOCK], 1, &hs1);
        encode_hard_state(&mut f[BLOCK..], 2, &hs2);
        assert_eq!(decode_hard_state_file(&f).unwrap(), Some((2, hs2)));
        f[BLOCK + 20] ^= 1; // the newer slot is torn: the older one stands
        assert_eq!(decode_hard_state_file(&f).unwrap(), Some((1, hs1)));
        f[20] ^= 1;
        assert!(decode_hard_state_file(&f).is_err());
    }
}
