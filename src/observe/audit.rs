//! The audit trail: an append-only JSON-lines file
//! (`~/system/logs/ops-agent-audit.jsonl`, owner-only) with one line per
//! decision or action, each with its time and the cycle it belongs to.
//!
//! Events are typed data ([`Event`]) made by the rooms where the decision
//! is made (the chat stage labels a post, the outbox creates a task, the
//! fix stage judges a restart) and handed to [`record`]. A cycle opens the
//! trail once ([`open`]) and every event is written as it happens, one
//! `write` on an `O_APPEND` descriptor per line: a crash mid-cycle leaves
//! every line before it, and at worst one torn last line, which readers
//! skip and the next writer closes with a newline first. Lines are not
//! synced one by one (a cycle may make thousands); the trail is synced
//! when it is closed, so only a power cut can lose the tail of a cycle.
//!
//! Why one process-wide trail instead of a handle passed down: events come
//! from deep inside every stage (per post, per fix, per incident step) and
//! from commands (`silence`, `fix`); a handle in every signature would tie
//! each room to the cycle. The agent is a one-shot process with one cycle
//! (or one command) at a time, and without an open trail [`record`] does
//! nothing, so unit tests and dry runs record nothing.
//!
//! What a line never holds: chat text beyond a short [`excerpt`], a
//! token, a password, a ping URL. Errors are the ones the activity log
//! already shows, which never carry a secret.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::logging::Rotate;

/// Characters of a chat post kept in an audit line.
const EXCERPT_CHARS: usize = 60;
/// Longest error or detail text kept in an audit line.
const DETAIL_CHARS: usize = 300;

