//! The runbook's JSON files, read and written one way: a missing file is a
//! first run, a corrupt one is set aside (`<name>.corrupt-<time>`) and
//! reported instead of being fatal or lost, and every save is atomic,
//! owner-only and symlink-safe through [`crate::files`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::files;

/// A corrupt file that was moved aside instead of being lost or fatal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetAside {
    /// The path the file had.
    pub(crate) path: PathBuf,
    /// Where its bytes are now.
    pub(crate) moved_to: PathBuf,
    /// When, epoch ms.
    pub(crate) at_ms: i64,
    /// The parse error.
    pub(crate) error: String,
}

impl std::fmt::Display for SetAside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} was corrupt ({}); set aside as {}",
            self.path.display(),
            self.error,
            self.moved_to.display()
        )
    }
}

/// A loaded file plus what happened on the way.
#[derive(Debug)]
pub(crate) struct Loaded<T> {
    /// The content, or the default when missing or corrupt.
    pub(crate) value: T,
    /// False when there was no file (first run).
    pub(crate) existed: bool,
    /// Set when the file did not parse and was moved aside.
    pub(crate) set_aside: Option<SetAside>,
}

/// Loads a JSON state file. Missing → default; unparseable → moved aside as
/// `<name>.corrupt-<time>`, logged, default; a symlink or foreign-owned file
/// → error (we must not run on state we cannot safely write back).
pub(crate) fn load<T: DeserializeOwned + Default>(
    path: &Path,
    now: DateTime<Utc>,
) -> Result<Loaded<T>> {
    let swept = files::remove_stale_temps(path);
    if swept > 0 {
        tracing::info!(file = %path.display(), swept, "Removed temp files a killed cycle left behind.");
    }
    if let Some(kind) = files::misplaced_kind(path) {
        return set_aside_now(path, now, format!("a {kind} where a file belongs"));
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_STATE_BYTES) {
        let why = format!("larger than {} MiB", MAX_STATE_BYTES / (1024 * 1024));
        return set_aside_now(path, now, why);
    }
    let Some(bytes) = files::read_private_bytes(path)? else {
        return Ok(Loaded {
            value: T::default(),
            existed: false,
            set_aside: None,
        });
    };
    match serde_json::from_slice::<T>(&bytes) {
        Ok(value) => Ok(Loaded {
            value,
            existed: true,
            set_aside: None,
        }),
        Err(e) => set_aside_now(path, now, e.to_string()),
    }
}

/// A state file larger than this is not ours to parse (the state keeps
/// bounded lists); it is set aside.
const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// Moves `path` aside, logs it and returns the defaults with the record.
fn set_aside_now<T: Default>(path: &Path, now: DateTime<Utc>, error: String) -> Result<Loaded<T>> {
    let moved_to = files::set_aside(path, now)?;
    tracing::warn!(
        file = %path.display(),
        moved_to = %moved_to.display(),
        error = %error,
        "Corrupt file set aside; continuing with defaults."
    );
    crate::observe::audit::record(crate::observe::audit::Event::FileSetAside {
        path: path.display().to_string(),
        moved_to: moved_to.display().to_string(),
        error: crate::observe::audit::detail(&error),
    });
    Ok(Loaded {
        value: T::default(),
        existed: true,
        set_aside: Some(SetAside {
            path: path.to_path_buf(),
            moved_to,
            at_ms: now.timestamp_millis(),
            error,
        }),
    })
}

/// Reads a JSON state file without changing anything on disk (for
/// `status` and `stats`): a corrupt file is an error, not set aside.
pub(crate) fn peek<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let Some(text) = files::read_private(path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{} is not valid JSON for this file", path.display()))
}

/// Saves a value as pretty JSON, atomically and owner-only.
pub(crate) fn save<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    files::write_private_atomic_with(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(std::io::Error::other)?;
        w.write_all(b"\n")
    })
    .with_context(|| format!("saving {}", path.display()))
}

/// The journal next to a state file: `<state>.journal`.
pub(crate) fn journal_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// Appends entries to a journal with one write and one sync: a write the
/// size of the entries (one post's, or a batch's that wrote nothing
/// outside), never of the state.
pub(crate) fn append_entries<T: Serialize>(journal: &Path, entries: &[T]) -> Result<()> {
    let mut lines = String::new();
    for entry in entries {
        if !lines.is_empty() {
            lines.push('\n');
        }
        lines.push_str(
            &serde_json::to_string(entry)
                .with_context(|| format!("encoding an entry for {}", journal.display()))?,
        );
    }
    files::append_line_private(journal, &lines)
}

/// Calls `apply` with every whole entry of a journal, oldest first; a torn
/// last line (the write a crash cut) and any unreadable line are skipped and
/// counted. A missing journal has no entries.
pub(crate) fn replay<T: DeserializeOwned>(
    journal: &Path,
    mut apply: impl FnMut(T),
) -> Result<usize> {
    let Some(file) = files::open_private_read(journal)? else {
        return Ok(0);
    };
    let mut skipped = 0;
    crate::jsonl::for_each_forward(file, |_, line| {
        match line.map(|l| serde_json::from_slice::<T>(&l)) {
            Ok(Ok(entry)) => apply(entry),
            Ok(Err(_)) | Err(_) => skipped += 1,
        }
        true
    })
    .with_context(|| format!("reading {}", journal.display()))?;
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Doc {
        last_check_ms: Option<i64>,
    }

    #[test]
    fn missing_is_first_run_and_corrupt_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        let l: Loaded<Doc> = load(&p, Utc::now()).unwrap();
        assert!(!l.existed && l.set_aside.is_none() && l.value.last_check_ms.is_none());

        std::fs::write(&p, "{\"last_check_ms\": \"soon\"").unwrap();
        let l: Loaded<Doc> = load(&p, Utc::now()).unwrap();
        let aside = l.set_aside.unwrap();
        assert!(!p.exists());
        assert_eq!(
            std::fs::read_to_string(&aside.moved_to).unwrap(),
            "{\"last_check_ms\": \"soon\""
        );
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        let s = Doc {
            last_check_ms: Some(42),
        };
        save(&p, &s).unwrap();
        let l: Loaded<Doc> = load(&p, Utc::now()).unwrap();
        assert_eq!(l.value, s);
    }
}
