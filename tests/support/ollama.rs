//! A fake Ollama server speaking the real wire protocol on 127.0.0.1.
//!
//! Serves `GET /api/tags`, `POST /api/chat`, `POST /api/generate`,
//! `GET /v1/models` and `POST /v1/chat/completions` like Ollama does
//! (non-streaming answers only when `"stream": false` is sent; NDJSON
//! otherwise, so a client that forgets it breaks here too). It records every
//! request and answers from a configurable [`Answer`] (a queue of canned
//! answers first, then a fixed text or a rule on the message text). A
//! missing model (404) is the service's own ([`FakeOllama::set_model_missing`]);
//! faults go through the shared fault layer ([`FakeOllama::set_fault`], or
//! [`FakeOllama::set_chat_fault`] for chat and generate only) with Ollama's
//! `{"error"}` body.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::fault::{Fault, Match, Req, Rule as FaultRule, Service};
use super::harness::{dead_addr, in_background, FakeServer};

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
    model_missing: bool,
    models: Vec<String>,
    answer: Answer,
    queue: VecDeque<String>,
    honour_format: bool,
    /// Tokens of reasoning the model writes before its answer (0: none).
    thinking_tokens: u32,
    requests: Vec<Recorded>,
}

type Shared = Arc<Mutex<Inner>>;

/// The fake's side of the fault layer.
struct Ollama(Shared);

/// A running fake; stops when dropped.
pub struct FakeOllama {
    url: String,
    state: Shared,
    server: FakeServer,
}

/// The models a fresh fake has pulled: the config defaults.
pub const DEFAULT_MODELS: &[&str] = &["llama3.1:8b", "qwen2.5-coder:32b"];

impl FakeOllama {
    /// Starts the fake inside the current tokio runtime.
    pub async fn start() -> FakeOllama {
        let state = Arc::new(Mutex::new(Inner {
            model_missing: false,
            models: DEFAULT_MODELS.iter().map(|s| s.to_string()).collect(),
            answer: Answer::Fixed("ROUTINE".into()),
            queue: VecDeque::new(),
            honour_format: true,
            thinking_tokens: 0,
            requests: Vec::new(),
        }));
        let app = Router::new()
            .route("/api/tags", get(tags))
            .route("/api/chat", post(chat))
            .route("/api/generate", post(generate))
            .route("/v1/models", get(v1_models))
            .route("/v1/chat/completions", post(v1_chat))
            .with_state(state.clone());
        let server = FakeServer::start(app, Arc::new(Ollama(state.clone()))).await;
        FakeOllama {
            url: server.url(),
            state,
            server,
        }
    }

