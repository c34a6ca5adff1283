//! A pass-through in front of the real server, on the shared fault layer:
//! every request is recorded and forwarded as it came, and the answer goes
//! back as the server gave it, unless a test has set a fault, a rule or a
//! hold (`proxy.server()`). So the kill points of the fake-Planka suite
//! (hold a card's create until the agent is killed, or serve it and hold
//! the answer) and the outages (refuse, hang) apply to the real server: the
//! side effects that count are the server's own rows.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;

use crate::support::fault::{Req, Service};
use crate::support::harness::{in_background, FakeServer};

/// One request as it passed.
#[derive(Debug, Clone)]
pub struct Passed {
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query, if any.
    pub query: Option<String>,
}

struct Recorder(Arc<Mutex<Vec<Passed>>>);

impl Service for Recorder {
    fn record(&self, req: &Req<'_>) {
        self.0.lock().unwrap().push(Passed {
            method: req.method.to_string(),
            path: req.path().to_string(),
            query: req.uri.query().map(str::to_string),
        });
    }

    /// Planka's error shape.
    fn error(&self, status: StatusCode) -> Response {
        (
            status,
            axum::Json(json!({"code": "E_PROXY_FAULT", "message": "proxy fault"})),
        )
            .into_response()
    }
}

/// The proxy; drop it to stop.
pub struct Proxy {
    /// Its URL (what the agent is configured with).
    pub url: String,
    passed: Arc<Mutex<Vec<Passed>>>,
    server: FakeServer,
}

#[derive(Clone)]
struct Upstream {
    url: String,
    http: reqwest::Client,
}

impl Proxy {
    /// Starts on the background runtime, forwarding to `upstream`.
    pub fn start(upstream: &str) -> Proxy {
        let upstream = Upstream {
            url: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        };
        in_background(move || async move {
            let passed = Arc::new(Mutex::new(Vec::new()));
            let app = Router::new().fallback(forward).with_state(upstream);
            let server = FakeServer::start(app, Arc::new(Recorder(passed.clone()))).await;
            Proxy {
                url: server.url(),
                passed,
                server,
            }
        })
    }

    /// The fault layer.
    pub fn server(&self) -> &FakeServer {
        &self.server
    }

    /// Every request so far.
    pub fn passed(&self) -> Vec<Passed> {
        self.passed.lock().unwrap().clone()
    }

    /// Requests with this method whose path contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.passed()
            .iter()
            .filter(|p| p.method == method && p.path.contains(part))
            .count()
    }

    /// Forgets the requests so far.
    pub fn clear(&self) {
        self.passed.lock().unwrap().clear();
    }
}

async fn forward(
    State(up): State<Upstream>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let url = format!(
        "{}{}",
        up.url,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut req = up.http.request(method, &url).body(body);
    for name in ["authorization", "x-api-key", "content-type"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v);
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let ctype = resp.headers().get("content-type").cloned();
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut out = (status, bytes).into_response();
            if let Some(c) = ctype {
                out.headers_mut().insert("content-type", c);
            }
            out
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("proxy: {e}")).into_response(),
    }
}
