//! HTTP endpoint probes: method, expected status or range, optional body
//! substring and a latency warning, through the one client builder (which
//! enforces the timeout and the TLS choice of the check).

use std::time::Instant;

use anyhow::Result;

use super::{CheckConfig, ExpectStatus, Probe, Status};

/// Requests the check's URL and grades the answer. Connection errors and
/// timeouts are `critical` with the cause: the endpoint is down as far as
/// users are concerned.
pub(crate) async fn probe(check: &CheckConfig) -> Result<Probe> {
    let url = check.url.as_deref().unwrap_or_default();
    let method = check.method.as_deref().unwrap_or("GET");
    let client = crate::http::client(check.timeout(), check.verify_tls.unwrap_or(true))?;
    let m = reqwest::Method::from_bytes(method.as_bytes())?;
    let started = Instant::now();
    let resp = match client.request(m, url).send().await {
        Ok(r) => r,
        Err(e) => {
            let why = if e.is_timeout() {
                format!("no answer within {}s", check.timeout_secs)
            } else if e.is_connect() {
                format!("cannot connect: {}", root_cause(&e))
            } else {
                root_cause(&e)
            };
            return Ok(Probe::new(
                Status::Critical,
                format!("{method} {url}: {why}"),
            ));
        }
    };
    let code = resp.status().as_u16();
    let body = if check.body_contains.is_some() {
        match crate::http::read_prefix(resp, crate::http::caps::HEALTH_BODY).await {
            Ok(b) => Some(b),
            Err(e) => {
                return Ok(Probe::new(
                    Status::Critical,
                    format!(
                        "{method} {url}: HTTP {code}, body unreadable: {}",
                        root_cause(&e)
                    ),
                ))
            }
        }
    } else {
        None
    };
    let ms = started.elapsed().as_millis() as u64;
    let expect = check
        .expect_status
        .clone()
        .unwrap_or(ExpectStatus::Code(200));
    let mut probe = grade(
        &format!("{method} {url}"),
        code,
        body.as_ref().map(|(text, _)| text.as_str()),
        ms,
        expect.range()?,
        check.body_contains.as_deref(),
        check.latency_warn_ms,
    );
    if let (Some((_, true)), Status::Critical) = (&body, probe.status) {
        if probe.reason.contains("body lacks") {
            probe.reason.push_str(&format!(
                " (only the first {} of the body is searched)",
                crate::http::human_bytes(crate::http::caps::HEALTH_BODY)
            ));
        }
    }
    Ok(probe)
}

/// Grades an answer. Pure.
fn grade(
    what: &str,
    code: u16,
    body: Option<&str>,
    latency_ms: u64,
    expect: (u16, u16),
    body_contains: Option<&str>,
    latency_warn_ms: Option<u64>,
) -> Probe {
    let (lo, hi) = expect;
    if !(lo..=hi).contains(&code) {
        let want = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        };
        return Probe::new(
            Status::Critical,
            format!("{what}: HTTP {code}, expected {want}"),
        );
    }
    if let Some(needle) = body_contains {
        if !body.unwrap_or_default().contains(needle) {
            return Probe::new(
                Status::Critical,
                format!("{what}: HTTP {code} but the body lacks '{needle}'"),
            );
        }
    }
    if let Some(warn) = latency_warn_ms {
        if latency_ms >= warn {
            return Probe::new(
                Status::Warn,
                format!("{what}: HTTP {code} in {latency_ms} ms (warn at {warn} ms)"),
            );
        }
    }
    Probe::new(
        Status::Ok,
        format!("{what}: HTTP {code} in {latency_ms} ms"),
    )
}

/// The innermost error message (reqwest's Display is only "error sending
/// request"; the cause says "connection refused" or names the TLS problem).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grading_table() {
        let t = [
            (
                200,
                Some("ok"),
                5,
                (200, 200),
                None,
                None,
                Status::Ok,
                "HTTP 200",
            ),
            (302, None, 5, (200, 399), None, None, Status::Ok, "HTTP 302"),
            (
                500,
                None,
                5,
                (200, 399),
                None,
                None,
                Status::Critical,
                "expected 200-399",
            ),
            (
                404,
                None,
                5,
                (200, 200),
                None,
                None,
                Status::Critical,
                "expected 200",
            ),
            (
                200,
                Some("nope"),
                5,
                (200, 200),
                Some("OK"),
                None,
                Status::Critical,
                "lacks 'OK'",
            ),
            (
                200,
                Some("{\"status\":\"OK\"}"),
                5,
                (200, 200),
                Some("OK"),
                None,
                Status::Ok,
                "200",
            ),
            (
                200,
                None,
                900,
                (200, 200),
                None,
                Some(500),
                Status::Warn,
                "warn at 500 ms",
            ),
            (
                200,
                None,
                100,
                (200, 200),
                None,
                Some(500),
                Status::Ok,
                "100 ms",
            ),
        ];
        for (code, body, ms, exp, needle, warn, status, text) in t {
            let p = grade("GET u", code, body, ms, exp, needle, warn);
            assert_eq!(p.status, status, "{code} {body:?}: {}", p.reason);
            assert!(p.reason.contains(text), "{}", p.reason);
        }
    }

    #[test]
    fn expect_status_spellings() {
        let r = |s: &str| ExpectStatus::Text(s.into()).range();
        assert_eq!(r("200").unwrap(), (200, 200));
        assert_eq!(r("200-399").unwrap(), (200, 399));
        assert_eq!(ExpectStatus::Code(204).range().unwrap(), (204, 204));
        for bad in ["abc", "399-200", "20", "200-", "700"] {
            assert!(r(bad).is_err(), "{bad}");
        }
    }
}
