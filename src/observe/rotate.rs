//! Logs that never fill the disk: at the start of a cycle, as soon as it
//! holds the lock, the activity log, the audit trail and the scheduler's own
//! output files (`[log] also_rotate`) are rotated by size, and the activity
//! log and the audit trail are rotated again whenever the cycle's own
//! writing takes them past `max_bytes` (so a cycle of 100,000 posts leaves
//! `keep + 1` files of about `max_bytes`, not one file of 50 MB).
//!
//! `ops-agent.log` becomes `ops-agent.log.1`, `.1` becomes `.2`, and so on
//! up to `[log] keep`; the oldest is deleted. The path itself never
//! changes, so `tail -50 ~/system/logs/ops-agent.log` keeps working, and
//! every run opens its files by path: when newsyslog or logrotate renamed
//! a file between runs, the next run simply creates a fresh one.
//!
//! Only the cycle holding the lock rotates: two cycles started at the same
//! moment rotate once (the second never gets the lock). Files that are a
//! symlink or not ours are never renamed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::paths::expand_tilde;

/// The most rotated files `[log] keep` allows.
pub(crate) const MAX_KEEP: u32 = 50;

/// `[log]`: how big the agent's files may grow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogConfig {
    /// A file at least this large (bytes) is rotated at the start of the
    /// next cycle, and the activity log and the audit trail as soon as a
    /// cycle's writing takes them past it; 0: never (leave it to newsyslog
    /// or logrotate).
    max_bytes: u64,
    /// Rotated files kept (`<file>.1` … `<file>.<keep>`); 0 deletes the
    /// file instead of keeping a copy.
    keep: u32,
    /// Other files rotated the same way: the scheduler's stdout and stderr
    /// files (launchd's `StandardOutPath`/`StandardErrorPath`). Missing
    /// files are fine.
    also_rotate: Vec<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_bytes: 10 * 1024 * 1024,
            keep: 5,
            also_rotate: vec![
                "~/system/logs/ops-agent-launchd.log".into(),
                "~/system/logs/ops-agent-launchd-error.log".into(),
            ],
        }
    }
}

impl LogConfig {
    /// Checks the section without I/O; errors name the key and the bad value.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.keep > MAX_KEEP {
            bail!(
                "log.keep: {} is more than {MAX_KEEP} rotated files",
                self.keep
            );
        }
        if self.max_bytes > 0 && self.max_bytes < 4096 {
            bail!(
                "log.max_bytes: {} is below 4096; use at least 4096, or 0 to never rotate",
                self.max_bytes
            );
        }
        for p in &self.also_rotate {
            if p.as_os_str().is_empty() || p.to_string_lossy().ends_with('/') {
                bail!("log.also_rotate: '{}' does not name a file", p.display());
            }
        }
        Ok(())
    }

    /// The other files rotated (`also_rotate`), for the config's check
    /// that no key names a file another part of the agent owns.
    pub(crate) fn also_rotate(&self) -> &[PathBuf] {
        &self.also_rotate
    }

    /// Expands `~` in `also_rotate`.
    pub(crate) fn expand(&mut self) {
        for p in &mut self.also_rotate {
            *p = expand_tilde(&p.to_string_lossy());
        }
    }
}

/// `<path>.<n>`.
pub(crate) fn rotated_name(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The renames that rotate `path` keeping `keep` old copies, in the order
/// they must happen (oldest first, so nothing is overwritten), and the
/// file to delete first. Pure.
fn plan(path: &Path, keep: u32) -> (PathBuf, Vec<(PathBuf, PathBuf)>) {
    if keep == 0 {
        return (path.to_path_buf(), Vec::new());
    }
    let mut renames = Vec::new();
    for n in (1..keep).rev() {
        renames.push((rotated_name(path, n), rotated_name(path, n + 1)));
    }
    renames.push((path.to_path_buf(), rotated_name(path, 1)));
    (rotated_name(path, keep), renames)
}

/// Rotates `path` when it is at least `max_bytes` long. Returns its size
/// when it was rotated. A missing file is not an error; a symlink, a
/// foreign-owned file or a non-file is.
fn rotate_if_large(path: &Path, max_bytes: u64, keep: u32) -> Result<Option<u64>> {
    if max_bytes == 0 {
        return Ok(None);
    }
    let Some(len) = own_file_len(path)? else {
        return Ok(None);
    };
    if len < max_bytes {
        return Ok(None);
    }
    rotate_now(path, keep)?;
    Ok(Some(len))
}

/// The size of `path`, `None` when it is missing; an error for a symlink,
/// a foreign-owned file or a non-file.
fn own_file_len(path: &Path) -> Result<Option<u64>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    };
    if meta.file_type().is_symlink() || !meta.file_type().is_file() {
        bail!(
            "not rotating {}: it is not a regular file (a symlink?)",
            path.display()
        );
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if meta.uid() != unsafe { libc::geteuid() } {
        bail!(
            "not rotating {}: it is owned by another user",
            path.display()
        );
    }
    Ok(Some(meta.len()))
}

