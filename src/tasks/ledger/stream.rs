//! The streaming readers behind `tasks list`, `tasks stats` and `doctor`:
//! each passes over the file line by line and never holds it whole.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::Serialize;

use super::fold::{LedgerTask, SkippedLine};
use super::record::{decode, CreateRecord, Record};
use super::Ledger;
use crate::jsonl as lines;
use crate::tasks::Tag;

/// Which tasks `tasks list` shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    /// Only this owner (`--owner ops`).
    pub owner: Option<String>,
    /// Only this tag (`--tag BILLABLE`).
    pub tag: Option<Tag>,
    /// Only tasks created at or after this time (`--since`).
    pub since: Option<DateTime<Utc>>,
}

impl ListFilter {
    /// Whether `t` passes the filter.
    fn matches(&self, t: &LedgerTask) -> bool {
        self.owner.as_deref().is_none_or(|o| t.task.owner == o)
            && self.tag.is_none_or(|g| t.task.tag == g)
            && self.since.is_none_or(|s| t.created_at >= s)
    }
}

/// Parses `--since`: a date (`2024-05-01`, midnight UTC), an RFC 3339 time,
/// or a span back from `now` (`30m`, `24h`, `7d`).
pub(crate) fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight")));
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) && !s.contains(['-', ':']) {
        let ms = crate::time::parse_span_ms(s).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
        return Ok(now - chrono::Duration::milliseconds(ms));
    }
    bail!(
        "--since '{s}': expected a date (2024-05-01), an RFC 3339 time or a span (7d, 24h, 1h30m)"
    )
}

/// `tasks stats` output: counts by tag, priority, label and day.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// All tasks.
    pub total: u64,
    /// By BILLABLE/INTERNAL.
    pub by_tag: BTreeMap<String, u64>,
    /// By HIGH/NORMAL.
    pub by_priority: BTreeMap<String, u64>,
    /// By TASK/INCIDENT/ESCALATION.
    pub by_label: BTreeMap<String, u64>,
    /// By creation day (UTC, `YYYY-MM-DD`).
    pub by_day: BTreeMap<String, u64>,
    /// How many have a Planka card.
    pub with_card: u64,
    /// Unreadable lines.
    pub skipped_lines: u64,
}

/// Counts one task into the stats.
impl Stats {
    fn count(&mut self, t: &CreateRecord) {
        self.total += 1;
        *self.by_tag.entry(t.task.tag.as_str().into()).or_default() += 1;
        *self
            .by_priority
            .entry(t.task.priority.as_str().into())
            .or_default() += 1;
        *self.by_label.entry(t.task.label.clone()).or_default() += 1;
        *self
            .by_day
            .entry(t.created_at.format("%Y-%m-%d").to_string())
            .or_default() += 1;
    }
}

impl Stats {
    /// The text rendering, one section per dimension.
    pub(crate) fn render_text(&self) -> String {
        let mut out = if self.total == 0 {
            "No tasks.\n".to_string()
        } else {
            format!(
                "Tasks: {} ({} with a Planka card)\n",
                self.total, self.with_card
            )
        };
        for (name, map) in [
            ("By tag", &self.by_tag),
            ("By priority", &self.by_priority),
            ("By label", &self.by_label),
            ("By day", &self.by_day),
        ] {
            if map.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{name}:");
            for (k, v) in map {
                let _ = writeln!(out, "  {k:<12} {v}");
            }
        }
        if self.skipped_lines > 0 {
            let _ = writeln!(
                out,
                "warning: {} unreadable ledger line(s) skipped",
                self.skipped_lines
            );
        }
        out
    }
}

