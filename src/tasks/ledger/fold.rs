//! Records folded into tasks: the view of the whole ledger that
//! `tasks list` shows and `load` and `parse` build, one line at a time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::record::{decode, CreateRecord, Record, UpdateRecord};
use super::window::Filed;
use crate::tasks::Task;

/// A task with its updates folded in: what `tasks list` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerTask {
    /// The task's id.
    pub id: String,
    /// When it was created.
    pub(crate) created_at: DateTime<Utc>,
    /// `ledger` or `command`.
    pub backend: String,
    /// `open` until an update says otherwise.
    pub(crate) status: String,
    /// The Planka card, when one was made.
    card_id: Option<String>,
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
    pub(crate) line: usize,
    /// Why it was skipped.
    pub(crate) reason: String,
}

/// The whole ledger as read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LedgerView {
    /// Tasks in file order (creation order).
    pub tasks: Vec<LedgerTask>,
    /// Lines that did not parse (a torn last line after a crash, garbage).
    pub(crate) skipped: Vec<SkippedLine>,
    /// False when the file ends in a torn line; the next append ends it first.
    #[serde(skip)]
    pub(crate) ends_with_newline: bool,
}

/// Folds records into tasks, line by line: the one place that knows how
/// creates and updates combine, fed by the streaming readers (and, in
/// the tests, by byte slices).
#[derive(Default)]
pub(super) struct Folder {
    pub(super) view: LedgerView,
    index: BTreeMap<String, usize>,
}

impl Folder {
    pub(super) fn line(&mut self, line_no: usize, raw: Result<&[u8], &str>) {
        let rec = raw.map_err(str::to_string).and_then(decode);
        match rec {
            Ok(None) => {}
            Ok(Some(Record::Create(c))) => {
                if self.index.contains_key(&c.id) {
                    self.skip(line_no, format!("duplicate id {}", c.id));
                    return;
                }
                self.index.insert(c.id.clone(), self.view.tasks.len());
                self.view.tasks.push(LedgerTask::from_create(c));
            }
            Ok(Some(Record::Update(u))) => match self.index.get(&u.id) {
                Some(&k) => self.view.tasks[k].apply(u),
                None => self.skip(line_no, format!("update for unknown id {}", u.id)),
            },
            Ok(Some(Record::Intent(_))) => {}
            Err(e) => self.skip(line_no, format!("not a ledger record: {e}")),
        }
    }

    fn skip(&mut self, line: usize, reason: String) {
        self.view.skipped.push(SkippedLine { line, reason });
    }
}

impl LedgerTask {
    /// Its line in `tasks list`.
    pub(crate) fn list_line(&self) -> String {
        format!(
            "{}  {}  {:<8} {:<6} {:<10} {:<8} {}{}",
            self.id,
            self.created_at.format("%Y-%m-%d %H:%M"),
            self.task.tag.as_str(),
            self.task.priority.as_str(),
            self.task.label,
            self.task.team,
            self.task.title,
            self.card_url
                .as_deref()
                .map(|u| format!("  [{u}]"))
                .unwrap_or_default()
        )
    }

    /// What a look-up keeps of it.
    pub(crate) fn filed(&self) -> Filed {
        Filed {
            id: self.id.clone(),
            created_at: self.created_at,
            card_id: self.card_id.clone(),
            card_url: self.card_url.clone(),
        }
    }

    pub(super) fn from_create(c: CreateRecord) -> LedgerTask {
        LedgerTask {
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
        }
    }

    pub(super) fn apply(&mut self, u: UpdateRecord) {
        if u.card_id.is_some() {
            self.card_id = u.card_id;
        }
        if u.card_url.is_some() {
            self.card_url = u.card_url;
        }
        if let Some(s) = u.status {
            self.status = s;
        }
        if let Some(p) = u.priority {
            self.task.priority = p;
        }
        if let Some(l) = u.label {
            self.task.label = l;
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::super::testkit::task;
    use super::*;
    use crate::tasks::Tag;

    /// Folds ledger bytes line by line as the reader does, so torn and
    /// garbage lines are table-tested without a file.
    fn parse(bytes: &[u8]) -> LedgerView {
        let mut f = Folder::default();
        f.view.ends_with_newline = bytes.is_empty() || bytes.ends_with(b"\n");
        for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            f.line(i + 1, Ok(raw));
        }
        f.view
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
}
