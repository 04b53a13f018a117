//! The email channel against a real SMTP conversation: what the buyer's mailbox receives, and
//! what the outbox is told when the server refuses, stalls, or speaks another TLS mode. The TLS
//! conversations run the real binary (`test-notify`), which is told to trust the sink's
//! certificate authority through `SSL_CERT_FILE`, as a machine's certificate store would.

use std::time::Duration;

use shipwatch::notify::email::{Email, EmailConfig};
use shipwatch::notify::{Channel, DeliveryError, EmailMessage, Outgoing};

use crate::support::app::TestApp;
use crate::support::config::{Channel as ConfigChannel, Provider};
use crate::support::smtp_sink::{Reply, SilentPort, SinkTls, SmtpSink};

const BUYER: &str = "zhang.wei@buyer.example";
const MASKED_BUYER: &str = "z***@buyer.example";
const SUBJECT: &str = "包裹已签收";
const BODY: &str = "包裹已签收,感谢您的信任。订单 123";

fn channel(smtp_url: String, timeout: Duration) -> Email {
    Email::new(EmailConfig {
        smtp_url,
        username: None,
        password: None,
        from: "小店发货通知 <noreply@shop.example>".into(),
        reply_to: Some("service@shop.example".into()),
        timeout,
    })
    .unwrap()
}

fn outgoing(public_id: &str) -> Outgoing {
    Outgoing {
        public_id: public_id.into(),
        payload: serde_json::to_string(&EmailMessage {
            subject: SUBJECT.into(),
            body: BODY.into(),
        })
        .unwrap(),
        recipient: Some(BUYER.into()),
    }
}

fn transient(result: Result<(), DeliveryError>) -> String {
    match result {
        Err(DeliveryError::Transient {
            message,
            retry_after: None,
        }) => message,
        other => panic!("expected a transient failure, got {other:?}"),
    }
}

fn permanent(result: Result<(), DeliveryError>) -> String {
    match result {
        Err(DeliveryError::Permanent(message)) => message,
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

fn assert_masked(message: &str) {
    assert!(message.contains(MASKED_BUYER), "{message}");
    assert!(
        !message.to_lowercase().contains(BUYER),
        "full address leaked: {message}"
    );
}

#[tokio::test]
async fn email_arrives_with_recipient_subject_and_body_intact() {
    let sink = SmtpSink::start().await;
    let email = channel(sink.url(), Duration::from_secs(5));
    email.test_connection().await.unwrap();
    email.deliver(&outgoing("msg_0001")).await.unwrap();

    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.from, "noreply@shop.example");
    assert_eq!(message.to, [BUYER]);
    assert_eq!(message.subject().as_deref(), Some(SUBJECT));
    assert_eq!(message.body_text(), BODY);
    assert_eq!(
        message.message_id().as_deref(),
        Some("<msg_0001@shop.example>")
    );
    assert_eq!(
        message.header("Reply-To").as_deref(),
        Some("service@shop.example")
    );
    let content_type = message.header("Content-Type").unwrap();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("utf-8"),
        "{content_type}"
    );
    // Every byte on the wire is ASCII, so the mail goes through relays without 8BITMIME.
    assert!(message.data.is_ascii());
}

