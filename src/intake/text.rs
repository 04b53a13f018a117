//! The text of a CSV file before it is parsed: which encoding it is in, decoding it to UTF-8 as
//! it streams, and which physical line a byte is on. Excel on Chinese Windows saves CSV in GBK,
//! and the seller centres' exports often are too, so a file is not assumed to be UTF-8.
//!
//! Lines are counted here, byte by byte, and not taken from the CSV parser: csv-core counts a
//! line when it reads its `\n`, and a record ended by `\r\n` ends at the `\r`, so the next
//! record's line came out one too low.

use std::io::{BufRead, Read, Seek, SeekFrom};

/// What `--encoding` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodingChoice {
    /// UTF-8 when the file is (a UTF-8 byte order mark, or valid UTF-8 throughout), else GBK.
    #[default]
    Auto,
    Utf8,
    Gbk,
}

/// The encoding a file is read in, once chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    Utf8,
    /// GB18030, the superset of GBK (and of GB2312) that encoding_rs decodes: every GBK file
    /// decodes the same as GB18030.
    Gb18030,
}

impl TextEncoding {
    fn encoding(self) -> &'static encoding_rs::Encoding {
        match self {
            TextEncoding::Utf8 => encoding_rs::UTF_8,
            TextEncoding::Gb18030 => encoding_rs::GB18030,
        }
    }
}

/// Why a file's encoding could not be told.
#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    #[error(
        "cannot tell the encoding of input that cannot be read twice (a pipe): give --encoding utf-8 or --encoding gbk"
    )]
    NotSeekable,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The encoding `choice` means for `input`: for `Auto`, reads the whole input once to see
/// whether it is UTF-8 (memory holds one block), then rewinds it.
pub fn choose<R: Read + Seek>(
    choice: EncodingChoice,
    input: &mut R,
) -> Result<TextEncoding, SniffError> {
    match choice {
        EncodingChoice::Utf8 => Ok(TextEncoding::Utf8),
        EncodingChoice::Gbk => Ok(TextEncoding::Gb18030),
        EncodingChoice::Auto => {
            // A pipe cannot be rewound (lseek answers ESPIPE).
            let start = input
                .stream_position()
                .map_err(|_| SniffError::NotSeekable)?;
            let utf8 = is_utf8(&mut *input)?;
            input.seek(SeekFrom::Start(start))?;
            Ok(if utf8 {
                TextEncoding::Utf8
            } else {
                TextEncoding::Gb18030
            })
        }
    }
}

/// Whether all of `input` is UTF-8 (a file that starts with a UTF-8 byte order mark is, too:
/// that is what the mark says). Reads it to the end, one block at a time.
pub fn is_utf8(input: impl Read) -> std::io::Result<bool> {
    let mut input = std::io::BufReader::with_capacity(64 * 1024, input);
    if input.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
        return Ok(true);
    }
    match std::io::copy(
        &mut Decoded::new(input, TextEncoding::Utf8),
        &mut std::io::sink(),
    ) {
        Ok(_) => Ok(true),
        Err(e) if decode_error(&e).is_some() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why the bytes of a file are not text in its encoding: the line they are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: not {encoding:?} text")]
pub struct DecodeError {
    pub line: u64,
    pub encoding: TextEncoding,
}

/// A reader of the text of `R` decoded to UTF-8, a byte order mark left out. Bytes that are not
/// text in the encoding end the reading with an `InvalidData` error that carries a
/// [`DecodeError`] (see [`decode_error`]).
pub struct Decoded<R> {
    input: std::io::BufReader<R>,
    decoder: encoding_rs::Decoder,
    encoding: TextEncoding,
    /// The lines of what was decoded so far.
    lines: Lines,
    finished: bool,
    /// Decoded bytes that did not fit a reader's buffer of fewer than four bytes.
    spill: Vec<u8>,
}

impl<R: Read> Decoded<R> {
    pub fn new(input: R, encoding: TextEncoding) -> Decoded<R> {
        Decoded {
            input: std::io::BufReader::with_capacity(64 * 1024, input),
            decoder: encoding.encoding().new_decoder_with_bom_removal(),
            encoding,
            lines: Lines::default(),
            finished: false,
            spill: Vec::new(),
        }
    }
}

/// The [`DecodeError`] an error from [`Decoded`] carries, if it is one.
pub fn decode_error(error: &std::io::Error) -> Option<DecodeError> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<DecodeError>())
        .copied()
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use encoding_rs::DecoderResult;
        if !self.spill.is_empty() {
            let n = self.spill.len().min(out.len());
            out[..n].copy_from_slice(&self.spill[..n]);
            self.spill.drain(..n);
            return Ok(n);
        }
        // encoding_rs writes a character whole or not at all, and needs room for one.
        if out.len() < 4 {
            let mut small = [0u8; 4];
            let n = self.read(&mut small)?;
            let fits = n.min(out.len());
            out[..fits].copy_from_slice(&small[..fits]);
            self.spill.extend_from_slice(&small[fits..n]);
            return Ok(fits);
        }
        loop {
            if self.finished {
                return Ok(0);
            }
            let block = self.input.fill_buf()?;
            let last = block.is_empty();
            let (result, read, written) = self
                .decoder
                .decode_to_utf8_without_replacement(block, out, last);
            self.input.consume(read);
            for &b in &out[..written] {
                self.lines.feed(b);
            }
            match result {
                DecoderResult::Malformed(_, _) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        DecodeError {
                            line: self.lines.current(),
                            encoding: self.encoding,
                        },
                    ));
                }
                DecoderResult::InputEmpty if last => self.finished = true,
                DecoderResult::InputEmpty | DecoderResult::OutputFull => {}
            }
            if written > 0 || self.finished {
                return Ok(written);
            }
        }
    }
}

