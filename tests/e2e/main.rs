//! End-to-end tests: real components against fake upstreams on loopback.

mod bad_input;
mod journey;
mod rate_limit;
mod retries;
mod support;
mod taobao_adapter;
