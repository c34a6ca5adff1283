//! The state-like files and the lock: exists, a symlink, ours,
//! owner-only, parses, directory writable. Gathering is I/O; [`judge_file`]
//! is pure and table-tested.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{finding, Finding, Level};
use crate::tasks::ledger;

/// How a file's content is checked.
#[derive(Clone, Copy)]
pub(super) enum Content {
    /// One JSON document; the function says whether it parses.
    Json(fn(&[u8]) -> Result<(), String>),
    /// The JSON-lines task ledger.
    Ledger,
    /// Free text (the activity log): not parsed.
    Text,
    /// JSON lines (the audit trail): unreadable lines are counted.
    JsonLines,
}

pub(super) fn parses<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<T>(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether the directory a file lives in lets the agent save it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DirState {
    /// Exists and is writable.
    Writable,
    /// Exists, but we cannot create files in it.
    NotWritable(PathBuf),
    /// Missing; the first save creates it (its nearest ancestor is writable).
    Creatable(PathBuf),
    /// Missing, and its nearest existing ancestor is not writable.
    NotCreatable(PathBuf),
}

/// What `inspect` found out about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileFacts {
    /// Something is at the path.
    exists: bool,
    /// It is a symlink (refused by every reader and writer).
    symlink: bool,
    /// It is a regular file.
    regular: bool,
    /// Owner uid when it is not us.
    foreign_owner: Option<u32>,
    /// Permission bits (`0o600`).
    mode: u32,
    /// Why the content does not parse (JSON files).
    parse_error: Option<String>,
    /// Unreadable lines (the ledger).
    skipped_lines: usize,
    /// Its directory.
    dir: DirState,
}

/// Judges one file's facts. Pure.
pub(crate) fn judge_file(name: &str, path: &Path, f: &FileFacts) -> Finding {
    let p = path.display();
    let (level, reason) = if f.symlink {
        (
            Level::Fail,
            format!("{p} is a symlink (possibly planted by another user); the agent refuses it: remove it"),
        )
    } else if f.exists && !f.regular {
        (Level::Fail, format!("{p} is not a regular file; remove it"))
    } else if let Some(uid) = f.foreign_owner {
        (
            Level::Fail,
            format!("{p} is owned by uid {uid}, not by us; the agent refuses it: remove it"),
        )
    } else if let DirState::NotWritable(d) = &f.dir {
        (
            Level::Fail,
            format!(
                "{p}: directory {} is not writable, saves will fail",
                d.display()
            ),
        )
    } else if let DirState::NotCreatable(d) = &f.dir {
        (
            Level::Fail,
            format!(
                "{p}: directory is missing and {} is not writable, saves will fail",
                d.display()
            ),
        )
    } else if let Some(e) = &f.parse_error {
        (
            Level::Warn,
            format!("{p} does not parse ({e}); the next cycle moves it aside and starts fresh"),
        )
    } else if f.skipped_lines > 0 {
        (
            Level::Warn,
            format!(
                "{p}: {} unreadable line(s) are skipped (a torn last line after a crash is harmless)",
                f.skipped_lines
            ),
        )
    } else if f.exists && f.mode & 0o077 != 0 {
        (
            Level::Warn,
            format!(
                "{p} is readable by others (mode {:04o}); chmod 600 it",
                f.mode & 0o7777
            ),
        )
    } else if !f.exists {
        match &f.dir {
            DirState::Creatable(d) => (
                Level::Ok,
                format!("{p} absent; the first save creates {}", d.display()),
            ),
            _ => (Level::Ok, format!("{p} absent (created when first needed)")),
        }
    } else {
        (
            Level::Ok,
            format!("{p} owner-only, parses, directory writable"),
        )
    };
    finding(name, level, reason)
}

