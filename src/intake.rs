//! Where shipments come from: `add` and `import` check a new shipment here, against the config
//! and what its provider needs, before the database sees it. (Rows inserted with SQL are checked
//! by the dispatcher when it picks them up.)

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::clock::Millis;
use crate::config::Config;
use crate::domain::{Email, InvalidContact, InvalidPhone, Phone, Tier, UnknownTier};
use crate::providers::{Provider, TrackRequest, UnfitRequest};
use crate::storage::{Db, NewShipment, ShipmentRow, StorageError};

/// The columns of the `shipments` table a shop may fill in.
pub const COLUMNS: [&str; 8] = [
    "order_id",
    "provider",
    "tracking_no",
    "carrier",
    "tier",
    "phone",
    "email",
    "sub_orders",
];

/// A shipment as given by a person or a file, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub order_id: String,
    pub provider: Option<String>,
    pub tracking_no: Option<String>,
    pub carrier: Option<String>,
    pub tier: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub sub_orders: Option<String>,
}

/// Why `add` or `import` refuses a shipment, in one line that says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the order id is empty")]
    EmptyOrderId,
    #[error("unknown provider {name:?}: configured providers are {known}")]
    UnknownProvider { name: String, known: String },
    /// No provider given, and more than one configured.
    #[error("which provider? give one (configured: {known})")]
    WhichProvider { known: String },
    /// No provider given, and no config to say which there are.
    #[error("which provider? give one")]
    NoProvider,
    #[error(transparent)]
    Tier(#[from] UnknownTier),
    #[error(transparent)]
    Phone(#[from] InvalidPhone),
    /// Shown whole, unlike a stored row's: the person who typed it is reading.
    #[error("email {0:?} is not an email address (like name@example.com)")]
    Email(String),
    /// What the shipment's provider needs and it lacks.
    #[error(transparent)]
    Provider(#[from] UnfitRequest),
}

impl IntakeError {
    /// The CSV column the refusal is about, when it can be told: a provider names the order id
    /// it cannot use by quoting it.
    fn column(&self, order_id: &str) -> Option<&'static str> {
        match self {
            IntakeError::EmptyOrderId => Some("order_id"),
            IntakeError::UnknownProvider { .. }
            | IntakeError::WhichProvider { .. }
            | IntakeError::NoProvider => Some("provider"),
            IntakeError::Tier(_) => Some("tier"),
            IntakeError::Phone(_) => Some("phone"),
            IntakeError::Email(_) => Some("email"),
            IntakeError::Provider(UnfitRequest(message)) => message
                .contains(&format!("{:?}", order_id.trim()))
                .then_some("order_id"),
        }
    }
}

/// Why a CSV file cannot be imported: the file, the line and, where it can be told, the column,
/// then what is wrong, in one line. Only a message: `import` prints it, nothing decides on it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CsvError(String);

/// Why a row another program inserted cannot be polled as it stands: one line that names the
/// column and never shows a phone number or an email address whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredRowError {
    #[error(transparent)]
    Contact(#[from] InvalidContact),
    #[error(
        "{column} = {at} is before 2000: times are milliseconds since 1970-01-01 UTC, not seconds"
    )]
    Seconds { column: &'static str, at: Millis },
    #[error(
        "{column} = {at} ({}) is in the future: times are milliseconds since 1970-01-01 UTC",
        shown_time(*.at)
    )]
    Future { column: &'static str, at: Millis },
}

/// Checks new shipments against the configured providers.
pub struct Intake {
    /// `None` when there is no config: provider names cannot be checked then.
    providers: Option<BTreeMap<String, Arc<dyn Provider>>>,
}

impl Intake {
    pub fn new(config: Option<&Config>) -> anyhow::Result<Intake> {
        let providers = match config {
            None => None,
            Some(config) => {
                let http = crate::upstream::client(&config.http)?;
                Some(crate::upstream::adapters(config, &http))
            }
        };
        Ok(Intake { providers })
    }

    fn known(&self) -> String {
        match &self.providers {
            Some(p) if !p.is_empty() => p.keys().cloned().collect::<Vec<_>>().join(", "),
            _ => "none".to_owned(),
        }
    }

