//! ops-agent: a one-shot operations agent.
//!
//! Each start runs one cycle (see `cycle::run_once`) and exits. The binary in
//! `main.rs` only parses the command line and sets up logging; everything
//! else lives here so tests and benchmarks can drive it.
//!
//! # What is public, and why
//!
//! The public surface exists for the targets built outside this crate and
//! for nothing else: `main.rs`, the test binaries (`tests/agent`,
//! `tests/modules`, `tests/docker_real.rs`, `tests/health_daemon.rs`), the
//! benches and the example. An item is `pub` when one of them names it, or
//! when it appears in the signature or fields of one that does; everything
//! else is `pub(crate)` or private. So in `src/`, `pub` marks the surface and
//! `pub(crate)` a room's inside, shared with the other rooms. The crate is
//! not published: the surface makes no promise to other crates.
//!
//! The public rooms, and who needs them:
//! - [`cli`], [`commands`]: `main.rs` (parse the command line, run it);
//! - [`chat`] (the reply), [`classify`], [`escalate`], [`fix`], [`health`],
//!   [`ollama`]: the module tests, which drive one room against the fakes,
//!   and the real-Docker and daemon tests;
//! - [`mattermost`], [`tasks`]: those tests and the benches (the poll, the
//!   ledger);
//! - [`files`], [`http`], [`lock`], [`secret`], [`time`]: what those tests
//!   build their inputs with (an atomic write, a client with timeouts, the
//!   cycle lock, a secret, a span in seconds).
//!
//! The other rooms are private modules. `unreachable_pub` keeps `pub` from
//! creeping back into them; the docs are meant to be read with
//! `--document-private-items`, so public docs may link into a room's inside.
#![warn(missing_docs, unreachable_pub)]
#![allow(rustdoc::private_intra_doc_links)]
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
mod scrub;
pub mod secret;
mod stage;
mod state;
mod store;
pub mod tasks;
mod text;
pub mod time;
