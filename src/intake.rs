//! Where shipments come from: `add` and `import` check a new shipment here, against the config
//! and what its provider needs, before the database sees it. (Rows inserted with SQL are checked
//! by the dispatcher when it picks them up.)

mod csv;
mod export;
mod stored;
mod text;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use csv::READ_BLOCK;
pub use csv::{CsvRows, MAX_COLUMNS, MAX_FIELD_BYTES, Refusal};
pub use export::{UnknownCarrier, carrier_code, column_of};
pub use stored::{StoredRowError, check_stored, shown_time};
pub use text::{EncodingChoice, SniffError, TextEncoding, choose};

use crate::clock::Millis;
use crate::config::{AdapterSettings, Config};
use crate::domain::{Email, InvalidOpenId, InvalidPhone, OpenId, Phone, Tier, UnknownTier};
use crate::providers::{TrackRequest, UnfitRequest};
use crate::storage::{Db, NewShipment, StorageError};

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

/// Checks new shipments against the configured providers, by the rules of each one's kind: no
/// HTTP client or adapter is built to add a row.
pub struct Intake {
    /// `None` when there is no config: provider names cannot be checked then.
    providers: Option<BTreeMap<String, AdapterSettings>>,
}

impl Intake {
    pub fn new(config: Option<&Config>) -> Intake {
        let providers = config.map(|config| {
            config
                .providers
                .iter()
                .map(|(name, settings)| (name.clone(), settings.adapter.clone()))
                .collect()
        });
        Intake { providers }
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
        if let Some(settings) = self.providers.as_ref().and_then(|p| p.get(&new.provider)) {
            crate::upstream::check(
                settings,
                &TrackRequest {
                    order_id: new.order_id.clone(),
                    tracking_no: new.tracking_no.clone(),
                    carrier: new.carrier.clone(),
                    phone: new.phone.clone(),
                    sub_orders: new.sub_orders.clone(),
                    created_at: 0,
                },
            )?;
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

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests;
