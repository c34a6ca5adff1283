//! `ops-agent audit [--since D] [--post ID] [--check NAME] [--json]`: why
//! the agent did what it did, from the audit trail (and its rotated files),
//! oldest first, grouped by the cycle or command that did it.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::observe::query::{self, Filter};

/// Prints the matching lines; exit 0 also when none match.
pub(crate) fn run(
    config: &Config,
    since: Option<DateTime<Utc>>,
    post: Option<String>,
    check: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let names = check.map(|c| names_for(config, &c)).unwrap_or_default();
    let filter = Filter { since, post, names };
    let path = &config.paths.audit;
    let mut out = std::io::stdout().lock();
    let mut origin = String::new();
    let seen = query::scan(path, &filter, |line| {
        if json {
            serde_json::to_writer(&mut out, line).context("writing JSON")?;
            writeln!(out)?;
            return Ok(());
        }
        let o = query::origin(line);
        if o != origin {
            let day = line
                .get("at")
                .and_then(|v| v.as_str())
                .and_then(|a| a.get(..10))
                .unwrap_or("");
            writeln!(out, "{day}  {o}")?;
            origin = o;
        }
        writeln!(out, "  {}", query::describe(line))?;
        Ok(())
    })?;
    if !json {
        if seen.matched == 0 {
            writeln!(out, "no audit events match (trail: {})", path.display())?;
        }
        if seen.skipped > 0 {
            writeln!(
                out,
                "({} unreadable line(s) skipped: a line cut by a crash is harmless)",
                seen.skipped
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--check NAME`: the name, and its service when it is a check, or its
/// checks when it is a service: fixes and incidents are per service,
/// status changes per check.
fn names_for(config: &Config, name: &str) -> Vec<String> {
    let mut names = vec![name.to_string()];
    for c in config.checks.iter() {
        let service = c.service().to_string();
        if c.name == name && !names.contains(&service) {
            names.push(service);
        } else if service == name && !names.contains(&c.name) {
            names.push(c.name.clone());
        }
    }
    names
}
