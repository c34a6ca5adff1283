//! The local LLM client: Ollama's native API or an OpenAI-compatible server.
//!
//! The agent asks a model two things: a one-word label for a chat post
//! (classification, short timeout) and a short reply text (longer timeout,
//! bigger model). Both are optional luxuries: every failure here comes back
//! as an [`LlmError`] whose [`LlmErrorKind`] tells the caller *why*, so the
//! classifier can fall back to its rules and model and record the reason, and the
//! cycle keeps working with Ollama gone for days.
//!
//! Wire facts this client relies on (Ollama `docs/api.md`, `server/routes.go`):
//! `stream` defaults to true, so every request sends `"stream": false`; the
//! default context depends on VRAM and silently truncates long prompts, so
//! `num_ctx` is always sent; a missing model is a 404 with
//! `{"error": "model 'x' not found"}`; the first call after idle pays the load
//! time, which is why timeouts are per use and generous for replies.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::secret::Secret;

mod config;

use crate::http::BodyError;

pub use config::{Backend, OllamaConfig};

/// Why a call to the model failed; the classifier branches on this to record
/// its fallback reason, so each kind is an operator-facing diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmErrorKind {
    /// The server answered that the model is not pulled (`ollama pull` it).
    ModelMissing,
    /// No complete answer within the per-call timeout.
    Timeout,
    /// Nothing listens at the URL (connection refused, DNS, TLS).
    Unreachable,
    /// A 2xx whose body is not the expected JSON.
    BadResponse,
    /// Any other HTTP status (500, 503 queue full, 400 …).
    Status(u16),
}

/// A failed model call, naming the model and the endpoint (never a secret).
#[derive(Debug, Clone)]
pub(crate) struct LlmError {
    /// What went wrong, for branching.
    pub(crate) kind: LlmErrorKind,
    /// The model that was asked.
    model: String,
    /// `METHOD URL` of the call.
    endpoint: String,
    /// Human detail: the server's error text (capped) or the transport error.
    detail: String,
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            LlmErrorKind::ModelMissing => {
                "model not found (pull it with `ollama pull`)".to_string()
            }
            LlmErrorKind::Timeout => "timed out".to_string(),
            LlmErrorKind::Unreachable => "unreachable".to_string(),
            LlmErrorKind::BadResponse => "unexpected response".to_string(),
            LlmErrorKind::Status(s) => format!("HTTP {s}"),
        };
        write!(f, "{} (model {}): {what}", self.endpoint, self.model)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for LlmError {}

/// Which per-use timeout a call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Picking a label: `classify_timeout_secs`.
    Classify,
    /// Writing a reply: `reply_timeout_secs`.
    Reply,
}

/// One chat message sent to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Message {
    /// "system", "user" or "assistant".
    pub(crate) role: String,
    /// The text.
    pub(crate) content: String,
}

impl Message {
    /// A system message (instructions).
    pub(crate) fn system(content: impl Into<String>) -> Self {
        Message {
            role: "system".into(),
            content: content.into(),
        }
    }
    /// A user message (the data to work on).
    pub(crate) fn user(content: impl Into<String>) -> Self {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// A non-streaming chat request, independent of the backend's wire format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChatRequest {
    /// Model name as the server knows it.
    pub(crate) model: String,
    /// Conversation, system prompt first.
    pub(crate) messages: Vec<Message>,
    /// Sampling temperature (Ollama's default 0.8 is too creative for labels).
    pub(crate) temperature: f32,
    /// Maximum output tokens (`num_predict` / `max_tokens`).
    pub(crate) max_tokens: u32,
    /// Fixed seed for repeatable answers.
    pub(crate) seed: Option<u64>,
    /// JSON schema the answer must follow: Ollama's `format`, or the
    /// OpenAI-compatible `response_format` (Ollama's `/v1`, vLLM and
    /// llama.cpp's server honour it).
    pub(crate) format: Option<Value>,
    /// `think` for Ollama's native API: `Some(false)` asks a reasoning model
    /// to answer without thinking first (a model that cannot think ignores
    /// `false`; only `true` is refused by those). Not sent to
    /// OpenAI-compatible servers, which have no common switch for it.
    pub(crate) think: Option<bool>,
}

/// What the model said.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChatAnswer {
    /// The assistant message text (a JSON string when `format` was honoured).
    pub(crate) content: String,
    /// The model that answered, as reported by the server.
    model: String,
    /// "stop", "length", … when reported.
    done_reason: Option<String>,
    /// Prompt tokens evaluated; a low value hints at silent truncation.
    prompt_tokens: Option<u64>,
    /// Output tokens generated.
    output_tokens: Option<u64>,
    /// The model reasoned before answering (Ollama's `message.thinking`,
    /// an OpenAI-compatible `reasoning_content`, or a `<think>` block in
    /// the text): such a model needs room for its thoughts.
    pub(crate) thought: bool,
}

