//! A fake dead-man's-switch service (healthchecks.io's ping API) on
//! 127.0.0.1: `/ping/<uuid>` and `/ping/<uuid>/fail` answer 200 `OK`, any
//! other path 404 `not found`, as the real one does. Every request is
//! recorded with its method, path and body; faults (down, hang, status)
//! come from the shared fault layer through [`FakeHeartbeat::server`].

use std::sync::{Arc, Mutex};

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::fault::{Req, Service};
use super::harness::{in_background, FakeServer};

/// One ping as the service saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// `POST`, `GET`, `HEAD`.
    pub method: String,
    /// The path, e.g. `/ping/2f1c…/fail`.
    pub path: String,
    /// The body (the agent sends its summary line).
    pub body: String,
}

struct Recorder(Arc<Mutex<Vec<Ping>>>);

impl Service for Recorder {
    fn record(&self, req: &Req<'_>) {
        self.0.lock().unwrap().push(Ping {
            method: req.method.to_string(),
            path: req.path().to_string(),
            body: String::from_utf8_lossy(req.body).into_owned(),
        });
    }

    fn error(&self, status: StatusCode) -> Response {
        (status, "error").into_response()
    }
}

/// The fake ping service.
#[derive(Clone)]
pub struct FakeHeartbeat {
    pings: Arc<Mutex<Vec<Ping>>>,
    server: FakeServer,
}

/// The check's uuid in the ping URL.
pub const UUID: &str = "5f0e6a1c-7d2b-4e43-9a51-0c8d2b6e9f17";

impl FakeHeartbeat {
    /// Starts the fake in the current tokio runtime.
    pub async fn start() -> FakeHeartbeat {
        let pings = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(handle);
        let server = FakeServer::start(app, Arc::new(Recorder(pings.clone()))).await;
        FakeHeartbeat { pings, server }
    }

    /// Starts it on the background runtime, for tests of the real binary.
    pub fn start_in_background() -> FakeHeartbeat {
        in_background(FakeHeartbeat::start)
    }

    /// The check's ping URL: `http://127.0.0.1:port/ping/<uuid>`.
    pub fn ping_url(&self) -> String {
        format!("{}/ping/{UUID}", self.server.url())
    }

    /// The server: faults and holds.
    pub fn server(&self) -> &FakeServer {
        &self.server
    }

    /// Every ping so far.
    pub fn pings(&self) -> Vec<Ping> {
        self.pings.lock().unwrap().clone()
    }
}

async fn handle(uri: Uri) -> Response {
    let ok = uri
        .path()
        .strip_prefix("/ping/")
        .is_some_and(|rest| rest == UUID || rest == format!("{UUID}/fail"));
    if ok {
        (StatusCode::OK, "OK").into_response()
    } else {
        (StatusCode::NOT_FOUND, "not found").into_response()
    }
}
