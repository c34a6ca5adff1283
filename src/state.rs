//! The two JSON documents a cycle carries from one run to the next: the
//! runtime state (`/tmp/ops-agent-state.json`, each room's part of it) and
//! the cumulative stats (`~/system/agents/state/ops.json`). How they are
//! read and written is [`crate::store`]'s job.
//!
//! Within a cycle, what each post changed is made durable by appending one
//! [`PostEntry`] to the state's journal (`<state>.journal`): a write the
//! size of the post, not of the state. The next load replays the journal
//! over the state file (the entries are upserts, so replaying twice
//! changes nothing), and the end of the cycle folds it in: one atomic save,
//! then the journal is removed.
//!
//! Every struct here is `#[serde(default)]` so a file written by an older
//! version still loads; unknown fields are ignored for the same reason (a
//! newer version's file must not be treated as corrupt by an older binary
//! during a rollback).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chat::progress::Watched;
use crate::chat::PostProgress;
use crate::escalate::silence::Silence;
use crate::observe::heartbeat::PingRecord;
use crate::observe::metrics::{CheckGauge, LastCycle, Snapshot, StageGauge};
use crate::report::CycleReport;
use crate::store::SetAside;
use crate::tasks::outbox::{OutboxItem, TaskRecord, UncertainTask, WorkKind};

/// How many set-aside records the state keeps for `status`.
const MAX_SET_ASIDE: usize = 20;

/// `/tmp/ops-agent-state.json`: what the next cycle needs to resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RuntimeState {
    /// The chat cursor (epoch ms, server clock): every post created before
    /// it has been fully handled. `None` means first run.
    pub(crate) last_check_ms: Option<i64>,
    /// The last cycle's report, for `status`.
    pub(crate) last_cycle: Option<CycleReport>,
    /// Corrupt files that were moved aside, newest last.
    pub(crate) set_aside: Vec<SetAside>,
    /// Mattermost caches and the handled-post set.
    pub(crate) mattermost: crate::mattermost::MmState,
    /// Posts handed over but not yet fully handled.
    pub(crate) chat: crate::chat::ChatState,
    /// Task mapping (source → task, card) and the outbox.
    pub(crate) tasks: crate::tasks::outbox::TaskState,
    /// Flap-guard streaks and restart counters per check.
    pub(crate) health: crate::health::guard::HealthState,
    /// Open incidents, their alerts and acknowledgements, and silences.
    pub(crate) escalation: crate::escalate::EscalationState,
}

/// What handling one post changed, as one line of the state journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PostEntry {
    /// The post (also the source of its task).
    post: String,
    /// Its creation time (for the handled set).
    create_at: i64,
    /// Its progress; `None`: done, progress dropped.
    #[serde(default)]
    progress: Option<PostProgress>,
    /// Fully handled.
    #[serde(default)]
    handled: bool,
    /// The task made for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task: Option<TaskRecord>,
    /// Its work waiting in the outbox (replaces what was there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outbox: Vec<OutboxItem>,
    /// Its task is uncertain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uncertain: Option<UncertainTask>,
    /// The silence it asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    silence: Option<Silence>,
    /// What the agent did with it, while its label can still be corrected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watch: Option<Watched>,
}

impl RuntimeState {
    /// The journal entry for `post` from the state as it is now.
    pub(crate) fn entry_for(&self, post: &str, create_at: i64) -> PostEntry {
        PostEntry {
            post: post.to_string(),
            create_at,
            progress: self.chat.progress.get(post).cloned(),
            handled: self.mattermost.handled.contains_key(post),
            task: self.tasks.mapping.get(post).cloned(),
            outbox: self
                .tasks
                .outbox
                .iter()
                .filter(|i| i.task.source == post)
                .cloned()
                .collect(),
            uncertain: self
                .tasks
                .uncertain
                .iter()
                .find(|u| u.source == post)
                .cloned(),
            silence: self.escalation.silences.by_post(post).cloned(),
            watch: self.chat.watch.get(post).cloned(),
        }
    }

    /// Replays one journal entry (an upsert: twice is once).
    pub(crate) fn apply(&mut self, e: PostEntry) {
        match e.progress {
            Some(p) => {
                self.chat.progress.insert(e.post.clone(), p);
            }
            None => {
                self.chat.progress.remove(&e.post);
            }
        }
        if e.handled {
            crate::mattermost::mark_handled(&mut self.mattermost, &e.post, e.create_at);
        }
        if let Some(t) = e.task {
            self.tasks.mapping.insert(e.post.clone(), t);
        }
        self.tasks.outbox.retain(|i| i.task.source != e.post);
        self.tasks.outbox.extend(e.outbox);
        if let Some(u) = e.uncertain {
            self.tasks.keep_uncertain(u);
        }
        if let Some(s) = e.silence {
            self.escalation.silences.restore(s);
        }
        if let Some(w) = e.watch {
            self.chat.watch.insert(e.post, w);
        }
    }

