//! Lookups by source: what the ledger knows of one source (its task, the
//! MC command's attempts), read from a window of the newest records that
//! this process keeps and follows with its own appends.
//!
//! The window holds at most [`SOURCES_CAP`] sources: a cycle that files
//! 20,000 tasks would otherwise keep all of them (6 MB) to the end of the
//! process. Past the cap, the sources it holds are shed and only a hash of
//! each is kept; a look-up of a shed source reads the file for it alone.
//! That is rare (a cycle seldom looks a source up twice), and it keeps the
//! one rule: a look-up sees every record of its source in the window's
//! range.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::record::{decode, AttemptEnd, IntentRecord, Record};
use super::Ledger;
use crate::jsonl as lines;

/// How much older than its source a record may look and still belong to
/// it: the agent's clock against the chat server's.
const CLOCK_SLACK_MS: i64 = 3_600_000;

/// The most sources the window holds before it sheds them (about 300
/// bytes each). Three in the unit tests, so every ledger test goes through
/// shedding and the look-ups of shed sources.
#[cfg(not(test))]
const SOURCES_CAP: usize = 2_048;
#[cfg(test)]
const SOURCES_CAP: usize = 3;

/// An attempt as the ledger knows it, its records folded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Attempt {
    /// Its number.
    pub(crate) attempt: u32,
    /// When it started.
    pub(crate) at: DateTime<Utc>,
    /// Its process group, once it ran.
    pub(crate) pgid: Option<u32>,
    /// How it ended (`None`: no end recorded: the agent died during it).
    pub(crate) outcome: Option<AttemptEnd>,
}

/// What the ledger knows of one source.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SourceHistory {
    /// The task made for it, updates folded in.
    task: Option<Filed>,
    /// Attempts of the MC command, oldest first.
    pub(crate) attempts: Vec<Attempt>,
}

/// What a look-up needs of a task already filed: enough to record it
/// again, not its text (a cycle keeps one per task it filed).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Filed {
    /// The task's id.
    pub(crate) id: String,
    /// When it was created.
    pub(crate) created_at: DateTime<Utc>,
    /// The Planka card, once an update named it.
    pub(crate) card_id: Option<String>,
    /// The Planka card URL.
    pub(crate) card_url: Option<String>,
}

/// The ledger's newest records, folded per source and kept for the rest
/// of the process. A cycle looks up each source it files; walking back
/// afresh every time would pass over every task filed earlier in the same
/// cycle, n²/2 records for a burst of n. The window stays right while the
/// file is as long as it was read plus this process's own appends, which
/// the cycle lock makes the only ones; any other length reads it again.
#[derive(Debug, Default)]
pub(super) struct Window {
    /// Records older than this were not read.
    from_ms: i64,
    /// The file length the window accounts for.
    pub(super) len: u64,
    /// Boxed, so the table holds only pointers: growing it at the 1,792nd
    /// task of one cycle held 2,048 and 4,096 records' room at once, the
    /// peak of a 10,000-post cycle.
    sources: HashMap<String, Box<SourceRecords>>,
    /// Task id to its source, to route updates.
    ids: HashMap<String, String>,
    /// Hashes of the sources shed past the cap: their records are in the
    /// file, not here.
    shed: HashSet<u64>,
    /// [`SOURCES_CAP`], smaller in tests.
    cap: usize,
}

fn source_hash(source: &str) -> u64 {
    let mut h = DefaultHasher::new();
    source.hash(&mut h);
    h.finish()
}

#[derive(Debug, Default)]
struct SourceRecords {
    /// The newest task made for the source, card updates folded in.
    task: Option<Filed>,
    /// The MC command's attempt records, oldest first.
    intents: Vec<IntentRecord>,
}

impl Window {
    fn new(from_ms: i64, len: u64, cap: usize) -> Window {
        Window {
            from_ms,
            len,
            cap,
            ..Window::default()
        }
    }

