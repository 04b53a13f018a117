//! End-to-end tests: real components against fake upstreams on loopback.

mod alibaba1688_adapter;
mod bad_input;
mod bad_rows;
mod buyer_channels;
mod catch_up;
mod crash;
mod email_channel;
mod journey;
mod kuaidi100_adapter;
mod maintenance;
mod operations;
mod pipes;
mod privacy;
mod quiet_hours;
mod rate_limit;
mod retries;
mod schedule;
mod service;
mod sms_channels;
mod storage;
mod supervised;
mod support;
mod taobao_adapter;
mod three_providers;
mod transport;