    /// Records set-aside files, keeping the list bounded.
    pub(crate) fn record_set_aside(&mut self, records: impl IntoIterator<Item = SetAside>) {
        self.set_aside.extend(records);
        let excess = self.set_aside.len().saturating_sub(MAX_SET_ASIDE);
        self.set_aside.drain(..excess);
    }
}

/// `~/system/agents/state/ops.json`: cumulative counters since the first
/// cycle (or since the file was deleted), and the last heartbeat ping.
///
/// Read through [`Stats::carried_over`]: the Node daemon's file kept its
/// counters as top-level numbers next to `cycles`, and those become named
/// counters rather than being dropped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, remote = "Self")]
pub(crate) struct Stats {
    /// First cycle recorded, RFC 3339.
    pub(crate) since: Option<DateTime<Utc>>,
    /// Last cycle recorded, RFC 3339.
    pub(crate) last_cycle_at: Option<DateTime<Utc>>,
    /// Cycles run (dry runs excluded).
    pub(crate) cycles: u64,
    /// Cycles whose overall outcome was degraded.
    pub(crate) cycles_degraded: u64,
    /// Cycles with a failed stage.
    pub(crate) cycles_failed: u64,
    /// Cycles cut short by the deadline.
    pub(crate) deadline_hits: u64,
    /// Check results by status word.
    pub(crate) checks: BTreeMap<String, u64>,
    /// Named counters that later stages add (posts handled, tasks created,
    /// classification paths, fixes); a map keeps the file forward-compatible.
    /// A counter read under an old name (`RENAMED_COUNTERS`) counts under
    /// its new one.
    #[serde(deserialize_with = "counters_renamed")]
    pub(crate) counters: BTreeMap<String, u64>,
    /// Wall time of every cycle recorded, summed (ms).
    pub(crate) duration_ms_total: u64,
    /// The last cycle without a failed stage, RFC 3339.
    pub(crate) last_success_at: Option<DateTime<Utc>>,
    /// Stage outcomes: stage → outcome word → cycles. Keyed by the name
    /// as written ([`crate::stage::Stage::as_str`]): the counts are
    /// cumulative, so one a later release renames or drops keeps its
    /// history, and the keys keep their order in the file and the metrics.
    pub(crate) stages: BTreeMap<String, BTreeMap<String, u64>>,
    /// The last heartbeat ping (`status` and `doctor` show it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) heartbeat: Option<PingRecord>,
    /// What the file holds that no field above names (an older writer's
    /// counters), folded into `counters` as it is read; never written.
    #[serde(flatten, skip_serializing)]
    pub(crate) unnamed: BTreeMap<String, serde_json::Value>,
}

impl Serialize for Stats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Stats::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Stats {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Stats::deserialize(d).map(Stats::carried_over)
    }
}

/// Counters renamed since a stats file may have been written: (old, new).
/// `classified_keywords` was the fallback's count before the fallback had
/// its own name (0.1.0).
const RENAMED_COUNTERS: &[(&str, &str)] = &[("classified_keywords", "classified_fallback")];

/// The counters map, each old name's count added to its new name's.
fn counters_renamed<'de, D>(d: D) -> Result<BTreeMap<String, u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let mut counters = BTreeMap::<String, u64>::deserialize(d)?;
    for (old, new) in RENAMED_COUNTERS {
        if let Some(n) = counters.remove(*old) {
            *counters.entry(new.to_string()).or_default() += n;
        }
    }
    Ok(counters)
}

/// A counter name as this file writes them: `messagesProcessed` (the Node
/// daemon's camelCase) is `messages_processed`. Pure.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut after_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if after_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
        after_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    out.trim_matches('_').to_string()
}

