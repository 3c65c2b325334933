//! What the chat service counts: turns by outcome, and model calls as the OpenTelemetry GenAI
//! conventions name them (duration, time to the first chunk, tokens), with their cost and
//! retries by error class.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::atomic::AtomicU64;

use crate::catalog::Resolved;
use crate::llm::Usage;
use crate::metrics::{EncodeLabelSet, Histograms, Registry, Unit, labels::Outcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelCall {
    gen_ai_operation_name: &'static str,
    gen_ai_provider_name: String,
    gen_ai_request_model: String,
    /// Empty (so absent, for Prometheus) when the call succeeded; else the error's class.
    error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Model {
    gen_ai_provider_name: String,
    gen_ai_request_model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tokens {
    gen_ai_provider_name: String,
    gen_ai_request_model: String,
    /// `input` or `output`.
    gen_ai_token_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Retry {
    gen_ai_provider_name: String,
    gen_ai_request_model: String,
    error_type: String,
}

#[derive(Clone)]
pub(crate) struct ChatMetrics {
    turns: Family<Outcome, Counter>,
    model_calls: Histograms<ModelCall>,
    first_chunk: Histograms<Model>,
    tokens: Histograms<Tokens>,
    cost: Family<Model, Counter<f64, AtomicU64>>,
    retries: Family<Retry, Counter>,
}

/// One model call being timed, from its request to its last chunk.
pub(crate) struct ModelCallTimer<'a> {
    metrics: &'a ChatMetrics,
    model: Model,
    started: std::time::Instant,
    first_chunk: bool,
}

impl ChatMetrics {
    pub(crate) fn new() -> ChatMetrics {
        ChatMetrics {
            turns: Family::default(),
            model_calls: Family::new_with_constructor(crate::metrics::seconds),
            first_chunk: Family::new_with_constructor(crate::metrics::seconds),
            tokens: Family::new_with_constructor(crate::metrics::tokens),
            cost: Family::default(),
            retries: Family::default(),
        }
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register("toolhost_turns", "Chat turns by how they ended", self.turns.clone());
        registry.register_with_unit(
            "gen_ai_client_operation_duration",
            "Model calls (each attempt) by provider, model and error, and how long they took",
            Unit::Seconds,
            self.model_calls.clone(),
        );
        registry.register_with_unit(
            "gen_ai_client_operation_time_to_first_chunk",
            "Time from a model call's request to its first streamed chunk",
            Unit::Seconds,
            self.first_chunk.clone(),
        );
        registry.register("gen_ai_client_token_usage", "Tokens per model call, input and output", self.tokens.clone());
        registry.register(
            "toolhost_model_cost_usd",
            "What model calls cost, in US dollars, at the model's prices",
            self.cost.clone(),
        );
        registry.register(
            "toolhost_model_retries",
            "Model calls tried again, by the error's class",
            self.retries.clone(),
        );
    }

    /// A turn ended (`completed`, `interrupted`, `failed`, ...).
    pub(crate) fn turn_ended(&self, outcome: &str) {
        self.turns.get_or_create(&Outcome::of(outcome)).inc();
    }

    /// Starts timing a model call (an attempt: a retry is a call of its own).
    pub(crate) fn model_call<'a>(&'a self, model: &Resolved) -> ModelCallTimer<'a> {
        let model = Model {
            gen_ai_provider_name: model.provider_name.clone(),
            gen_ai_request_model: model.record.name.clone(),
        };
        ModelCallTimer { metrics: self, model, started: std::time::Instant::now(), first_chunk: false }
    }

    /// The tokens and cost of a finished call.
    pub(crate) fn usage(&self, model: &Resolved, usage: &Usage) {
        let labels = |kind| Tokens {
            gen_ai_provider_name: model.provider_name.clone(),
            gen_ai_request_model: model.record.name.clone(),
            gen_ai_token_type: kind,
        };
        let input = usage.input_tokens + usage.cache_read_tokens + usage.cache_creation_tokens;
        self.tokens.get_or_create(&labels("input")).observe(input as f64);
        self.tokens.get_or_create(&labels("output")).observe(usage.output_tokens as f64);
        let cost = crate::catalog::cost_usd(&model.record.pricing, usage);
        let labels = Model {
            gen_ai_provider_name: model.provider_name.clone(),
            gen_ai_request_model: model.record.name.clone(),
        };
        self.cost.get_or_create(&labels).inc_by(cost);
    }
}

/// An error class as the API and the metrics name it (`rate_limited`, `server`, ...).
pub(crate) fn error_class(kind: crate::llm::ErrorKind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{kind:?}"))
}

impl ModelCallTimer<'_> {
    /// A chunk arrived: the first one is timed.
    pub(crate) fn chunk(&mut self) {
        if !self.first_chunk {
            self.first_chunk = true;
            self.metrics.first_chunk.get_or_create(&self.model).observe(self.started.elapsed().as_secs_f64());
        }
    }

    /// The call ended: `None` when it succeeded, else its error's class.
    pub(crate) fn ended(&mut self, error: Option<&str>) {
        self.observe(self.started.elapsed(), error);
    }

    /// The call failed with `error` and is tried again after `delay`: it counts as a failed
    /// call and a retry, and the next attempt is timed from when it starts.
    pub(crate) fn retrying(&mut self, error: &str, delay: Duration) {
        self.observe(self.started.elapsed(), Some(error));
        let labels = Retry {
            gen_ai_provider_name: self.model.gen_ai_provider_name.clone(),
            gen_ai_request_model: self.model.gen_ai_request_model.clone(),
            error_type: error.to_string(),
        };
        self.metrics.retries.get_or_create(&labels).inc();
        self.started = std::time::Instant::now() + delay;
        self.first_chunk = false;
    }

    fn observe(&self, took: Duration, error: Option<&str>) {
        let labels = ModelCall {
            gen_ai_operation_name: "chat",
            gen_ai_provider_name: self.model.gen_ai_provider_name.clone(),
            gen_ai_request_model: self.model.gen_ai_request_model.clone(),
            error_type: error.unwrap_or_default().to_string(),
        };
        self.metrics.model_calls.get_or_create(&labels).observe(took.as_secs_f64());
    }
}
