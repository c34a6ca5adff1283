//! The two JSON documents a cycle carries from one run to the next: the
//! runtime state (`/tmp/ops-agent-state.json`, each room's part of it) and
//! the cumulative stats (`~/system/agents/state/ops.json`). How they are
//! read and written is [`crate::store`]'s job.
//!
//! Every struct here is `#[serde(default)]` so a file written by an older
//! version still loads; unknown fields are ignored for the same reason (a
//! newer version's file must not be treated as corrupt by an older binary
//! during a rollback).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::report::CycleReport;
use crate::store::SetAside;

/// How many set-aside records the state keeps for `status`.
const MAX_SET_ASIDE: usize = 20;

/// `/tmp/ops-agent-state.json`: what the next cycle needs to resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeState {
    /// The chat cursor (epoch ms, server clock): every post created before
    /// it has been fully handled. `None` means first run.
    pub last_check_ms: Option<i64>,
    /// The last cycle's report, for `status`.
    pub last_cycle: Option<CycleReport>,
    /// Corrupt files that were moved aside, newest last.
    pub set_aside: Vec<SetAside>,
    /// Mattermost caches and the handled-post set.
    pub mattermost: crate::mattermost::MmState,
    /// Posts handed over but not yet fully handled.
    pub chat: crate::chat::ChatState,
    /// Task mapping (source → task, card) and the outbox.
    pub tasks: crate::tasks::outbox::TaskState,
    /// Flap-guard streaks and restart counters per check.
    pub health: crate::health::guard::HealthState,
    /// Open incidents, their alerts and acknowledgements, and silences.
    pub escalation: crate::escalate::EscalationState,
}

impl RuntimeState {
    /// Records set-aside files, keeping the list bounded.
    pub fn record_set_aside(&mut self, records: impl IntoIterator<Item = SetAside>) {
        self.set_aside.extend(records);
        let excess = self.set_aside.len().saturating_sub(MAX_SET_ASIDE);
        self.set_aside.drain(..excess);
    }
}

/// `~/system/agents/state/ops.json`: cumulative counters since the first
/// cycle (or since the file was deleted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// First cycle recorded, RFC 3339.
    pub since: Option<DateTime<Utc>>,
    /// Last cycle recorded, RFC 3339.
    pub last_cycle_at: Option<DateTime<Utc>>,
    /// Cycles run (dry runs excluded).
    pub cycles: u64,
    /// Cycles whose overall outcome was degraded.
    pub cycles_degraded: u64,
    /// Cycles with a failed stage.
    pub cycles_failed: u64,
    /// Cycles cut short by the deadline.
    pub deadline_hits: u64,
    /// Check results by status word.
    pub checks: BTreeMap<String, u64>,
    /// Named counters that later stages add (posts handled, tasks created,
    /// classification paths, fixes); a map keeps the file forward-compatible.
    pub counters: BTreeMap<String, u64>,
}

impl Stats {
    /// Folds one finished cycle into the counters.
    pub fn record_cycle(&mut self, report: &CycleReport, now: DateTime<Utc>) {
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
        for c in &report.checks {
            *self
                .checks
                .entry(c.status.as_str().to_string())
                .or_default() += 1;
        }
    }

    /// Adds `n` to a named counter.
    pub fn bump(&mut self, name: &str, n: u64) {
        *self.counters.entry(name.to_string()).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
