//! A fake Ollama server speaking the real wire protocol on 127.0.0.1.
//!
//! Serves `GET /api/tags`, `POST /api/chat`, `POST /api/generate`,
//! `GET /v1/models` and `POST /v1/chat/completions` like Ollama does
//! (non-streaming answers only when `"stream": false` is sent; NDJSON
//! otherwise, so a client that forgets it breaks here too). It records every
//! request and answers from a configurable [`Answer`] (a queue of canned
//! answers first, then a fixed text or a rule on the message text), and has
//! fault modes switchable at runtime: model missing (404), any status,
//! hanging past any timeout, garbage bodies, and down (connection refused).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// How the server behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers normally.
    Normal,
    /// Knows no models: tags are empty, chat answers 404 "model 'x' not found".
    ModelMissing,
    /// Every endpoint answers this status with an Ollama error body.
    Status(u16),
    /// Every endpoint hangs (longer than any client timeout).
    Hang,
    /// Tags answer; chat and generate hang.
    HangChat,
    /// Every endpoint answers 200 with a body that is not JSON.
    Garbage,
    /// Not listening: connections are refused until another mode is set.
    Down,
}

/// A rule computing the model's answer from the message text.
pub type Rule = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// What the model says when no queued answer is left.
#[derive(Clone)]
pub enum Answer {
    /// Always this text (e.g. "TASK", "**Incident**", "TASK or INCIDENT").
    Fixed(String),
    /// Computed from the message text (the fenced part when present).
    Rule(Rule),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// `Authorization` header, if any.
    pub authorization: Option<String>,
    /// JSON body (Null for GET).
    pub body: Value,
}

struct Inner {
    mode: Mode,
    models: Vec<String>,
    answer: Answer,
    queue: VecDeque<String>,
    honour_format: bool,
    requests: Vec<Recorded>,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake; stops when dropped.
pub struct FakeOllama {
    url: String,
    addr: SocketAddr,
    state: Shared,
    handle: tokio::runtime::Handle,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    _background: Option<Background>,
}

struct Background {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeOllama {
    fn drop(&mut self) {
        if let Some(h) = self.server.lock().unwrap().take() {
            h.abort();
        }
    }
}

/// The models a fresh fake has pulled: the config defaults.
pub const DEFAULT_MODELS: &[&str] = &["llama3.1:8b", "qwen2.5-coder:32b"];

impl FakeOllama {
    /// Starts the fake inside the current tokio runtime.
    pub async fn start() -> FakeOllama {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::launch(listener, tokio::runtime::Handle::current(), None)
    }

    /// Starts the fake on its own thread and runtime, for tests that run the
    /// real binary with `std::process::Command`.
    pub fn start_in_background() -> FakeOllama {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send((listener, tokio::runtime::Handle::current()))
                    .unwrap();
                let _ = stop_rx.await;
            });
        });
        let (listener, handle) = rx.recv().expect("fake ollama thread started");
        let bg = Background {
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        let _guard = handle.enter();
        Self::launch(listener, handle.clone(), Some(bg))
    }

    fn launch(
        listener: tokio::net::TcpListener,
        handle: tokio::runtime::Handle,
        bg: Option<Background>,
    ) -> FakeOllama {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(Inner {
            mode: Mode::Normal,
            models: DEFAULT_MODELS.iter().map(|s| s.to_string()).collect(),
            answer: Answer::Fixed("ROUTINE".into()),
            queue: VecDeque::new(),
            honour_format: true,
            requests: Vec::new(),
        }));
        let server = handle.spawn(serve(listener, state.clone()));
        FakeOllama {
            url: format!("http://{addr}"),
            addr,
            state,
            handle,
            server: Mutex::new(Some(server)),
            _background: bg,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Switches the behaviour; `Down` stops listening, any other mode after
    /// `Down` listens again on the same port.
    pub fn set_mode(&self, mode: Mode) {
        let was = std::mem::replace(&mut self.state.lock().unwrap().mode, mode);
        if mode == Mode::Down && was != Mode::Down {
            if let Some(h) = self.server.lock().unwrap().take() {
                h.abort();
            }
        } else if was == Mode::Down && mode != Mode::Down {
            let std_listener =
                std::net::TcpListener::bind(self.addr).expect("rebind the fake's port");
            std_listener.set_nonblocking(true).unwrap();
            let _guard = self.handle.enter();
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            *self.server.lock().unwrap() =
                Some(self.handle.spawn(serve(listener, self.state.clone())));
        }
    }

    /// Answers every later request with `text` (after any queued answers).
    pub fn answer(&self, text: &str) {
        self.state.lock().unwrap().answer = Answer::Fixed(text.to_string());
    }

    /// Answers by a rule on the message text.
    pub fn answer_with(&self, rule: impl Fn(&str) -> String + Send + Sync + 'static) {
        self.state.lock().unwrap().answer = Answer::Rule(Arc::new(rule));
    }

    /// Answers the next requests with these texts, in order.
    pub fn push_answers(&self, texts: &[&str]) {
        self.state
            .lock()
            .unwrap()
            .queue
            .extend(texts.iter().map(|s| s.to_string()));
    }

    /// Replaces the list of pulled models.
    pub fn set_models(&self, models: &[&str]) {
        self.state.lock().unwrap().models = models.iter().map(|s| s.to_string()).collect();
    }

    /// Whether a request with `format` gets `{"label": …}` JSON when the
    /// answer is a bare label (as real structured outputs do). Off: the
    /// answer text is returned as is, like a server that ignores `format`.
    pub fn honour_format(&self, on: bool) {
        self.state.lock().unwrap().honour_format = on;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests to a chat or generate endpoint.
    pub fn chat_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }
}

