//! The built-in task ledger: MC when no command is configured, and the
//! agent's own journal of what it created when one is.
//!
//! An append-only JSON-lines file (default
//! `~/system/agents/state/ops-tasks.jsonl`). Each line is one record:
//!
//! ```text
//! {"kind":"create","id":"OPS-1","created_at":"…","backend":"ledger","title":…,"source":…,…}
//! {"kind":"update","id":"OPS-1","at":"…","card_id":"…","card_url":"…"}
//! {"kind":"update","id":"OPS-1","at":"…","status":"resolved"}
//! ```
//!
//! Lines are appended whole in one `write` (`crate::files::append_line_private`),
//! so a concurrent reader (`ops-agent tasks list` while a cycle runs) sees
//! whole lines, and a crash mid-write can only leave a torn last line. Readers
//! skip a line that does not parse and report it; the next append first ends
//! a torn line so it cannot swallow the new record. Writers are serialised by
//! the cycle lock, which is what keeps `OPS-<n>` ids unique.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::{Tag, Task};
use crate::files;

/// Prefix of ids the built-in ledger hands out.
pub const ID_PREFIX: &str = "OPS-";

/// One line of the ledger file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A task was created (by the ledger itself, or by the external command).
    Create(CreateRecord),
    /// Something was learnt about a task later (its card, its status).
    Update(UpdateRecord),
}

/// A task as first written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateRecord {
    /// `OPS-<n>` for ledger tasks, the MC id for command tasks.
    pub id: String,
    /// When the agent created it.
    pub created_at: DateTime<Utc>,
    /// `ledger` or `command`: who holds the task of record.
    #[serde(default)]
    pub backend: String,
    /// Every task field.
    #[serde(flatten)]
    pub task: Task,
}

/// A later change to a task, keyed by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateRecord {
    /// The task's id.
    pub id: String,
    /// When the change was recorded.
    #[serde(default = "epoch")]
    pub at: DateTime<Utc>,
    /// Planka card id, once the card exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_id: Option<String>,
    /// Planka card URL, once the card exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_url: Option<String>,
    /// New status (`open`, `resolved`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

fn epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// A task with its updates folded in: what `tasks list` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerTask {
    /// The task's id.
    pub id: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// `ledger` or `command`.
    pub backend: String,
    /// `open` until an update says otherwise.
    pub status: String,
    /// The Planka card, when one was made.
    pub card_id: Option<String>,
    /// The Planka card URL.
    pub card_url: Option<String>,
    /// Every task field.
    #[serde(flatten)]
    pub task: Task,
}

/// A line that was not a record; reported so an operator can look.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedLine {
    /// 1-based line number.
    pub line: usize,
    /// Why it was skipped.
    pub reason: String,
}

/// The whole ledger as read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LedgerView {
    /// Tasks in file order (creation order).
    pub tasks: Vec<LedgerTask>,
    /// Lines that did not parse (a torn last line after a crash, garbage).
    pub skipped: Vec<SkippedLine>,
    /// False when the file ends in a torn line; the next append ends it first.
    #[serde(skip)]
    pub ends_with_newline: bool,
}

/// Parses ledger bytes. Pure, so torn and garbage lines are table-tested.
pub fn parse(bytes: &[u8]) -> LedgerView {
    let mut view = LedgerView {
        ends_with_newline: bytes.is_empty() || bytes.ends_with(b"\n"),
        ..Default::default()
    };
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_no = i + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let rec = std::str::from_utf8(raw)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str::<Record>(s).map_err(|e| e.to_string()));
        match rec {
            Ok(Record::Create(c)) => {
                if index.contains_key(&c.id) {
                    view.skipped.push(SkippedLine {
                        line: line_no,
                        reason: format!("duplicate id {}", c.id),
                    });
                    continue;
                }
                index.insert(c.id.clone(), view.tasks.len());
                view.tasks.push(LedgerTask {
                    id: c.id,
                    created_at: c.created_at,
                    backend: if c.backend.is_empty() {
                        "ledger".into()
                    } else {
                        c.backend
                    },
                    status: "open".into(),
                    card_id: None,
                    card_url: None,
                    task: c.task,
                });
            }
            Ok(Record::Update(u)) => match index.get(&u.id) {
                Some(&k) => {
                    let t = &mut view.tasks[k];
                    if u.card_id.is_some() {
                        t.card_id = u.card_id;
                    }
                    if u.card_url.is_some() {
                        t.card_url = u.card_url;
                    }
                    if let Some(s) = u.status {
                        t.status = s;
                    }
                }
                None => view.skipped.push(SkippedLine {
                    line: line_no,
                    reason: format!("update for unknown id {}", u.id),
                }),
            },
            Err(e) => view.skipped.push(SkippedLine {
                line: line_no,
                reason: format!("not a ledger record: {e}"),
            }),
        }
    }
    view
}

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
    pub fn matches(&self, t: &LedgerTask) -> bool {
        self.owner.as_deref().is_none_or(|o| t.task.owner == o)
            && self.tag.is_none_or(|g| t.task.tag == g)
            && self.since.is_none_or(|s| t.created_at >= s)
    }
}