    /// Takes in the next record in file order. A record of a shed source
    /// stays in the file only: folding it alone would make a partial
    /// history (an attempt without the ones before it).
    pub(super) fn fold(&mut self, rec: Record) {
        let shed = |source: &str| !self.shed.is_empty() && self.shed.contains(&source_hash(source));
        match rec {
            Record::Create(c) => {
                if shed(&c.task.source) {
                    return;
                }
                let source = c.task.source.clone();
                self.ids.insert(c.id.clone(), source.clone());
                self.sources.entry(source).or_default().task = Some(Filed {
                    id: c.id,
                    created_at: c.created_at,
                    card_id: None,
                    card_url: None,
                });
                self.shed_past_cap();
            }
            Record::Update(u) => {
                let task = self
                    .ids
                    .get(&u.id)
                    .and_then(|s| self.sources.get_mut(s))
                    .and_then(|s| s.task.as_mut())
                    .filter(|t| t.id == u.id);
                if let Some(t) = task {
                    t.card_id = u.card_id.or(t.card_id.take());
                    t.card_url = u.card_url.or(t.card_url.take());
                }
            }
            Record::Intent(i) => {
                if shed(&i.source) {
                    return;
                }
                self.sources
                    .entry(i.source.clone())
                    .or_default()
                    .intents
                    .push(i);
                self.shed_past_cap();
            }
        }
    }

    /// Past the cap, every source held is shed (its hash kept): the next
    /// sources start an empty table, so the window never holds more than
    /// the cap.
    fn shed_past_cap(&mut self) {
        if self.sources.len() <= self.cap.max(1) {
            return;
        }
        for source in self.sources.keys() {
            self.shed.insert(source_hash(source));
        }
        self.sources = HashMap::new();
        self.ids = HashMap::new();
    }

    fn is_shed(&self, source: &str) -> bool {
        !self.sources.contains_key(source) && self.shed.contains(&source_hash(source))
    }

    fn history(&self, source: &str) -> SourceHistory {
        match self.sources.get(source) {
            Some(s) => SourceHistory {
                task: s.task.clone(),
                attempts: fold_attempts(&s.intents),
            },
            None => SourceHistory::default(),
        }
    }
}

impl Ledger {
    /// What the ledger knows of `source`: its task (updates folded in) and
    /// the MC command's attempts. Read from the [`Window`] of newest
    /// records, which reaches back to the first record older than
    /// `not_before_ms` less [`CLOCK_SLACK_MS`]: a task cannot predate its
    /// source, so the cost is the records written since, whatever the
    /// ledger's size, and it is paid once per process, not once per source.
    pub(crate) fn history(&self, source: &str, not_before_ms: i64) -> Result<SourceHistory> {
        let stop = not_before_ms.saturating_sub(CLOCK_SLACK_MS);
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let Some(file) = self.open()? else {
            *window = None;
            return Ok(SourceHistory::default());
        };
        let len = self.len_of(&file)?;
        if !window
            .as_ref()
            .is_some_and(|w| w.len == len && w.from_ms <= stop)
        {
            // An hour further back than asked: the sources looked up next
            // in a cycle are seldom much older than this one.
            let from_ms = stop.saturating_sub(CLOCK_SLACK_MS);
            let w = self.read_window(file, len, from_ms, SOURCES_CAP, |_| true)?;
            *window = Some(w);
        }
        if let Some(from_ms) = window
            .as_ref()
            .filter(|w| w.is_shed(source))
            .map(|w| w.from_ms)
        {
            return self.history_of_shed(source, len, from_ms);
        }
        Ok(window
            .as_ref()
            .map(|w| w.history(source))
            .unwrap_or_default())
    }

