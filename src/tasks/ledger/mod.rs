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
//! {"kind":"intent","source":"…","attempt":1,"at":"…"}
//! {"kind":"intent","source":"…","attempt":1,"at":"…","pgid":4242}
//! ```
//!
//! An `intent` is written (and synced) before the MC command runs for a
//! source, and again with the command's process group once it runs; a
//! `create` is its success. So after any crash the ledger tells, per
//! source, whether a task exists, whether an attempt may have made one
//! (and whether it is still running), or whether nothing was tried.
//!
//! The ledger only grows, so nothing here reads it whole: lookups walk
//! back from the end once per process, to records older than the oldest
//! source asked about (a task cannot predate its post), and keep that
//! stretch folded per source; the next `OPS-<n>` comes from the newest
//! create, and `tasks list`/`stats` stream it line by line.
//!
//! Lines are appended whole in one `write` (`crate::files::append_line_private`),
//! so a concurrent reader (`ops-agent tasks list` while a cycle runs) sees
//! whole lines, and a crash mid-write can only leave a torn last line. Readers
//! skip a line that does not parse and report it; the next append first ends
//! a torn line so it cannot swallow the new record. Writers are serialised by
//! the cycle lock, which is what keeps `OPS-<n>` ids unique.
//!
//! This file: the handle and its writer. `record.rs`: the line format;
//! `fold.rs`: tasks folded from records; `window.rs`: lookups by source;
//! `stream.rs`: the streaming readers of `tasks list` and `tasks stats`.

mod fold;
mod record;
mod stream;
mod window;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::Task;
use crate::files;
use crate::jsonl as lines;
use fold::Folder;
use record::decode;
use window::Window;

use fold::LedgerView;
pub use fold::{LedgerTask, SkippedLine};
pub(crate) use record::AttemptEnd;
pub use record::{CreateRecord, IntentRecord, Record, UpdateRecord};
pub(crate) use stream::parse_since;
pub use stream::{ListFilter, Stats};
pub(crate) use window::{Attempt, Filed};

/// Prefix of ids the built-in ledger hands out.
const ID_PREFIX: &str = "OPS-";

/// Handle on the ledger file: its path, and the [`Window`] of newest
/// records this process has read (clones share it).
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
    window: Arc<Mutex<Option<Window>>>,
}

impl PartialEq for Ledger {
    fn eq(&self, other: &Ledger) -> bool {
        self.path == other.path
    }
}

impl Ledger {
    /// A ledger at `path` (`[paths] ledger`, `~` already expanded).
    pub fn new(path: PathBuf) -> Ledger {
        Ledger {
            path,
            window: Arc::default(),
        }
    }

    /// The file's path, for tests that tamper with the file.
    #[cfg(test)]
    fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn open(&self) -> Result<Option<std::fs::File>> {
        files::open_private_read(&self.path)
            .with_context(|| format!("reading task ledger {}", self.path.display()))
    }

    /// Folds the whole ledger in memory: for tests and small tools; the
    /// cycle and `tasks` stream it instead.
    pub fn load(&self) -> Result<LedgerView> {
        let mut f = Folder::default();
        f.view.ends_with_newline = true;
        if let Some(file) = self.open()? {
            f.view.ends_with_newline = self.ends_with_newline()?;
            lines::for_each_forward(file, |n, l| {
                f.line(n, l.as_deref().map_err(|e| *e));
                true
            })
            .with_context(|| format!("reading task ledger {}", self.path.display()))?;
        }
        for s in &f.view.skipped {
            tracing::warn!(ledger = %self.path.display(), line = s.line, reason = %s.reason, "Skipped an unreadable task ledger line.");
        }
        Ok(f.view)
    }

    fn len_of(&self, file: &std::fs::File) -> Result<u64> {
        Ok(file
            .metadata()
            .with_context(|| format!("reading task ledger {}", self.path.display()))?
            .len())
    }

