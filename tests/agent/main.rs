//! The real `ops-agent` binary end to end: each test runs it with
//! `std::process::Command` in a sandbox (temp HOME, clean environment, every
//! path inside) against fakes serving on the background runtime. Full cycles
//! (chat, escalation, health and fixes), the operator commands, the cycle
//! frame (lock, state files, config), and the MC command adapter.
//!
//! One test binary with a module per area, so the fakes compile once for all
//! of them. `tasks_mc` is here rather than in `modules` because it and
//! `tasks_flow` both set `MC_ARGV_FILE` in the process environment. Two test
//! files stay binaries of their own: `health_daemon.rs` puts fake `launchctl`
//! and `systemctl` first on the process-wide PATH, and `docker_real.rs` is the
//! real-engine tier `.ci/run` relies on.
// Code that exercises the agent writes its fixtures, starts programs and
// sleeps directly: clippy.toml's invariants bind the agent, not this crate.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "../support/mod.rs"]
mod support;

mod backlog;
mod brief_cycle;
mod chat_cycle;
mod chat_edges;
mod cli_commands;
mod completions;
mod config_fuzz;
mod corrections;
mod counts;
mod cutover;
mod cycle_frame;
mod deploy;
mod docker_ops;
mod edges;
mod escalate_cycle;
mod eval_training_data;
mod fault_matrix;
mod health_cycle;
mod kill_points;
mod log_bounds;
mod mc_exactly_once;
mod observe_cycle;
mod planka_config;
mod tasks_mc;
