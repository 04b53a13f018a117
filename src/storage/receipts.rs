//! Delivery receipts: a line written to a small file beside the SQLite database (`NAME.sent`,
//! beside the file the database path resolves to) the moment a receiver accepts a delivery, kept
//! until the writer's `sent` mark for it is committed.
//!
//! Why: a delivery that reached its receiver is repeated after a crash unless it was recorded
//! first, and the `sent` mark waits for the writer's round under way. Measured in the crash soak
//! (2,000 orders, 20 kills, three channels), that wait was 0.9–5.1 ms on average and up to 22 ms
//! at the 99th percentile, while a line written to a file costs one `write` of under 100 bytes.
//! A process killed with SIGKILL loses nothing it had written (the kernel holds it), so the line
//! survives the kill that the mark did not; at the next start [`Db::keep_receipts`] marks those
//! deliveries sent before anything is claimed. Like SQLite's commits under `synchronous =
//! NORMAL`, the lines are not synced to disk: a power cut may lose them, and the deliveries they
//! noted are then repeated, as without them.
//!
//! A receipt can only ever stop a repeat, so every doubt goes the way that repeats: a line that
//! does not read back exactly (its checksum, its three numbers) is ignored, and a receipt marks
//! its row sent only while the row is still pending under the very claim that delivered it (its
//! `lease_until`), so a receipt left over from an earlier run never marks a later attempt. If the
//! file cannot be written, the daemon says so once and goes on without it.
//!
//! On PostgreSQL, where several daemons share the rows, each daemon keeps its own file on its own
//! machine (`[database] receipts`, or `postgres.sent` in systemd's `STATE_DIRECTORY`): a receipt
//! names the claim it was written under, so it marks nothing another daemon claimed since. The
//! file is locked while its daemon runs, so two daemons never share one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use tracing::warn;

use super::{Db, Result};
use crate::clock::Millis;

/// What follows the database's file name in the receipts' file name.
pub const SUFFIX: &str = ".sent";
/// The file is rewritten with only the receipts still waiting for their mark once it holds
/// this much (about 1,500 lines).
const COMPACT_AT: u64 = 64 * 1024;
/// Once nothing waits, the file is emptied if it holds at least this much.
const EMPTY_AT: u64 = 4 * 1024;
/// A start reads at most this much of the file; a longer one was not written by shipwatch.
const MOST_READ: u64 = 16 * 1024 * 1024;
/// The longest line shipwatch writes, its newline aside: three numbers of up to 20 characters,
/// a 16-digit checksum and three spaces, 79 bytes.
const LONGEST_LINE: usize = 80;

/// What the log says when the receipts cannot be written.
const WITHOUT_RECEIPTS: &str = "cannot write the delivery receipts; going on without them (a crash repeats the deliveries whose sent mark it cuts short)";

/// One delivery its receiver accepted: the notification, the end of the lease it was delivered
/// under, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Receipt {
    pub id: i64,
    pub lease_until: Millis,
    pub sent_at: Millis,
}

impl Receipt {
    /// `ID LEASE_UNTIL SENT_AT CHECK`, CHECK the first 8 bytes of a SHA-256 over what precedes
    /// it, in hex.
    pub fn line(&self) -> String {
        let body = format!("{} {} {}", self.id, self.lease_until, self.sent_at);
        let check = check(&body);
        format!("{body} {check}\n")
    }

    /// The receipt a line (without its newline) holds, or None for anything else.
    pub fn parse(line: &str) -> Option<Receipt> {
        let (body, sum) = line.rsplit_once(' ')?;
        if sum != check(body) {
            return None;
        }
        let mut numbers = body.split(' ').map(|n| n.parse::<i64>().ok());
        let (Some(Some(id)), Some(Some(lease_until)), Some(Some(sent_at)), None) = (
            numbers.next(),
            numbers.next(),
            numbers.next(),
            numbers.next(),
        ) else {
            return None;
        };
        Some(Receipt {
            id,
            lease_until,
            sent_at,
        })
    }
}

fn check(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..8])
}

/// What a receipts file held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadBack {
    pub receipts: Vec<Receipt>,
    /// Lines that did not read back as a receipt (a power cut's leftovers, or not ours).
    pub ignored: usize,
}

