//! What the benchmarks share: their arguments, percentiles, and the messages they send.
//! Included by each (`#[path = "common/mod.rs"] mod common;`).

#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
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

/// What one stream subscriber of a timed answer (`Fallback::TimedParts`) saw: each part's delay
/// from the fake model sending it to this subscriber reading it (ms), and the parts' `seq`s.
pub struct Timed {
    pub latencies: Vec<f64>,
    pub seqs: Vec<i64>,
}

/// Subscribes to a chat stream at `url`, says so on `ready` at its first event, and reads parts
/// until the assistant's message arrives.
pub async fn timed_subscriber(
    client: reqwest::Client,
    url: String,
    token: String,
    parts: usize,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Timed {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    let mut timed = Timed { latencies: Vec::with_capacity(parts), seqs: Vec::with_capacity(parts) };
    let mut signalled = false;
    while let Some(Ok(event)) = events.next().await {
        if !signalled {
            ready.send(()).await.unwrap();
            signalled = true;
        }
        match event.event.as_str() {
            "message_part" => {
                let received = now_micros();
                timed.seqs.push(event.id.parse::<i64>().unwrap());
                let stamp = event.data.split("t=").nth(1).and_then(|s| s.split(';').next());
                if let Some(stamp) = stamp.and_then(|s| s.parse::<u128>().ok()) {
                    timed.latencies.push(received.saturating_sub(stamp) as f64 / 1e3);
                }
            }
            "message" if event.data.contains("\"assistant\"") => break,
            _ => {}
        }
    }
    timed
}
