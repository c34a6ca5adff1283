//! The outbox's part of the state file: what was made for each source,
//! the work queued for retry with its backoff, the sources whose MC task is
//! uncertain, and the bounds that keep all three small.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::tasks::Task;

/// First retry after this long; doubled per attempt.
const BACKOFF_BASE_MS: i64 = 60_000;
/// Retries are at least this rare (one hour).
const BACKOFF_CAP_MS: i64 = 3_600_000;
/// Mapping entries older than this are pruned (the ledger still knows them).
const MAPPING_MAX_AGE_MS: i64 = 30 * 24 * 3_600_000;
/// At most this many mapping entries are kept (newest win).
const MAPPING_MAX_ENTRIES: usize = 5_000;
/// At most this many outbox items; the oldest beyond it are dropped with an
/// error in the log (a Planka outage of weeks, not a normal state).
const OUTBOX_MAX_ITEMS: usize = 1_000;

/// Delay before attempt `attempts + 1`, given `attempts` failures so far:
/// 1 min, 2, 4, … capped at an hour. Pure.
pub(crate) fn backoff_ms(attempts: u32) -> i64 {
    let exp = attempts.saturating_sub(1).min(20);
    (BACKOFF_BASE_MS.saturating_mul(1i64 << exp)).min(BACKOFF_CAP_MS)
}

/// What the agent made for one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// MC task id.
    pub(crate) task_id: String,
    /// Planka card id, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_id: Option<String>,
    /// Planka card URL, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) card_url: Option<String>,
    /// When the MC task was made (epoch ms).
    pub(crate) created_at_ms: i64,
}

/// Kinds of pending work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    /// The MC task itself (escalations, which have no post to keep pending).
    CreateTask,
    /// The Planka card of an existing MC task.
    CreateCard,
}

/// One piece of work that failed and will be retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// What to do.
    pub kind: WorkKind,
    /// The task (its `source` is the key).
    pub(crate) task: Task,
    /// The MC id, for `CreateCard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) task_id: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not retried before this time (epoch ms).
    pub next_attempt_ms: i64,
    /// The latest failure, for `status`.
    pub last_error: String,
    /// When the work was first queued (epoch ms).
    pub(crate) queued_at_ms: i64,
    /// What happened to the task while its card waited: the card is made
    /// as the task is now, not as it was when queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) later: Option<CardLater>,
}

/// What a waiting card missed (see [`TaskState::card_missed`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct CardLater {
    /// The task was closed meanwhile (relabelled ROUTINE, its incident
    /// recovered): the card is made in the done list. A later reopening
    /// sets it back.
    #[serde(default)]
    pub(crate) closed: bool,
    /// The events, oldest first: `(comment key, text)`. They become one
    /// comment on the card, keyed by the first.
    #[serde(default)]
    pub(crate) events: Vec<(String, String)>,
}

impl CardLater {
    /// The one comment the card gets for what it missed: its key and text.
    pub(crate) fn comment(&self) -> Option<(String, String)> {
        let (first, _) = self.events.first()?;
        let text = self
            .events
            .iter()
            .map(|(_, t)| format!("- {t}"))
            .collect::<Vec<_>>()
            .join("\n");
        Some((
            format!("missed {first}"),
            format!("While Planka was unreachable:\n{text}"),
        ))
    }
}

/// One event a queued card missed, for [`TaskState::card_missed`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Missed<'a> {
    /// The comment key the event would have had on the card.
    pub(crate) key: &'a str,
    /// What happened, one line.
    pub(crate) text: &'a str,
    /// The task closed (`Some(true)`) or opened again (`Some(false)`).
    pub(crate) closed: Option<bool>,
    /// Its new priority.
    pub(crate) priority: Option<crate::tasks::Priority>,
    /// Its new label.
    pub(crate) label: Option<&'a str>,
}

/// Tasks' part of the state file (the lead stores it and saves it after
/// each post). Bounded: see [`TaskState::prune`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskState {
    /// source → what was made for it.
    pub mapping: BTreeMap<String, TaskRecord>,
    /// Work to retry on later cycles.
    pub outbox: Vec<OutboxItem>,
    /// Sources whose task the MC command could not confirm (possible
    /// duplicate, or given up): `status` and `doctor` show them, newest last.
    pub(crate) uncertain: Vec<UncertainTask>,
    /// Uncertain sources dropped from that list to keep the state small
    /// (the oldest first); `status`, `doctor` and the metrics say how many,
    /// the log named each when it happened.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) uncertain_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A source whose task in MC is uncertain, for an operator to check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct UncertainTask {
    /// The idempotency key (post id or incident key).
    pub(crate) source: String,
    /// The task title.
    pub(crate) title: String,
    /// Where it came from (the post's link), when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    permalink: String,
    /// The id the last attempt got, when it got one (a possible duplicate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) task_id: Option<String>,
    /// What is uncertain.
    pub(crate) why: String,
    /// When (epoch ms).
    at_ms: i64,
}

