//! `ops-agent doctor`: everything an operator checks when something is off,
//! in one command. Each line is ok, warn or fail with the reason:
//!
//! * the config (where it came from, whether it is valid);
//! * every state-like file (exists? a symlink? ours? owner-only? parses?)
//!   and whether its directory is writable, plus the cycle lock;
//! * MC (the command's program exists and is executable, or the built-in
//!   ledger can be written);
//! * the heartbeat's last ping and the metrics textfile;
//! * Mattermost (configured? ping? token valid? each team), Ollama (tags
//!   reachable? both models pulled?), Planka (enabled? reachable?
//!   credentials present?) and each Docker engine the checks use (answers?
//!   TLS files there, the key owner-only?), probed concurrently with their
//!   configured timeouts;
//! * the free space on each volume the state-like files are saved on.
//!
//! **fail** means the cycle cannot do a core job until someone acts (no
//! Mattermost, state that cannot be saved, no MC); **warn** means it runs
//! degraded or will repair it by itself (Ollama down: the fallback; Planka
//! down: cards wait in the outbox; a corrupt file: set aside). Exit 1 when
//! anything fails, else 0. Doctor writes nothing (a password login may
//! refresh the Mattermost token cache, as a cycle would).
//!
//! * what the scheduled job will see: the secret files it reads (ours,
//!   owner-only), secrets it would want from an environment it does not
//!   have, and the job itself (installed, current, loaded).
//!
//! Gathering facts does I/O; judging them ([`files::judge_file`], `deps::mm_findings`,
//! `deps::ollama_findings`) and rendering ([`render`]) are pure and table-tested.

mod deps;
mod docker;
mod files;
mod job;
mod observe;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::config::{Config, ConfigSource};
use crate::logging::escape_controls;
use crate::state::{RuntimeState, Stats};

use deps::{mc_finding, probe_mattermost, probe_ollama, probe_planka, uncertain_finding};
use files::{inspect, judge_file, lock_finding, parses, Content};

/// How bad one finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    /// Nothing to do.
    Ok,
    /// Degraded or self-repairing; worth a look.
    Warn,
    /// A core job cannot work until someone acts.
    Fail,
}

impl Level {
    /// The word in the text output.
    fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One checked thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Finding {
    /// What was checked ("state file", "mattermost team basic").
    check: String,
    /// How bad.
    level: Level,
    /// Why, in one line (never a secret).
    reason: String,
}

fn finding(check: impl Into<String>, level: Level, reason: impl Into<String>) -> Finding {
    Finding {
        check: check.into(),
        level,
        reason: reason.into(),
    }
}

/// How many findings of each level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
struct Counts {
    /// Fine.
    ok: usize,
    /// Worth a look.
    warn: usize,
    /// Must be fixed.
    fail: usize,
}

/// What `doctor --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Report {
    /// True when nothing failed (the exit code is 0 exactly then).
    ok: bool,
    /// Findings per level.
    counts: Counts,
    /// Every finding, in check order.
    checks: Vec<Finding>,
}

impl Report {
    /// Counts the findings.
    fn new(checks: Vec<Finding>) -> Report {
        let mut counts = Counts::default();
        for f in &checks {
            match f.level {
                Level::Ok => counts.ok += 1,
                Level::Warn => counts.warn += 1,
                Level::Fail => counts.fail += 1,
            }
        }
        Report {
            ok: counts.fail == 0,
            counts,
            checks,
        }
    }
}

/// The text form: one aligned line per finding, then a summary, every
/// control character escaped as the log does (a reason may quote an MC
/// command's stderr or an HTTP body: no screen clear, no forged line).
/// Pure.
fn render(r: &Report) -> String {
    let w = r.checks.iter().map(|f| f.check.len()).max().unwrap_or(0);
    let mut s = String::new();
    for f in &r.checks {
        let (check, reason) = (escape_controls(&f.check), escape_controls(&f.reason));
        s += &format!("{:<4}  {check:<w$}  {reason}\n", f.level.as_str());
    }
    s += &format!(
        "{}: {} ok, {} warn, {} fail\n",
        if r.ok { "healthy" } else { "PROBLEMS" },
        r.counts.ok,
        r.counts.warn,
        r.counts.fail
    );
    s
}

/// `ops-agent doctor` with a loaded config.
pub(crate) fn run(config: &Config, source: &ConfigSource, json: bool) -> Result<ExitCode> {
    let mut first = vec![finding("config", Level::Ok, format!("{source}: valid"))];
    first.extend(
        config
            .warnings
            .iter()
            .map(|w| finding("config", Level::Warn, w.clone())),
    );
    let mut report = examine(config, first)?;
    report = Report::new(
        report
            .checks
            .into_iter()
            .chain(job::findings(config, source))
            .collect(),
    );
    output(report, json)
}

