//! Owner-only files that are safe to keep in `/tmp`.
//!
//! The runbook puts the runtime state, the token cache and the fix history in
//! `/tmp`, where any local user can plant a symlink or a file of their own at
//! the path we are about to write. Every state-like file therefore goes
//! through this module:
//!
//! * reads refuse symlinks and files owned by another user;
//! * writes go to a fresh temp file in the same directory (created with
//!   `O_EXCL | O_NOFOLLOW`, mode 0600), are fsynced, then renamed over the
//!   target, so a crash leaves either the old or the new content, never half;
//! * a file that does not parse can be set aside as `<name>.corrupt-<time>`,
//!   and so can a directory or FIFO of ours found where a file belongs;
//! * files written in place (the lock, the ledger, the logs) are refused
//!   when they have more than one hard link: another name for the same
//!   inode could be a file we must never write into (macOS has no
//!   `protected_hardlinks`);
//! * temp files left by a cycle that was killed mid-save are swept.
//!
//! Being the one place, it is the one module clippy.toml lets open files
//! for writing (`OpenOptions`, `File::create`, `fs::write`).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Checks that `path`, if it exists, is a regular file owned by us and not a
/// symlink. Returns its metadata, or `None` when nothing is there.
fn check_existing(path: &Path) -> Result<Option<fs::Metadata>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    };
    if meta.file_type().is_symlink() {
        bail!(
            "refusing to use {}: it is a symlink (possibly planted by another user); \
             remove it and run again",
            path.display()
        );
    }
    if !meta.file_type().is_file() {
        bail!(
            "refusing to use {}: it is not a regular file",
            path.display()
        );
    }
    if meta.uid() != euid() {
        return Err(left_by_another_user(&[(path.to_path_buf(), meta.uid())]));
    }
    Ok(Some(meta))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `root (uid 0)`, or `uid 1001` for a uid with no account.
fn who(uid: u32) -> String {
    // SAFETY: passwd is plain old data; all-zero is a valid value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use
    // of `pwd.pw_name`, which points into it.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return format!("uid {uid}");
    }
    // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string in `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    format!("{} (uid {uid})", name.to_string_lossy())
}

/// The files of `paths` that exist and belong to another user, with
/// their owner: a run as that user (root trying the README's first
/// command, say) left them where this account keeps its own, and every
/// cycle would be refused at the first of them.
pub(crate) fn owned_by_others<'a>(
    paths: impl IntoIterator<Item = &'a Path>,
) -> Vec<(PathBuf, u32)> {
    let me = euid();
    paths
        .into_iter()
        .filter_map(|p| {
            let meta = fs::symlink_metadata(p).ok()?;
            (meta.uid() != me).then(|| (p.to_path_buf(), meta.uid()))
        })
        .collect()
}

/// The refusal for files another user left: whose they are, that this
/// account cannot use them, and the two ways out (remove them as their
/// owner, or give this account files of its own).
pub(crate) fn left_by_another_user(found: &[(PathBuf, u32)]) -> anyhow::Error {
    let mut owners: Vec<u32> = found.iter().map(|(_, u)| *u).collect();
    owners.dedup();
    let owner = owners
        .iter()
        .map(|u| who(*u))
        .collect::<Vec<_>>()
        .join(" and ");
    let list: Vec<String> = found.iter().map(|(p, _)| p.display().to_string()).collect();
    let (it, them) = if found.len() == 1 {
        ("it", "it")
    } else {
        ("they", "them")
    };
    let sudo = if owners == [0] { "sudo " } else { "" };
    anyhow::anyhow!(
        "refusing to use {}: {it} belong{} to {owner}, not to {}, which runs this; a run as \
         {owner} left {them} (root trying `cargo run -- run-once`, say). The way out: remove \
         {them} as {owner} with `{sudo}rm {}`, or give this account files of its own under \
         [paths] (state, lock, token_cache, fix_history, planka_token_cache)",
        list.join(", "),
        if found.len() == 1 { "s" } else { "" },
        who(euid()),
        list.join(" ")
    )
}

