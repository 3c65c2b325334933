//! Metrics for operators, in Prometheus's exposition format (`GET /metrics`).
//!
//! Each module owns its metrics, made with its own state (the plugin runtime its tool calls,
//! the chat service its turns and model calls, ...), and registers them once into the server's
//! [`Registry`] when the app is built. Names follow the OpenTelemetry GenAI conventions where
//! they name the thing (`gen_ai.client.operation.duration` is `gen_ai_client_operation_duration_seconds`
//! here, with its attributes as labels, dots made underscores); the rest are `toolhost_*`.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

pub use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::registry::{Registry, Unit};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Histograms by label set; each made with the buckets of its family.
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Durations from a millisecond to about a minute, doubling.
pub fn seconds() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17))
}

/// Durations of fast work, from 10 us to about a second, doubling (plugin instantiation).
pub fn short_seconds() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.000_01, 2.0, 17))
}

/// Token counts, at the bucket boundaries the GenAI conventions ask for
/// (`gen_ai.client.token.usage`: 1, 4, 16, ... 67,108,864).
pub fn tokens() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1.0, 4.0, 14))
}

/// Where `serve` offers `/metrics` without a token unless told otherwise: loopback, off the
/// public port (9464 is the port OpenTelemetry's Prometheus exporters use).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolState {
    /// `idle` or `in_use`.
    pub state: &'static str,
}

/// The server's registry, with the values read at each scrape (connections, subscribers) that
/// no module counts as they happen.
pub struct ServerMetrics {
    registry: Registry,
    pub stream_subscribers: Gauge,
    pub relay_connections: Gauge,
    pub database_connections: Family<PoolState, Gauge>,
    /// Events a subscriber missed because it fell behind (it was told to reconnect).
    pub events_dropped: Counter,
}

impl ServerMetrics {
    /// A registry holding what `register` adds (each module's metrics) and the server's own.
    pub fn new(register: impl FnOnce(&mut Registry)) -> ServerMetrics {
        let mut registry = Registry::default();
        register(&mut registry);
        let metrics = ServerMetrics {
            registry: Registry::default(),
            stream_subscribers: Gauge::default(),
            relay_connections: Gauge::default(),
            database_connections: Family::default(),
            events_dropped: Counter::default(),
        };
        registry.register(
            "toolhost_stream_subscribers",
            "Live chat and watch streams on this replica",
            metrics.stream_subscribers.clone(),
        );
        registry.register(
            "toolhost_relay_connections",
            "Chats this replica relays live from the replica running them",
            metrics.relay_connections.clone(),
        );
        registry.register(
            "toolhost_database_connections",
            "Database pool connections, idle and in use",
            metrics.database_connections.clone(),
        );
        registry.register(
            "toolhost_stream_events_dropped",
            "Events slow subscribers missed (each was told to reconnect)",
            metrics.events_dropped.clone(),
        );
        ServerMetrics { registry, ..metrics }
    }

    /// The registry as text, for a scrape.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        render(&self.registry)
    }
}

/// The registry as text, for a scrape.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// The label sets shared by several modules.
pub mod labels {
    use super::EncodeLabelSet;

    /// An outcome, in words (`ok`, or an error's code).
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct Outcome {
        pub outcome: String,
    }

    impl Outcome {
        pub fn of(outcome: impl Into<String>) -> Outcome {
            Outcome { outcome: outcome.into() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_renders_its_families_with_their_units_and_labels() {
        let mut registry = Registry::default();
        let calls = Family::<labels::Outcome, Counter>::default();
        let durations: Histograms<labels::Outcome> = Family::new_with_constructor(seconds);
        registry.register("toolhost_things", "Things done", calls.clone());
        registry.register_with_unit("toolhost_thing_duration", "How long", Unit::Seconds, durations.clone());
        calls.get_or_create(&labels::Outcome::of("ok")).inc();
        durations.get_or_create(&labels::Outcome::of("ok")).observe(0.003);
        let text = render(&registry).unwrap();
        assert!(text.contains("toolhost_things_total{outcome=\"ok\"} 1"), "{text}");
        assert!(text.contains("toolhost_thing_duration_seconds_count{outcome=\"ok\"} 1"), "{text}");
        assert!(text.contains("toolhost_thing_duration_seconds_bucket{le=\"0.004\",outcome=\"ok\"} 1"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
