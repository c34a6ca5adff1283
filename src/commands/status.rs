//! `ops-agent status`: the last cycle, the cursor, the lock, the task
//! outbox and posts still in progress, read without changing anything.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::lock;
use crate::logging::escape_controls;
use crate::report::CycleReport;
use crate::state::RuntimeState;
use crate::store::{self, SetAside};
use crate::tasks::outbox::{PendingView, WorkKind};

/// What `status --json` prints.
#[derive(Debug, Serialize)]
struct StatusView {
    /// The state file read.
    state_file: String,
    /// Whether any cycle has saved state yet.
    has_run: bool,
    /// The last cycle's report.
    last_cycle: Option<CycleReport>,
    /// The last cycle's start, RFC 3339.
    last_cycle_at: Option<DateTime<Utc>>,
    /// The chat cursor.
    last_check_ms: Option<i64>,
    /// Age of the cursor in seconds.
    last_check_age_secs: Option<i64>,
    /// Age of the last cycle in seconds (of the cursor, for a state no
    /// cycle of this agent saved yet): what `overdue` is judged by. A
    /// cursor held back (a channel catching up, a post pending) is not a
    /// missed schedule.
    last_cycle_age_secs: Option<i64>,
    /// True when no cycle completed within twice the schedule interval.
    overdue: bool,
    /// Channels catching up with more new posts than a cycle reads, and
    /// how much is left (`catching up: N pages / ~M posts left in
    /// team/channel`).
    catching_up: Vec<String>,
    /// The schedule interval the overdue rule uses.
    schedule_interval_secs: crate::time::Secs,
    /// Who holds the cycle lock, when a cycle is running.
    lock_holder: Option<String>,
    /// Corrupt files moved aside.
    set_aside: Vec<SetAside>,
    /// Task work (MC task, Planka card) that failed and waits for a retry.
    outbox: Vec<PendingView>,
    /// Posts handed over but not yet fully handled (classified, filed, replied).
    posts_in_progress: usize,
    /// Tasks the MC command could not confirm: a possible duplicate, or
    /// none made after attempts that may each have made one.
    uncertain_tasks: Vec<crate::tasks::outbox::UncertainTask>,
    /// Uncertain tasks no longer in that list (the oldest, dropped to keep
    /// the state small; the log named each).
    uncertain_dropped: u64,
    /// Incidents not yet closed (escalated services).
    incidents: Vec<crate::escalate::Incident>,
    /// Silences in force.
    silences: Vec<crate::escalate::silence::Silence>,
    /// The last heartbeat ping, when `[heartbeat] url` is set.
    heartbeat: Option<crate::observe::heartbeat::PingRecord>,
    /// Whether a heartbeat URL is configured.
    heartbeat_configured: bool,
    /// Problems reading the state itself.
    problems: Vec<String>,
}