/// Reads the receipts in `text`: whole lines only (a last line with no newline was cut short
/// while written), each checked.
pub fn read_lines(text: &[u8]) -> ReadBack {
    let mut back = ReadBack::default();
    let mut lines = text.split(|b| *b == b'\n');
    let last = lines.next_back();
    for line in lines {
        let receipt = std::str::from_utf8(line)
            .ok()
            .filter(|line| line.len() <= LONGEST_LINE)
            .and_then(Receipt::parse);
        match receipt {
            Some(receipt) => back.receipts.push(receipt),
            None => back.ignored += 1,
        }
    }
    if last.is_some_and(|line| !line.is_empty()) {
        back.ignored += 1;
    }
    back
}

/// The receipts' file of the database at `database`.
pub fn path_beside(database: &Path) -> PathBuf {
    super::open::beside(database, SUFFIX)
}

/// Opens (or creates, readable by its owner only) the receipts' file at `path` and locks it for
/// this daemon: two daemons never read, empty or write one file.
fn open_locked(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(std::io::Error::other(
            "another running daemon keeps its delivery receipts in this file",
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn read_back(file: &mut File) -> std::io::Result<ReadBack> {
    let mut text = Vec::new();
    file.take(MOST_READ).read_to_end(&mut text)?;
    Ok(read_lines(&text))
}

/// What [`Db::keep_receipts`] found at the start.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Receipts the file held.
    pub read: usize,
    /// Deliveries marked sent by them: the others had their mark already, or their row moved on.
    pub marked: u64,
    /// Lines that did not read back as a receipt.
    pub ignored: usize,
}

/// The receipts of this run: the open file and the receipts whose `sent` mark is not committed
/// yet.
pub struct Receipts {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    /// None once a write failed: the daemon goes on without receipts.
    file: Option<File>,
    bytes: u64,
    waiting: HashMap<i64, Receipt>,
}

impl std::fmt::Debug for Receipts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipts")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Receipts {
    /// Creates (or empties) the file at `path`, readable by its owner only, and locks it, as
    /// [`Db::keep_receipts`] does once it has read what an earlier run left.
    #[cfg(test)]
    fn create(path: &Path) -> std::io::Result<Receipts> {
        let file = open_locked(path)?;
        Receipts::start(path, file)
    }

    /// Empties `file`, locked by [`open_locked`], for this run's receipts.
    fn start(path: &Path, mut file: File) -> std::io::Result<Receipts> {
        file.set_len(0)?;
        file.rewind()?;
        Ok(Receipts {
            path: path.to_owned(),
            inner: Mutex::new(Inner {
                file: Some(file),
                bytes: 0,
                waiting: HashMap::new(),
            }),
        })
    }

    /// Notes a delivery its receiver accepted, before anything else happens to it.
    pub fn note(&self, receipt: Receipt) {
        let mut inner = self.inner.lock().expect("receipts lock");
        let line = receipt.line();
        if inner.bytes + line.len() as u64 > COMPACT_AT {
            let outcome = inner.rewrite();
            self.failed(&mut inner, outcome);
        }
        if let Some(file) = inner.file.as_mut() {
            let outcome = file.write_all(line.as_bytes());
            self.failed(&mut inner, outcome);
        }
        inner.bytes += line.len() as u64;
        inner.waiting.insert(receipt.id, receipt);
    }

    /// Forgets a receipt once its `sent` mark is committed (or has failed: the row then stays
    /// under its claim, and the line stays in the file until the next rewrite).
    pub fn forget(&self, id: i64) {
        let mut inner = self.inner.lock().expect("receipts lock");
        inner.waiting.remove(&id);
        if inner.waiting.is_empty() && inner.bytes >= EMPTY_AT {
            let outcome = inner.rewrite();
            self.failed(&mut inner, outcome);
        }
    }

    /// Receipts waiting for their mark.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.inner.lock().expect("receipts lock").waiting.len()
    }

    fn failed(&self, inner: &mut Inner, outcome: std::io::Result<()>) {
        if let Err(error) = outcome
            && inner.file.take().is_some()
        {
            warn!(path = %self.path.display(), %error, "{WITHOUT_RECEIPTS}");
        }
    }
}

