//! The controller's and the signer's logs, on standard error.
//!
//! One set of variables for every ksa binary:
//! - `KSA_LOG`: the filter (`info`, `info,ksa_controller=debug`, ...,
//!   the `tracing` `EnvFilter` syntax). Unset or empty: `RUST_LOG`, then
//!   the default `info,kube=warn`.
//! - `KSA_LOG_FORMAT`: `text` or `json` (the `--log-format` flag, which
//!   wins over the variable).
//!
//! In JSON, each line is one object whose fields are all at the top level:
//! `timestamp`, `level`, `target`, `message`, the event's own fields, and
//! the fields of every span it is in, so that each line a reconcile logs
//! carries the `namespace` and `name` of its rotation (the event's own
//! fields win over a span's of the same name).

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The variable of the filter.
pub const LOG_ENV: &str = "KSA_LOG";
/// The variable of the format (`text` or `json`).
pub const LOG_FORMAT_ENV: &str = "KSA_LOG_FORMAT";
/// The filter when neither `KSA_LOG` nor `RUST_LOG` is set.
pub const DEFAULT_FILTER: &str = "info,kube=warn";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The filter `KSA_LOG` gives, else `RUST_LOG`, else [`DEFAULT_FILTER`];
/// an empty variable counts as unset. A filter that does not parse is an
/// error naming the variable.
pub fn filter(ksa_log: Option<&str>, rust_log: Option<&str>) -> anyhow::Result<EnvFilter> {
    let given = [(LOG_ENV, ksa_log), ("RUST_LOG", rust_log)]
        .into_iter()
        .find_map(|(name, value)| Some((name, value.filter(|v| !v.trim().is_empty())?)));
    match given {
        Some((name, directives)) => EnvFilter::try_new(directives).map_err(|error| {
            anyhow::anyhow!(
                "{name}={directives:?} is not a log filter ({error}); give levels such as \
                 {name}=info or {name}=info,ksa_controller=debug"
            )
        }),
        None => Ok(EnvFilter::new(DEFAULT_FILTER)),
    }
}

/// Logs to standard error in `format`, filtered by [`filter`] of the
/// environment.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let var = |name| std::env::var(name).ok();
    let filter = filter(var(LOG_ENV).as_deref(), var("RUST_LOG").as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("setting up logging: {error}"))
}

/// One JSON object a line, with the fields of the event and of its spans
/// at the top level. Spans' fields must be recorded with [`JsonFields`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        // Outermost first: an inner span's field wins over an outer one's.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(recorded) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(span_fields)) = serde_json::from_str(recorded) {
                    fields.extend(span_fields);
                }
            }
        }
        event.record(&mut Fields(&mut fields));
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            jiff::Timestamp::now().to_string().into(),
        );
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("target".into(), metadata.target().into());
        for (key, value) in fields {
            line.entry(key).or_insert(value);
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Records an event's fields as JSON values.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What a subscriber with [`FlatJson`] writes while `f` runs.
    fn logged(f: impl FnOnce()) -> Vec<Value> {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("debug"))
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .with_writer(move || Writer(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.lock().expect("works").clone()).expect("UTF-8");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
            .collect()
    }

    struct Writer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("works").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reconciles_lines_carry_its_namespace_and_name_at_the_top_level() {
        let lines = logged(|| {
            let outer = tracing::info_span!("reconciling object", object.reason = "object updated");
            let _outer = outer.enter();
            let span = tracing::info_span!("reconcile", namespace = "team-a", name = "cluster-1");
            let _span = span.enter();
            tracing::warn!(error = %"no key version 2", attempt = 3_u64, "reconcile failed");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["namespace"], "team-a");
        assert_eq!(line["name"], "cluster-1");
        assert_eq!(line["message"], "reconcile failed");
        assert_eq!(line["error"], "no key version 2");
        assert_eq!(line["attempt"], 3);
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["object.reason"], "object updated");
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(line.get("span").is_none() && line.get("fields").is_none());
    }

    #[test]
    fn an_event_outside_any_span_and_its_own_fields_win() {
        let lines = logged(|| {
            tracing::info!(ready = true, "the API server answers");
            let span = tracing::info_span!("reconcile", namespace = "a", name = "b");
            let _span = span.enter();
            tracing::info!(name = "own", "named");
        });
        assert_eq!(lines[0]["ready"], true);
        assert!(lines[0].get("namespace").is_none());
        assert_eq!(lines[1]["name"], "own");
        assert_eq!(lines[1]["namespace"], "a");
    }

    #[test]
    fn the_filter_is_ksa_log_then_rust_log_then_the_default() {
        let shown = |ksa: Option<&str>, rust: Option<&str>| {
            filter(ksa, rust).expect("a filter").to_string()
        };
        assert_eq!(shown(Some("debug"), Some("error")), "debug");
        assert_eq!(shown(None, Some("error")), "error");
        assert_eq!(shown(Some(" "), Some("error")), "error");
        assert_eq!(
            shown(None, None),
            EnvFilter::new(DEFAULT_FILTER).to_string()
        );
        let error = filter(Some("info,kube=loud"), None)
            .expect_err("refused")
            .to_string();
        assert!(
            error.starts_with("KSA_LOG=\"info,kube=loud\" is not a log filter"),
            "{error}"
        );
        let error = filter(None, Some("=")).expect_err("refused").to_string();
        assert!(error.starts_with("RUST_LOG="), "{error}");
    }
}
