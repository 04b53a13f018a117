//! End-to-end tests: real components against fake upstreams on loopback.

mod alibaba1688_adapter;
mod bad_input;
mod buyer_channels;
mod catch_up;
mod crash;
mod disk;
mod email_channel;
mod faults;
mod journey;
mod kuaidi100_adapter;
mod maintenance;
mod operations;
mod quiet_hours;
mod rate_limit;
mod retries;
mod schedule;
mod service;
mod sms_channels;
mod soak;
mod stats;
mod storage;
mod supervised;
mod support;
mod taobao_adapter;
mod three_providers;
