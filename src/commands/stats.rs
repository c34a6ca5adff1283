//! `ops-agent stats`: the cumulative stats file, readable; with
//! `--prometheus`, the metrics textfile's content, rendered from the same
//! stats and state files the cycle wrote it from.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::state::{RuntimeState, Stats};
use crate::store;

/// Prints the stats file (text, JSON or the Prometheus text format); a
/// missing file prints zeros.
pub fn run(config: &Config, json: bool, prometheus: bool) -> Result<ExitCode> {
    let stats: Stats = store::peek(&config.paths.stats)?.unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if prometheus {
        let runtime: RuntimeState = store::peek(&config.paths.state)?.unwrap_or_default();
        let text = crate::observe::metrics::render(&stats.metrics(&runtime));
        out.write_all(text.as_bytes()).context("writing metrics")?;
        return Ok(ExitCode::SUCCESS);
    }
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
    for (stage, outcomes) in &stats.stages {
        let o: Vec<String> = outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect();
        writeln!(out, "stage {stage:<10} {}", o.join(", "))?;
    }
    if let Some(h) = &stats.heartbeat {
        writeln!(
            out,
            "heartbeat        {} at {}",
            h.line(),
            crate::time::rfc3339_ms(h.at_ms)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