/// Gathers the facts about one file without changing anything.
pub(super) fn inspect(path: &Path, content: Content) -> FileFacts {
    let mut f = FileFacts {
        exists: false,
        symlink: false,
        regular: false,
        foreign_owner: None,
        mode: 0,
        parse_error: None,
        skipped_lines: 0,
        dir: dir_state(path),
    };
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return f;
    };
    f.exists = true;
    f.symlink = meta.file_type().is_symlink();
    f.regular = meta.file_type().is_file();
    f.mode = meta.permissions().mode();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        f.foreign_owner = Some(meta.uid());
    }
    if f.symlink || !f.regular || f.foreign_owner.is_some() {
        return f;
    }
    match content {
        Content::Text => {}
        Content::Json(parse) => match crate::files::read_private_bytes(path) {
            Ok(Some(bytes)) => f.parse_error = parse(&bytes).err(),
            Ok(None) => f.exists = false,
            Err(e) => f.parse_error = Some(format!("{e:#}")),
        },
        Content::Ledger => match ledger::Ledger::new(path.to_path_buf()).unreadable_lines() {
            Ok(n) => f.skipped_lines = n,
            Err(e) => f.parse_error = Some(format!("{e:#}")),
        },
        Content::JsonLines => match crate::observe::query::unreadable_lines(path) {
            Ok(n) => f.skipped_lines = n,
            Err(e) => f.parse_error = Some(format!("{e:#}")),
        },
    }
    f
}

pub(super) fn writable(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; access only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

pub(super) fn dir_state(path: &Path) -> DirState {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        return if writable(dir) {
            DirState::Writable
        } else {
            DirState::NotWritable(dir.to_path_buf())
        };
    }
    let ancestor = dir
        .ancestors()
        .skip(1)
        .find(|a| a.is_dir())
        .unwrap_or(Path::new("/"));
    if writable(ancestor) {
        DirState::Creatable(dir.to_path_buf())
    } else {
        DirState::NotCreatable(ancestor.to_path_buf())
    }
}

pub(super) fn lock_finding(path: &Path) -> Finding {
    match crate::lock::holder(path) {
        Ok(None) => finding(
            "lock",
            Level::Ok,
            format!("{} free (no cycle running)", path.display()),
        ),
        Ok(Some(h)) => finding(
            "lock",
            Level::Ok,
            format!("{} held by {h} (a cycle is running)", path.display()),
        ),
        Err(e) => finding("lock", Level::Fail, format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> FileFacts {
        FileFacts {
            exists: true,
            symlink: false,
            regular: true,
            foreign_owner: None,
            mode: 0o100600,
            parse_error: None,
            skipped_lines: 0,
            dir: DirState::Writable,
        }
    }

    #[test]
    fn file_judgements() {
        let p = Path::new("/tmp/s.json");
        let cases: Vec<(FileFacts, Level, &str)> = vec![
            (facts(), Level::Ok, "owner-only"),
            (
                FileFacts {
                    symlink: true,
                    regular: false,
                    ..facts()
                },
                Level::Fail,
                "symlink",
            ),
            (
                FileFacts {
                    regular: false,
                    ..facts()
                },
                Level::Fail,
                "not a regular file",
            ),
            (
                FileFacts {
                    foreign_owner: Some(0),
                    ..facts()
                },
                Level::Fail,
                "uid 0",
            ),
            (
                FileFacts {
                    dir: DirState::NotWritable("/tmp".into()),
                    ..facts()
                },
                Level::Fail,
                "not writable",
            ),
            (
                FileFacts {
                    exists: false,
                    dir: DirState::NotCreatable("/".into()),
                    ..facts()
                },
                Level::Fail,
                "missing",
            ),
            (
                FileFacts {
                    parse_error: Some("EOF".into()),
                    ..facts()
                },
                Level::Warn,
                "moves it aside",
            ),
            (
                FileFacts {
                    skipped_lines: 2,
                    ..facts()
                },
                Level::Warn,
                "2 unreadable",
            ),
            (
                FileFacts {
                    mode: 0o100644,
                    ..facts()
                },
                Level::Warn,
                "mode 0644",
            ),
            (
                FileFacts {
                    exists: false,
                    regular: false,
                    dir: DirState::Creatable("/h/x".into()),
                    ..facts()
                },
                Level::Ok,
                "creates /h/x",
            ),
        ];
        for (f, level, word) in cases {
            let got = judge_file("state file", p, &f);
            assert_eq!(got.level, level, "{f:?} → {got:?}");
            assert!(got.reason.contains(word), "{f:?} → {}", got.reason);
        }
    }
}
