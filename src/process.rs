//! Running other programs, said once. Every configured command (the MC
//! command, a fix command, the resolve command) goes through [`run_argv`]:
//! no shell, a clean environment, no stdin, its own process group killed
//! on timeout, a bounded stderr tail in errors. The fixed system tools
//! (`launchctl`, `systemctl`) go through [`run_tool`].

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How much of the child's stderr an error carries: enough for the message
/// of a failing tool, not a whole log.
const STDERR_TAIL_BYTES: usize = 500;

/// The real user id (launchd's `gui/<uid>` domain, ownership checks).
pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Runs `argv` WITHOUT a shell, the way every configured command runs: a
/// clean environment (PATH, HOME and the `pass_env` names), no stdin, its
/// own process group killed after `timeout`. Returns stdout and the stderr
/// tail on exit 0; anything else is an error naming `what` and the program,
/// with the stderr tail. Shared by the MC adapter and the escalation's
/// resolve command.
pub async fn run_argv(
    argv: &[String],
    timeout: Duration,
    pass_env: &[String],
    what: &str,
) -> Result<(String, String)> {
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
    let child = cmd
        .spawn()
        .with_context(|| format!("{what} {program}: could not start"))?;
    let pid = child.id();
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.with_context(|| format!("{what} {program}: waiting for it"))?,
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: kill(2) on our own child's process group; a stale
                // group id at worst makes the call fail with ESRCH.
                unsafe {
                    libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                }
            }
            bail!(
                "{what} {program}: timed out after {}s and was killed",
                timeout.as_secs()
            );
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = tail(&output.stderr, STDERR_TAIL_BYTES);
    if !output.status.success() {
        bail!(
            "{what} {program}: {} ; stderr: {}",
            describe_status(output.status),
            if stderr.is_empty() {
                "(empty)"
            } else {
                &stderr
            }
        );
    }
    Ok((stdout, stderr))
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
pub fn tail(bytes: &[u8], max: usize) -> String {
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

/// What a finished tool printed.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `program args…` found on PATH, with no shell, killed when the
/// timeout passes (or the caller's future is dropped).
///
/// Only for the fixed system tools (`launchctl`, `systemctl`): the child
/// inherits the agent's environment and only it is killed, not what it
/// spawned. A configured command goes through
/// [`run_argv`] (clean environment, own process group).
pub async fn run_tool(program: &str, args: &[&str], timeout: Duration) -> Result<ToolOutput> {
    let what = format!("{program} {}", args.join(" "));
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting `{what}` (is {program} on PATH?)"))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .with_context(|| format!("`{what}` did not finish within {}s", timeout.as_secs()))?
        .with_context(|| format!("running `{what}`"))?;
    Ok(ToolOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
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
}
