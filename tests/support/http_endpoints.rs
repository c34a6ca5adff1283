//! Fake HTTP endpoints for the HTTP health checks, on 127.0.0.1.
//!
//! Paths: `/ok` (200 `{"status":"OK"}`), `/slow` (200 after the configured
//! delay), `/hang` (never answers within any check timeout), `/500`
//! (500 with an error body), `/wrong-body` (200 with a maintenance page),
//! `/redirect` (302 to `/ok`; the client follows it) and
//! `/status/{code}`. `/flaky` answers 503 for the next `n` requests (see
//! [`FakeEndpoints::fail_next`]), then 200. Every request is recorded.
//!
//! A self-signed TLS endpoint is not provided: generating a certificate
//! needs a crate (rcgen) that is not among the dependencies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

#[derive(Default)]
struct Inner {
    requests: Vec<(String, String)>,
    slow_ms: u64,
    flaky_left: u32,
}

/// The fake endpoints.
#[derive(Clone)]
pub struct FakeEndpoints {
    base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeEndpoints {
    /// Starts the server in the current tokio runtime.
    pub async fn start() -> FakeEndpoints {
        let inner = Arc::new(Mutex::new(Inner {
            slow_ms: 300,
            ..Inner::default()
        }));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeEndpoints { base, inner }
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
        self.inner.lock().unwrap().flaky_left = n;
    }

    /// `(method, path)` of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.inner.lock().unwrap().requests.clone()
    }
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, method: Method, uri: Uri) -> Response {
    let (slow_ms, flaky) = {
        let mut g = inner.lock().unwrap();
        g.requests
            .push((method.to_string(), uri.path().to_string()));
        let flaky = uri.path() == "/flaky" && g.flaky_left > 0;
        if flaky {
            g.flaky_left -= 1;
        }
        (g.slow_ms, flaky)
    };
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
        "/flaky" if flaky => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "/flaky" => (json, r#"{"status":"OK"}"#).into_response(),
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
