//! A 1688 gateway's answer: the first two bytes pick the HTTP status, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, body @ ..] => (100 + u16::from_be_bytes([*a, *b]) % 500, body),
        _ => (200, data),
    };
    let _ = shipwatch::fuzzing::alibaba1688_response(status, body);
});
