//! The key-value state machine: commands applied in order, revisions, deletes, routing,
//! and snapshots that survive a change of shard count.

use bytes::Bytes;
use ringkv_raft::{Entry, EntryKind};
use ringkv_server::shard::{Applied, Command, Partition, Snapshot, route};

fn put(index: u64, k: &str, v: &str) -> Entry {
    Entry {
        index,
        term: 1,
        kind: EntryKind::Normal,
        data: Command::Put {
            key: Bytes::from(k.to_string()),
            value: Bytes::from(v.to_string()),
        }
        .encode(),
    }
}

fn del(index: u64, k: &str) -> Entry {
    Entry {
        index,
        term: 1,
        kind: EntryKind::Normal,
        data: Command::Delete {
            key: Bytes::from(k.to_string()),
        }
        .encode(),
    }
}

/// Applies entries to `shards` partitions, routing by key, advancing every watermark.
fn apply_all(parts: &mut [Partition], entries: &[Entry]) -> Vec<Applied> {
    let n = parts.len();
    let mut out = Vec::new();
    for e in entries {
        let key = Command::decode(&e.data).unwrap().key().clone();
        let s = route(&key, n);
        out.push(parts[s].apply(e).unwrap());
        for p in parts.iter_mut() {
            p.advance(e.index);
        }
    }
    out
}

#[test]
fn puts_and_deletes_keep_revisions_and_state_bytes() {
    let mut parts = vec![Partition::new(0, 1)];
    let res = apply_all(
        &mut parts,
        &[
            put(1, "a", "1"),
            put(2, "b", "2"),
            put(3, "a", "3"),
            del(4, "b"),
            del(5, "zz"),
        ],
    );
    assert_eq!(
        res,
        vec![
            Applied::Put { revision: 1 },
            Applied::Put { revision: 2 },
            Applied::Put { revision: 3 },
            Applied::Deleted { existed: true },
            Applied::Deleted { existed: false },
        ]
    );
    let p = &parts[0];
    let a = p.get(b"a").unwrap();
    assert_eq!((a.value.as_ref(), a.revision), (&b"3"[..], 3));
    assert!(p.get(b"b").is_none());
    assert_eq!(p.applied(), 5);
    assert_eq!(
        p.state_bytes(),
        ringkv_server::shard::partition::pair_bytes(b"a", b"3")
    );
}

#[test]
fn noop_and_membership_entries_only_move_the_watermark() {
    let mut p = Partition::new(0, 1);
    let noop = Entry {
        index: 1,
        term: 1,
        kind: EntryKind::Noop,
        data: Bytes::new(),
    };
    assert_eq!(p.apply(&noop).unwrap(), Applied::Internal);
    assert_eq!(p.applied(), 1);
    assert!(p.is_empty());
    let bad = Entry {
        index: 2,
        term: 1,
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"\x07junk"),
    };
    assert!(
        p.apply(&bad).is_err(),
        "a payload that is no command is reported"
    );
}

#[test]
fn routing_spreads_keys_and_is_stable() {
    let mut counts = [0usize; 4];
    for i in 0..4000 {
        counts[route(format!("key-{i}").as_bytes(), 4)] += 1;
    }
    assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    // CRC32C of "key-0" decides its shard for every version of ringkv.
    assert_eq!(route(b"key-0", 4), crc32c::crc32c(b"key-0") as usize % 4);
}

#[test]
fn snapshots_round_trip_across_shard_counts() {
    let mut entries = Vec::new();
    for i in 1..=500u64 {
        entries.push(put(i, &format!("k{}", i % 97), &format!("v{i}")));
    }
    entries.push(del(501, "k5"));
    let mut four: Vec<Partition> = (0..4).map(|s| Partition::new(s, 4)).collect();
    apply_all(&mut four, &entries);
    let snap = Snapshot::encode(&four.iter().collect::<Vec<_>>());
    // Assembled from each shard's pairs (as the node does, shard by shard): the same body.
    let parts: Vec<(Vec<u8>, u64)> = four
        .iter()
        .map(|p| {
            let mut v = Vec::new();
            let n = p.encode_pairs(&mut v);
            (v, n)
        })
        .collect();
    assert_eq!(Snapshot::assemble(501, &parts), snap);
    // Reloaded on a node with 3 shards: every key, value and revision is there.
    let three: Vec<Partition> = (0..3)
        .map(|s| Snapshot::decode(&snap, s, 3).unwrap())
        .collect();
    assert_eq!(three.iter().map(|p| p.len()).sum::<usize>(), 96);
    for p in &three {
        assert_eq!(p.applied(), 501);
    }
    for i in 0..97u64 {
        let k = format!("k{i}");
        let p = &three[route(k.as_bytes(), 3)];
        let orig = four[route(k.as_bytes(), 4)].get(k.as_bytes()).cloned();
        assert_eq!(p.get(k.as_bytes()).cloned(), orig, "{k}");
    }
    assert_eq!(
        three.iter().map(|p| p.state_bytes()).sum::<u64>(),
        four.iter().map(|p| p.state_bytes()).sum::<u64>()
    );
    // Damage is refused.
    for cut in [1, 17, snap.len() / 2, snap.len() - 1] {
        assert!(
            Snapshot::decode(&snap[..cut], 0, 3).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn snapshots_encode_and_decode_the_same_in_small_steps() {
    let mut entries = Vec::new();
    for i in 1..=300u64 {
        entries.push(put(i, &format!("k{i}"), &"x".repeat((i % 40) as usize)));
    }
    let mut two: Vec<Partition> = (0..2).map(|s| Partition::new(s, 2)).collect();
    apply_all(&mut two, &entries);
    // Encoding 100 bytes at a time (the node yields between steps) gives the same pairs.
    let parts: Vec<(Vec<u8>, u64)> = two
        .iter()
        .map(|p| {
            let (mut whole, mut stepped) = (Vec::new(), Vec::new());
            let n = p.encode_pairs(&mut whole);
            let mut e = p.pair_encoder();
            let mut steps = 0;
            while !e.encode(&mut stepped, 100) {
                steps += 1;
            }
            assert!(steps > 5, "{steps} steps");
            assert_eq!((stepped.clone(), e.count), (whole, n));
            (stepped, n)
        })
        .collect();
    let snap = Snapshot::assemble(300, &parts);
    // Decoding a byte budget at a time gives what decoding at once gives, for any split.
    for shards in [1, 3] {
        for s in 0..shards {
            let once = Snapshot::decode(&snap, s, shards).unwrap();
            let mut d = Snapshot::decoder(&snap, s, shards).unwrap();
            let mut steps = 0;
            while !d.step(64).unwrap() {
                steps += 1;
            }
            assert!(steps > 10, "{steps} steps");
            let stepped = d.finish().unwrap();
            assert_eq!(stepped.len(), once.len());
            assert_eq!(stepped.state_bytes(), once.state_bytes());
            for i in 1..=300u64 {
                let k = format!("k{i}");
                assert_eq!(stepped.get(k.as_bytes()), once.get(k.as_bytes()), "{k}");
            }
        }
    }
    // A cut body fails in a step, not by a panic.
    let mut d = Snapshot::decoder(&snap[..snap.len() / 2], 0, 1).unwrap();
    let r = loop {
        match d.step(64) {
            Ok(false) => continue,
            other => break other,
        }
    };
    assert!(r.is_err(), "{r:?}");
    // Trailing bytes are refused at the end.
    let mut long = snap.clone();
    long.push(0);
    let mut d = Snapshot::decoder(&long, 0, 1).unwrap();
    while !d.step(1 << 20).unwrap() {}
    assert!(d.finish().is_err());
}
