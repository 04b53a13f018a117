//! A CSV file given to `shipwatch import`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = shipwatch::fuzzing::csv_import(data);
});
