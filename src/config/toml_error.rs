//! A TOML mistake as one line that names where it is and never what the line holds: the toml
//! crate quotes the offending line, and a config line may hold a secret.

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A TOML error as one line that names the place (line, column, key and section) and the
/// mistake, never the text: the toml crate's own rendering quotes the offending line, and that
/// line may hold a secret.
pub(super) fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = one_line(&without_values(error.message()));
    let Some(span) = error.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, tail)| tail)
        .chars()
        .count()
        + 1;
    let mut place = format!("line {line}, column {column}");
    let key = text.lines().nth(line - 1).and_then(key_of_line);
    let section = text.lines().take(line).filter_map(section_of_line).last();
    match (key, section) {
        (Some(key), Some(section)) => place.push_str(&format!(", key {key} in [{section}]")),
        (Some(key), None) => place.push_str(&format!(", key {key}")),
        (None, Some(section)) => place.push_str(&format!(", in [{section}]")),
        (None, None) => {}
    }
    format!("{place}: {message} (the line is not shown: it may hold a secret)")
}

/// The key a `key = value` line sets, when it looks like a key (and so cannot be a value).
fn key_of_line(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"');
    (!key.is_empty() && key.len() <= 64 && key.chars().all(plain)).then_some(key)
}

/// The table a `[section]` or `[[section]]` header line opens.
fn section_of_line(line: &str) -> Option<&str> {
    let name = line
        .trim()
        .strip_prefix('[')?
        .trim_start_matches('[')
        .split(']')
        .next()?
        .trim();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | ' ');
    (!name.is_empty() && name.len() <= 128 && name.chars().all(plain)).then_some(name)
}

/// serde's and our own messages quote the value they refused (`invalid type: string "…"`,
/// `"x" is not a duration`, ``invalid value: integer `5` ``): each quoted value becomes `…`.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(['"', '`']) {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        let quote = tail.chars().next().unwrap_or('"');
        let body = &tail[1..];
        // Backquoted names of keys and expected tokens stay; backquoted values go.
        let is_value = quote == '"'
            || [
                "integer ",
                "floating point ",
                "boolean ",
                "character ",
                "unknown variant ",
            ]
            .iter()
            .any(|word| head.ends_with(word));
        let mut end = None;
        let mut escaped = false;
        for (j, c) in body.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' && quote == '"' {
                escaped = true;
            } else if c == quote {
                end = Some(j);
                break;
            }
        }
        let Some(end) = end else {
            // An unmatched quote: the rest may be a value.
            out.push(quote);
            out.push('…');
            return out;
        };
        out.push(quote);
        if is_value {
            out.push('…');
        } else {
            out.push_str(&body[..end]);
        }
        out.push(quote);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;

    #[test]
    fn toml_errors_name_the_place_and_never_the_value() {
        // (config text, what the error must say, the secret it must not)
        let rows: &[(&str, &str, &str)] = &[
            (
                "[providers.t]\nkind = \"taobao\"\napp_secret = \"tb-Secret-1\n",
                "line 3, column 26, key app_secret in [providers.t]",
                "tb-Secret-1",
            ),
            (
                "[channels.webhook]\nurl = \"https://u:pw-Secret-2@h/\" trailing\n",
                "line 2, column",
                "pw-Secret-2",
            ),
            (
                "[providers.t]\nkind = \"taobao\"\napp_secret = 12345678901\n",
                "key app_secret in [providers.t]: invalid type: integer `…`",
                "12345678901",
            ),
            (
                "[tiers]\nhigh = \"Secret-3-often\"\n",
                "key high in [tiers]",
                "Secret-3-often",
            ),
            (
                "synchronous = \"Secret-4\"\n",
                "key synchronous: unknown variant `…`",
                "Secret-4",
            ),
            ("colour = \"blue\"\n", "unknown field `colour`", "blue"),
            (
                "[channels.webhook]\nurl = 'https://h/?token=Secret-5\n",
                "line 2",
                "Secret-5",
            ),
            // A quote escaped inside a quoted value does not end it.
            (
                "[tiers]\nhigh = \"x\\\"Secret-6\"\n",
                "key high in [tiers]: \"…\" is not a duration",
                "Secret-6",
            ),
            // A value line holding `=` or opening with `[` is neither a key nor a section.
            (
                "[channels.webhook]\nstatuses = [\n  \"Secret 7=x\", oops\n]\n",
                "line 3, column 17, in [channels.webhook]:",
                "Secret 7",
            ),
            (
                "[channels.webhook]\nstatuses = [\n[\"Secret-8\", \"x\"],\n]\nurl = oops\n",
                "line 5, column 7, key url in [channels.webhook]:",
                "Secret-8",
            ),
        ];
        for (text, said, secret) in rows {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(said), "{text:?}: {err}");
            assert!(!err.contains(secret), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{text:?}: {err}");
        }
    }
}