/// Parses `--since`: a date (`2024-05-01`, midnight UTC), an RFC 3339 time,
/// or a span back from `now` (`30m`, `24h`, `7d`).
pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
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

/// `tasks list` output.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ListResult {
    /// Matching tasks, oldest first.
    pub tasks: Vec<LedgerTask>,
    /// Unreadable lines, so a script notices damage.
    pub skipped: Vec<SkippedLine>,
}

impl ListResult {
    /// The text rendering: one task per line, then a note on skipped lines.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        if self.tasks.is_empty() {
            out.push_str("No tasks.\n");
        }
        for t in &self.tasks {
            let _ = writeln!(
                out,
                "{}  {}  {:<8} {:<6} {:<10} {:<8} {}{}",
                t.id,
                t.created_at.format("%Y-%m-%d %H:%M"),
                t.task.tag.as_str(),
                t.task.priority.as_str(),
                t.task.label,
                t.task.team,
                t.task.title,
                t.card_url
                    .as_deref()
                    .map(|u| format!("  [{u}]"))
                    .unwrap_or_default()
            );
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(
                out,
                "warning: {} unreadable ledger line(s) skipped",
                self.skipped.len()
            );
        }
        out
    }
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

/// Counts tasks. Pure.
pub fn compute_stats(view: &LedgerView) -> Stats {
    let mut s = Stats {
        skipped_lines: view.skipped.len() as u64,
        ..Default::default()
    };
    for t in &view.tasks {
        s.total += 1;
        *s.by_tag.entry(t.task.tag.as_str().into()).or_default() += 1;
        *s.by_priority
            .entry(t.task.priority.as_str().into())
            .or_default() += 1;
        *s.by_label.entry(t.task.label.clone()).or_default() += 1;
        *s.by_day
            .entry(t.created_at.format("%Y-%m-%d").to_string())
            .or_default() += 1;
        if t.card_id.is_some() {
            s.with_card += 1;
        }
    }
    s
}