impl ChatAnswer {
    /// The answer was cut by the token limit while the model was still
    /// thinking: no answer yet, and a bigger budget would have given one.
    pub(crate) fn cut_while_thinking(&self) -> bool {
        let cut = self.done_reason.as_deref() == Some("length");
        let lower = self.content.to_ascii_lowercase();
        let open_think = lower.contains("<think>") && !lower.contains("</think>");
        cut && (open_think || (self.thought && self.content.trim().is_empty()))
    }
}

/// A client for one cycle. It caches the model list, and it is a circuit
/// breaker: after the first timeout or refused connection it asks nothing
/// more in this cycle (the classifier's fallback and templates take over), so a
/// hanging Ollama costs one timeout per cycle, not one per post.
#[derive(Debug)]
pub struct Client {
    cfg: OllamaConfig,
    base: String,
    http: reqwest::Client,
    api_key: Option<Secret>,
    models: Mutex<Option<Vec<String>>>,
    health: Mutex<Health>,
}

#[derive(Debug, Default)]
struct Health {
    /// Why the breaker opened, once it has.
    open: Option<LlmErrorKind>,
    /// Models seen thinking in this cycle: later calls give them the
    /// bigger budget at once instead of being cut first.
    thinkers: Vec<String>,
    /// The OpenAI-compatible server refused `response_format` (HTTP 400)
    /// once: not sent again in this cycle.
    no_response_format: bool,
}

impl Client {
    /// Builds a client from validated config; `api_key` is the secret named
    /// by `api_key_env` (see [`Client::from_config`]).
    pub fn new(cfg: &OllamaConfig, api_key: Option<Secret>) -> Result<Self> {
        let longest = cfg.classify_timeout_secs.max(cfg.reply_timeout_secs);
        let http =
            crate::http::client(longest.get(), true).context("building the Ollama HTTP client")?;
        Ok(Client {
            base: cfg.url.trim().trim_end_matches('/').to_string(),
            cfg: cfg.clone(),
            http,
            api_key,
            models: Mutex::new(None),
            health: Mutex::new(Health::default()),
        })
    }

    /// Builds a client, reading the API key (`api_key_file` or
    /// `api_key_env`) when one is configured.
    pub(crate) fn from_config(cfg: &OllamaConfig) -> Result<Self> {
        let key = cfg.api_key().map(|k| k.read()).transpose()?;
        Client::new(cfg, key)
    }

    /// The configuration this client was built from.
    pub(crate) fn config(&self) -> &OllamaConfig {
        &self.cfg
    }

    /// Whether a JSON schema for the answer is sent: Ollama's `format`, or
    /// `response_format` until an OpenAI-compatible server refused it.
    pub(crate) fn supports_structured_output(&self) -> bool {
        self.cfg.backend == Backend::Ollama
            || !self.health.lock().expect("health lock").no_response_format
    }

