//! What the benchmarks share: their arguments, percentiles, and the messages they send.
//! Included by each (`#[path = "common/mod.rs"] mod common;`).

#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The value after `name` on the command line, or `default`.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

/// The `q` quantile of sorted values, rounded to hundredths.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let value = sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    (value * 100.0).round() / 100.0
}

/// A user message's body.
pub fn message(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

pub fn now_micros() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or_default()
}
