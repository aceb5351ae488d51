//! Log output: text or JSON on stderr, colours only at a terminal, a level filter that a
//! reload can replace ([`set_level`]), and the request span's `request_id` written without
//! the formatter's generic (and, per request, costly) quoting and styling.

use std::fmt;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber, span};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{RecordFields, VisitOutput as _};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, LogFormat};

/// Installs the process-wide subscriber for `config.log` (once; later calls are no-ops).
pub fn init(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let filter = LEVEL.get_or_init(|| ReloadableFilter {
        current: ArcSwap::from_pointee(filter),
        spans_matter: AtomicBool::new(has_span_directives(&config.log.level)),
    });
    // Colours only for a person at a terminal, never into journald or a pipe.
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match config.log.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(TextFields)
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// Replaces the level filter (`log.level`, already validated by the configuration) for
/// every event and span from now on. `log.format` is not switched at run time: spans
/// opened under one format would lack the other's fields.
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|err| err.to_string())?;
    if let Some(reloadable) = LEVEL.get() {
        reloadable.current.store(Arc::new(filter));
        reloadable
            .spans_matter
            .store(has_span_directives(level), Ordering::Relaxed);
        // Callsites cache whether they are enabled: make them ask again.
        tracing::callsite::rebuild_interest_cache();
    }
    Ok(())
}

static LEVEL: OnceLock<ReloadableFilter> = OnceLock::new();

/// An `EnvFilter` behind an `ArcSwap`: replaced atomically at reload, and read on every
/// span operation without a lock (`tracing_subscriber::reload` takes a read lock each
/// time, which the request span would pay several times per request).
struct ReloadableFilter {
    current: ArcSwap<EnvFilter>,
    /// The filter has span directives (`target[span{field=value}]=level`), the only kind
    /// that needs to follow spans; without them the span hooks have nothing to do, and
    /// skipping them spares the request span several filter loads.
    spans_matter: AtomicBool,
}

fn has_span_directives(level: &str) -> bool {
    level.contains('[')
}

impl ReloadableFilter {
    fn spans_matter(&self) -> bool {
        self.spans_matter.load(Ordering::Relaxed)
    }
}

impl<S> Layer<S> for &'static ReloadableFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        Layer::<S>::register_callsite(&**self.current.load(), metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        Layer::<S>::enabled(&**self.current.load(), metadata, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&**self.current.load())
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if self.spans_matter() {
            self.current.load().on_new_span(attrs, id, ctx);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if self.spans_matter() {
            self.current.load().on_record(id, values, ctx);
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.spans_matter() {
            self.current.load().on_enter(id, ctx);
        }
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.spans_matter() {
            self.current.load().on_exit(id, ctx);
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if self.spans_matter() {
            self.current.load().on_close(id, ctx);
        }
    }
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