/// Counts physical lines as a file's bytes go by: a line ends at `\n`, `\r\n` or a lone `\r`
/// (spreadsheet programs write the first two, old Mac ones the third).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lines {
    /// Line breaks seen so far.
    breaks: u64,
    after_cr: bool,
}

impl Lines {
    pub fn feed(&mut self, byte: u8) {
        match byte {
            b'\n' if self.after_cr => self.after_cr = false,
            b'\n' => self.breaks += 1,
            b'\r' => {
                self.breaks += 1;
                self.after_cr = true;
            }
            _ => self.after_cr = false,
        }
    }

    /// The line the next byte is on, from 1.
    pub fn current(&self) -> u64 {
        self.breaks + 1
    }
}

/// Where a CSV file's bytes stand: on which physical line, and whether inside a quoted field
/// (and where it opened). Follows the same rules as csv-core, which parses the same bytes: a
/// quote opens a quoted field only as the first byte of a field, `""` inside one is a quote,
/// and a quote closes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    lines: Lines,
    state: State,
    /// The line the open quoted field began on.
    opened: u64,
    /// The line of the first byte of the record being read, once one was seen.
    record: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the end of the field, or the first of `""`.
    QuoteInQuoted,
}

impl Position {
    pub fn feed(&mut self, byte: u8) {
        let newline = byte == b'\n' || byte == b'\r';
        if self.record.is_none() && !newline {
            self.record = Some(self.lines.current());
        }
        self.state = match (self.state, byte) {
            (State::Quoted, b'"') => State::QuoteInQuoted,
            (State::Quoted, _) => State::Quoted,
            (State::QuoteInQuoted, b'"') => State::Quoted,
            (State::FieldStart, b'"') => {
                self.opened = self.lines.current();
                State::Quoted
            }
            (_, b',') => State::FieldStart,
            (_, b'\n' | b'\r') => State::FieldStart,
            _ => State::Unquoted,
        };
        self.lines.feed(byte);
    }

    /// Where a new record begins to be read: its line is that of its first byte.
    pub fn start_record(&mut self) {
        self.record = None;
    }

    /// The line of the record being read: of its first byte, or of the next byte when none has
    /// been seen yet.
    pub fn record_line(&self) -> u64 {
        self.record.unwrap_or_else(|| self.lines.current())
    }