    /// Whether `model` was seen thinking in this cycle.
    pub(crate) fn thinks(&self, model: &str) -> bool {
        let h = self.health.lock().expect("health lock");
        h.thinkers.iter().any(|m| m == model)
    }

    /// Remembers that `model` thinks before it answers.
    pub(crate) fn note_thinker(&self, model: &str) {
        let mut h = self.health.lock().expect("health lock");
        if !h.thinkers.iter().any(|m| m == model) {
            tracing::info!(model, "The model reasons before answering; it gets a bigger token budget for the rest of the cycle.");
            h.thinkers.push(model.to_string());
        }
    }

    /// Why the breaker is open (the first timeout or refused connection of
    /// this client's cycle), if it is: then nothing more is asked.
    pub fn breaker(&self) -> Option<LlmErrorKind> {
        self.health.lock().expect("health lock").open
    }

    fn note(&self, outcome: Result<(), LlmErrorKind>) {
        if let Err(kind @ (LlmErrorKind::Unreachable | LlmErrorKind::Timeout)) = outcome {
            let mut h = self.health.lock().expect("health lock");
            if h.open.is_none() {
                // Info: the cycle's one warning says the fallback stood in.
                tracing::info!(
                    reason = ?kind,
                    "LLM breaker open: no more model calls this cycle; the fallback and templates take over."
                );
                h.open = Some(kind);
            }
        }
    }

    fn timeout(&self, purpose: Purpose) -> Duration {
        match purpose {
            Purpose::Classify => self.cfg.classify_timeout_secs,
            Purpose::Reply => self.cfg.reply_timeout_secs,
        }
        .get()
    }

    /// Whether the server has `model` pulled. Native backend only: the model
    /// list comes from `GET /api/tags` once per client. OpenAI-compatible
    /// servers name models inconsistently (llama.cpp ignores the name), so
    /// there the answer is always `true` and a 404 on chat tells the truth.
    pub(crate) async fn has_model(&self, model: &str, purpose: Purpose) -> Result<bool, LlmError> {
        if self.cfg.backend == Backend::Openai {
            return Ok(true);
        }
        if let Some(kind) = self.breaker() {
            return Err(self.err(kind, model, "GET", "/api/tags", "not retried in this cycle"));
        }
        let cached = self.models.lock().expect("models lock").clone();
        let names = match cached {
            Some(n) => n,
            None => {
                let n = self.fetch_tags(model, purpose).await;
                self.note(n.as_ref().map(|_| ()).map_err(|e| e.kind));
                let n = n?;
                *self.models.lock().expect("models lock") = Some(n.clone());
                n
            }
        };
        let want = normalize_model(model);
        Ok(names.iter().any(|n| normalize_model(n) == want))
    }

