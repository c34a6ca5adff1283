//! `ops-agent health`, `fix` and `explain`: the runbook's health-check.js,
//! its manual restart steps, and "why did (or didn't) the agent act?".

use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;

use super::{print_json, runtime, usage};
use crate::config::Config;
use crate::fix::{self, FixHistory, FixOptions};
use crate::health::{self, view, HealthContext};
use crate::state::RuntimeState;
use crate::store;

/// `health [--json] [--check NAME]`: runs the checks now (nothing is
/// fixed or saved); exit 1 when something is critical.
pub(crate) fn health(config: &Config, json: bool, check: Option<&str>) -> Result<ExitCode> {
    let checks = match check {
        Some(name) => view::select_checks(&config.checks, name).map_err(usage)?,
        None => config.checks.clone(),
    };
    let ctx = HealthContext::new(&config.health);
    let mut results = runtime()?.block_on(health::run_all(&ctx, &checks));
    if let Some(name) = check {
        results.retain(|r| r.name == name);
    }
    let report = view::HealthReport::new(results);
    if json {
        print_json(&report, "the health report")?;
    } else {
        print!("{}", report.render_text());
    }
    Ok(ExitCode::from(report.exit_code() as u8))
}

/// `fix <service> <issue> [--dry-run] [--force]`: one fix by hand, counted
/// in the same rolling window as the cycle's (unless `--force`). Holds the
/// cycle lock so it never races a cycle over the fix history.
pub(crate) fn fix(
    config: &Config,
    service: &str,
    issue: &str,
    opts: FixOptions,
    json: bool,
) -> Result<ExitCode> {
    if config.checks.service_fix(service).is_none() {
        return Err(usage(fix::no_fix_for(&config.checks, service)));
    }
    let _lock = if opts.dry_run {
        None
    } else {
        Some(crate::lock::acquire(&config.paths.lock)?)
    };
    let _trail = (!opts.dry_run)
        .then(|| crate::observe::audit::open_or_warn(&config.paths.audit, None, Some("fix")))
        .flatten();
    let ctx = HealthContext::new(&config.health);
    let fx = fix::FixContext {
        health: &ctx,
        checks: &config.checks,
        history_path: &config.paths.fix_history,
        policy: &config.fix,
    };
    let (report, aside) =
        runtime()?.block_on(fix::run_manual(&fx, service, issue, opts, Utc::now()))?;
    if let Some(a) = aside {
        tracing::warn!("{a}");
    }
    tracing::info!(by = "hand", "Fix: {}", report.line());
    if json {
        print_json(&report, "the fix report")?;
    } else {
        println!("{}", report.line());
    }
    let failed = report.outcome.is_some_and(|o| o != fix::Outcome::Verified);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `fix --history [--json]`: each service's attempts in the window and the
/// budget left.
pub(crate) fn history(config: &Config, json: bool) -> Result<ExitCode> {
    let history: FixHistory = store::peek(&config.paths.fix_history)?.unwrap_or_default();
    let view = fix::history_view(&history, &config.fix, Utc::now().timestamp_millis());
    if json {
        print_json(&view, "the fix history")?;
    } else {
        print!("{}", fix::render_history(&view, &config.fix));
    }
    Ok(ExitCode::SUCCESS)
}

/// `explain <check>`: streaks, last results, parent, budget, attempts, and
/// why the agent would or would not act now; from saved state only.
pub(crate) fn explain(config: &Config, name: &str, json: bool) -> Result<ExitCode> {
    view::select_checks(&config.checks, name).map_err(usage)?;
    let runtime_state: RuntimeState = store::peek(&config.paths.state)?.unwrap_or_default();
    let history: FixHistory = store::peek(&config.paths.fix_history)?.unwrap_or_default();
    let now = Utc::now();
    let service = config.checks.get(name).map(|c| c.service().to_string());
    let silenced_until_ms = service.and_then(|s| {
        runtime_state
            .escalation
            .silences
            .until_ms(&config.checks, &s, now.timestamp_millis())
    });
    let e = crate::fix::explain(
        name,
        &config.checks,
        &runtime_state.health,
        silenced_until_ms,
        &history,
        &config.fix,
        now,
    )?;
    if json {
        print_json(&e, "the explanation")?;
    } else {
        print!("{}", e.render_text());
    }
    Ok(ExitCode::SUCCESS)
}