    /// Starts the fake on the background runtime, for tests that run the
    /// real binary with `std::process::Command`.
    pub fn start_in_background() -> FakeOllama {
        in_background(FakeOllama::start)
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server: rules, holds and the fault for every request.
    pub fn server(&self) -> &FakeServer {
        &self.server
    }

    /// Sets the fault for every request ([`Fault::Refuse`]: down, the same
    /// port listens again when the fault is cleared).
    pub fn set_fault(&self, fault: Fault) {
        self.server.set_fault(fault);
    }

    /// Behave again.
    pub fn clear_fault(&self) {
        self.server.clear_fault();
    }

    /// `fault` for chat and generate requests only (every `POST`): the
    /// model lists still answer.
    pub fn set_chat_fault(&self, fault: Fault) {
        self.server
            .add_rule(FaultRule::new(fault).when(Match::method("POST")));
    }

    /// Knows no models (or knows them again): tags are empty, chat and
    /// generate answer 404 "model 'x' not found".
    pub fn set_model_missing(&self, on: bool) {
        self.state.lock().unwrap().model_missing = on;
    }

    /// Answers every later request with `text` (after any queued answers).
    pub fn answer(&self, text: &str) {
        self.state.lock().unwrap().answer = Answer::Fixed(text.to_string());
    }

    /// Answers by a rule on the message text.
    pub fn answer_with(&self, rule: impl Fn(&str) -> String + Send + Sync + 'static) {
        self.state.lock().unwrap().answer = Answer::Rule(Arc::new(rule));
    }

    /// Answers like a plain classifier: INCIDENT for "down", TASK for
    /// "please", else ROUTINE.
    pub fn answer_by_words(&self) {
        self.answer_with(|msg| {
            let m = msg.to_lowercase();
            if m.contains("down") {
                "INCIDENT".into()
            } else if m.contains("please") {
                "TASK".into()
            } else {
                "ROUTINE".into()
            }
        });
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

    /// A reasoning model: it writes `tokens` tokens of thoughts before the
    /// answer, like a model behind an Ollama too old for `think` (native:
    /// in `message.thinking`) or an OpenAI-compatible server (a `<think>`
    /// block in the text). Past the request's token limit the answer is
    /// cut with `done_reason`/`finish_reason` "length" and no label.
    pub fn set_thinking(&self, tokens: u32) {
        self.state.lock().unwrap().thinking_tokens = tokens;
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

impl FakeOllama {
    /// How many times the agent asked for each message's label (a request
    /// whose `format` wants a `label`), by the message as its prompt's
    /// fence holds it.
    pub fn label_asks(&self) -> std::collections::HashMap<String, usize> {
        let mut asks = std::collections::HashMap::new();
        for r in self.chat_requests() {
            if !r.body["format"]["properties"]["label"].is_object() {
                continue;
            }
            let prompt = match r.body["prompt"].as_str() {
                Some(p) => p.to_string(),
                None => last_user(&r.body["messages"]),
            };
            *asks.entry(fenced_message(&prompt)).or_insert(0) += 1;
        }
        asks
    }
}

/// A URL where nothing listens (connection refused).
pub fn dead_url() -> String {
    format!("http://{}", dead_addr())
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

impl Service for Ollama {
    fn record(&self, req: &Req<'_>) {
        let body = serde_json::from_slice(req.body).unwrap_or(Value::Null);
        self.0.lock().unwrap().requests.push(Recorded {
            method: req.method.to_string(),
            path: req.path().to_string(),
            query: req.uri.query().map(str::to_string),
            authorization: req
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body,
        });
    }

    fn error(&self, status: StatusCode) -> Response {
        let code = status.as_u16();
        (
            status,
            Json(json!({"error": format!("fake failure {code}")})),
        )
            .into_response()
    }

    fn garbage(&self) -> Response {
        (StatusCode::OK, "<html><body>Bad gateway?</body>").into_response()
    }

    /// No keep-alive: a client must not reach a "down" fake over a pooled
    /// connection.
    fn finish(&self, res: &mut Response) {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
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
    !s.model_missing && s.models.iter().any(|m| norm(m) == norm(model))
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

async fn tags(State(state): State<Shared>) -> Response {
    let s = state.lock().unwrap();
    let models: Vec<Value> = if s.model_missing {
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

async fn chat(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or("").to_string();
    if !known(&state.lock().unwrap(), &model) {
        return not_found(&model);
    }
    let text = next_answer(&state, &last_user(&body["messages"]), body.get("format"));
    let thinking = state.lock().unwrap().thinking_tokens as u64;
    let limit = body["options"]["num_predict"].as_u64().unwrap_or(u64::MAX);
    let (text, thoughts, reason) = if thinking == 0 {
        (text, String::new(), "stop")
    } else if thinking >= limit {
        (
            String::new(),
            "let me think ".repeat(limit as usize / 3),
            "length",
        )
    } else {
        (text, "let me think ".repeat(thinking as usize / 3), "stop")
    };
    let single = json!({
        "model": model, "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": text, "thinking": thoughts},
        "done": true, "done_reason": reason, "total_duration": 1_000_000, "load_duration": 0,
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

async fn generate(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
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

async fn v1_models(State(state): State<Shared>) -> Response {
    let s = state.lock().unwrap();
    let data: Vec<Value> = s
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 1_735_689_600, "owned_by": "library"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn v1_chat(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or("").to_string();
    if !known(&state.lock().unwrap(), &model) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"message": format!("model \"{model}\" not found, try pulling it first"),
                                  "type": "api_error", "param": null, "code": null}})),
        )
            .into_response();
    }
    // `response_format` with a JSON schema is this API's structured output.
    let schema = body["response_format"]["json_schema"]["schema"].clone();
    let format = (!schema.is_null()).then_some(schema);
    let text = next_answer(&state, &last_user(&body["messages"]), format.as_ref());
    let thinking = state.lock().unwrap().thinking_tokens as u64;
    let limit = body["max_tokens"].as_u64().unwrap_or(u64::MAX);
    let thoughts = "let me think ".repeat(thinking as usize / 3);
    let (text, reason) = if thinking == 0 {
        (text, "stop")
    } else if thinking >= limit {
        (
            format!("<think>\n{}", "let me think ".repeat(limit as usize / 3)),
            "length",
        )
    } else {
        (format!("<think>\n{thoughts}\n</think>\n\n{text}"), "stop")
    };
    Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_735_689_600, "model": model,
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 5, "total_tokens": 125}
    }))
    .into_response()
}
