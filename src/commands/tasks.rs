//! `ops-agent tasks list|stats`: the runbook's `mc.js list --owner ops` and
//! `mc.js stats`, over the built-in ledger at `[paths] ledger` (which is MC
//! itself, or the agent's journal of what it filed through an MC command);
//! `ops-agent tasks retry`: the task outbox now, not at its next backoff.

use std::process::ExitCode;

use std::io::Write as _;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::state::RuntimeState;
use crate::store;
use crate::tasks::ledger::{Ledger, ListFilter};
use crate::tasks::outbox::{self, CardOutcome};
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

/// `tasks retry`: every task and card waiting in the outbox is tried now
/// (after Planka or MC is back, instead of waiting out the backoff), under
/// the cycle lock, exactly once per source as a cycle would. Exit 1 when
/// some still wait.
pub(crate) fn retry(config: &Config, json: bool) -> Result<ExitCode> {
    let now = Utc::now();
    let p = &config.paths;
    let _lock = crate::lock::acquire(&p.lock)?;
    let _trail = crate::observe::audit::open_or_warn(&p.audit, None, Some("tasks retry"));
    let mut loaded = store::load::<RuntimeState>(&p.state, now)?;
    loaded.value.record_set_aside(loaded.set_aside.take());
    let mut runtime = loaded.value;
    // What a cycle killed halfway made durable post by post.
    let journal = store::journal_path(&p.state);
    store::replay(&journal, |e| runtime.apply(e))?;
    let trackers = crate::cycle::trackers(config)?;
    let results = super::runtime()?.block_on(outbox::retry(
        trackers.targets(false),
        &mut runtime.tasks,
        now,
        outbox::Which::All,
    ));
    crate::cycle::save_state(&p.state, &mut runtime)?;
    let waiting = results.iter().filter(|r| r.outcome.is_err()).count();
    if json {
        super::print_json(
            &serde_json::json!({ "retried": results, "still_waiting": runtime.tasks.outbox.len() }),
            "the retry",
        )?;
    } else {
        let mut out = String::new();
        if results.is_empty() {
            out.push_str("Nothing waits in the outbox.\n");
        }
        for r in &results {
            let line = match &r.outcome {
                Ok(o) => match &o.card {
                    CardOutcome::Created { url, .. } => format!("card made: {url}"),
                    CardOutcome::Exists { url, .. } => format!("card found: {url}"),
                    CardOutcome::Disabled { reason } => format!("no card: {reason}"),
                    _ => format!("task {}", o.task_ref.id),
                },
                Err(e) => format!("still waiting: {e}"),
            };
            out.push_str(&format!("{}: {line}\n", r.source));
        }
        if waiting > 0 {
            out.push_str(&format!(
                "{waiting} still wait in the outbox; the next cycles retry them.\n"
            ));
        }
        super::print_text(&out)?;
    }
    Ok(if waiting == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