#[tokio::test]
async fn email_451_is_transient_and_the_retry_carries_the_same_message_id() {
    let sink = SmtpSink::start().await;
    sink.set_script(vec![Reply::data(451, "4.3.0 try later")]);
    let email = channel(sink.url(), Duration::from_secs(5));
    let message = outgoing("msg_0002");

    let reason = transient(email.deliver(&message).await);
    assert!(
        reason.contains("451") && reason.contains("4.3.0 try later"),
        "{reason}"
    );
    assert_masked(&reason);
    assert!(sink.messages().is_empty());

    email.deliver(&message).await.unwrap();
    let attempts = sink.attempts();
    assert_eq!(
        attempts.iter().map(|a| a.code).collect::<Vec<_>>(),
        [Some(451), Some(250)]
    );
    assert_eq!(attempts[0].message_id(), attempts[1].message_id());
    assert_eq!(
        attempts[1].message_id().as_deref(),
        Some("<msg_0002@shop.example>")
    );
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn email_550_is_permanent_and_the_echoed_address_is_masked() {
    let sink = SmtpSink::start().await;
    sink.set_script(vec![Reply::rcpt(
        550,
        format!("5.1.1 <{BUYER}>: no such mailbox"),
    )]);
    let email = channel(sink.url(), Duration::from_secs(5));

    let reason = permanent(email.deliver(&outgoing("msg_0003")).await);
    assert!(
        reason.contains("550") && reason.contains("no such mailbox"),
        "{reason}"
    );
    // A refusal that says nothing of TLS is not sent to a TLS setting.
    assert!(!reason.contains("TLS"), "{reason}");
    assert_masked(&reason);
    assert!(
        sink.attempts().is_empty(),
        "a refused RCPT never reaches DATA"
    );
}

#[tokio::test]
async fn email_replies_are_sorted_by_their_class() {
    let cases = [
        (Reply::rcpt(450, "4.2.1 mailbox busy"), true),
        (Reply::rcpt(452, "4.5.3 too many recipients"), true),
        (Reply::data(421, "4.4.5 shutting down"), true),
        (Reply::rcpt(553, "5.1.3 bad address syntax"), false),
        (Reply::data(554, "5.7.1 rejected as spam"), false),
    ];
    let sink = SmtpSink::start().await;
    sink.set_script(cases.iter().map(|(reply, _)| reply.clone()).collect());
    let email = channel(sink.url(), Duration::from_secs(5));
    for (reply, retryable) in cases {
        let result = email.deliver(&outgoing("msg_0004")).await;
        let (Reply::Rcpt(code, text) | Reply::Data(code, text)) = reply else {
            unreachable!()
        };
        let reason = if retryable {
            transient(result)
        } else {
            permanent(result)
        };
        assert!(
            reason.contains(&format!("{code} {text}")),
            "{code}: {reason}"
        );
    }
    assert!(sink.messages().is_empty());
}

/// A server that takes mail over TLS only refuses a plain `MAIL FROM` with 530 "Must issue a
/// STARTTLS command first" (Postfix with `smtpd_tls_security_level = encrypt`): a configuration
/// mistake no retry mends, so the attempt fails for good at once, naming the URL that works.
#[tokio::test]
async fn email_plain_smtp_to_a_server_that_wants_starttls_names_the_fix() {
    const WANTS_TLS: &str = "5.7.0 Must issue a STARTTLS command first";
    let sink = SmtpSink::start().await;
    sink.set_script(vec![Reply::mail(530, WANTS_TLS)]);
    let email = channel(sink.url(), Duration::from_secs(5));
    let reason = permanent(email.deliver(&outgoing("msg_0010")).await);
    assert!(reason.contains(&format!("530 {WANTS_TLS}")), "{reason}");
    assert!(
        reason.contains(&format!(
            "the server wants TLS first: try smtp://127.0.0.1:{}?tls=starttls",
            sink.port
        )),
        "{reason}"
    );
    assert_masked(&reason);
    assert!(sink.attempts().is_empty());
}

#[tokio::test]
async fn email_smtps_to_a_plain_port_names_the_fix() {
    let sink = SmtpSink::start().await;
    let email = channel(
        format!("smtps://127.0.0.1:{}", sink.port),
        Duration::from_secs(5),
    );

    let reason = permanent(email.deliver(&outgoing("msg_0005")).await);
    assert!(
        reason.contains("does not speak TLS on this port"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("try smtp://127.0.0.1:{} (plain)", sink.port)),
        "{reason}"
    );
    assert!(reason.contains("?tls=starttls"), "{reason}");
    assert_masked(&reason);

    let error = email.test_connection().await.unwrap_err().to_string();
    assert!(error.contains("does not speak TLS"), "{error}");
    assert!(sink.attempts().is_empty());
}

#[tokio::test]
async fn email_starttls_to_a_server_without_it_names_the_fix() {
    let sink = SmtpSink::start().await;
    let email = channel(
        format!("smtp://127.0.0.1:{}?tls=starttls", sink.port),
        Duration::from_secs(5),
    );
    let reason = permanent(email.deliver(&outgoing("msg_0006")).await);
    assert!(reason.contains("does not offer STARTTLS"), "{reason}");
    assert!(reason.contains("smtps://127.0.0.1:465"), "{reason}");
    assert!(sink.attempts().is_empty());
}

#[tokio::test]
async fn email_plain_smtp_to_a_tls_port_times_out_with_a_hint() {
    let port = SilentPort::start().await;
    let email = channel(
        format!("smtp://127.0.0.1:{}", port.port),
        Duration::from_millis(300),
    );
    let reason = transient(email.deliver(&outgoing("msg_0007")).await);
    assert!(reason.starts_with("timed out after 300ms"), "{reason}");
    assert!(
        reason.contains(&format!("use smtps://127.0.0.1:{}", port.port)),
        "{reason}"
    );
    assert_masked(&reason);
}

#[tokio::test]
async fn email_a_stalled_server_times_out_and_the_next_attempt_starts_afresh() {
    let sink = SmtpSink::start().await;
    sink.set_script(vec![Reply::Stall]);
    let email = channel(sink.url(), Duration::from_millis(500));
    let started = std::time::Instant::now();
    let reason = transient(email.deliver(&outgoing("msg_0008")).await);
    assert!(reason.starts_with("timed out after 500ms"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // The stalled connection still owes an answer; reusing it would pair this attempt's
    // commands with the old replies.
    email.deliver(&outgoing("msg_0008")).await.unwrap();
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(sink.connections(), 2);
}

#[tokio::test]
async fn email_a_closed_port_is_transient() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let email = channel(format!("smtp://127.0.0.1:{port}"), Duration::from_secs(5));
    let reason = transient(email.deliver(&outgoing("msg_0009")).await);
    assert!(reason.contains("connection refused"), "{reason}");
    assert_masked(&reason);
}

#[tokio::test]
async fn email_messages_one_after_another_share_one_connection() {
    let sink = SmtpSink::start().await;
    let email = channel(sink.url(), Duration::from_secs(5));
    for i in 0..3 {
        email
            .deliver(&outgoing(&format!("msg_1{i}")))
            .await
            .unwrap();
    }
    assert_eq!(sink.messages().len(), 3);
    assert_eq!(
        sink.connections(),
        1,
        "each message opened a connection of its own"
    );
}

#[tokio::test]
async fn email_a_connection_kept_between_messages_says_quit_at_the_stop() {
    let sink = SmtpSink::start().await;
    let email = channel(sink.url(), Duration::from_secs(5));
    email.deliver(&outgoing("msg_3001")).await.unwrap();
    assert_eq!(sink.quits(), 0, "kept open for the next message");
    email.close().await;
    assert_eq!(sink.quits(), 1);
    // A message after all opens a connection of its own.
    email.deliver(&outgoing("msg_3002")).await.unwrap();
    assert_eq!((sink.messages().len(), sink.connections()), (2, 2));
}

/// Moves tokio's clock, which the parked connections' idle time is read on, by `by`.
async fn move_clock(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// Waits (5 s at most) for a connection to say `QUIT`, which a closing one does in the
/// background.
async fn until_quit(sink: &SmtpSink, what: &str) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while sink.quits() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect(what);
}

#[tokio::test]
async fn email_a_connection_idle_for_over_a_minute_is_closed_and_replaced() {
    let sink = SmtpSink::start().await;
    let email = channel(sink.url(), Duration::from_secs(5));
    email.deliver(&outgoing("msg_3101")).await.unwrap();
    // 59 s later the parked connection is still good; past 60 s it is let go with a QUIT and
    // the next message opens another.
    move_clock(Duration::from_secs(59)).await;
    email.deliver(&outgoing("msg_3102")).await.unwrap();
    assert_eq!((sink.connections(), sink.quits()), (1, 0));
    move_clock(Duration::from_secs(61)).await;
    email.deliver(&outgoing("msg_3103")).await.unwrap();
    assert_eq!(sink.messages().len(), 3);
    assert_eq!(sink.connections(), 2);
    until_quit(&sink, "the connection let go says QUIT").await;
}

#[tokio::test]
async fn email_a_connection_left_idle_is_closed_within_a_minute_and_a_half_with_no_message_after() {
    let sink = SmtpSink::start().await;
    let email = channel(sink.url(), Duration::from_secs(5));
    email.deliver(&outgoing("msg_3201")).await.unwrap();
    // The idle connections are looked at every 30 s from the first park (the task that looks
    // is spawned then: let it start before the clock moves).
    tokio::task::yield_now().await;
    move_clock(Duration::from_secs(91)).await;
    until_quit(
        &sink,
        "the connection idle past the limit says QUIT without waiting for a next message",
    )
    .await;
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn email_a_connection_the_server_closed_while_idle_is_replaced_without_a_failure() {
    let sink = SmtpSink::start().await;
    let email = channel(sink.url(), Duration::from_secs(5));
    email.deliver(&outgoing("msg_2001")).await.unwrap();
    sink.hang_up_idle();
    // The parked connection now answers NOOP with nothing; the next message takes a new one
    // instead of failing an attempt.
    email.deliver(&outgoing("msg_2002")).await.unwrap();
    let ids: Vec<Option<String>> = sink.messages().iter().map(|m| m.message_id()).collect();
    assert_eq!(
        ids,
        [
            Some("<msg_2001@shop.example>".to_owned()),
            Some("<msg_2002@shop.example>".to_owned())
        ]
    );
    assert_eq!(sink.connections(), 2);
}

#[tokio::test]
async fn email_a_connection_whose_transaction_failed_is_not_used_again() {
    let sink = SmtpSink::start().await;
    sink.set_script(vec![Reply::rcpt(550, "5.1.1 no such mailbox")]);
    let email = channel(sink.url(), Duration::from_secs(5));
    permanent(email.deliver(&outgoing("msg_3001")).await);
    email.deliver(&outgoing("msg_3002")).await.unwrap();
    email.deliver(&outgoing("msg_3003")).await.unwrap();
    assert_eq!(sink.messages().len(), 2);
    // One connection for the refused message, one shared by the two that followed.
    assert_eq!(sink.connections(), 2);
}

/// An app whose email channel logs in to `sink`, and the path of a file holding the sink's
/// certificate authority.
async fn app_for_tls(sink: &SmtpSink) -> (TestApp, String) {
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(ConfigChannel::email(sink).login("noreply@shop.example", "smtp-secret"))
        .start()
        .await;
    let ca = app.dir.path().join("sink-ca.pem");
    std::fs::write(&ca, sink.ca_pem().expect("a TLS sink")).unwrap();
    let ca = ca.to_str().unwrap().to_owned();
    (app, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_implicit_tls_and_starttls_logs_in_and_arrives_encrypted() {
    for tls in [SinkTls::Implicit, SinkTls::StartTls] {
        let sink = SmtpSink::start_tls(tls).await;
        let (app, ca) = app_for_tls(&sink).await;
        let out = app.cli_with_env(
            &["test-notify", "--channel", "email", "--to", BUYER],
            &[("SSL_CERT_FILE", &ca)],
        );
        assert!(
            out.status.success(),
            "{tls:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let messages = sink.messages();
        assert_eq!(messages.len(), 1, "{tls:?}");
        assert!(messages[0].tls, "{tls:?}: the message came in plain text");
        assert_eq!(messages[0].to, [BUYER]);
        assert_eq!(
            sink.logins(),
            ["noreply@shop.example smtp-secret"],
            "{tls:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_to_a_server_whose_certificate_nobody_vouches_for_sends_nothing_not_even_the_login() {
    for tls in [SinkTls::Implicit, SinkTls::StartTls] {
        let sink = SmtpSink::start_tls(tls).await;
        let (app, _ca) = app_for_tls(&sink).await;
        let out = app.cli(&["test-notify", "--channel", "email", "--to", BUYER]);
        assert!(!out.status.success(), "{tls:?}: sent anyway");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("invalid peer certificate: UnknownIssuer")
                && stderr.contains("SSL_CERT_FILE"),
            "{tls:?}: {stderr}"
        );
        assert!(!stderr.contains("smtp-secret"), "{tls:?}: {stderr}");
        assert!(sink.attempts().is_empty(), "{tls:?}");
        assert!(sink.logins().is_empty(), "{tls:?}: the password crossed");
        assert_eq!(sink.connections(), 1, "{tls:?}");
    }
}
