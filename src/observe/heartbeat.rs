//! The heartbeat: a dead-man's switch. At the end of every cycle the agent
//! pings `[heartbeat] url` (healthchecks.io style): a POST to the URL when
//! the cycle went well, to `<url>/fail` when it failed or stayed degraded
//! longer than `degraded_tolerance` cycles in a row, with the cycle's
//! summary line as the body. The service on the other end alerts when the
//! pings stop: a scheduler that no longer starts the agent, a machine that
//! is off, a binary that crashes before its first line, none of which the
//! agent can report itself.
//!
//! The ping never fails the cycle and never runs past its deadline: its
//! timeout is the shorter of `timeout_secs` and the time left. What it got
//! back is kept in the stats file for `status` and `doctor`.
//!
//! The ping URL is a capability (whoever knows it can ping), so logs, the
//! record and `status` show only its scheme and host.

use std::time::{Duration, Instant as StdInstant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::time::Secs;

/// The longest summary sent as the ping's body.
const MAX_BODY: usize = 10_000;

/// `[heartbeat]`: where the dead-man's switch is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HeartbeatConfig {
    /// The ping URL (e.g. `https://hc-ping.com/<uuid>`); empty: no heartbeat.
    /// Shown (`config check`) as its scheme and host only: it is a capability.
    #[serde(serialize_with = "serialize_shown")]
    url: String,
    /// The ping gives up after this long (less when the cycle deadline is closer).
    timeout_secs: Secs,
    /// Degraded cycles in a row still pinged as success; the next one
    /// pings `<url>/fail`. 0: every degraded cycle is a failure.
    pub(crate) degraded_tolerance: u32,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            url: String::new(),
            timeout_secs: Secs::new(5),
            degraded_tolerance: 2,
        }
    }
}

impl HeartbeatConfig {
    /// Checks the section without I/O; errors name the key (never the URL,
    /// which is a capability).
    pub(crate) fn validate(&self) -> Result<()> {
        if self.enabled() {
            let ok = reqwest::Url::parse(self.url.trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if ok.is_none() {
                bail!("heartbeat.url: not an http(s) URL");
            }
        }
        if self.timeout_secs.as_f64() < 0.1 || self.timeout_secs.as_f64() > 60.0 {
            bail!(
                "heartbeat.timeout_secs: {} is not a timeout between 0.1 and 60 seconds \
                 (a shorter one never hears the monitor answer)",
                self.timeout_secs
            );
        }
        Ok(())
    }

    /// Whether a URL is configured.
    pub(crate) fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }
}

/// Which ping a cycle earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PingKind {
    /// The URL itself: all is well.
    Success,
    /// `<url>/fail`: the monitor alerts now.
    Fail,
}

impl PingKind {
    /// `success` or `fail`.
    fn as_str(self) -> &'static str {
        match self {
            PingKind::Success => "success",
            PingKind::Fail => "fail",
        }
    }
}

/// The ping a cycle with overall outcome `overall` earns, and the new count
/// of not-ok cycles in a row. Pure.
pub(crate) fn decide(overall: &str, streak_before: u32, tolerance: u32) -> (PingKind, u32) {
    match overall {
        "ok" => (PingKind::Success, 0),
        "degraded" => {
            let streak = streak_before.saturating_add(1);
            let kind = if streak > tolerance {
                PingKind::Fail
            } else {
                PingKind::Success
            };
            (kind, streak)
        }
        _ => (PingKind::Fail, streak_before.saturating_add(1)),
    }
}

/// The last ping, kept in the stats file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PingRecord {
    /// When it was sent, epoch ms.
    pub(crate) at_ms: i64,
    /// `success` or `fail`.
    pub(crate) kind: String,
    /// Scheme and host of the URL pinged.
    pub(crate) target: String,
    /// The monitor took it (a 2xx answer).
    pub(crate) ok: bool,
    /// The HTTP status, when there was an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    /// Why it did not go through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// How long it took.
    pub(crate) ms: u64,
    /// Cycles in a row that were not ok, this one included.
    pub(crate) not_ok_streak: u32,
}

impl PingRecord {
    /// `success ping to https://hc-ping.com/… → HTTP 200 in 41 ms`.
    pub(crate) fn line(&self) -> String {
        let result = match (self.ok, self.status, &self.error) {
            (true, Some(s), _) => format!("HTTP {s}"),
            (_, Some(s), Some(e)) => format!("HTTP {s}: {e}"),
            (_, Some(s), None) => format!("HTTP {s}"),
            (_, None, Some(e)) => e.clone(),
            (_, None, None) => "no answer".into(),
        };
        format!(
            "{} ping to {} -> {}{} in {} ms",
            self.kind,
            self.target,
            if self.ok { "" } else { "FAILED: " },
            result,
            self.ms
        )
    }
}

/// The URL key serialized as [`redact`] shows it (`config check`).
fn serialize_shown<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&if url.trim().is_empty() {
        String::new()
    } else {
        redact(url)
    })
}

/// `https://hc-ping.com/…`: the URL without its userinfo, path and query
/// (the path is the ping token). Stricter than [`crate::scrub::url`],
/// which keeps the path.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{port}/…",
                u.scheme(),
                u.host_str().unwrap_or_default()
            )
        }
        Err(_) => "(invalid URL)".into(),
    }
}

