//! Entry points for the fuzz targets (`tests/fuzz`) and the property tests below: every parser
//! that reads what somebody else wrote (an upstream's answer, a shop's CSV file, the config, a
//! duration or a quota), reachable with plain bytes or text. Not an API: the names may change.
//!
//! Each function goes through the same code the daemon runs, not a copy of it.

use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use crate::api::Problem;
use crate::config::{BadDuration, BadRateLimit, Config, ConfigError, HumanDuration, RateLimit};
use crate::intake::{CsvError, Intake};
use crate::providers::{ProviderError, Trace};
use crate::storage::NewShipment;

/// A TOP `taobao.logistics.trace.search` answer, as the adapter reads a 200 response's body.
pub fn taobao_response(body: &[u8]) -> Result<Trace, ProviderError> {
    crate::providers::taobao::parse_response(&String::from_utf8_lossy(body)).map(|f| f.trace)
}

/// A 1688 gateway answer with its HTTP status, as the adapter reads it.
pub fn alibaba1688_response(status: u16, body: &[u8]) -> Result<Trace, ProviderError> {
    crate::providers::alibaba1688::interpret(status, None, &String::from_utf8_lossy(body))
        .map(|f| f.trace)
}

/// A Kuaidi100 real-time query answer, as the adapter reads a 200 response's body.
pub fn kuaidi100_response(body: &[u8]) -> Result<Trace, ProviderError> {
    crate::providers::kuaidi100::parse_response(&String::from_utf8_lossy(body))
}

/// A Kuaidi100 push callback's body (form-encoded `param` and `sign`), read as the public
/// listener reads it, the sign checked against `salt`.
pub fn kuaidi100_callback(
    body: &[u8],
    salt: &str,
) -> Result<
    crate::providers::kuaidi100_push::Callback,
    crate::providers::kuaidi100_push::CallbackError,
> {
    crate::providers::kuaidi100_push::read_callback(body, salt)
}

/// A Kuaidi100 subscription's answer, as the subscriber reads a 200 response's body.
pub fn kuaidi100_subscribe_answer(
    body: &[u8],
) -> Result<crate::providers::kuaidi100_push::Subscribed, ProviderError> {
    crate::providers::kuaidi100_push::parse_subscribe_answer(&String::from_utf8_lossy(body))
}

/// The providers a CSV file is checked against: one of each kind that checks shipments.
const CSV_CONFIG: &str = r#"
[providers.taobao]
kind = "taobao"
app_key = "1"
app_secret = "s"
session = "s"

[providers.k100]
kind = "kuaidi100"
customer = "C"
key = "k"
"#;

static INTAKE: LazyLock<Intake> = LazyLock::new(|| {
    let config = Config::parse(CSV_CONFIG, None, Path::new(".")).expect("fixed config parses");
    Intake::new(Some(&config))
});

/// A CSV file given to `shipwatch import`.
pub fn csv_import(data: &[u8]) -> Result<Vec<NewShipment>, CsvError> {
    INTAKE
        .read_csv_from(data, "import.csv")
        .map(|rows| rows.into_iter().map(|(_, shipment)| shipment).collect())
}

/// A `POST /v1/shipments` body, read and checked as the API does (against the providers above).
pub fn api_create(body: &[u8]) -> Result<NewShipment, Problem> {
    let item = crate::api::body::create(body)?;
    crate::api::body::check(&INTAKE, None, item).map_err(|e| Problem::invalid(vec![e]))
}

/// A `POST /v1/shipments/batch` body, read and checked as the API does.
pub fn api_batch(body: &[u8]) -> Result<Vec<NewShipment>, Problem> {
    let items = crate::api::body::batch(body)?;
    let (good, bad): (Vec<_>, Vec<_>) = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| crate::api::body::check(&INTAKE, Some(i), item))
        .partition(Result::is_ok);
    if bad.is_empty() {
        Ok(good.into_iter().flatten().collect())
    } else {
        Err(Problem::invalid(
            bad.into_iter().filter_map(Result::err).collect(),
        ))
    }
}

/// A `PATCH /v1/shipments/{order_id}` body.
pub fn api_patch(body: &[u8]) -> Result<crate::api::body::Patch, Problem> {
    crate::api::body::patch(body)
}

/// A `GET /v1/shipments` query string.
pub fn api_list_query(query: &str) -> Result<crate::api::body::ListQuery, Problem> {
    crate::api::body::list_query(Some(query))
}

/// A config file's text. Relative `*_file` paths are looked up in a folder that does not exist.
pub fn config(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, None, Path::new("/nonexistent/shipwatch-fuzz"))
}

/// A duration as written in the config (`30s`, `2m`).
pub fn duration(text: &str) -> Result<Duration, BadDuration> {
    text.parse::<HumanDuration>().map(|d| d.0)
}

