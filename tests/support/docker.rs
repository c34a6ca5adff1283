//! A fake Docker Engine API on 127.0.0.1 speaking the real JSON, for the
//! default test tier (bollard connects to it over plain HTTP).
//!
//! Serves `GET /_ping`, `/version`, `/containers/json`,
//! `/containers/{id}/json`, `/containers/{id}/logs` and `POST
//! /containers/{id}/{restart,start,stop}`, with and without a `/v1.xx`
//! prefix. Like Debian's dockerd 20.10 it
//! reports API 1.41 and answers 400 "client version … is too new" to a
//! newer prefix, so a client that forgets to pin the version fails here.
//! Containers keep state like the engine: a restart moves `StartedAt`,
//! resets `RestartCount` to 0 (only the engine's restart policy counts, and
//! dockerd resets the count on a manual start) and either fixes the
//! container or leaves it down; [`FakeContainer::crash`] plays the restart
//! policy restarting a crashing container (`restarting`, the count up, the
//! exit code kept). Containers are found like dockerd finds them: the full
//! id, then the exact name, then a unique id prefix (so a short hex name
//! that names no container reaches another one). Every request is recorded. Faults go
//! through the shared fault layer ([`FakeDocker::set_fault`]) with the
//! engine's `{"message"}` body.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use super::fault::{Fault, Req, Service};
use super::harness::{dead_addr, in_background, FakeServer};

/// What a restart (or start) does to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRestart {
    /// It comes up running (and healthy, if it has a healthcheck).
    Fixes,
    /// It starts and dies at once: exited with code 1, `StartedAt` moved.
    StaysDown,
    /// It comes up with its healthcheck `starting`.
    Starting,
}

/// One fake container.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    /// Name without the leading slash.
    pub name: String,
    /// 64-hex id.
    pub id: String,
    /// `State.Status`.
    pub status: String,
    /// `State.Health.Status`, `None` = no healthcheck.
    pub health: Option<String>,
    /// `State.ExitCode`.
    pub exit_code: i64,
    /// `RestartCount`.
    pub restart_count: i64,
    /// Starts so far (drives `StartedAt`).
    pub starts: u32,
    /// What a restart does.
    pub on_restart: OnRestart,
    /// The next this-many inspects report `exited` (a blip), then the real state.
    pub blips: u32,
    /// `HostConfig.RestartPolicy.Name`: `no`, `always`, `unless-stopped`,
    /// `on-failure`.
    pub restart_policy: String,
    /// Its log: `(stream, line)`, 1 = stdout, 2 = stderr, oldest first.
    pub logs: Vec<(u8, String)>,
    /// Started with a TTY: the log is raw, not multiplexed.
    pub tty: bool,
    /// The log stream sends the entries, then hangs without ending.
    pub logs_hang: bool,
    /// `State.OOMKilled`.
    pub oom_killed: bool,
}

impl FakeContainer {
    fn new(name: &str, status: &str, health: Option<&str>) -> FakeContainer {
        let id: String = format!("{:0<64}", hex(name));
        FakeContainer {
            name: name.into(),
            id,
            status: status.into(),
            health: health.map(str::to_string),
            exit_code: if status == "exited" { 137 } else { 0 },
            restart_count: 0,
            starts: 1,
            on_restart: OnRestart::Fixes,
            blips: 0,
            restart_policy: "no".into(),
            logs: Vec::new(),
            tty: false,
            logs_hang: false,
            oom_killed: false,
        }
    }

    /// Adds lines to its log on stdout.
    pub fn logging(mut self, lines: &[&str]) -> FakeContainer {
        self.logs
            .extend(lines.iter().map(|l| (1, format!("{l}\n"))));
        self
    }

    /// Adds lines to its log on stderr.
    pub fn logging_err(mut self, lines: &[&str]) -> FakeContainer {
        self.logs
            .extend(lines.iter().map(|l| (2, format!("{l}\n"))));
        self
    }

