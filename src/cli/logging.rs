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
        (LogFormat::Json, _) => builder
            .json()
            .with_writer(|| JsonLists(std::io::stderr()))
            .try_init(),
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

/// Writes the JSON formatter's lines with list fields as JSON arrays. tracing hands a field
/// over as text (its `Debug`), so a list such as the providers would be one string; a field
/// whose text is a JSON array (a `Debug` list of strings or numbers is one) is written as that
/// array instead. The formatter writes each event whole, in one `write`.
struct JsonLists<W>(W);

impl<W: std::io::Write> std::io::Write for JsonLists<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match with_lists(buf) {
            Some(line) => self.0.write_all(&line)?,
            None => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The JSON line `line` with its list fields as arrays; `None` when nothing changes.
fn with_lists(line: &[u8]) -> Option<Vec<u8>> {
    let mut event: serde_json::Value = serde_json::from_slice(line).ok()?;
    let mut changed = false;
    let mut arrays = |fields: &mut serde_json::Map<String, serde_json::Value>| {
        for (name, value) in fields.iter_mut() {
            if name == "message" {
                continue;
            }
            let serde_json::Value::String(text) = value else {
                continue;
            };
            if !(text.starts_with('[') && text.ends_with(']')) {
                continue;
            }
            if let Ok(list @ serde_json::Value::Array(_)) = serde_json::from_str(text) {
                *value = list;
                changed = true;
            }
        }
    };
    if let Some(fields) = event.get_mut("fields").and_then(|f| f.as_object_mut()) {
        arrays(fields);
    }
    if !changed {
        return None;
    }
    let mut out = serde_json::to_vec(&event).ok()?;
    out.push(b'\n');
    Some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_fields_become_arrays_and_the_rest_stays() {
        let providers = vec!["taobao".to_owned(), "快递".to_owned()];
        let line = serde_json::json!({
            "level": "INFO",
            "fields": {
                "message": "[tiers] high",
                "providers": format!("{providers:?}"),
                "channels": format!("{:?}", Vec::<String>::new()),
                "error": "[channels.email] not a list",
                "count": 3,
            },
        })
        .to_string();
        let out = with_lists(line.as_bytes()).expect("lists were found");
        assert_eq!(out.last(), Some(&b'\n'));
        let event: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let fields = &event["fields"];
        assert_eq!(fields["providers"], serde_json::json!(["taobao", "快递"]));
        assert_eq!(fields["channels"], serde_json::json!([]));
        assert_eq!(fields["message"], "[tiers] high");
        assert_eq!(fields["error"], "[channels.email] not a list");
        assert_eq!(fields["count"], 3);
        assert_eq!(with_lists(b"{\"fields\":{\"message\":\"x\"}}\n"), None);
        assert_eq!(with_lists(b"not json"), None);
    }
}
