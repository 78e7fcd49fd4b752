//! The HTTP/1.1 request parser on a stream of bytes, as a connection feeds it: every
//! request consumes at least one byte and no more than there is; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_server::net::http::{HttpLimits, Parsed, parse, parse_metrics};

fuzz_target!(|data: &[u8]| {
    let limits = HttpLimits {
        head_bytes_max: 8 << 10,
        body_bytes_max: 64 << 10,
        key_bytes_max: 256,
        value_bytes_max: 16 << 10,
    };
    let mut at = 0;
    while at < data.len() {
        match parse(&data[at..], &limits) {
            Parsed::Request { consumed, .. } => {
                assert!(consumed > 0 && consumed <= data.len() - at, "consumed {consumed}");
                at += consumed;
            }
            Parsed::Incomplete | Parsed::Fatal(_) => break,
        }
    }
    let _ = parse_metrics(data, &limits);
});
