//! The names of a cycle's stages, said once. The cycle report, the state
//! file's last cycle, the metrics' `stage` label and `status` all spell a
//! stage the way this enum does, so a dashboard or a script that reads one
//! reads them all. The numbers are those of docs/architecture.md#one-cycle.
//!
//! A leaf: the report (above the health room) and the metrics (below every
//! stage) both name stages, so the names cannot live in either.

use serde::{Deserialize, Serialize};

/// A stage of one cycle, in the order they run. The strings are the ones
/// the state file, the stats file and the metrics have always carried;
/// renaming one breaks dashboards and the stats' cumulative counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stage {
    /// 1: the poll of new posts.
    Mattermost,
    /// 2: labelling the posts that are work.
    Classify,
    /// 3: an MC task (and a Planka card) per TASK or INCIDENT post.
    Tasks,
    /// 4: the reply in each post's thread.
    Reply,
    /// The end of the chat half: corrections the team made with reactions.
    Corrections,
    /// 5: every check.
    Health,
    /// 6: the configured fixes, rate limited and verified.
    Fix,
    /// 7: incidents the agent could not resolve.
    Escalate,
    /// 8: the optional HiveMind summary.
    Intel,
    /// 9: the state saved.
    Save,
    /// A name this release does not know, read from a state file another
    /// release wrote: the last cycle's report is shown, not the whole state
    /// set aside over it.
    #[serde(other)]
    Unknown,
}

impl Stage {
    /// The name in the report, the files and the metric labels.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stage::Mattermost => "mattermost",
            Stage::Classify => "classify",
            Stage::Tasks => "tasks",
            Stage::Reply => "reply",
            Stage::Corrections => "corrections",
            Stage::Health => "health",
            Stage::Fix => "fix",
            Stage::Escalate => "escalate",
            Stage::Intel => "intel",
            Stage::Save => "save",
            Stage::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Stage {
    /// Pads like a `str` (`status` aligns the stage column).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name as the state file, the stats and the metrics carried it
    /// before the enum existed; `as_str`, `Display` and serde agree.
    #[test]
    fn every_stage_keeps_its_name() {
        let table = [
            (Stage::Mattermost, "mattermost"),
            (Stage::Classify, "classify"),
            (Stage::Tasks, "tasks"),
            (Stage::Reply, "reply"),
            (Stage::Corrections, "corrections"),
            (Stage::Health, "health"),
            (Stage::Fix, "fix"),
            (Stage::Escalate, "escalate"),
            (Stage::Intel, "intel"),
            (Stage::Save, "save"),
            (Stage::Unknown, "unknown"),
        ];
        for (stage, name) in table {
            assert_eq!(stage.as_str(), name);
            assert_eq!(stage.to_string(), name);
            let json = serde_json::to_string(&stage).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<Stage>(&json).unwrap(), stage);
        }
        assert_eq!(format!("[{:<8}]", Stage::Fix), "[fix     ]");
    }

    #[test]
    fn a_name_from_another_release_reads_as_unknown() {
        let s: Stage = serde_json::from_str("\"notify\"").unwrap();
        assert_eq!(s, Stage::Unknown);
    }
}
