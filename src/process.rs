//! Running other programs, said once. Every configured command (the MC
//! command, a fix command, the resolve command) goes through [`run_argv`]:
//! no shell, a clean environment, no stdin, its own process group killed
//! on timeout *and* whenever the caller stops waiting (the cycle deadline
//! drops the future), and output kept as a bounded tail, so a command that
//! prints forever costs a timeout, never memory. The fixed system tools
//! (`launchctl`, `systemctl`) go through [`run_tool`], bounded the same way.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How much of a command's stdout is kept: its last 64 KiB (an id is
/// printed at the end; a runaway command cannot grow memory).
const STDOUT_KEEP_BYTES: usize = 64 * 1024;

/// How much of the child's stderr an error carries: enough for the message
/// of a failing tool, not a whole log.
const STDERR_TAIL_BYTES: usize = 500;

/// Stderr is read into this much before the tail above is cut from it.
const STDERR_KEEP_BYTES: usize = 16 * 1024;

/// After the command exits, how long its pipes may stay open (a background
/// child of it holding them) before the output read so far is used.
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// The real user id (launchd's `gui/<uid>` domain, ownership checks).
pub(crate) fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// What a finished command printed, bounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CommandOutput {
    /// The last [`STDOUT_KEEP_BYTES`] of stdout, lossy UTF-8.
    pub(crate) stdout: String,
    /// The stderr tail (for errors and logs).
    pub(crate) stderr: String,
    /// Bytes the command wrote to stdout in all; more than `stdout` holds
    /// when the cap was hit.
    stdout_bytes: u64,
}

impl CommandOutput {
    /// "stdout cut to its last 64 KiB of N bytes", when the cap was hit.
    pub(crate) fn cap_note(&self) -> Option<String> {
        (self.stdout_bytes > STDOUT_KEEP_BYTES as u64).then(|| {
            format!(
                "stdout cut to its last {} KiB of {} bytes",
                STDOUT_KEEP_BYTES / 1024,
                self.stdout_bytes
            )
        })
    }
}

/// How a configured command failed, for callers that must tell "it did
/// nothing" from "it may have done it" (the MC adapter's exactly-once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It never ran (not found, not executable, arguments too long).
    NotStarted,
    /// It ran and exited non-zero or was killed by a signal of its own.
    Exited,
    /// It ran past its timeout and was killed: it may have done its work.
    TimedOut,
}

