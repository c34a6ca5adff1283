//! The fix-history file: every attempt, recorded before its action runs,
//! so the rate limit counts attempts even when a cycle dies mid-fix.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::health::guard::OwnActions;
use crate::store::SetAside;

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The re-check after the settle time passed.
    Verified,
    /// The action failed or the re-check still failed.
    Failed,
    /// Recorded before the action; stays so if the cycle died mid-fix or
    /// the service was still starting at the re-check.
    Pending,
}

impl Outcome {
    /// The lowercase word.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::Failed => "failed",
            Outcome::Pending => "pending",
        }
    }
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the attempt started (epoch ms).
    pub at_ms: i64,
    /// The action's config spelling.
    pub action: String,
    /// What it was for: the failing check's reason, or the operator's
    /// words for a manual fix.
    #[serde(default)]
    pub issue: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The re-check's reason or the action's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The fix-history file (`/tmp/ops-fix-history.json` by default), owner-only:
///
/// ```json
/// {"version": 1,
///  "attempts": {"mattermost": [
///     {"at_ms": 1714557600000, "action": "restart_container",
///      "issue": "mattermost exited (exit code 137)",
///      "outcome": "verified", "detail": "mattermost running, healthy"}]}}
/// ```
///
/// `attempts` maps a service to its attempts, oldest first; `outcome` is
/// `verified`, `failed` or `pending` (written before the action runs).
/// Attempts older than a day are pruned. Deleting the file resets every
/// counter; a file that does not parse is set aside as
/// `<name>.corrupt-<time>` and the history starts empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FixHistory {
    /// Format version (1).
    version: u32,
    /// Attempts per service, oldest first.
    pub attempts: BTreeMap<String, Vec<Attempt>>,
}

impl Default for FixHistory {
    fn default() -> Self {
        FixHistory {
            version: 1,
            attempts: BTreeMap::new(),
        }
    }
}

/// Attempts kept for `explain` and `fix --history` beyond the window.
const KEEP_MS: i64 = 24 * 3600 * 1000;
const KEEP_PER_SERVICE: usize = 50;

impl FixHistory {
    /// Loads the history; a missing file is an empty history. A corrupt one
    /// is set aside and replaced by an empty history, and the second value
    /// says so (for the cycle report and the log).
    pub fn load(path: &Path, now: DateTime<Utc>) -> Result<(FixHistory, Option<SetAside>)> {
        let loaded = crate::store::load::<FixHistory>(path, now)?;
        if loaded.set_aside.is_some() || loaded.value.version == 1 {
            return Ok((loaded.value, loaded.set_aside));
        }
        // A future format this binary cannot count with: keep it, start empty.
        let moved_to = crate::files::set_aside(path, now)?;
        Ok((
            FixHistory::default(),
            Some(SetAside {
                path: path.to_path_buf(),
                moved_to,
                at_ms: now.timestamp_millis(),
                error: format!("unknown fix history version {}", loaded.value.version),
            }),
        ))
    }

    /// Writes the history atomically (owner-only).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).context("encoding the fix history")?;
        crate::files::write_private_atomic(path, &json)
            .with_context(|| format!("saving fix history {}", path.display()))
    }

    /// The service's attempts inside the window ending at `now_ms`.
    pub(crate) fn in_window(&self, service: &str, now_ms: i64, window_ms: i64) -> Vec<&Attempt> {
        self.attempts
            .get(service)
            .map(|v| v.iter().filter(|a| a.at_ms > now_ms - window_ms).collect())
            .unwrap_or_default()
    }

    /// The service's latest attempt.
    pub(crate) fn last(&self, service: &str) -> Option<&Attempt> {
        self.attempts.get(service).and_then(|v| v.last())
    }

    /// Records an attempt and prunes old ones. Returns its index.
    pub fn push(&mut self, service: &str, attempt: Attempt) -> usize {
        let now = attempt.at_ms;
        let v = self.attempts.entry(service.to_string()).or_default();
        v.push(attempt);
        self.prune(now);
        self.attempts.get(service).map_or(0, |v| v.len() - 1)
    }

    /// Drops attempts older than a day, and more than 50 per service.
    fn prune(&mut self, now_ms: i64) {
        for v in self.attempts.values_mut() {
            v.retain(|a| a.at_ms > now_ms - KEEP_MS);
            if v.len() > KEEP_PER_SERVICE {
                v.drain(..v.len() - KEEP_PER_SERVICE);
            }
        }
        self.attempts.retain(|_, v| !v.is_empty());
    }

    /// Sets the outcome of the service's attempt started at `at_ms`.
    pub(crate) fn set_outcome(
        &mut self,
        service: &str,
        at_ms: i64,
        outcome: Outcome,
        detail: String,
    ) {
        if let Some(a) = self
            .attempts
            .get_mut(service)
            .and_then(|v| v.iter_mut().rev().find(|a| a.at_ms == at_ms))
        {
            a.outcome = outcome;
            a.detail = Some(detail);
        }
    }
}

/// A restart the agent caused is not an unexpected one.
impl OwnActions for FixHistory {
    fn last_action_ms(&self, service: &str) -> Option<i64> {
        self.last(service).map(|a| a.at_ms)
    }
}

/// Histories for the tests of the fix rooms.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) fn attempt(at_ms: i64) -> Attempt {
        Attempt {
            at_ms,
            action: "restart_container".into(),
            issue: "down".into(),
            outcome: Outcome::Failed,
            detail: None,
        }
    }

    pub(crate) fn history(service: &str, ats: &[i64]) -> FixHistory {
        let mut h = FixHistory::default();
        for &a in ats {
            h.attempts
                .entry(service.into())
                .or_default()
                .push(attempt(a));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::testing::attempt;
    use super::*;

    #[test]
    fn history_round_trip_prune_and_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.json");
        let now = Utc::now();
        let (mut h, notice) = FixHistory::load(&path, now).unwrap();
        assert!(notice.is_none() && h.attempts.is_empty());
        let ms = now.timestamp_millis();
        h.push("s", attempt(ms - 25 * 3600 * 1000));
        h.push("s", attempt(ms));
        assert_eq!(h.attempts["s"].len(), 1, "a day-old attempt is pruned");
        h.set_outcome("s", ms, Outcome::Verified, "ok".into());
        h.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"version\": 1") && text.contains("\"verified\""),
            "{text}"
        );
        assert_eq!(FixHistory::load(&path, now).unwrap().0, h);
        std::fs::write(&path, "{not json").unwrap();
        let (h2, notice) = FixHistory::load(&path, now).unwrap();
        assert!(h2.attempts.is_empty());
        let notice = notice.unwrap().to_string();
        assert!(
            notice.contains("corrupt") && notice.contains("set aside"),
            "{notice}"
        );
        assert!(!path.exists());
    }
}