/// The URL to ping: the configured one, or `<url>/fail`.
fn ping_url(url: &str, kind: PingKind) -> Result<reqwest::Url> {
    let mut u = reqwest::Url::parse(url.trim())
        .map_err(|_| anyhow::anyhow!("heartbeat.url is not a URL"))?;
    if kind == PingKind::Fail {
        u.path_segments_mut()
            .map_err(|_| anyhow::anyhow!("heartbeat.url cannot take a path"))?
            .pop_if_empty()
            .push("fail");
    }
    Ok(u)
}

/// Sends the ping: `body` is the cycle's summary line. Never longer than
/// `timeout_secs` nor past `deadline`; every failure is in the record.
pub(crate) async fn ping(
    cfg: &HeartbeatConfig,
    kind: PingKind,
    body: &str,
    deadline: tokio::time::Instant,
    now_ms: i64,
    not_ok_streak: u32,
) -> PingRecord {
    let started = StdInstant::now();
    let mut rec = PingRecord {
        at_ms: now_ms,
        kind: kind.as_str().into(),
        target: redact(&cfg.url),
        not_ok_streak,
        ..Default::default()
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let timeout = cfg.timeout_secs.get().min(left);
    if timeout < Duration::from_millis(10) {
        rec.error = Some("not sent: no time left before the cycle deadline".into());
        return rec;
    }
    let send = async {
        let url = ping_url(&cfg.url, kind)?;
        let http = crate::http::client(timeout, true)?;
        let mut text = body.to_string();
        if text.len() > MAX_BODY {
            text = crate::observe::audit::detail(&text);
        }
        let resp = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(text)
            .send()
            .await
            .map_err(|e| match e.is_timeout() {
                true => anyhow::anyhow!("no answer within {} ms", timeout.as_millis()),
                false => anyhow::Error::new(e.without_url()),
            })?;
        let status = resp.status();
        let answer = crate::http::read_text(resp, crate::http::caps::SMALL)
            .await
            .unwrap_or_default();
        Ok::<_, anyhow::Error>((status, answer))
    };
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok((status, answer))) => {
            rec.status = Some(status.as_u16());
            rec.ok = status.is_success();
            if !rec.ok {
                rec.error = Some(crate::observe::audit::detail(answer.trim()));
            }
        }
        Ok(Err(e)) => rec.error = Some(error_line(&e)),
        Err(_) => rec.error = Some(format!("no answer within {} ms", timeout.as_millis())),
    }
    rec.ms = started.elapsed().as_millis() as u64;
    rec
}

/// The error chain in one line, without any URL (reqwest's own message is
/// stripped of it above; the sources never carry one).
fn error_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    crate::observe::audit::detail(&parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_table() {
        use PingKind::*;
        // (overall, streak before, tolerance) -> (ping, streak after)
        let table = [
            (("ok", 5, 2), (Success, 0)),
            (("degraded", 0, 2), (Success, 1)),
            (("degraded", 1, 2), (Success, 2)),
            (("degraded", 2, 2), (Fail, 3)),
            (("degraded", 0, 0), (Fail, 1)),
            (("failed", 0, 2), (Fail, 1)),
            (("failed", 1, 9), (Fail, 2)),
        ];
        for ((overall, before, tol), want) in table {
            assert_eq!(
                decide(overall, before, tol),
                want,
                "{overall} {before} {tol}"
            );
        }
    }

    #[test]
    fn urls_for_success_and_fail_and_what_is_shown() {
        let s = |u: &str, k| ping_url(u, k).unwrap().to_string();
        assert_eq!(
            s("https://hc.example/abc", PingKind::Success),
            "https://hc.example/abc"
        );
        assert_eq!(
            s("https://hc.example/abc", PingKind::Fail),
            "https://hc.example/abc/fail"
        );
        assert_eq!(
            s("https://hc.example/abc/", PingKind::Fail),
            "https://hc.example/abc/fail"
        );
        assert_eq!(
            s("http://127.0.0.1:9/p/abc?rid=1", PingKind::Fail),
            "http://127.0.0.1:9/p/abc/fail?rid=1"
        );
        assert_eq!(
            redact("https://hc.example/secret-uuid"),
            "https://hc.example/…"
        );
        assert_eq!(redact("http://127.0.0.1:8/x"), "http://127.0.0.1:8/…");
    }

    #[test]
    fn config_checks_never_echo_the_url() {
        HeartbeatConfig::default().validate().unwrap();
        let c = HeartbeatConfig {
            url: "ftp://secret-uuid".into(),
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("heartbeat.url") && !e.contains("secret"), "{e}");
        let c = HeartbeatConfig {
            timeout_secs: Secs::new(0),
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }

    #[tokio::test]
    async fn no_time_left_sends_nothing() {
        let cfg = HeartbeatConfig {
            url: "http://127.0.0.1:9/x".into(),
            ..Default::default()
        };
        let past = tokio::time::Instant::now();
        let r = ping(&cfg, PingKind::Success, "cycle ok", past, 1, 0).await;
        assert!(!r.ok && r.error.unwrap().contains("no time left"));
    }
}
