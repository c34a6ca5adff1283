//! Mattermost's failures as the kinds callers branch on (401 → re-login,
//! 404 → re-resolve, 429 → back off), each naming the endpoint and the
//! server's own `{id, message}` when it sent one; never a token or a URL's
//! query.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// What went wrong, for callers that must react differently per case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MmErrorKind {
    /// 401 after the one allowed re-login (or with a token that cannot re-login).
    Unauthorized,
    /// 403: the agent lacks permission, or is not a member (of a team).
    Forbidden,
    /// 404: the team/channel/post id is stale; re-resolve it.
    NotFound,
    /// 429 whose wait would end after the deadline; try again next cycle.
    RateLimited {
        /// The server's requested wait, when it said.
        retry_after: Option<Duration>,
    },
    /// Any other non-success status.
    Status(u16),
    /// The request did not finish within the client timeout.
    Timeout,
    /// Connection refused, reset, DNS, TLS: the server is unreachable.
    Transport,
    /// The server answered 2xx with a body we could not parse.
    BadResponse,
    /// Local trouble before any request: missing secret, unusable token cache.
    Credentials,
}

/// An error of one Mattermost call, naming the endpoint and what happened.
#[derive(Debug, Clone)]
pub struct MmError {
    /// Why it failed, for branching.
    pub kind: MmErrorKind,
    /// "METHOD URL" of the failed call (never with secrets).
    pub(crate) endpoint: String,
    /// Human-readable detail (status, server message, cause).
    pub(crate) detail: String,
}

impl MmError {
    pub(super) fn new(kind: MmErrorKind, endpoint: &str, detail: impl Into<String>) -> Self {
        MmError {
            kind,
            endpoint: endpoint.to_string(),
            detail: detail.into(),
        }
    }

    /// True when the server could not be reached at all (down, hanging):
    /// the cycle skips the Mattermost stage instead of trying every team.
    pub fn is_unreachable(&self) -> bool {
        matches!(self.kind, MmErrorKind::Transport | MmErrorKind::Timeout)
    }
}

impl fmt::Display for MmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.endpoint, self.detail)
    }
}

impl std::error::Error for MmError {}

pub(super) fn transport_error(endpoint: &str, e: reqwest::Error) -> MmError {
    let e = e.without_url();
    if e.is_timeout() {
        MmError::new(
            MmErrorKind::Timeout,
            endpoint,
            "timed out (is Mattermost hanging?)",
        )
    } else {
        let mut detail = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            src = s.source();
        }
        MmError::new(
            MmErrorKind::Transport,
            endpoint,
            format!("unreachable ({detail})"),
        )
    }
}

/// Maps a non-success status to an error kind, with the server's own
/// `{id, message}` when the body has one.
pub(super) fn status_error(endpoint: &str, status: u16, body: &[u8]) -> MmError {
    let kind = match status {
        401 => MmErrorKind::Unauthorized,
        403 => MmErrorKind::Forbidden,
        404 => MmErrorKind::NotFound,
        429 => MmErrorKind::RateLimited { retry_after: None },
        s => MmErrorKind::Status(s),
    };
    let server = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            let id = v.get("id").and_then(Value::as_str).unwrap_or("");
            let msg = v.get("message").and_then(Value::as_str)?;
            Some(if id.is_empty() {
                msg.to_string()
            } else {
                format!("{id}: {msg}")
            })
        })
        .unwrap_or_else(|| snippet(body));
    let detail = if server.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} ({server})")
    };
    MmError::new(kind, endpoint, detail)
}

pub(super) fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