impl Ledger {
    /// `tasks list`: calls `emit` with each task that matches, oldest first,
    /// and returns the lines that were not records. Two streaming passes:
    /// the first notes where the updates of matching tasks are (a hash of
    /// the id and the line's offset: two words per update), the second
    /// emits each task as its create is reached, reading its updates back
    /// by offset. Memory holds those words, never the tasks.
    pub fn list(
        &self,
        filter: &ListFilter,
        mut emit: impl FnMut(&LedgerTask) -> Result<()>,
    ) -> Result<Vec<SkippedLine>> {
        let mut skipped = Vec::new();
        let Some(file) = self.open()? else {
            return Ok(skipped);
        };
        let reread = file
            .try_clone()
            .with_context(|| format!("reading task ledger {}", self.path.display()))?;
        let read = |r: std::io::Result<()>| {
            r.with_context(|| format!("reading task ledger {}", self.path.display()))
        };
        let mut matching: std::collections::HashSet<u64> = Default::default();
        let mut updates: Vec<(u64, u64)> = Vec::new();
        // Each matching create: its offset, its id's hash, and whether an
        // earlier one had that hash (the same id again, or a collision).
        let mut creates: Vec<(u64, u64, bool)> = Vec::new();
        read(lines::for_each_forward_at(file, |n, at, line| {
            match line.map_err(str::to_string).and_then(|l| decode(&l)) {
                Ok(Some(Record::Create(c))) => {
                    let t = LedgerTask::from_create(c);
                    if filter.matches(&t) {
                        let h = id_hash(&t.id);
                        creates.push((at, h, !matching.insert(h)));
                    }
                }
                Ok(Some(Record::Update(u))) if matching.contains(&id_hash(&u.id)) => {
                    updates.push((id_hash(&u.id), at));
                }
                Ok(_) => {}
                Err(e) => skipped.push(SkippedLine {
                    line: n,
                    reason: format!("not a ledger record: {e}"),
                }),
            }
            true
        }))?;
        drop(matching);
        updates.sort_unstable();
        let record_at = |at: u64| -> Result<Option<Record>> {
            let line = lines::read_line_at(&reread, at)
                .with_context(|| format!("reading task ledger {}", self.path.display()))?;
            Ok(line.ok().and_then(|l| decode(&l).ok().flatten()))
        };
        for (k, &(at, h, seen)) in creates.iter().enumerate() {
            let Some(Record::Create(c)) = record_at(at)? else {
                continue;
            };
            if seen && self.created_before(&creates[..k], h, &c.id, &record_at)? {
                // The first create of an id is the task; later ones are not.
                continue;
            }
            let mut t = LedgerTask::from_create(c);
            let first = updates.partition_point(|u| u.0 < h);
            for &(_, u_at) in updates[first..].iter().take_while(|u| u.0 == h) {
                // Only updates after the create count, as in the fold.
                if u_at < at {
                    continue;
                }
                if let Some(Record::Update(u)) = record_at(u_at)? {
                    if u.id == t.id {
                        t.apply(u);
                    }
                }
            }
            emit(&t)?;
        }
        Ok(skipped)
    }

