//! A body sent to the shipments API: a create, a batch and a PATCH, and the list's query.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = shipwatch::fuzzing::api_create(data);
    let _ = shipwatch::fuzzing::api_batch(data);
    let _ = shipwatch::fuzzing::api_patch(data);
    let _ = shipwatch::fuzzing::api_list_query(&String::from_utf8_lossy(data));
});