/// A failed command: its kind and the message (program, status, stderr).
#[derive(Debug)]
pub(crate) struct CommandError {
    /// Which way it failed.
    pub(crate) failure: Failure,
    message: String,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CommandError {}

fn command_error(failure: Failure, message: String) -> anyhow::Error {
    anyhow::Error::new(CommandError { failure, message })
}

/// Kills a process group when dropped while armed: the command's own
/// timeout, the cycle deadline dropping the future, or an error path.
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: kill(2) on our own child's process group; while the
            // direct child is unreaped its pid (the group id) cannot be
            // reused, and a group that already ended fails with ESRCH.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `argv` WITHOUT a shell, the way every configured command runs: a
/// clean environment (PATH, HOME and the `pass_env` names), no stdin, its
/// own process group killed after `timeout` or when the caller stops
/// waiting. Returns the bounded output on exit 0; anything else is an
/// error naming `what` and the program, with the stderr tail.
pub(crate) async fn run_argv(
    argv: &[String],
    timeout: Duration,
    pass_env: &[String],
    what: &str,
) -> Result<CommandOutput> {
    run_argv_watched(argv, timeout, pass_env, what, |_| {}).await
}

/// [`run_argv`], telling `on_spawn` the process group id as soon as the
/// command runs (the MC adapter records it, so a later cycle knows whether
/// an attempt is still alive).
// One of the two places clippy.toml lets start a process.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub(crate) async fn run_argv_watched(
    argv: &[String],
    timeout: Duration,
    pass_env: &[String],
    what: &str,
    on_spawn: impl FnOnce(u32),
) -> Result<CommandOutput> {
    let Some(program) = argv.first() else {
        bail!("{what}: empty command");
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Own process group, so a timeout kills what the tool spawned too.
        .process_group(0);
    if let Ok(home) = std::env::var("HOME") {
        cmd.env("HOME", home);
    }
    for name in pass_env {
        if let Ok(v) = std::env::var(name) {
            cmd.env(name, v);
        }
    }
    let child = cmd.spawn().map_err(|e| {
        command_error(
            Failure::NotStarted,
            format!("{:#}", spawn_error(e, what, program)),
        )
    })?;
    let mut guard = GroupGuard {
        pgid: child.id().map(|p| p as i32),
    };
    if let Some(pid) = child.id() {
        on_spawn(pid);
    }
    let label = format!("{what} {program}");
    let (status, out) = match collect(child, timeout).await {
        Ok(done) => done,
        Err(Waited::TimedOut) => {
            guard.kill();
            return Err(command_error(
                Failure::TimedOut,
                format!(
                    "{label}: timed out after {} and was killed (its whole process group)",
                    secs(timeout)
                ),
            ));
        }
        Err(Waited::Failed(e)) => {
            return Err(e).with_context(|| format!("{label}: waiting for it"))
        }
    };
    // Reaped: the group id may be reused from now on, and a background
    // process the command started on purpose is left alone.
    guard.pgid = None;
    if !status.success() {
        return Err(command_error(
            Failure::Exited,
            format!(
                "{label}: {} ; stderr: {}",
                describe_status(status),
                if out.stderr.is_empty() {
                    "(empty)"
                } else {
                    &out.stderr
                }
            ),
        ));
    }
    Ok(out)
}

/// Runs `program args…` found on PATH, with no shell, killed when the
/// timeout passes (or the caller's future is dropped), output bounded.
///
/// Only for the fixed system tools (`launchctl`, `systemctl`): the child
/// inherits the agent's environment. A configured command goes through
/// [`run_argv`] (clean environment, own process group).
// One of the two places clippy.toml lets start a process.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub(crate) async fn run_tool(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<ToolOutput> {
    let what = format!("{program} {}", args.join(" "));
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting `{what}` (is {program} on PATH?)"))?;
    let (status, out) = match collect(child, timeout).await {
        Ok(done) => done,
        Err(Waited::TimedOut) => bail!("`{what}` did not finish within {}", secs(timeout)),
        Err(Waited::Failed(e)) => return Err(e).with_context(|| format!("running `{what}`")),
    };
    Ok(ToolOutput {
        code: status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// What a finished tool printed.
#[derive(Debug, Clone)]
pub(crate) struct ToolOutput {
    /// The exit code (`None` when killed by a signal).
    pub(crate) code: Option<i32>,
    /// Standard output (its last [`STDOUT_KEEP_BYTES`]).
    pub(crate) stdout: String,
    /// Standard error (its tail).
    pub(crate) stderr: String,
}

enum Waited {
    TimedOut,
    Failed(std::io::Error),
}

/// Reads both pipes into bounded tails while waiting for the child, all
/// within `timeout`; after the child exits, its pipes get [`PIPE_GRACE`].
async fn collect(
    mut child: tokio::process::Child,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, CommandOutput), Waited> {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let read_out = tokio::spawn(read_tail(stdout, STDOUT_KEEP_BYTES));
    let read_err = tokio::spawn(read_tail(stderr, STDERR_KEEP_BYTES));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(Waited::Failed(e)),
        Err(_) => {
            read_out.abort();
            read_err.abort();
            return Err(Waited::TimedOut);
        }
    };
    let (out_tail, out_total) = finish_read(read_out).await;
    let (err_tail, _) = finish_read(read_err).await;
    Ok((
        status,
        CommandOutput {
            stdout: String::from_utf8_lossy(&out_tail).into_owned(),
            stderr: tail(&err_tail, STDERR_TAIL_BYTES),
            stdout_bytes: out_total,
        },
    ))
}

async fn finish_read(task: tokio::task::JoinHandle<(Vec<u8>, u64)>) -> (Vec<u8>, u64) {
    let abort = task.abort_handle();
    match tokio::time::timeout(PIPE_GRACE, task).await {
        Ok(Ok(done)) => done,
        _ => {
            abort.abort();
            (Vec::new(), 0)
        }
    }
}

/// Reads `r` to its end, keeping only the last `keep` bytes; returns them
/// and the total read.
async fn read_tail<R: AsyncRead + Unpin>(r: Option<R>, keep: usize) -> (Vec<u8>, u64) {
    let Some(mut r) = r else {
        return (Vec::new(), 0);
    };
    let mut kept: Vec<u8> = Vec::with_capacity(keep.min(8192));
    let mut total = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * keep {
                    kept.drain(..kept.len() - keep);
                }
            }
        }
    }
    if kept.len() > keep {
        kept.drain(..kept.len() - keep);
    }
    (kept, total)
}