    /// Running, no healthcheck.
    pub fn running(name: &str) -> FakeContainer {
        FakeContainer::new(name, "running", None)
    }

    /// Running, healthcheck passing.
    pub fn healthy(name: &str) -> FakeContainer {
        FakeContainer::new(name, "running", Some("healthy"))
    }

    /// Running, healthcheck failing.
    pub fn unhealthy(name: &str) -> FakeContainer {
        FakeContainer::new(name, "running", Some("unhealthy"))
    }

    /// Running, healthcheck not passed yet.
    pub fn starting(name: &str) -> FakeContainer {
        FakeContainer::new(name, "running", Some("starting"))
    }

    /// Exited with 137.
    pub fn exited(name: &str) -> FakeContainer {
        FakeContainer::new(name, "exited", None)
    }

    /// Sets what a restart does.
    pub fn on_restart(mut self, r: OnRestart) -> FakeContainer {
        self.on_restart = r;
        self
    }

    /// Sets the restart policy (`always`, `unless-stopped`, …).
    pub fn policy(mut self, name: &str) -> FakeContainer {
        self.restart_policy = name.into();
        self
    }

    /// Sets the id (64 hex digits; a shorter one is padded with zeros).
    pub fn id(mut self, id: &str) -> FakeContainer {
        self.id = format!("{id:0<64}");
        self
    }

    /// The engine's restart policy restarted the container `n` times, each
    /// run exiting with `exit_code` at once: `RestartCount` up by `n`,
    /// `StartedAt` moved, and the container caught between two runs
    /// (`restarting`, as dockerd shows it while the policy waits).
    pub fn crash(&mut self, n: u32, exit_code: i64) {
        self.restart_count += i64::from(n);
        self.starts += n;
        self.status = "restarting".into();
        self.exit_code = exit_code;
    }

    fn started_at(&self) -> String {
        format!(
            "2024-05-01T10:{:02}:00.{:09}Z",
            self.starts % 60,
            self.starts
        )
    }

    /// A start or restart by a client (not the restart policy): dockerd
    /// resets `RestartCount`.
    fn restart(&mut self) {
        self.starts += 1;
        self.restart_count = 0;
        match self.on_restart {
            OnRestart::Fixes => {
                self.status = "running".into();
                self.exit_code = 0;
                if self.health.is_some() {
                    self.health = Some("healthy".into());
                }
            }
            OnRestart::StaysDown => {
                self.status = "exited".into();
                self.exit_code = 1;
            }
            OnRestart::Starting => {
                self.status = "running".into();
                self.exit_code = 0;
                self.health = Some("starting".into());
            }
        }
    }

    fn inspect(&mut self) -> Value {
        let (status, exit) = if self.blips > 0 {
            self.blips -= 1;
            ("exited".to_string(), 1)
        } else {
            (self.status.clone(), self.exit_code)
        };
        let running = status == "running";
        // dockerd keeps `Running` true while the restart policy waits.
        let mut state = json!({
            "Status": status, "Running": running || status == "restarting", "Paused": false,
            "Restarting": status == "restarting", "OOMKilled": self.oom_killed, "Dead": false,
            "Pid": if running { 4242 } else { 0 }, "ExitCode": exit, "Error": "",
            "StartedAt": self.started_at(),
            "FinishedAt": if running { "0001-01-01T00:00:00Z".to_string() } else { self.started_at() },
        });
        if let Some(h) = &self.health {
            state["Health"] = json!({
                "Status": h,
                "FailingStreak": if h == "unhealthy" { 3 } else { 0 },
                "Log": [{"Start": "2024-05-01T10:00:01.0Z", "End": "2024-05-01T10:00:01.1Z",
                          "ExitCode": if h == "unhealthy" { 1 } else { 0 },
                          "Output": if h == "unhealthy" { "curl: (7) Failed to connect\n" } else { "ok\n" }}],
            });
        }
        json!({
            "Id": self.id, "Created": "2024-05-01T09:59:59.0Z", "Path": "/entrypoint.sh",
            "Args": [], "State": state, "Image": "sha256:0123", "Name": format!("/{}", self.name),
            "RestartCount": self.restart_count, "Driver": "overlay2", "Platform": "linux",
            "HostConfig": {"RestartPolicy": {"Name": self.restart_policy, "MaximumRetryCount": 0}},
            "Config": {"Image": format!("{}:latest", self.name), "Labels": {}, "Tty": self.tty},
        })
    }

