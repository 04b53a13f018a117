//! Where shipments come from: `add` and `import` check a new shipment here, against the config
//! and what its provider needs, before the database sees it. (Rows inserted with SQL are checked
//! by the dispatcher when it picks them up.)

mod export;
mod text;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

pub use export::{UnknownCarrier, carrier_code, column_of};
pub use text::{EncodingChoice, SniffError, TextEncoding, choose};

use crate::clock::Millis;
use crate::config::Config;
use crate::domain::{
    Email, InvalidContact, InvalidOpenId, InvalidPhone, OpenId, Phone, Tier, UnknownTier,
};
use crate::providers::{Provider, TrackRequest, UnfitRequest};
use crate::storage::{Db, NewShipment, ShipmentRow, StorageError};

/// The columns of the `shipments` table a shop may fill in.
pub const COLUMNS: [&str; 9] = [
    "order_id",
    "provider",
    "tracking_no",
    "carrier",
    "tier",
    "phone",
    "email",
    "openid",
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
    /// The buyer's OpenID in the shop's WeChat official account.
    pub openid: Option<String>,
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
    #[error(transparent)]
    OpenId(#[from] InvalidOpenId),
    /// What the shipment's provider needs and it lacks.
    #[error(transparent)]
    Provider(#[from] UnfitRequest),
}

impl IntakeError {
    /// The CSV column the refusal is about, when it can be told: a provider names the order id
    /// it cannot use by quoting it.
    pub fn column(&self, order_id: &str) -> Option<&'static str> {
        match self {
            IntakeError::EmptyOrderId => Some("order_id"),
            IntakeError::UnknownProvider { .. }
            | IntakeError::WhichProvider { .. }
            | IntakeError::NoProvider => Some("provider"),
            IntakeError::Tier(_) => Some("tier"),
            IntakeError::Phone(_) => Some("phone"),
            IntakeError::Email(_) => Some("email"),
            IntakeError::OpenId(_) => Some("openid"),
            IntakeError::Provider(UnfitRequest { message, .. }) => message
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

/// How `import` reads a CSV file.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    pub encoding: TextEncoding,
    /// What `--encoding` said: a decoding error's hint depends on whether the encoding was
    /// chosen for the file or by the person.
    pub choice: EncodingChoice,
    /// The provider of rows that name none (`--provider`): a seller centre's export has no
    /// provider column.
    pub provider: Option<String>,
}

impl CsvOptions {
    /// UTF-8, as a file of shipwatch's own columns is written.
    pub fn utf8() -> CsvOptions {
        CsvOptions {
            encoding: TextEncoding::Utf8,
            choice: EncodingChoice::Auto,
            provider: None,
        }
    }
}

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
        let openid = non_empty(fields.openid)
            .map(|openid| OpenId::parse(&openid))
            .transpose()?;
        let new = NewShipment {
            order_id,
            provider,
            tracking_no: non_empty(fields.tracking_no),
            carrier: non_empty(fields.carrier),
            tier,
            phone,
            email,
            openid,
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

    /// Refuses a `--provider` that is not configured, before any row is read.
    pub fn check_provider(&self, name: &str) -> Result<(), IntakeError> {
        match &self.providers {
            Some(providers) if !providers.contains_key(name) => Err(IntakeError::UnknownProvider {
                name: name.to_owned(),
                known: self.known(),
            }),
            _ => Ok(()),
        }
    }

    /// Reads and checks a CSV file whose header row names `shipments` columns. Every row must
    /// be good: the first bad one is reported with its line and, where it can be told, its column.
    /// Each shipment comes with the line it was read from. The whole file is held in memory:
    /// `import` reads with [`Intake::csv_rows`] instead.
    pub fn read_csv(&self, path: &Path) -> Result<Vec<(u64, NewShipment)>, CsvError> {
        let shown = path.display();
        let cannot_read = |e: std::io::Error| {
            CsvError(format!(
                "cannot read {shown}: {}",
                crate::config::io_reason(&e)
            ))
        };
        let data = std::fs::read(path).map_err(cannot_read)?;
        self.read_csv_from(&data, &shown.to_string())
    }

    /// [`Intake::read_csv`] on the bytes of a file, in UTF-8 or GBK (told apart as `import`
    /// does by default); `shown` names it in messages.
    pub fn read_csv_from(
        &self,
        data: &[u8],
        shown: &str,
    ) -> Result<Vec<(u64, NewShipment)>, CsvError> {
        let encoding = match text::is_utf8(data) {
            Ok(false) => TextEncoding::Gb18030,
            _ => TextEncoding::Utf8,
        };
        let options = CsvOptions {
            encoding,
            ..CsvOptions::utf8()
        };
        let mut rows = Vec::new();
        let mut seen: HashMap<String, u64> = HashMap::new();
        for row in self.csv_rows(data, shown, &options)? {
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
    ///
    /// A header of shipwatch's own column names must name only those (a typo is caught); a
    /// header with a seller centre's names (订单编号, 物流单号…) is an export, whose other
    /// columns are left out: [`CsvRows::ignored`] lists them.
    pub fn csv_rows<R: std::io::Read>(
        &self,
        input: R,
        shown: &str,
        options: &CsvOptions,
    ) -> Result<CsvRows<'_, R>, CsvError> {
        let mut rows = CsvRows {
            intake: self,
            shown: shown.to_owned(),
            options: options.clone(),
            input: std::io::BufReader::with_capacity(
                READ_BLOCK,
                text::Decoded::new(input, options.encoding),
            ),
            parser: csv_core::Reader::new(),
            position: text::Position::default(),
            field: vec![0; MAX_FIELD_BYTES + 1],
            columns: Vec::new(),
            ignored: Vec::new(),
            export: false,
            masked: Default::default(),
            done: false,
        };
        let headers = match rows.record(MAX_COLUMNS)? {
            Some(record) if record.overflow => {
                return Err(CsvError(format!(
                    "{shown}: the header has more than {MAX_COLUMNS} columns; the columns are {}",
                    COLUMNS.join(", ")
                )));
            }
            Some(record) => record.fields,
            None => Vec::new(),
        };
        let headers = match headers.as_slice() {
            // An empty file, or an empty first line.
            [only] if only.is_empty() => &[][..],
            all => all,
        };
        let export = headers.iter().any(|h| export::is_alias(h));
        rows.export = export;
        for name in headers {
            let column = match export::column_of(name) {
                Some(column) => column,
                None if export => {
                    rows.ignored.push(name.clone());
                    rows.columns.push(None);
                    continue;
                }
                None => {
                    return Err(CsvError(format!(
                        "{shown}: unknown column {name:?} in the header; the columns are {}",
                        COLUMNS.join(", ")
                    )));
                }
            };
            if let Some(j) = rows.columns.iter().position(|c| *c == Some(column)) {
                let first = &headers[j];
                return Err(CsvError(if first == name {
                    format!("{shown}: column {name:?} appears twice in the header")
                } else {
                    format!(
                        "{shown}: columns {first:?} and {name:?} are both {column}; keep one of them"
                    )
                }));
            }
            rows.columns.push(Some(column));
        }
        if !rows.columns.contains(&Some("order_id")) {
            return Err(CsvError(format!(
                "{shown}: the header has no order_id column"
            )));
        }
        Ok(rows)
    }

    /// The first line of a CSV file holding `order_id`, for saying where a repeated order was
    /// first seen. Reads the file again, as [`Intake::csv_rows`] does.
    pub fn line_of(&self, path: &Path, order_id: &str, options: &CsvOptions) -> Option<u64> {
        let file = std::fs::File::open(path).ok()?;
        self.csv_rows(file, "", options)
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

/// What an import would do, found without writing anything: see [`Intake::dry_run`].
#[derive(Debug, Default)]
pub struct DryRun {
    /// Rows that would be added.
    pub add: u64,
    /// Rows whose order is tracked already, or repeated in the file: the import would refuse
    /// the file for them.
    pub skip: u64,
    /// Rows that are refused.
    pub reject: u64,
    /// Why, for the first [`DRY_RUN_SHOWN`] skipped or rejected rows, one line each.
    pub reasons: Vec<String>,
    /// What stopped the reading before the end of the file (a broken file, not a bad row).
    pub stopped: Option<CsvError>,
}

impl DryRun {
    /// Whether `import` would take the file as it is.
    pub fn would_import(&self) -> bool {
        self.skip == 0 && self.reject == 0 && self.stopped.is_none()
    }

    fn note(&mut self, reason: String) {
        if self.reasons.len() < DRY_RUN_SHOWN {
            self.reasons.push(reason);
        }
    }
}

/// How many reasons a dry run keeps: enough to see what is wrong with a file, and a screenful.
pub const DRY_RUN_SHOWN: usize = 20;

impl Intake {
    /// Adds the shipments of the CSV file `file`, its `rows` read with [`Intake::csv_rows`],
    /// all of them or none: one transaction for the whole file, however many batches. Returns
    /// how many were added.
    pub async fn import<R: std::io::Read>(
        &self,
        db: &Db,
        file: &Path,
        mut rows: CsvRows<'_, R>,
        now: Millis,
    ) -> Result<usize, ImportError> {
        let options = rows.options.clone();
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
                    self.import_refusal(db, file, *line, new, e, &options).await,
                ));
            }
        }
        Ok(import.commit().await?)
    }

    /// Reads and checks the whole file (its `rows` read with [`Intake::csv_rows`]) as
    /// [`Intake::import`] would, and looks each order up in
    /// the database, writing nothing. Goes on past a bad row, to report them all; stops at what
    /// breaks the file itself (bytes that are not text, a quote never closed, a field too
    /// long). Memory holds the order ids of the file, to find repeats. Without a database
    /// (`None`: none exists yet), nothing is tracked already.
    pub async fn dry_run<R: std::io::Read>(
        &self,
        db: Option<&Db>,
        mut rows: CsvRows<'_, R>,
    ) -> Result<DryRun, StorageError> {
        let shown = rows.shown.clone();
        let mut report = DryRun::default();
        let mut seen: HashMap<String, u64> = HashMap::new();
        while let Some(row) = rows.next_row() {
            let (line, new) = match row {
                Ok(row) => row,
                Err(Refusal { error, row_only }) => {
                    if !row_only {
                        report.stopped = Some(error);
                        break;
                    }
                    report.reject += 1;
                    report.note(error.0);
                    continue;
                }
            };
            if let Some(&first) = seen.get(&new.order_id) {
                report.skip += 1;
                report.note(format!(
                    "{shown} line {line}, column order_id: order {} is already on line {first}",
                    new.order_id
                ));
                continue;
            }
            seen.insert(new.order_id.clone(), line);
            let tracked = match db {
                Some(db) => db.shipment(&new.order_id).await.is_ok(),
                None => false,
            };
            if tracked {
                report.skip += 1;
                report.note(format!(
                    "{shown} line {line}, column order_id: order {} is already tracked",
                    new.order_id
                ));
                continue;
            }
            report.add += 1;
        }
        Ok(report)
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
        options: &CsvOptions,
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
            match self
                .line_of(file, &new.order_id, options)
                .filter(|&l| l < line)
            {
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

/// The most columns a header may have: a seller centre's export has a few dozen, most of them
/// left out; a row holds at most this many fields of [`MAX_FIELD_BYTES`].
pub const MAX_COLUMNS: usize = 128;

/// How much of a CSV file is read at a time.
const READ_BLOCK: usize = 64 * 1024;

/// The rows of a CSV file as checked shipments, each with its line: see [`Intake::csv_rows`].
/// The first error ends the iteration.
pub struct CsvRows<'a, R> {
    intake: &'a Intake,
    shown: String,
    options: CsvOptions,
    input: std::io::BufReader<text::Decoded<R>>,
    parser: csv_core::Reader,
    /// The line and quoting of the bytes the parser has taken.
    position: text::Position,
    /// One field at a time; one byte longer than the limit, so that filling it means too long:
    /// csv-core's `Reader::read_field` answers `OutputFull` when a field does not fit the buffer
    /// it is given (docs.rs/csv-core/0.1/csv_core/struct.Reader.html).
    field: Vec<u8>,
    /// The header's columns, in order; `None` for an export's column that is left out.
    columns: Vec<Option<&'static str>>,
    /// The names of the columns left out.
    ignored: Vec<String>,
    /// Whether the header is a seller centre's export (it uses one of their column names).
    export: bool,
    /// How many contact cells of an export were masked and read as empty.
    masked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    done: bool,
}

/// One record of a CSV file, its fields trimmed.
struct Record {
    line: u64,
    fields: Vec<String>,
    /// It had more fields than were asked for; those were read and dropped.
    overflow: bool,
}

/// Why a row is not a shipment: `row_only` when reading can go on with the next row.
#[derive(Debug)]
pub struct Refusal {
    pub error: CsvError,
    pub row_only: bool,
}

impl<R: std::io::Read> CsvRows<'_, R> {
    /// The export's columns that are left out, by their header.
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }

    /// A counter of the export's masked contact cells (`138****5678`), which are read as no
    /// contact; it keeps counting while the rows are read, after they are handed on.
    pub fn masked(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.masked.clone()
    }

    /// The next record and the line it starts on, its fields trimmed; `None` at the end of the
    /// file. At most `max_fields` fields are kept: the rest of a longer record is read and
    /// dropped, and the record says so.
    fn record(&mut self, max_fields: usize) -> Result<Option<Record>, CsvError> {
        use csv_core::ReadFieldResult;
        use std::io::BufRead;
        let shown = &self.shown;
        self.position.start_record();
        let mut fields = Vec::new();
        let mut overflow = false;
        let mut len = 0;
        loop {
            let input = match self.input.fill_buf() {
                Ok(input) => input,
                Err(e) => {
                    return Err(match text::decode_error(&e) {
                        Some(bad) => CsvError(format!(
                            "{shown} line {}: {}",
                            bad.line,
                            undecodable(bad.encoding, self.options.choice)
                        )),
                        None => CsvError(format!(
                            "cannot read {shown}: {}",
                            crate::config::io_reason(&e)
                        )),
                    });
                }
            };
            if input.is_empty()
                && let Some(opened) = self.position.open_quote()
            {
                return Err(CsvError(format!(
                    "{shown} line {opened}: a quoted field opened here is never closed; add the closing quote (a quote inside a quoted field is written twice: \"\")"
                )));
            }
            let (result, read, written) = self.parser.read_field(input, &mut self.field[len..]);
            for &b in &input[..read] {
                self.position.feed(b);
            }
            self.input.consume(read);
            len += written;
            match result {
                ReadFieldResult::InputEmpty => {}
                ReadFieldResult::OutputFull => {
                    return Err(CsvError(format!(
                        "{shown} line {}: a field is longer than {} KiB (is this the right file?)",
                        self.position.record_line(),
                        MAX_FIELD_BYTES / 1024
                    )));
                }
                ReadFieldResult::Field { record_end } => {
                    if fields.len() == max_fields {
                        overflow = true;
                    } else {
                        // Decoded to UTF-8 before it was parsed, and cut only at ASCII bytes.
                        let text = std::str::from_utf8(&self.field[..len]).map_err(|_| {
                            CsvError(format!(
                                "{shown} line {}: not UTF-8 text; save the file as UTF-8",
                                self.position.record_line()
                            ))
                        })?;
                        fields.push(text.trim().to_owned());
                    }
                    len = 0;
                    if record_end {
                        return Ok(Some(Record {
                            line: self.position.record_line(),
                            fields,
                            overflow,
                        }));
                    }
                }
                ReadFieldResult::End => return Ok(None),
            }
        }
    }

    fn shipment(&mut self) -> Option<Result<(u64, NewShipment), Refusal>> {
        let fatal = |error| Refusal {
            error,
            row_only: false,
        };
        let row = |error| Refusal {
            error,
            row_only: true,
        };
        let record = match self.record(self.columns.len()) {
            Ok(Some(record)) => record,
            Ok(None) => return None,
            Err(e) => return Some(Err(fatal(e))),
        };
        let shown = &self.shown;
        let line = record.line;
        if record.overflow {
            return Some(Err(row(CsvError(format!(
                "{shown} line {line}: more fields than the header's {}",
                self.columns.len()
            )))));
        }
        if record.fields.len() != self.columns.len() {
            return Some(Err(row(CsvError(format!(
                "{shown} line {line}: {} fields where the header has {}",
                record.fields.len(),
                self.columns.len()
            )))));
        }
        let get = |column: &str| {
            self.columns
                .iter()
                .position(|c| *c == Some(column))
                .map(|i| export::excel_text(&record.fields[i]).to_owned())
        };
        let carrier = match get("carrier").map(|c| carrier_code(&c)).transpose() {
            Ok(carrier) => carrier,
            Err(unknown) => {
                return Some(Err(row(CsvError(format!(
                    "{shown} line {line}, column carrier: {unknown}"
                )))));
            }
        };
        let provider = get("provider")
            .filter(|p| !p.is_empty())
            .or_else(|| self.options.provider.clone());
        let export = self.export;
        let contact = |column: &str| {
            get(column).filter(|cell| {
                let masked = export && export::is_masked(cell);
                if masked {
                    self.masked
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                !masked
            })
        };
        let fields = Fields {
            order_id: get("order_id").unwrap_or_default(),
            provider,
            tracking_no: get("tracking_no"),
            carrier,
            tier: get("tier"),
            phone: contact("phone"),
            email: contact("email"),
            openid: contact("openid"),
            sub_orders: get("sub_orders"),
        };
        let order_id = fields.order_id.clone();
        let checked =
            self.intake
                .shipment(fields)
                .map_err(|reason| match reason.column(&order_id) {
                    Some(column) => {
                        CsvError(format!("{shown} line {line}, column {column}: {reason}"))
                    }
                    None => CsvError(format!("{shown} line {line}: {reason}")),
                });
        Some(checked.map(|new| (line, new)).map_err(row))
    }

    /// The next row, or why it is refused: reading may go on after a refusal that is
    /// `row_only`. (The iterator stops at the first refusal of any kind.)
    pub fn next_row(&mut self) -> Option<Result<(u64, NewShipment), Refusal>> {
        if self.done {
            return None;
        }
        let next = self.shipment();
        self.done = match &next {
            None => true,
            Some(Err(refusal)) => !refusal.row_only,
            Some(Ok(_)) => false,
        };
        next
    }
}

/// What to do about bytes that are not text in the encoding they were read in.
fn undecodable(encoding: TextEncoding, choice: EncodingChoice) -> &'static str {
    match (encoding, choice) {
        (TextEncoding::Utf8, _) => {
            "not UTF-8 text; a CSV file saved by Excel on Chinese Windows is GBK: give --encoding gbk"
        }
        (TextEncoding::Gb18030, EncodingChoice::Auto) => {
            "not UTF-8 nor GBK (GB18030) text; save the file as UTF-8 (\"CSV UTF-8\" in Excel's Save As)"
        }
        (TextEncoding::Gb18030, _) => {
            "not GBK (GB18030) text; if the file is UTF-8 give --encoding utf-8, or save it as UTF-8"
        }
    }
}

impl<R: std::io::Read> Iterator for CsvRows<'_, R> {
    type Item = Result<(u64, NewShipment), CsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.shipment().map(|row| row.map_err(|r| r.error));
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
        for bad in ["o pen", "oia2Tju/EG", "微信"] {
            let err = intake()
                .read_csv(write(&format!("order_id,openid\n1,{bad}\n")).path())
                .unwrap_err()
                .to_string();
            assert!(err.contains("line 2, column openid"), "{err}");
            assert!(err.contains("is not a WeChat OpenID"), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        let long = "o".repeat(crate::domain::OpenId::MAX_CHARS + 1);
        let err = intake()
            .read_csv(write(&format!("order_id,openid\n1,{long}\n")).path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("column openid"), "{err}");
        let rows = intake()
            .read_csv(write("order_id,openid\n1,oia2TjuEGTNoeX76QEjQNrcURxG8\n2,\n").path())
            .unwrap();
        assert_eq!(
            rows[0].1.openid.as_ref().map(|o| o.as_str()),
            Some("oia2TjuEGTNoeX76QEjQNrcURxG8")
        );
        assert!(rows[1].1.openid.is_none());
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
            openid: None,
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
            events_digest: None,
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
                format!("{}\n", ["order_id"; MAX_COLUMNS + 1].join(",")),
                Err("the header has more than 128 columns"),
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
