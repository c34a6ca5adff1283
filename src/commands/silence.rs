//! `ops-agent silence`: silence a check or service for a while (it is still
//! checked, but neither fixed nor alerted), list silences, clear one. The
//! same silences a user on the allowlist can create from chat.

use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::Utc;

use super::usage;
use crate::config::Config;
use crate::escalate::silence;
use crate::state::RuntimeState;
use crate::store;

/// What `silence` was asked to do.
#[derive(Debug)]
pub(crate) enum Request<'a> {
    /// Create: target, duration (`30m`, `2h`, `1d`), reason.
    Add(&'a str, &'a str, &'a str),
    /// List active and recently ended silences.
    List,
    /// End one early.
    Clear(&'a str),
}

/// Runs the request against the state file, under the cycle lock so a
/// running cycle cannot overwrite the change.
pub(crate) fn run(config: &Config, request: Request<'_>, json: bool) -> Result<ExitCode> {
    let now = Utc::now();
    let now_ms = now.timestamp_millis();
    if let Request::List = request {
        let rt: RuntimeState = store::peek(&config.paths.state)?.unwrap_or_default();
        let silences = &rt.escalation.silences;
        if json {
            let v = silence::list_json(silences, now_ms);
            println!(
                "{}",
                serde_json::to_string_pretty(&v).context("rendering JSON")?
            );
        } else {
            print!("{}", silence::render_list(silences, now_ms));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let _lock = crate::lock::acquire(&config.paths.lock)?;
    let _trail = crate::observe::audit::open_or_warn(&config.paths.audit, None, Some("silence"));
    let mut loaded = store::load::<RuntimeState>(&config.paths.state, now)?;
    loaded.value.record_set_aside(loaded.set_aside.take());
    let silences = &mut loaded.value.escalation.silences;
    let (changed, cleared_by) = match request {
        Request::Add(target, duration, reason) => {
            if reason.trim().is_empty() {
                return Err(usage(anyhow::anyhow!(
                    "a silence needs a --reason, so the team knows why alerts stopped"
                )));
            }
            let by = std::env::var("USER").unwrap_or_else(|_| "cli".into());
            let s = silence::cli_add(
                silences,
                &config.checks,
                target,
                duration,
                reason,
                &by,
                now_ms,
            )
            .map_err(usage)?;
            tracing::warn!(target = %s.target, by = %s.by, "Silence created: {}", s.line(now_ms));
            (s, None)
        }
        Request::Clear(id) => {
            let s = silences.clear(id, now_ms).map_err(usage)?;
            tracing::info!("Silence cleared: {}", s.line(now_ms));
            (
                s,
                Some(std::env::var("USER").unwrap_or_else(|_| "cli".into())),
            )
        }
        Request::List => unreachable!("handled above"),
    };
    store::save(&config.paths.state, &loaded.value)?;
    match &cleared_by {
        None => silence::audit_created(&changed),
        Some(by) => silence::audit_ended(&changed, Some(by)),
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&changed).context("rendering JSON")?
        );
    } else {
        println!("{}", changed.line(now_ms));
    }
    Ok(ExitCode::SUCCESS)
}
