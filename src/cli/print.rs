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

pub(super) fn print_table(headers: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut table = Table::stdout(headers);
    table.print(rows)?;
    table.finish()?;
    Ok(())
}

/// How many rows a listing (`list`, `outbox`) reads and prints at a time: the memory it holds
/// whatever the size of the database (a million shipments read whole took 4 GiB and 19 s before
/// the first line).
pub(super) const PAGE: u32 = 1_000;

/// A table printed a page of rows at a time. Each column is as wide as its widest cell so far:
/// the first page sets the widths, and a wider cell on a later page widens its column from
/// there on. One page alone is printed exactly as if whole.
pub(super) struct Table<'h, W: Write> {
    headers: &'h [&'h str],
    widths: Vec<usize>,
    out: W,
    started: bool,
}

impl<'h> Table<'h, std::io::BufWriter<std::io::Stdout>> {
    pub(super) fn stdout(headers: &'h [&'h str]) -> Self {
        Table::new(headers, std::io::BufWriter::new(std::io::stdout()))
    }
}

impl<'h, W: Write> Table<'h, W> {
    pub(super) fn new(headers: &'h [&'h str], out: W) -> Self {
        Table {
            headers,
            widths: headers.iter().map(|h| crate::shown::width(h)).collect(),
            out,
            started: false,
        }
    }

    /// Prints `rows`, the header first if nothing was printed yet.
    pub(super) fn print(&mut self, rows: &[Vec<String>]) -> Result<()> {
        let last = self.headers.len().saturating_sub(1);
        let cut = |i: usize, cell: &str| {
            crate::shown::cell(cell, if i == last { MAX_LAST_CELL } else { MAX_CELL })
        };
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|row| row.iter().enumerate().map(|(i, c)| cut(i, c)).collect())
            .collect();
        for row in &rows {
            for (i, cell) in row.iter().enumerate() {
                self.widths[i] = self.widths[i].max(crate::shown::width(cell));
            }
        }
        if !self.started {
            self.started = true;
            let headers: Vec<&str> = self.headers.to_vec();
            self.line(&headers)?;
        }
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            self.line(&cells)?;
        }
        Ok(())
    }

    fn line(&mut self, cells: &[&str]) -> Result<()> {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < cells.len() {
                line.push_str(&" ".repeat(self.widths[i] - crate::shown::width(cell) + 2));
            }
        }
        writeln!(self.out, "{}", line.trim_end())?;
        Ok(())
    }

    /// Flushes what is printed; returns the writer.
    pub(super) fn finish(mut self) -> Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A JSON array printed an element at a time, as [`print_json`] prints a whole one: each
/// element pretty-printed and indented one step (a string's line breaks are escaped in JSON, so
/// every line of an element's text is a line of the array's).
pub(super) struct JsonArray<W: Write> {
    out: W,
    written: usize,
}

impl JsonArray<std::io::BufWriter<std::io::Stdout>> {
    pub(super) fn stdout() -> Self {
        JsonArray::new(std::io::BufWriter::new(std::io::stdout()))
    }
}

impl<W: Write> JsonArray<W> {
    pub(super) fn new(out: W) -> Self {
        JsonArray { out, written: 0 }
    }

    pub(super) fn push<T: Serialize>(&mut self, element: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(element)?;
        self.out
            .write_all(if self.written == 0 { b"[\n" } else { b",\n" })?;
        for (i, line) in text.lines().enumerate() {
            if i > 0 {
                self.out.write_all(b"\n")?;
            }
            write!(self.out, "  {line}")?;
        }
        self.written += 1;
        Ok(())
    }

    /// Closes the array and flushes it; returns the writer.
    pub(super) fn finish(mut self) -> Result<W> {
        self.out
            .write_all(if self.written == 0 { b"[]\n" } else { b"\n]\n" })?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A listing printed a page at a time: a JSON array (`--json`) or a table.
pub(super) enum Listing<'h> {
    Json(JsonArray<std::io::BufWriter<std::io::Stdout>>),
    Table {
        table: Table<'h, std::io::BufWriter<std::io::Stdout>>,
        rows: usize,
    },
}

impl<'h> Listing<'h> {
    pub(super) fn new(json: bool, headers: &'h [&'h str]) -> Self {
        if json {
            Listing::Json(JsonArray::stdout())
        } else {
            Listing::Table {
                table: Table::stdout(headers),
                rows: 0,
            }
        }
    }

