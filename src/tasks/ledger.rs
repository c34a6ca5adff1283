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

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::{Tag, Task};
use crate::files;
use crate::jsonl as lines;

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
    /// An attempt to create a task through the MC command.
    Intent(IntentRecord),
}

impl Record {
    /// When the record was written.
    fn at(&self) -> DateTime<Utc> {
        match self {
            Record::Create(c) => c.created_at,
            Record::Update(u) => u.at,
            Record::Intent(i) => i.at,
        }
    }
}

/// One attempt of the MC command for a source: written before the command
/// runs, then again with its process group and, when it is known, how it
/// ended without a task (a `create` record is the success).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentRecord {
    /// The idempotency key (post id or incident key).
    pub source: String,
    /// 1 for the first attempt of this source.
    pub attempt: u32,
    /// When the attempt started.
    pub at: DateTime<Utc>,
    /// The command's process group, once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgid: Option<u32>,
    /// How it ended, when it ended without an id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AttemptEnd>,
}

/// How an attempt ended without a task id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptEnd {
    /// The command failed cleanly (non-zero exit, could not start): it made
    /// no task, a retry is safe.
    Failed,
    /// The command was killed (timeout) or its output had no id: it may
    /// have made the task.
    Unknown,
}

/// An attempt as the ledger knows it, its records folded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// Its number.
    pub attempt: u32,
    /// When it started.
    pub at: DateTime<Utc>,
    /// Its process group, once it ran.
    pub pgid: Option<u32>,
    /// How it ended (`None`: no end recorded: the agent died during it).
    pub outcome: Option<AttemptEnd>,
}

/// What the ledger knows of one source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceHistory {
    /// The task made for it, updates folded in.
    pub task: Option<Filed>,
    /// Attempts of the MC command, oldest first.
    pub attempts: Vec<Attempt>,
}