    /// The history of a source the window shed past its cap: its records
    /// alone, read from the file over the window's range (`len` bytes, back
    /// to `from_ms`), then a second walk for the updates of its task (an
    /// update names the task, which the first walk found).
    fn history_of_shed(&self, source: &str, len: u64, from_ms: i64) -> Result<SourceHistory> {
        let reopen = || {
            self.open()?
                .context("the task ledger vanished while reading it")
        };
        let alone = self.read_window(reopen()?, len, from_ms, usize::MAX, |r| {
            r.concerns(source, &[])
        })?;
        let mut found = alone.history(source);
        if let Some(task) = &found.task {
            let ids = [task.id.clone()];
            let with_updates = self.read_window(reopen()?, len, from_ms, usize::MAX, |r| {
                r.concerns(source, &ids)
            })?;
            found.task = with_updates.history(source).task;
        }
        Ok(found)
    }

    /// Walks back from `len` to the first record older than `from_ms` and
    /// folds what it passed and `keep` keeps, oldest first, into a window
    /// of at most `cap` sources.
    fn read_window(
        &self,
        file: std::fs::File,
        len: u64,
        from_ms: i64,
        cap: usize,
        keep: impl Fn(&Record) -> bool,
    ) -> Result<Window> {
        let mut back = lines::Backward::new(file)
            .with_context(|| format!("reading task ledger {}", self.path.display()))?;
        let mut newest_first = Vec::new();
        while let Some(line) = back
            .next_line()
            .with_context(|| format!("reading task ledger {}", self.path.display()))?
        {
            let Ok(Ok(Some(rec))) = line.map(|l| decode(&l)) else {
                continue;
            };
            if rec.at().timestamp_millis() < from_ms {
                break;
            }
            if keep(&rec) {
                newest_first.push(rec);
            }
        }
        let mut w = Window::new(from_ms, len, cap);
        for rec in newest_first.into_iter().rev() {
            w.fold(rec);
        }
        Ok(w)
    }

    /// The task created for `source` (see [`Ledger::history`]).
    pub(crate) fn find_by_source(&self, source: &str, not_before_ms: i64) -> Result<Option<Filed>> {
        Ok(self.history(source, not_before_ms)?.task)
    }
}

