//! HTTP endpoint probes: method, expected status or range, optional body
//! substring and a latency warning, through the one client builder (which
//! enforces the timeout and the TLS choice of the check).
//!
//! An endpoint behind authentication gets its credentials from an
//! owner-only file (`basic_auth_file`, `header_file`), read at each probe.
//! The URL is shown (in the reason, and so in alerts, tasks, the ledger,
//! the audit trail, the log, `status` and `health`) as [`crate::scrub::url`]
//! shows it: a password written into the URL is sent, never shown.

use std::time::Instant;

use anyhow::{Context, Result};
use reqwest::header::{HeaderName, HeaderValue};

use super::{CheckConfig, ExpectStatus, Probe, Status};
use crate::secret::Secret;

/// Requests the check's URL and grades the answer. Connection errors and
/// timeouts are `critical` with the cause: the endpoint is down as far as
/// users are concerned. Credentials that cannot be read make the result
/// `unknown`: the endpoint was not asked.
pub(crate) async fn probe(check: &CheckConfig) -> Result<Probe> {
    let url = check.url.as_deref().unwrap_or_default();
    let shown = crate::scrub::url(url);
    let method = check.method.as_deref().unwrap_or("GET");
    let client = crate::http::client(check.timeout(), check.verify_tls.unwrap_or(true))?;
    let m = reqwest::Method::from_bytes(method.as_bytes())?;
    let request = match authenticate(client.request(m, url), check) {
        Ok(r) => r,
        Err(e) => {
            return Ok(Probe::new(
                Status::Unknown,
                format!("{method} {shown}: not requested: {e:#}"),
            ))
        }
    };
    let started = Instant::now();
    let resp = match request.send().await {
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
                format!("{method} {shown}: {}", crate::scrub::text(&why)),
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
                        "{method} {shown}: HTTP {code}, body unreadable: {}",
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
        &format!("{method} {shown}"),
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

/// Adds the check's credentials, read from their owner-only file: basic
/// auth (`user:password`) or one header (`Name: value`). Errors name the
/// key and the file, never the value.
fn authenticate(
    req: reqwest::RequestBuilder,
    check: &CheckConfig,
) -> Result<reqwest::RequestBuilder> {
    if let Some(path) = &check.basic_auth_file {
        let secret = Secret::from_file(path).context("basic_auth_file")?;
        let (user, password) = secret.expose().split_once(':').with_context(|| {
            format!(
                "basic_auth_file: {} holds no ':' between the user and the password",
                path.display()
            )
        })?;
        return Ok(req.basic_auth(user, Some(password)));
    }
    if let Some(path) = &check.header_file {
        let secret = Secret::from_file(path).context("header_file")?;
        let not_a_header = || {
            format!(
                "header_file: {} does not hold one header line like 'Authorization: Bearer …'",
                path.display()
            )
        };
        let (name, value) = secret.expose().split_once(':').with_context(not_a_header)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).with_context(not_a_header)?;
        let mut value = HeaderValue::from_str(value.trim()).with_context(not_a_header)?;
        value.set_sensitive(true);
        return Ok(req.header(name, value));
    }
    Ok(req)
}

/// What an incident brief shows of an endpoint: one request made for the
/// brief with the check's method, URL and TLS choice (the probe keeps
/// nothing of the answer). The body and the error are outside text: the
/// brief scrubs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpEvidence {
    /// `GET https://host/path`, the URL without credentials or secret
    /// query values.
    pub(crate) what: String,
    /// The answer, or why there was none.
    pub(crate) answer: std::result::Result<HttpAnswer, String>,
}

/// An endpoint's answer as a brief shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpAnswer {
    /// The status code.
    pub(crate) status: u16,
    /// Time to the response head.
    pub(crate) latency_ms: u64,
    /// The `Content-Type`, when sent.
    pub(crate) content_type: Option<String>,
    /// The first [`crate::http::caps::BRIEF_BODY`] bytes of a text body.
    pub(crate) body: Option<String>,
    /// Why no body is shown (empty, not text, unreadable) or that it is
    /// only its start.
    pub(crate) body_note: Option<String>,
    /// When the server's TLS certificate expires (epoch ms), or why that is
    /// not known; `None` for plain HTTP.
    pub(crate) cert_expiry: Option<std::result::Result<i64, String>>,
}