    /// Prints `items`: each one's `view` as JSON, or its `line` in the table.
    pub(super) fn page<T, V: Serialize>(
        &mut self,
        items: &[T],
        view: impl Fn(&T) -> V,
        line: impl Fn(&T) -> Vec<String>,
    ) -> Result<()> {
        match self {
            Listing::Json(array) => items.iter().try_for_each(|item| array.push(&view(item))),
            Listing::Table { table, rows } => {
                *rows += items.len();
                if items.is_empty() {
                    return Ok(());
                }
                table.print(&items.iter().map(line).collect::<Vec<_>>())
            }
        }
    }

    /// Ends the listing; a table that got no row prints `none` instead.
    pub(super) fn finish(self, none: &str) -> Result<()> {
        match self {
            Listing::Json(array) => {
                array.finish()?;
            }
            Listing::Table { table, rows } => {
                table.finish()?;
                if rows == 0 {
                    println!("{none}");
                }
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_array_printed_an_element_at_a_time_reads_as_the_whole_array_printed_at_once() {
        let elements = [
            serde_json::json!({"order_id": "1001", "events": [{"at": 1, "text": "a\nb"}]}),
            serde_json::json!({"order_id": "1002", "events": [], "note": null}),
            serde_json::json!("plain"),
        ];
        for n in 0..=elements.len() {
            let mut array = JsonArray::new(Vec::new());
            for element in &elements[..n] {
                array.push(element).unwrap();
            }
            let printed = String::from_utf8(array.finish().unwrap()).unwrap();
            let whole = serde_json::to_string_pretty(&elements[..n]).unwrap() + "\n";
            assert_eq!(printed, whole, "{n} elements");
        }
    }

    #[test]
    fn a_table_printed_a_page_at_a_time_widens_a_column_from_the_page_that_needs_it() {
        let row = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let mut table = Table::new(&["ORDER", "STATUS", "NOTE"], Vec::new());
        table
            .print(&[
                row(&["1001", "delivered", ""]),
                row(&["1002", "in_transit", "x"]),
            ])
            .unwrap();
        table
            .print(&[row(&["SIM-100000", "pending", "late"])])
            .unwrap();
        let printed = String::from_utf8(table.finish().unwrap()).unwrap();
        assert_eq!(
            printed,
            "ORDER  STATUS      NOTE\n\
             1001   delivered\n\
             1002   in_transit  x\n\
             SIM-100000  pending     late\n"
        );
    }

    /// A column is cut at 48 terminal columns, the last at 120: a long error message is read
    /// whole in the last column without one long value widening every row of the others.
    #[test]
    fn a_long_cell_is_cut_at_its_columns_limit_and_the_last_column_has_the_widest() {
        let (middle, last) = ("m".repeat(MAX_CELL + 12), "e".repeat(MAX_CELL + 52));
        let mut table = Table::new(&["ID", "NOTE", "LAST ERROR"], Vec::new());
        table
            .print(&[vec!["1".to_owned(), middle.clone(), last.clone()]])
            .unwrap();
        let printed = String::from_utf8(table.finish().unwrap()).unwrap();
        let row = printed.lines().nth(1).unwrap();
        let cut_middle = format!("{}…", &middle[..MAX_CELL - 1]);
        assert_eq!(row, format!("1   {cut_middle}  {last}"), "{printed}");
        // Past its own limit, the last column is cut too.
        let mut table = Table::new(&["ID", "LAST ERROR"], Vec::new());
        let longer = "e".repeat(MAX_LAST_CELL + 1);
        table
            .print(&[vec!["1".to_owned(), longer.clone()]])
            .unwrap();
        let printed = String::from_utf8(table.finish().unwrap()).unwrap();
        let row = printed.lines().nth(1).unwrap();
        assert_eq!(row, format!("1   {}…", &longer[..MAX_LAST_CELL - 1]));
    }
}
