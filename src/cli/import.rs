//! `shipwatch import`: add the shipments of a CSV file, all of them or none; or, with
//! `--dry-run`, say what that would do.

use anyhow::{Result, anyhow, bail};

use crate::clock::{Clock, SystemClock};
use crate::config;
use crate::intake::{CsvOptions, EncodingChoice, ImportError, Intake, TextEncoding, choose};

use super::print::term;
use super::{Access, EncodingArg, Global, ImportArgs, open, open_if_there};

pub(super) async fn import(global: &Global, args: ImportArgs) -> Result<()> {
    let file = args.file.as_path();
    // A dry run writes nothing, so it creates no database either: with none yet, nothing is
    // tracked already.
    let (db, config) = if args.dry_run {
        open_if_there(global).await?
    } else {
        let (db, config) = open(global, Access::Create).await?;
        (Some(db), config)
    };
    let intake = Intake::new(config.as_ref());
    if let Some(provider) = &args.provider {
        intake
            .check_provider(provider)
            .map_err(|e| anyhow!("--provider: {e}"))?;
    }
    let shown = file.display().to_string();
    let cannot_read = |e: std::io::Error| anyhow!("cannot read {shown}: {}", config::io_reason(&e));
    let mut input = std::fs::File::open(file).map_err(cannot_read)?;
    let choice = match args.encoding {
        EncodingArg::Auto => EncodingChoice::Auto,
        EncodingArg::Utf8 => EncodingChoice::Utf8,
        EncodingArg::Gbk => EncodingChoice::Gbk,
    };
    let encoding = choose(choice, &mut input).map_err(|e| anyhow!("{shown}: {e}"))?;
    if choice == EncodingChoice::Auto && encoding == TextEncoding::Gb18030 {
        eprintln!(
            "{}: not UTF-8, read as GBK (GB18030); give --encoding to choose",
            term(&shown)
        );
    }
    let options = CsvOptions {
        encoding,
        choice,
        provider: args.provider,
    };
    let rows = intake
        .csv_rows(input, &shown, &options)
        .map_err(ImportError::Refused)?;
    say_ignored(&shown, rows.ignored());
    let masked = rows.masked();
    let say_masked = || {
        let n = masked.load(std::sync::atomic::Ordering::Relaxed);
        if n > 0 {
            eprintln!(
                "{}: {n} masked contacts (like 138****5678) read as empty: the export hides them; set the real ones in the shipments table if a channel needs them",
                term(&shown)
            );
        }
    };
    if args.dry_run {
        let report = intake.dry_run(db.as_ref(), rows).await?;
        if let Some(db) = db {
            db.close().await;
        }
        say_masked();
        println!(
            "dry run of {}, nothing written: {} to add, {} to skip (tracked already or repeated), {} refused",
            term(&shown),
            report.add,
            report.skip,
            report.reject
        );
        for reason in &report.reasons {
            println!("  {}", term(reason));
        }
        let more = (report.skip + report.reject).saturating_sub(report.reasons.len() as u64);
        if more > 0 {
            println!("  … and {more} more");
        }
        if let Some(stopped) = &report.stopped {
            bail!("{stopped}; the rest of the file was not read");
        }
        if !report.would_import() {
            bail!(
                "{shown}: as it stands, import would refuse the file (it takes all rows or none): fix or remove the rows above"
            );
        }
        return Ok(());
    }
    let Some(db) = db else {
        bail!("no database to import into");
    };
    let n = intake.import(&db, file, rows, SystemClock.now()).await?;
    say_masked();
    println!("imported {n} shipments from {shown}");
    db.close().await;
    Ok(())
}

/// The export's columns that are left out, once, on one line of stderr.
fn say_ignored(shown: &str, ignored: &[String]) {
    if ignored.is_empty() {
        return;
    }
    let names: Vec<String> = ignored.iter().map(|n| format!("{n:?}")).collect();
    eprintln!(
        "{}: columns left out (not used by shipwatch): {}",
        term(shown),
        term(&names.join(", "))
    );
}