/// `ops-agent doctor` when the config did not load: one failed check, and
/// everything else examined against the built-in defaults.
pub(crate) fn run_with_broken_config(error: &anyhow::Error, json: bool) -> Result<ExitCode> {
    let defaults = Config::from_toml("", "built-in defaults")?;
    let first = vec![
        finding("config", Level::Fail, format!("{error:#}")),
        finding(
            "config",
            Level::Warn,
            "the checks below use the built-in defaults",
        ),
    ];
    output(examine(&defaults, first)?, json)
}

fn output(report: Report, json: bool) -> Result<ExitCode> {
    if json {
        super::print_json(&report, "the doctor report")?;
    } else {
        super::print_text(&render(&report))?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FATAL)
    })
}

fn examine(config: &Config, mut out: Vec<Finding>) -> Result<Report> {
    let p = &config.paths;
    let json_as = |parse: fn(&[u8]) -> Result<(), String>| Content::Json(parse);
    let files: [(&str, &Path, Content); 8] = [
        ("state file", &p.state, json_as(parses::<RuntimeState>)),
        (
            "token cache",
            &p.token_cache,
            json_as(parses::<serde_json::Value>),
        ),
        (
            "fix history",
            &p.fix_history,
            json_as(parses::<serde_json::Value>),
        ),
        ("stats file", &p.stats, json_as(parses::<Stats>)),
        ("task ledger", &p.ledger, Content::Ledger),
        ("activity log", &p.log, Content::Text),
        (
            "planka token cache",
            &p.planka_token_cache,
            json_as(parses::<serde_json::Value>),
        ),
        ("audit trail", &p.audit, Content::JsonLines),
    ];
    for (name, path, content) in &files {
        out.push(judge_file(name, path, &inspect(path, *content)));
    }
    let saved: Vec<(&str, &Path)> = files
        .iter()
        .map(|(name, path, _)| (*name, *path))
        .chain([("lock", p.lock.as_path())])
        .collect();
    out.extend(docker::space_findings(&saved));
    let runtime = crate::store::peek::<RuntimeState>(&p.state)
        .ok()
        .flatten()
        .unwrap_or_default();
    out.push(lock_finding(&p.lock));
    out.push(mc_finding(&config.mc, &p.ledger));
    if let Some(f) = uncertain_finding(&runtime.tasks) {
        out.push(f);
    }
    let stats = crate::store::peek::<Stats>(&p.stats).ok().flatten();
    let last_ping = stats.as_ref().and_then(|s| s.heartbeat.as_ref());
    let now_ms = chrono::Utc::now().timestamp_millis();
    out.push(observe::heartbeat_finding(
        config.heartbeat.enabled(),
        last_ping,
        now_ms,
    ));
    out.push(observe::metrics_finding(
        &config.metrics,
        std::time::SystemTime::now(),
    ));
    // Cached team ids, shown when the server is unreachable.
    let mm_state = runtime.mattermost;

    let rt = super::runtime()?;
    let (mm, llm, planka, engines) = rt.block_on(async {
        tokio::join!(
            probe_mattermost(config, &mm_state),
            probe_ollama(&config.ollama),
            probe_planka(
                &config.planka,
                &p.planka_token_cache,
                &config.mattermost.alert_channel
            ),
            docker::engine_findings(config),
        )
    });
    out.extend(mm);
    out.extend(llm);
    out.extend(planka);
    out.extend(engines);
    Ok(Report::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_aligns_and_summarises() {
        let r = Report::new(vec![
            finding("config", Level::Ok, "built-in defaults: valid"),
            finding("mattermost team basic", Level::Fail, "no such team"),
            finding("ollama", Level::Warn, "down"),
        ]);
        assert!(!r.ok);
        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ok    config                 built-in defaults: valid"
        );
        assert_eq!(lines[1], "FAIL  mattermost team basic  no such team");
        assert_eq!(lines[3], "PROBLEMS: 1 ok, 1 warn, 1 fail");
        assert!(Report::new(vec![finding("x", Level::Warn, "w")]).ok);
    }

    #[test]
    fn render_escapes_terminal_control_from_outside() {
        let r = Report::new(vec![finding(
            "heartbeat",
            Level::Warn,
            "HTTP 500: \u{1b}[2Jboom\u{7}\nok    config  forged",
        )]);
        let text = render(&r);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.starts_with(
                "warn  heartbeat  HTTP 500: \\u{1b}[2Jboom\\u{7}\\nok    config  forged\n"
            ),
            "{text}"
        );
    }
}