    /// A checked shipment, or one line saying what is wrong and how to fix it.
    pub fn shipment(&self, fields: Fields) -> Result<NewShipment, IntakeError> {
        let order_id = fields.order_id.trim().to_owned();
        if order_id.is_empty() {
            return Err(IntakeError::EmptyOrderId);
        }
        let provider = match (non_empty(fields.provider), &self.providers) {
            (Some(name), Some(providers)) if !providers.contains_key(&name) => {
                return Err(IntakeError::UnknownProvider {
                    name,
                    known: self.known(),
                });
            }
            (Some(name), _) => name,
            (None, Some(providers)) if providers.len() == 1 => {
                providers.keys().next().expect("one").clone()
            }
            (None, Some(_)) => {
                return Err(IntakeError::WhichProvider {
                    known: self.known(),
                });
            }
            (None, None) => return Err(IntakeError::NoProvider),
        };
        let tier = match non_empty(fields.tier) {
            None => Tier::Normal,
            Some(tier) => tier.parse::<Tier>()?,
        };
        let phone = non_empty(fields.phone)
            .map(|p| Phone::parse(&p))
            .transpose()?;
        let email = non_empty(fields.email)
            .map(|email| Email::parse(&email).map_err(|_| IntakeError::Email(email)))
            .transpose()?;
        let new = NewShipment {
            order_id,
            provider,
            tracking_no: non_empty(fields.tracking_no),
            carrier: non_empty(fields.carrier),
            tier,
            phone,
            email,
            sub_orders: non_empty(fields.sub_orders).map(|ids| ids.replace(' ', "")),
        };
        if let Some(adapter) = self.providers.as_ref().and_then(|p| p.get(&new.provider)) {
            adapter.check(&TrackRequest {
                order_id: new.order_id.clone(),
                tracking_no: new.tracking_no.clone(),
                carrier: new.carrier.clone(),
                phone: new.phone.clone(),
                sub_orders: new.sub_orders.clone(),
                created_at: 0,
            })?;
        }
        Ok(new)
    }

    /// Reads and checks a CSV file whose header row names `shipments` columns. Every row must
    /// be good: the first bad one is reported with its line and, where it can be told, its column.
    /// Each shipment comes with the line it was read from. The whole file is held in memory:
    /// `import` reads with [`Intake::csv_rows`] instead.
    pub fn read_csv(&self, path: &Path) -> Result<Vec<(u64, NewShipment)>, CsvError> {
        let shown = path.display();
        let file = std::fs::File::open(path).map_err(|e| {
            CsvError(format!(
                "cannot read {shown}: {}",
                crate::config::io_reason(&e)
            ))
        })?;
        self.read_csv_from(file, &shown.to_string())
    }

    /// [`Intake::read_csv`] on any reader; `shown` names it in messages.
    pub fn read_csv_from(
        &self,
        input: impl std::io::Read,
        shown: &str,
    ) -> Result<Vec<(u64, NewShipment)>, CsvError> {
        let mut rows = Vec::new();
        let mut seen: HashMap<String, u64> = HashMap::new();
        for row in self.csv_rows(input, shown)? {
            let (line, new) = row?;
            if let Some(first) = seen.insert(new.order_id.clone(), line) {
                return Err(CsvError(format!(
                    "{shown} line {line}, column order_id: order {} is already on line {first}",
                    new.order_id
                )));
            }
            rows.push((line, new));
        }
        Ok(rows)
    }