/// What a reply names instead of a task id when the MC command's task
/// could not be confirmed.
pub(crate) const UNCONFIRMED_TASK: &str = "(not confirmed in MC: an operator will check)";

/// Uncertain sources kept for `status` and `doctor`.
const UNCERTAIN_MAX: usize = 100;

/// A pending item as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingView {
    /// `create_task` or `create_card`.
    pub(crate) kind: WorkKind,
    /// The idempotency key.
    pub(crate) source: String,
    /// The task title.
    pub(crate) title: String,
    /// Failed attempts.
    pub(crate) attempts: u32,
    /// Seconds until the next try (0 = due now).
    pub(crate) next_attempt_in_secs: i64,
    /// The latest failure.
    pub last_error: String,
}

impl TaskState {
    /// Records an uncertain source (once per source and reason).
    pub(crate) fn note_uncertain(
        &mut self,
        task: &Task,
        task_id: Option<&str>,
        why: &str,
        now_ms: i64,
    ) {
        self.keep_uncertain(UncertainTask {
            source: task.source.clone(),
            title: task.title.clone(),
            permalink: task.permalink.clone(),
            task_id: task_id.map(str::to_string),
            why: why.to_string(),
            at_ms: now_ms,
        });
    }

    /// Puts `u` last in the uncertain list (replacing its source's entry);
    /// past [`UNCERTAIN_MAX`] the oldest are dropped and counted.
    pub(crate) fn keep_uncertain(&mut self, u: UncertainTask) {
        self.uncertain.retain(|x| x.source != u.source);
        self.uncertain.push(u);
        let excess = self.uncertain.len().saturating_sub(UNCERTAIN_MAX);
        self.uncertain.drain(..excess);
        self.uncertain_dropped += excess as u64;
    }

    /// Uncertain sources in all: listed and dropped.
    pub(crate) fn uncertain_total(&self) -> u64 {
        self.uncertain.len() as u64 + self.uncertain_dropped
    }

    /// Queues `kind` work for `task` after a failure (or bumps the item
    /// already queued for the same source and kind).
    pub fn enqueue(
        &mut self,
        kind: WorkKind,
        task: &Task,
        task_id: Option<&str>,
        error: &anyhow::Error,
        now_ms: i64,
    ) {
        let last_error = format!("{error:#}");
        if let Some(item) = self
            .outbox
            .iter_mut()
            .find(|i| i.kind == kind && i.task.source == task.source)
        {
            item.attempts += 1;
            item.next_attempt_ms = now_ms + backoff_ms(item.attempts);
            item.last_error = last_error;
            if task_id.is_some() {
                item.task_id = task_id.map(str::to_string);
            }
            return;
        }
        self.outbox.push(OutboxItem {
            kind,
            task: task.clone(),
            task_id: task_id.map(str::to_string),
            attempts: 1,
            next_attempt_ms: now_ms + backoff_ms(1),
            last_error,
            queued_at_ms: now_ms,
            later: None,
        });
    }

    /// Records, on the work still queued for `source` (its card, or its
    /// task and card), an event its card missed: the comment `key`/`text`,
    /// whether the task is now closed (`Some(true)`) or open again
    /// (`Some(false)`), and its new priority and label. Returns false when
    /// nothing is queued (the card exists, or there will be none).
    pub(crate) fn card_missed(&mut self, source: &str, change: Missed<'_>) -> bool {
        let mut any = false;
        for item in self.outbox.iter_mut().filter(|i| i.task.source == source) {
            any = true;
            let later = item.later.get_or_insert_with(CardLater::default);
            if !later.events.iter().any(|(k, _)| k == change.key) {
                later
                    .events
                    .push((change.key.to_string(), change.text.to_string()));
            }
            if let Some(closed) = change.closed {
                later.closed = closed;
            }
            if let Some(p) = change.priority {
                item.task.priority = p;
            }
            if let Some(l) = change.label {
                item.task.label = l.to_string();
            }
        }
        any
    }

