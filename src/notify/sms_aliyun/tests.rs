//! The Aliyun SMS channel's pure parts: the signature against its worked and documented
//! vectors, the codes' verdicts, the template's variables, the numbers and their masks.

use super::*;

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The config's `Debug` (the channel's too) names the endpoint and the key's id, and hides
/// the secret and anything the endpoint's path or query might carry.
#[test]
fn the_config_shows_its_endpoint_and_hides_its_secret() {
    let config = AliyunSmsConfig {
        endpoint: "https://dysmsapi.aliyuncs.com/?token=s3cr3t-query".into(),
        access_key_id: "LTAI5tExampleKeyId".into(),
        access_key_secret: Secret::new("s3cr3t-key"),
        sign_name: "小店".into(),
        template_code: Some("SMS_154950909".into()),
        params: vec!["status".into()],
        param_max_chars: DEFAULT_PARAM_MAX_CHARS,
        timeout: Duration::from_secs(5),
    };
    let channel = AliyunSms::new(config.clone(), reqwest::Client::new());
    for shown in [format!("{config:?}"), format!("{channel:?}")] {
        assert!(shown.contains("https://dysmsapi.aliyuncs.com/…"), "{shown}");
        assert!(shown.contains("LTAI5tExampleKeyId"), "{shown}");
        assert!(shown.contains("SMS_154950909"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}

#[test]
fn percent_encoding_follows_rfc_3986() {
    for (raw, encoded) in [
        ("A-Za-z0-9-_.~", "A-Za-z0-9-_.~"),
        ("a b", "a%20b"),
        ("*", "%2A"),
        ("~", "~"),
        // An already-encoded tilde is data, not an escape: its `%` is encoded again.
        ("%7E", "%257E"),
        ("+/=", "%2B%2F%3D"),
        ("a&b=c", "a%26b%3Dc"),
        (r#"{"k":"v"}"#, "%7B%22k%22%3A%22v%22%7D"),
        ("é", "%C3%A9"),
        ("签收", "%E7%AD%BE%E6%94%B6"),
        ("", ""),
    ] {
        assert_eq!(percent_encode(raw), encoded, "{raw:?}");
    }
}

/// A vector worked out independently of this code, with Python's standard library:
///
/// ```text
/// pe = lambda s: urllib.parse.quote(s, safe='-_.~')
/// canonical = '&'.join(pe(k) + '=' + pe(v) for k, v in sorted(params.items()))
/// to_sign = 'GET&' + pe('/') + '&' + pe(canonical)
/// base64.b64encode(hmac.new(b's3cr3t/*~ key&', to_sign.encode(), hashlib.sha1).digest())
/// ```
///
/// The parameters carry what usually goes wrong: a space in the sign name (`%20`, never
/// `+`), `*` and `~` in a template value (`%2A`, kept), Chinese in UTF-8, the JSON of
/// `TemplateParam`, and `:` in the timestamp. In the string to sign every `%` of the
/// canonical query is encoded once more (`%20` → `%2520`).
#[test]
fn signs_a_worked_vector() {
    let params = params(&[
        ("AccessKeyId", "LTAI_example"),
        ("Action", "SendSms"),
        ("Format", "JSON"),
        ("PhoneNumbers", "13812345678"),
        ("RegionId", "cn-hangzhou"),
        ("SignName", "船运 通知"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "nonce-0001"),
        ("SignatureVersion", "1.0"),
        ("TemplateCode", "SMS_000001"),
        (
            "TemplateParam",
            r#"{"order_id":"E 1*2~3","status":"已签收"}"#,
        ),
        ("Timestamp", "2024-05-01T08:00:00Z"),
        ("Version", "2017-05-25"),
    ]);
    assert_eq!(
        canonical_query(&params),
        "AccessKeyId=LTAI_example&Action=SendSms&Format=JSON&PhoneNumbers=13812345678\
         &RegionId=cn-hangzhou&SignName=%E8%88%B9%E8%BF%90%20%E9%80%9A%E7%9F%A5\
         &SignatureMethod=HMAC-SHA1&SignatureNonce=nonce-0001&SignatureVersion=1.0\
         &TemplateCode=SMS_000001\
         &TemplateParam=%7B%22order_id%22%3A%22E%201%2A2~3%22%2C%22status%22%3A%22%E5%B7%B2%E7%AD%BE%E6%94%B6%22%7D\
         &Timestamp=2024-05-01T08%3A00%3A00Z&Version=2017-05-25"
    );
    assert_eq!(
        string_to_sign(&params),
        "GET&%2F&AccessKeyId%3DLTAI_example%26Action%3DSendSms%26Format%3DJSON\
         %26PhoneNumbers%3D13812345678%26RegionId%3Dcn-hangzhou\
         %26SignName%3D%25E8%2588%25B9%25E8%25BF%2590%2520%25E9%2580%259A%25E7%259F%25A5\
         %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Dnonce-0001%26SignatureVersion%3D1.0\
         %26TemplateCode%3DSMS_000001\
         %26TemplateParam%3D%257B%2522order_id%2522%253A%2522E%25201%252A2~3%2522%252C%2522status%2522%253A%2522%25E5%25B7%25B2%25E7%25AD%25BE%25E6%2594%25B6%2522%257D\
         %26Timestamp%3D2024-05-01T08%253A00%253A00Z%26Version%3D2017-05-25"
    );
    assert_eq!(
        sign(&params, "s3cr3t/*~ key"),
        "b5jK+yXgXgSXqNmDLGKckr5t5ZM="
    );
}

/// The example in Aliyun's own signature documentation (keys `testId` / `testSecret`),
/// which the same Python lines reproduce: `zJDF+Lrzhj/ThnlvIToysFRq6t4=`.
#[test]
fn signs_the_documented_example() {
    let params = params(&[
        ("AccessKeyId", "testId"),
        ("Action", "SendSms"),
        ("Format", "XML"),
        ("OutId", "123"),
        ("PhoneNumbers", "15300000001"),
        ("RegionId", "cn-hangzhou"),
        ("SignName", "阿里云短信测试专用"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
        ("SignatureVersion", "1.0"),
        ("TemplateCode", "SMS_71390007"),
        ("TemplateParam", r#"{"customer":"test"}"#),
        ("Timestamp", "2017-07-12T02:42:19Z"),
        ("Version", "2017-05-25"),
    ]);
    assert_eq!(sign(&params, "testSecret"), "zJDF+Lrzhj/ThnlvIToysFRq6t4=");
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn classifies_codes() {
    let now = at("2024-05-01T08:00:00Z");
    let minute = Some(Duration::from_secs(60));
    // 16:00 in Shanghai: eight hours to the next natural day.
    let to_midnight = Some(Duration::from_secs(8 * 3600));
    let table: &[(&str, &str, Verdict)] = &[
        ("OK", "OK", Verdict::Sent),
        (
            "isv.BUSINESS_LIMIT_CONTROL",
            "触发分钟级流控Permits:1",
            Verdict::Retry(minute),
        ),
        (
            "isv.BUSINESS_LIMIT_CONTROL",
            "触发小时级流控Permits:5",
            Verdict::Retry(Some(Duration::from_secs(3600))),
        ),
        (
            "isv.BUSINESS_LIMIT_CONTROL",
            "触发天级流控Permits:10",
            Verdict::Retry(to_midnight),
        ),
        ("isv.BUSINESS_LIMIT_CONTROL", "", Verdict::Retry(minute)),
        ("isv.DAY_LIMIT_CONTROL", "", Verdict::Retry(to_midnight)),
        ("Throttling.User", "", Verdict::Retry(Some(THROTTLING))),
        ("Throttling.Api", "", Verdict::Retry(Some(THROTTLING))),
        ("Throttling", "", Verdict::Retry(Some(THROTTLING))),
        ("isp.SYSTEM_ERROR", "", Verdict::Retry(None)),
        ("isv.SYSTEM_ERROR", "系统错误", Verdict::Retry(None)),
        ("SYSTEM_ERROR", "", Verdict::Retry(None)),
        ("InternalError", "", Verdict::Retry(None)),
        ("isv.PARAM_LENGTH_LIMIT", "参数超出长度限制", Verdict::Dead),
        ("ServiceUnavailable", "", Verdict::Retry(None)),
        ("isv.MOBILE_NUMBER_ILLEGAL", "", Verdict::Dead),
        ("isv.TEMPLATE_MISSING_PARAMETERS", "", Verdict::Dead),
        ("isv.SMS_TEMPLATE_ILLEGAL", "", Verdict::Dead),
        ("isv.SMS_SIGNATURE_ILLEGAL", "", Verdict::Dead),
        ("isv.INVALID_PARAMETERS", "", Verdict::Dead),
        ("isv.SOMETHING_NEW", "", Verdict::Dead),
        // The gateway's own refusals of a malformed request: no retry mends them either.
        ("MissingParameter", "", Verdict::Dead),
        ("InvalidParameter", "", Verdict::Dead),
        ("isv.AMOUNT_NOT_ENOUGH", "", Verdict::Stop(FIX_CREDIT)),
        ("isv.OUT_OF_SERVICE", "", Verdict::Stop(FIX_CREDIT)),
        (
            "InvalidAccessKeyId.NotFound",
            "",
            Verdict::Stop(FIX_CREDENTIALS),
        ),
        (
            "InvalidAccessKeyId.Inactive",
            "",
            Verdict::Stop(FIX_CREDENTIALS),
        ),
        ("SignatureDoesNotMatch", "", Verdict::Stop(FIX_CREDENTIALS)),
        ("Forbidden.RAM", "", Verdict::Stop(FIX_CREDENTIALS)),
        (
            "isp.RAM_PERMISSION_DENY",
            "",
            Verdict::Stop(FIX_CREDENTIALS),
        ),
    ];
    for (code, message, verdict) in table {
        assert_eq!(&classify(code, message, now), verdict, "{code} {message}");
    }
    assert!(matches!(
        classify("InvalidTimeStamp.Expired", "", now),
        Verdict::Stop(fix) if fix.contains("clock")
    ));
    // Just before midnight in Shanghai the daily window is about to reset.
    assert_eq!(
        classify("isv.DAY_LIMIT_CONTROL", "", at("2024-05-01T15:59:30Z")),
        Verdict::Retry(Some(Duration::from_secs(30)))
    );
}

#[test]
fn template_param_carries_the_wanted_variables_cut_to_the_limit() {
    let values: BTreeMap<String, String> = [
        ("order_id", "E1"),
        (
            "event",
            "快件已由菜鸟驿站代收，请凭取件码领取，如有疑问请联系派件员，感谢使用，期待再次为您服务",
        ),
        ("carrier", "中通快递"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let wanted = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let table: &[(&[&str], usize, &str)] = &[
        (&["order_id"], 35, r#"{"order_id":"E1"}"#),
        (&[], 35, "{}"),
        // A name the message lacks goes out empty: Aliyun then names the template's fault.
        (
            &["order_id", "tracking_no"],
            35,
            r#"{"order_id":"E1","tracking_no":""}"#,
        ),
        // Cut by characters, not bytes: 34 of them and an ellipsis.
        (
            &["event"],
            35,
            r#"{"event":"快件已由菜鸟驿站代收，请凭取件码领取，如有疑问请联系派件员，感谢使用…"}"#,
        ),
        (
            &["carrier", "event"],
            4,
            r#"{"carrier":"中通快递","event":"快件已…"}"#,
        ),
        (&["event"], 1, r#"{"event":"…"}"#),
    ];
    for (names, max, json) in table {
        assert_eq!(
            &template_param(&values, &wanted(names), *max),
            json,
            "{names:?} {max}"
        );
    }
    let cut: serde_json::Value =
        serde_json::from_str(&template_param(&values, &wanted(&["event"]), 35)).unwrap();
    assert_eq!(cut["event"].as_str().unwrap().chars().count(), 35);
}

#[test]
fn phones_lose_the_mainland_prefix() {
    for (raw, phone) in [
        ("13812345678", Some("13812345678")),
        ("+8613812345678", Some("13812345678")),
        ("+86 138-1234-5678", Some("13812345678")),
        ("008613812345678", Some("13812345678")),
        ("+85261234567", Some("85261234567")),
        ("138abc45678", None),
        ("", None),
        ("+86", None),
        // Five digits is the shortest number sent; four is a typo, refused before Aliyun.
        ("+86 10086", Some("10086")),
        ("1008", None),
    ] {
        assert_eq!(normalize_phone(raw).as_deref(), phone, "{raw:?}");
    }
}

#[test]
fn redaction_covers_every_form_of_the_number() {
    let text = "invalid mobile +86 138 1234 5678 / 13812345678";
    let out = redact(text, "+86 138 1234 5678");
    assert_eq!(out, "invalid mobile 138****5678 / 138****5678");
}
