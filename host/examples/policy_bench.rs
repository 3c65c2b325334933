//! How fast policy decides: with 100 installed tools and 50 rules, the time to compute a chat's
//! visible tool set (cold: a principal not seen before; warm: cached) and the time of a single
//! check (a tool call, a scoped capability use, an outbound HTTP request's origin), as p50 and
//! p99 over many runs.
//!
//! `cargo run --release -p toolhost --example policy_bench -- [--runs N]`
//! The last line is JSON: {"tools": 100, "rules": 50, "visible_set_cold_us_p50": ..., ...}.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

use std::time::Instant;

use toolhost::domain::ChatKind;
use toolhost::policy::{Action, DEFAULT_POLICY, Principal, check_text, sample_inventory};

const TOOLS: usize = 100;
const RULES: usize = 50;

/// The default policy's 5 rules, an allow-list of origins for a third-party plugin's outbound
/// HTTP, and 44 more of the kinds admins write: tools hidden from subagents, grants to
/// third-party plugins, limits by depth, model and role, and path scopes.
fn policy() -> String {
    let origins: Vec<String> = (0..20).map(|i| format!("\"https://api-{i}.example.com:443\"")).collect();
    let mut text = format!(
        "{DEFAULT_POLICY}\n@id(\"weather-origins\")\npermit (principal, action == Action::\"use_capability\", resource == Capability::\"http\") when {{ context.plugin.name == \"weather\" && context has scope && [{}].contains(context.scope) }};\n",
        origins.join(", ")
    );
    let mut rules = 6;
    let mut n = 0;
    while rules < RULES {
        let rule = match n % 5 {
            0 => format!(
                "forbid (principal, action in [Action::\"see_tool\", Action::\"call_tool\"], resource == Tool::\"extra_{n}\") when {{ principal.kind == \"subagent\" }};"
            ),
            1 => format!(
                "permit (principal, action == Action::\"use_capability\", resource == Capability::\"log\") when {{ context.plugin.name == \"weather\" && context.tool == \"extra_{n}\" }};"
            ),
            2 => format!(
                "forbid (principal, action == Action::\"call_tool\", resource) when {{ principal.depth > {} && resource.name == \"extra_{n}\" }};",
                n % 4 + 1
            ),
            3 => format!(
                "forbid (principal, action == Action::\"see_tool\", resource) when {{ principal.model == \"cheap-{n}\" && resource.annotations.destructive }};"
            ),
            _ => format!(
                "forbid (principal, action == Action::\"use_capability\", resource == Capability::\"workspace-fs\") when {{ context has scope && context.scope like \"secret-{n}/*\" && principal.owner_role == \"member\" }};"
            ),
        };
        text.push_str(&format!("\n@id(\"rule-{n}\")\n{rule}\n"));
        rules += 1;
        n += 1;
    }
    text
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() - 1) as f64 * p) as usize]
}

fn principal(id: usize, kind: ChatKind) -> Principal {
    Principal {
        id: format!("chat-{id}"),
        kind,
        depth: i64::from(kind != ChatKind::Root),
        owner: "alice".into(),
        owner_role: "member".into(),
        model: "test-model".into(),
    }
}

fn main() {
    let runs: usize =
        std::env::args().skip_while(|a| a != "--runs").nth(1).and_then(|n| n.parse().ok()).unwrap_or(2000);
    let inventory = sample_inventory(TOOLS);
    let rules =
        check_text(&policy(), &inventory).unwrap_or_else(|e| panic!("the benchmark policy is invalid: {e}")).rules;

    let mut cold = Vec::with_capacity(runs);
    for i in 0..runs {
        let chat = principal(i, if i % 2 == 0 { ChatKind::Root } else { ChatKind::Subagent });
        let started = Instant::now();
        let visible = rules.visible_tools(&chat);
        cold.push(started.elapsed().as_secs_f64() * 1e6);
        assert!(!visible.is_empty());
    }
    let chat = principal(usize::MAX, ChatKind::Subagent);
    rules.visible_tools(&chat);
    let mut warm = Vec::with_capacity(runs);
    let mut call = Vec::with_capacity(runs);
    let mut scoped = Vec::with_capacity(runs);
    let mut origin = Vec::with_capacity(runs);
    for i in 0..runs {
        let started = Instant::now();
        let visible = rules.visible_tools(&chat);
        warm.push(started.elapsed().as_secs_f64() * 1e6);
        assert!(!visible.contains("spawn_agent"));

        let tool = format!("extra_{}", i % 80);
        let started = Instant::now();
        let decision = rules.decide_tool(&chat, Action::CallTool, &tool);
        call.push(started.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(decision);

        let path = format!("src/module_{}/file.rs", i % 50);
        let started = Instant::now();
        let decision = rules.decide_capability(&chat, "files", "read_file", "workspace-fs", Some(&path));
        scoped.push(started.elapsed().as_secs_f64() * 1e6);
        assert!(decision.allowed);

        // What each outbound request of a plugin asks before it leaves.
        let asked = format!("https://api-{}.example.com:443", i % 25);
        let started = Instant::now();
        let decision = rules.decide_capability(&chat, "weather", "forecast", "http", Some(&asked));
        origin.push(started.elapsed().as_secs_f64() * 1e6);
        assert_eq!(decision.allowed, i % 25 < 20, "{asked}: {}", decision.decided_by);
    }
    let (cold50, cold99) = (percentile(&mut cold, 0.5), percentile(&mut cold, 0.99));
    let (warm50, call50, call99) =
        (percentile(&mut warm, 0.5), percentile(&mut call, 0.5), percentile(&mut call, 0.99));
    let (scoped50, scoped99) = (percentile(&mut scoped, 0.5), percentile(&mut scoped, 0.99));
    let (origin50, origin99) = (percentile(&mut origin, 0.5), percentile(&mut origin, 0.99));
    println!("{TOOLS} tools, {RULES} rules, {runs} runs");
    println!("visible tool set, new chat:    p50 {cold50:8.1} us   p99 {cold99:8.1} us");
    println!("visible tool set, cached:      p50 {warm50:8.2} us");
    println!("single call check:             p50 {call50:8.2} us   p99 {call99:8.2} us   (target p50 <= 20 us)");
    println!("scoped capability check:       p50 {scoped50:8.2} us   p99 {scoped99:8.2} us");
    println!("outbound HTTP origin check:    p50 {origin50:8.2} us   p99 {origin99:8.2} us   (20 allowed origins)");
    println!(
        "{}",
        serde_json::json!({
            "tools": TOOLS, "rules": RULES, "runs": runs,
            "visible_set_cold_us_p50": cold50, "visible_set_cold_us_p99": cold99, "visible_set_cached_us_p50": warm50,
            "call_check_us_p50": call50, "call_check_us_p99": call99,
            "scoped_capability_check_us_p50": scoped50, "scoped_capability_check_us_p99": scoped99,
            "http_origin_check_us_p50": origin50, "http_origin_check_us_p99": origin99,
        })
    );
}
