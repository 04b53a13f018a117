//! Fakes shared by the end-to-end tests; each test uses only part of them.
#![allow(dead_code)]

pub mod app;
pub mod fake;
pub mod fake_1688;
pub mod fake_aliyun_sms;
pub mod fake_kuaidi100;
pub mod fake_sms_gateway;
pub mod fake_top;
pub mod hostile;
pub mod smtp_sink;

/// A free loopback port, for a listener the daemon opens itself (`[http] listen`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
