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
/// within `timeout`. Once the child has exited, its pipes get
/// [`PIPE_GRACE`] to reach their end; a pipe still open then is held by a
/// process the command left running (a wrapper's `cmd &`, a detached
/// helper), and what was read from it so far is the command's output: the
/// command finished, whatever it started.
async fn collect(
    mut child: tokio::process::Child,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, CommandOutput), Waited> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let read_out = tokio::spawn(read_tail(
        child.stdout.take(),
        STDOUT_KEEP_BYTES,
        stopped.clone(),
    ));
    let read_err = tokio::spawn(read_tail(child.stderr.take(), STDERR_KEEP_BYTES, stopped));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(Waited::Failed(e)),
        Err(_) => {
            read_out.abort();
            read_err.abort();
            return Err(Waited::TimedOut);
        }
    };
    let reads = async { (read_out.await, read_err.await) };
    tokio::pin!(reads);
    let (out, err) = tokio::select! {
        done = &mut reads => done,
        _ = tokio::time::sleep(PIPE_GRACE) => {
            // Readers stop at once and hand back what they hold.
            let _ = stop.send(true);
            reads.await
        }
    };
    let ((out_tail, out_total), (err_tail, _)) = (out.unwrap_or_default(), err.unwrap_or_default());
    Ok((
        status,
        CommandOutput {
            stdout: String::from_utf8_lossy(&out_tail).into_owned(),
            stderr: tail(&err_tail, STDERR_TAIL_BYTES),
            stdout_bytes: out_total,
        },
    ))
}

/// Reads `r` to its end, or until `stop` turns true, keeping only the
/// last `keep` bytes; returns them and the total read.
async fn read_tail<R: AsyncRead + Unpin>(
    r: Option<R>,
    keep: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<u8>, u64) {
    let Some(mut r) = r else {
        return (Vec::new(), 0);
    };
    let mut kept: Vec<u8> = Vec::with_capacity(keep.min(8192));
    let mut total = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        // `read` is cancel-safe: a read cut by the stop consumed nothing.
        let n = tokio::select! {
            read = r.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        total += n as u64;
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * keep {
            kept.drain(..kept.len() - keep);
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

/// Whether the command an attempt started still runs: the leader of
/// process group `pgid` (the command itself, whose pid is the group id)
/// lives and is not a zombie. Processes it left behind in its group do not
/// count: the command's exit ends its attempt, as [`collect`] ends a run
/// whose pipes a background child still holds. While any member lives, no
/// new process can be given the pid `pgid`, so a living leader in that
/// group is the command. Zombies do not count: an orphan that finished
/// waits for its new parent to reap it, and where PID 1 does not reap (a
/// container), it would otherwise look alive forever.
pub(crate) fn command_alive(pgid: u32) -> bool {
    let Ok(pid) = i32::try_from(pgid) else {
        return false;
    };
    if pid <= 1 {
        return false;
    }
    if std::path::Path::new("/proc/self/stat").exists() {
        return leader_in_proc(pid);
    }
    // SAFETY: signal 0 only checks; no signal is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Reads `/proc/<pid>/stat` (Linux): the process lives, is not a zombie,
/// and leads its own group.
fn leader_in_proc(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ppid pgrp …`; comm may hold spaces and parens.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("");
    let group = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
    group == Some(pid) && state != "Z" && state != "X"
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
        assert!(!command_alive(u32::MAX));
    }

    #[test]
    fn a_finished_but_unreaped_command_is_not_alive() {
        use std::os::unix::process::CommandExt;
        let mut running = std::process::Command::new("sleep")
            .arg("5")
            .process_group(0)
            .spawn()
            .unwrap();
        assert!(command_alive(running.id()));
        running.kill().unwrap();
        running.wait().unwrap();
        let mut zombie = std::process::Command::new("true")
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // Exited, not yet reaped: a zombie is no attempt still running.
        assert!(!command_alive(zombie.id()));
        zombie.wait().unwrap();
        assert!(!command_alive(zombie.id()));
    }

    #[test]
    fn a_command_that_exited_is_not_alive_though_its_background_child_is() {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & echo $!"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(cmd.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let child: i32 = line.trim().parse().unwrap();
        cmd.wait().unwrap();
        assert!(!command_alive(cmd.id()), "the command itself exited");
        // SAFETY: signal 0 only checks whether the process exists.
        assert_eq!(unsafe { libc::kill(child, 0) }, 0, "its child lives on");
        // SAFETY: kill(2) on the background child this test started.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }

    #[tokio::test]
    async fn output_is_kept_when_a_background_child_holds_the_pipe() {
        // A wrapper that prints the id, leaves a child holding its stdout
        // and stderr, and exits 0: the run ends after the grace, with what
        // was printed.
        let script = "echo '{\"id\":\"MC-7\"}'; echo warn >&2; sleep 30 & exit 0";
        let mut group = 0;
        let out = run_argv_watched(
            &argv(&["sh", "-c", script]),
            Duration::from_secs(20),
            &[],
            "test",
            |pgid| group = pgid,
        )
        .await
        .unwrap();
        assert_eq!(out.stdout, "{\"id\":\"MC-7\"}\n");
        assert_eq!(out.stderr, "warn");
        assert!(!command_alive(group), "the command itself has exited");
        // SAFETY: kill(2) on the group this test's command started.
        unsafe { libc::kill(-(group as i32), libc::SIGKILL) };
    }
}