    /// Appends a create record. `external_id` is the MC command's id; `None`
    /// makes the ledger the MC and gives the next `OPS-<n>`.
    pub fn create(
        &self,
        task: &Task,
        external_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<LedgerTask> {
        let id = match external_id {
            Some(id) => id.to_string(),
            None => self.next_id()?,
        };
        let rec = CreateRecord {
            id,
            created_at: now,
            backend: if external_id.is_some() {
                "command"
            } else {
                "ledger"
            }
            .into(),
            task: task.clone(),
        };
        self.append(Record::Create(rec.clone()))?;
        Ok(LedgerTask::from_create(rec))
    }

    /// Appends an update record (card added, status changed).
    pub(crate) fn update(&self, update: UpdateRecord) -> Result<()> {
        self.append(Record::Update(update))
    }

    /// Appends an attempt record of the MC command.
    pub(crate) fn intent(&self, intent: IntentRecord) -> Result<()> {
        self.append(Record::Intent(intent))
    }

    fn ends_with_newline(&self) -> Result<bool> {
        match self.open()? {
            Some(mut f) => lines::ends_with_newline(&mut f)
                .with_context(|| format!("reading task ledger {}", self.path.display())),
            None => Ok(true),
        }
    }

    /// Appends one record, and folds it into the window when the window
    /// accounted for the whole file before it.
    fn append(&self, rec: Record) -> Result<()> {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let (before, torn) = match self.open()? {
            Some(mut f) => (
                self.len_of(&f)?,
                !lines::ends_with_newline(&mut f)
                    .with_context(|| format!("reading task ledger {}", self.path.display()))?,
            ),
            None => (0, false),
        };
        let mut line = serde_json::to_string(&rec).context("encoding a ledger record")?;
        if torn {
            // End a torn last line first, so it cannot swallow this record.
            line.insert(0, '\n');
        }
        files::append_line_private(&self.path, &line)
            .with_context(|| format!("appending to task ledger {}", self.path.display()))?;
        match window.as_mut() {
            Some(w) if w.len == before => {
                w.len = before + line.len() as u64 + 1;
                w.fold(rec);
            }
            _ => *window = None,
        }
        Ok(())
    }

    /// The next `OPS-<n>`: one more than the newest ledger id, found by
    /// walking back to the newest create with that prefix.
    fn next_id(&self) -> Result<String> {
        let mut max = 0u64;
        if let Some(file) = self.open()? {
            let mut back = lines::Backward::new(file)?;
            while let Some(line) = back.next_line()? {
                if let Ok(Ok(Some(Record::Create(c)))) = line.map(|l| decode(&l)) {
                    if let Some(n) =
                        c.id.strip_prefix(ID_PREFIX)
                            .and_then(|n| n.parse::<u64>().ok())
                    {
                        max = n;
                        break;
                    }
                }
            }
        }
        Ok(format!("{ID_PREFIX}{}", max + 1))
    }
}

#[cfg(test)]
/// A task for the tests of the ledger's files.
mod testkit {
    use crate::tasks::{Priority, Tag, Task};

    pub(super) fn task(source: &str, tag: Tag) -> Task {
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
}

#[cfg(test)]
mod tests {
    use super::testkit::task;
    use super::*;
    use crate::tasks::Tag;

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
        assert!(l.find_by_source("b", 0).unwrap().is_some());
        let f = ListFilter {
            tag: Some(Tag::Internal),
            ..Default::default()
        };
        let mut listed = Vec::new();
        let skipped = l
            .list(&f, |t| {
                listed.push(t.id.clone());
                Ok(())
            })
            .unwrap();
        assert_eq!((listed, skipped.len()), (vec!["OPS-2".to_string()], 1));
        let s = l.stats().unwrap();
        assert_eq!((s.total, s.by_tag["BILLABLE"], s.skipped_lines), (2, 1, 1));
        assert!(s.render_text().contains("BILLABLE"));
    }
}