/// Folds attempt records (oldest first, as written) into attempts, oldest
/// first: each attempt's later records add its process group and outcome.
fn fold_attempts(oldest_first: &[IntentRecord]) -> Vec<Attempt> {
    let mut by_attempt: BTreeMap<u32, Attempt> = BTreeMap::new();
    for i in oldest_first {
        let a = by_attempt.entry(i.attempt).or_insert(Attempt {
            attempt: i.attempt,
            at: i.at,
            pgid: None,
            outcome: None,
        });
        a.pgid = i.pgid.or(a.pgid);
        a.outcome = i.outcome.or(a.outcome);
    }
    by_attempt.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::super::record::{CreateRecord, UpdateRecord};
    use super::super::testkit::task;
    use super::*;
    use crate::tasks::Tag;

    #[test]
    fn a_window_past_its_cap_sheds_its_sources_and_still_finds_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path().join("l.jsonl"));
        let now = Utc::now();
        let at = now.timestamp_millis();
        let intent = |source: &str, attempt: u32, outcome: Option<AttemptEnd>| IntentRecord {
            source: source.into(),
            attempt,
            at: now,
            pgid: None,
            outcome,
        };
        assert_eq!(l.history("s0", at).unwrap(), SourceHistory::default());
        l.intent(intent("s0", 1, Some(AttemptEnd::Failed))).unwrap();
        let mut ids = Vec::new();
        for i in 0..10 {
            let t = l
                .create(&task(&format!("s{i}"), Tag::Billable), None, now)
                .unwrap();
            ids.push(t.id);
        }
        // s0 was shed with the first three: a later attempt and a card of
        // its task are in the file only, and a look-up still sees them.
        l.intent(intent("s0", 2, None)).unwrap();
        l.update(UpdateRecord {
            id: ids[0].clone(),
            at: now,
            card_id: Some("c0".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(l.history("s9", at).unwrap().task.is_some());
        {
            let w = l.window.lock().unwrap();
            let w = w.as_ref().expect("the window, read at the look-up");
            assert!(w.sources.len() <= SOURCES_CAP, "{}", w.sources.len());
            assert!(w.is_shed("s0"));
        }
        let s0 = l.history("s0", at).unwrap();
        let task0 = s0.task.expect("s0's task");
        assert_eq!(
            (task0.id.as_str(), task0.card_id.as_deref()),
            (ids[0].as_str(), Some("c0"))
        );
        assert_eq!(
            s0.attempts
                .iter()
                .map(|a| (a.attempt, a.outcome))
                .collect::<Vec<_>>(),
            [(1, Some(AttemptEnd::Failed)), (2, None)]
        );
        for (i, id) in ids.iter().enumerate() {
            let found = l.find_by_source(&format!("s{i}"), at).unwrap().unwrap();
            assert_eq!(&found.id, id, "s{i}");
        }
        assert_eq!(l.find_by_source("s10", at).unwrap(), None);
    }

    #[test]
    fn lookups_follow_own_appends_and_see_another_writer() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path().join("l.jsonl"));
        let now = Utc::now();
        let old = now - chrono::Duration::days(2);
        assert_eq!(l.history("a", 0).unwrap(), SourceHistory::default());
        // Read the window, then append through it: the lookups see each
        // append without reading again.
        let a = l.create(&task("a", Tag::Billable), None, now).unwrap();
        l.intent(IntentRecord {
            source: "b".into(),
            attempt: 1,
            at: now,
            pgid: None,
            outcome: None,
        })
        .unwrap();
        l.intent(IntentRecord {
            source: "b".into(),
            attempt: 1,
            at: now,
            pgid: Some(42),
            outcome: Some(AttemptEnd::Failed),
        })
        .unwrap();
        l.update(UpdateRecord {
            id: a.id.clone(),
            at: now,
            card_id: Some("c1".into()),
            card_url: Some("http://k/cards/c1".into()),
            ..Default::default()
        })
        .unwrap();
        let found = l
            .find_by_source("a", now.timestamp_millis())
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.id.as_str(), found.card_id.as_deref()),
            ("OPS-1", Some("c1"))
        );
        let b = l.history("b", now.timestamp_millis()).unwrap();
        assert_eq!(b.task, None);
        assert_eq!(
            b.attempts
                .iter()
                .map(|a| (a.attempt, a.pgid, a.outcome))
                .collect::<Vec<_>>(),
            [(1, Some(42), Some(AttemptEnd::Failed))]
        );
        // Another handle on the same file (another process) appends: the
        // first handle's window no longer accounts for the file and is read
        // again, so it finds the new task and the newer of two for "a".
        let other = Ledger::new(l.path().to_path_buf());
        other
            .create(&task("c", Tag::Internal), Some("MC-9"), now)
            .unwrap();
        other
            .create(&task("a", Tag::Internal), Some("MC-10"), now)
            .unwrap();
        assert_eq!(
            l.find_by_source("c", now.timestamp_millis())
                .unwrap()
                .unwrap()
                .id,
            "MC-9"
        );
        assert_eq!(
            l.find_by_source("a", now.timestamp_millis())
                .unwrap()
                .unwrap()
                .id,
            "MC-10"
        );
        // A source older than the window reaches further back: a task
        // written two days ago is found for a post of that day, and not
        // for a post of today (it cannot be that post's task).
        let mut rec = serde_json::to_string(&Record::Create(CreateRecord {
            id: "OPS-0".into(),
            created_at: old,
            backend: "ledger".into(),
            task: task("d", Tag::Billable),
        }))
        .unwrap();
        rec.push('\n');
        let text = std::fs::read_to_string(l.path()).unwrap();
        crate::files::write_private_atomic(l.path(), (rec + &text).as_bytes()).unwrap();
        assert_eq!(l.find_by_source("d", now.timestamp_millis()).unwrap(), None);
        let d = l
            .find_by_source("d", old.timestamp_millis())
            .unwrap()
            .unwrap();
        assert_eq!(d.id, "OPS-0");
    }
}