impl Inner {
    /// Empties the file and writes again only the receipts still waiting. A kill in between
    /// loses those lines, and their deliveries are repeated, as without receipts.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.set_len(0)?;
        file.rewind()?;
        let lines: String = self.waiting.values().map(Receipt::line).collect();
        file.write_all(lines.as_bytes())?;
        self.bytes = lines.len() as u64;
        Ok(())
    }
}

impl Db {
    /// For the daemon at its start, before anything is claimed: marks sent the deliveries that
    /// the receipts of a killed run, in `path`, say were accepted, then starts this run's
    /// receipts in the same file, which [`super::Writer::received`] writes to. The file is locked
    /// while the daemon runs; one that another daemon holds, or that cannot be read or written,
    /// gets one warning and the daemon goes on without receipts.
    pub async fn keep_receipts(&self, path: &Path) -> Result<Recovered> {
        let (file, back) = match open_locked(path).and_then(|mut file| {
            let back = read_back(&mut file)?;
            Ok((file, back))
        }) {
            Ok(opened) => opened,
            Err(error) => {
                warn!(path = %path.display(), %error, "{WITHOUT_RECEIPTS}");
                return Ok(Recovered::default());
            }
        };
        let marked = self.mark_received(&back.receipts).await?;
        match Receipts::start(path, file) {
            Ok(receipts) => {
                let _ = self.receipts.set(receipts);
            }
            Err(error) => warn!(path = %path.display(), %error, "{WITHOUT_RECEIPTS}"),
        }
        Ok(Recovered {
            read: back.receipts.len(),
            marked,
            ignored: back.ignored,
        })
    }

    /// Marks sent, in this database, the deliveries that the receipts in `path` say were
    /// accepted, each only under the claim it names, and leaves the file as it is. `copy` reads
    /// the receipts of its source's daemon this way: one that was killed, not stopped, may have
    /// left some, and the copy would otherwise send those deliveries again. A file that cannot
    /// be read gets one warning, and marks nothing.
    pub async fn mark_from_receipts(&self, path: &Path) -> Result<Recovered> {
        let back = match File::open(path) {
            Ok(mut file) => read_back(&mut file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ReadBack::default()),
            Err(e) => Err(e),
        };
        let back = back.unwrap_or_else(|error| {
            warn!(path = %path.display(), %error, "cannot read the delivery receipts; the deliveries they hold may be sent again");
            ReadBack::default()
        });
        Ok(Recovered {
            read: back.receipts.len(),
            marked: self.mark_received(&back.receipts).await?,
            ignored: back.ignored,
        })
    }

