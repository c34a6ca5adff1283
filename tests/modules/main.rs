//! The library's modules against in-process fakes on 127.0.0.1: Mattermost
//! polling and replies, classification and reply text through Ollama,
//! escalation, the task outbox and Planka, Docker and HTTP checks and fixes,
//! and the test kit itself (`fake_harness`).
//!
//! One test binary with a module per area, so the fakes compile once for all
//! of them (see `tests/agent/main.rs` for the files that stay apart).
// Code that exercises the agent writes its fixtures, starts programs and
// sleeps directly: clippy.toml's invariants bind the agent, not this crate.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "../support/mod.rs"]
mod support;

mod classify_devset;
mod classify_llm;
mod classify_noisy;
mod escalate_flow;
mod fake_harness;
mod health_docker;
mod health_engines;
mod health_http;
mod mattermost_client;
mod reply_llm;
mod tasks_flow;
mod tasks_planka;
