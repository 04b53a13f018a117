//! Logs on stderr for every command: text or JSON, plain for journald, with control characters
//! escaped so that no outside text can forge a log line.

use std::io::IsTerminal;

use super::{Global, LogFormat};

pub(super) fn init(global: &Global, default: &str) {
    use tracing_subscriber::EnvFilter;
    // The scheduler library narrates its own start at info; only its warnings matter here.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},tokio_cron_scheduler=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // journald stamps every line itself and sets JOURNAL_STREAM for the services it captures.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let result = match (global.log_format, journald) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Text, true) => builder
            .fmt_fields(escaped_fields())
            .without_time()
            .with_ansi(false)
            .try_init(),
        (LogFormat::Text, false) => builder
            .fmt_fields(escaped_fields())
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    let _ = result;
}

/// Text log fields as `name=value`, the message bare, each with its control characters shown as
/// escapes: an order id or an upstream text holding `\r\n` stays inside its own line.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        let text = crate::shown::for_log(&text);
        match field.name() {
            "message" => write!(writer, "{text}"),
            name => write!(writer, "{name}={text}"),
        }
    })
    .delimited(" ")
}
