//! One cycle, top to bottom: the only place that knows the order of stages.
//!
//!     lock -> load state -> health checks -> save state -> unlock
//!
//! (DESIGN.md's full list; stages join here as they are built.) Each stage
//! yields an [`Outcome`] into the [`CycleReport`]; one stage's failure never
//! stops the later ones, and the whole cycle honours a deadline after which
//! remaining work is cut short, recorded, and state is still saved.

use std::future::Future;
use std::time::Instant;

use anyhow::Result;
use chrono::Utc;

use crate::config::Config;
use crate::report::{count_checks, CycleReport, Outcome};
use crate::state::{self, RuntimeState, Stats};
use crate::{health, lock};

/// Options of one cycle.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Do every read and check but no write to any external system, and
    /// say what would have been done. Nothing is saved: a dry run must not
    /// move the chat cursor over posts it did not really handle.
    pub dry_run: bool,
}

/// Runs one cycle. Errors mean the cycle could not run at all (lock held,
/// state unsafe to use, state not saved); everything else is in the report.
pub async fn run_once(config: &Config, opts: RunOptions) -> Result<CycleReport> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + config.agent.deadline());
    let now = Utc::now();
    let _lock = lock::acquire(&config.paths.lock)?;

    let loaded = state::load::<RuntimeState>(&config.paths.state, now)?;
    let stats_loaded = state::load::<Stats>(&config.paths.stats, now)?;
    let mut runtime = loaded.value;
    let mut stats = stats_loaded.value;
    runtime.record_set_aside(loaded.set_aside.into_iter().chain(stats_loaded.set_aside));
    tracing::info!(
        deadline_secs = config.agent.deadline_secs,
        dry_run = opts.dry_run,
        first_run = !loaded.existed,
        "Cycle started."
    );
    let mut report = CycleReport {
        started_ms: now.timestamp_millis(),
        dry_run: opts.dry_run,
        ..Default::default()
    };

    // Health checks: every configured check, concurrently.
    let t = Instant::now();
    match within(deadline, health::run_all(&config.checks)).await {
        Ok(results) => {
            for r in results.iter().filter(|r| r.status != health::Status::Ok) {
                tracing::warn!(check = %r.name, status = r.status.as_str(), "{}", r.reason);
            }
            report.push("health", Outcome::Ok(count_checks(&results)), ms(t));
            report.checks = results;
        }
        Err(cut) => {
            report.deadline_hit = true;
            report.push("health", Outcome::Skipped(cut.to_string()), ms(t));
        }
    }

    // Without a chat stage every post before the cycle start is (trivially)
    // handled, so the cursor moves to the start.
    runtime.last_check_ms = Some(report.started_ms);

    // Save state and stats.
    report.duration_ms = ms(started);
    if opts.dry_run {
        report.push("save", Outcome::Skipped("dry run: nothing saved".into()), 0);
        tracing::info!("{}", report.summary_line());
        return Ok(report);
    }
    report.push("save", Outcome::Ok(String::new()), 0);
    stats.record_cycle(&report, now);
    runtime.last_cycle = Some(report.clone());
    if let Err(e) = state::save(&config.paths.state, &runtime) {
        let last = report.stages.len() - 1;
        report.stages[last].outcome = Outcome::Failed(format!("{e:#}"));
        tracing::error!("{}", report.summary_line());
        return Err(e);
    }
    if let Err(e) = state::save(&config.paths.stats, &stats) {
        tracing::warn!(error = %format!("{e:#}"), "Stats not saved; counters of this cycle are lost.");
    }
    tracing::info!("{}", report.summary_line());
    Ok(report)
}

/// Why a stage did not finish.
#[derive(Debug)]
enum Cut {
    BeforeStart,
    Midway,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cut::BeforeStart => "deadline reached before the stage started",
            Cut::Midway => "cut short by the cycle deadline",
        })
    }
}

/// Runs a stage unless the deadline has passed, and cuts it at the deadline.
async fn within<T>(deadline: tokio::time::Instant, fut: impl Future<Output = T>) -> Result<T, Cut> {
    if tokio::time::Instant::now() >= deadline {
        return Err(Cut::BeforeStart);
    }
    tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| Cut::Midway)
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}