    /// What the queued card of `source` missed, if anything.
    pub(crate) fn later_for(&self, source: &str) -> Option<CardLater> {
        self.outbox
            .iter()
            .filter(|i| i.task.source == source)
            .find_map(|i| i.later.clone())
    }

    /// Whether work of `kind` is queued for `source`.
    pub(crate) fn is_pending(&self, kind: WorkKind, source: &str) -> bool {
        self.outbox
            .iter()
            .any(|i| i.kind == kind && i.task.source == source)
    }

    /// [`TaskState::prune`] once the mapping is a quarter over its cap:
    /// called after every batch of posts, so a cycle that files thousands
    /// of tasks never holds them all, while sorting the mapping only every
    /// 1,250 tasks.
    pub(crate) fn prune_if_over(&mut self, now_ms: i64) {
        if self.mapping.len() > MAPPING_MAX_ENTRIES + MAPPING_MAX_ENTRIES / 4 {
            self.prune(now_ms);
        }
    }

    /// Keeps the state bounded: old mapping entries go (the ledger still has
    /// them), never ones with pending work; an overlong outbox loses its oldest.
    pub(crate) fn prune(&mut self, now_ms: i64) {
        // A set, not a scan of the outbox per mapping entry.
        let pending: HashSet<&str> = self.outbox.iter().map(|i| i.task.source.as_str()).collect();
        self.mapping.retain(|k, r| {
            now_ms - r.created_at_ms <= MAPPING_MAX_AGE_MS || pending.contains(k.as_str())
        });
        if self.mapping.len() > MAPPING_MAX_ENTRIES {
            let mut ages: Vec<(i64, String)> = self
                .mapping
                .iter()
                .map(|(k, r)| (r.created_at_ms, k.clone()))
                .collect();
            ages.sort();
            let excess = self.mapping.len() - MAPPING_MAX_ENTRIES;
            for (_, k) in ages
                .into_iter()
                .filter(|(_, k)| !pending.contains(k.as_str()))
                .take(excess)
            {
                self.mapping.remove(&k);
            }
        }
        if self.outbox.len() > OUTBOX_MAX_ITEMS {
            self.outbox.sort_by_key(|i| i.queued_at_ms);
            let excess = self.outbox.len() - OUTBOX_MAX_ITEMS;
            for dropped in self.outbox.drain(..excess) {
                tracing::error!(source = %dropped.task.source, kind = ?dropped.kind, "Dropped a task outbox item: the outbox is full.");
            }
        }
    }

