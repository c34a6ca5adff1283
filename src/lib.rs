//! ops-agent: a one-shot operations agent.
//!
//! Each start runs one cycle (see `cycle::run_once`) and exits. The binary in
//! `main.rs` only parses the command line and sets up logging; everything
//! else lives here so tests and benchmarks can drive it.
#![warn(missing_docs)]
// Unit tests write their fixtures and start helper processes directly; the
// invariants of clippy.toml hold for the code they test (checked in the
// non-test build).
#![cfg_attr(test, allow(clippy::disallowed_methods, clippy::disallowed_types))]

mod bounded;
mod budget;
pub mod chat;
pub mod classify;
pub mod cli;
pub mod commands;
mod config;
mod cycle;
pub mod escalate;
pub mod files;
pub mod fix;
pub mod health;
pub mod http;
mod intel;
mod jsonl;
pub mod lock;
mod logging;
pub mod mattermost;
mod observe;
pub mod ollama;
mod paths;
mod process;
mod report;
mod schedule;
// Not called yet: the rooms that send outside text onward take it up next.
#[cfg_attr(not(test), expect(dead_code, reason = "not wired into the rooms yet"))]
mod scrub;
pub mod secret;
mod stage;
mod state;
mod store;
pub mod tasks;
mod text;
pub mod time;
