//! Fake HTTP endpoints for the HTTP health checks, on 127.0.0.1.
//!
//! Paths: `/ok` (200 `{"status":"OK"}`), `/slow` (200 after the configured
//! delay), `/hang` (never answers within any check timeout), `/500`
//! (500 with an error body), `/wrong-body` (200 with a maintenance page),
//! `/redirect` (302 to `/ok`; the client follows it) and
//! `/status/{code}`. `/flaky` answers 503 for the next `n` requests (see
//! [`FakeEndpoints::fail_next`]), then 200. `/private` answers 200 only to
//! basic auth `monitor:s3cret-pw` or the header `X-Api-Key: k3y-s3cret`,
//! else 401. `/hostile` answers 500 with terminal control in its body (a
//! screen clear, a bell, a forged line). Every request is recorded.
//! Faults for any path go through the shared fault layer
//! ([`FakeEndpoints::server`]); errors there have an empty body.
//!
//! [`FakeEndpoints::start_tls`] serves the same paths over HTTPS with a
//! self-signed certificate made at start (what an internal service with a
//! home-made certificate looks like to the check).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::fault::{Fault, Match, Req, Service};
use super::harness::FakeServer;

#[derive(Default)]
struct Inner {
    requests: Vec<(String, String)>,
    slow_ms: u64,
}

/// The fake's side of the fault layer.
struct Endpoints(Arc<Mutex<Inner>>);

impl Service for Endpoints {
    fn record(&self, req: &Req<'_>) {
        self.0
            .lock()
            .unwrap()
            .requests
            .push((req.method.to_string(), req.path().to_string()));
    }

    fn error(&self, status: StatusCode) -> Response {
        status.into_response()
    }
}

/// The fake endpoints.
#[derive(Clone)]
pub struct FakeEndpoints {
    base: String,
    inner: Arc<Mutex<Inner>>,
    server: FakeServer,
}

impl FakeEndpoints {
    /// Starts the server in the current tokio runtime.
    pub async fn start() -> FakeEndpoints {
        let inner = new_inner();
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let server = FakeServer::start(app, Arc::new(Endpoints(inner.clone()))).await;
        FakeEndpoints {
            base: server.url(),
            inner,
            server,
        }
    }

    /// Starts the same endpoints over HTTPS (`https://127.0.0.1:port`) in
    /// the current tokio runtime, with a self-signed certificate for
    /// `127.0.0.1` and `localhost` generated now: the name matches, so the
    /// only thing a verifying client can object to is the unknown issuer.
    /// A client that refuses the certificate never reaches the handler, so
    /// its probes are not in [`FakeEndpoints::requests`].
    pub async fn start_tls() -> FakeEndpoints {
        let inner = new_inner();
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let server = FakeServer::start_tls(app, Arc::new(Endpoints(inner.clone()))).await;
        FakeEndpoints {
            base: server.url(),
            inner,
            server,
        }
    }

    /// The server: rules, holds and the fault for every request.
    pub fn server(&self) -> &FakeServer {
        &self.server
    }

    /// The URL of a path, e.g. `url("/hang")`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// How long `/slow` takes.
    pub fn set_slow_ms(&self, ms: u64) {
        self.inner.lock().unwrap().slow_ms = ms;
    }

    /// `/flaky` fails the next `n` requests.
    pub fn fail_next(&self, n: u32) {
        self.server
            .fault_next(n, Match::path("/flaky"), Fault::Status(503));
    }

    /// `(method, path)` of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.inner.lock().unwrap().requests.clone()
    }
}

fn new_inner() -> Arc<Mutex<Inner>> {
    Arc::new(Mutex::new(Inner {
        slow_ms: 300,
        ..Inner::default()
    }))
}

/// What `/private` accepts.
pub const PRIVATE_BASIC: (&str, &str) = ("monitor", "s3cret-pw");
/// The API key `/private` accepts in `X-Api-Key`.
pub const PRIVATE_KEY: &str = "k3y-s3cret";
/// The body of `/hostile`.
pub const HOSTILE_BODY: &str = "\u{1b}[2J\u{1b}[31mboom\u{7}\nok    config  forged line";

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let slow_ms = inner.lock().unwrap().slow_ms;
    let json = [(header::CONTENT_TYPE, "application/json")];
    match uri.path() {
        "/ok" => (json, r#"{"status":"OK"}"#).into_response(),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(slow_ms)).await;
            (json, r#"{"status":"OK"}"#).into_response()
        }
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        "/500" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json,
            r#"{"id":"api.context.500","message":"internal error","status_code":500}"#,
        )
            .into_response(),
        "/wrong-body" => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>Down for maintenance</body></html>",
        )
            .into_response(),
        "/redirect" => (StatusCode::FOUND, [(header::LOCATION, "/ok")]).into_response(),
        "/flaky" => (json, r#"{"status":"OK"}"#).into_response(),
        "/private" => {
            // base64 of PRIVATE_BASIC joined by ':'.
            let basic = "Basic bW9uaXRvcjpzM2NyZXQtcHc=";
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            if header("authorization") == Some(basic) || header("x-api-key") == Some(PRIVATE_KEY) {
                (json, r#"{"status":"OK"}"#).into_response()
            } else {
                StatusCode::UNAUTHORIZED.into_response()
            }
        }
        "/hostile" => (StatusCode::INTERNAL_SERVER_ERROR, HOSTILE_BODY).into_response(),
        p => match p
            .strip_prefix("/status/")
            .and_then(|c| c.parse::<u16>().ok())
        {
            Some(code) => StatusCode::from_u16(code)
                .unwrap_or(StatusCode::BAD_REQUEST)
                .into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
    }
}
