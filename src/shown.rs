//! How text that came from outside (order ids, upstream texts, receivers' answers, config
//! values) is shown: one function per destination, so that an order id holding `\r\nERROR …`
//! cannot forge a log line or drive the operator's terminal, and a URL never shows its secrets.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The form of `s` for a text log line: control characters as escapes, so one event stays one
/// line whatever its fields hold. journald cuts a service's stderr into records at every newline
/// and at every NUL (the record terminators in systemd's `src/journal/journald-stream.c`), so a
/// raw `\n` or `\0` in a field would start a record of the attacker's making. JSON logs need
/// nothing: JSON escapes them itself.
pub fn for_log(s: &str) -> Cow<'_, str> {
    escape_controls(s)
}

/// The form of `s` for a terminal: control characters (ESC, OSC, BEL, CR, NUL…) and the
/// invisible direction overrides as escapes, so what is printed is what the database holds.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    escape_controls(s)
}

/// `s` for a table cell of at most `columns` terminal columns: escaped for the terminal, then
/// cut with `…` when longer.
pub fn cell(s: &str, columns: usize) -> String {
    let escaped = for_terminal(s);
    if width(&escaped) <= columns {
        return escaped.into_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in escaped.chars() {
        let w = char_width(c);
        // One column stays free for the ellipsis.
        if used + w + 1 > columns {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// Columns `s` takes in a terminal: CJK characters are two wide.
pub fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// Columns one character takes, by Unicode's East Asian Width (UAX #11) as the `unicode-width`
/// crate keeps it: wide and fullwidth characters two, ambiguous ones (the arrow `→`, the
/// ellipsis) one as in a non-CJK terminal. Control characters are escaped before they get here.
fn char_width(c: char) -> usize {
    unicode_width::UnicodeWidthChar::width(c).unwrap_or(0)
}

/// A URL as it may be shown in errors, logs, the outbox and `check-config`: without user name
/// and password (RFC 3986 §3.2.1, https://www.rfc-editor.org/rfc/rfc3986#section-3.2.1:
/// "user:password" in userinfo is deprecated and applications should not render the part after
/// the colon as clear text; the user name goes too, as it often names the account), every query
/// value masked (gateways take keys and tokens there; no standard says which names are secret,
/// so none is trusted), no fragment.
/// Text that does not parse as a URL is not shown at all: it may be a secret pasted in the wrong
/// place.
pub fn url(raw: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(raw) else {
        return "(a value that is not a URL)".to_owned();
    };
    if url.cannot_be_a_base() {
        return format!("{}:(hidden)", url.scheme());
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_fragment(None);
    let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    if keys.is_empty() {
        url.set_query(None);
    } else {
        let mut query = url.query_pairs_mut();
        query.clear();
        for key in &keys {
            query.append_pair(key, "***");
        }
    }
    for_terminal(url.as_str()).into_owned()
}

/// A URL whose last path segment is its credential (a Feishu bot's
/// `/open-apis/bot/v2/hook/<token>`), shown as [`url`] shows any URL and with that segment
/// masked too.
pub fn url_with_path_token(raw: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(raw) else {
        return url(raw);
    };
    if let Ok(mut segments) = parsed.path_segments_mut() {
        segments.pop().push("***");
    }
    url(parsed.as_str())
}

/// An endpoint as `Debug` output and logs show it: `scheme://host[:port]/…`, everything after
/// the authority masked. A channel's URL often carries a token in its path
/// (`/hooks/T0123/B456/XXXX`) as well as in its query, and a log line is read by more people
/// than the config is. Text that does not parse as a URL is not shown at all.
pub fn endpoint(raw: &str) -> String {
    let Ok(url) = reqwest::Url::parse(raw) else {
        return "(a value that is not a URL)".to_owned();
    };
    let Some(host) = url.host_str() else {
        return format!("{}:(hidden)", url.scheme());
    };
    let port = url.port().map_or(String::new(), |p| format!(":{p}"));
    let rest = if url.path() == "/" && url.query().is_none() && url.fragment().is_none() {
        "/"
    } else {
        "/…"
    };
    for_terminal(&format!("{}://{host}{port}{rest}", url.scheme())).into_owned()
}

/// Control characters (C0, DEL, C1) and the Unicode format characters that reorder or hide text
/// (bidi overrides and isolates, zero-width marks, BOM) become escapes: `\r`, `\n`, `\t`, `\0`,
/// else `\u{1b}`. Everything else, CJK included, is kept.
fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_token_is_masked_with_the_query() {
        assert_eq!(
            url_with_path_token("https://open.feishu.cn/open-apis/bot/v2/hook/TOKEN-1?x=y#f"),
            "https://open.feishu.cn/open-apis/bot/v2/hook/***?x=***"
        );
        assert_eq!(
            url_with_path_token("not a url TOKEN-1"),
            "(a value that is not a URL)"
        );
    }

    #[test]
    fn an_endpoint_shows_scheme_host_and_port_only() {
        assert_eq!(
            endpoint("https://hooks.example/x?token=SECRET"),
            "https://hooks.example/…"
        );
        assert_eq!(
            endpoint("https://user:pw@hooks.example:8443/T0/B1/SECRET"),
            "https://hooks.example:8443/…"
        );
        assert_eq!(endpoint("http://127.0.0.1:9/"), "http://127.0.0.1:9/");
        assert_eq!(endpoint("https://gw.example"), "https://gw.example/");
        assert_eq!(
            endpoint("SECRET pasted here"),
            "(a value that is not a URL)"
        );
        assert_eq!(endpoint("mailto:SECRET@x.example"), "mailto:(hidden)");
    }

    #[test]
    fn control_characters_become_escapes() {
        let rows: &[(&str, &str)] = &[
            ("W123", "W123"),
            ("中通速递", "中通速递"),
            ("a\r\nERROR forged", "a\\r\\nERROR forged"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("\u{1b}]0;title\u{7}", "\\u{1b}]0;title\\u{7}"),
            ("nul\0", "nul\\0"),
            ("tab\t", "tab\\t"),
            ("del\u{7f}", "del\\u{7f}"),
            ("c1\u{9b}", "c1\\u{9b}"),
            ("rtl\u{202e}txt", "rtl\\u{202e}txt"),
            ("ls\u{2028}", "ls\\u{2028}"),
            ("back\\slash", "back\\slash"),
        ];
        for (input, shown) in rows {
            assert_eq!(for_terminal(input), *shown, "{input:?}");
            assert_eq!(for_log(input), *shown, "{input:?}");
        }
    }

    #[test]
    fn widths_follow_east_asian_width() {
        // The arrow of an outbox change takes one column, as the terminal draws it; CJK two.
        assert_eq!(width("picked_up → delivered"), 21);
        assert_eq!(width("已签收"), 6);
        assert_eq!(width("ＡＢ"), 4);
        assert_eq!(width("…"), 1);
    }

    #[test]
    fn cells_are_cut_to_their_width_with_an_ellipsis() {
        let rows: &[(&str, usize, &str)] = &[
            ("short", 10, "short"),
            ("exactly10!", 10, "exactly10!"),
            ("eleven char", 10, "eleven ch…"),
            ("中通速递中通速递", 9, "中通速递…"),
            ("a\nb", 10, "a\\nb"),
            ("\u{1b}\u{1b}\u{1b}", 8, "\\u{1b}\\…"),
        ];
        for (input, columns, shown) in rows {
            let got = cell(input, *columns);
            assert_eq!(got, *shown, "{input:?}");
            assert!(width(&got) <= *columns, "{input:?}");
        }
        assert_eq!(width(&cell(&"x".repeat(1 << 20), 40)), 40);
    }

    #[test]
    fn urls_lose_their_user_info_and_query_values() {
        let rows: &[(&str, &str)] = &[
            ("https://shop.example/hook", "https://shop.example/hook"),
            (
                "https://user:pa55@shop.example:8443/hook?token=abc&x=1#frag",
                "https://shop.example:8443/hook?token=***&x=***",
            ),
            ("http://admin@10.0.0.1/h", "http://10.0.0.1/h"),
            (
                "https://gw.example/send?key",
                "https://gw.example/send?key=***",
            ),
            ("not a url secret-123", "(a value that is not a URL)"),
            ("mailto:secret@example.com", "mailto:(hidden)"),
        ];
        for (input, shown) in rows {
            assert_eq!(url(input), *shown, "{input:?}");
        }
    }
}
