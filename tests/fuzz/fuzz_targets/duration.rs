//! A duration as written in the config (`30s`, `2m`, `1h`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = shipwatch::fuzzing::duration(text);
});
