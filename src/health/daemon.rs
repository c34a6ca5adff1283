//! Scheduler daemon probes: launchd jobs on macOS (`launchctl list
//! <label>`) and systemd user units on Linux (`systemctl --user show`).
//!
//! The tools are found on PATH and run without a shell, their output parsed
//! by pure functions tested on real samples. The caller's timeout drops the
//! future, and `kill_on_drop` then kills the tool.

use anyhow::Result;
use std::collections::BTreeMap;

use super::{CheckConfig, Probe, Status};
use crate::process::run_tool;

/// The properties asked of systemd. `LoadState` is asked too because a
/// unit that does not exist reports `inactive/dead/success`, which would
/// otherwise pass as a healthy oneshot.
const SYSTEMD_PROPERTIES: &str = "LoadState,ActiveState,SubState,Result,NRestarts";

/// What `launchctl list <label>` says about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LaunchdFacts {
    /// launchctl exited non-zero ("Could not find service …").
    NotLoaded(String),
    /// Loaded; `pid` only while running.
    Loaded {
        /// `"PID" = n;`
        pid: Option<i64>,
        /// `"LastExitStatus" = n;` (a wait status: exit code × 256, or the
        /// signal number).
        last_exit: Option<i64>,
    },
}

/// Parses `launchctl list <label>`. Only top-level `"KEY" = value;` lines
/// matter; nested arrays (ProgramArguments) are skipped.
fn parse_launchctl_list(code: Option<i32>, stdout: &str, stderr: &str) -> LaunchdFacts {
    if code != Some(0) {
        let msg = stderr
            .lines()
            .chain(stdout.lines())
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("launchctl failed")
            .to_string();
        return LaunchdFacts::NotLoaded(msg);
    }
    let mut pid = None;
    let mut last_exit = None;
    for line in stdout.lines() {
        let line = line.trim().trim_end_matches(';');
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let key = k.trim().trim_matches('"');
        let value = v.trim().trim_matches('"').parse::<i64>().ok();
        match key {
            "PID" => pid = value,
            "LastExitStatus" => last_exit = value,
            _ => {}
        }
    }
    LaunchdFacts::Loaded { pid, last_exit }
}

/// Says what a launchd wait status means.
fn describe_exit(status: i64) -> String {
    if status > 0 && status % 256 == 0 {
        format!("exit code {}", status / 256)
    } else if status < 0 {
        format!("killed by signal {}", -status)
    } else if status > 0 && status < 128 {
        format!("status {status} (signal {status}?)")
    } else {
        format!("status {status}")
    }
}

/// Grades a launchd job. A loaded interval job that is not running between
/// runs and last exited 0 is healthy.
fn grade_launchd(label: &str, f: &LaunchdFacts) -> Probe {
    match f {
        LaunchdFacts::NotLoaded(msg) => Probe::new(
            Status::Critical,
            format!("launchd job {label} not loaded ({msg})"),
        ),
        LaunchdFacts::Loaded { pid: Some(pid), .. } => Probe::new(
            Status::Ok,
            format!("launchd job {label} running (PID {pid})"),
        ),
        LaunchdFacts::Loaded {
            pid: None,
            last_exit: None | Some(0),
        } => Probe::new(
            Status::Ok,
            format!("launchd job {label} loaded, not running, last exit 0"),
        ),
        LaunchdFacts::Loaded {
            pid: None,
            last_exit: Some(s),
        } => Probe::new(
            Status::Critical,
            format!(
                "launchd job {label} not running, last exit {}",
                describe_exit(*s)
            ),
        ),
    }
}

/// Probes a launchd job.
pub(crate) async fn probe_launchd(check: &CheckConfig) -> Result<Probe> {
    let label = check.label.as_deref().unwrap_or_default();
    let out = run_tool("launchctl", &["list", label], check.timeout()).await?;
    Ok(grade_launchd(
        label,
        &parse_launchctl_list(out.code, &out.stdout, &out.stderr),
    ))
}