    async fn fetch_tags(&self, model: &str, purpose: Purpose) -> Result<Vec<String>, LlmError> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            models: Vec<Tag>,
        }
        #[derive(Deserialize)]
        struct Tag {
            #[serde(default)]
            name: String,
            #[serde(default)]
            model: String,
        }
        let path = "/api/tags";
        let req = self.http.get(format!("{}{path}", self.base));
        let body = self.send(req, model, "GET", path, purpose).await?;
        let tags: Tags = serde_json::from_str(&body).map_err(|e| {
            self.err(
                LlmErrorKind::BadResponse,
                model,
                "GET",
                path,
                &format!("{e}: {}", excerpt(&body, 120)),
            )
        })?;
        Ok(tags
            .models
            .into_iter()
            .flat_map(|t| [t.name, t.model])
            .filter(|n| !n.is_empty())
            .collect())
    }

    /// Sends one non-streaming chat request with the timeout for `purpose`.
    pub(crate) async fn chat(
        &self,
        req: &ChatRequest,
        purpose: Purpose,
    ) -> Result<ChatAnswer, LlmError> {
        if let Some(kind) = self.breaker() {
            let path = match self.cfg.backend {
                Backend::Ollama => "/api/chat",
                Backend::Openai => "/v1/chat/completions",
            };
            return Err(self.err(kind, &req.model, "POST", path, "not retried in this cycle"));
        }
        let result = match self.cfg.backend {
            Backend::Ollama => self.chat_native(req, purpose).await,
            Backend::Openai => self.chat_openai(req, purpose).await,
        };
        self.note(result.as_ref().map(|_| ()).map_err(|e| e.kind));
        result
    }

    async fn chat_native(
        &self,
        req: &ChatRequest,
        purpose: Purpose,
    ) -> Result<ChatAnswer, LlmError> {
        #[derive(Deserialize)]
        struct Resp {
            #[serde(default)]
            model: String,
            message: RespMsg,
            #[serde(default)]
            done_reason: Option<String>,
            #[serde(default)]
            prompt_eval_count: Option<u64>,
            #[serde(default)]
            eval_count: Option<u64>,
        }
        #[derive(Deserialize)]
        struct RespMsg {
            content: String,
            #[serde(default)]
            thinking: Option<String>,
        }
        let path = "/api/chat";
        let mut options = json!({
            "temperature": req.temperature,
            "num_predict": req.max_tokens,
            "num_ctx": self.cfg.num_ctx,
        });
        if let Some(seed) = req.seed {
            options["seed"] = json!(seed);
        }
        let mut body = json!({
            "model": req.model,
            "messages": req.messages,
            "stream": false,
            "options": options,
            "keep_alive": config::keep_alive_value(&self.cfg.keep_alive),
        });
        if let Some(format) = &req.format {
            body["format"] = format.clone();
        }
        if let Some(think) = req.think {
            body["think"] = json!(think);
        }
        let http = self.http.post(format!("{}{path}", self.base)).json(&body);
        let text = self.send(http, &req.model, "POST", path, purpose).await?;
        let resp: Resp = self.parse_json(&text, &req.model, path)?;
        let thought = resp
            .message
            .thinking
            .as_deref()
            .is_some_and(|t| !t.trim().is_empty())
            || resp.message.content.contains("</think>");
        Ok(ChatAnswer {
            thought,
            content: resp.message.content,
            model: if resp.model.is_empty() {
                req.model.clone()
            } else {
                resp.model
            },
            done_reason: resp.done_reason,
            prompt_tokens: resp.prompt_eval_count,
            output_tokens: resp.eval_count,
        })
    }

    async fn chat_openai(
        &self,
        req: &ChatRequest,
        purpose: Purpose,
    ) -> Result<ChatAnswer, LlmError> {
        #[derive(Deserialize)]
        struct Resp {
            #[serde(default)]
            model: String,
            choices: Vec<Choice>,
            #[serde(default)]
            usage: Option<Usage>,
        }
        #[derive(Deserialize)]
        struct Choice {
            message: ChoiceMsg,
            #[serde(default)]
            finish_reason: Option<String>,
        }
        #[derive(Deserialize)]
        struct ChoiceMsg {
            #[serde(default)]
            content: Option<String>,
            #[serde(default)]
            reasoning_content: Option<String>,
            #[serde(default)]
            reasoning: Option<String>,
        }
        #[derive(Deserialize)]
        struct Usage {
            #[serde(default)]
            prompt_tokens: Option<u64>,
            #[serde(default)]
            completion_tokens: Option<u64>,
        }
        let path = "/v1/chat/completions";
        let mut body = json!({
            "model": req.model,
            "messages": req.messages,
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
            "stream": false,
        });
        if let Some(seed) = req.seed {
            body["seed"] = json!(seed);
        }
        let schema = req
            .format
            .as_ref()
            .filter(|_| self.supports_structured_output());
        if let Some(schema) = schema {
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": {"name": "answer", "strict": true, "schema": schema},
            });
        }
        let text = match self.post_openai(&body, &req.model, path, purpose).await {
            // A server without structured outputs refuses the whole request:
            // ask again without the schema, and not again this cycle.
            Err(e) if schema.is_some() && e.kind == LlmErrorKind::Status(400) => {
                tracing::warn!(detail = %e.detail, "The server refused response_format; asking without it for the rest of the cycle.");
                self.health.lock().expect("health lock").no_response_format = true;
                body.as_object_mut()
                    .expect("a JSON object")
                    .remove("response_format");
                self.post_openai(&body, &req.model, path, purpose).await?
            }
            other => other?,
        };
        let resp: Resp = self.parse_json(&text, &req.model, path)?;
        let Some(choice) = resp.choices.into_iter().next() else {
            return Err(self.err(
                LlmErrorKind::BadResponse,
                &req.model,
                "POST",
                path,
                "no choices in the answer",
            ));
        };
        let content = choice.message.content.unwrap_or_default();
        let thought = [&choice.message.reasoning_content, &choice.message.reasoning]
            .iter()
            .any(|r| r.as_deref().is_some_and(|t| !t.trim().is_empty()))
            || content.contains("</think>");
        Ok(ChatAnswer {
            thought,
            content,
            model: if resp.model.is_empty() {
                req.model.clone()
            } else {
                resp.model
            },
            done_reason: choice.finish_reason,
            prompt_tokens: resp.usage.as_ref().and_then(|u| u.prompt_tokens),
            output_tokens: resp.usage.as_ref().and_then(|u| u.completion_tokens),
        })
    }

    /// One POST to an OpenAI-compatible endpoint, with the API key if any.
    async fn post_openai(
        &self,
        body: &Value,
        model: &str,
        path: &str,
        purpose: Purpose,
    ) -> Result<String, LlmError> {
        let mut http = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key.expose());
        }
        self.send(http, model, "POST", path, purpose).await
    }

    /// Sends a request and returns the body of a 2xx; everything else becomes
    /// a typed error. The tokio timeout backs up reqwest's so that a server
    /// trickling bytes cannot hold the cycle either.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        model: &str,
        method: &str,
        path: &str,
        purpose: Purpose,
    ) -> Result<String, LlmError> {
        let limit = self.timeout(purpose);
        let call = async {
            let resp = req
                .timeout(limit)
                .send()
                .await
                .map_err(BodyError::Transport)?;
            let status = resp.status();
            let body = crate::http::read_text(resp, crate::http::caps::LLM).await?;
            Ok::<_, BodyError>((status, body))
        };
        let (status, body) = match tokio::time::timeout(limit, call).await {
            Err(_) => {
                return Err(self.err(
                    LlmErrorKind::Timeout,
                    model,
                    method,
                    path,
                    &format!("no answer within {}s", limit.as_secs()),
                ))
            }
            Ok(Err(BodyError::TooLarge { cap })) => {
                let detail = BodyError::TooLarge { cap }.to_string();
                return Err(self.err(LlmErrorKind::BadResponse, model, method, path, &detail));
            }
            Ok(Err(BodyError::Transport(e))) => {
                let kind = if e.is_timeout() {
                    LlmErrorKind::Timeout
                } else if e.is_connect() {
                    LlmErrorKind::Unreachable
                } else if e.is_decode() || e.is_body() {
                    LlmErrorKind::BadResponse
                } else {
                    LlmErrorKind::Unreachable
                };
                let detail = match kind {
                    LlmErrorKind::Timeout => format!("no answer within {}s", limit.as_secs()),
                    _ => error_chain(&e),
                };
                return Err(self.err(kind, model, method, path, &detail));
            }
            Ok(Ok(x)) => x,
        };
        if status.is_success() {
            return Ok(body);
        }
        let message = server_error_message(&body);
        let kind = status_kind(status.as_u16(), &message);
        Err(self.err(kind, model, method, path, &excerpt(&message, 200)))
    }

    /// Decodes a JSON answer; garbage is a `BadResponse` naming the model,
    /// the endpoint and an excerpt of what came back.
    fn parse_json<T: serde::de::DeserializeOwned>(
        &self,
        text: &str,
        model: &str,
        path: &str,
    ) -> Result<T, LlmError> {
        serde_json::from_str(text).map_err(|e| {
            self.err(
                LlmErrorKind::BadResponse,
                model,
                "POST",
                path,
                &format!("{e}: {}", excerpt(text, 120)),
            )
        })
    }

    fn err(
        &self,
        kind: LlmErrorKind,
        model: &str,
        method: &str,
        path: &str,
        detail: &str,
    ) -> LlmError {
        LlmError {
            kind,
            model: model.to_string(),
            endpoint: format!("{method} {}{path}", crate::scrub::url(&self.base)),
            detail: detail.to_string(),
        }
    }
}