    fn summary(&self) -> Value {
        json!({
            "Id": self.id, "Names": [format!("/{}", self.name)],
            "Image": format!("{}:latest", self.name), "State": self.status,
            "Status": match self.status.as_str() {
                "running" => "Up 5 minutes".to_string(),
                "restarting" => format!("Restarting ({}) 1 second ago", self.exit_code),
                _ => format!("Exited ({}) 1 minute ago", self.exit_code),
            },
            "Labels": {},
        })
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// GET, POST…
    pub method: String,
    /// The path as sent (with any version prefix).
    pub path: String,
    /// The query string.
    pub query: String,
    /// The body.
    pub body: String,
}

#[derive(Default)]
struct Inner {
    containers: BTreeMap<String, FakeContainer>,
    requests: Vec<Recorded>,
}

/// The fake's side of the fault layer.
struct Engine(Arc<Mutex<Inner>>);

/// The fake engine; clones share it, the last one dropped stops it.
#[derive(Clone)]
pub struct FakeDocker {
    inner: Arc<Mutex<Inner>>,
    server: FakeServer,
}

impl FakeDocker {
    /// Starts the engine on 127.0.0.1:0 inside the current tokio runtime.
    pub async fn start() -> FakeDocker {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let server = FakeServer::start(app, Arc::new(Engine(inner.clone()))).await;
        FakeDocker { inner, server }
    }

    /// Starts the engine behind TLS with `config` (the `tcp://` address is
    /// then an HTTPS one, as dockerd with `--tlsverify` serves it).
    pub async fn start_tls(config: tokio_rustls::rustls::ServerConfig) -> FakeDocker {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let server = FakeServer::start_with_tls(app, Arc::new(Engine(inner.clone())), config).await;
        FakeDocker { inner, server }
    }

    /// Starts the engine on the background runtime, for tests that run the
    /// real binary with `std::process::Command`.
    pub fn start_in_background() -> FakeDocker {
        in_background(FakeDocker::start)
    }

    /// `DOCKER_HOST`-style address of the fake (`tcp://127.0.0.1:port`).
    pub fn host(&self) -> String {
        format!("tcp://{}", self.server.addr())
    }

    /// An address where nothing listens (for "Docker unreachable").
    pub async fn unreachable_host() -> String {
        format!("tcp://{}", dead_addr())
    }

    /// The server: rules, holds and the fault for every request.
    pub fn server(&self) -> &FakeServer {
        &self.server
    }

    /// Sets the fault for every request ([`Fault::Refuse`]: down).
    pub fn set_fault(&self, fault: Fault) {
        self.server.set_fault(fault);
    }

    /// Behave again.
    pub fn clear_fault(&self) {
        self.server.clear_fault();
    }

    /// Adds or replaces a container.
    pub fn add(&self, c: FakeContainer) {
        self.inner
            .lock()
            .unwrap()
            .containers
            .insert(c.name.clone(), c);
    }

    /// Removes a container (it is then "missing").
    pub fn remove(&self, name: &str) {
        self.inner.lock().unwrap().containers.remove(name);
    }

    /// The next `n` inspects of `name` report it exited, then the real state.
    pub fn blip(&self, name: &str, n: u32) {
        if let Some(c) = self.inner.lock().unwrap().containers.get_mut(name) {
            c.blips = n;
        }
    }