/// What a look-up needs of a task already filed: enough to record it
/// again, not its text (a cycle keeps one per task it filed).
#[derive(Debug, Clone, PartialEq)]
pub struct Filed {
    /// The task's id.
    pub id: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The Planka card, once an update named it.
    pub card_id: Option<String>,
    /// The Planka card URL.
    pub card_url: Option<String>,
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
    /// New status (`open`, `resolved`, `closed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// New priority (a TASK relabelled INCIDENT, or back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<super::Priority>,
    /// New label, when the team corrected the classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Why, in a few words (who corrected what).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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

/// Folds records into tasks, line by line: the one place that knows how
/// creates and updates combine, fed by [`parse`] and by the streaming
/// readers alike.
#[derive(Default)]
struct Folder {
    view: LedgerView,
    index: BTreeMap<String, usize>,
}

impl Folder {
    fn line(&mut self, line_no: usize, raw: Result<&[u8], &str>) {
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

/// One line as a record; `None` for a blank line.
fn decode(raw: &[u8]) -> Result<Option<Record>, String> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = std::str::from_utf8(raw).map_err(|e| e.to_string())?;
    serde_json::from_str::<Record>(text)
        .map(Some)
        .map_err(|e| e.to_string())
}

impl LedgerTask {
    /// Its line in `tasks list`.
    pub fn list_line(&self) -> String {
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
    pub fn filed(&self) -> Filed {
        Filed {
            id: self.id.clone(),
            created_at: self.created_at,
            card_id: self.card_id.clone(),
            card_url: self.card_url.clone(),
        }
    }

    fn from_create(c: CreateRecord) -> LedgerTask {
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

    fn apply(&mut self, u: UpdateRecord) {
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

/// Parses ledger bytes. Pure, so torn and garbage lines are table-tested.
pub fn parse(bytes: &[u8]) -> LedgerView {
    let mut f = Folder::default();
    f.view.ends_with_newline = bytes.is_empty() || bytes.ends_with(b"\n");
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        f.line(i + 1, Ok(raw));
    }
    f.view
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
    pub fn render_text(&self) -> String {
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

/// How much older than its source a record may look and still belong to
/// it: the agent's clock against the chat server's.
pub const CLOCK_SLACK_MS: i64 = 3_600_000;

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

/// The ledger's newest records, folded per source and kept for the rest
/// of the process. A cycle looks up each source it files; walking back
/// afresh every time would pass over every task filed earlier in the same
/// cycle, n²/2 records for a burst of n. The window stays right while the
/// file is as long as it was read plus this process's own appends, which
/// the cycle lock makes the only ones; any other length reads it again.
#[derive(Debug, Default)]
struct Window {
    /// Records older than this were not read.
    from_ms: i64,
    /// The file length the window accounts for.
    len: u64,
    /// Boxed, so the table holds only pointers: growing it at the 1,792nd
    /// task of one cycle held 2,048 and 4,096 records' room at once, the
    /// peak of a 10,000-post cycle.
    sources: HashMap<String, Box<SourceRecords>>,
    /// Task id to its source, to route updates.
    ids: HashMap<String, String>,
}

#[derive(Debug, Default)]
struct SourceRecords {
    /// The newest task made for the source, card updates folded in.
    task: Option<Filed>,
    /// The MC command's attempt records, oldest first.
    intents: Vec<IntentRecord>,
}

impl Window {
    /// Takes in the next record in file order.
    fn fold(&mut self, rec: Record) {
        match rec {
            Record::Create(c) => {
                let source = c.task.source.clone();
                self.ids.insert(c.id.clone(), source.clone());
                self.sources.entry(source).or_default().task = Some(Filed {
                    id: c.id,
                    created_at: c.created_at,
                    card_id: None,
                    card_url: None,
                });
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
            Record::Intent(i) => self
                .sources
                .entry(i.source.clone())
                .or_default()
                .intents
                .push(i),
        }
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
    /// A ledger at `path` (`[paths] ledger`, `~` already expanded).
    pub fn new(path: PathBuf) -> Ledger {
        Ledger {
            path,
            window: Arc::default(),
        }
    }

    /// The file's path, for messages and `status`.
    pub fn path(&self) -> &Path {
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

    /// What the ledger knows of `source`: its task (updates folded in) and
    /// the MC command's attempts. Read from the [`Window`] of newest
    /// records, which reaches back to the first record older than
    /// `not_before_ms` less [`CLOCK_SLACK_MS`]: a task cannot predate its
    /// source, so the cost is the records written since, whatever the
    /// ledger's size, and it is paid once per process, not once per source.
    pub fn history(&self, source: &str, not_before_ms: i64) -> Result<SourceHistory> {
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
            *window = Some(self.read_window(file, len, stop.saturating_sub(CLOCK_SLACK_MS))?);
        }
        Ok(window
            .as_ref()
            .map(|w| w.history(source))
            .unwrap_or_default())
    }

    /// Walks back from `len` to the first record older than `from_ms` and
    /// folds what it passed, oldest first.
    fn read_window(&self, file: std::fs::File, len: u64, from_ms: i64) -> Result<Window> {
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
            newest_first.push(rec);
        }
        let mut w = Window {
            from_ms,
            len,
            ..Window::default()
        };
        for rec in newest_first.into_iter().rev() {
            w.fold(rec);
        }
        Ok(w)
    }

    fn len_of(&self, file: &std::fs::File) -> Result<u64> {
        Ok(file
            .metadata()
            .with_context(|| format!("reading task ledger {}", self.path.display()))?
            .len())
    }

    /// The task created for `source` (see [`Ledger::history`]).
    pub fn find_by_source(&self, source: &str, not_before_ms: i64) -> Result<Option<Filed>> {
        Ok(self.history(source, not_before_ms)?.task)
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
    pub fn update(&self, update: UpdateRecord) -> Result<()> {
        self.append(Record::Update(update))
    }

    /// Appends an attempt record of the MC command.
    pub fn intent(&self, intent: IntentRecord) -> Result<()> {
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
    pub fn unreadable_lines(&self) -> Result<usize> {
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
