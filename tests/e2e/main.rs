//! End-to-end tests: real components against fake upstreams on loopback.

mod journey;
mod support;
mod taobao_adapter;