impl Stats {
    /// Every unnamed whole number, top level or one level down
    /// (`{"tasks": {"created": 4}}` is `tasks_created`), added to the
    /// counter of its snake_case name; text, dates and the rest are not
    /// counters and are dropped.
    fn carried_over(mut self) -> Stats {
        for (name, value) in std::mem::take(&mut self.unnamed) {
            let mut add = |name: String, v: &serde_json::Value| {
                if let (Some(n), false) = (v.as_u64(), name.is_empty()) {
                    *self.counters.entry(name).or_default() += n;
                }
            };
            match &value {
                serde_json::Value::Object(inner) => {
                    for (k, v) in inner {
                        add(snake_case(&format!("{name}_{k}")), v);
                    }
                }
                v => add(snake_case(&name), v),
            }
        }
        self
    }

    /// Folds one finished cycle into the counters.
    pub(crate) fn record_cycle(&mut self, report: &CycleReport, now: DateTime<Utc>) {
        self.since.get_or_insert(now);
        self.last_cycle_at = Some(now);
        self.cycles += 1;
        match report.overall() {
            "failed" => self.cycles_failed += 1,
            "degraded" => self.cycles_degraded += 1,
            _ => {}
        }
        if report.deadline_hit {
            self.deadline_hits += 1;
        }
        if report.overall() != "failed" {
            self.last_success_at = Some(now);
        }
        self.duration_ms_total += report.duration_ms;
        for s in &report.stages {
            *self
                .stages
                .entry(s.stage.to_string())
                .or_default()
                .entry(s.outcome.word().to_string())
                .or_default() += 1;
        }
        for c in &report.checks {
            *self
                .checks
                .entry(c.status.as_str().to_string())
                .or_default() += 1;
        }
        for f in &report.fallbacks {
            self.bump(&format!("stage_fallback_{}", f.stage), 1);
        }
    }

    /// Adds `n` to a named counter.
    pub(crate) fn bump(&mut self, name: &str, n: u64) {
        *self.counters.entry(name.to_string()).or_default() += n;
    }

