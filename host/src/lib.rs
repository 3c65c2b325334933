//! Toolhost: a self-hosted AI agent server whose tools are sandboxed WebAssembly components.
//!
//! This crate holds the server and its CLI. Module map, from what everything uses to what uses
//! everything (no module imports one that uses it: `.ci/module-cycles` checks):
//! - [`domain`]: chats, messages, roles, kinds and tools as types; imports nothing of the host.
//! - [`plugins`]: the plugin runtime (engine, limits, one instance per call) and registry
//!   (loading, validation, compiled-component cache), and [`plugins::capabilities`]: one module
//!   per WIT capability interface, the only doors out of a sandbox.
//! - [`config`]: one configuration, from file < environment < flags.
//! - [`store`]: the only place that speaks SQL (SQLite or PostgreSQL).
//! - [`app`]: the composition root: every service made from the configuration and wired, once.
//! - [`api`]: the HTTP API; [`server`] runs it.
//! - [`chat`]: the chat service, its event streams, and the worker that runs turns.
//! - [`relay`]: replicas on one PostgreSQL database: registry, notices, live parts relayed.
//! - [`llm`]: model providers (OpenAI, Anthropic wire formats), error classes, retries.
//! - [`catalog`]: providers and model configs as admins administer them.
//! - [`secrets`]: API keys sealed at rest.
//! - [`metrics`]: the Prometheus registry each module adds its own metrics to; imports nothing
//!   of the host.
//! - [`net`]: which addresses are the public internet.
//! - [`vault`]: secrets admins bind to plugins, sealed at rest, given to plugins as placeholders.
//! - [`plugin_admin`]: plugins uploaded, enabled, configured and removed by admins, followed
//!   live by every replica.
//! - [`policy`]: the admin's tool policy (Cedar): which tools a chat sees, which capabilities a call uses.
//! - [`workspace`]: templates, workspaces and their lifecycle, sandboxed commands, git watch.
//! - [`mcp`]: the MCP gateway: the tools a token's user may use, for MCP clients (rmcp).
//! - [`agents`]: subagents: child chats spawned, awaited, messaged and closed by their parents.
//! - [`accounts`]: signing in: passwords, browser sessions, limits on attempts.
//! - [`web`]: the browser app, built into the binary and served at `/`.
//! - [`cli`]: the `toolhost` commands.
//! - [`telemetry`]: where logs and traces go (stderr as text or JSON; OTLP when configured).

pub mod accounts;
pub mod agents;
pub mod api;
pub mod app;
pub mod catalog;
pub mod chat;
pub mod cli;
pub mod config;
pub mod domain;
pub mod keyed_lock;
pub mod llm;
pub mod mcp;
pub mod metrics;
pub mod net;
pub mod plugin_admin;
pub mod plugins;
pub mod policy;
pub mod relay;
pub mod secrets;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod vault;
pub mod web;
pub mod workspace;
