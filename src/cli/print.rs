//! What the commands share to print: JSON for scripts, tables cut to a readable width, and any
//! outside text made safe for the terminal.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use crate::clock::to_rfc3339;

pub(super) fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// The widest a table column gets, in terminal columns; the last column, which is not padded,
/// gets `MAX_LAST_CELL`. Longer cells are cut with `…` (`--json` prints them whole): one huge
/// value must not pad every row of the table to its width.
const MAX_CELL: usize = 48;
const MAX_LAST_CELL: usize = 120;

pub(super) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let last = headers.len().saturating_sub(1);
    let cut = |i: usize, cell: &str| {
        crate::shown::cell(cell, if i == last { MAX_LAST_CELL } else { MAX_CELL })
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().enumerate().map(|(i, c)| cut(i, c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| crate::shown::width(h)).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(crate::shown::width(cell));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(widths[i] - crate::shown::width(cell) + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub(super) fn notification_line(n: &crate::storage::NotificationRow) -> Vec<String> {
    vec![
        n.id.to_string(),
        n.channel.clone(),
        if n.kind == "stuck" {
            format!("stuck in {}", n.status)
        } else {
            format!("{} → {}", n.previous_status, n.status)
        },
        n.state.clone(),
        n.attempts.to_string(),
        n.last_error.clone().unwrap_or_default(),
    ]
}

/// Text from the database, an upstream or an error, as it may reach the terminal.
pub(super) fn term(s: &str) -> std::borrow::Cow<'_, str> {
    crate::shown::for_terminal(s)
}

pub(super) fn print_provider_state(state: &crate::storage::ProviderState) {
    if let (Some(until), Some(reason)) = (state.paused_until, &state.pause_reason) {
        println!(
            "  STOPPED   {} until {} or a restart: {}",
            term(&state.provider),
            to_rfc3339(until),
            term(reason)
        );
    }
    if let (Some(until), Some(reason)) = (state.banned_until, &state.ban_reason) {
        println!(
            "  BANNED    {} by upstream until {}: {}",
            term(&state.provider),
            to_rfc3339(until),
            term(reason)
        );
    }
}
