//! The one place that builds HTTP clients and reads HTTP bodies.
//!
//! Every network call of a cycle must end within the cycle's deadline even
//! when a dependency hangs, so no client is built without a total timeout
//! and a connect timeout; and every body is read through [`read_body`]
//! with a cap chosen per use, so an endless or huge answer costs a timeout
//! or an error, never memory.

use std::time::Duration;

use anyhow::{Context, Result};

/// Caps per use, in bytes.
pub(crate) mod caps {
    /// A Mattermost answer: up to 1000 posts of up to 16,383 characters.
    pub(crate) const MATTERMOST: usize = 16 * 1024 * 1024;
    /// A Planka answer: a board with its lists, labels and cards.
    pub(crate) const PLANKA: usize = 16 * 1024 * 1024;
    /// An LLM answer: a label or a reply of a few hundred tokens, or the
    /// model list.
    pub(crate) const LLM: usize = 1024 * 1024;
    /// The part of a checked page searched for `body_contains`.
    pub(crate) const HEALTH_BODY: usize = 1024 * 1024;
    /// An answer nobody reads beyond an error line (intel, heartbeat).
    pub(crate) const SMALL: usize = 64 * 1024;
    /// The start of a failing endpoint's body shown in an incident brief.
    pub(crate) const BRIEF_BODY: usize = 512;
}

/// Builds a reqwest client whose every request ends after `timeout`.
///
/// `verify_tls = false` exists only for HTTP health checks that the operator
/// marked as self-signed; every API client passes `true`.
pub fn client(timeout: Duration, verify_tls: bool) -> Result<reqwest::Client> {
    build(timeout, verify_tls, false)
}

/// [`client`], and every answer carries the server's TLS certificate
/// (`reqwest::tls::TlsInfo`): for an incident brief that shows when an
/// endpoint's certificate expires.
pub(crate) fn client_with_tls_info(timeout: Duration, verify_tls: bool) -> Result<reqwest::Client> {
    build(timeout, verify_tls, true)
}

// The one builder clippy.toml allows: every client gets its timeouts here.
#[allow(clippy::disallowed_methods)]
fn build(timeout: Duration, verify_tls: bool, tls_info: bool) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("ops-agent/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(!verify_tls)
        .tls_info(tls_info)
        .build()
        .context("building the HTTP client")
}

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The body is longer than the cap (by its Content-Length, or as read).
    TooLarge {
        /// The cap that was hit, in bytes.
        cap: usize,
    },
    /// The connection failed or timed out while reading.
    Transport(reqwest::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { cap } => write!(
                f,
                "the answer is larger than the {} the agent reads for this call; not read further",
                human_bytes(*cap)
            ),
            BodyError::Transport(e) => write!(f, "reading the answer: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// Reads `resp`'s body, at most `cap` bytes; a longer one (a Content-Length
/// above the cap, or more bytes arriving) stops the read with
/// [`BodyError::TooLarge`].
pub(crate) async fn read_body(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge { cap });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first `cap` bytes of `resp`'s body and whether there was more (the
/// rest is not read): for a page searched for a marker.
pub(crate) async fn read_prefix(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<(String, bool), reqwest::Error> {
    let mut body = Vec::new();
    let mut more = false;
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            more = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok((String::from_utf8_lossy(&body).into_owned(), more))
}

/// [`read_body`] as (lossy) text.
pub(crate) async fn read_text(resp: reqwest::Response, cap: usize) -> Result<String, BodyError> {
    let bytes = read_body(resp, cap).await?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// `16 MiB`, `64 KiB`, `512 bytes`.
pub(crate) fn human_bytes(n: usize) -> String {
    if n >= 1024 * 1024 && n % (1024 * 1024) == 0 {
        format!("{} MiB", n / (1024 * 1024))
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers one request with `head` then `body_len` bytes
    /// of `x` (chunked when `endless`), and counts what it could send.
    async fn serve(content_length: Option<usize>, endless: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let head = match content_length {
                Some(n) => format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n"),
                None => "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_string(),
            };
            let _ = s.write_all(head.as_bytes()).await;
            let chunk = vec![b'x'; 64 * 1024];
            loop {
                let framed = if content_length.is_none() {
                    let mut f = format!("{:x}\r\n", chunk.len()).into_bytes();
                    f.extend_from_slice(&chunk);
                    f.extend_from_slice(b"\r\n");
                    f
                } else {
                    chunk.clone()
                };
                if s.write_all(&framed).await.is_err() || !endless {
                    break;
                }
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn an_endless_body_stops_at_the_cap() {
        let url = serve(None, true).await;
        let resp = client(Duration::from_secs(5), true)
            .unwrap()
            .get(&url)
            .send()
            .await
            .unwrap();
        let err = read_body(resp, 256 * 1024).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { cap: 262144 }), "{err}");
        assert!(err.to_string().contains("256 KiB"), "{err}");
    }

    #[tokio::test]
    async fn a_declared_length_above_the_cap_is_refused_before_reading() {
        let url = serve(Some(10 * 1024 * 1024 * 1024), true).await;
        let resp = client(Duration::from_secs(5), true)
            .unwrap()
            .get(&url)
            .send()
            .await
            .unwrap();
        let err = read_body(resp, 1024).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { cap: 1024 }), "{err}");
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole() {
        let url = serve(Some(64 * 1024), false).await;
        let resp = client(Duration::from_secs(5), true)
            .unwrap()
            .get(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(read_body(resp, 1024 * 1024).await.unwrap().len(), 64 * 1024);
    }
}
