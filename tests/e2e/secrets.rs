//! Secrets that are not in a secret key: a webhook URL with a password and a token, a config
//! line that does not parse, and files that other local users can read. None of them shows in
//! a log, an error or `outbox`; each exposure is warned about by `check-config` and `run`.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use shipwatch::notify::receiver::Behaviour;

use crate::support::app::TestApp;
use crate::support::config::{APP_SECRET, APP_SECRET_FILE, Channel, Provider, SESSION};
use crate::support::fake_sms_gateway::FakeSmsGateway;
use crate::support::smtp_sink::SmtpSink;

const TID: u64 = 7_400_000_000_000_000_301;
const URL_USER: &str = "hook-user-2b9";
const URL_PASSWORD: &str = "Url-Pass-8c1f";
const URL_TOKEN: &str = "Url-Token-4d2e";
const LIMIT: Duration = Duration::from_secs(40);

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn all_output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_and_token_in_the_webhook_url_stay_out_of_logs_errors_and_outbox() {
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .receiver(Behaviour::Always(500))
        .start()
        .await;
    let plain = app.receiver.url.clone();
    let secret_url = format!(
        "{}?token={URL_TOKEN}",
        plain.replacen("http://", &format!("http://{URL_USER}:{URL_PASSWORD}@"), 1)
    );
    app.edit_config(|text| {
        text.replace(
            &format!("url = \"{plain}\""),
            &format!("url = \"{secret_url}\""),
        )
    });
    app.top.journey(TID);
    app.cli_ok(&["add", &TID.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon();
    app.wait_until("a webhook goes dead after its attempts", LIMIT, || {
        app.outbox(Some("dead"))
            .iter()
            .any(|n| n["channel"] == "webhook")
    })
    .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());

    let mut said = vec![("daemon log", daemon.log())];
    for args in [
        vec!["outbox"],
        vec!["outbox", "--json"],
        vec!["show", "7400000000000000301"],
        vec!["check-config"],
        vec!["test-notify", "--channel", "webhook"],
    ] {
        said.push(("command", all_output(&app.cli(&args))));
    }
    let outbox = &said[1].1;
    assert!(
        outbox.contains("/webhook?token=***") && outbox.contains("answered 500"),
        "the failure names the URL, masked: {outbox}"
    );
    let check = &said[4].1;
    assert!(
        check.contains("channel   webhook") && check.contains("/webhook?token=***"),
        "check-config names the webhook's URL, masked: {check}"
    );
    for (what, text) in &said {
        for secret in [URL_USER, URL_PASSWORD, URL_TOKEN] {
            assert!(!text.contains(secret), "{secret} in the {what}: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toml_syntax_error_names_the_line_and_key_but_not_the_secret() {
    let app = TestApp::start().await;
    const KEY: &str = "Toml-Secret-5e6f";
    app.edit_config(|text| {
        format!("{text}\n[providers.kd]\nkind = \"kuaidi100\"\ncustomer = \"C\"\nkey = \"{KEY}\n")
    });
    let lines = std::fs::read_to_string(&app.config)
        .unwrap()
        .lines()
        .count();

    let out = app.cli(&["check-config"]);
    assert!(!out.status.success());
    let error = all_output(&out);
    assert!(
        error.contains(&format!("line {lines}")) && error.contains("key key in [providers.kd]"),
        "{error}"
    );
    assert!(!error.contains(KEY), "{error}");

    let mut daemon = app.spawn_daemon();
    daemon
        .wait_exit(LIMIT)
        .await
        .expect("`run` refuses the config");
    let log = daemon.log();
    assert!(log.contains("key key in [providers.kd]"), "{log}");
    assert!(!log.contains(KEY), "{log}");
}

/// The secrets as the unit hands them over (`LoadCredential=`, deploy/INSTALL.md): a relative
/// `*_file` is looked up in `$CREDENTIALS_DIRECTORY` first and beside the config only when it
/// is not there, and a key the config leaves out is the credential `{provider}.{key}`. The
/// daemon signs its polls with what it found, the parcel's webhook goes out signed, and only
/// the file beside the config is warned about: systemd keeps the folder private whatever its
/// files' modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_come_from_the_credentials_folder_first_then_beside_the_config() {
    let app = TestApp::start().await;
    let credentials = tempfile::tempdir().unwrap();
    let handed = |name: &str, value: &str| {
        let path = credentials.path().join(name);
        std::fs::write(&path, value).unwrap();
        chmod(&path, 0o644);
    };
    handed(APP_SECRET_FILE, &format!("{APP_SECRET}\n"));
    handed("taobao.session", SESSION);
    // A stale copy beside the config: the folder's wins.
    std::fs::write(app.dir.path().join(APP_SECRET_FILE), "stale-secret\n").unwrap();
    let hook_secret = app.dir.path().join("hook.secret");
    app.edit_config(|text| {
        let text = text.replace(&format!("session = \"{SESSION}\"\n"), "");
        let line = text
            .lines()
            .find(|l| l.starts_with("secret = \"whsec_"))
            .expect("the webhook's inline secret")
            .to_owned();
        let value = line["secret = \"".len()..line.len() - 1].to_owned();
        std::fs::write(&hook_secret, value).unwrap();
        text.replace(&line, "secret_file = \"hook.secret\"")
    });
    chmod(&hook_secret, 0o644);

    let folder = credentials.path().to_str().unwrap();
    app.top.journey(TID);
    app.cli_ok(&["add", &TID.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon_with_env(&[("CREDENTIALS_DIRECTORY", folder)]);
    app.wait_until("a signed webhook arrives, or a failure", LIMIT, || {
        app.receiver.deliveries().iter().any(|d| d.verified)
            || app.top.signature_failures() > 0
            || !daemon.is_running()
    })
    .await;
    assert!(daemon.is_running(), "{}", daemon.log());
    assert_eq!(app.top.signature_failures(), 0, "the stale secret signed");
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "secret file {} is readable",
            hook_secret.display()
        )),
        "{log}"
    );
    assert!(!log.contains(folder), "{log}");
}

/// An email login whose password is not in the config takes the systemd credential
/// `email.password`; an email channel without a login logs in with nothing, even with that
/// credential at hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_login_takes_its_password_from_the_credential_and_no_login_takes_none() {
    const PASSWORD: &str = "Cred-Smtp-5e7a";
    let sink = SmtpSink::start().await;
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(
        credentials.path().join("email.password"),
        format!("{PASSWORD}\n"),
    )
    .unwrap();
    let folder = credentials.path().to_str().unwrap();
    for login in [true, false] {
        let channel = Channel::email(&sink);
        let app = TestApp::builder()
            .provider(Provider::top())
            .channel(if login {
                channel.username("mailer")
            } else {
                channel
            })
            .start()
            .await;
        let out = app.cli_with_env(
            &[
                "test-notify",
                "--channel",
                "email",
                "--to",
                "buyer@shop.example",
            ],
            &[("CREDENTIALS_DIRECTORY", folder)],
        );
        assert!(out.status.success(), "login {login}: {}", all_output(&out));
        assert!(!all_output(&out).contains(PASSWORD));
    }
    assert_eq!(sink.logins(), [format!("mailer {PASSWORD}")]);
    assert_eq!(sink.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_secrets_in_a_config_others_can_read_are_warned_about() {
    let app = TestApp::start().await;
    let secret_file = app.dir.path().join("taobao.secret");
    // The test config holds the session and the webhook secret inline.
    chmod(&app.config, 0o644);
    chmod(&secret_file, 0o640);

    let check = app.cli_ok(&["check-config"]);
    assert!(
        check.contains("WARNING")
            && check.contains(
                "holds secrets inline ([providers.taobao] session, [channels.webhook] secret)"
            )
            && check.contains("mode 0644"),
        "{check}"
    );
    assert!(
        check.contains(&format!(
            "secret file {} is readable",
            secret_file.display()
        )),
        "{check}"
    );

    let mut daemon = app.spawn_daemon();
    app.wait_until("the daemon has started", LIMIT, || {
        daemon.log().contains("shipwatch started")
    })
    .await;
    assert!(daemon.terminate().success());
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("holds secrets inline")),
        "{log}"
    );
    assert!(log.contains("secret file"), "{log}");

    // Private files: not a word.
    chmod(&app.config, 0o600);
    chmod(&secret_file, 0o600);
    let check = app.cli_ok(&["check-config"]);
    assert!(!check.contains("WARNING"), "{check}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_file_is_private_and_a_readable_database_is_warned_about() {
    let app = TestApp::start().await;
    chmod(&app.config, 0o600);
    chmod(&app.dir.path().join("taobao.secret"), 0o600);
    // `add` creates the database; `list` only reads one that exists.
    app.cli_ok(&["add", "8400000000000000100"]);
    app.cli_ok(&["remove", "8400000000000000100"]);
    assert_eq!(mode(&app.db), 0o600, "created private");
    // A lock file left world-readable by an older version, and a database copied with 0644.
    let lock = app.dir.path().join("shipwatch.db.lock");
    std::fs::write(&lock, "").unwrap();
    chmod(&lock, 0o644);
    chmod(&app.db, 0o644);

    let check = app.cli_ok(&["check-config"]);
    assert!(
        check.contains(&format!(
            "database file {} is readable by others (mode 0644)",
            app.db.display()
        )),
        "{check}"
    );
    let mut daemon = app.spawn_daemon();
    app.wait_until("the daemon has started", LIMIT, || {
        daemon.log().contains("shipwatch started")
    })
    .await;
    assert_eq!(mode(&lock), 0o600, "the lock file is narrowed to 0600");
    assert!(daemon.terminate().success());
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("is readable by others (mode 0644)")),
        "{log}"
    );

    chmod(&app.db, 0o600);
    std::fs::remove_file(&lock).unwrap();
    let mut daemon = app.spawn_daemon();
    app.wait_until("the daemon has started again", LIMIT, || {
        daemon.log().contains("shipwatch started")
    })
    .await;
    assert_eq!(mode(&lock), 0o600, "a new lock file is created 0600");
    assert!(daemon.terminate().success());
    assert!(!daemon.log().contains("readable by"), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sms_gateway_key_comes_from_headers_file_and_is_never_shown() {
    const KEY: &str = "Hdr-Secret-71a9";
    let gateway = FakeSmsGateway::start().await;
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .channel(Channel::sms_gateway(&gateway).headers_file("sms.headers"))
        .start()
        .await;
    let headers = app.dir.path().join("sms.headers");
    std::fs::write(
        &headers,
        format!("# the gateway's key\nAuthorization: Bearer {KEY}\n\nX-Tenant: shop-7\n"),
    )
    .unwrap();
    chmod(&headers, 0o644);
    let check = app.cli_ok(&["check-config"]);
    assert!(
        check.contains(&format!("secret file {} is readable", headers.display())),
        "{check}"
    );
    chmod(&headers, 0o600);

    app.top.journey(TID);
    app.cli_ok(&[
        "add",
        &TID.to_string(),
        "--tier",
        "high",
        "--phone",
        "13812345678",
    ]);
    let mut daemon = app.spawn_daemon();
    app.wait_until("an SMS is sent", LIMIT, || {
        app.outbox(Some("sent"))
            .iter()
            .any(|n| n["channel"] == "sms")
    })
    .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let authorization = gateway.header("authorization");
    assert!(!authorization.is_empty());
    assert!(
        authorization.iter().all(|v| *v == format!("Bearer {KEY}")),
        "{authorization:?}"
    );
    assert!(gateway.header("x-tenant").iter().all(|v| v == "shop-7"));

    for text in [
        daemon.log(),
        app.cli_ok(&["check-config"]),
        app.cli_ok(&["outbox"]),
    ] {
        assert!(!text.contains(KEY), "{text}");
    }

    // A line that is not `Name: value` is named by its number, its text is not shown.
    std::fs::write(&headers, format!("Authorization Bearer {KEY}\n")).unwrap();
    let error = all_output(&app.cli(&["check-config"]));
    assert!(
        error.contains("headers_file line 1: expected `Name: value`"),
        "{error}"
    );
    assert!(!error.contains(KEY), "{error}");
}
