//! `ops-agent tasks list|stats`: the runbook's `mc.js list --owner ops` and
//! `mc.js stats`, over the built-in ledger at `[paths] ledger` (which is MC
//! itself, or the agent's journal of what it filed through an MC command).

use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::tasks::ledger::{Ledger, ListFilter};
use crate::tasks::Tag;

/// Tells the operator, on stderr, when the ledger is only the journal.
fn note_backend(config: &Config) {
    if config.mc.uses_command() {
        eprintln!(
            "note: MC is the command `{}`; this is the agent's journal of the tasks it filed there",
            config.mc.command.first().map(String::as_str).unwrap_or("")
        );
    }
}

/// `tasks list`: matching tasks, oldest first. A missing ledger is empty.
pub fn list(
    config: &Config,
    owner: Option<String>,
    tag: Option<Tag>,
    since: Option<DateTime<Utc>>,
    json: bool,
) -> Result<ExitCode> {
    let ledger = Ledger::new(config.paths.ledger.clone());
    let result = ledger.list(&ListFilter { owner, tag, since })?;
    if json {
        super::print_json(&result, "the task list")?;
    } else {
        note_backend(config);
        super::print_text(&result.render_text())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `tasks stats`: counts by tag, priority, label and day.
pub fn stats(config: &Config, json: bool) -> Result<ExitCode> {
    let stats = Ledger::new(config.paths.ledger.clone()).stats()?;
    if json {
        super::print_json(&stats, "task stats")?;
    } else {
        note_backend(config);
        super::print_text(&stats.render_text())?;
    }
    Ok(ExitCode::SUCCESS)
}