/// A quota as written in the config (`500/min`).
pub fn rate_limit(text: &str) -> Result<RateLimit, BadRateLimit> {
    text.parse::<RateLimit>()
}

#[cfg(test)]
mod tests {
    //! No input makes a parser panic, and what comes out is bounded by what went in: a hostile
    //! or broken upstream cannot make the daemon crash or hoard memory. Inputs are up to a few
    //! KiB; the whole suite runs in seconds in a debug build.

    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;

    /// Error messages quote at most a snippet of the input.
    const MAX_ERROR_CHARS: usize = 1024;

    /// Keys the three upstreams use, so that random documents reach past the first field.
    const KEYS: &[&str] = &[
        "logistics_trace_search_response",
        "error_response",
        "out_sid",
        "company_name",
        "tid",
        "status",
        "trace_list",
        "transit_step_info",
        "status_time",
        "status_desc",
        "action",
        "code",
        "msg",
        "sub_code",
        "sub_msg",
        "request_id",
        "success",
        "logisticsTrace",
        "errorCode",
        "errorMessage",
        "error_code",
        "error_message",
        "logisticsId",
        "orderId",
        "logisticsBillNo",
        "logisticsSteps",
        "acceptTime",
        "remark",
        "message",
        "nu",
        "ischeck",
        "com",
        "state",
        "data",
        "time",
        "ftime",
        "context",
        "location",
        "result",
        "returnCode",
        "lastResult",
        "comNew",
        "comOld",
        "autoCheck",
        "billstatus",
    ];

