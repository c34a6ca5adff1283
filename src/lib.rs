//! ops-agent: a one-shot operations agent.
//!
//! Each start runs one cycle (see `cycle::run_once`) and exits. The binary in
//! `main.rs` only parses the command line and sets up logging; everything
//! else lives here so tests and benchmarks can drive it.
#![warn(missing_docs)]

pub mod config;
pub mod files;
pub mod fix;
pub mod health;
pub mod http;
pub mod secret;
