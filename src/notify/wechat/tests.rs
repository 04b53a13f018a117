//! The WeChat channel's tests: the values cut to their types' limits, the codes' verdicts, the
//! token's life, and the channel against a stand-in account (tokens, stops, reloads).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::notify::robot::testing::assert_pause;

#[test]
fn values_are_cut_by_characters_to_their_types_limits() {
    let twenty_five = "一二三四五六七八九十一二三四五六七八九十一二三四五";
    let table: &[(&str, &str, &str)] = &[
        ("thing1", "短", "短"),
        (
            "thing1",
            "一二三四五六七八九十一二三四五六七八九十",
            "一二三四五六七八九十一二三四五六七八九十",
        ),
        (
            "thing12",
            twenty_five,
            "一二三四五六七八九十一二三四五六七八九…",
        ),
        ("character_string2", &"9".repeat(40), &"9".repeat(32)),
        ("character_string2", "SF1234567890", "SF1234567890"),
        ("number3", &"1".repeat(33), &"1".repeat(32)),
        ("letter1", &"a".repeat(33), &"a".repeat(32)),
        ("symbol1", "!!!!!!!", "!!!!!"),
        ("phrase3", "派送未成功了", "派送未成功"),
        ("phrase3", "已签收", "已签收"),
        (
            "phone_number4",
            "+86-0766-66888866-123",
            "+86-0766-66888866",
        ),
        ("car_number5", "粤A8Z888挂XYZ", "粤A8Z888挂"),
        ("name6", "欧阳一二三四五六七八九", "欧阳一二三四五六七八"),
        ("name6", &"z".repeat(25), &"z".repeat(20)),
        ("const7", &"c".repeat(25), &"c".repeat(20)),
        (
            "time8",
            "2026年12月01日 20:36:19 星期二 北京时间",
            "2026年12月01日 20:36:19 星期二 北京时间",
        ),
        ("date9", "2026-12-01", "2026-12-01"),
        ("amount10", "¥1234567890.00元", "¥1234567890.00元"),
        ("first", twenty_five, twenty_five),
        ("remark", twenty_five, twenty_five),
    ];
    for (key, value, cut) in table {
        assert_eq!(&cut_value(key, value), cut, "{key} {value}");
    }
}

#[test]
fn keys_name_their_types() {
    assert_eq!(ValueKind::of("thing01"), ValueKind::Thing);
    assert_eq!(
        ValueKind::of("character_string21"),
        ValueKind::CharacterString
    );
    assert_eq!(ValueKind::of("phrase"), ValueKind::Phrase);
    assert_eq!(ValueKind::of("amount3"), ValueKind::Amount);
    assert_eq!(ValueKind::of("time4"), ValueKind::Time);
    assert_eq!(ValueKind::of("date5"), ValueKind::Time);
    assert_eq!(ValueKind::of("keyword1"), ValueKind::Other);
    assert_eq!(ValueKind::of("things1"), ValueKind::Other);
}

#[test]
fn a_token_is_used_until_shortly_before_it_ends() {
    // WeChat's two hours: renewed five minutes before the end.
    assert_eq!(
        use_for(Duration::from_secs(7200)),
        Duration::from_secs(7200 - 300)
    );
    // A token handed back with less of its life left keeps the same margin.
    assert_eq!(use_for(Duration::from_secs(900)), Duration::from_secs(600));
    // Short lives (a fake's) are used for half of them, never for none.
    assert_eq!(use_for(Duration::from_secs(4)), Duration::from_secs(2));
    assert_eq!(use_for(Duration::from_secs(600)), Duration::from_secs(300));
    assert_eq!(use_for(Duration::from_secs(1)), Duration::from_millis(500));
}

#[test]
fn errcodes() {
    assert_eq!(classify_send(0), SendVerdict::Sent);
    for code in [40001, 40014, 42001] {
        assert_eq!(classify_send(code), SendVerdict::Refresh, "{code}");
    }
    for code in [43004, 40003] {
        assert_eq!(classify_send(code), SendVerdict::Unreachable, "{code}");
    }
    for code in [40037, 48001] {
        assert_eq!(classify_send(code), SendVerdict::Stop, "{code}");
    }
    for code in [-1, 45009, 45011] {
        assert_eq!(classify_send(code), SendVerdict::Retry, "{code}");
    }
    assert_eq!(classify_send(47003), SendVerdict::Dead);
    for code in [40001, 40013, 40125, 40164, 40243, 41002, 41004] {
        assert!(token_refused(code), "{code}");
    }
    for code in [-1, 45009, 45011, 0] {
        assert!(!token_refused(code), "{code}");
    }
}