    /// Values the upstreams send, and their near misses.
    const WORDS: &[&str] = &[
        "2016-01-01 12:00:00",
        "2016-02-30 25:61:61",
        "1451620800000",
        "99999999999999999999",
        "-1",
        "对方已签收",
        "物流公司揽收成功",
        "签收",
        "派件",
        "SIGNED",
        "TMS_DELIVERING",
        "This ban will last for 31062 more seconds",
        "This ban will last for 99999999999999999999999 more seconds",
        "App Call Limited",
        "isp.timeout",
        "isv.invalid-parameter",
        "gw.QosAppFrequencyLimit",
        "gw.SignatureInvalid",
        "查询无结果，请隔段时间再查",
        "ok",
        "200",
        "0",
        "3",
        "14",
        "501",
        "1001",
        "601",
        "polling",
        "shutdown",
        "abort",
        "updateall",
        "3天查询无记录",
        "",
    ];

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e20f64..1e20).prop_map(Value::from),
            prop::sample::select(WORDS).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ]
    }

    /// JSON documents shaped like the upstreams' answers: known keys, nested lists and objects.
    fn document() -> impl Strategy<Value = Value> {
        shaped_document(KEYS, 5, 96, "[a-z_]{0,8}")
    }

    /// Nested lists and objects whose keys are mostly `keys`, now and then `other` ones.
    fn shaped_document(
        keys: &'static [&'static str],
        depth: u32,
        size: u32,
        other: &'static str,
    ) -> impl Strategy<Value = Value> {
        leaf().prop_recursive(depth, size, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            4 => prop::sample::select(keys).prop_map(str::to_owned),
                            1 => other,
                        ],
                        inner
                    ),
                    0..8
                )
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// Raw bytes, or a generated document, or one with a few bytes cut or flipped.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2048),
            document().prop_map(|doc| doc.to_string().into_bytes()),
            (document(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(doc, at, byte)| {
                let mut bytes = doc.to_string().into_bytes();
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                    bytes.truncate(i + (byte as usize % 4));
                }
                bytes
            }),
        ]
    }

    /// A trace holds no more than its body: events and their texts grow with the input only.
    fn check_bounded(input: usize, result: &Result<Trace, ProviderError>) {
        match result {
            Ok(trace) => {
                assert!(trace.events.len() <= input, "{} events", trace.events.len());
                let text: usize = trace
                    .events
                    .iter()
                    .map(|e| {
                        e.description.len()
                            + e.location.as_ref().map_or(0, String::len)
                            + e.raw_code.as_ref().map_or(0, String::len)
                    })
                    .sum::<usize>()
                    + trace.raw_status.len()
                    + trace.unmapped.iter().map(String::len).sum::<usize>();
                assert!(text <= 4 * input + 64, "{text} bytes of text from {input}");
            }
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.chars().count() <= MAX_ERROR_CHARS,
                    "an error of {} chars",
                    message.chars().count()
                );
                assert!(!message.contains('\n'), "{message}");
            }
        }
    }

    /// Keys of the API's bodies, so that random documents reach the field checks.
    static API_KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        let mut keys = crate::intake::COLUMNS.to_vec();
        keys.extend(["shipments", ""]);
        keys
    });

    /// JSON documents shaped like the API's bodies: a create, a batch of them, or anything.
    fn api_document() -> impl Strategy<Value = Value> {
        shaped_document(&API_KEYS, 4, 64, ".{0,8}")
    }

    /// Raw bytes, an API-shaped document, or one with a byte flipped and the rest cut.
    fn api_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2048),
            api_document().prop_map(|doc| doc.to_string().into_bytes()),
            api_document().prop_map(|doc| serde_json::json!({ "shipments": [doc] })
                .to_string()
                .into_bytes()),
            (api_document(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
                |(doc, at, byte)| {
                    let mut bytes = doc.to_string().into_bytes();
                    if !bytes.is_empty() {
                        let i = at.index(bytes.len());
                        bytes[i] = byte;
                        bytes.truncate(i + (byte as usize % 4));
                    }
                    bytes
                }
            ),
        ]
    }

    /// A refusal is a 400 or a 422 whose detail and fields are one line each.
    fn check_problem(problem: &Problem) {
        assert!(matches!(problem.status.as_u16(), 400 | 422), "{problem:?}");
        assert!(!problem.detail.contains('\n'), "{problem:?}");
        for e in &problem.errors {
            assert!(
                !e.field.contains('\n') && !e.detail.contains('\n'),
                "{problem:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn api_bodies_never_panic(body in api_body()) {
            if let Err(p) = api_create(&body) { check_problem(&p); }
            match api_batch(&body) {
                Ok(shipments) => prop_assert!(shipments.len() <= crate::api::body::MAX_BATCH),
                Err(p) => check_problem(&p),
            }
            if let Err(p) = api_patch(&body) { check_problem(&p); }
            if let Err(p) = api_list_query(&String::from_utf8_lossy(&body)) { check_problem(&p); }
        }

        #[test]
        fn taobao_answers_never_panic(body in body()) {
            check_bounded(body.len(), &taobao_response(&body));
        }

        #[test]
        fn alibaba1688_answers_never_panic(status in 100u16..600, body in body()) {
            check_bounded(body.len(), &alibaba1688_response(status, &body));
            check_bounded(body.len(), &alibaba1688_response(200, &body));
        }

        #[test]
        fn kuaidi100_answers_never_panic(body in body()) {
            check_bounded(body.len(), &kuaidi100_response(&body));
        }

        #[test]
        fn kuaidi100_callbacks_never_panic(body in body(), salt in ".{0,16}") {
            // Unsigned bytes stop at the sign; the trace of a signed one is bounded as a query's.
            if let Ok(callback) = kuaidi100_callback(&body, &salt) {
                check_bounded(body.len(), &callback.trace.ok_or(ProviderError::Transient(String::new())));
            }
        }

        #[test]
        fn signed_kuaidi100_callbacks_never_panic(doc in document(), salt in ".{0,16}", cut in any::<prop::sample::Index>()) {
            // Past the sign: any document Kuaidi100 (or a holder of the salt) could sign, whole
            // or cut short, is read or refused without a panic.
            let mut param = doc.to_string();
            let at = cut.index(param.len() + 1);
            if param.is_char_boundary(at) && at % 3 == 0 {
                param.truncate(at);
            }
            let sign = crate::providers::kuaidi100_push::sign(&param, &salt);
            let encode = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
            let body = format!("param={}&sign={}", encode(&param), sign).into_bytes();
            match kuaidi100_callback(&body, &salt) {
                Ok(callback) => {
                    check_bounded(body.len(), &callback.trace.ok_or(ProviderError::Transient(String::new())));
                }
                Err(crate::providers::kuaidi100_push::CallbackError::BadParam(_)) => {}
                Err(other) => panic!("a signed body refused as {other:?}"),
            }
        }

        #[test]
        fn kuaidi100_subscribe_answers_never_panic(body in body()) {
            if let Err(e) = kuaidi100_subscribe_answer(&body) {
                check_bounded(body.len(), &Err(e));
            }
        }

        #[test]
        fn csv_files_never_panic(
            rows in prop::collection::vec(
                prop::collection::vec(
                    prop_oneof![
                        "[0-9]{1,20}",
                        "[A-Za-z0-9 +@.\"-]{0,16}",
                        prop::sample::select(&[
                            "order_id", "provider", "tracking_no", "carrier", "tier", "phone",
                            "email", "taobao", "k100", "high", "low", "13812345678",
                            "a@b.example", "yuantong", "\"", ",", "\r\n",
                        ][..]).prop_map(str::to_owned),
                    ],
                    0..7,
                ),
                0..12,
            ),
            noise in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut text: Vec<u8> = rows
                .iter()
                .map(|cells| cells.join(","))
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes();
            let len = text.len();
            match csv_import(&text) {
                Ok(shipments) => prop_assert!(shipments.len() <= len),
                Err(e) => prop_assert!(!e.to_string().contains('\n'), "{}", e),
            }
            text.extend_from_slice(&noise);
            let _ = csv_import(&text);
        }

        #[test]
        fn configs_never_panic(
            lines in prop::collection::vec(
                prop_oneof![
                    prop::sample::select(&[
                        "[tiers]", "[polling]", "[delivery]", "[http]", "[maintenance]",
                        "[maintenance.schedules]", "[providers.t]", "[channels.webhook]",
                        "[channels.email]", "[channels.sms]", "[channels.sms.templates.delivered]",
                        "kind = \"taobao\"", "kind = \"kuaidi100\"", "kind = \"simulator\"",
                        "kind = \"aliyun\"", "kind = \"http\"", "high = \"1s\"", "low = \"400d\"",
                        "rate_limit = \"0/min\"", "rate_limit = \"4294967296/s\"",
                        "rate_limit = \"1/18446744073709551615s\"", "[channels.wechat]",
                        "concurrency = 9223372036854775807", "concurrency = 3",
                        "jitter = 0.7", "concurrency = 0", "attempts = 99",
                        "timeout = \"0s\"", "lease = \"1s\"", "expire = \"30 3 * * *\"",
                        "timezone = \"Mars/Olympus\"", "quiet_hours = \"25:00-08:00\"",
                        "url = \"ftp://x\"", "url = \"http://127.0.0.1:1/hook\"",
                        "secret = \"whsec_!!\"", "secret = \"s\"", "app_key = \"1\"",
                        "app_secret = \"\"", "app_secret_file = \"missing\"", "session = \"s\"",
                        "smtp_url = \"smtps://u:p@h\"", "from = \"a@b.example\"",
                        "text = \"{nope}\"", "body = \"{{\"", "listen = \"::::\"",
                        "min_interval = \"999999999d\"", "shutdown_timeout = \"1y\"",
                    ][..]).prop_map(str::to_owned),
                    "[a-z_]{1,10} = \"[ -~]{0,12}\"",
                    "[a-z_]{1,10} = [0-9]{1,22}",
                    ".{0,16}",
                ],
                0..24,
            ),
        ) {
            let text = lines.join("\n");
            if let Err(e) = config(&text) {
                let message = e.to_string();
                prop_assert!(!message.contains('\n'), "{}", message);
                prop_assert!(message.len() <= 2 * text.len() + 1024);
            }
        }

        #[test]
        fn durations_and_quotas_never_panic(text in prop_oneof![
            ".{0,24}",
            "[0-9]{1,30}(ns|us|ms|s|m|h|d|w|y|min|sec|day)?",
            "[0-9]{1,12}/[0-9]{0,30}(s|min|h|d|ms)?",
        ]) {
            if let Ok(d) = duration(&text) {
                // What `check-config` and the logs print reads back as the same duration.
                let shown = humantime::format_duration(d).to_string();
                prop_assert_eq!(duration(&shown), Ok(d), "{}", shown);
            }
            if let Ok(quota) = rate_limit(&text) {
                prop_assert!(quota.calls >= 1 && !quota.per.is_zero());
                let _ = quota.interval();
                let _ = quota.to_string();
            }
        }
    }

    #[test]
    fn the_entry_points_read_real_answers() {
        let top = r#"{"logistics_trace_search_response":{"tid":1,"status":"对方已签收","trace_list":{"transit_step_info":[{"status_time":"2016-01-01 12:00:00","status_desc":"签收","action":"SIGNED"}]}}}"#;
        assert_eq!(taobao_response(top.as_bytes()).unwrap().events.len(), 1);
        let ali = r#"{"success":true,"logisticsTrace":[{"orderId":1,"logisticsSteps":[{"acceptTime":"2018-02-01 20:30:36","remark":"已签收"}]}]}"#;
        assert_eq!(
            alibaba1688_response(200, ali.as_bytes())
                .unwrap()
                .events
                .len(),
            1
        );
        let k100 = r#"{"message":"ok","nu":"YT1","status":"200","state":"3","data":[{"time":"2016-01-01 12:00:00","context":"已签收"}]}"#;
        assert_eq!(kuaidi100_response(k100.as_bytes()).unwrap().events.len(), 1);
        assert_eq!(
            csv_import(b"order_id,provider\n123,taobao\n")
                .unwrap()
                .len(),
            1
        );
        assert!(config("[tiers]\nhigh = \"1m\"").is_ok());
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(rate_limit("500/min").unwrap().calls, 500);
    }
}