/// Rotates `path` whatever its size (see [`plan`]); a missing file is
/// nothing to do.
pub(crate) fn rotate_now(path: &Path, keep: u32) -> Result<()> {
    if own_file_len(path)?.is_none() {
        return Ok(());
    }
    let (oldest, renames) = plan(path, keep);
    crate::files::remove_if_present(&oldest)?;
    for (from, to) in renames {
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("renaming {} to {}", from.display(), to.display()))
            }
        }
    }
    Ok(())
}

/// What [`under_lock`] did, to be logged.
#[derive(Debug, Default)]
pub(crate) struct Rotation {
    /// Files rotated and their size.
    rotated: Vec<(PathBuf, u64)>,
    /// Files that could not be rotated, with why.
    errors: Vec<String>,
}

impl Rotation {
    /// Logs what happened (an info line per file, a warning per error).
    pub(crate) fn log(&self) {
        for (p, size) in &self.rotated {
            tracing::info!(file = %p.display(), bytes = size, "Log rotated.");
        }
        for e in &self.errors {
            tracing::warn!("Log not rotated: {e}");
        }
    }
}

/// Rotates the activity log `log`, the audit trail `audit` and
/// `also_rotate` that have grown past `max_bytes`, and keeps the first two
/// rotating as the cycle writes them. Only the cycle holding the lock calls
/// it, before it opens the audit trail.
pub(crate) fn under_lock(cfg: &LogConfig, log: &Path, audit: &Path) -> Rotation {
    let mut out = Rotation::default();
    crate::observe::audit::rotate_within(cfg.max_bytes, cfg.keep, rotate_now);
    let log_open = match crate::logging::rotate_within(cfg.max_bytes, cfg.keep, rotate_now) {
        Some(Some(size)) => {
            out.rotated.push((log.to_path_buf(), size));
            true
        }
        Some(None) => true,
        None => false,
    };
    if cfg.max_bytes == 0 {
        return out;
    }
    let all = (!log_open)
        .then_some(log)
        .into_iter()
        .chain([audit])
        .chain(cfg.also_rotate.iter().map(PathBuf::as_path));
    for p in all {
        match rotate_if_large(p, cfg.max_bytes, cfg.keep) {
            Ok(Some(size)) => out.rotated.push((p.to_path_buf(), size)),
            Ok(None) => {}
            Err(e) => out.errors.push(format!("{e:#}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_table() {
        let p = Path::new("/l/a.log");
        let pb = |s: &str| PathBuf::from(s);
        let (del, renames) = plan(p, 3);
        assert_eq!(del, pb("/l/a.log.3"));
        assert_eq!(
            renames,
            [
                (pb("/l/a.log.2"), pb("/l/a.log.3")),
                (pb("/l/a.log.1"), pb("/l/a.log.2")),
                (pb("/l/a.log"), pb("/l/a.log.1")),
            ]
        );
        let (del, renames) = plan(p, 1);
        assert_eq!(
            (del, renames),
            (pb("/l/a.log.1"), vec![(pb("/l/a.log"), pb("/l/a.log.1"))])
        );
        let (del, renames) = plan(p, 0);
        assert_eq!((del, renames.len()), (pb("/l/a.log"), 0));
    }

    #[test]
    fn a_large_file_rotates_and_the_oldest_copy_goes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        for round in 0..4 {
            std::fs::write(&p, format!("round {round}\n").repeat(1000)).unwrap();
            assert!(rotate_if_large(&p, 4096, 2).unwrap().is_some());
            assert!(!p.exists());
        }
        let read = |n| std::fs::read_to_string(rotated_name(&p, n)).unwrap();
        assert!(read(1).starts_with("round 3"));
        assert!(read(2).starts_with("round 2"));
        assert!(!rotated_name(&p, 3).exists());
        std::fs::write(&p, "small\n").unwrap();
        assert_eq!(rotate_if_large(&p, 4096, 2).unwrap(), None);
        assert_eq!(rotate_if_large(&p, 0, 2).unwrap(), None);
        assert_eq!(
            rotate_if_large(&dir.path().join("none"), 4096, 2).unwrap(),
            None
        );
    }

    #[test]
    fn a_symlink_is_never_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "x".repeat(10_000)).unwrap();
        let p = dir.path().join("a.log");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        assert!(rotate_if_large(&p, 4096, 2).is_err());
        assert!(p.exists() && target.exists());
    }

    #[test]
    fn config_checks() {
        LogConfig::default().validate().unwrap();
        let bad = |c: LogConfig| c.validate().unwrap_err().to_string();
        assert!(bad(LogConfig {
            keep: 51,
            ..Default::default()
        })
        .contains("log.keep"));
        assert!(bad(LogConfig {
            max_bytes: 10,
            ..Default::default()
        })
        .contains("log.max_bytes"));
        LogConfig {
            max_bytes: 0,
            ..Default::default()
        }
        .validate()
        .unwrap();
    }
}
