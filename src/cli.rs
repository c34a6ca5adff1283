//! The command line (clap derive). `ops-agent` with no subcommand runs one
//! cycle, like `ops-agent run-once`, because that is what the scheduler
//! starts.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;

/// One-shot operations agent: triages chat, files tasks, checks and fixes services.
#[derive(Debug, Parser)]
#[command(name = "ops-agent", version, about, long_about = None)]
pub struct Cli {
    /// Config file (else $OPS_AGENT_CONFIG, else the platform config dir, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log detail (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do (default: run-once).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands; each replaces a command of the operators' runbook.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one cycle and exit (what the scheduler runs every 300 s).
    RunOnce {
        /// Do every read and check, write nothing to any external system, say what would be done.
        #[arg(long)]
        dry_run: bool,
    },
    /// The last cycle: when, how long, each stage, cursor age, lock holder, set-aside files.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The cumulative stats file, readable.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Complete reset: delete runtime state, token cache and fix history.
    Reset {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Classify a message as the cycle would: label, decision path, time taken.
    Classify {
        /// The message; `-` reads it from stdin.
        text: String,
        /// Use only the keyword rules.
        #[arg(long)]
        no_llm: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Validate or print configuration.
    Config {
        /// Which config action.
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// `ops-agent config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the config and print the effective values (secrets are never printed).
    Check,
    /// Print a complete commented config with every default.
    Example,
}