    /// The outbox as `status` shows it.
    pub fn pending(&self, now_ms: i64) -> Vec<PendingView> {
        self.outbox
            .iter()
            .map(|i| PendingView {
                kind: i.kind,
                source: i.task.source.clone(),
                title: i.task.title.clone(),
                attempts: i.attempts,
                next_attempt_in_secs: ((i.next_attempt_ms - now_ms).max(0)) / 1000,
                last_error: i.last_error.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{Priority, Tag};

    /// A mapping entry made at `ms`.
    fn rec(ms: i64) -> TaskRecord {
        TaskRecord {
            task_id: "x".into(),
            card_id: None,
            card_url: None,
            created_at_ms: ms,
        }
    }

    fn task(source: &str) -> Task {
        Task {
            title: "t".into(),
            description: "d".into(),
            owner: "ops".into(),
            tag: Tag::Internal,
            priority: Priority::Normal,
            source: source.into(),
            label: "TASK".into(),
            team: "basic".into(),
            channel: "c".into(),
            author: "a".into(),
            permalink: "p".into(),
        }
    }

    #[test]
    fn uncertain_sources_past_the_bound_are_dropped_oldest_first_and_counted() {
        let mut s = TaskState::default();
        for i in 0..UNCERTAIN_MAX + 3 {
            s.note_uncertain(&task(&format!("p{i}")), None, "why", i as i64);
        }
        // Noted again: moved last, not counted twice.
        s.note_uncertain(&task("p50"), Some("MC-1"), "why", 1000);
        assert_eq!(s.uncertain.len(), UNCERTAIN_MAX);
        assert_eq!(s.uncertain_dropped, 3);
        assert_eq!(s.uncertain_total(), (UNCERTAIN_MAX + 3) as u64);
        assert_eq!(s.uncertain[0].source, "p3");
        assert_eq!(s.uncertain.last().unwrap().source, "p50");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["uncertain_dropped"], 3);
        let back: TaskState = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn backoff_table() {
        for (attempts, want) in [
            (0, 60_000),
            (1, 60_000),
            (2, 120_000),
            (3, 240_000),
            (7, 3_600_000),
            (60, 3_600_000),
        ] {
            assert_eq!(backoff_ms(attempts), want, "{attempts}");
        }
    }

    #[test]
    fn enqueue_bumps_instead_of_duplicating() {
        let mut s = TaskState::default();
        let e = anyhow::anyhow!("down");
        s.enqueue(WorkKind::CreateCard, &task("a"), Some("OPS-1"), &e, 1_000);
        s.enqueue(WorkKind::CreateCard, &task("a"), Some("OPS-1"), &e, 2_000);
        assert_eq!(s.outbox.len(), 1);
        assert_eq!(s.outbox[0].attempts, 2);
        assert_eq!(s.outbox[0].next_attempt_ms, 2_000 + 120_000);
        assert!(s.is_pending(WorkKind::CreateCard, "a"));
        assert!(!s.is_pending(WorkKind::CreateTask, "a"));
        let v = s.pending(2_000);
        assert_eq!((v[0].attempts, v[0].next_attempt_in_secs), (2, 120));
    }

    #[test]
    fn prune_keeps_recent_and_pending() {
        let mut s = TaskState::default();
        let now = MAPPING_MAX_AGE_MS * 2;
        s.mapping.insert("old".into(), rec(0));
        s.mapping.insert("old-pending".into(), rec(0));
        s.mapping.insert("new".into(), rec(now));
        s.enqueue(
            WorkKind::CreateCard,
            &task("old-pending"),
            Some("x"),
            &anyhow::anyhow!("e"),
            now,
        );
        s.prune(now);
        assert_eq!(
            s.mapping.keys().cloned().collect::<Vec<_>>(),
            vec!["new", "old-pending"]
        );
    }

    #[test]
    fn the_mapping_is_cut_to_its_newest_entries_once_a_quarter_over_the_cap() {
        let mut s = TaskState::default();
        let slack = MAPPING_MAX_ENTRIES + MAPPING_MAX_ENTRIES / 4;
        for i in 0..slack as i64 {
            s.mapping.insert(format!("p{i:05}"), rec(i));
        }
        s.prune_if_over(slack as i64);
        assert_eq!(s.mapping.len(), slack, "within the slack: untouched");
        s.mapping.insert("newest".into(), rec(slack as i64));
        s.prune_if_over(slack as i64);
        assert_eq!(s.mapping.len(), MAPPING_MAX_ENTRIES);
        assert!(s.mapping.contains_key("newest"));
        assert!(!s.mapping.contains_key("p00000"), "the oldest went");
    }

    #[test]
    fn a_queued_card_collects_what_it_missed_once_per_event() {
        let mut s = TaskState::default();
        let e = anyhow::anyhow!("down");
        let ev = |key, closed| Missed {
            key,
            text: "t",
            closed,
            priority: None,
            label: None,
        };
        assert!(!s.card_missed("a", ev("k1", Some(true))), "nothing queued");
        s.enqueue(WorkKind::CreateCard, &task("a"), Some("OPS-1"), &e, 1_000);
        assert!(s.card_missed("a", ev("k1", Some(true))));
        assert!(s.card_missed("a", ev("k1", Some(true))));
        assert!(s.card_missed(
            "a",
            Missed {
                key: "k2",
                text: "u",
                closed: Some(false),
                priority: Some(Priority::High),
                label: Some("INCIDENT"),
            }
        ));
        let later = s.later_for("a").unwrap();
        assert!(!later.closed, "opened again after the close");
        assert_eq!(later.events.len(), 2);
        assert_eq!(
            later.comment(),
            Some((
                "missed k1".to_string(),
                "While Planka was unreachable:\n- t\n- u".to_string()
            ))
        );
        assert_eq!(s.outbox[0].task.priority, Priority::High);
        assert_eq!(s.outbox[0].task.label, "INCIDENT");
        // Bumping the item keeps what it collected.
        s.enqueue(WorkKind::CreateCard, &task("a"), Some("OPS-1"), &e, 2_000);
        assert_eq!(s.later_for("a").unwrap().events.len(), 2);
    }

    #[test]
    fn old_state_json_still_loads() {
        let s: TaskState = serde_json::from_str("{}").unwrap();
        assert_eq!(s, TaskState::default());
        let s: TaskState =
            serde_json::from_str(r#"{"mapping":{"p":{"task_id":"OPS-1","created_at_ms":5}}}"#)
                .unwrap();
        assert_eq!(s.mapping["p"].task_id, "OPS-1");
    }
}
