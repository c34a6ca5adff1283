//! Loading, unloading and asking about the job: `launchctl` in the user's
//! `gui/<uid>` domain and `systemctl --user`, through
//! [`crate::process::run_tool`] (no shell, bounded in time and output).
//! Each call returns what it ran, so `install` can show the operator the
//! exact commands. [`verify_units`] asks `systemd-analyze` about unit
//! files before they are enabled.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::process::{current_uid, run_tool, ToolOutput};

/// How long one `launchctl` / `systemctl` call may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an unloaded LaunchAgent may take to disappear from its domain.
const BOOTOUT_WAIT: Duration = Duration::from_secs(10);

/// A command line as the operator would type it.
fn line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a tool; a non-zero exit is an error with its stderr's first line.
async fn must(program: &str, args: &[&str], ran: &mut Vec<String>) -> Result<ToolOutput> {
    let out = run_tool(program, args, TOOL_TIMEOUT).await?;
    ran.push(line(program, args));
    if out.code != Some(0) {
        let why = out
            .stderr
            .trim()
            .lines()
            .next()
            .or_else(|| out.stdout.trim().lines().next())
            .unwrap_or("")
            .to_string();
        bail!(
            "`{}` exited with {}: {why}",
            line(program, args),
            out.code
                .map_or("a signal".to_string(), |c| format!("status {c}"))
        );
    }
    Ok(out)
}

/// `gui/<uid>`: the per-user launchd domain a LaunchAgent lives in.
pub(crate) fn gui_domain() -> String {
    format!("gui/{}", current_uid())
}

/// Whether launchd has the job loaded (`launchctl print` exits 0).
pub(crate) async fn launchd_loaded(label: &str, ran: &mut Vec<String>) -> Result<bool> {
    let target = format!("{}/{label}", gui_domain());
    let args = ["print", target.as_str()];
    let out = run_tool("launchctl", &args, TOOL_TIMEOUT).await?;
    ran.push(line("launchctl", &args));
    Ok(out.code == Some(0))
}

/// Loads the plist into the user's domain (enabling the label first, in
/// case an earlier `launchctl disable` would make bootstrap refuse it).
pub(crate) async fn launchd_load(plist: &Path, label: &str, ran: &mut Vec<String>) -> Result<()> {
    let domain = gui_domain();
    let target = format!("{domain}/{label}");
    must("launchctl", &["enable", &target], ran).await?;
    let path = plist.display().to_string();
    must("launchctl", &["bootstrap", &domain, &path], ran).await?;
    Ok(())
}

