//! Fakes shared by the end-to-end tests; each test uses only part of them.
#![allow(dead_code)]

pub mod app;
pub mod config;
pub mod fake;
pub mod fake_1688;
pub mod fake_aliyun_sms;
pub mod fake_dingtalk;
pub mod fake_feishu;
pub mod fake_kuaidi100;
pub mod fake_sms_gateway;
pub mod fake_top;
pub mod fake_wechat;
pub mod fake_wecom;
pub mod hostile;
pub mod immutable;
pub mod postgres;
pub mod smtp_sink;

/// The shipwatch binary, not yet started, with none of the variables that would point it at
/// another config, credentials or state directory than the test gives it.
pub fn shipwatch() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_shipwatch"));
    isolated(&mut command);
    command
}

/// Removes from `command` the variables that would point the daemon at another config,
/// credentials or state directory than the test gives it; for a command that starts the daemon
/// through another program (a shell that sets the umask first).
pub fn isolated(command: &mut std::process::Command) -> &mut std::process::Command {
    command
        .env_remove("SHIPWATCH_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
}

/// A free loopback port, for a listener the daemon opens itself (`[http] listen`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The credentials of the 1688 and Kuaidi100 fakes in the tests that run all three providers, and
/// of [`config::Provider::alibaba1688_at`] and [`config::Provider::kuaidi100_at`].
pub const ALI_APP_KEY: &str = "2000001";
pub const ALI_SECRET: &str = "secret1688";
pub const ALI_TOKEN: &str = "token1688";
pub const KD_CUSTOMER: &str = "CUSTOMER100";
pub const KD_KEY: &str = "key100";

/// The credentials of the Aliyun SMS fakes whose own are not what the test is about, and of
/// [`config::Channel::aliyun_sms_at`].
pub const ALIYUN_KEY_ID: &str = "LTAI-test";
pub const ALIYUN_SECRET: &str = "aliyun-secret";
pub const ALIYUN_SIGN_NAME: &str = "小店";

/// Runs each named scenario, an `async fn NAME(engine: Engine)` of the calling file, once on each
/// engine: the tests `NAME::on_sqlite` and `NAME::on_postgres` (issue 17: the core scenarios
/// behave the same on both).
macro_rules! on_both_engines {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            use crate::support::app::Engine;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$scenario(Engine::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::$scenario(Engine::Postgres).await;
            }
        }
    )+};
}
pub(crate) use on_both_engines;

/// The order ids of the shipments `filter` keeps, read `limit` at a time as `list` and the API
/// page: each page after the last row of the one before, until a page comes short.
pub async fn listed_page_by_page(
    db: &shipwatch::storage::Db,
    filter: &shipwatch::storage::ShipmentFilter,
    limit: u32,
) -> Vec<String> {
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = db
            .shipments_page(&shipwatch::storage::ShipmentFilter {
                limit: Some(limit),
                after,
                ..filter.clone()
            })
            .await
            .unwrap()
            .rows;
        listed.extend(page.iter().map(|row| row.order_id.clone()));
        match page.last() {
            Some(last) if page.len() == limit as usize => after = Some(last.id),
            _ => break,
        }
    }
    listed
}