    /// The line a quoted field that is still open began on.
    pub fn open_quote(&self) -> Option<u64> {
        (self.state == State::Quoted).then_some(self.opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(text: &[u8]) -> Vec<u64> {
        // The line of each record, as the CSV reader asks for it: at the record's end, having
        // started the record right after the one before, so that the line breaks between them
        // (the `\n` of a `\r\n`, blank lines) are fed to it first.
        let mut position = Position::default();
        let mut lines = Vec::new();
        let mut in_record = false;
        position.start_record();
        for &b in text {
            position.feed(b);
            let newline = b == b'\n' || b == b'\r';
            in_record |= !newline;
            if newline && in_record && position.open_quote().is_none() {
                lines.push(position.record_line());
                position.start_record();
                in_record = false;
            }
        }
        lines
    }

    #[test]
    fn lines_end_at_lf_crlf_and_lone_cr() {
        for (text, breaks) in [
            (&b"a\nb\nc"[..], 2),
            (b"a\r\nb\r\nc", 2),
            (b"a\rb\rc", 2),
            (b"a\r\n\r\nb", 2),
            (b"\n\n", 2),
            (b"", 0),
        ] {
            let mut lines = Lines::default();
            text.iter().for_each(|&b| lines.feed(b));
            assert_eq!(lines.current(), breaks + 1, "{text:?}");
        }
    }

    #[test]
    fn records_are_on_the_line_of_their_first_byte() {
        assert_eq!(lines_of(b"h\n1\n2\n"), vec![1, 2, 3]);
        assert_eq!(lines_of(b"h\r\n1\r\n2\r\n"), vec![1, 2, 3]);
        assert_eq!(lines_of(b"h\r\n\r\n1\r\n"), vec![1, 3]);
        // A quoted field that holds line breaks: the next record is further down.
        assert_eq!(lines_of(b"h\n1,\"a\r\nb\nc\"\n2\n"), vec![1, 2, 5]);
        assert_eq!(
            lines_of(b"h\n1,\"say \"\"hi\"\"\nthere\"\n2\n"),
            vec![1, 2, 4]
        );
        // A record whose first field is quoted: the quote opens it after any line break.
        assert_eq!(lines_of(b"h\n\"a\nb\"\n2\n"), vec![1, 2, 4]);
        assert_eq!(lines_of(b"h\r\n\"a\r\nb\"\r\n2\r\n"), vec![1, 2, 4]);
        assert_eq!(lines_of(b"h\r\"a\rb\"\r2\r"), vec![1, 2, 4]);
    }

    #[test]
    fn an_open_quote_is_found_with_its_line() {
        let mut position = Position::default();
        b"order_id,tier\r\nC-1,\"low\r\nC-3,normal\r\n"
            .iter()
            .for_each(|&b| position.feed(b));
        assert_eq!(position.open_quote(), Some(2));
        let mut position = Position::default();
        b"a,\"b\"\"\",c\nd,e\"f\n"
            .iter()
            .for_each(|&b| position.feed(b));
        assert_eq!(position.open_quote(), None, "closed, and a quote mid-field");
    }

    #[test]
    fn utf8_is_told_from_gbk_across_blocks() {
        let (gbk, _, _) = encoding_rs::GBK.encode("订单编号,物流公司\n1,中通快递\n");
        assert!(!is_utf8(&gbk[..]).unwrap());
        assert!(is_utf8("订单编号,物流公司\n".as_bytes()).unwrap());
        assert!(is_utf8(&b"\xEF\xBB\xBForder_id\n"[..]).unwrap());
        assert!(
            !is_utf8(&b"order_id\n\xE4\xB8"[..]).unwrap(),
            "cut at the end"
        );
        // A character cut by the block boundary is still UTF-8; a bad byte far in is not.
        let mut text = "x".repeat(64 * 1024 - 1).into_bytes();
        text.extend_from_slice("中文".as_bytes());
        assert!(is_utf8(&text[..]).unwrap());
        text.extend_from_slice(b"\xB6\xA9");
        assert!(!is_utf8(&text[..]).unwrap());
    }

    /// A file that cannot be read to its end (a disk error, a file cut off by another program)
    /// is that error, not a GBK file.
    #[test]
    fn a_read_error_while_sniffing_is_an_error_not_an_encoding() {
        let failing = "订单编号\n".as_bytes().chain(FailingReader);
        let err = is_utf8(failing).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Other);
        assert_eq!(err.to_string(), "the disk said no");
    }

    struct FailingReader;

    impl Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("the disk said no"))
        }
    }

    #[test]
    fn decoding_gbk_gives_utf8_and_names_the_line_of_a_bad_byte() {
        let (gbk, _, _) = encoding_rs::GBK.encode("订单编号\r\n1,张三\r\n");
        let mut text = String::new();
        Decoded::new(&gbk[..], TextEncoding::Gb18030)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "订单编号\r\n1,张三\r\n");

        let err = Decoded::new(&b"a\r\nb\r\nc\xFF\n"[..], TextEncoding::Gb18030)
            .read_to_string(&mut String::new())
            .unwrap_err();
        assert_eq!(
            decode_error(&err),
            Some(DecodeError {
                line: 3,
                encoding: TextEncoding::Gb18030
            })
        );
        let err = Decoded::new(&gbk[..], TextEncoding::Utf8)
            .read_to_string(&mut String::new())
            .unwrap_err();
        assert_eq!(decode_error(&err).map(|e| e.line), Some(1));

        // Read a byte at a time, a character is handed over whole all the same.
        let mut bytes = Vec::new();
        let mut decoded = Decoded::new(&gbk[..], TextEncoding::Gb18030);
        let mut one = [0u8; 1];
        while decoded.read(&mut one).unwrap() == 1 {
            bytes.push(one[0]);
        }
        assert_eq!(String::from_utf8(bytes).unwrap(), "订单编号\r\n1,张三\r\n");

        let mut text = String::new();
        Decoded::new(&b"\xEF\xBB\xBForder_id\n"[..], TextEncoding::Utf8)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "order_id\n", "the byte order mark is left out");
    }
}
