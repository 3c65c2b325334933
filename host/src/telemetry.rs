//! Where the process's logs and traces go: logs to stderr (text, or JSON lines with
//! `TOOLHOST_LOG_FORMAT=json`), and, when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, every span (a turn, a model call, a tool call,
//! an MCP call) exported over OTLP/HTTP to a collector.
//!
//! The spans are `tracing`'s own; `tracing-opentelemetry` turns them into OpenTelemetry spans,
//! with their fields as attributes (the GenAI conventions' `gen_ai.*` names where they apply),
//! `otel.name` as the span's name and `otel.kind` as its kind.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

/// What must outlive the process's work: the exporter, flushed by [`Telemetry::shutdown`].
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans not yet exported (a bounded wait), then stops exporting.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(error) = provider.shutdown()
        {
            eprintln!("toolhost: the last traces could not be exported: {error}");
        }
    }
}

/// Starts logging (and tracing, when an OTLP endpoint is set) for this process. `Err` says
/// which setting is wrong.
pub fn start() -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: Box<dyn Layer<Registry> + Send + Sync> =
        match std::env::var("TOOLHOST_LOG_FORMAT").unwrap_or_default().as_str() {
            "" | "text" => logs.with_filter(filter).boxed(),
            "json" => logs.json().with_current_span(true).with_span_list(true).with_filter(filter).boxed(),
            other => return Err(format!("TOOLHOST_LOG_FORMAT is `{other}`: use `text` (the default) or `json`")),
        };
    let traces = otlp_traces()?;
    let mut layers = vec![logs];
    if let Some(provider) = &traces {
        // Every span at `info` and above, whatever the log level.
        let tracer = provider.tracer("toolhost");
        layers.push(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(LevelFilter::INFO).boxed());
    }
    tracing_subscriber::registry().with(layers).init();
    Ok(Telemetry { traces })
}

/// The OTLP exporter the standard variables ask for, if any.
fn otlp_traces() -> Result<Option<SdkTracerProvider>, String> {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    let variable = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    let protocol = match variable.as_str() {
        "" | "http/protobuf" => Protocol::HttpBinary,
        "http/json" => Protocol::HttpJson,
        other => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL is `{other}`: Toolhost exports traces over `http/protobuf` (the default) or `http/json`"
            ));
        }
    };
    // The endpoint, headers and timeout come from the standard variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .map_err(|e| format!("cannot export traces over OTLP: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "toolhost".to_string());
    let resource = Resource::builder().with_service_name(service).build();
    Ok(Some(SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(exporter).build()))
}
