use std::time::Duration;

use super::super::tests::parse;
use super::*;

#[test]
fn email_and_sms_channels_parse_with_their_texts_and_quiet_hours() {
    let config = parse(
        r#"
        [channels.email]
        smtp_url = "smtp://127.0.0.1:2525"
        from = "Shop <noreply@shop.example>"
        [channels.email.templates.delivered]
        subject = "订单{order_id}已签收"
        [channels.sms]
        kind = "aliyun"
        access_key_id = "id"
        access_key_secret = "secret"
        sign_name = "小店"
        template_code = "SMS_1"
        [channels.sms.templates.delivered]
        text = "{carrier}:订单{order_id}已签收"
        template_code = "SMS_2"
        "#,
    )
    .unwrap();
    let rules = config.channels.rules();
    let kinds: Vec<ChannelKind> = rules.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [ChannelKind::Email, ChannelKind::Sms]);
    let sms = &rules[1];
    assert_eq!(
        sms.triggers,
        [
            Status::PickedUp,
            Status::OutForDelivery,
            Status::Delivered,
            Status::Exception
        ]
    );
    assert_eq!(
        sms.quiet_hours.unwrap().to_string(),
        "21:00-08:00 Asia/Shanghai"
    );
    assert_eq!(sms.texts.template_code[&Status::Delivered], "SMS_2");
    assert_eq!(sms.texts.default_template_code.as_deref(), Some("SMS_1"));
    assert_eq!(rules[0].triggers.len(), Status::ALL.len() - 1);
    assert!(rules[0].quiet_hours.is_none());

    let http = parse(
        "[channels.sms]\nkind = \"http\"\nurl = \"https://sms.example/send\"\nbody = '{{\"to\":\"{phone}\",\"text\":\"{text}\"}}'\nquiet_hours = \"off\"",
    )
    .unwrap();
    assert!(http.channels.rules()[0].quiet_hours.is_none());
}