/// Parses `systemctl show` `KEY=value` lines.
fn parse_systemctl_show(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Grades a systemd unit from its properties. `activating` (including a
/// pending auto-restart) and `deactivating`/`reloading` are starting: not
/// failures and never restarted; an inactive oneshot whose last run
/// succeeded is healthy.
fn grade_systemd(unit: &str, p: &BTreeMap<String, String>) -> Probe {
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    let (active, sub, result) = (get("ActiveState"), get("SubState"), get("Result"));
    let restarts = match get("NRestarts") {
        "" | "0" => String::new(),
        n => format!(", {n} restarts"),
    };
    if get("LoadState") == "not-found" {
        return Probe::new(Status::Critical, format!("unit {unit} not found"));
    }
    match active {
        "active" => Probe::new(Status::Ok, format!("unit {unit} active ({sub}){restarts}")),
        "activating" | "deactivating" | "reloading" | "refreshing" => Probe {
            starting: true,
            ..Probe::new(
                Status::Warn,
                format!("unit {unit} {active} ({sub}){restarts}"),
            )
        },
        "inactive" if result == "success" || result.is_empty() => Probe::new(
            Status::Ok,
            format!("unit {unit} inactive ({sub}), last run succeeded{restarts}"),
        ),
        "" => Probe::new(
            Status::Unknown,
            format!("unit {unit}: systemctl printed no ActiveState"),
        ),
        other => Probe::new(
            Status::Critical,
            format!("unit {unit} {other} ({sub}), result {result}{restarts}"),
        ),
    }
}

/// Probes a systemd user unit.
pub(crate) async fn probe_systemd(check: &CheckConfig) -> Result<Probe> {
    let unit = check.unit.as_deref().unwrap_or_default();
    let out = run_tool(
        "systemctl",
        &["--user", "show", "-p", SYSTEMD_PROPERTIES, "--", unit],
        check.timeout(),
    )
    .await?;
    if out.code != Some(0) {
        return Ok(Probe::new(
            Status::Unknown,
            format!(
                "systemctl --user show {unit} failed: {}",
                out.stderr.trim().lines().next().unwrap_or("no message")
            ),
        ));
    }
    Ok(grade_systemd(unit, &parse_systemctl_show(&out.stdout)))
}

/// The properties a brief shows of a failed unit: how its main process
/// last ended and how often systemd restarted it.
const SYSTEMD_EVIDENCE: &str =
    "ActiveState,SubState,Result,ExecMainCode,ExecMainStatus,ExecMainExitTimestamp,NRestarts";

/// What an incident brief shows of a systemd user unit. Every string is
/// the tools' output (outside text): the brief scrubs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitEvidence {
    /// `KEY=value` lines of `systemctl --user show` (its last exit), or
    /// why they could not be read.
    pub(crate) facts: std::result::Result<Vec<String>, String>,
    /// The last journal lines of the unit, or why there are none (no
    /// journal for this user, no permission, no `journalctl`).
    pub(crate) journal: std::result::Result<Vec<String>, String>,
}

/// Reads a unit's last exit and its last `lines` journal lines, each tool
/// within `timeout` (through the process room: no shell, killed at the
/// timeout).
pub(crate) async fn systemd_evidence(
    unit: &str,
    lines: usize,
    timeout: std::time::Duration,
) -> UnitEvidence {
    let n = lines.to_string();
    let show_args = ["--user", "show", "-p", SYSTEMD_EVIDENCE, unit];
    let journal_args = [
        "--user",
        "-u",
        unit,
        "-n",
        &n,
        "--no-pager",
        "-o",
        "short-iso",
        "-q",
    ];
    let (show, journal) = tokio::join!(
        run_tool("systemctl", &show_args, timeout),
        run_tool("journalctl", &journal_args, timeout)
    );
    let first_line = |s: &str| {
        s.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message")
            .to_string()
    };
    UnitEvidence {
        facts: match show {
            Ok(out) if out.code == Some(0) => Ok(out
                .stdout
                .lines()
                .map(str::trim)
                .filter(|l| l.contains('=') && !l.ends_with('='))
                .map(str::to_string)
                .collect()),
            Ok(out) => Err(format!("systemctl: {}", first_line(&out.stderr))),
            Err(e) => Err(format!("{e:#}")),
        },
        journal: match journal {
            Ok(out) if out.code == Some(0) => Ok(out
                .stdout
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with("-- "))
                .map(str::to_string)
                .collect()),
            Ok(out) => Err(format!("journal not readable: {}", first_line(&out.stderr))),
            Err(e) => Err(format!("journal not readable: {e:#}")),
        },
    }
}