/// Prints the status (text or JSON). Exit 0, problems are shown; with
/// `check`, exit 1 when [`check_failures`] finds any (said on stderr).
pub(crate) fn run(config: &Config, json: bool, check: bool) -> Result<ExitCode> {
    let now = Utc::now();
    let mut problems = Vec::new();
    let runtime: Option<RuntimeState> = match store::peek(&config.paths.state) {
        Ok(s) => s,
        Err(e) => {
            let planted = std::fs::symlink_metadata(&config.paths.state)
                .is_ok_and(|m| m.file_type().is_symlink() || !owned_by_us(&m));
            problems.push(state_problem(&format!("{e:#}"), planted));
            None
        }
    };
    let lock_holder = match lock::holder(&config.paths.lock) {
        Ok(h) => h,
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    let rt = runtime.clone().unwrap_or_default();
    let heartbeat = match store::peek::<crate::state::Stats>(&config.paths.stats) {
        Ok(s) => s.and_then(|s| s.heartbeat),
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    let age = rt
        .last_check_ms
        .map(|ms| (now.timestamp_millis() - ms) / 1000);
    let cycle_age = rt
        .last_cycle
        .as_ref()
        .map(|c| (now.timestamp_millis() - c.started_ms - c.duration_ms as i64) / 1000)
        .or(age);
    let interval = config.agent.schedule_interval_secs;
    let view = StatusView {
        state_file: config.paths.state.display().to_string(),
        has_run: runtime.is_some(),
        last_cycle_at: rt
            .last_cycle
            .as_ref()
            .and_then(|c| Utc.timestamp_millis_opt(c.started_ms).single()),
        last_cycle: rt.last_cycle,
        last_check_ms: rt.last_check_ms,
        last_check_age_secs: age,
        last_cycle_age_secs: cycle_age,
        overdue: cycle_age.is_none_or(|a| a as f64 > 2.0 * interval.as_f64()),
        catching_up: rt.mattermost.behind.iter().map(|b| b.line()).collect(),
        schedule_interval_secs: interval,
        lock_holder,
        set_aside: rt.set_aside,
        outbox: rt.tasks.pending(now.timestamp_millis()),
        posts_in_progress: rt.chat.progress.len(),
        uncertain_tasks: rt.tasks.uncertain.clone(),
        uncertain_dropped: rt.tasks.uncertain_dropped,
        incidents: rt.escalation.incidents.clone(),
        silences: rt
            .escalation
            .silences
            .list(now.timestamp_millis())
            .into_iter()
            .cloned()
            .collect(),
        heartbeat,
        heartbeat_configured: config.heartbeat.enabled(),
        problems,
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &view).context("writing status")?;
        writeln!(out)?;
    } else {
        write!(out, "{}", render_status(&view, now))?;
    }
    let failures = check_failures(&view);
    if check && !failures.is_empty() {
        eprintln!("ops-agent: status check: {}", failures.join("; "));
        return Ok(ExitCode::from(super::EXIT_FATAL));
    }
    Ok(ExitCode::SUCCESS)
}

/// What `status --check` fails on: a missed schedule, a failed last
/// cycle, state that cannot be read. Degraded cycles pass: they ran. Pure.
fn check_failures(v: &StatusView) -> Vec<String> {
    let mut out = Vec::new();
    if v.overdue {
        out.push(match v.last_cycle_age_secs {
            Some(a) => format!(
                "OVERDUE: the last cycle saved state {} ago, expected one every {} s",
                human_age(a),
                v.schedule_interval_secs
            ),
            None => "OVERDUE: no cycle has saved state yet".to_string(),
        });
    }
    if v.last_cycle
        .as_ref()
        .is_some_and(|c| c.overall() == "failed")
    {
        out.push("the last cycle failed (see `ops-agent status`)".into());
    }
    out.extend(v.problems.iter().cloned());
    out
}

/// What to do about a state file that cannot be read: a planted symlink or
/// another user's file is refused by every cycle until someone removes it
/// (its target is never touched); a file that does not parse is set aside
/// by the next cycle. Pure.
fn state_problem(error: &str, planted: bool) -> String {
    if planted {
        format!(
            "{error} (every cycle refuses to run until it is removed: find out who put it \
             there, delete it, then run `ops-agent run-once`)"
        )
    } else {
        format!("{error} (the next cycle sets it aside and starts fresh)")
    }
}

fn owned_by_us(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    m.uid() == unsafe { libc::geteuid() }
}

/// Appends one line of `status` with every control character escaped
/// (`\n`, `\u{1b}`), as the log does: a reason, an error or a title may
/// come from outside (an MC command's stderr echoing a client's post, an
/// HTTP body) and must not clear the screen or forge a line.
fn line(s: &mut String, text: String) {
    s.push_str(&escape_controls(&text));
    s.push('\n');
}

/// The text form of `status`.
fn render_status(v: &StatusView, now: DateTime<Utc>) -> String {
    let mut s = String::new();
    let ago = |t: DateTime<Utc>| human_age((now - t).num_seconds());
    match (&v.last_cycle, v.last_cycle_at) {
        (Some(c), Some(at)) => {
            line(
                &mut s,
                format!(
                    "last cycle   {} ({} ago), {} ms, {}{}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    ago(at),
                    c.duration_ms,
                    c.overall(),
                    if c.deadline_hit { ", deadline hit" } else { "" }
                ),
            );
            for st in &c.stages {
                line(
                    &mut s,
                    format!(
                        "  {:<12} {:<9} {:>6} ms  {}",
                        st.stage,
                        st.outcome.word(),
                        st.ms,
                        st.outcome.detail()
                    ),
                );
            }
            for f in &c.fallbacks {
                s += &format!("  fallback     {}: {}\n", f.stage, f.why);
            }
            for ch in c
                .checks
                .iter()
                .filter(|c| c.status != crate::health::Status::Ok)
            {
                line(
                    &mut s,
                    format!(
                        "  check {:<18} {:<8} {}",
                        ch.name,
                        ch.status.as_str(),
                        ch.reason
                    ),
                );
            }
        }
        _ => line(
            &mut s,
            format!("last cycle   none yet (no state at {})", v.state_file),
        ),
    }
    match v.last_check_age_secs {
        Some(a) => line(
            &mut s,
            format!(
                "cursor       last_check_ms {} ({} ago){}",
                v.last_check_ms.unwrap_or_default(),
                human_age(a),
                if v.overdue {
                    format!(
                        " OVERDUE: expected a cycle every {} s",
                        v.schedule_interval_secs
                    )
                } else {
                    ", on schedule".to_string()
                }
            ),
        ),
        None => s += "cursor       none (first run pending) OVERDUE\n",
    }
    for l in &v.catching_up {
        line(&mut s, format!("backlog      {l}"));
    }
    line(
        &mut s,
        match &v.lock_holder {
            Some(h) => format!("lock         a cycle is running ({h})"),
            None => "lock         free (no cycle running)".to_string(),
        },
    );
    for a in &v.set_aside {
        line(
            &mut s,
            format!(
                "set aside    {} -> {} ({})",
                a.path.display(),
                a.moved_to.display(),
                a.error
            ),
        );
    }
    if v.posts_in_progress > 0 {
        line(
            &mut s,
            format!(
                "posts        {} in progress (finished by the next cycle)",
                v.posts_in_progress
            ),
        );
    }
    s += &render_outbox(&v.outbox);
    if !v.uncertain_tasks.is_empty() || v.uncertain_dropped > 0 {
        line(
            &mut s,
            format!(
                "uncertain    {} task(s) to check in MC by hand{}",
                v.uncertain_tasks.len() as u64 + v.uncertain_dropped,
                match v.uncertain_dropped {
                    0 => String::new(),
                    n => format!(
                        "; the {n} oldest are no longer listed here (the log names each: \
                         \"check MC\")"
                    ),
                }
            ),
        );
        for u in &v.uncertain_tasks {
            line(
                &mut s,
                format!(
                    "  {}  \"{}\"{}: {}",
                    u.source,
                    u.title,
                    u.task_id
                        .as_deref()
                        .map(|id| format!(" (got {id})"))
                        .unwrap_or_default(),
                    u.why
                ),
            );
        }
    }
    for i in &v.incidents {
        let state = match (&i.acked, i.alerted_ms, i.recovered_ms) {
            (_, _, Some(_)) => "recovered, closing".to_string(),
            (Some(a), _, _) => format!("acknowledged by {}", a.by),
            (None, Some(_), _) => "alerted, not acknowledged".to_string(),
            (None, None, _) => "alert pending".to_string(),
        };
        line(
            &mut s,
            format!(
                "incident     {}  task {}  {state}: {}",
                i.key,
                i.task_id.as_deref().unwrap_or("pending"),
                i.why
            ),
        );
    }
    let now_ms = now.timestamp_millis();
    for silence in &v.silences {
        line(&mut s, format!("silence      {}", silence.line(now_ms)));
    }
    match (&v.heartbeat, v.heartbeat_configured) {
        (Some(h), true) => {
            let at = Utc.timestamp_millis_opt(h.at_ms).single().unwrap_or(now);
            line(
                &mut s,
                format!("heartbeat    {} ({} ago)", h.line(), ago(at)),
            );
        }
        (None, true) => {
            s += "heartbeat    configured, no ping yet (sent at the end of each cycle)\n"
        }
        (_, false) => s += "heartbeat    not configured ([heartbeat] url)\n",
    }
    for p in &v.problems {
        line(&mut s, format!("problem      {p}"));
    }
    s
}

/// The task outbox in the same two-column style as the rest of `status`.
fn render_outbox(items: &[PendingView]) -> String {
    if items.is_empty() {
        return "outbox       empty (no task or card waiting for a retry)\n".to_string();
    }
    let mut s = format!("outbox       {} pending\n", items.len());
    for i in items {
        let kind = match i.kind {
            WorkKind::CreateTask => "task",
            WorkKind::CreateCard => "card",
        };
        let next = match i.next_attempt_in_secs {
            0 => "due now".to_string(),
            n => format!("next in {}", human_age(n)),
        };
        line(
            &mut s,
            format!(
                "  {kind} {}  \"{}\"  attempts {}, {next}: {}",
                i.source, i.title, i.attempts, i.last_error
            ),
        );
    }
    s
}

pub(crate) fn human_age(secs: i64) -> String {
    match secs {
        s if s < 0 => "in the future".to_string(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(age: Option<i64>, overdue: bool) -> StatusView {
        StatusView {
            state_file: "/tmp/s.json".into(),
            has_run: age.is_some(),
            last_cycle: None,
            last_cycle_at: None,
            last_check_ms: age.map(|_| 0),
            last_check_age_secs: age,
            last_cycle_age_secs: age,
            overdue,
            catching_up: vec![],
            schedule_interval_secs: crate::time::Secs::new(300),
            lock_holder: None,
            set_aside: vec![],
            outbox: vec![],
            posts_in_progress: 0,
            uncertain_tasks: vec![],
            uncertain_dropped: 0,
            incidents: vec![],
            silences: vec![],
            problems: vec![],
            heartbeat: None,
            heartbeat_configured: false,
        }
    }

    #[test]
    fn check_fails_on_overdue_failed_or_unreadable_only() {
        use crate::report::{CycleReport, Outcome};
        use crate::stage::Stage;
        assert!(check_failures(&view(Some(60), false)).is_empty());
        let f = check_failures(&view(Some(900), true));
        assert_eq!(f.len(), 1);
        assert!(
            f[0].starts_with("OVERDUE: the last cycle saved state 15m ago"),
            "{f:?}"
        );
        assert_eq!(
            check_failures(&view(None, true)),
            ["OVERDUE: no cycle has saved state yet"]
        );
        let mut degraded = view(Some(60), false);
        let mut report = CycleReport::default();
        report.push(Stage::Mattermost, Outcome::Degraded("down".into()), 1);
        degraded.last_cycle = Some(report.clone());
        assert!(check_failures(&degraded).is_empty(), "a degraded cycle ran");
        report.push(Stage::Save, Outcome::Failed("disk full".into()), 1);
        degraded.last_cycle = Some(report);
        assert_eq!(check_failures(&degraded).len(), 1);
        let mut broken = view(Some(60), false);
        broken.problems.push("x".into());
        assert_eq!(check_failures(&broken), ["x"]);
    }

    #[test]
    fn a_planted_state_file_is_not_promised_to_be_set_aside() {
        let p = state_problem("refusing to use /tmp/s.json: it is a symlink", true);
        assert!(p.contains("refuses to run until it is removed") && !p.contains("sets it aside"));
        let p = state_problem("/tmp/s.json is not valid JSON", false);
        assert!(p.ends_with("(the next cycle sets it aside and starts fresh)"));
    }

    #[test]
    fn outbox_lines_say_what_when_and_why() {
        assert!(render_outbox(&[]).starts_with("outbox       empty"));
        let item = |kind, secs| PendingView {
            kind,
            source: "p9".into(),
            title: "Renew".into(),
            attempts: 3,
            next_attempt_in_secs: secs,
            last_error: "HTTP 503".into(),
        };
        let text = render_outbox(&[
            item(WorkKind::CreateCard, 240),
            item(WorkKind::CreateTask, 0),
        ]);
        assert_eq!(
            text,
            "outbox       2 pending\n  card p9  \"Renew\"  attempts 3, next in 4m: HTTP 503\n  \
             task p9  \"Renew\"  attempts 3, due now: HTTP 503\n"
        );
    }
}
