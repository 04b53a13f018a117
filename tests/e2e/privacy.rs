//! Secrets and personal data stay out of everything shipwatch prints: a full run at debug level
//! with seeded secrets, a buyer's phone and email, deliveries on every channel, a refused SMS and
//! a provider whose session is refused, then every admin command. And the database, which holds
//! those contacts in clear, is readable by its owner only.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::app::{APP_SECRET, SESSION, TestApp};
use crate::support::config::{Channel, Provider};
use crate::support::fake_aliyun_sms::FakeAliyunSms;
use crate::support::smtp_sink::SmtpSink;
use crate::support::{isolated, shipwatch};

const PHONE: &str = "13987654321";
const EMAIL: &str = "li.na.private@shop.example";
const SMTP_PASSWORD: &str = "smtp-pw-5f1e2d3c4b";
const ALIYUN_SECRET: &str = "aliyun-key-secret-9a8b7c6d";
const WRONG_SESSION: &str = "sess-refused-77aa66bb55";
const KD_KEY: &str = "kd-key-0f9e8d7c6b";
const ALI_SECRET: &str = "ali-secret-3c4d5e6f7a";
const ALI_TOKEN: &str = "ali-token-6f7a8b9c0d";

/// Runs an admin command at debug level, as an operator chasing a problem would, and returns
/// everything it printed.
fn run_debug(app: &TestApp, args: &[&str]) -> String {
    let out = shipwatch()
        .arg("--config")
        .arg(&app.config)
        .args(args)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .expect("shipwatch runs");
    assert!(
        out.status.success(),
        "shipwatch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        // The command line itself holds the contacts `add` was given: only the output counts.
        "$ shipwatch {}\n{}{}",
        args[0],
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_phone_or_email_reaches_logs_or_command_output() {
    let sink = SmtpSink::start().await;
    let aliyun = FakeAliyunSms::start("LTAI-privacy", ALIYUN_SECRET, "小店").await;
    let app = TestApp::builder()
        .provider(Provider::top())
        // A second shop on the same gateway, its secret inline and its session refused.
        .provider(
            Provider::top()
                .named("tb2")
                .inline_secret()
                .session(WRONG_SESSION),
        )
        .channel(Channel::webhook())
        .channel(
            Channel::email(&sink)
                .login("shop-mailer", SMTP_PASSWORD)
                .from("小店 <noreply@shop.example>"),
        )
        .channel(Channel::aliyun_sms(&aliyun))
        // Providers no shipment uses, there only for the secrets their sections hold.
        .section(&format!(
            r#"[providers.kd]
kind = "kuaidi100"
customer = "CUSTOMER100"
key = "{KD_KEY}"

[providers.ali]
kind = "alibaba1688"
app_key = "2000001"
app_secret = "{ALI_SECRET}"
access_token = "{ALI_TOKEN}"
"#
        ))
        .start()
        .await;
    let config_text = std::fs::read_to_string(&app.config).unwrap();
    let webhook_secret = config_text
        .lines()
        .find_map(|l| l.strip_prefix("secret = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("the webhook secret is in the config")
        .to_owned();

    let tid = 9_600_000_000_000_000_001u64;
    let refused = 9_600_000_000_000_000_002u64;
    app.top.journey(tid);
    app.top.journey(refused);
    // The first SMS is refused; the real service echoes the number in its message.
    aliyun.reply("isv.MOBILE_NUMBER_ILLEGAL", 1);
    let mut printed = String::new();
    printed += &run_debug(
        &app,
        &[
            "add",
            &tid.to_string(),
            "--tier",
            "high",
            "--phone",
            PHONE,
            "--email",
            EMAIL,
            "--provider",
            "taobao",
        ],
    );
    printed += &run_debug(
        &app,
        &[
            "add",
            &refused.to_string(),
            "--provider",
            "tb2",
            "--phone",
            PHONE,
        ],
    );

    let mut daemon = app.spawn_daemon_with_env(&[("RUST_LOG", "debug")]);
    app.wait_until(
        "the parcel is delivered and every message settled",
        Duration::from_secs(60),
        || {
            app.shipment(&tid.to_string())["shipment"]["status"] == "delivered"
                && app.outbox(Some("pending")).is_empty()
        },
    )
    .await;
    app.wait_until(
        "the refused session stopped its provider",
        Duration::from_secs(20),
        || daemon.log().contains("PROVIDER STOPPED"),
    )
    .await;

    // Every channel delivered, the password reached the SMTP server, one SMS was refused.
    assert!(!app.receiver.deliveries().is_empty());
    assert!(!sink.messages().is_empty());
    assert!(
        sink.logins().iter().all(|l| l.ends_with(SMTP_PASSWORD)),
        "{:?}",
        sink.logins()
    );
    assert!(!sink.logins().is_empty());
    assert!(aliyun.calls().len() >= 2);
    let dead = app.outbox(Some("dead"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["channel"], "sms");

    for args in [
        &["list"][..],
        &["list", "--json"],
        &["show", &tid.to_string()],
        &["show", &tid.to_string(), "--json"],
        &["show", &refused.to_string()],
        &["outbox"],
        &["outbox", "--json"],
        &["outbox", "--state", "dead"],
        &["stats"],
        &["stats", "--json"],
        &["check-config"],
    ] {
        printed += &run_debug(&app, args);
    }
    assert!(daemon.terminate().success());
    printed += &daemon.log();

    // The masked forms are there: the contacts went through the display paths.
    assert!(printed.contains("139****4321"), "{printed}");
    let seeds = [
        ("the buyer's phone", PHONE.to_owned()),
        ("the buyer's email", EMAIL.to_owned()),
        ("the TOP app secret", APP_SECRET.to_owned()),
        ("the TOP session", SESSION.to_owned()),
        ("the refused TOP session", WRONG_SESSION.to_owned()),
        ("the webhook secret", webhook_secret.clone()),
        (
            "the webhook key",
            webhook_secret.trim_start_matches("whsec_").to_owned(),
        ),
        ("the SMTP password", SMTP_PASSWORD.to_owned()),
        ("the Aliyun key secret", ALIYUN_SECRET.to_owned()),
        ("the Kuaidi100 key", KD_KEY.to_owned()),
        ("the 1688 app secret", ALI_SECRET.to_owned()),
        ("the 1688 access token", ALI_TOKEN.to_owned()),
    ];
    for (what, seed) in seeds {
        if let Some(at) = printed.find(&seed) {
            let line_start = printed[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = printed[at..].find('\n').map_or(printed.len(), |i| at + i);
            panic!("{what} was printed:\n{}", &printed[line_start..line_end]);
        }
    }
}

/// Mode bits of a file, as `ls -l` would show them.
fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_and_its_wal_are_created_owner_only_under_a_permissive_umask() {
    let app = TestApp::start().await;
    let tid = 9_600_000_000_000_000_010u64;
    app.top.journey(tid);
    // The shell sets the umask, then becomes the daemon.
    let mut daemon = isolated(&mut Command::new("sh"))
        .arg("-c")
        .arg("umask 0022 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_shipwatch"))
        .arg("--config")
        .arg(&app.config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wal = app.db.with_extension("db-wal");
    let shm = app.db.with_extension("db-shm");
    app.wait_until(
        "the daemon has created the database and its WAL",
        Duration::from_secs(20),
        || app.db.exists() && wal.exists() && shm.exists(),
    )
    .await;
    // A file the same umask creates is group- and world-readable: the umask is permissive.
    let probe = app.dir.path().join("probe");
    Command::new("sh")
        .arg("-c")
        .arg("umask 0022 && : > \"$0\"")
        .arg(&probe)
        .status()
        .unwrap();
    assert_eq!(mode(&probe), 0o644);
    for path in [&app.db, &wal, &shm] {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}