    /// Whether one of `earlier` (offset, hash) with hash `h` is a create of `id`.
    fn created_before(
        &self,
        earlier: &[(u64, u64, bool)],
        h: u64,
        id: &str,
        record_at: &impl Fn(u64) -> Result<Option<Record>>,
    ) -> Result<bool> {
        for &(at, _, _) in earlier.iter().filter(|c| c.1 == h) {
            if matches!(record_at(at)?, Some(Record::Create(c)) if c.id == id) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `tasks stats`: one streaming pass of counters.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        let Some(file) = self.open()? else {
            return Ok(s);
        };
        let mut carded: std::collections::HashSet<String> = Default::default();
        lines::for_each_forward(file, |_, line| {
            match line.map_err(str::to_string).and_then(|l| decode(&l)) {
                Ok(Some(Record::Create(c))) => s.count(&c),
                Ok(Some(Record::Update(u))) if u.card_id.is_some() => {
                    carded.insert(u.id);
                }
                Ok(_) => {}
                Err(_) => s.skipped_lines += 1,
            }
            true
        })
        .with_context(|| format!("reading task ledger {}", self.path.display()))?;
        s.with_card = carded.len() as u64;
        Ok(s)
    }

    /// Lines that are not records (for `doctor`), streamed.
    pub(crate) fn unreadable_lines(&self) -> Result<usize> {
        let mut n = 0;
        if let Some(file) = self.open()? {
            lines::for_each_forward(file, |_, line| {
                if line
                    .map_err(str::to_string)
                    .and_then(|l| decode(&l))
                    .is_err()
                {
                    n += 1;
                }
                true
            })
            .with_context(|| format!("reading task ledger {}", self.path.display()))?;
        }
        Ok(n)
    }
}

/// A task id as a word, for [`Ledger::list`]'s index; a collision only
/// costs a read, the id itself is compared.
fn id_hash(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::super::record::UpdateRecord;
    use super::super::testkit::task;
    use super::*;

    #[test]
    fn since_table() {
        let now = Utc.with_ymd_and_hms(2024, 5, 10, 12, 0, 0).unwrap();
        for (s, want) in [
            (
                "2024-05-01",
                Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap(),
            ),
            ("7d", Utc.with_ymd_and_hms(2024, 5, 3, 12, 0, 0).unwrap()),
            ("2h", Utc.with_ymd_and_hms(2024, 5, 10, 10, 0, 0).unwrap()),
            (
                "2024-05-09T00:00:00+02:00",
                Utc.with_ymd_and_hms(2024, 5, 8, 22, 0, 0).unwrap(),
            ),
        ] {
            assert_eq!(parse_since(s, now).unwrap(), want, "{s}");
        }
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("3x", now).is_err());
        // One span grammar with the silence command: weeks and compounds too.
        assert_eq!(
            parse_since("3w", now).unwrap(),
            now - chrono::Duration::days(21)
        );
        assert_eq!(
            parse_since("1h30m", now).unwrap(),
            Utc.with_ymd_and_hms(2024, 5, 10, 10, 30, 0).unwrap()
        );
    }

    #[test]
    fn list_streams_each_task_once_with_its_later_updates() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path().join("l.jsonl"));
        let now = Utc::now();
        let update = |id: &str, card: Option<&str>, status: Option<&str>| UpdateRecord {
            id: id.into(),
            at: now,
            card_url: card.map(str::to_string),
            status: status.map(str::to_string),
            ..Default::default()
        };
        l.create(&task("a", Tag::Billable), Some("X-1"), now)
            .unwrap();
        l.create(&task("b", Tag::Internal), Some("X-2"), now)
            .unwrap();
        l.update(update("X-1", Some("http://k/1"), None)).unwrap();
        // The same id created again is not a second task, and an update
        // for an id never created names nothing.
        l.create(&task("c", Tag::Billable), Some("X-1"), now)
            .unwrap();
        l.update(update("X-9", Some("http://k/9"), None)).unwrap();
        l.update(update("X-1", None, Some("resolved"))).unwrap();
        let mut listed = Vec::new();
        l.list(&ListFilter::default(), |t| {
            listed.push((
                t.id.clone(),
                t.task.source.clone(),
                t.card_url.clone(),
                t.status.clone(),
            ));
            Ok(())
        })
        .unwrap();
        let want = |id: &str, src: &str, card: Option<&str>, status: &str| {
            (
                id.to_string(),
                src.to_string(),
                card.map(str::to_string),
                status.to_string(),
            )
        };
        assert_eq!(
            listed,
            [
                want("X-1", "a", Some("http://k/1"), "resolved"),
                want("X-2", "b", None, "open")
            ]
        );
        // The view folded in memory agrees.
        let folded: Vec<_> = l
            .load()
            .unwrap()
            .tasks
            .into_iter()
            .map(|t| (t.id, t.card_url, t.status))
            .collect();
        let streamed: Vec<_> = listed
            .into_iter()
            .map(|(id, _, card, status)| (id, card, status))
            .collect();
        assert_eq!(folded, streamed);
    }

    #[test]
    fn stats_of_no_tasks_print_no_empty_headings() {
        assert_eq!(Stats::default().render_text(), "No tasks.\n");
        let mut s = Stats {
            total: 1,
            ..Stats::default()
        };
        s.by_tag.insert("INTERNAL".into(), 1);
        let text = s.render_text();
        assert!(text.starts_with("Tasks: 1 (") && text.contains("By tag:\n  INTERNAL"));
        assert!(!text.contains("By day:"), "{text}");
    }
}