    /// The shipments of a CSV file, read and checked one row at a time, so that memory holds one
    /// row whatever the file's size. The header is read and checked here. A field over
    /// [`MAX_FIELD_BYTES`] is refused with its line, and never shown. Repeated order ids are
    /// not looked for: the database refuses them.
    pub fn csv_rows<R: std::io::Read>(
        &self,
        input: R,
        shown: &str,
    ) -> Result<CsvRows<'_, R>, CsvError> {
        let mut rows = CsvRows {
            intake: self,
            shown: shown.to_owned(),
            input: std::io::BufReader::with_capacity(READ_BLOCK, input),
            parser: csv_core::Reader::new(),
            field: vec![0; MAX_FIELD_BYTES + 1],
            columns: Vec::new(),
            done: false,
        };
        let (_, headers) = match rows.record(COLUMNS.len())? {
            Some(record) => record,
            None => (1, Vec::new()),
        };
        let headers = match headers.as_slice() {
            // An empty file, or an empty first line.
            [only] if only.is_empty() => &[][..],
            all => all,
        };
        for name in headers {
            let Some(&column) = COLUMNS.iter().find(|c| *c == name) else {
                return Err(CsvError(format!(
                    "{shown}: unknown column {name:?} in the header; the columns are {}",
                    COLUMNS.join(", ")
                )));
            };
            if rows.columns.contains(&column) {
                return Err(CsvError(format!(
                    "{shown}: column {name:?} appears twice in the header"
                )));
            }
            rows.columns.push(column);
        }
        if !rows.columns.contains(&"order_id") {
            return Err(CsvError(format!(
                "{shown}: the header has no order_id column"
            )));
        }
        Ok(rows)
    }

    /// The first line of a CSV file holding `order_id`, for saying where a repeated order was
    /// first seen. Reads the file again, as [`Intake::csv_rows`] does.
    pub fn line_of(&self, path: &Path, order_id: &str) -> Option<u64> {
        let file = std::fs::File::open(path).ok()?;
        self.csv_rows(file, "")
            .ok()?
            .map_while(Result::ok)
            .find(|(_, new)| new.order_id == order_id)
            .map(|(line, _)| line)
    }
}

/// Rows inserted per batch by [`Intake::import`]: memory holds one batch, whatever the file's
/// size.
const IMPORT_BATCH: usize = 1000;

/// Why an import added nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file, or one of its rows, is refused: the reason names the line.
    #[error("{0}; nothing was imported")]
    Refused(#[from] CsvError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Intake {
    /// Adds the shipments of the CSV file `file`, read from `input`, all of them or none: one
    /// transaction for the whole file, however many batches. Returns how many were added.
    pub async fn import<R: std::io::Read>(
        &self,
        db: &Db,
        file: &Path,
        input: R,
        now: Millis,
    ) -> Result<usize, ImportError> {
        let shown = file.display().to_string();
        let mut rows = self.csv_rows(input, &shown)?;
        let mut import = db.begin_import(now).await?;
        let mut batch = Vec::with_capacity(IMPORT_BATCH);
        loop {
            batch.clear();
            for row in rows.by_ref().take(IMPORT_BATCH) {
                batch.push(row?);
            }
            if batch.is_empty() {
                break;
            }
            let shipments: Vec<_> = batch.iter().map(|(_, new)| new.clone()).collect();
            if let Err((i, e)) = import.add(&shipments).await {
                let (line, new) = &batch[i];
                drop(import);
                return Err(ImportError::Refused(
                    self.import_refusal(db, file, *line, new, e).await,
                ));
            }
        }
        Ok(import.commit().await?)
    }

    /// Why the database refused line `line` of an import, in one line. A repeated order id says
    /// where it was first: earlier in the file, or tracked already.
    async fn import_refusal(
        &self,
        db: &Db,
        file: &Path,
        line: u64,
        new: &NewShipment,
        error: StorageError,
    ) -> CsvError {
        let shown = file.display();
        if !matches!(error, StorageError::Duplicate(_)) {
            return CsvError(format!("{shown} line {line}: {error}"));
        }
        // The import's own rows are not committed: what the database holds was there before.
        if db.shipment(&new.order_id).await.is_ok() {
            return CsvError(format!("{shown} line {line}: {error}"));
        }
        CsvError(
            match self.line_of(file, &new.order_id).filter(|&l| l < line) {
                Some(first) => format!(
                    "{shown} line {line}, column order_id: order {} is already on line {first}",
                    new.order_id
                ),
                // A file that cannot be read twice (a pipe).
                None => format!(
                    "{shown} line {line}, column order_id: order {} is already on an earlier line",
                    new.order_id
                ),
            },
        )
    }
}

/// The longest field `import` takes, header included. Real values are short (the longest, a
/// list of sub-order ids, a few hundred bytes); a longer field is a broken or wrong file, and
/// refusing it keeps memory bounded whatever the file holds.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// How much of a CSV file is read at a time.
const READ_BLOCK: usize = 64 * 1024;

