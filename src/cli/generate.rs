//! `shipwatch completions SHELL` and `shipwatch man`: made from the argument definitions
//! themselves, so that they never fall behind them. Neither needs a config or a database, so that
//! a package build or an install script can run them anywhere.

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

pub(super) fn completions(shell: Shell) -> Result<()> {
    // Into memory first: clap_complete panics on a failed write, and a full disk is no bug.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "shipwatch", &mut script);
    write_out(&script)
}

pub(super) fn man() -> Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .context("cannot render the man page")?;
    write_out(title_first(&String::from_utf8_lossy(&page)).as_bytes())
}

fn write_out(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// The page with its `.TH` title line first. The roff crate starts a page with the two lines that
/// define the apostrophe string `\*(Aq`; they work as well after the title, and a page whose first
/// line is `.TH` is what `head -1`, `file` and the checks of man-page tooling expect.
fn title_first(page: &str) -> String {
    let lines: Vec<&str> = page.lines().collect();
    let Some(title) = lines.iter().position(|line| line.starts_with(".TH ")) else {
        return page.to_owned();
    };
    let mut out = String::with_capacity(page.len() + 1);
    out.push_str(lines[title]);
    out.push('\n');
    for (i, line) in lines.iter().enumerate() {
        if i != title {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_title_line_comes_first_and_nothing_is_lost() {
        let page = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n.TH shipwatch 1\n.SH NAME\nshipwatch\n";
        assert_eq!(
            title_first(page),
            ".TH shipwatch 1\n.ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n.SH NAME\nshipwatch\n"
        );
        assert_eq!(title_first(".SH NAME\n"), ".SH NAME\n");
    }

    #[test]
    fn the_man_page_starts_with_its_title() {
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut page)
            .unwrap();
        let page = title_first(&String::from_utf8_lossy(&page));
        assert!(page.starts_with(".TH shipwatch 1"), "{page}");
    }
}
