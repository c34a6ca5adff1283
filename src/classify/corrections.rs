//! The corrections file (`[paths] corrections`): every label the team
//! corrected, one JSON line each, owner-only and append-only.
//!
//! A line is also an example (`text`, `label`), so the same file teaches
//! the LLM (worked examples in the prompt), the fallback's model (added to
//! its counts) and is what `ops-agent eval` measures with no file. Only the
//! newest [`LOAD_MAX`] are read per cycle, from the end of the file, so the
//! cost of a cycle does not grow with the file; a post corrected twice
//! counts once, with its latest label.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Label;
use crate::{files, jsonl};

/// Corrections read per cycle, at most (the newest).
pub(crate) const LOAD_MAX: usize = 500;
/// A post's text is kept up to this many characters.
const MAX_TEXT_CHARS: usize = 4000;

/// One correction: the post, the right label, who said so and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Correction {
    /// The post's text (cut to [`MAX_TEXT_CHARS`]).
    pub(crate) text: String,
    /// The right label.
    pub(crate) label: Label,
    /// The label the agent had given it.
    pub(crate) was: Label,
    /// The post.
    pub(crate) post_id: String,
    /// Its team.
    #[serde(default)]
    pub(crate) team: String,
    /// Who corrected it (username).
    pub(crate) by: String,
    /// When the reaction was made.
    pub(crate) at: DateTime<Utc>,
}

/// Appends one correction (ending a torn last line first, so a line cut by
/// a crash cannot swallow this one).
pub(crate) fn append(path: &Path, c: &Correction) -> Result<()> {
    let mut c = c.clone();
    if c.text.chars().count() > MAX_TEXT_CHARS {
        c.text = c.text.chars().take(MAX_TEXT_CHARS).collect();
    }
    let mut line = serde_json::to_string(&c).context("encoding a correction")?;
    if !jsonl::ends_clean(path)? {
        line.insert(0, '\n');
    }
    files::append_line_private(path, &line)
        .with_context(|| format!("recording a correction in {}", path.display()))
}

/// The newest `max` corrections, oldest first, one per post (its latest).
/// No file: none yet. Unreadable lines are skipped and counted.
pub(crate) fn load_recent(path: &Path, max: usize) -> Result<(Vec<Correction>, usize)> {
    let Some(file) = files::open_private_read(path)? else {
        return Ok((Vec::new(), 0));
    };
    let mut back =
        jsonl::Backward::new(file).with_context(|| format!("reading {}", path.display()))?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    let mut skipped = 0;
    while out.len() < max {
        let Some(line) = back
            .next_line()
            .with_context(|| format!("reading {}", path.display()))?
        else {
            break;
        };
        let parsed = line
            .ok()
            .and_then(|l| serde_json::from_slice::<Correction>(&l).ok());
        match parsed {
            Some(c) => {
                if seen.insert(c.post_id.clone()) {
                    out.push(c);
                }
            }
            None => skipped += 1,
        }
    }
    out.reverse();
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    use crate::classify::lessons::correction as c;

    #[test]
    fn appended_owner_only_read_back_newest_per_post() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/corrections.jsonl");
        assert_eq!(load_recent(&path, 10).unwrap(), (Vec::new(), 0));
        append(&path, &c("p1", Label::Routine, "deploy done")).unwrap();
        append(&path, &c("p2", Label::Incident, "site slow")).unwrap();
        append(&path, &c("p1", Label::Task, "deploy done")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (got, skipped) = load_recent(&path, 10).unwrap();
        let ids: Vec<(&str, Label)> = got.iter().map(|c| (c.post_id.as_str(), c.label)).collect();
        assert_eq!(ids, [("p2", Label::Incident), ("p1", Label::Task)]);
        assert_eq!(skipped, 0);
        // Bounded: only the newest.
        let (got, _) = load_recent(&path, 1).unwrap();
        assert_eq!(got[0].post_id, "p1");
        // A line is an example `ops-agent eval` reads.
        let line = std::fs::read_to_string(&path).unwrap();
        let (rows, bad) = crate::classify::data::parse_lines(&line);
        assert_eq!((rows.len(), bad.len()), (3, 0));
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_does_not_swallow_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        append(&path, &c("p1", Label::Routine, "a")).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"text\":\"cut");
        std::fs::write(&path, bytes).unwrap();
        append(&path, &c("p2", Label::Task, "b")).unwrap();
        let (got, skipped) = load_recent(&path, 10).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(skipped, 1);
    }

    #[test]
    fn long_texts_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        append(&path, &c("p1", Label::Routine, &"x".repeat(10_000))).unwrap();
        let (got, _) = load_recent(&path, 10).unwrap();
        assert_eq!(got[0].text.chars().count(), MAX_TEXT_CHARS);
    }
}
