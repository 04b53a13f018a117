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

/// The credentials of the 1688 and Kuaidi100 fakes in the tests that run all three providers.
pub const ALI_APP_KEY: &str = "2000001";
pub const ALI_SECRET: &str = "secret1688";
pub const ALI_TOKEN: &str = "token1688";
pub const KD_CUSTOMER: &str = "CUSTOMER100";
pub const KD_KEY: &str = "key100";

/// `[providers.ali]` (1688) and `[providers.kd]` (Kuaidi100) at these endpoints, with the
/// credentials above; Kuaidi100's own 30-minute floor lowered to a second, which a test can wait.
pub fn ali_and_kd_providers(ali: &str, kd: &str) -> String {
    format!(
        r#"
[providers.ali]
kind = "alibaba1688"
endpoint = "{ali}"
app_key = "{ALI_APP_KEY}"
app_secret = "{ALI_SECRET}"
access_token = "{ALI_TOKEN}"

[providers.kd]
kind = "kuaidi100"
endpoint = "{kd}"
customer = "{KD_CUSTOMER}"
key = "{KD_KEY}"
min_interval = "1s"
"#
    )
}