/// The rows of a CSV file as checked shipments, each with its line: see [`Intake::csv_rows`].
/// The first error ends the iteration.
pub struct CsvRows<'a, R> {
    intake: &'a Intake,
    shown: String,
    input: std::io::BufReader<R>,
    parser: csv_core::Reader,
    /// One field at a time; one byte longer than the limit, so that filling it means too long:
    /// csv-core's `Reader::read_field` answers `OutputFull` when a field does not fit the buffer
    /// it is given (docs.rs/csv-core/0.1/csv_core/struct.Reader.html). It also skips a UTF-8 BOM
    /// at the start, as spreadsheet programs write.
    field: Vec<u8>,
    /// The header's columns, in order.
    columns: Vec<&'static str>,
    done: bool,
}

impl<R: std::io::Read> CsvRows<'_, R> {
    /// The next record and the line it starts on, its fields trimmed; `None` at the end of the
    /// file. At most `max_fields` fields are taken: a record with more is an error, found without
    /// reading the rest of it.
    fn record(&mut self, max_fields: usize) -> Result<Option<(u64, Vec<String>)>, CsvError> {
        use csv_core::ReadFieldResult;
        use std::io::BufRead;
        let shown = &self.shown;
        let line = self.parser.line();
        let mut fields = Vec::new();
        let mut len = 0;
        loop {
            let input = self.input.fill_buf().map_err(|e| {
                CsvError(format!(
                    "cannot read {shown}: {}",
                    crate::config::io_reason(&e)
                ))
            })?;
            let (result, read, written) = self.parser.read_field(input, &mut self.field[len..]);
            self.input.consume(read);
            len += written;
            match result {
                ReadFieldResult::InputEmpty => {}
                ReadFieldResult::OutputFull => {
                    return Err(CsvError(format!(
                        "{shown} line {line}: a field is longer than {} KiB (is this the right file?)",
                        MAX_FIELD_BYTES / 1024
                    )));
                }
                ReadFieldResult::Field { record_end } => {
                    if fields.len() == max_fields {
                        return Err(CsvError(if line == 1 {
                            format!(
                                "{shown}: the header has more than {max_fields} columns; the columns are {}",
                                COLUMNS.join(", ")
                            )
                        } else {
                            format!(
                                "{shown} line {line}: more fields than the header's {}",
                                self.columns.len()
                            )
                        }));
                    }
                    let text = std::str::from_utf8(&self.field[..len]).map_err(|_| {
                        CsvError(format!(
                            "{shown} line {line}: not UTF-8 text; save the file as UTF-8"
                        ))
                    })?;
                    fields.push(text.trim().to_owned());
                    len = 0;
                    if record_end {
                        return Ok(Some((line, fields)));
                    }
                }
                ReadFieldResult::End => return Ok(None),
            }
        }
    }

    fn shipment(&mut self) -> Result<Option<(u64, NewShipment)>, CsvError> {
        let Some((line, record)) = self.record(self.columns.len())? else {
            return Ok(None);
        };
        let shown = &self.shown;
        if record.len() != self.columns.len() {
            return Err(CsvError(format!(
                "{shown} line {line}: {} fields where the header has {}",
                record.len(),
                self.columns.len()
            )));
        }
        let get = |column: &str| {
            self.columns
                .iter()
                .position(|c| *c == column)
                .map(|i| record[i].clone())
        };
        let fields = Fields {
            order_id: get("order_id").unwrap_or_default(),
            provider: get("provider"),
            tracking_no: get("tracking_no"),
            carrier: get("carrier"),
            tier: get("tier"),
            phone: get("phone"),
            email: get("email"),
            sub_orders: get("sub_orders"),
        };
        let order_id = fields.order_id.clone();
        let new =
            self.intake
                .shipment(fields)
                .map_err(|reason| match reason.column(&order_id) {
                    Some(column) => {
                        CsvError(format!("{shown} line {line}, column {column}: {reason}"))
                    }
                    None => CsvError(format!("{shown} line {line}: {reason}")),
                })?;
        Ok(Some((line, new)))
    }
}

impl<R: std::io::Read> Iterator for CsvRows<'_, R> {
    type Item = Result<(u64, NewShipment), CsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.shipment().transpose();
        self.done = !matches!(next, Some(Ok(_)));
        next
    }
}

/// 2000-01-01T00:00:00Z: no parcel shipwatch tracks began earlier, and a time before it is
/// almost always seconds written where milliseconds belong.
const EARLIEST: Millis = 946_684_800_000;

/// How far ahead of our clock the start of tracking may be (another machine's clock): a day.
/// Further is a wrong unit or a typo, and would keep the shipment from ever expiring.
const AHEAD_SLACK: Millis = 86_400_000;