    /// Changes a container in place.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut FakeContainer)) {
        if let Some(c) = self.inner.lock().unwrap().containers.get_mut(name) {
            f(c);
        }
    }

    /// A container's current state.
    pub fn container(&self, name: &str) -> Option<FakeContainer> {
        self.inner.lock().unwrap().containers.get(name).cloned()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// `name`'s log stream sends its entries and then hangs.
    pub fn hang_logs(&self, name: &str) {
        self.update(name, |c| c.logs_hang = true);
    }

    /// How many restart requests reached container `name`, addressed by its
    /// name, its id or a prefix of it (as dockerd resolves them).
    pub fn restarts(&self, name: &str) -> usize {
        let g = self.inner.lock().unwrap();
        g.requests
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/restart"))
            .filter_map(|r| {
                let path = strip_version(&r.path).ok()?;
                let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                match parts.as_slice() {
                    ["containers", id, "restart"] => resolve(&g.containers, id),
                    _ => None,
                }
            })
            .filter(|n| n == name)
            .count()
    }
}

fn engine_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

/// Splits an optional `/v1.xx` prefix off; `Err` (the engine's message) for
/// a version newer than 1.41, like dockerd 20.10.
fn strip_version(path: &str) -> Result<&str, String> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(path);
    };
    let Some((ver, tail)) = rest.split_once('/') else {
        return Ok(path);
    };
    let Some((maj, min)) = ver.split_once('.') else {
        return Ok(path);
    };
    match (maj.parse::<u32>(), min.parse::<u32>()) {
        (Ok(1), Ok(m)) if m > 41 => Err(format!(
            "client version {ver} is too new. Maximum supported API version is 1.41"
        )),
        (Ok(_), Ok(_)) => Ok(&path[path.len() - tail.len() - 1..]),
        _ => Ok(path),
    }
}

impl Service for Engine {
    fn record(&self, req: &Req<'_>) {
        self.0.lock().unwrap().requests.push(Recorded {
            method: req.method.to_string(),
            path: req.path().to_string(),
            query: req.uri.query().unwrap_or("").to_string(),
            body: String::from_utf8_lossy(req.body).into_owned(),
        });
    }

    fn error(&self, status: StatusCode) -> Response {
        engine_error(status, status.canonical_reason().unwrap_or("error"))
    }
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, method: Method, uri: Uri) -> Response {
    let path = match strip_version(uri.path()) {
        Ok(p) => p.to_string(),
        Err(msg) => return engine_error(StatusCode::BAD_REQUEST, &msg),
    };
    let mut g = inner.lock().unwrap();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET" | "HEAD", ["_ping"]) => (
            [
                ("API-Version", "1.41"),
                ("Docker-Experimental", "false"),
                (header::CONTENT_TYPE.as_str(), "text/plain; charset=utf-8"),
            ],
            "OK",
        )
            .into_response(),
        ("GET", ["version"]) => axum::Json(json!({
            "Platform": {"Name": ""}, "Version": "20.10.24+dfsg1", "ApiVersion": "1.41",
            "MinAPIVersion": "1.12", "GitCommit": "5d6db84", "GoVersion": "go1.19.8",
            "Os": "linux", "Arch": "amd64", "KernelVersion": "6.1.0", "BuildTime": "2023-05-18T08:38:34.000000000+00:00",
            "Components": [{"Name": "Engine", "Version": "20.10.24+dfsg1", "Details": {"ApiVersion": "1.41"}}],
        }))
        .into_response(),
        ("GET", ["containers", "json"]) => {
            let all = uri.query().unwrap_or("").contains("all=true")
                || uri.query().unwrap_or("").contains("all=1");
            let list: Vec<Value> = g
                .containers
                .values()
                .filter(|c| all || c.status == "running")
                .map(FakeContainer::summary)
                .collect();
            axum::Json(list).into_response()
        }
        ("GET", ["containers", id, "json"]) => match find(&mut g, id) {
            Some(c) => axum::Json(c.inspect()).into_response(),
            None => no_such(id),
        },
        ("GET", ["containers", id, "logs"]) => match find(&mut g, id) {
            Some(c) => logs(c, uri.query().unwrap_or("")),
            None => no_such(id),
        },
        ("POST", ["containers", id, action]) => {
            let Some(c) = find(&mut g, id) else {
                return no_such(id);
            };
            match *action {
                "restart" => {
                    c.restart();
                    StatusCode::NO_CONTENT.into_response()
                }
                "start" if c.status == "running" => StatusCode::NOT_MODIFIED.into_response(),
                "start" => {
                    c.restart();
                    StatusCode::NO_CONTENT.into_response()
                }
                "stop" if c.status != "running" => StatusCode::NOT_MODIFIED.into_response(),
                "stop" => {
                    c.status = "exited".into();
                    c.exit_code = 0;
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => engine_error(StatusCode::NOT_FOUND, "page not found"),
            }
        }
        _ => engine_error(StatusCode::NOT_FOUND, "page not found"),
    }
}

