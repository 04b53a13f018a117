//! A quota as written in the config (`500/min`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(quota) = shipwatch::fuzzing::rate_limit(text) {
        let _ = quota.interval();
    }
});