/// A launchd job's last exit, in words (`loaded, not running, last exit:
/// exit code 1`), or why it could not be read.
pub(crate) async fn launchd_evidence(
    label: &str,
    timeout: std::time::Duration,
) -> std::result::Result<String, String> {
    let out = run_tool("launchctl", &["list", label], timeout)
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(
        match parse_launchctl_list(out.code, &out.stdout, &out.stderr) {
            LaunchdFacts::NotLoaded(msg) => format!("not loaded ({msg})"),
            LaunchdFacts::Loaded { pid, last_exit } => format!(
                "loaded, {}, last exit: {}",
                pid.map_or("not running".to_string(), |p| format!("running as PID {p}")),
                last_exit.map_or("none recorded".to_string(), describe_exit)
            ),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = r#"{
	"LimitLoadToSessionType" = "Aqua";
	"Label" = "com.john.ops-agent";
	"OnDemand" = true;
	"LastExitStatus" = 0;
	"PID" = 4242;
	"Program" = "/usr/local/bin/ops-agent";
	"ProgramArguments" = (
		"/usr/local/bin/ops-agent";
		"run-once";
	);
};
"#;
    const IDLE_FAILED: &str = r#"{
	"LimitLoadToSessionType" = "Aqua";
	"Label" = "com.john.backup";
	"OnDemand" = true;
	"LastExitStatus" = 256;
	"Program" = "/bin/sh";
};
"#;

    #[test]
    fn launchctl_samples() {
        let t = [
            (0, RUNNING, "", Status::Ok, "PID 4242"),
            (0, IDLE_FAILED, "", Status::Critical, "exit code 1"),
            (
                0,
                "{\n\t\"Label\" = \"x\";\n\t\"LastExitStatus\" = 0;\n};\n",
                "",
                Status::Ok,
                "last exit 0",
            ),
            (
                113,
                "",
                "Could not find service \"x\" in domain for port\n",
                Status::Critical,
                "Could not find service",
            ),
            (
                0,
                "{\n\t\"LastExitStatus\" = -9;\n};\n",
                "",
                Status::Critical,
                "signal 9",
            ),
        ];
        for (code, out, err, status, needle) in t {
            let p = grade_launchd("x", &parse_launchctl_list(Some(code), out, err));
            assert_eq!(p.status, status, "{out}{err}");
            assert!(p.reason.contains(needle), "{}", p.reason);
        }
    }

    #[test]
    fn systemctl_samples() {
        let t = [
            (
                "ActiveState=active\nSubState=running\nResult=success\nNRestarts=0\nLoadState=loaded\n",
                Status::Ok,
                false,
                "active (running)",
            ),
            (
                "LoadState=loaded\nActiveState=inactive\nSubState=dead\nResult=success\nNRestarts=0\n",
                Status::Ok,
                false,
                "last run succeeded",
            ),
            (
                "LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\nNRestarts=3\n",
                Status::Critical,
                false,
                "result exit-code, 3 restarts",
            ),
            (
                "LoadState=loaded\nActiveState=activating\nSubState=auto-restart\nResult=exit-code\nNRestarts=1\n",
                Status::Warn,
                true,
                "activating (auto-restart)",
            ),
            (
                "LoadState=loaded\nActiveState=inactive\nSubState=dead\nResult=timeout\nNRestarts=0\n",
                Status::Critical,
                false,
                "result timeout",
            ),
            (
                "LoadState=not-found\nActiveState=inactive\nSubState=dead\nResult=success\nNRestarts=0\n",
                Status::Critical,
                false,
                "not found",
            ),
        ];
        for (out, status, starting, needle) in t {
            let p = grade_systemd("u.service", &parse_systemctl_show(out));
            assert_eq!((p.status, p.starting), (status, starting), "{out}");
            assert!(p.reason.contains(needle), "{}", p.reason);
        }
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(describe_exit(256), "exit code 1");
        assert_eq!(describe_exit(-15), "killed by signal 15");
    }
}
