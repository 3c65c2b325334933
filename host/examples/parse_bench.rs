//! How fast each wire format's parser reads a streamed answer: a 100,000-token response (one
//! token per event, as providers stream them) is fed through the same reader the server uses,
//! in 4 KiB network-sized pieces, and tokens per second are reported.
//!
//! `cargo run --release -p toolhost --example parse_bench -- [--tokens N] [--rounds N]`
//! The last line is JSON: {"openai_tokens_per_s": ..., "anthropic_tokens_per_s": ...}.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use toolhost::llm::StreamEvent;
use toolhost::llm::anthropic::EventParser;
use toolhost::llm::openai::ChunkParser;
use toolhost::llm::sse::{WireParser, parse};

const WORDS: [&str; 8] = [" the", " quick", " brown", " fox", " jumps", " over", " lazy", " dogs"];

fn openai_body(tokens: usize) -> String {
    let mut body = String::new();
    for i in 0..tokens {
        let chunk = json!({"id": "chatcmpl-8x1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": WORDS[i % WORDS.len()]}, "finish_reason": null}]});
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    body.push_str(
        "data: {\"id\":\"chatcmpl-8x1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    );
    body.push_str("data: {\"id\":\"chatcmpl-8x1\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":100000}}\n\ndata: [DONE]\n\n");
    body
}

fn anthropic_body(tokens: usize) -> String {
    let mut body = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n",
    );
    body.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for i in 0..tokens {
        let event = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": WORDS[i % WORDS.len()]}});
        body.push_str(&format!("event: content_block_delta\ndata: {event}\n\n"));
    }
    body.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
    body.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":100000}}\n\n");
    body.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    body
}

/// Tokens per second of the best round (the machine is shared; the best round is the parser's speed).
async fn measure<P: WireParser>(body: &str, tokens: usize, rounds: usize, parser: impl Fn() -> P) -> f64 {
    let pieces: Vec<Bytes> = body.as_bytes().chunks(4096).map(Bytes::copy_from_slice).collect();
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let input = futures::stream::iter(pieces.clone().into_iter().map(Ok::<_, std::io::Error>));
        let started = Instant::now();
        let mut texts = 0;
        let mut events = Box::pin(parse("bench".into(), input, parser()));
        while let Some(event) = events.next().await {
            if let StreamEvent::Text(_) = event.expect("the benchmark's stream is valid") {
                texts += 1;
            }
        }
        assert_eq!(texts, tokens, "every token was read");
        best = best.min(started.elapsed().as_secs_f64());
    }
    tokens as f64 / best
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let tokens = flag("--tokens", 100_000);
    let rounds = flag("--rounds", 5);
    let openai = measure(&openai_body(tokens), tokens, rounds, || ChunkParser::new("bench")).await;
    let anthropic = measure(&anthropic_body(tokens), tokens, rounds, || EventParser::new("bench")).await;
    println!("openai: {tokens} tokens, best of {rounds}: {openai:.0} tokens/s");
    println!("anthropic: {tokens} tokens, best of {rounds}: {anthropic:.0} tokens/s");
    println!(
        "{}",
        json!({"tokens": tokens, "rounds": rounds, "openai_tokens_per_s": openai.round(), "anthropic_tokens_per_s": anthropic.round(), "target_tokens_per_s": 1_000_000})
    );
}
