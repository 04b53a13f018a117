//! A TOP gateway's answer: any bytes, read as the adapter reads a 200 response.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = shipwatch::fuzzing::taobao_response(body);
});