/// A URL where nothing listens (connection refused).
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// The text between the `<<<MESSAGE-…` fence lines of a prompt, or the whole
/// prompt when there is no fence.
pub fn fenced_message(prompt: &str) -> String {
    let Some(start) = prompt.find("<<<MESSAGE-") else {
        return prompt.to_string();
    };
    let after = &prompt[start..];
    let Some(nl) = after.find('\n') else {
        return prompt.to_string();
    };
    let marker = after["<<<MESSAGE-".len()..nl].to_string();
    let body = &after[nl + 1..];
    let end = body
        .find(&format!("\nMESSAGE-{marker}>>>"))
        .unwrap_or(body.len());
    body[..end].to_string()
}

async fn serve(listener: tokio::net::TcpListener, state: Shared) {
    let app = Router::new()
        .route("/api/tags", get(tags))
        .route("/api/chat", post(chat))
        .route("/api/generate", post(generate))
        .route("/v1/models", get(v1_models))
        .route("/v1/chat/completions", post(v1_chat))
        .layer(axum::middleware::map_response(close_connection))
        .with_state(state);
    let _ = axum::serve(listener, app).await;
}

/// No keep-alive: a client must not reach a "down" fake over a pooled
/// connection.
async fn close_connection(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

fn record(state: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Value) -> Mode {
    let mut s = state.lock().unwrap();
    s.requests.push(Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: body.clone(),
    });
    s.mode
}

/// Answers for fault modes; `None` means "behave normally".
async fn fault(mode: Mode, is_chat: bool) -> Option<Response> {
    match mode {
        Mode::Normal | Mode::ModelMissing | Mode::Down => None,
        Mode::HangChat if !is_chat => None,
        Mode::Hang | Mode::HangChat => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            None
        }
        Mode::Status(code) => Some(
            (
                StatusCode::from_u16(code).unwrap(),
                Json(json!({"error": format!("fake failure {code}")})),
            )
                .into_response(),
        ),
        Mode::Garbage => Some((StatusCode::OK, "<html><body>Bad gateway?</body>").into_response()),
    }
}

fn known(s: &Inner, model: &str) -> bool {
    let norm = |m: &str| {
        if m.contains(':') {
            m.to_string()
        } else {
            format!("{m}:latest")
        }
    };
    s.mode != Mode::ModelMissing && s.models.iter().any(|m| norm(m) == norm(model))
}

/// The next answer for a prompt, with structured output applied.
fn next_answer(state: &Shared, prompt: &str, format: Option<&Value>) -> String {
    let mut s = state.lock().unwrap();
    let raw = match s.queue.pop_front() {
        Some(a) => a,
        None => match &s.answer {
            Answer::Fixed(t) => t.clone(),
            Answer::Rule(r) => r(&fenced_message(prompt)),
        },
    };
    let wants_json = matches!(format, Some(Value::Object(_)) | Some(Value::String(_)));
    let bare = raw.trim().to_ascii_uppercase();
    if wants_json && s.honour_format && ["ROUTINE", "TASK", "INCIDENT"].contains(&bare.as_str()) {
        json!({"label": bare}).to_string()
    } else {
        raw
    }
}

