//! What outside watchers rely on: the heartbeat's last ping and the
//! metrics textfile. Judging is pure and table-tested.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{finding, Finding, Level};
use crate::observe::heartbeat::PingRecord;
use crate::observe::MetricsConfig;

/// The last ping, as `doctor` judges it: nothing configured is fine, a
/// ping that did not go through is a warning (the monitor will alert on
/// the missing pings; the agent itself works). Pure.
pub(crate) fn heartbeat_finding(
    configured: bool,
    last: Option<&PingRecord>,
    now_ms: i64,
) -> Finding {
    let ago = |at: i64| crate::time::human_ms(now_ms - at);
    match (configured, last) {
        (false, _) => finding(
            "heartbeat",
            Level::Ok,
            "not configured ([heartbeat] url): nobody outside notices a cycle that never runs",
        ),
        (true, None) => finding(
            "heartbeat",
            Level::Warn,
            "configured, no ping sent yet (one is sent at the end of each cycle)",
        ),
        (true, Some(r)) if r.ok && r.kind == "success" => finding(
            "heartbeat",
            Level::Ok,
            format!("last: {} ({} ago)", r.line(), ago(r.at_ms)),
        ),
        (true, Some(r)) if r.ok => finding(
            "heartbeat",
            Level::Warn,
            format!(
                "last: {} ({} ago): the monitor was told the cycle failed",
                r.line(),
                ago(r.at_ms)
            ),
        ),
        (true, Some(r)) => finding(
            "heartbeat",
            Level::Warn,
            format!(
                "last: {} ({} ago): check the URL and the monitor's reachability",
                r.line(),
                ago(r.at_ms)
            ),
        ),
    }
}

/// The metrics textfile: configured? written? readable by others? how old?
pub(crate) fn metrics_finding(cfg: &MetricsConfig, now: std::time::SystemTime) -> Finding {
    let Some(path) = cfg.path() else {
        return finding(
            "metrics textfile",
            Level::Ok,
            "not configured ([metrics] textfile)",
        );
    };
    judge_metrics(
        &path,
        std::fs::symlink_metadata(&path).ok(),
        cfg.mode_bits(),
        now,
    )
}

fn judge_metrics(
    path: &Path,
    meta: Option<std::fs::Metadata>,
    want_mode: u32,
    now: std::time::SystemTime,
) -> Finding {
    let p = path.display();
    let Some(m) = meta else {
        return finding(
            "metrics textfile",
            Level::Warn,
            format!("{p} not written yet (written at the end of each cycle)"),
        );
    };
    if m.file_type().is_symlink() || !m.file_type().is_file() {
        return finding(
            "metrics textfile",
            Level::Fail,
            format!("{p} is not a regular file (a symlink?); the agent refuses it: remove it"),
        );
    }
    let mode = m.permissions().mode() & 0o777;
    let age = m
        .modified()
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .map(|d| crate::time::human_ms(d.as_millis() as i64))
        .unwrap_or_else(|| "?".into());
    if mode != want_mode {
        return finding(
            "metrics textfile",
            Level::Warn,
            format!("{p} has mode {mode:04o}, [metrics] mode says {want_mode:04o}; the next cycle sets it"),
        );
    }
    finding(
        "metrics textfile",
        Level::Ok,
        format!("{p} written {age} ago, mode {mode:04o}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_table() {
        let rec = |kind: &str, ok: bool| PingRecord {
            at_ms: 0,
            kind: kind.into(),
            target: "https://hc.example/…".into(),
            ok,
            status: ok.then_some(200),
            error: (!ok).then(|| "connection refused".into()),
            ms: 3,
            not_ok_streak: 0,
        };
        let success = rec("success", true);
        let fail = rec("fail", true);
        let down = rec("success", false);
        let table: Vec<(bool, Option<&PingRecord>, Level, &str)> = vec![
            (false, None, Level::Ok, "not configured"),
            (true, None, Level::Warn, "no ping sent yet"),
            (
                true,
                Some(&success),
                Level::Ok,
                "success ping to https://hc.example/… -> HTTP 200",
            ),
            (true, Some(&fail), Level::Warn, "told the cycle failed"),
            (true, Some(&down), Level::Warn, "FAILED: connection refused"),
        ];
        for (configured, last, level, word) in table {
            let f = heartbeat_finding(configured, last, 60_000);
            assert_eq!(f.level, level, "{f:?}");
            assert!(f.reason.contains(word), "{}", f.reason);
        }
    }
}