/// Reads an owner-only file. `Ok(None)` means the file does not exist (a
/// first run); a symlink or a file owned by someone else is an error.
pub(crate) fn read_private(path: &Path) -> Result<Option<String>> {
    match read_private_bytes(path)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .with_context(|| format!("reading {} (is it UTF-8 text?)", path.display())),
    }
}

/// Reads an owner-only file as bytes, for append-only files (the task
/// ledger) whose torn last line may end in the middle of a UTF-8 character:
/// the reader must still get every whole line before it.
pub(crate) fn read_private_bytes(path: &Path) -> Result<Option<Vec<u8>>> {
    let Some(mut file) = open_private_read(path)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(bytes))
}

/// Opens an owner-only file for reading, with the checks of
/// [`read_private`] (no symlink, ours, not swapped while opening), for
/// readers that stream it. `Ok(None)` when there is no file.
pub(crate) fn open_private_read(path: &Path) -> Result<Option<File>> {
    let Some(before) = check_existing(path)? else {
        return Ok(None);
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let after = file
        .metadata()
        .with_context(|| format!("inspecting {}", path.display()))?;
    if after.ino() != before.ino() || after.dev() != before.dev() {
        bail!(
            "refusing to use {}: it was replaced while being opened",
            path.display()
        );
    }
    Ok(Some(file))
}

/// Creates the parent directory of `path` (owner-only) when it is missing.
pub(crate) fn ensure_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating directory {}", parent.display()))?;
        }
    }
    Ok(())
}

/// Atomically replaces `path` with `bytes`, mode 0600.
///
/// Refuses a symlink or a foreign-owned file at `path`, and leaves whatever
/// it points to untouched. A full disk or any other failure leaves the old
/// file in place and removes the temp file.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

/// [`write_private_atomic`] with other permission bits, for the one file
/// others must read (the metrics textfile for node_exporter). The temp
/// file is owner-only until its content is complete; the mode is set just
/// before the rename.
pub(crate) fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic_with(path, mode, |w| w.write_all(bytes))
}

/// [`write_private_atomic`] with the content streamed by `write` (through
/// a buffer), so a large file never exists whole in memory: the state file
/// of a cycle that watched 100,000 posts is tens of MB.
pub(crate) fn write_private_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    write_atomic_with(path, 0o600, |file| {
        let mut buffered = io::BufWriter::with_capacity(64 * 1024, file);
        write(&mut buffered)?;
        buffered.flush()
    })
}

fn write_atomic_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<()> {
    check_existing(path)?;
    ensure_parent(path)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy();
    let (tmp, mut file) = create_temp(dir, &name)?;
    let written = write(&mut file)
        .and_then(|_| synced(file.sync_all()))
        .with_context(|| format!("writing {} (disk full?)", tmp.display()));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if mode != 0o600 {
        if let Err(e) = file.set_permissions(fs::Permissions::from_mode(mode)) {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("setting the mode of {}", tmp.display()));
        }
    }
    drop(file);
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()));
    }
    // Make the rename itself durable; failure here only weakens durability.
    if let Ok(d) = File::open(dir) {
        let _ = synced(d.sync_all());
    }
    Ok(())
}

/// Creates a fresh temp file next to the target; `create_new` plus
/// `O_NOFOLLOW` means nothing planted at the temp name can be followed.
fn create_temp(dir: &Path, name: &str) -> Result<(PathBuf, File)> {
    let pid = std::process::id();
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!(".{name}.tmp-{pid}-{nanos:x}-{attempt}"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => {
                // The umask may have narrowed the mode; it can never widen it,
                // but set it explicitly so the contract is visible.
                let _ = f.set_permissions(fs::Permissions::from_mode(0o600));
                return Ok((tmp, f));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("creating temp file {}", tmp.display()))
            }
        }
    }
    bail!("could not create a temp file in {}", dir.display())
}

