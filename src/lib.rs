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

pub mod bounded;
pub mod budget;
pub mod chat;
pub mod classify;
pub mod cli;
pub mod commands;
pub mod config;
pub mod cycle;
pub mod escalate;
pub mod files;
pub mod fix;
pub mod health;
pub mod http;
pub mod intel;
pub mod jsonl;
pub mod lock;
pub mod logging;
pub mod mattermost;
pub mod observe;
pub mod ollama;
pub mod paths;
pub mod process;
pub mod report;
pub mod schedule;
pub mod scrub;
pub mod secret;
pub mod stage;
pub mod state;
pub mod store;
pub mod tasks;
pub mod text;
pub mod time;
