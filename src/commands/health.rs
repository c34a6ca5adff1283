//! `ops-agent health`, `fix` and `explain`: the runbook's health-check.js,
//! its manual restart steps, and "why did (or didn't) the agent act?".

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;

use super::{print_json, runtime, usage};
use crate::config::Config;
use crate::fix::{self, FixHistory, FixOptions};
use crate::health::{self, view, HealthContext};
use crate::state::RuntimeState;
use crate::store;

/// `health [--json] [--check NAME]`: runs the checks now and reads them
/// through what the cycles remember (a container's restarts since the last
/// cycle count, so a crash loop shows here as it does in the cycle);
/// nothing is fixed or saved. A silenced service is shown as silenced and
/// does not count. Exit 1 when something is critical, else 3 when
/// something could not tell, else 0 ([`view::EXIT_UNKNOWN`]).
pub(crate) fn health(config: &Config, json: bool, check: Option<&str>) -> Result<ExitCode> {
    let checks = match check {
        Some(name) => view::select_checks(&config.checks, name).map_err(usage)?,
        None => config.checks.clone(),
    };
    let ctx = HealthContext::new(&config.health);
    let results = runtime()?.block_on(health::run_all(&ctx, &checks));
    // Read-only: a copy of the saved memory, never written back.
    let saved: RuntimeState = peek_or_warn(&config.paths.state);
    let history: FixHistory = peek_or_warn(&config.paths.fix_history);
    let now = Utc::now();
    let mut memory = saved.health;
    let mut results: Vec<_> = memory
        .record(&checks, &results, &history, now)
        .into_iter()
        .map(|v| v.result)
        .collect();
    if let Some(name) = check {
        results.retain(|r| r.name == name);
    }
    let now_ms = now.timestamp_millis();
    let silences = &saved.escalation.silences;
    let silenced: BTreeMap<String, i64> = results
        .iter()
        .filter_map(|r| {
            silences
                .until_ms(&config.checks, &r.service, now_ms)
                .map(|until| (r.service.clone(), until))
        })
        .collect();
    let report = view::HealthReport::new(results, &silenced);
    if json {
        print_json(&report, "the health report")?;
    } else {
        print!("{}", report.render_text());
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// What the cycles saved, for `health` and `fix`: an unreadable file (set
/// aside by the next cycle anyway) must not stop an operator's look or fix,
/// so it is said and the defaults (no memory, no silence) are used.
fn peek_or_warn<T: serde::de::DeserializeOwned + Default>(path: &std::path::Path) -> T {
    store::peek(path).map_or_else(
        |e| {
            tracing::warn!("{e:#}; going on without it (no restart counts, no silences from it)");
            T::default()
        },
        Option::unwrap_or_default,
    )
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
    let now = Utc::now();
    let saved: RuntimeState = peek_or_warn(&config.paths.state);
    let silences = &saved.escalation.silences;
    let silenced_until_ms = silences.until_ms(&config.checks, service, now.timestamp_millis());
    let (report, aside) = runtime()?.block_on(fix::run_silenced_aware(
        &fx,
        service,
        issue,
        opts,
        silenced_until_ms,
        now,
    ))?;
    if let Some(a) = aside {
        tracing::warn!("{a}");
    }
    tracing::info!(by = "hand", "Fix: {}", report.line());
    if json {
        print_json(&report, "the fix report")?;
    } else {
        println!("{}", report.line());
    }
    // A silence is the team's "leave it alone": refusing is not success.
    if let fix::FixDecision::SkipSilenced { until_ms } = report.decision {
        let now_ms = now.timestamp_millis();
        let silences: Vec<String> = silences
            .list(now_ms)
            .into_iter()
            .filter(|s| {
                s.target == service
                    || config
                        .checks
                        .get(&s.target)
                        .is_some_and(|c| c.service() == service)
            })
            .map(|s| s.line(now_ms))
            .collect();
        eprintln!(
            "{service} is silenced until {}; not fixed. Add --force to fix it anyway, or end \
             the silence with `ops-agent silence --clear ID`:\n  {}",
            crate::time::rfc3339_ms(until_ms),
            silences.join("\n  ")
        );
        return Ok(ExitCode::FAILURE);
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
/// why the agent would or would not act now; then the latest incident
/// brief of its service, when one was gathered. From saved state only.
pub(crate) fn explain(config: &Config, name: &str, json: bool) -> Result<ExitCode> {
    view::select_checks(&config.checks, name).map_err(usage)?;
    let runtime_state: RuntimeState = store::peek(&config.paths.state)?.unwrap_or_default();
    let history: FixHistory = store::peek(&config.paths.fix_history)?.unwrap_or_default();
    let now = Utc::now();
    let service = config.checks.get(name).map(|c| c.service().to_string());
    let brief = service
        .as_deref()
        .and_then(|s| runtime_state.escalation.latest_brief(s));
    let silenced_until_ms = service.as_deref().and_then(|s| {
        runtime_state
            .escalation
            .silences
            .until_ms(&config.checks, s, now.timestamp_millis())
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
        #[derive(serde::Serialize)]
        struct WithBrief<'a, T: serde::Serialize> {
            #[serde(flatten)]
            explanation: &'a T,
            #[serde(skip_serializing_if = "Option::is_none")]
            brief: Option<&'a crate::escalate::brief::Brief>,
            #[serde(skip_serializing_if = "Option::is_none")]
            brief_incident: Option<&'a str>,
        }
        let with = WithBrief {
            explanation: &e,
            brief: brief.map(|(_, b)| b),
            brief_incident: brief.map(|(k, _)| k),
        };
        print_json(&with, "the explanation")?;
    } else {
        print!("{}", e.render_text());
        if let Some((key, b)) = brief {
            print!("{}", crate::escalate::brief::render::text(b, key));
        }
    }
    Ok(ExitCode::SUCCESS)
}