#[test]
fn each_channel_sends_as_many_at_once_as_its_section_says_and_sms_four_by_default() {
    let sections = r#"
        [channels.webhook]
        url = "https://shop.example/hook"
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        [channels.sms]
        kind = "http"
        url = "https://sms.example/send"
        body = '{{"to":"{phone}","text":"{text}"}}'
        [channels.wechat]
        appid = "wx1"
        secret = "s"
        template_id = "t"
        data = { thing1 = "{order_id}" }
        [channels.dingtalk]
        url = "https://oapi.dingtalk.com/robot/send?access_token=t"
        "#;
    let at_once = |config: &str| -> Vec<(ChannelKind, Option<usize>)> {
        parse(config)
            .unwrap()
            .channels
            .rules()
            .iter()
            .map(|r| (r.kind, r.concurrency))
            .collect()
    };
    use ChannelKind::{Dingtalk, Sms, Webhook, Wechat};
    assert_eq!(
        at_once(sections),
        [
            (Webhook, Some(16)),
            (Sms, Some(4)),
            (Dingtalk, Some(1)),
            (Wechat, Some(16))
        ]
    );
    // Fewer at once for every channel lowers the SMS's too.
    let fewer = format!("[delivery]\nconcurrency = 2\n{sections}");
    assert_eq!(
        at_once(&fewer),
        [
            (Webhook, Some(2)),
            (Sms, Some(2)),
            (Dingtalk, Some(1)),
            (Wechat, Some(2))
        ]
    );
    // A section's own number wins either way.
    let own = sections
        .replace("[channels.sms]", "[channels.sms]\nconcurrency = 16")
        .replace("[channels.webhook]", "[channels.webhook]\nconcurrency = 3");
    assert_eq!(
        at_once(&own),
        [
            (Webhook, Some(3)),
            (Sms, Some(16)),
            (Dingtalk, Some(1)),
            (Wechat, Some(16))
        ]
    );

    for bad in ["0", "1025", "100000000000"] {
        let config = sections.replace(
            "[channels.sms]",
            &format!("[channels.sms]\nconcurrency = {bad}"),
        );
        let err = parse(&config).unwrap_err().to_string();
        assert!(
            err.contains(&format!("[channels.sms] concurrency = {bad}"))
                && err.contains("between 1 and 1024"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        for section in ["[delivery]", "[polling]"] {
            let err = parse(&format!("{section}\nconcurrency = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("{section} concurrency must be between 1 and 1024")),
                "{err}"
            );
        }
    }
    // A robot paces itself one message at a time: it has no such key.
    let err = parse(&sections.replace(
        "[channels.dingtalk]",
        "[channels.dingtalk]\nconcurrency = 4",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("concurrency"), "{err}");
}

#[test]
fn a_paced_wechat_channel_takes_one_at_a_time_unless_told_otherwise() {
    let wechat = |extra: &str| {
        parse(&format!(
            "[channels.wechat]\nappid = \"wx1\"\nsecret = \"s\"\ntemplate_id = \"t\"\n\
             data = {{ thing1 = \"{{order_id}}\" }}\n{extra}"
        ))
        .map(|c| c.channels.rules()[0].concurrency)
    };
    assert_eq!(wechat("").unwrap(), Some(16));
    assert_eq!(wechat("rate_limit = \"30/min\"").unwrap(), Some(1));
    // The rate's window goes with its spacing, for turns shared with other daemons.
    let paced = parse(
        "[channels.wechat]\nappid = \"wx1\"\nsecret = \"s\"\ntemplate_id = \"t\"\n\
         data = { thing1 = \"{order_id}\" }\nrate_limit = \"600/min\"",
    )
    .unwrap();
    let settings = &paced.channels.wechat.as_ref().unwrap().settings;
    assert_eq!(settings.spacing, Some(Duration::from_millis(100)));
    assert_eq!(settings.window, Duration::from_secs(60));
    // As many as told, however long the last one waits for its turn (about 51 s for the
    // fifth at 6 a minute): each keeps its claim while it waits.
    assert_eq!(
        wechat("rate_limit = \"6/min\"\nconcurrency = 5").unwrap(),
        Some(5)
    );
}

#[test]
fn a_wechat_channel_parses_with_its_template_data_and_hides_its_secret() {
    let config = parse(
        r#"
        [channels.wechat]
        appid = "wx1234567890abcdef"
        secret = "APPSECRET-WECHAT-9"
        template_id = "tpl-1"
        url = "https://shop.example/orders/{order_id}"
        data = { character_string1 = "{order_id}", phrase3 = "{status}", thing4 = "{event}" }
        "#,
    )
    .unwrap();
    let rules = config.channels.rules();
    assert_eq!(rules[0].kind, ChannelKind::Wechat);
    assert_eq!(rules[0].triggers, BUYER_TRIGGERS);
    let keys: Vec<&str> = rules[0]
        .texts
        .wechat_data
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["character_string1", "phrase3", "thing4"]);
    assert!(rules[0].texts.wechat_url.is_some());
    let shown = format!("{:?}", config.channels);
    assert!(!shown.contains("APPSECRET-WECHAT-9"), "{shown}");
    assert_eq!(
        config.channels.shown_target(ChannelKind::Wechat).as_deref(),
        Some("https://api.weixin.qq.com/")
    );
}

#[test]
fn a_wechat_channel_explains_each_missing_key() {
    let full = [
        ("appid", "appid = \"wx1\""),
        ("secret", "secret = \"s\""),
        ("template_id", "template_id = \"t\""),
        ("data", "data = { thing1 = \"{order_id}\" }"),
    ];
    for (missing, _) in full {
        let section: Vec<&str> = full
            .iter()
            .filter(|(key, _)| *key != missing)
            .map(|(_, line)| *line)
            .collect();
        let err = parse(&format!("[channels.wechat]\n{}", section.join("\n")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("[channels.wechat] needs {missing}")),
            "{missing}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let base = "[channels.wechat]\nappid = \"wx1\"\nsecret = \"s\"\ntemplate_id = \"t\"\n";
    let err = parse(&format!("{base}data = {{ thing1 = \"{{order}}\" }}"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[channels.wechat] data thing1"), "{err}");
    let err = parse(&format!("{base}data = {{ \"thing 1\" = \"x\" }}"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a template key"), "{err}");
    let err = parse(&format!(
        "{base}data = {{ thing1 = \"x\" }}\nurl = \"ftp://shop.example/{{order_id}}\""
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("[channels.wechat] url"), "{err}");
}

#[test]
fn a_template_with_an_unknown_placeholder_is_refused_by_name() {
    let err = parse(
        "[channels.sms]\nkind = \"aliyun\"\naccess_key_id = \"i\"\naccess_key_secret = \"s\"\nsign_name = \"n\"\n[channels.sms.templates.delivered]\ntext = \"订单{order} 已签收\"",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("[channels.sms.templates.delivered] text"),
        "{err}"
    );
    assert!(err.contains("{order}"), "{err}");
    let err = parse(
        "[channels.sms]\nkind = \"http\"\nurl = \"https://sms.example/\"\nbody = \"to={phone}&msg={message}\"",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("{message}"), "{err}");
    let err = parse(
        "[channels.email]\nsmtp_url = \"smtp://h:25\"\nfrom = \"a@b.example\"\n[channels.email.templates.shipped]\nsubject = \"x\"",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("shipped"), "{err}");
}

#[test]
fn debug_output_shows_channel_urls_as_endpoints_only() {
    let config = parse(
        r#"
        [channels.webhook]
        url = "https://hooks.example/x?token=SECRET-8"
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        [channels.email]
        smtp_url = "smtps://smtp.example:465"
        from = "noreply@shop.example"
        [channels.sms]
        kind = "http"
        url = "https://gw.example:8443/v1/SECRET-8/send?key=SECRET-8"
        body = "{phone}"
        "#,
    )
    .unwrap();
    for shown in [
        format!("{config:?}"),
        format!("{:?}", config.channels),
        format!("{:#?}", config.channels.webhook),
        format!("{:?}", config.channels.sms),
        format!("{:?}", config.channels.email),
    ] {
        assert!(!shown.contains("SECRET-8"), "{shown}");
    }
    let shown = format!("{:?}", config.channels);
    assert!(shown.contains("https://hooks.example/…"), "{shown}");
    assert!(shown.contains("https://gw.example:8443/…"), "{shown}");
    assert!(shown.contains("smtps://smtp.example:465/"), "{shown}");
}

#[test]
fn a_dingtalk_robot_parses_with_the_staff_triggers_and_its_quota() {
    let config = parse(
        r#"
        [channels.dingtalk]
        url = "https://oapi.dingtalk.com/robot/send?access_token=TOKEN-SECRET-5"
        secret = "SEC-SIGNING-5"
        "#,
    )
    .unwrap();
    let rules = config.channels.rules();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].kind, ChannelKind::Dingtalk);
    assert_eq!(
        rules[0].triggers,
        [Status::Exception, Status::FailedAttempt, Status::Returned]
    );
    let robot = &config.channels.dingtalk.as_ref().unwrap().settings;
    assert_eq!(robot.spacing, Duration::from_secs(3));
    // DingTalk counts its 20 in a minute: a turn shared with other daemons may be taken
    // up to a fiftieth of that late, not of the spacing.
    assert_eq!(robot.window, Duration::from_secs(60));
    assert_eq!(robot.secret.as_ref().unwrap().expose(), "SEC-SIGNING-5");
    for shown in [
        format!("{config:?}"),
        format!("{:?}", config.channels.dingtalk),
    ] {
        assert!(!shown.contains("TOKEN-SECRET-5"), "{shown}");
        assert!(!shown.contains("SEC-SIGNING-5"), "{shown}");
    }
    assert_eq!(
        config
            .channels
            .shown_target(ChannelKind::Dingtalk)
            .as_deref(),
        Some("https://oapi.dingtalk.com/robot/send?access_token=***")
    );

    let custom = parse(
        "[channels.dingtalk]\nurl = \"https://oapi.dingtalk.com/robot/send?access_token=t\"\nstatuses = [\"delivered\"]\nrate_limit = \"10/min\"\n[channels.dingtalk.templates.delivered]\nsubject = \"签收 {order_id}\"",
    )
    .unwrap();
    let rule = &custom.channels.rules()[0];
    assert_eq!(rule.triggers, [Status::Delivered]);
    assert_eq!(
        rule.texts.subject[&Status::Delivered].as_str(),
        "签收 {order_id}"
    );
    let robot = &custom.channels.dingtalk.as_ref().unwrap().settings;
    assert_eq!(robot.spacing, Duration::from_secs(6));
    assert_eq!(robot.window, Duration::from_secs(60));
    assert!(robot.secret.is_none());
}

#[test]
fn a_robot_hears_of_stuck_parcels_and_incidents_unless_its_alerts_say_otherwise() {
    let url = "url = \"https://oapi.dingtalk.com/robot/send?access_token=t\"";
    let rule = |extra: &str| {
        parse(&format!("[channels.dingtalk]\n{url}\n{extra}")).map(|c| c.channels.rules()[0].alerts)
    };
    assert_eq!(
        rule("").unwrap(),
        Alerts {
            stuck: true,
            ops: true
        }
    );
    assert_eq!(
        rule("alerts = [\"ops\"]").unwrap(),
        Alerts {
            stuck: false,
            ops: true
        }
    );
    assert_eq!(rule("alerts = []").unwrap(), Alerts::default());
    let e = rule("alerts = [\"shipment.stalled\"]")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "[channels.dingtalk] alerts: unknown alert \"shipment.stalled\" (known: shipment.stuck, ops)"
        ),
        "{e}"
    );
    // The webhook keeps hearing of stuck parcels; buyers hear of neither.
    let webhook = parse("[channels.webhook]\nurl = \"https://shop.example/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"")
        .unwrap();
    assert_eq!(
        webhook.channels.rules()[0].alerts,
        Alerts {
            stuck: true,
            ops: false
        }
    );
}

#[test]
fn a_wecom_robot_parses_masks_its_key_and_takes_no_secret() {
    let config = parse(
        "[channels.wecom]\nurl = \"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY-SECRET-8\"",
    )
    .unwrap();
    let rules = config.channels.rules();
    assert_eq!(rules[0].kind, ChannelKind::Wecom);
    assert_eq!(
        rules[0].triggers,
        [Status::Exception, Status::FailedAttempt, Status::Returned]
    );
    let robot = &config.channels.wecom.as_ref().unwrap().settings;
    assert_eq!(robot.spacing, Duration::from_secs(3));
    assert!(!format!("{config:?}").contains("KEY-SECRET-8"));
    assert_eq!(
        config.channels.shown_target(ChannelKind::Wecom).as_deref(),
        Some("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***")
    );
    let err = parse("[channels.wecom]\nstatuses = [\"returned\"]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("[channels.wecom] needs url"), "{err}");
    assert!(err.contains("cgi-bin/webhook/send?key="), "{err}");
    let err = parse(
        "[channels.wecom]\nurl = \"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k\"\nsecret = \"SEC-9\"",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("[channels.wecom] secret does not apply"),
        "{err}"
    );
    assert!(!err.contains("SEC-9"), "{err}");
}

#[test]
fn a_feishu_bot_parses_and_masks_the_token_in_its_path() {
    let config = parse(
        "[channels.feishu]\nurl = \"https://open.feishu.cn/open-apis/bot/v2/hook/HOOK-SECRET-8\"\nsecret = \"SIGN-SECRET-9\"",
    )
    .unwrap();
    assert_eq!(config.channels.rules()[0].kind, ChannelKind::Feishu);
    let bot = &config.channels.feishu.as_ref().unwrap().settings;
    assert_eq!(bot.spacing, Duration::from_millis(600));
    assert_eq!(bot.secret.as_ref().unwrap().expose(), "SIGN-SECRET-9");
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("HOOK-SECRET-8") && !shown.contains("SIGN-SECRET-9"),
        "{shown}"
    );
    assert_eq!(
        config.channels.shown_target(ChannelKind::Feishu).as_deref(),
        Some("https://open.feishu.cn/open-apis/bot/v2/hook/***")
    );
    let err = parse("[channels.feishu]\nsecret = \"s\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("[channels.feishu] needs url"), "{err}");
    assert!(err.contains("bot/v2/hook/"), "{err}");
}

#[test]
fn a_dingtalk_robot_without_its_url_is_explained() {
    let err = parse("[channels.dingtalk]\nsecret = \"SEC1\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("[channels.dingtalk] needs url"), "{err}");
    assert!(err.contains("url_file"), "{err}");
    assert!(err.contains("access_token"), "{err}");
    let err =
        parse("[channels.dingtalk]\nurl = \"oapi.dingtalk.com/robot/send?access_token=TOKEN-6\"")
            .unwrap_err()
            .to_string();
    assert!(err.contains("[channels.dingtalk] url"), "{err}");
    assert!(!err.contains("TOKEN-6"), "{err}");
    let err = parse(
        "[channels.dingtalk]\nurl = \"https://oapi.dingtalk.com/robot/send?access_token=t\"\n[channels.dingtalk.templates.exception]\ntext = \"x\"",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("text does not apply"), "{err}");
}

#[test]
fn url_errors_do_not_echo_the_url() {
    for text in [
        "[channels.webhook]\nurl = \"ftp://u:Secret-6@h/\"\nsecret = \"s\"",
        "[channels.webhook]\nurl = \"Secret-6 pasted here\"\nsecret = \"s\"",
        "[channels.sms]\nkind = \"http\"\nurl = \"gw.example/?key=Secret-6\"\nbody = \"x\"",
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("url"), "{err}");
        assert!(!err.contains("Secret-6"), "{err}");
    }
}

#[test]
fn an_email_password_file_that_cannot_be_read_is_named_with_or_without_a_username() {
    for login in ["username = \"mailer\"\n", ""] {
        let err = parse(&format!(
            "[channels.email]\nsmtp_url = \"smtps://mailer@smtp.shop.example\"\n\
             from = \"noreply@shop.example\"\n{login}password_file = \"/nonexistent/smtp.password\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/nonexistent/smtp.password") && err.contains("No such file or directory"),
            "{login:?}: {err}"
        );
    }
}

/// `list`, `add` and the other admin commands read no secrets: a channel whose secret is out of
/// reach loads all the same, and an email channel without a login still has no password.
#[test]
fn admin_commands_load_channels_whose_secrets_are_out_of_reach() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shipwatch.toml");
    std::fs::write(
        &path,
        "[channels.email]\nsmtp_url = \"smtp://127.0.0.1:2525\"\nfrom = \"noreply@shop.example\"\n\
         [channels.dingtalk]\nurl_file = \"dingtalk.url\"\n",
    )
    .unwrap();
    let err = crate::config::Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("dingtalk.url"), "{err}");
    let config = crate::config::Config::load_without_secrets(&path).unwrap();
    let email = config.channels.email.as_ref().expect("the email channel");
    assert!(email.settings.password.is_none());
    assert!(config.channels.dingtalk.is_some());
}