/// Maps an HTTP error status to a kind: the one place that knows that a 404
/// mentioning the model means "not pulled" while any other 404 (a server
/// without this endpoint) is just a status.
fn status_kind(status: u16, message: &str) -> LlmErrorKind {
    let m = message.to_ascii_lowercase();
    if status == 404 && m.contains("model") && m.contains("not found") {
        LlmErrorKind::ModelMissing
    } else {
        LlmErrorKind::Status(status)
    }
}

/// Ollama answers `{"error": "…"}`; OpenAI-compatible servers answer
/// `{"error": {"message": "…"}}`; anything else is shown as raw text.
fn server_error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        match &v["error"] {
            Value::String(s) => return s.clone(),
            Value::Object(o) => {
                if let Some(Value::String(s)) = o.get("message") {
                    return s.clone();
                }
            }
            _ => {}
        }
    }
    body.trim().to_string()
}

/// Ollama lists "llama3.1:latest" for a model pulled as "llama3.1".
fn normalize_model(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    let n = n
        .strip_prefix("registry.ollama.ai/library/")
        .unwrap_or(&n)
        .to_string();
    let last = n.rsplit('/').next().unwrap_or(&n);
    if last.contains(':') {
        n
    } else {
        format!("{n}:latest")
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// At most `max` chars of `s` on one line, for error messages and logs.
pub(crate) fn excerpt(s: &str, max: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut t: String = one_line.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        assert_eq!(
            status_kind(404, "model 'x' not found"),
            LlmErrorKind::ModelMissing
        );
        assert_eq!(
            status_kind(404, "model \"x\" not found, try pulling it first"),
            LlmErrorKind::ModelMissing
        );
        assert_eq!(
            status_kind(404, "404 page not found"),
            LlmErrorKind::Status(404)
        );
        assert_eq!(status_kind(500, "boom"), LlmErrorKind::Status(500));
        assert_eq!(
            server_error_message(r#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(
            server_error_message(r#"{"error":{"message":"nope","type":"x"}}"#),
            "nope"
        );
        assert_eq!(server_error_message(" plain "), "plain");
    }

    #[test]
    fn model_names_match_with_implicit_latest() {
        assert_eq!(normalize_model("llama3.1"), "llama3.1:latest");
        assert_eq!(normalize_model("Llama3.1:8b"), "llama3.1:8b");
        assert_eq!(
            normalize_model("registry.ollama.ai/library/qwen2.5-coder:32b"),
            "qwen2.5-coder:32b"
        );
        assert_eq!(normalize_model("hf.co/org/model"), "hf.co/org/model:latest");
    }

    #[test]
    fn error_display_names_model_and_endpoint() {
        let e = LlmError {
            kind: LlmErrorKind::ModelMissing,
            model: "llama3.1:8b".into(),
            endpoint: "POST http://h:11434/api/chat".into(),
            detail: "model 'llama3.1:8b' not found".into(),
        };
        let s = e.to_string();
        assert!(
            s.contains("POST http://h:11434/api/chat") && s.contains("model llama3.1:8b"),
            "{s}"
        );
    }
}