/// Requests the check's URL once for a brief, within the check's timeout
/// and by `by`, whichever is sooner. reqwest (rustls) hands over the
/// server's leaf certificate, so an `https://` answer says when it
/// expires; a certificate the check refuses (expired, unknown issuer)
/// gives no answer, and the error says why.
pub(crate) async fn evidence(check: &CheckConfig, by: tokio::time::Instant) -> HttpEvidence {
    let url = check.url.as_deref().unwrap_or_default();
    let method = check.method.as_deref().unwrap_or("GET");
    let what = format!("{method} {}", crate::scrub::url(url));
    let ask = async {
        let client =
            crate::http::client_with_tls_info(check.timeout(), check.verify_tls.unwrap_or(true))
                .map_err(|e| format!("{e:#}"))?;
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let request = authenticate(client.request(m, url), check).map_err(|e| format!("{e:#}"))?;
        let resp = request.send().await.map_err(|e| root_cause(&e))?;
        let latency_ms = started.elapsed().as_millis() as u64;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let cert_expiry = url.starts_with("https://").then(|| {
            resp.extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|i| i.peer_certificate())
                .ok_or_else(|| "the server's certificate was not handed over".to_string())
                .and_then(cert_not_after_ms)
        });
        let (body, body_note) =
            match crate::http::read_prefix(resp, crate::http::caps::BRIEF_BODY).await {
                Err(e) => (None, Some(format!("body unreadable: {}", root_cause(&e)))),
                Ok((text, _)) if text.is_empty() => (None, Some("empty body".to_string())),
                Ok((text, more)) if is_text(content_type.as_deref(), &text) => {
                    let note = more.then(|| {
                        format!(
                            "its first {}",
                            crate::http::human_bytes(crate::http::caps::BRIEF_BODY)
                        )
                    });
                    (Some(text), note)
                }
                Ok(_) => (
                    None,
                    Some(format!(
                        "not text ({})",
                        content_type.as_deref().unwrap_or("no Content-Type")
                    )),
                ),
            };
        Ok(HttpAnswer {
            status,
            latency_ms,
            content_type,
            body,
            body_note,
            cert_expiry,
        })
    };
    let answer = match tokio::time::timeout_at(by, ask).await {
        Ok(a) => a,
        Err(_) => Err("no answer within the brief's time budget".to_string()),
    };
    HttpEvidence { what, answer }
}

/// Whether a body is text a person can read in a brief: a textual
/// `Content-Type`, or none and no binary bytes.
fn is_text(content_type: Option<&str>, body: &str) -> bool {
    match content_type.map(|c| c.to_ascii_lowercase()) {
        Some(c) => {
            let essence = c.split(';').next().unwrap_or("").trim().to_string();
            essence.starts_with("text/")
                || [
                    "json",
                    "xml",
                    "javascript",
                    "x-www-form-urlencoded",
                    "problem",
                ]
                .iter()
                .any(|t| essence.contains(t))
        }
        None => !body.contains('\u{FFFD}') && !body.contains('\0'),
    }
}

/// The `notAfter` of a DER certificate, epoch ms.
fn cert_not_after_ms(der: &[u8]) -> std::result::Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the server's certificate is unreadable: {e}"))?;
    Ok(cert.validity().not_after.timestamp() * 1000)
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
    fn text_bodies_are_told_from_binary_ones() {
        let t = [
            (Some("text/html; charset=utf-8"), "<p>down</p>", true),
            (Some("application/json"), "{}", true),
            (Some("application/problem+json"), "{}", true),
            (Some("image/png"), "x", false),
            (Some("application/octet-stream"), "x", false),
            (None, "plain words", true),
            (None, "bin\u{FFFD}ary", false),
        ];
        for (ct, body, want) in t {
            assert_eq!(is_text(ct, body), want, "{ct:?} {body:?}");
        }
    }

    #[test]
    fn certificate_expiry_is_read_from_der() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 4);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ms = cert_not_after_ms(cert.der().as_ref()).unwrap();
        assert_eq!(crate::time::rfc3339_ms(ms), "2031-07-04T00:00:00Z");
        assert!(cert_not_after_ms(b"not a certificate").is_err());
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
