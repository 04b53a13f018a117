//! A Kuaidi100 push callback: any bytes, read as the public listener reads a callback's body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = shipwatch::fuzzing::kuaidi100_callback(body, "fuzz-salt");
});