/// `GET /containers/{id}/logs` as dockerd 20.10 answers it (no follow).
fn logs(c: &FakeContainer, query: &str) -> Response {
    let param = |k: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.to_string())
    };
    let on = |k: &str| param(k).is_some_and(|v| v == "1" || v == "true");
    let (out, err) = (on("stdout"), on("stderr"));
    if !out && !err {
        return engine_error(
            StatusCode::BAD_REQUEST,
            "Bad parameters: you must choose at least one stream",
        );
    }
    let chosen: Vec<&(u8, String)> = c
        .logs
        .iter()
        .filter(|(stream, _)| (*stream == 1 && out) || (*stream == 2 && err))
        .collect();
    let keep = match param("tail").as_deref() {
        None | Some("all") | Some("") => chosen.len(),
        Some(n) => n.parse::<usize>().unwrap_or(chosen.len()),
    };
    let frames: Vec<Vec<u8>> = chosen[chosen.len().saturating_sub(keep)..]
        .iter()
        .map(|(stream, line)| {
            if c.tty {
                line.as_bytes().to_vec()
            } else {
                let mut f = vec![*stream, 0, 0, 0];
                f.extend_from_slice(&(line.len() as u32).to_be_bytes());
                f.extend_from_slice(line.as_bytes());
                f
            }
        })
        .collect();
    let head = [(header::CONTENT_TYPE, "application/vnd.docker.raw-stream")];
    if c.logs_hang {
        use futures_util::StreamExt;
        let sent = futures_util::stream::iter(
            frames
                .into_iter()
                .map(|f| Ok::<_, std::io::Error>(axum::body::Bytes::from(f))),
        );
        let body = axum::body::Body::from_stream(sent.chain(futures_util::stream::pending()));
        return (head, body).into_response();
    }
    (head, frames.concat()).into_response()
}

/// The name of the container `id` addresses, resolved in dockerd's order:
/// the full id, the exact name (with or without its `/`), then an id
/// prefix that only one container has.
fn resolve(containers: &BTreeMap<String, FakeContainer>, id: &str) -> Option<String> {
    let name = id.strip_prefix('/').unwrap_or(id);
    if let Some(c) = containers.values().find(|c| c.id == id) {
        return Some(c.name.clone());
    }
    if containers.contains_key(name) {
        return Some(name.to_string());
    }
    let mut by_prefix = containers.values().filter(|c| c.id.starts_with(id));
    match (by_prefix.next(), by_prefix.next()) {
        (Some(c), None) if !id.is_empty() => Some(c.name.clone()),
        _ => None,
    }
}

fn find<'a>(g: &'a mut Inner, id: &str) -> Option<&'a mut FakeContainer> {
    let name = resolve(&g.containers, id)?;
    g.containers.get_mut(&name)
}

fn no_such(id: &str) -> Response {
    engine_error(StatusCode::NOT_FOUND, &format!("No such container: {id}"))
}