/// Opens an owner-only file for appending (the activity log, the task
/// ledger): parent dirs created, a symlink, a foreign-owned file or a file
/// with another hard link refused.
pub(crate) fn open_append_private(path: &Path) -> Result<File> {
    check_existing(path)?;
    ensure_parent(path)?;
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {} for append", path.display()))?;
    refuse_hard_links(&file, path)?;
    Ok(file)
}

/// Opens a file to write in place without truncating it (the cycle lock,
/// which keeps its holder's line): created owner-only when missing, never
/// through a symlink (`O_NOFOLLOW`: a planted one fails to open). The
/// caller checks the owner, and the links with [`refuse_hard_links`].
pub(crate) fn open_in_place(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Refuses an opened file that has another name (a hard link): writing
/// in place would write into that other file too. Checked on the open
/// descriptor, so nothing can be swapped in between.
pub(crate) fn refuse_hard_links(file: &File, path: &Path) -> Result<()> {
    let meta = file
        .metadata()
        .with_context(|| format!("inspecting {}", path.display()))?;
    if meta.nlink() > 1 {
        bail!(
            "refusing to write into {}: it has {} hard links (another name for the same file \
             could be a file that must not be touched); remove it and run again",
            path.display(),
            meta.nlink()
        );
    }
    Ok(())
}

/// A directory, FIFO or socket of ours where a regular file belongs: what
/// it is, so the caller can set it aside like a corrupt file. `None` for
/// nothing there, a regular file, a symlink or another user's entry (those
/// are refused by the readers and writers instead).
pub(crate) fn misplaced_kind(path: &Path) -> Option<&'static str> {
    let meta = fs::symlink_metadata(path).ok()?;
    let t = meta.file_type();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if t.is_file() || t.is_symlink() || meta.uid() != me {
        return None;
    }
    use std::os::unix::fs::FileTypeExt;
    Some(if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else {
        "device"
    })
}

/// Removes the temp files a killed cycle left next to `path`
/// (`.<name>.tmp-<pid>-…`, ours, regular, and their writer gone).
/// Returns how many were removed.
pub(crate) fn remove_stale_temps(path: &Path) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the writer still exists.
        let writer_alive = pid == std::process::id() as i32 || unsafe { libc::kill(pid, 0) } == 0;
        let ours = fs::symlink_metadata(entry.path())
            .is_ok_and(|m| m.file_type().is_file() && m.uid() == me);
        if !writer_alive && ours && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Appends one line to an owner-only append-only file (the task ledger).
///
/// The line goes out in a single `write` on an `O_APPEND` descriptor, so
/// concurrent readers see whole lines or nothing new, and a crash mid-write
/// can only leave a torn last line, which readers skip.
pub(crate) fn append_line_private(path: &Path, line: &str) -> Result<()> {
    let mut file = open_append_private(path)?;
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    file.write_all(buf.as_bytes())
        .and_then(|_| synced(file.sync_data()))
        .with_context(|| format!("appending to {} (disk full?)", path.display()))
}

/// Appends lines (each ending in a newline) without a sync: for a file
/// whose every line is also in a synced journal until
/// [`sync_if_present`] has run (the corrections watch).
pub(crate) fn append_unsynced_private(path: &Path, lines: &[u8]) -> Result<()> {
    let mut file = open_append_private(path)?;
    file.write_all(lines)
        .with_context(|| format!("appending to {} (disk full?)", path.display()))
}

/// Syncs what earlier unsynced appends wrote; a missing file is fine.
pub(crate) fn sync_if_present(path: &Path) -> Result<()> {
    match open_private_read(path)? {
        Some(file) => synced(file.sync_data())
            .with_context(|| format!("syncing {} (disk full?)", path.display())),
        None => Ok(()),
    }
}