    async fn mark_received(&self, receipts: &[Receipt]) -> Result<u64> {
        if receipts.is_empty() {
            return Ok(0);
        }
        match &self.engine {
            super::Engine::Sqlite(lite) => {
                let mut tx = lite.begin_write().await?;
                let marked = super::outbox::mark_received(&mut tx, receipts).await?;
                tx.commit().await?;
                Ok(marked)
            }
            super::Engine::Postgres(pg) => pg.mark_received(receipts).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Receipt = Receipt {
        id: 42,
        lease_until: 1_764_000_060_000,
        sent_at: 1_764_000_001_234,
    };

    #[test]
    fn a_receipt_reads_back_from_its_line_and_nothing_else_does() {
        let line = R.line();
        assert!(line.ends_with('\n'));
        assert!(line.len() <= LONGEST_LINE + 1, "{line:?}");
        assert_eq!(Receipt::parse(line.trim_end()), Some(R));
        let widest = Receipt {
            id: i64::MIN,
            lease_until: i64::MIN,
            sent_at: i64::MIN,
        };
        assert!(widest.line().len() <= LONGEST_LINE + 1);
        // One digit changed, the checksum changed, a field more or less, garbage.
        let body = line.trim_end();
        assert_eq!(Receipt::parse(&body.replacen("42 ", "43 ", 1)), None);
        let (numbers, sum) = body.rsplit_once(' ').unwrap();
        let other = if sum.starts_with('0') { "1" } else { "0" };
        assert_eq!(
            Receipt::parse(&format!("{numbers} {other}{}", &sum[1..])),
            None
        );
        let four = format!("1 {numbers}");
        assert_eq!(Receipt::parse(&format!("{four} {}", check(&four))), None);
        let two = "42 1764000060000";
        assert_eq!(Receipt::parse(&format!("{two} {}", check(two))), None);
        assert_eq!(Receipt::parse(""), None);
        assert_eq!(Receipt::parse("\0\0\0\0"), None);
    }

    #[test]
    fn only_whole_checked_lines_are_read() {
        let second = Receipt { id: 7, ..R };
        let mut text = R.line().into_bytes();
        text.extend_from_slice(b"\0\0\0\0\0\0\n");
        text.extend_from_slice(second.line().as_bytes());
        text.extend_from_slice(&[b'9'; 300]);
        text.push(b'\n');
        // The last line, cut short while written.
        text.extend_from_slice(&R.line().as_bytes()[..20]);
        let back = read_lines(&text);
        assert_eq!(back.receipts, vec![R, second]);
        assert_eq!(back.ignored, 3);
        assert_eq!(read_lines(b""), ReadBack::default());
    }

    #[test]
    fn the_file_holds_the_receipts_still_waiting_and_is_rewritten_with_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shipwatch.db.sent");
        let receipts = Receipts::create(&path).unwrap();
        let read = || read_lines(&std::fs::read(&path).unwrap());
        receipts.note(R);
        receipts.note(Receipt { id: 43, ..R });
        assert_eq!(read().receipts.len(), 2);
        assert_eq!(receipts.waiting(), 2);
        receipts.forget(42);
        // Forgotten, but still in the file until it is rewritten: harmless, its row is sent.
        assert_eq!(read().receipts.len(), 2);
        assert_eq!(receipts.waiting(), 1);
        // Enough lines to pass the rewrite size, each forgotten at once but the first. A receipt
        // costs one appended line: the file is rewritten only once it holds 64 KiB, not before.
        let size = || std::fs::metadata(&path).unwrap().len();
        let mut largest = 0;
        for id in 1_000..3_000 {
            receipts.note(Receipt { id, ..R });
            receipts.forget(id);
            largest = largest.max(size());
        }
        assert!(
            (60 * 1024..=64 * 1024).contains(&largest),
            "the file held at most {largest} bytes before it was rewritten"
        );
        let back = read();
        assert!(back.receipts.contains(&Receipt { id: 43, ..R }));
        assert!(
            (back.receipts.len() as u64) * 40 < COMPACT_AT,
            "rewritten: {} lines",
            back.receipts.len()
        );
        assert_eq!(back.ignored, 0);
        // Once nothing waits and the file holds 4 KiB or more, it is emptied; a smaller one is
        // left as it is.
        receipts.forget(43);
        assert_eq!(receipts.waiting(), 0);
        assert_eq!(read(), ReadBack::default(), "emptied");
        for id in 4_000..4_030 {
            receipts.note(Receipt { id, ..R });
        }
        for id in 4_000..4_030 {
            receipts.forget(id);
        }
        assert_eq!(read().receipts.len(), 30, "{} bytes left", size());
        for id in 5_000..5_200 {
            receipts.note(Receipt { id, ..R });
        }
        for id in 5_000..5_200 {
            receipts.forget(id);
        }
        assert_eq!(read(), ReadBack::default());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_file_that_cannot_be_written_is_left_and_nothing_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shipwatch.db.sent");
        let receipts = Receipts::create(&path).unwrap();
        // Another handle read-only in its place: every write fails.
        receipts.inner.lock().unwrap().file = Some(File::open(&path).unwrap());
        receipts.note(R);
        assert!(receipts.inner.lock().unwrap().file.is_none());
        receipts.note(Receipt { id: 43, ..R });
        receipts.forget(42);
        assert_eq!(receipts.waiting(), 1);
    }

    #[test]
    fn a_file_another_run_holds_is_refused_until_that_run_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postgres.sent");
        let first = Receipts::create(&path).unwrap();
        first.note(R);
        let error = Receipts::create(&path).unwrap_err();
        assert!(
            error.to_string().contains("another running daemon"),
            "{error}"
        );
        assert_eq!(
            read_lines(&std::fs::read(&path).unwrap()).receipts,
            vec![R],
            "the refused one emptied nothing"
        );
        drop(first);
        Receipts::create(&path).unwrap();
    }
}
