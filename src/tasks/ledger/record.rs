//! The ledger's line format: the three records (`create`, `update`,
//! `intent`) and how one line is read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::tasks::{Priority, Task};

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
    pub(super) fn at(&self) -> DateTime<Utc> {
        match self {
            Record::Create(c) => c.created_at,
            Record::Update(u) => u.at,
            Record::Intent(i) => i.at,
        }
    }

    /// Whether the record is about `source`: its create or an attempt for
    /// it, or an update of one of `task_ids` (an update names its task).
    pub(super) fn concerns(&self, source: &str, task_ids: &[String]) -> bool {
        match self {
            Record::Create(c) => c.task.source == source,
            Record::Intent(i) => i.source == source,
            Record::Update(u) => task_ids.contains(&u.id),
        }
    }
}

/// One attempt of the MC command for a source: written before the command
/// runs, then again with its process group and, when it is known, how it
/// ended without a task (a `create` record is the success).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentRecord {
    /// The idempotency key (post id or incident key).
    pub(crate) source: String,
    /// 1 for the first attempt of this source.
    pub(crate) attempt: u32,
    /// When the attempt started.
    pub(crate) at: DateTime<Utc>,
    /// The command's process group, once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pgid: Option<u32>,
    /// How it ended, when it ended without an id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) outcome: Option<AttemptEnd>,
}

/// How an attempt ended without a task id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AttemptEnd {
    /// The command failed cleanly (non-zero exit, could not start): it made
    /// no task, a retry is safe.
    Failed,
    /// The command was killed (timeout) or its output had no id: it may
    /// have made the task.
    Unknown,
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
    pub priority: Option<Priority>,
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

/// One line as a record; `None` for a blank line.
pub(super) fn decode(raw: &[u8]) -> Result<Option<Record>, String> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = std::str::from_utf8(raw).map_err(|e| e.to_string())?;
    serde_json::from_str::<Record>(text)
        .map(Some)
        .map_err(|e| e.to_string())
}
