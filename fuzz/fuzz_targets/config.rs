//! Config files: any text either loads into settings that pass the core's own checks or
//! is refused with a key and a reason; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_server::config::NodeConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match NodeConfig::parse(text, "fuzz.toml") {
        Ok(c) => {
            c.raft_config()
                .validate()
                .expect("a loaded config passes the core's checks");
            let _ = c.wal_options();
            let _ = c.members();
            let _ = c.warnings();
        }
        Err(e) => assert!(!e.reason.is_empty(), "a refusal without a reason"),
    }
});
