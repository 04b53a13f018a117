//! Where shipments come from: `add` and `import` check a new shipment here, against the config
//! and what its provider needs, before the database sees it. (Rows inserted with SQL are checked
//! by the dispatcher when it picks them up.)

mod csv;
mod export;
mod stored;
mod text;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use csv::READ_BLOCK;
pub use csv::{CsvRows, MAX_COLUMNS, MAX_FIELD_BYTES, Refusal};
pub use export::{UnknownCarrier, carrier_code, column_of};
pub use stored::{StoredRowError, check_stored, shown_time};
pub use text::{EncodingChoice, SniffError, TextEncoding, choose};

use crate::clock::Millis;
use crate::config::Config;
use crate::domain::{Email, InvalidOpenId, InvalidPhone, OpenId, Phone, Tier, UnknownTier};
use crate::providers::{Provider, TrackRequest, UnfitRequest};
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

    /// The provider a row names must be configured; a row that names none takes the only one,
    /// and with several the error lists them. Without a config nothing can be checked.
    #[test]
    fn the_provider_is_the_one_named_or_the_only_one_and_mistakes_list_the_configured_ones() {
        let row = |provider: Option<&str>| Fields {
            order_id: "123".into(),
            provider: provider.map(str::to_owned),
            ..Fields::default()
        };
        let said = |intake: &Intake, provider: Option<&str>| match intake.shipment(row(provider)) {
            Ok(new) => new.provider,
            Err(e) => e.to_string(),
        };
        let one = intake();
        assert_eq!(said(&one, None), "taobao");
        assert_eq!(
            said(&one, Some("dhl")),
            "unknown provider \"dhl\": configured providers are taobao"
        );
        assert!(one.check_provider("taobao").is_ok());
        assert_eq!(
            one.check_provider("dhl").unwrap_err().to_string(),
            "unknown provider \"dhl\": configured providers are taobao"
        );

        let config = Config::parse(
            "[providers.tb]\nkind = \"taobao\"\napp_key = \"1\"\napp_secret = \"s\"\nsession = \"s\"\n\
             [providers.sim]\nkind = \"simulator\"\n",
            None,
            Path::new("."),
        )
        .unwrap();
        let two = Intake::new(Some(&config)).unwrap();
        assert_eq!(
            said(&two, None),
            "which provider? give one (configured: sim, tb)"
        );
        assert_eq!(said(&two, Some("sim")), "sim");

        let none = Intake::new(Some(&Config::parse("", None, Path::new(".")).unwrap())).unwrap();
        assert_eq!(
            said(&none, Some("tb")),
            "unknown provider \"tb\": configured providers are none"
        );
        let unchecked = Intake::new(None).unwrap();
        assert_eq!(said(&unchecked, Some("tb")), "tb");
        assert_eq!(said(&unchecked, None), "which provider? give one");
        assert!(unchecked.check_provider("anything").is_ok());
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
