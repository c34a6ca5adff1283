//! What each subcommand does, and the exit codes it ends with.
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0    | the cycle ran (even degraded), or the command succeeded |
//! | 1    | fatal: the cycle could not run or its state could not be saved |
//! | 2    | command-line usage error (clap) |
//! | 75   | another cycle holds the lock (EX_TEMPFAIL: try again later) |
//! | 78   | bad configuration (EX_CONFIG) |

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::cli::{Cli, Command, ConfigAction};
use crate::config::{Config, ConfigSource};
use crate::cycle::{self, RunOptions};
use crate::lock::{self, LockHeld};
use crate::logging;
use crate::report::CycleReport;
use crate::state::{self, RuntimeState, SetAside, Stats};

/// Exit code: fatal error.
pub const EXIT_FATAL: u8 = 1;
/// Exit code: another cycle holds the lock.
pub const EXIT_LOCKED: u8 = 75;
/// Exit code: bad configuration.
pub const EXIT_CONFIG: u8 = 78;

/// Runs the parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    let level = logging::level(cli.verbose, cli.quiet);
    let command = cli.command.unwrap_or(Command::RunOnce { dry_run: false });
    if let Command::Config {
        action: ConfigAction::Example,
    } = command
    {
        print!("{}", crate::config::EXAMPLE);
        return ExitCode::SUCCESS;
    }
    let (config, source) = match Config::locate_and_load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ops-agent: configuration error: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Commands that act write to the activity log; read-only ones only to stderr.
    let writes_log = matches!(command, Command::RunOnce { .. } | Command::Reset { .. });
    if writes_log {
        if let Err(e) = logging::init(cli.log_format, level, Some(&config.paths.log)) {
            logging::init_stderr_only(cli.log_format, level);
            tracing::error!("{e:#}; logging to stderr only");
        }
    } else {
        logging::init_stderr_only(cli.log_format, level);
    }
    let result = match command {
        Command::RunOnce { dry_run } => run_once(&config, &source, dry_run),
        Command::Status { json } => status(&config, json),
        Command::Stats { json } => stats(&config, json),
        Command::Reset { yes } => reset(&config, yes),
        Command::Classify { text, no_llm, json } => classify(&config, &text, no_llm, json),
        Command::Config {
            action: ConfigAction::Check,
        } => config_check(&config, &source),
        Command::Config {
            action: ConfigAction::Example,
        } => unreachable!("handled above"),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                // `ops-agent status --json | head` closing the pipe is not an error.
                return ExitCode::SUCCESS;
            }
            if let Some(held) = e.downcast_ref::<LockHeld>() {
                tracing::warn!("Not starting: {held}.");
                eprintln!("ops-agent: {held}");
                return ExitCode::from(EXIT_LOCKED);
            }
            tracing::error!("{e:#}");
            eprintln!("ops-agent: {e:#}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run_once(config: &Config, source: &ConfigSource, dry_run: bool) -> Result<ExitCode> {
    tracing::debug!(config = %source, "Configuration loaded.");
    runtime()?.block_on(cycle::run_once(config, RunOptions { dry_run }))?;
    Ok(ExitCode::SUCCESS)
}

/// What `status --json` prints.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// The state file read.
    pub state_file: String,
    /// Whether any cycle has saved state yet.
    pub has_run: bool,
    /// The last cycle's report.
    pub last_cycle: Option<CycleReport>,
    /// The last cycle's start, RFC 3339.
    pub last_cycle_at: Option<DateTime<Utc>>,
    /// The chat cursor.
    pub last_check_ms: Option<i64>,
    /// Age of the cursor in seconds.
    pub last_check_age_secs: Option<i64>,
    /// True when no cycle completed within twice the schedule interval.
    pub overdue: bool,
    /// The schedule interval the overdue rule uses.
    pub schedule_interval_secs: u64,
    /// Who holds the cycle lock, when a cycle is running.
    pub lock_holder: Option<String>,
    /// Corrupt files moved aside.
    pub set_aside: Vec<SetAside>,
    /// Problems reading the state itself.
    pub problems: Vec<String>,
}