/// Checks what `add` and `import` check, for a row some other program inserted with SQL: the
/// contact details, and when tracking began. The reason is one line that names the
/// column and never shows a phone number or an email address whole.
pub fn check_stored(row: &ShipmentRow, now: Millis) -> Result<(), StoredRowError> {
    // Parsed when the row was read; what did not parse is kept apart for this.
    if let Some(invalid) = &row.invalid_contact {
        return Err(invalid.clone().into());
    }
    // Only the start of tracking: the other times are the daemon's own, or the carrier's, whose
    // clock is not the shop's mistake.
    check_time("created_at", row.created_at, now)
}

fn check_time(column: &'static str, at: Millis, now: Millis) -> Result<(), StoredRowError> {
    if at < EARLIEST {
        return Err(StoredRowError::Seconds { column, at });
    }
    if at > now.saturating_add(AHEAD_SLACK) {
        return Err(StoredRowError::Future { column, at });
    }
    Ok(())
}

/// A database time for a message about the raw value: RFC 3339 in UTC, like the value itself.
pub fn shown_time(at: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(at).map_or_else(
        || "not a date".to_owned(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intake() -> Intake {
        let config = Config::parse(
            "[providers.taobao]\nkind = \"taobao\"\napp_key = \"1\"\napp_secret = \"s\"\nsession = \"s\"",
            None,
            Path::new("."),
        )
        .unwrap();
        Intake::new(Some(&config)).unwrap()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn a_good_file_reads_whole() {
        let file = write("order_id,tier,phone\n123,high,+86 138-1234-5678\n124,,\n");
        let rows = intake().read_csv(file.path()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, 2);
        assert_eq!(rows[0].1.provider, "taobao");
        assert_eq!(rows[0].1.tier, Tier::High);
        assert_eq!(rows[1].1.tier, Tier::Normal);
        assert_eq!(
            rows[0].1.phone.as_ref().map(Phone::as_str),
            Some("13812345678")
        );
        assert_eq!(rows[1].1.phone, None);
    }

    #[test]
    fn a_bad_line_is_named_with_its_column() {
        let mut text = "order_id,provider,tier\n".to_owned();
        for i in 0..5 {
            text.push_str(&format!("10{i},taobao,high\n"));
        }
        text.push_str("106,taobao,urgent\n");
        let err = intake()
            .read_csv(write(&text).path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 7, column tier: unknown tier \"urgent\""),
            "{err}"
        );

        let err = intake()
            .read_csv(write("order_id,provider\nabc,taobao\n").path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2, column order_id"), "{err}");
        assert!(err.contains("numeric"), "{err}");

        let err = intake()
            .read_csv(write("order_id,provider\n1,dhl\n").path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2, column provider: unknown provider \"dhl\""),
            "{err}"
        );

        let err = intake()
            .read_csv(write("order_id\n1\n2\n1\n").path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 4, column order_id: order 1 is already on line 2"),
            "{err}"
        );
    }

    #[test]
    fn phones_and_emails_are_checked() {
        let err = intake()
            .read_csv(write("order_id,phone\n1,12345\n").path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2, column phone"), "{err}");
        let err = intake()
            .read_csv(write("order_id,email\n1,not-an-address\n").path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2, column email"), "{err}");
    }

    fn stored(created_at: Millis) -> ShipmentRow {
        ShipmentRow {
            id: 1,
            order_id: "123".into(),
            provider: "taobao".into(),
            tracking_no: None,
            carrier: None,
            tier: Tier::Normal,
            phone: None,
            email: None,
            status: crate::domain::Status::Pending,
            raw_status: None,
            active: true,
            error: None,
            transitions: 0,
            next_poll_at: created_at,
            last_polled_at: None,
            last_event_at: None,
            status_changed_at: None,
            created_at,
            sub_orders: None,
            type_error: None,
            invalid_contact: None,
        }
    }

    const NOW: Millis = 1_764_300_000_000;

    #[test]
    fn stored_rows_are_judged_like_added_ones_without_showing_contacts() {
        assert_eq!(check_stored(&stored(NOW), NOW), Ok(()));
        let good = ShipmentRow {
            phone: Some(Phone::parse("+86 138-1234-5678").unwrap()),
            email: Some(Email::parse("zhang@shop.example").unwrap()),
            ..stored(NOW - 1)
        };
        assert_eq!(check_stored(&good, NOW), Ok(()));

        // What the reader keeps apart when a contact column does not parse (storage's tests
        // read such rows from a real database).
        let bad_phone = ShipmentRow {
            invalid_contact: Some(Phone::parse("138-1234-567").unwrap_err().into()),
            ..stored(NOW)
        };
        let err = check_stored(&bad_phone, NOW).unwrap_err().to_string();
        assert!(err.contains("not a mainland mobile"), "{err}");
        assert!(!err.contains("138-1234-567"), "{err}");
        let bad_email = ShipmentRow {
            invalid_contact: Some(Email::parse("zhang.wei at shop").unwrap_err().into()),
            ..stored(NOW)
        };
        let err = check_stored(&bad_email, NOW).unwrap_err().to_string();
        assert!(err.contains("not an email address"), "{err}");
        assert!(!err.contains("zhang.wei"), "{err}");
    }

    #[test]
    fn a_start_of_tracking_in_the_future_or_in_seconds_is_refused() {
        let err = check_stored(&stored(253_402_300_799_000), NOW)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "created_at = 253402300799000 (9999-12-31T23:59:59Z) is in the future: times are milliseconds since 1970-01-01 UTC"
        );
        let err = check_stored(&stored(i64::MAX), NOW)
            .unwrap_err()
            .to_string();
        assert!(err.contains("(not a date) is in the future"), "{err}");
        let err = check_stored(&stored(NOW / 1000), NOW)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("before 2000") && err.contains("not seconds"),
            "{err}"
        );
        // Another machine's clock a few hours ahead is not a mistake.
        assert_eq!(check_stored(&stored(NOW + 3_600_000), NOW), Ok(()));
    }

    #[test]
    fn csv_fields_are_bounded_and_never_echoed() {
        let at_limit = "y".repeat(MAX_FIELD_BYTES);
        let over = "x".repeat(MAX_FIELD_BYTES + 1);
        // (file, Ok(rows) or Err(what the one-line error holds))
        let table: Vec<(String, Result<usize, &str>)> = vec![
            (format!("order_id,carrier\n1,{at_limit}\n"), Ok(1)),
            (
                format!("order_id,carrier\n1,{over}\n"),
                Err("line 2: a field is longer than 64 KiB"),
            ),
            (
                format!("order_id,carrier\n1,a\n2,\"{over}\"\n"),
                Err("line 3: a field is longer than 64 KiB"),
            ),
            (
                format!("order_id,{over}\n1,a\n"),
                Err("line 1: a field is longer than 64 KiB"),
            ),
            (
                "order_id,tier\n1,high,extra,more\n".to_owned(),
                Err("line 2: more fields than the header's 2"),
            ),
            (
                "order_id,tier\n1\n".to_owned(),
                Err("line 2: 1 fields where the header has 2"),
            ),
            (
                format!("{}\n", ["order_id"; 9].join(",")),
                Err("the header has more than 8 columns"),
            ),
            ("\u{feff}order_id,tier\n1,high\n".to_owned(), Ok(1)),
            ("order_id,carrier\n1,\"a,\nb\"\n2,c\n".to_owned(), Ok(2)),
            ("order_id\n\n1\n\n2\n".to_owned(), Ok(2)),
            (String::new(), Err("the header has no order_id column")),
        ];
        for (text, want) in table {
            let got = intake().read_csv_from(text.as_bytes(), "f.csv");
            match (&got, want) {
                (Ok(rows), Ok(n)) => assert_eq!(rows.len(), n, "{:.80}", text),
                (Err(e), Err(part)) => {
                    let e = e.to_string();
                    assert!(e.contains(part), "{e:.300}");
                    assert!(e.len() < 300 && !e.contains('\n'), "{e:.300}");
                }
                _ => panic!("{:.80}: {got:.300?}", text),
            }
        }
        let bad = b"order_id,carrier\n1,\xff\xfe\n";
        let err = intake()
            .read_csv_from(&bad[..], "f.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2: not UTF-8"), "{err}");
    }

    #[test]
    fn an_unknown_column_is_refused() {
        let err = intake()
            .read_csv(write("order_id,colour\n1,red\n").path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown column \"colour\""), "{err}");
        assert!(!err.contains('\n'));
    }
}