#[test]
fn the_queued_message_cuts_its_values_and_the_config_hides_the_secret() {
    let data = BTreeMap::from([
        ("thing1".to_owned(), "x".repeat(30)),
        ("phrase2".to_owned(), "派送未成功了".to_owned()),
    ]);
    let message = WechatMessage::new(Some("https://shop.example/o/1".into()), data);
    let json: serde_json::Value = serde_json::from_str(&message.to_json()).unwrap();
    assert_eq!(json["data"]["phrase2"], "派送未成功");
    assert_eq!(json["data"]["thing1"].as_str().unwrap().chars().count(), 20);
    assert_eq!(json["url"], "https://shop.example/o/1");
    let no_url = WechatMessage::new(None, BTreeMap::new()).to_json();
    assert_eq!(no_url, r#"{"data":{}}"#);
    let settings = config("https://proxy.example/wechat/PATHKEY".to_owned());
    let shown = format!("{:?}", Wechat::new(settings, reqwest::Client::new()));
    assert!(!shown.contains("APPSECRET-77"), "{shown}");
    // What names the account is shown; nothing past the endpoint's host.
    assert!(shown.contains(r#"appid: "wx1234""#), "{shown}");
    assert!(shown.contains("https://proxy.example/…"), "{shown}");
    assert!(!shown.contains("PATHKEY"), "{shown}");
}

/// An account's settings, at `endpoint`, unpaced.
fn config(endpoint: String) -> WechatConfig {
    WechatConfig {
        endpoint,
        appid: "wx1234".into(),
        secret: Secret::new("APPSECRET-77"),
        template_id: "tpl".into(),
        spacing: None,
        window: Duration::ZERO,
        timeout: Duration::from_secs(5),
    }
}

const TOKEN: &str = r#"{"access_token":"T1","expires_in":7200}"#;
const SENT: &str = r#"{"errcode":0,"errmsg":"ok"}"#;

/// A stand-in account whose token endpoint answers `token_answer` and whose send endpoint
/// answers `send_answer`: the channel to it, and the counts of sends and of tokens asked for.
async fn account(
    token_answer: &'static str,
    send_answer: &'static str,
) -> (Wechat, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (sends, tokens) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (sent, asked) = (sends.clone(), tokens.clone());
    let app = axum::Router::new()
        .route(
            TOKEN_PATH,
            axum::routing::post(move || async move {
                asked.fetch_add(1, Ordering::SeqCst);
                token_answer
            }),
        )
        .route(
            SEND_PATH,
            axum::routing::post(move || async move {
                sent.fetch_add(1, Ordering::SeqCst);
                send_answer
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let settings = config(format!("http://{addr}"));
    let channel = Wechat::new(settings, crate::notify::no_redirect_client().unwrap());
    (channel, sends, tokens)
}

fn message() -> Outgoing {
    let data = BTreeMap::from([("thing1".to_owned(), "已签收".to_owned())]);
    Outgoing {
        public_id: "msg_1".into(),
        payload: WechatMessage::new(None, data).to_json(),
        recipient: Some("oia2TjuEGTNoeX76QEjQNrcURxG8".into()),
    }
}

/// A token answer is used only when it holds a token and a life: anything else sends
/// nothing and is worth another attempt, unless it refuses the credentials, which stops the
/// channel.
#[tokio::test]
async fn only_a_token_with_a_life_is_used() {
    let (ok, sends, _) = account(TOKEN, SENT).await;
    assert_eq!(ok.deliver(&message()).await, Ok(()));
    assert_eq!(sends.load(Ordering::SeqCst), 1);
    for (answer, said) in [
        (r#"{"access_token":"","expires_in":7200}"#, "errcode 0 ()"),
        (r#"{"access_token":"T2","expires_in":0}"#, "errcode 0 ()"),
        (r#"{"access_token":"T3"}"#, "errcode 0 ()"),
        (
            r#"{"errcode":-1,"errmsg":"system error"}"#,
            "errcode -1 (system error)",
        ),
    ] {
        let (channel, sends, _) = account(answer, SENT).await;
        match channel.deliver(&message()).await {
            Err(DeliveryError::Transient { message, .. }) => assert!(
                message.contains(&format!("gave no token: {said}")),
                "{answer}: {message}"
            ),
            other => panic!("{answer}: {other:?}"),
        }
        assert_eq!(sends.load(Ordering::SeqCst), 0, "{answer}");
    }
    let refused = r#"{"errcode":40013,"errmsg":"invalid appid"}"#;
    let (refused, sends, _) = account(refused, SENT).await;
    match refused.deliver(&message()).await {
        Err(DeliveryError::Paused { message, .. }) => assert!(
            message.starts_with("wechat channel stopped") && message.contains("(40013)"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(sends.load(Ordering::SeqCst), 0);
}

/// A template WeChat refuses stops the channel for an hour, each refusal in its own words; no
/// message reaches WeChat meanwhile, and a reload sends the next one, with a fresh token.
#[tokio::test]
async fn a_refused_template_stops_the_channel_until_a_reload() {
    for (answer, said) in [
        (
            r#"{"errcode":40037,"errmsg":"invalid template_id"}"#,
            "(40037: invalid template_id)",
        ),
        (
            r#"{"errcode":48001,"errmsg":"api unauthorized"}"#,
            "(48001: the account may not send template messages)",
        ),
    ] {
        let (channel, sends, tokens) = account(TOKEN, answer).await;
        let message = assert_pause(&channel, &message(), &sends, MISCONFIGURED_PAUSE).await;
        assert!(
            message.starts_with("wechat channel stopped: WeChat refused the template ")
                && message.contains(said),
            "{message}"
        );
        assert_eq!(tokens.load(Ordering::SeqCst), 2, "{answer}");
    }
}
