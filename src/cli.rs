//! The command line (clap derive). `ops-agent` with no subcommand runs one
//! cycle, like `ops-agent run-once`, because that is what the scheduler
//! starts.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::logging::LogFormat;
use crate::tasks::Tag;

/// One-shot operations agent: triages chat, files tasks, checks and fixes services.
#[derive(Debug, Parser)]
#[command(name = "ops-agent", version, about, long_about = None)]
pub struct Cli {
    /// Config file (else $OPS_AGENT_CONFIG, else the platform config dir, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// More log detail (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,
    /// What to do (default: run-once).
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// The subcommands; each replaces a command of the operators' runbook.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
        /// Exit 1 when OVERDUE, when the last cycle failed or the state cannot be read (for scripts).
        #[arg(long)]
        check: bool,
    },
    /// The cumulative stats file, readable.
    Stats {
        /// Machine-readable output.
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// The Prometheus text format, as in the metrics textfile.
        #[arg(long)]
        prometheus: bool,
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
        /// Classify it as a post of this team: the LLM's worked examples
        /// are that team's corrections (and only that team's).
        #[arg(long, value_name = "TEAM")]
        team: Option<String>,
        /// Use only the fallback (rules, model and the team's corrections), no LLM.
        #[arg(long)]
        no_llm: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run the health checks now and print a table; exit 1 when something is critical, 3 when
    /// something is unknown (silenced services do not count).
    Health {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only this check (its parents run too, for blocking).
        #[arg(long, value_name = "NAME")]
        check: Option<String>,
    },
    /// Run one configured fix by hand (silences and the rate limit honoured unless --force), or
    /// show the history.
    Fix {
        /// The service to fix.
        #[arg(required_unless_present = "history")]
        service: Option<String>,
        /// What is wrong (recorded with the attempt).
        #[arg(required_unless_present = "history")]
        issue: Option<String>,
        /// Say what would run; run and record nothing.
        #[arg(long)]
        dry_run: bool,
        /// Ignore a silence, the attempt budget and the start grace (never a blocked or starting
        /// service).
        #[arg(long)]
        force: bool,
        /// Show each service's attempts in the window and the budget left.
        #[arg(long, conflicts_with_all = ["service", "issue", "dry_run", "force"])]
        history: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Why the agent would or would not act on a check now: streaks, results, budget.
    Explain {
        /// The check's name.
        check: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Silence a check or service (still checked; no fix, no alert), list silences, or clear one.
    Silence {
        /// The check or service to silence.
        #[arg(required_unless_present_any = ["list", "clear"])]
        target: Option<String>,
        /// How long: 90s, 30m, 2h, 1d.
        #[arg(required_unless_present_any = ["list", "clear"])]
        duration: Option<String>,
        /// Why (shown in alerts' place and in --list).
        #[arg(long, required_unless_present_any = ["list", "clear"])]
        reason: Option<String>,
        /// List active and recently ended silences.
        #[arg(long, conflicts_with_all = ["target", "duration", "reason", "clear"])]
        list: bool,
        /// End the silence with this id early.
        #[arg(long, value_name = "ID", conflicts_with_all = ["target", "duration", "reason"])]
        clear: Option<String>,
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
    /// Mattermost (the runbook's "check MM connectivity").
    Mm {
        /// Which Mattermost action.
        #[command(subcommand)]
        action: MmAction,
    },
    /// The task ledger (the runbook's `mc.js list` and `mc.js stats`).
    Tasks {
        /// Which task action.
        #[command(subcommand)]
        action: TasksAction,
    },
    /// Check config, state files, lock and every dependency; exit 1 when something fails.
    Doctor {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Why the agent did what it did: the audit trail, oldest first, for a post or a service.
    Audit {
        /// Only since a date (2024-05-01), an RFC 3339 time or a span (2h, 1d, 1h30m).
        #[arg(long, value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
        /// Only what concerns this post (its label, task, card and reply).
        #[arg(long, value_name = "ID")]
        post: Option<String>,
        /// Only what concerns this check or service (status changes, fixes, incidents, silences).
        #[arg(long, value_name = "NAME")]
        check: Option<String>,
        /// One JSON object per line, as stored.
        #[arg(long)]
        json: bool,
    },
    /// Measure the classifier on labelled posts: accuracy, precision and recall per label,
    /// confusion matrix, decision paths, latency.
    Eval {
        /// JSON lines of {"text", "label"}; without it, the recorded corrections.
        file: Option<PathBuf>,
        /// Only the fallback (rules, model and the team's corrections), no LLM.
        #[arg(long)]
        no_llm: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Whether corrections help: N times, split FILE in two halves at
        /// random, record the fallback's wrong answers on one half as
        /// corrections and score the other half with and without them
        /// (fallback only).
        #[arg(long, value_name = "N", requires = "file")]
        halves: Option<u32>,
    },
    /// Install the scheduled job (LaunchAgent or systemd user timer) for this binary and config, and load it.
    Install {
        /// Which scheduler.
        #[command(flatten)]
        target: SchedulerArg,
        /// Seconds between cycles (default: agent.schedule_interval_secs, 300).
        #[arg(long, value_name = "SECS")]
        interval: Option<u64>,
        /// Print each file after a `# <path>` line; write and load nothing.
        #[arg(long)]
        print: bool,
        /// Replace job files that exist and differ.
        #[arg(long)]
        force: bool,
    },
    /// Unload the scheduled job and remove its files (state, logs and config stay).
    Uninstall {
        /// Which scheduler.
        #[command(flatten)]
        target: SchedulerArg,
    },
    /// Unload and load the scheduled job again (after a running cycle ends) and check it is loaded.
    Restart {
        /// Which scheduler.
        #[command(flatten)]
        target: SchedulerArg,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `ops-agent man | man -l -`.
    Man,
}

/// `--launchd` or `--systemd`, exactly one.
#[derive(Debug, Clone, Copy, clap::Args)]
#[group(required = true, multiple = false)]
pub(crate) struct SchedulerArg {
    /// A LaunchAgent in your gui/<uid> domain (macOS).
    #[arg(long)]
    launchd: bool,
    /// A systemd user service and timer (Linux).
    #[arg(long)]
    systemd: bool,
}

impl SchedulerArg {
    /// The scheduler chosen.
    pub(crate) fn scheduler(self) -> crate::schedule::Scheduler {
        if self.launchd {
            crate::schedule::Scheduler::Launchd
        } else {
            crate::schedule::Scheduler::Systemd
        }
    }
}

/// `ops-agent mm ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum MmAction {
    /// Ping, server version, who the token is, each team, cursor age; exit 1 when not usable.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `ops-agent tasks ...`: the built-in ledger at `[paths] ledger`.
#[derive(Debug, Subcommand)]
pub(crate) enum TasksAction {
    /// Tasks the agent filed, oldest first.
    List {
        /// Only tasks of this owner (e.g. `ops`).
        #[arg(long)]
        owner: Option<String>,
        /// Only BILLABLE or INTERNAL tasks (any case).
        #[arg(long, value_parser = parse_tag)]
        tag: Option<Tag>,
        /// Only tasks created since a date (2024-05-01), an RFC 3339 time or a span (7d, 24h, 30m).
        #[arg(long, value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Counts by tag, priority, label and day.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Try every task and card waiting in the outbox now (e.g. once Planka
    /// is back), instead of at its next backoff; exit 1 when some still wait.
    Retry {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// clap adapter for [`Tag::parse`], so a bad `--tag` is a usage error (exit 2).
fn parse_tag(s: &str) -> Result<Tag, String> {
    Tag::parse(s).map_err(|e| e.to_string())
}

/// clap adapter for `ledger::parse_since`; spans count back from now.
fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    crate::tasks::ledger::parse_since(s, Utc::now()).map_err(|e| e.to_string())
}

/// `ops-agent config ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigAction {
    /// Validate the config and print the effective values (secrets are never printed).
    Check,
    /// Print a complete commented config with every default.
    Example,
}