fn spawn_error(e: std::io::Error, what: &str, program: &str) -> anyhow::Error {
    let hint = if e.raw_os_error() == Some(libc::E2BIG) {
        " (the arguments are too long for the system)"
    } else {
        ""
    };
    anyhow::Error::new(e).context(format!("{what} {program}: could not start{hint}"))
}

fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "failed".to_string(),
    }
}

/// The last `max` bytes of `bytes` as trimmed, lossy UTF-8 (cut on a
/// character boundary), for error messages.
pub(crate) fn tail(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Whether a process group still has a living member (an MC attempt of a
/// cycle that was killed may live on). Zombies do not count: an orphan
/// that finished waits for its new parent to reap it, and where PID 1
/// does not reap (a container), it would otherwise look alive forever.
pub(crate) fn group_alive(pgid: u32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    if let Some(alive) = living_member_in_proc(pgid) {
        return alive;
    }
    // SAFETY: signal 0 only checks; no signal is delivered.
    let rc = unsafe { libc::kill(-pgid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Looks through `/proc` (Linux) for a member of `pgid` that is not a
/// zombie; `None` where there is no `/proc`.
fn living_member_in_proc(pgid: i32) -> Option<bool> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parens.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let group = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
        if group == Some(pgid) && state != "Z" && state != "X" {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_cuts_on_char_boundary() {
        let s = "é".repeat(400);
        let t = tail(s.as_bytes(), 501);
        assert!(t.starts_with('…'));
        assert!(t.len() <= 504);
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn endless_output_costs_a_timeout_not_memory() {
        // `yes` prints forever: the tail stays bounded and the group dies.
        let err = run_argv(&argv(&["yes"]), Duration::from_millis(300), &[], "test")
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("timed out after 0.3s"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn a_big_output_is_kept_as_its_tail_and_says_so() {
        let script = "head -c 300000 /dev/zero | tr '\\0' x; echo; echo LAST-LINE";
        let out = run_argv(
            &argv(&["sh", "-c", script]),
            Duration::from_secs(10),
            &[],
            "test",
        )
        .await
        .unwrap();
        assert!(
            out.stdout.len() <= STDOUT_KEEP_BYTES,
            "{}",
            out.stdout.len()
        );
        assert!(out.stdout.ends_with("LAST-LINE\n"));
        assert!(out.stdout_bytes > 300_000);
        assert!(out.cap_note().unwrap().contains("last 64 KiB"));
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        // The command starts a grandchild that would outlive a plain kill.
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let cmd = argv(&["sh", "-c", &script]);
        let run = run_argv(&cmd, Duration::from_secs(30), &[], "test");
        let cut = tokio::time::timeout(Duration::from_millis(500), run).await;
        assert!(cut.is_err(), "the deadline cut the command");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Gone, or a zombie waiting for an init that does not reap.
        let dead = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // SAFETY: signal 0 only checks whether the process exists.
            let exists = unsafe { libc::kill(pid, 0) } == 0;
            !exists || stat.split(") ").nth(1).is_some_and(|r| r.starts_with('Z'))
        };
        let mut gone = false;
        for _ in 0..50 {
            if dead() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "grandchild {pid} survived the cut");
    }

    #[tokio::test]
    async fn spawn_reports_the_group() {
        let mut seen = None;
        run_argv_watched(&argv(&["true"]), Duration::from_secs(5), &[], "t", |p| {
            seen = Some(p)
        })
        .await
        .unwrap();
        let pgid = seen.unwrap();
        assert!(pgid > 1);
        assert!(!group_alive(u32::MAX));
    }

    #[test]
    fn a_finished_but_unreaped_group_is_not_alive() {
        use std::os::unix::process::CommandExt;
        let mut running = std::process::Command::new("sleep")
            .arg("5")
            .process_group(0)
            .spawn()
            .unwrap();
        assert!(group_alive(running.id()));
        running.kill().unwrap();
        running.wait().unwrap();
        let mut zombie = std::process::Command::new("true")
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // Exited, not yet reaped: a zombie is no attempt still running.
        assert!(!group_alive(zombie.id()));
        zombie.wait().unwrap();
        assert!(!group_alive(zombie.id()));
    }
}