impl Stats {
    /// The text rendering, one section per dimension.
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "Tasks: {} ({} with a Planka card)\n",
            self.total, self.with_card
        );
        for (name, map) in [
            ("By tag", &self.by_tag),
            ("By priority", &self.by_priority),
            ("By label", &self.by_label),
            ("By day", &self.by_day),
        ] {
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

/// Handle on the ledger file; cheap, holds only the path.
#[derive(Debug, Clone, PartialEq)]
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    /// A ledger at `path` (`[paths] ledger`, `~` already expanded).
    pub fn new(path: PathBuf) -> Ledger {
        Ledger { path }
    }

    /// The file's path, for messages and `status`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole ledger; a missing file is an empty ledger.
    pub fn load(&self) -> Result<LedgerView> {
        let bytes = files::read_private_bytes(&self.path)
            .with_context(|| format!("reading task ledger {}", self.path.display()))?;
        let view = parse(&bytes.unwrap_or_default());
        for s in &view.skipped {
            tracing::warn!(ledger = %self.path.display(), line = s.line, reason = %s.reason, "Skipped an unreadable task ledger line.");
        }
        Ok(view)
    }

    /// The task created for `source`, if any: the idempotency check that
    /// survives a crash before the state file was saved.
    pub fn find_by_source(&self, source: &str) -> Result<Option<LedgerTask>> {
        Ok(self
            .load()?
            .tasks
            .into_iter()
            .find(|t| t.task.source == source))
    }

    /// Appends a create record. `external_id` is the MC command's id; `None`
    /// makes the ledger the MC and gives the next `OPS-<n>`.
    pub fn create(
        &self,
        task: &Task,
        external_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<LedgerTask> {
        let view = self.load()?;
        let id = match external_id {
            Some(id) => id.to_string(),
            None => next_id(&view),
        };
        let rec = CreateRecord {
            id: id.clone(),
            created_at: now,
            backend: if external_id.is_some() {
                "command"
            } else {
                "ledger"
            }
            .into(),
            task: task.clone(),
        };
        self.append(&Record::Create(rec), view.ends_with_newline)?;
        Ok(LedgerTask {
            id,
            created_at: now,
            backend: if external_id.is_some() {
                "command"
            } else {
                "ledger"
            }
            .into(),
            status: "open".into(),
            card_id: None,
            card_url: None,
            task: task.clone(),
        })
    }

    /// Appends an update record (card added, status changed).
    pub fn update(&self, update: UpdateRecord) -> Result<()> {
        let ends = self.load()?.ends_with_newline;
        self.append(&Record::Update(update), ends)
    }

    fn append(&self, rec: &Record, ends_with_newline: bool) -> Result<()> {
        let mut line = serde_json::to_string(rec).context("encoding a ledger record")?;
        if !ends_with_newline {
            line.insert(0, '\n');
        }
        files::append_line_private(&self.path, &line)
            .with_context(|| format!("appending to task ledger {}", self.path.display()))
    }

    /// `tasks list`.
    pub fn list(&self, filter: &ListFilter) -> Result<ListResult> {
        let view = self.load()?;
        Ok(ListResult {
            tasks: view
                .tasks
                .into_iter()
                .filter(|t| filter.matches(t))
                .collect(),
            skipped: view.skipped,
        })
    }

    /// `tasks stats`.
    pub fn stats(&self) -> Result<Stats> {
        Ok(compute_stats(&self.load()?))
    }
}

fn next_id(view: &LedgerView) -> String {
    let max = view
        .tasks
        .iter()
        .filter_map(|t| t.id.strip_prefix(ID_PREFIX)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    format!("{ID_PREFIX}{}", max + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Priority;

    fn task(source: &str, tag: Tag) -> Task {
        Task {
            title: "t".into(),
            description: "d".into(),
            owner: "ops".into(),
            tag,
            priority: Priority::Normal,
            source: source.into(),
            label: "TASK".into(),
            team: "wizard".into(),
            channel: "c".into(),
            author: "a".into(),
            permalink: "p".into(),
        }
    }

    #[test]
    fn parse_skips_torn_and_garbage_lines() {
        let now = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let c = serde_json::to_string(&Record::Create(CreateRecord {
            id: "OPS-1".into(),
            created_at: now,
            backend: "ledger".into(),
            task: task("p1", Tag::Billable),
        }))
        .unwrap();
        let u = serde_json::to_string(&Record::Update(UpdateRecord {
            id: "OPS-1".into(),
            at: now,
            card_url: Some("http://k/cards/1".into()),
            ..Default::default()
        }))
        .unwrap();
        let mut bytes = format!("{c}\n\ngarbage\n{u}\n").into_bytes();
        bytes.extend_from_slice(&c.as_bytes()[..c.len() / 2]);
        bytes.extend_from_slice("é".as_bytes().split_at(1).0);
        let v = parse(&bytes);
        assert_eq!(v.tasks.len(), 1);
        assert_eq!(v.tasks[0].card_url.as_deref(), Some("http://k/cards/1"));
        assert_eq!(
            v.skipped.iter().map(|s| s.line).collect::<Vec<_>>(),
            vec![3, 5]
        );
        assert!(!v.ends_with_newline);
    }

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
    fn ids_count_up_and_append_after_torn_line_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path().join("l.jsonl"));
        let now = Utc::now();
        assert_eq!(
            l.create(&task("a", Tag::Billable), None, now).unwrap().id,
            "OPS-1"
        );
        // A crash mid-write leaves a torn line without a newline.
        files::append_line_private(l.path(), "{\"kind\":\"create\",\"id\":\"OPS-").unwrap();
        let text = std::fs::read_to_string(l.path()).unwrap();
        crate::files::write_private_atomic(l.path(), text.trim_end().as_bytes()).unwrap();
        assert_eq!(
            l.create(&task("b", Tag::Internal), None, now).unwrap().id,
            "OPS-2"
        );
        let v = l.load().unwrap();
        assert_eq!(v.tasks.len(), 2);
        assert_eq!(v.skipped.len(), 1);
        assert!(l.find_by_source("b").unwrap().is_some());
        let f = ListFilter {
            tag: Some(Tag::Internal),
            ..Default::default()
        };
        assert_eq!(l.list(&f).unwrap().tasks.len(), 1);
        let s = l.stats().unwrap();
        assert_eq!((s.total, s.by_tag["BILLABLE"], s.skipped_lines), (2, 1, 1));
        assert!(s.render_text().contains("BILLABLE"));
    }
}
