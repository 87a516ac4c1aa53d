//! Structured logs: one JSON object per line with `ts`, `level` and the
//! event's fields flattened (docs/reference.md), or tracing's human format.
//!
//! Call sites never pass a token or a query string; this module only
//! formats what it is given.

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Human,
}

/// Installs the global subscriber writing to stdout. Safe to call twice
/// (the second call is ignored), which tests rely on.
pub fn init(level: &str, format: Format) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        Format::Json => builder.event_format(JsonLine).try_init(),
        // Colour codes only for a terminal: in a file, journald or a log
        // shipper they are noise.
        Format::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init(),
    };
}

/// Formats an event as one flat JSON object.
pub struct JsonLine;

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(name(field), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(name(field), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(name(field), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(name(field), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(name(field), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(name(field), Value::from(value));
    }
}

/// Fields every line of an event carries (docs/reference.md).
fn required_fields(event: Option<&str>) -> &'static [&'static str] {
    match event {
        Some("handshake") => &[
            "result",
            "reason",
            "status",
            "ip",
            "origin",
            "transport",
            "sub",
            "latency_us",
        ],
        Some("close") => &["code", "sub", "duration_ms", "bytes_in", "bytes_out"],
        _ => &[],
    }
}

fn name(field: &Field) -> String {
    match field.name() {
        "message" => "msg".to_owned(),
        n => n.to_owned(),
    }
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields(Map::new());
        fields.0.insert(
            "ts".into(),
            Value::String(
                humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            ),
        );
        fields.0.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().to_ascii_lowercase()),
        );
        event.record(&mut fields);
        let event_name = fields
            .0
            .entry("event")
            .or_insert_with(|| Value::String("log".into()))
            .as_str()
            .map(str::to_owned);
        // The documented fields are always present (null when not applicable) so
        // log pipelines can rely on the shape.
        for f in required_fields(event_name.as_deref()) {
            fields.0.entry(*f).or_insert(Value::Null);
        }
        let line = serde_json::to_string(&fields.0).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}