/// Moves an unreadable file aside as `<name>.corrupt-<timestamp>` so that
/// nothing is lost and the cycle can go on with defaults.
pub(crate) fn set_aside(path: &Path, now: chrono::DateTime<chrono::Utc>) -> Result<PathBuf> {
    let stamp = now.format("%Y%m%dT%H%M%SZ");
    let mut target = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{}.corrupt-{stamp}-{n}", path.display()));
        n += 1;
    }
    fs::rename(path, &target)
        .with_context(|| format!("moving {} aside to {}", path.display(), target.display()))?;
    Ok(target)
}

/// Removes a state file for a reset; a missing file is fine, a symlink is
/// removed itself (never what it points to).
pub(crate) fn remove_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// fsyncs this process has made: a figure for the cycle report, so the
/// cost of durability can be measured from outside (see docs/performance.md).
static FSYNCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one fsync.
fn synced(r: std::io::Result<()>) -> std::io::Result<()> {
    FSYNCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    r
}

/// How many fsyncs this process has made so far.
pub(crate) fn fsyncs() -> u64 {
    FSYNCS.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state.json");
        write_private_atomic(&p, b"{\"a\":1}").unwrap();
        assert_eq!(read_private(&p).unwrap().as_deref(), Some("{\"a\":1}"));
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_private_atomic(&p, b"2").unwrap();
        assert_eq!(read_private(&p).unwrap().as_deref(), Some("2"));
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn missing_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_private(&dir.path().join("nope")).unwrap(), None);
    }

    #[test]
    fn planted_symlink_is_refused_and_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        fs::write(&target, "precious").unwrap();
        let link = dir.path().join("state.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write_private_atomic(&link, b"evil")
            .unwrap_err()
            .to_string();
        assert!(err.contains("symlink"), "{err}");
        assert!(read_private(&link)
            .unwrap_err()
            .to_string()
            .contains("symlink"));
        assert!(append_line_private(&link, "x").is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious");
    }

    #[test]
    fn set_aside_keeps_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        fs::write(&p, "{garbage").unwrap();
        let moved = set_aside(&p, chrono::Utc::now()).unwrap();
        assert!(!p.exists());
        assert!(moved.to_string_lossy().contains("s.json.corrupt-"));
        assert_eq!(fs::read_to_string(moved).unwrap(), "{garbage");
    }

    #[test]
    fn append_writes_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.jsonl");
        append_line_private(&p, "a").unwrap();
        append_line_private(&p, "b").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "a\nb\n");
    }

    #[test]
    fn a_hard_link_is_refused_where_we_write_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let precious = dir.path().join("authorized_keys");
        fs::write(&precious, "ssh-ed25519 AAAA me\n").unwrap();
        let log = dir.path().join("ops-agent.log");
        fs::hard_link(&precious, &log).unwrap();
        let err = format!("{:#}", append_line_private(&log, "forged").unwrap_err());
        assert!(err.contains("hard links"), "{err}");
        assert_eq!(
            fs::read_to_string(&precious).unwrap(),
            "ssh-ed25519 AAAA me\n"
        );
    }

    #[test]
    fn misplaced_entries_are_named_and_stale_temps_swept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        fs::create_dir(&state).unwrap();
        assert_eq!(misplaced_kind(&state), Some("directory"));
        let fifo = dir.path().join("fifo.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(misplaced_kind(&fifo), Some("FIFO"));
        assert_eq!(misplaced_kind(&dir.path().join("missing")), None);
        let target = dir.path().join("s.json");
        let dead = dir.path().join(".s.json.tmp-999999-ab-0");
        let mine = dir
            .path()
            .join(format!(".s.json.tmp-{}-cd-0", std::process::id()));
        let other = dir.path().join(".t.json.tmp-999999-ab-0");
        for p in [&dead, &mine, &other] {
            fs::write(p, "half").unwrap();
        }
        assert_eq!(remove_stale_temps(&target), 1);
        assert!(!dead.exists() && mine.exists() && other.exists());
    }
}