/// One decision or action. The variant is the `event` field of the line;
/// `post`, `source`, `check`, `service`, `target` and `incident` are what
/// `ops-agent audit --post/--check` filters on, so every variant about a
/// post or a service names it with one of those.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    /// A new post the poll did not hand over, and the rule that skipped it.
    PostSkipped {
        /// The post.
        post: String,
        /// Its channel id.
        channel: String,
        /// Its author's user id.
        author: String,
        /// The rule: `bot`, `webhook`, `system`, `ignored_user`, …
        reason: String,
    },
    /// A post that is not work: a silence command or an acknowledgement
    /// in an alert thread.
    PostRouted {
        /// The post.
        post: String,
        /// Its author.
        author: String,
        /// `silence_command` or `alert_ack`.
        route: String,
        /// The start of its text.
        excerpt: String,
    },
    /// A post got its label, and how.
    PostClassified {
        /// The post.
        post: String,
        /// Team and channel it was posted in.
        team: String,
        /// Channel name.
        channel: String,
        /// Its author.
        author: String,
        /// The start of its text.
        excerpt: String,
        /// `ROUTINE`, `TASK` or `INCIDENT`.
        label: String,
        /// `llm` or `fallback` (`keywords` in lines written by 0.1.0).
        path: String,
        /// The model, on the LLM path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        /// Why the fallback decided (`unreachable`, `timeout`, …).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback: Option<String>,
        /// Which part of the fallback decided: `rules`, `model` or
        /// `correction`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        part: Option<String>,
        /// The decision's explanation (who decided, with the figures), as
        /// `ops-agent classify` and `ops-agent eval` give it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// A post was left for the next cycle, and why.
    PostPending {
        /// The post.
        post: String,
        /// What failed or ran out.
        why: String,
    },
    /// A task exists for a source (a post or an incident): made now, or
    /// found (a retry after a crash).
    TaskCreated {
        /// The post id or incident key the task is for.
        source: String,
        /// The MC id.
        task: String,
        /// `BILLABLE` or `INTERNAL`.
        tag: String,
        /// `NORMAL` or `HIGH`.
        priority: String,
        /// The team (board) it was filed for.
        team: String,
        /// False when it already existed and was found, not made.
        created: bool,
    },
    /// MC could not make a task; the source stays pending.
    TaskFailed {
        /// The post id or incident key.
        source: String,
        /// The error.
        error: String,
    },
    /// A Planka card was made for a task.
    CardCreated {
        /// The post id or incident key.
        source: String,
        /// The MC id.
        task: String,
        /// The card id.
        card: String,
    },
    /// A card could not be made; it waits in the outbox.
    CardFailed {
        /// The post id or incident key.
        source: String,
        /// The error.
        error: String,
    },
    /// A card the agent made is gone from Planka (deleted): noted once,
    /// then left alone.
    CardGone {
        /// The post id or incident key.
        source: String,
        /// The card id.
        card: String,
    },
    /// The agent answered in a post's thread.
    ReplyPosted {
        /// The post answered.
        post: String,
        /// The reply's post id.
        reply: String,
        /// `llm` or `template`.
        path: String,
        /// False when the reply was already there (found after a crash).
        created: bool,
    },
    /// A check crossed its flap guard: it now counts as failing (and may
    /// be fixed or escalated), or it recovered.
    CheckChanged {
        /// The check.
        check: String,
        /// Its service.
        service: String,
        /// `failing` or `recovered`.
        change: String,
        /// Its status now (`ok`, `warn`, `critical`, `unknown`).
        status: String,
        /// The check's reason.
        reason: String,
    },
    /// A failing service was not fixed, and why (no fix, budget spent,
    /// still starting, dry run).
    FixSkipped {
        /// The service.
        service: String,
        /// The failing check and its reason.
        issue: String,
        /// The decision, as `fix --history` says it.
        why: String,
    },
    /// A fix was started (recorded in the fix history before it runs).
    FixAttempted {
        /// The service.
        service: String,
        /// The failing check and its reason.
        issue: String,
        /// The configured action, described.
        action: String,
    },
    /// How a fix ended after its settle time and re-check.
    FixResult {
        /// The service.
        service: String,
        /// The configured action, described.
        action: String,
        /// `verified`, `failed` or `pending`.
        outcome: String,
        /// The re-check's reason or the error.
        detail: String,
        /// Attempts left in the rolling window.
        budget_left: u32,
    },
    /// One step of an incident: `opened`, `task`, `alert_posted`,
    /// `brief_posted`, `follow_up`, `reminder`, `recovered`, `recovery_posted`,
    /// `card_commented`, `card_moved`, `task_resolved`, `closed`.
    Escalation {
        /// The incident key (`service:check@time`).
        incident: String,
        /// Its service.
        service: String,
        /// Its check.
        check: String,
        /// The step.
        step: String,
        /// What was done.
        detail: String,
    },
    /// An incident brief was gathered (when the incident opened, or for
    /// its follow-up): what it holds, never the evidence itself.
    BriefGathered {
        /// The incident key.
        incident: String,
        /// Its service.
        service: String,
        /// Its check.
        check: String,
        /// Each piece's kind and size, why one is incomplete, and who
        /// wrote the diagnosis.
        gathered: String,
        /// How long gathering took.
        ms: u64,
    },
    /// An incident step failed; it is owed again next cycle.
    EscalationFailed {
        /// The incident key.
        incident: String,
        /// Its service.
        service: String,
        /// Its check.
        check: String,
        /// The step.
        step: String,
        /// The error.
        error: String,
    },
    /// Someone acknowledged an alert.
    Acknowledged {
        /// The incident key.
        incident: String,
        /// Its service.
        service: String,
        /// Its check.
        check: String,
        /// The Mattermost user id.
        by: String,
        /// `reaction` or `reply`.
        how: String,
    },
    /// A silence was made (from chat or `ops-agent silence`).
    SilenceCreated {
        /// Its id (`s3`).
        id: String,
        /// The check or service silenced.
        target: String,
        /// When it ends, RFC 3339.
        until: String,
        /// Who.
        by: String,
        /// Why, in their words.
        reason: String,
        /// The chat post that asked for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        post: Option<String>,
    },
    /// A chat silence request that made nothing, and why.
    SilenceRefused {
        /// The post.
        post: String,
        /// Who asked.
        by: String,
        /// Not on the allowlist, or not understood.
        why: String,
    },
    /// A silence ended: expired, or cleared early.
    SilenceEnded {
        /// Its id.
        id: String,
        /// The check or service.
        target: String,
        /// `expired` or `cleared`.
        how: String,
        /// Who cleared it (`cleared` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// A state file that did not parse was moved aside.
    FileSetAside {
        /// The file.
        path: String,
        /// Where its bytes are now.
        moved_to: String,
        /// Why it was unusable.
        error: String,
    },
}

/// One line of the trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Line {
    /// When, RFC 3339 UTC with milliseconds.
    at: String,
    /// The cycle (its start, as `status` shows it); absent for commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cycle: Option<String>,
    /// The command that acted outside a cycle (`silence`, `fix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    /// What happened.
    #[serde(flatten)]
    event: Event,
}

