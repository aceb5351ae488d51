//! Log output: text or JSON on stderr, colours only at a terminal, and the request span's
//! `request_id` written without the formatter's generic (and, per request, costly)
//! quoting and styling.

use std::fmt;
use std::io::IsTerminal as _;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput as _};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

use crate::config::{Config, LogFormat};

/// Installs the process-wide subscriber for `config.log` (once; later calls are no-ops).
pub fn init(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into journald or a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.fmt_fields(TextFields).try_init(),
    };
}

/// The text format's fields: as tracing-subscriber's default, except that a field named
/// `request_id` is written as `request_id=<value>` straight away. Every request's span
/// carries one, and the default's styling and escaping machinery was a noticeable part
/// of `/v1/verify`'s cost; the id is plain ASCII by construction.
struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'writer> {
    writer: Writer<'writer>,
    is_empty: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// Lets the default visitor write one field.
    fn default_field(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.is_empty = false;
        self.result = visitor.finish();
    }
}

impl Visit for TextVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() != "request_id" {
            return self.default_field(|v| v.record_debug(field, value));
        }
        if self.result.is_err() {
            return;
        }
        let pad = if self.is_empty { "" } else { " " };
        self.is_empty = false;
        self.result = write!(self.writer, "{pad}request_id={value:?}");
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.default_field(|v| v.record_str(field, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.default_field(|v| v.record_error(field, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.default_field(|v| v.record_i64(field, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.default_field(|v| v.record_u64(field, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.default_field(|v| v.record_bool(field, value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.default_field(|v| v.record_f64(field, value));
    }
}