    /// What the metrics textfile shows: these counters, the last cycle
    /// and the state's gauges as of that cycle (so `stats --prometheus`
    /// prints what the cycle wrote, whenever it is run).
    pub(crate) fn metrics(&self, runtime: &RuntimeState) -> Snapshot {
        let failed = self.cycles_failed;
        let degraded = self.cycles_degraded;
        let cycles = BTreeMap::from([
            (
                "ok".to_string(),
                self.cycles.saturating_sub(failed + degraded),
            ),
            ("degraded".to_string(), degraded),
            ("failed".to_string(), failed),
        ]);
        let last = runtime.last_cycle.as_ref().map(|c| LastCycle {
            started_ms: c.started_ms,
            duration_ms: c.duration_ms,
            outcome: c.overall().to_string(),
            deadline_hit: c.deadline_hit,
            stages: c
                .stages
                .iter()
                .map(|s| StageGauge {
                    stage: s.stage,
                    outcome: s.outcome.word().to_string(),
                    ms: s.ms,
                })
                .collect(),
            checks: c
                .checks
                .iter()
                .map(|r| CheckGauge {
                    check: r.name.clone(),
                    service: r.service.clone(),
                    status: r.status.as_str().to_string(),
                })
                .collect(),
            counts: c.counts.clone(),
            fallbacks: c.fallbacks.iter().map(|f| f.stage).collect(),
        });
        let at_ms = last.as_ref().map_or(0, |l| l.started_ms);
        let mut outbox = BTreeMap::new();
        for i in &runtime.tasks.outbox {
            let kind = match i.kind {
                WorkKind::CreateTask => "task",
                WorkKind::CreateCard => "card",
            };
            *outbox.entry(kind.to_string()).or_default() += 1;
        }
        let esc = &runtime.escalation;
        Snapshot {
            cycles,
            deadline_hits: self.deadline_hits,
            duration_ms_total: self.duration_ms_total,
            last_success_ms: self.last_success_at.map(|t| t.timestamp_millis()),
            last,
            stages: self.stages.clone(),
            check_results: self.checks.clone(),
            counters: self.counters.clone(),
            open_incidents: esc.open().len() as u64,
            silences: esc.silences.list(at_ms).len() as u64,
            outbox,
            uncertain_tasks: runtime.tasks.uncertain_total(),
            uncertain_dropped: runtime.tasks.uncertain_dropped,
            posts_in_progress: runtime.chat.progress.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stats_file_with_old_counter_names_is_read_under_the_new_ones() {
        let old = r#"{"cycles": 4, "counters": {"classified_keywords": 5, "classified_llm": 2}}"#;
        let s: Stats = serde_json::from_str(old).unwrap();
        assert_eq!(s.cycles, 4);
        assert_eq!(
            s.counters,
            BTreeMap::from([
                ("classified_fallback".to_string(), 5),
                ("classified_llm".to_string(), 2)
            ])
        );
        let both = r#"{"counters": {"classified_keywords": 5, "classified_fallback": 1}}"#;
        let s: Stats = serde_json::from_str(both).unwrap();
        assert_eq!(s.counters["classified_fallback"], 6);
        let written = serde_json::to_string(&s).unwrap();
        assert!(!written.contains("classified_keywords"), "{written}");
        let s: Stats = serde_json::from_str("{}").unwrap();
        assert!(s.counters.is_empty());
    }

    #[test]
    fn the_node_daemons_counters_are_carried_over_and_written_back_as_counters() {
        let old = r#"{"cycles": 120, "messagesProcessed": 300, "tasks_created": 40,
            "errors": {"mattermost": 2, "ollama": 5}, "lastRun": "2024-05-01T10:00:00Z",
            "uptime": 1.5, "negative": -3, "counters": {"tasks_created": 2}}"#;
        let s: Stats = serde_json::from_str(old).unwrap();
        assert_eq!(s.cycles, 120);
        assert_eq!(
            s.counters,
            BTreeMap::from([
                ("errors_mattermost".to_string(), 2),
                ("errors_ollama".to_string(), 5),
                ("messages_processed".to_string(), 300),
                ("tasks_created".to_string(), 42),
            ])
        );
        let written = serde_json::to_string(&s).unwrap();
        assert!(!written.contains("messagesProcessed") && !written.contains("lastRun"));
        let again: Stats = serde_json::from_str(&written).unwrap();
        assert_eq!(again, s, "read back, nothing is counted twice");
        assert_eq!(snake_case("repliesSent"), "replies_sent");
        assert_eq!(snake_case("HTTP-errors"), "http_errors");
    }

    #[test]
    fn set_aside_list_is_bounded() {
        let mut s = RuntimeState::default();
        let rec = |i| SetAside {
            path: "a".into(),
            moved_to: "b".into(),
            at_ms: i,
            error: String::new(),
        };
        s.record_set_aside((0..30).map(rec));
        assert_eq!(s.set_aside.len(), MAX_SET_ASIDE);
        assert_eq!(s.set_aside.last().unwrap().at_ms, 29);
    }

    #[test]
    fn a_journal_entry_replays_what_one_post_changed_and_twice_is_once() {
        let mut before = RuntimeState::default();
        before.chat.progress.insert(
            "p1".into(),
            PostProgress {
                label: Some(crate::classify::Label::Task),
                task_id: Some("OPS-1".into()),
                create_at: 5,
                ..Default::default()
            },
        );
        before.tasks.mapping.insert(
            "p1".into(),
            TaskRecord {
                task_id: "OPS-1".into(),
                card_id: None,
                card_url: None,
                created_at_ms: 7,
            },
        );
        let mid = before.entry_for("p1", 5);
        let mut after = before.clone();
        after.chat.progress.remove("p1");
        after.chat.watch.insert(
            "p1".into(),
            Watched {
                create_at: 5,
                task_id: Some("OPS-1".into()),
                ..Default::default()
            },
        );
        crate::mattermost::mark_handled(&mut after.mattermost, "p1", 5);
        let done = after.entry_for("p1", 5);

        let mut replayed = RuntimeState::default();
        for _ in 0..2 {
            replayed.apply(mid.clone());
            replayed.apply(done.clone());
        }
        assert_eq!(replayed.chat, after.chat);
        assert_eq!(replayed.tasks.mapping, after.tasks.mapping);
        assert_eq!(replayed.mattermost.handled, after.mattermost.handled);
    }

    #[test]
    fn the_journal_survives_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.json");
        let journal = crate::store::journal_path(&state);
        assert!(journal.to_string_lossy().ends_with("s.json.journal"));
        let e = RuntimeState::default().entry_for("p1", 1);
        crate::store::append_entries(&journal, std::slice::from_ref(&e)).unwrap();
        crate::store::append_entries(&journal, std::slice::from_ref(&e)).unwrap();
        let mut bytes = std::fs::read(&journal).unwrap();
        bytes.extend_from_slice(b"{\"post\":\"p2\",\"crea");
        std::fs::write(&journal, bytes).unwrap();
        let mut seen = Vec::new();
        let skipped = crate::store::replay(&journal, |e: PostEntry| seen.push(e.post)).unwrap();
        assert_eq!((seen, skipped), (vec!["p1".to_string(), "p1".into()], 1));
    }
}