/// The cycle id of a cycle started at `started_ms`: its start, RFC 3339
/// with milliseconds (unique: the lock keeps cycles apart).
pub(crate) fn cycle_id(started_ms: i64) -> String {
    DateTime::from_timestamp_millis(started_ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| started_ms.to_string())
}

/// The first [`EXCERPT_CHARS`] characters of a post, whitespace folded to
/// single spaces, with `…` when cut: enough to recognise it, not to keep it.
pub(crate) fn excerpt(text: &str) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    cut(&folded, EXCERPT_CHARS)
}

/// An error or detail, bounded.
pub(crate) fn detail(text: &str) -> String {
    cut(text, DETAIL_CHARS)
}

fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The check in an incident key `service:check@time` (the key itself when
/// it has another shape).
pub(crate) fn incident_check(key: &str) -> String {
    let rest = key.split_once(':').map_or(key, |(_, r)| r);
    rest.rsplit_once('@').map_or(rest, |(c, _)| c).to_string()
}

/// An open trail file.
struct Writer {
    file: File,
    path: PathBuf,
    cycle: Option<String>,
    command: Option<String>,
    /// Its size as far as this process knows.
    len: u64,
}

/// `[log] max_bytes` and `keep` for the trail, set by the cycle that holds
/// the lock: the trail rotates whenever the cycle's writing outgrows it.
static CAP: Mutex<Option<(u64, u32, Rotate)>> = Mutex::new(None);

/// From now on the trail this process writes rotates past `max_bytes` (0:
/// never) with `rotate`, which the rotation room passes in (it calls this;
/// the trail does not reach back into it).
pub(crate) fn rotate_within(max_bytes: u64, keep: u32, rotate: Rotate) {
    *CAP.lock().unwrap_or_else(|p| p.into_inner()) =
        (max_bytes > 0).then_some((max_bytes, keep, rotate));
}

impl Writer {
    /// Opens `path` for appending (owner-only, symlink and hard-link
    /// refused); a torn last line left by a crash is ended first, so the
    /// next line starts on its own.
    fn open(path: &Path, cycle: Option<String>, command: Option<&str>) -> Result<Writer> {
        let mut file = crate::files::open_append_private(path)
            .with_context(|| format!("opening the audit trail {}", path.display()))?;
        let mut probe = crate::files::open_private_read(path)?
            .with_context(|| format!("{} vanished while opening it", path.display()))?;
        if !crate::jsonl::ends_with_newline(&mut probe)
            .with_context(|| format!("reading {}", path.display()))?
        {
            file.write_all(b"\n")
                .with_context(|| format!("appending to {}", path.display()))?;
        }
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Writer {
            file,
            path: path.to_path_buf(),
            cycle,
            command: command.map(str::to_string),
            len,
        })
    }

    /// Appends one event, stamped `at`, in one write.
    fn write(&mut self, event: Event, at: DateTime<Utc>) -> Result<()> {
        let line = Line {
            at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            cycle: self.cycle.clone(),
            command: self.command.clone(),
            event,
        };
        let mut bytes = serde_json::to_vec(&line).context("encoding an audit line")?;
        bytes.push(b'\n');
        let cap = *CAP.lock().unwrap_or_else(|p| p.into_inner());
        let over =
            |(max, _, _): &(u64, u32, Rotate)| self.len > 0 && self.len + bytes.len() as u64 > *max;
        if let Some((_, keep, rotate)) = cap.filter(over) {
            self.file.sync_data().ok();
            rotate(&self.path, keep)?;
            self.file = crate::files::open_append_private(&self.path)
                .with_context(|| format!("opening the audit trail {}", self.path.display()))?;
            self.len = 0;
        }
        self.file
            .write_all(&bytes)
            .with_context(|| format!("appending to {} (disk full?)", self.path.display()))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Syncs what was written.
    fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("syncing {}", self.path.display()))
    }
}

/// The process's open trail, if any.
static TRAIL: Mutex<Option<Writer>> = Mutex::new(None);

/// Keeps the trail open; closing (and syncing) it when dropped.
#[must_use = "the trail closes when this is dropped"]
pub(crate) struct Session(());

impl Drop for Session {
    fn drop(&mut self) {
        let writer = TRAIL.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer {
            if let Err(e) = w.sync() {
                tracing::warn!("Audit trail not synced: {e:#}");
            }
        }
    }
}