fn last_user(messages: &Value) -> String {
    messages
        .as_array()
        .and_then(|a| a.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string()
}

fn not_found(model: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("model '{model}' not found")})),
    )
        .into_response()
}

/// Ollama streams unless told not to: NDJSON chunks, the last with `done`.
fn stream_or_single(
    body: &Value,
    single: Value,
    chunk: impl Fn(&str, bool) -> Value,
    text: &str,
) -> Response {
    if body["stream"] == Value::Bool(false) {
        return Json(single).into_response();
    }
    let mid = text.len() / 2;
    let mid = (0..=mid)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    let lines = [chunk(&text[..mid], false), chunk(&text[mid..], true)]
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        lines + "\n",
    )
        .into_response()
}

async fn tags(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mode = record(&state, &method, &uri, &headers, &Value::Null);
    if let Some(r) = fault(mode, false).await {
        return r;
    }
    let s = state.lock().unwrap();
    let models: Vec<Value> = if s.mode == Mode::ModelMissing {
        Vec::new()
    } else {
        s.models
            .iter()
            .map(|m| {
                json!({"name": m, "model": m, "modified_at": "2025-01-01T00:00:00Z", "size": 4_661_224_676u64,
                       "digest": "sha256:0000", "details": {"format": "gguf", "family": "llama"}})
            })
            .collect()
    };
    Json(json!({ "models": models })).into_response()
}

async fn chat(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mode = record(&state, &method, &uri, &headers, &body);
    if let Some(r) = fault(mode, true).await {
        return r;
    }
    let model = body["model"].as_str().unwrap_or("").to_string();
    if !known(&state.lock().unwrap(), &model) {
        return not_found(&model);
    }
    let text = next_answer(&state, &last_user(&body["messages"]), body.get("format"));
    let single = json!({
        "model": model, "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": text},
        "done": true, "done_reason": "stop", "total_duration": 1_000_000, "load_duration": 0,
        "prompt_eval_count": 120, "eval_count": 5, "eval_duration": 500_000
    });
    let m = model.clone();
    stream_or_single(
        &body,
        single,
        move |t, done| json!({"model": m, "message": {"role": "assistant", "content": t}, "done": done}),
        &text,
    )
}

async fn generate(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mode = record(&state, &method, &uri, &headers, &body);
    if let Some(r) = fault(mode, true).await {
        return r;
    }
    let model = body["model"].as_str().unwrap_or("").to_string();
    if !known(&state.lock().unwrap(), &model) {
        return not_found(&model);
    }
    let prompt = body["prompt"].as_str().unwrap_or("").to_string();
    let text = next_answer(&state, &prompt, body.get("format"));
    let single = json!({
        "model": model, "created_at": "2025-01-01T00:00:00Z", "response": text,
        "done": true, "done_reason": "stop", "prompt_eval_count": 120, "eval_count": 5
    });
    let m = model.clone();
    stream_or_single(
        &body,
        single,
        move |t, done| json!({"model": m, "response": t, "done": done}),
        &text,
    )
}

async fn v1_models(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mode = record(&state, &method, &uri, &headers, &Value::Null);
    if let Some(r) = fault(mode, false).await {
        return r;
    }
    let s = state.lock().unwrap();
    let data: Vec<Value> = s
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 1_735_689_600, "owned_by": "library"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn v1_chat(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mode = record(&state, &method, &uri, &headers, &body);
    if let Some(r) = fault(mode, true).await {
        return r;
    }
    let model = body["model"].as_str().unwrap_or("").to_string();
    if !known(&state.lock().unwrap(), &model) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"message": format!("model \"{model}\" not found, try pulling it first"),
                                  "type": "api_error", "param": null, "code": null}})),
        )
            .into_response();
    }
    let text = next_answer(&state, &last_user(&body["messages"]), None);
    Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_735_689_600, "model": model,
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 5, "total_tokens": 125}
    }))
    .into_response()
}
