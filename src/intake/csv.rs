//! The CSV reader behind `import`: one record at a time from a file of any size, decoded from
//! UTF-8 or GBK, every field bounded, each row checked as a new shipment (see
//! [`Intake::csv_rows`]).

use super::{
    CsvError, CsvOptions, EncodingChoice, Fields, Intake, NewShipment, TextEncoding, carrier_code,
    export, text,
};

/// The longest field `import` takes, header included. Real values are short (the longest, a
/// list of sub-order ids, a few hundred bytes); a longer field is a broken or wrong file, and
/// refusing it keeps memory bounded whatever the file holds.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// The most columns a header may have: a seller centre's export has a few dozen, most of them
/// left out; a row holds at most this many fields of [`MAX_FIELD_BYTES`].
pub const MAX_COLUMNS: usize = 128;

/// How much of a CSV file is read at a time.
pub(super) const READ_BLOCK: usize = 64 * 1024;

/// The rows of a CSV file as checked shipments, each with its line: see [`Intake::csv_rows`].
/// The first error ends the iteration.
pub struct CsvRows<'a, R> {
    pub(super) intake: &'a Intake,
    pub(super) shown: String,
    pub(super) options: CsvOptions,
    pub(super) input: std::io::BufReader<text::Decoded<R>>,
    pub(super) parser: csv_core::Reader,
    /// The line and quoting of the bytes the parser has taken.
    pub(super) position: text::Position,
    /// One field at a time; one byte longer than the limit, so that filling it means too long:
    /// csv-core's `Reader::read_field` answers `OutputFull` when a field does not fit the buffer
    /// it is given (docs.rs/csv-core/0.1/csv_core/struct.Reader.html).
    pub(super) field: Vec<u8>,
    /// The header's columns, in order; `None` for an export's column that is left out.
    pub(super) columns: Vec<Option<&'static str>>,
    /// The names of the columns left out.
    pub(super) ignored: Vec<String>,
    /// Whether the header is a seller centre's export (it uses one of their column names).
    pub(super) export: bool,
    /// How many contact cells of an export were masked and read as empty.
    pub(super) masked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub(super) done: bool,
}

/// One record of a CSV file, its fields trimmed.
pub(super) struct Record {
    pub(super) line: u64,
    pub(super) fields: Vec<String>,
    /// It had more fields than were asked for; those were read and dropped.
    pub(super) overflow: bool,
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
    pub(super) fn record(&mut self, max_fields: usize) -> Result<Option<Record>, CsvError> {
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

    pub(super) fn shipment(&mut self) -> Option<Result<(u64, NewShipment), Refusal>> {
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
