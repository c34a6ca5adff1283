//! The cycle lock: two cycles never overlap.
//!
//! An advisory `flock` on an owner-only file. The kernel drops the lock when
//! the holder dies, so a lock left by a crashed cycle is simply taken over;
//! the holder's PID is written into the file only so that a refused second
//! cycle and `status` can say who holds it. The file itself is never
//! deleted (deleting a lock file races with the next locker).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A held cycle lock; dropping it releases the lock.
#[derive(Debug)]
pub struct CycleLock {
    _file: File,
}

/// The lock is held by another live cycle.
#[derive(Debug)]
pub(crate) struct LockHeld {
    /// The lock file.
    path: PathBuf,
    /// What the holder wrote: `pid <n> since <rfc3339>`, if readable.
    holder: String,
}

impl std::fmt::Display for LockHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "another cycle is running ({}); lock file {}",
            self.holder,
            self.path.display()
        )
    }
}

impl std::error::Error for LockHeld {}

fn open(path: &Path) -> Result<File> {
    crate::files::ensure_parent(path)?;
    // Another user's lock file (in sticky /tmp, often not even openable)
    // is named as such, with its owner and the way out.
    let foreign = crate::files::owned_by_others([path]);
    if !foreign.is_empty() {
        return Err(crate::files::left_by_another_user(&foreign));
    }
    let file = crate::files::open_in_place(path).with_context(|| {
        format!(
            "opening lock file {} (a symlink there is refused)",
            path.display()
        )
    })?;
    crate::files::refuse_hard_links(&file, path)?;
    // Checked again on the open file: nothing swapped in since.
    let meta = file
        .metadata()
        .with_context(|| format!("inspecting lock file {}", path.display()))?;
    // SAFETY: geteuid has no preconditions.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err(crate::files::left_by_another_user(&[(
            path.to_path_buf(),
            meta.uid(),
        )]));
    }
    Ok(file)
}

fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: the fd is valid for the life of `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

fn read_holder(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.take(200).read_to_string(&mut s);
    let s = s.trim();
    if s.is_empty() {
        "holder unknown".to_string()
    } else {
        s.to_string()
    }
}

/// Takes the lock or reports who holds it. The error is a [`LockHeld`]
/// (downcast it to choose the exit code) or an I/O error with context.
pub fn acquire(path: &Path) -> Result<CycleLock> {
    let mut file = open(path)?;
    if !try_flock(&file).with_context(|| format!("locking {}", path.display()))? {
        let holder = read_holder(&mut file);
        return Err(LockHeld {
            path: path.to_path_buf(),
            holder,
        }
        .into());
    }
    let stamp = format!(
        "pid {} since {}\n",
        std::process::id(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    file.set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(stamp.as_bytes()))
        .with_context(|| format!("writing lock file {}", path.display()))?;
    Ok(CycleLock { _file: file })
}

/// For `status`: who holds the lock right now, or `None` when no cycle runs.
/// Probing takes the lock for an instant when it is free.
pub(crate) fn holder(path: &Path) -> Result<Option<String>> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    let mut file = open(path)?;
    if try_flock(&file).with_context(|| format!("probing lock {}", path.display()))? {
        Ok(None)
    } else {
        Ok(Some(read_holder(&mut file)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let first = acquire(&p).unwrap();
        let err = acquire(&p).unwrap_err();
        let held = err.downcast_ref::<LockHeld>().expect("LockHeld");
        assert!(
            held.holder.contains(&format!("pid {}", std::process::id())),
            "{}",
            held.holder
        );
        assert!(holder(&p).unwrap().is_some());
        drop(first);
        assert!(holder(&p).unwrap().is_none());
        acquire(&p).unwrap();
    }

    #[test]
    fn stale_lock_file_of_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        std::fs::write(&p, "pid 999999 since 2020-01-01T00:00:00Z\n").unwrap();
        let _lock = acquire(&p).unwrap();
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .contains(&std::process::id().to_string()));
    }

    #[test]
    fn symlinked_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        let p = dir.path().join("lock");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        assert!(acquire(&p).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
