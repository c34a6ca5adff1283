//! `ops-agent tasks list|stats`: the runbook's `mc.js list --owner ops` and
//! `mc.js stats`, over the built-in ledger at `[paths] ledger` (which is MC
//! itself, or the agent's journal of what it filed through an MC command).

use std::process::ExitCode;

use std::io::Write as _;

use anyhow::{Context, Result};
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

/// `tasks list`: matching tasks, oldest first, written as they are read
/// (the ledger may hold years of tasks). A missing ledger is empty.
pub(crate) fn list(
    config: &Config,
    owner: Option<String>,
    tag: Option<Tag>,
    since: Option<DateTime<Utc>>,
    json: bool,
) -> Result<ExitCode> {
    let ledger = Ledger::new(config.paths.ledger.clone());
    let filter = ListFilter { owner, tag, since };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut count = 0usize;
    if !json {
        note_backend(config);
    }
    let write = |r: std::io::Result<()>| r.context("writing the task list");
    if json {
        write(out.write_all(b"{\"tasks\": ["))?;
    }
    let skipped = ledger.list(&filter, |t| {
        if json {
            write(out.write_all(if count == 0 { b"\n  " } else { b",\n  " }))?;
            serde_json::to_writer(&mut out, t).context("writing the task list")?;
        } else {
            write(writeln!(out, "{}", t.list_line()))?;
        }
        count += 1;
        Ok(())
    })?;
    if json {
        write(out.write_all(b"\n], \"skipped\": "))?;
        serde_json::to_writer(&mut out, &skipped).context("writing the task list")?;
        write(out.write_all(b"}\n"))?;
    } else {
        if count == 0 {
            write(writeln!(out, "No tasks."))?;
        }
        if !skipped.is_empty() {
            write(writeln!(
                out,
                "warning: {} unreadable ledger line(s) skipped",
                skipped.len()
            ))?;
        }
    }
    write(out.flush())?;
    Ok(ExitCode::SUCCESS)
}

/// `tasks stats`: counts by tag, priority, label and day.
pub(crate) fn stats(config: &Config, json: bool) -> Result<ExitCode> {
    let stats = Ledger::new(config.paths.ledger.clone()).stats()?;
    if json {
        super::print_json(&stats, "task stats")?;
    } else {
        note_backend(config);
        super::print_text(&stats.render_text())?;
    }
    Ok(ExitCode::SUCCESS)
}