/// Unloads the job if it is loaded and waits until launchd lets go of it
/// (a bootstrap right after a bootout can otherwise fail). Returns
/// whether it was loaded.
pub(crate) async fn launchd_unload(label: &str, ran: &mut Vec<String>) -> Result<bool> {
    if !launchd_loaded(label, ran).await? {
        return Ok(false);
    }
    let target = format!("{}/{label}", gui_domain());
    must("launchctl", &["bootout", &target], ran).await?;
    let until = Instant::now() + BOOTOUT_WAIT;
    let mut quiet = Vec::new();
    while launchd_loaded(label, &mut quiet).await? {
        if Instant::now() > until {
            bail!(
                "launchd still has {target} {} s after `launchctl bootout`",
                BOOTOUT_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(true)
}

/// `systemctl --user <args…>`, failing on a non-zero exit. A user manager
/// that is not running is named as such.
pub(crate) async fn systemctl(args: &[&str], ran: &mut Vec<String>) -> Result<()> {
    let mut all = vec!["--user"];
    all.extend_from_slice(args);
    must("systemctl", &all, ran).await.map_err(|e| {
        let text = format!("{e:#}");
        if text.contains("connect to bus") || text.contains("XDG_RUNTIME_DIR") {
            e.context(
                "no systemd user instance answers (log in once, or `loginctl enable-linger $USER`)",
            )
        } else {
            e
        }
    })?;
    Ok(())
}

/// `systemctl --user is-active <unit>`: what it printed (`active`,
/// `inactive`, …); never an error for a unit that is simply not active.
pub(crate) async fn systemd_state(unit: &str, ran: &mut Vec<String>) -> Result<String> {
    let args = ["--user", "is-active", unit];
    let out = run_tool("systemctl", &args, TOOL_TIMEOUT).await?;
    ran.push(line("systemctl", &args));
    let word = out.stdout.trim();
    Ok(if word.is_empty() {
        out.stderr
            .trim()
            .lines()
            .next()
            .unwrap_or("unknown")
            .to_string()
    } else {
        word.to_string()
    })
}

/// Whether systemd keeps the user's units running without a login
/// (`loginctl show-user <uid> -p Linger`); `None` when loginctl cannot say.
pub(crate) async fn lingering(ran: &mut Vec<String>) -> Option<bool> {
    let uid = current_uid().to_string();
    let args = ["show-user", uid.as_str(), "-p", "Linger"];
    let out = run_tool("loginctl", &args, TOOL_TIMEOUT).await.ok()?;
    ran.push(line("loginctl", &args));
    match out.stdout.trim() {
        "Linger=yes" => Some(true),
        "Linger=no" => Some(false),
        _ => None,
    }
}

/// What `systemd-analyze --user verify` said about unit files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verified {
    /// Nothing to say about them.
    Clean,
    /// Its lines about these files (an unknown key, a command that is not
    /// executable, a line it could not parse).
    Complaints(Vec<String>),
    /// It could not be asked (not installed, no runtime directory to start
    /// its manager in): why.
    NotRun(String),
}

/// Runs `systemd-analyze --user verify` on unit files, where it is
/// installed. Only lines naming one of the files count against them; a
/// failure without such a line is its own environment's (no
/// `XDG_RUNTIME_DIR`, say), reported as not run.
pub(crate) async fn verify_units(files: &[&Path], ran: &mut Vec<String>) -> Verified {
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let mut args = vec!["--user", "verify"];
    args.extend(paths.iter().map(String::as_str));
    let out = match run_tool("systemd-analyze", &args, TOOL_TIMEOUT).await {
        Ok(out) => out,
        Err(e) => return Verified::NotRun(format!("{e:#}")),
    };
    ran.push(line("systemd-analyze", &args));
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| format!("{}:", n.to_string_lossy()))
        .collect();
    let text = format!("{}\n{}", out.stdout, out.stderr);
    let complaints = about_files(&text, &paths, &names);
    if !complaints.is_empty() {
        return Verified::Complaints(complaints);
    }
    if out.code != Some(0) {
        let why = text
            .trim()
            .lines()
            .next()
            .unwrap_or("no output")
            .to_string();
        return Verified::NotRun(format!("systemd-analyze: {why}"));
    }
    Verified::Clean
}

/// The lines of `text` that name one of the files, by path or as
/// `<unit file name>:`. Pure.
fn about_files(text: &str, paths: &[String], names: &[String]) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            paths.iter().any(|p| l.contains(p.as_str()))
                || names.iter().any(|n| l.starts_with(n.as_str()))
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lines_about_the_files_count_against_them() {
        let paths = ["/h/.config/systemd/user/ops-agent.service".to_string()];
        let names = [
            "ops-agent.service:".to_string(),
            "ops-agent.timer:".to_string(),
        ];
        let text = "Failed to initialize manager: No such device or address\n\
                    /h/.config/systemd/user/ops-agent.service:7: Unknown key 'X' in section [Service], ignoring.\n\
                    ops-agent.service: Command /a$$b/ops-agent is not executable: No such file or directory\n\
                    other.service: whatever\n";
        assert_eq!(
            about_files(text, &paths, &names),
            [
                "/h/.config/systemd/user/ops-agent.service:7: Unknown key 'X' in section [Service], ignoring.",
                "ops-agent.service: Command /a$$b/ops-agent is not executable: No such file or directory",
            ]
        );
        assert!(about_files("Failed to initialize manager\n", &paths, &names).is_empty());
    }
}