fn status(config: &Config, json: bool) -> Result<ExitCode> {
    let now = Utc::now();
    let mut problems = Vec::new();
    let runtime: Option<RuntimeState> = match state::peek(&config.paths.state) {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("{e:#} (the next cycle sets it aside)"));
            None
        }
    };
    let lock_holder = match lock::holder(&config.paths.lock) {
        Ok(h) => h,
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    let rt = runtime.clone().unwrap_or_default();
    let age = rt
        .last_check_ms
        .map(|ms| (now.timestamp_millis() - ms) / 1000);
    let interval = config.agent.schedule_interval_secs;
    let view = StatusView {
        state_file: config.paths.state.display().to_string(),
        has_run: runtime.is_some(),
        last_cycle_at: rt
            .last_cycle
            .as_ref()
            .and_then(|c| Utc.timestamp_millis_opt(c.started_ms).single()),
        last_cycle: rt.last_cycle,
        last_check_ms: rt.last_check_ms,
        last_check_age_secs: age,
        overdue: age.is_none_or(|a| a > 2 * interval as i64),
        schedule_interval_secs: interval,
        lock_holder,
        set_aside: rt.set_aside,
        problems,
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &view).context("writing status")?;
        writeln!(out)?;
    } else {
        write!(out, "{}", render_status(&view, now))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The text form of `status`.
pub fn render_status(v: &StatusView, now: DateTime<Utc>) -> String {
    let mut s = String::new();
    let ago = |t: DateTime<Utc>| human_age((now - t).num_seconds());
    match (&v.last_cycle, v.last_cycle_at) {
        (Some(c), Some(at)) => {
            s += &format!(
                "last cycle   {} ({} ago), {} ms, {}{}\n",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ago(at),
                c.duration_ms,
                c.overall(),
                if c.deadline_hit { ", deadline hit" } else { "" }
            );
            for st in &c.stages {
                s += &format!(
                    "  {:<12} {:<9} {:>6} ms  {}\n",
                    st.stage,
                    st.outcome.word(),
                    st.ms,
                    st.outcome.detail()
                );
            }
            for ch in c
                .checks
                .iter()
                .filter(|c| c.status != crate::health::Status::Ok)
            {
                s += &format!(
                    "  check {:<18} {:<8} {}\n",
                    ch.name,
                    ch.status.as_str(),
                    ch.reason
                );
            }
        }
        _ => s += &format!("last cycle   none yet (no state at {})\n", v.state_file),
    }
    match v.last_check_age_secs {
        Some(a) => {
            s += &format!(
                "cursor       last_check_ms {} ({} ago){}\n",
                v.last_check_ms.unwrap_or_default(),
                human_age(a),
                if v.overdue {
                    format!(
                        " OVERDUE: expected a cycle every {} s",
                        v.schedule_interval_secs
                    )
                } else {
                    ", on schedule".to_string()
                }
            )
        }
        None => s += "cursor       none (first run pending) OVERDUE\n",
    }
    s += &match &v.lock_holder {
        Some(h) => format!("lock         a cycle is running ({h})\n"),
        None => "lock         free (no cycle running)\n".to_string(),
    };
    for a in &v.set_aside {
        s += &format!(
            "set aside    {} -> {} ({})\n",
            a.path.display(),
            a.moved_to.display(),
            a.error
        );
    }
    for p in &v.problems {
        s += &format!("problem      {p}\n");
    }
    s
}

fn human_age(secs: i64) -> String {
    match secs {
        s if s < 0 => "in the future".to_string(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn stats(config: &Config, json: bool) -> Result<ExitCode> {
    let stats: Stats = state::peek(&config.paths.stats)?.unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &stats).context("writing stats")?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let when = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "never".into())
    };
    writeln!(out, "stats file       {}", config.paths.stats.display())?;
    writeln!(out, "since            {}", when(stats.since))?;
    writeln!(out, "last cycle       {}", when(stats.last_cycle_at))?;
    writeln!(
        out,
        "cycles           {} ({} degraded, {} failed, {} hit the deadline)",
        stats.cycles, stats.cycles_degraded, stats.cycles_failed, stats.deadline_hits
    )?;
    let checks: Vec<String> = stats
        .checks
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    writeln!(
        out,
        "check results    {}",
        if checks.is_empty() {
            "none".into()
        } else {
            checks.join(", ")
        }
    )?;
    for (k, v) in &stats.counters {
        writeln!(out, "{k:<16} {v}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn reset(config: &Config, yes: bool) -> Result<ExitCode> {
    let files = config.paths.reset_files();
    if !yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("reset needs confirmation: run it in a terminal or pass --yes");
        }
        eprintln!("This deletes the runtime state, the token cache and the fix history:");
        for f in files {
            eprintln!("  {}", f.display());
        }
        eprint!("The next cycle will behave like a first run. Continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("Nothing deleted.");
            return Ok(ExitCode::SUCCESS);
        }
    }
    // Hold the lock so a running cycle cannot write the state back half-reset.
    let _lock = lock::acquire(&config.paths.lock)?;
    for f in files {
        let removed = crate::files::remove_if_present(f)?;
        tracing::info!(file = %f.display(), removed, "Reset.");
        println!(
            "{} {}",
            if removed { "deleted" } else { "absent " },
            f.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn classify(config: &Config, text: &str, no_llm: bool, json: bool) -> Result<ExitCode> {
    let text = if text == "-" {
        let mut buf = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
            .context("reading the message from stdin")?;
        buf
    } else {
        text.to_string()
    };
    let report = runtime()?.block_on(crate::classify::command::run(
        &config.ollama,
        &config.classify,
        &text,
        no_llm,
    ))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("rendering JSON")?
        );
    } else {
        print!("{}", report.render_text());
    }
    Ok(ExitCode::SUCCESS)
}

fn config_check(config: &Config, source: &ConfigSource) -> Result<ExitCode> {
    println!("# config: {source}: valid");
    print!("{}", config.to_toml()?);
    Ok(ExitCode::SUCCESS)
}