/// Opens the trail at `path` for this process: for a cycle (`cycle` is its
/// id) or a command (`command` names it). Until the returned session is
/// dropped, [`record`] writes there.
fn open(path: &Path, cycle: Option<String>, command: Option<&str>) -> Result<Session> {
    let writer = Writer::open(path, cycle, command)?;
    *TRAIL.lock().unwrap_or_else(|p| p.into_inner()) = Some(writer);
    Ok(Session(()))
}

/// [`open`], or a warning and no trail: the audit trail never stops what
/// it records.
pub(crate) fn open_or_warn(
    path: &Path,
    cycle: Option<String>,
    command: Option<&str>,
) -> Option<Session> {
    match open(path, cycle, command) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("No audit trail this run: {e:#}");
            None
        }
    }
}

/// Lines read back by [`recent_values`] at most: it looks at one cycle's
/// worth of lines, never the whole trail.
const MAX_LOOKBACK_LINES: usize = 100_000;

/// The values of `field` in the open trail's `event` lines written at or
/// after `since_ms`, read from the end of the file backwards. For events a
/// later cycle could record again (a skipped post re-read in the poll's
/// overlap). Empty when no trail is open or it cannot be read.
pub(crate) fn recent_values(event: &str, field: &str, since_ms: i64) -> HashSet<String> {
    let path = match TRAIL.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some(w) => w.path.clone(),
        None => return HashSet::new(),
    };
    let mut out = HashSet::new();
    let Ok(Some(file)) = crate::files::open_private_read(&path) else {
        return out;
    };
    let Ok(mut back) = crate::jsonl::Backward::new(file) else {
        return out;
    };
    for _ in 0..MAX_LOOKBACK_LINES {
        let Ok(Some(line)) = back.next_line() else {
            break;
        };
        let Some(v) = line
            .ok()
            .and_then(|l| serde_json::from_slice::<serde_json::Value>(&l).ok())
        else {
            continue;
        };
        let at = v
            .get("at")
            .and_then(|a| a.as_str())
            .and_then(|a| DateTime::parse_from_rfc3339(a).ok())
            .map(|t| t.timestamp_millis());
        if at.is_some_and(|t| t < since_ms) {
            break;
        }
        if v.get("event").and_then(|e| e.as_str()) == Some(event) {
            if let Some(x) = v.get(field).and_then(|x| x.as_str()) {
                out.insert(x.to_string());
            }
        }
    }
    out
}

/// Records one event in the open trail; nothing when none is open. A
/// write that fails is logged once and the trail is closed for the rest
/// of the process (the cycle itself goes on).
pub(crate) fn record(event: Event) {
    let mut slot = TRAIL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(w) = slot.as_mut() else {
        return;
    };
    if let Err(e) = w.write(event, Utc::now()) {
        tracing::warn!("Audit trail not written, no more lines this run: {e:#}");
        *slot = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_fold_whitespace_and_stop_short() {
        assert_eq!(excerpt("  planka\n is   down "), "planka is down");
        let long = "é".repeat(100);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
    }

    #[test]
    fn incident_keys_name_their_check() {
        assert_eq!(incident_check("web:web-http@20260101T000000Z"), "web-http");
        assert_eq!(incident_check("plain"), "plain");
    }

    #[test]
    fn lines_round_trip_with_the_event_tag_flat() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let mut w = Writer::open(&p, Some(cycle_id(0)), None).unwrap();
        let ev = Event::TaskCreated {
            source: "p1".into(),
            task: "OPS-1".into(),
            tag: "BILLABLE".into(),
            priority: "NORMAL".into(),
            team: "wizard".into(),
            created: true,
        };
        w.write(ev.clone(), DateTime::from_timestamp_millis(1_500).unwrap())
            .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "{\"at\":\"1970-01-01T00:00:01.500Z\",\"cycle\":\"1970-01-01T00:00:00.000Z\",\
             \"event\":\"task_created\",\"source\":\"p1\",\"task\":\"OPS-1\",\"tag\":\"BILLABLE\",\
             \"priority\":\"NORMAL\",\"team\":\"wizard\",\"created\":true}\n"
        );
        let back: Line = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(back.event, ev);
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_torn_last_line_is_closed_before_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        std::fs::write(&p, "{\"at\":\"x\",\"event\":\"post_sk").unwrap();
        let mut w = Writer::open(&p, None, Some("silence")).unwrap();
        let ev = Event::PostPending {
            post: "p".into(),
            why: "x".into(),
        };
        w.write(ev, Utc::now()).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let last: Line = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(last.command.as_deref(), Some("silence"));
    }
}
