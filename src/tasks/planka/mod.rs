//! Planka client: one card per task on the team's board, labelled
//! BILLABLE or INTERNAL.
//!
//! Covers Planka v1 (1.26) and v2 (2.0, 2.1); the differences that matter
//! here are chosen by [`Major`] (config `api_version`, or `auto`: `GET
//! /api/bootstrap` answers a version on v2 and 404 on v1):
//!
//! | what | v1 | v2 |
//! | --- | --- | --- |
//! | card create body | `{name, position, description}` | plus `type: "project"` |
//! | attach a label | `POST /api/cards/{id}/labels` | `POST /api/cards/{id}/card-labels` |
//! | comment | `POST /api/cards/{id}/comment-actions` | `POST /api/cards/{id}/comments` |
//! | a card's comments | `GET /api/cards/{id}/actions`: `items` of `{type: "commentCard", data: {text}}` | `GET /api/cards/{id}/comments`: `items` of `{text}` |
//! | lists | all are columns | `type` active/closed; archive/trash are system lists (`name: null`) |
//! | find a card by text | only by reading the board | `GET /api/lists/{id}/cards?search=` (50 at most) |
//! | auth | password login | password login (with a one-time terms acceptance) or `X-Api-Key` |
//!
//! Ids are 64-bit snowflakes above 2^53: they are kept and sent as strings,
//! never as JSON numbers.
//!
//! **What a card costs.** Reading a board answers every card on it (8.9 MB
//! at 10,000 cards), so the board is read only to learn its lists and
//! labels, and those ids are kept in the Planka cache file (next to the
//! login token, `[paths] planka_token_cache`) until the configuration
//! names another board or list or the server says an id is gone
//! ([`board`]). A new card is then one create and one label attach,
//! whatever the board holds. The card of a task is remembered by the
//! outbox and the ledger; only where a crash or a timeout may have left a
//! card unrecorded is it looked for, by its `ops-agent source:` line, with
//! the server's bounded text search ([`card`]).
//!
//! **One cycle, one wait.** A client lives for one cycle. When a request
//! times out, every later call of the cycle fails at once with that reason:
//! a frozen Planka costs one timeout per cycle, not one per card. A refused login is not tried again in the same cycle
//! either (a wrong password is one failed login per cycle, never a storm
//! that fail2ban would read as an attack).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

mod board;
mod card;
mod config;

use crate::files;
use crate::secret::Secret;
use board::BoardIds;
pub(crate) use card::NewCard;
use config::Major;
pub use config::{ApiVersion, BoardTarget, PlankaConfig};

/// A non-2xx answer from Planka; downcast from the `anyhow::Error` where a
/// caller branches on the status (409 "already in card" is success).
#[derive(Debug, Clone)]
struct ApiError {
    /// `POST`, `GET`, …
    method: String,
    /// The full URL (no secrets are ever in Planka URLs).
    url: String,
    /// HTTP status.
    status: u16,
    /// The server's `message` (or the start of the body).
    message: String,
    /// The parsed body (`Null` when not JSON), for the terms flow.
    body: Value,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: HTTP {} {}",
            self.method,
            crate::scrub::url(&self.url),
            self.status,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// A card that exists for a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CardRef {
    /// Snowflake id, as a string.
    pub card_id: String,
    /// `{url}/cards/{id}`.
    pub card_url: String,
    /// True when the card was found on the board (made by an earlier, crashed run).
    pub existed: bool,
}

#[derive(Default)]
struct Inner {
    token: Option<Secret>,
    /// The token came from this client's own login (not the cache).
    own_session: bool,
    major: Option<Major>,
    /// Resolved boards by team; read from the cache file at first use.
    boards: BTreeMap<String, BoardIds>,
    cache_read: bool,
    /// Why Planka is skipped for the rest of the cycle: it did not answer.
    down: Option<String>,
    /// Why no login is tried again this cycle: the server refused one.
    refused: Option<String>,
    /// Planka answered some request (any status) in this cycle.
    answered: bool,
}

/// What a client may change on the server and on disk. `doctor` must leave
/// both as it found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A cycle: caches its token and board ids, accepts the terms when
    /// `accept_terms` says so.
    Cycle,
    /// A look only: reads the cache but never writes it, never accepts
    /// the terms, and logs out a session it had to open.
    ReadOnly,
}

/// Talks to one Planka server for one cycle (or one command). Shared by
/// reference: the token, the API version and the board ids are cached
/// inside, and so is whether Planka answers.
pub struct PlankaClient {
    base: String,
    http: reqwest::Client,
    cfg: PlankaConfig,
    cache: Option<PathBuf>,
    mode: Mode,
    /// `escalation.done_list`: where a card goes once its task is closed.
    done_list: String,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for PlankaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlankaClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The Planka cache file's content: the login token, and the ids of the
/// boards, lists and labels the agent resolved (so no board is read per
/// card). `pub(crate)` so the cycle can set a corrupt one aside like every
/// other state file; a file from an older version (no `boards`) still loads.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct CachedToken {
    #[serde(default)]
    url: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    token: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    boards: BTreeMap<String, BoardIds>,
}

fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        // Only small ids survive as numbers; accept them for odd servers.
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn item_id(v: &Value, what: &str) -> Result<String> {
    v.get("item")
        .and_then(|i| i.get("id"))
        .and_then(id_of)
        .with_context(|| format!("{what}: no item.id in the answer"))
}

/// The marker line that ties a card to its task's idempotency key.
pub(crate) fn source_marker(source: &str) -> String {
    format!("ops-agent source: {source}")
}

/// The last line of every comment the agent puts on a card: `key` names the
/// event and its source (`recovery <incident>`, `close <post>:<label>:<ms>`),
/// so a step repeated after a crash finds its comment instead of posting it
/// twice. Inline code, so Planka's markdown shows the key as it is (no
/// underscores turned into emphasis).
pub fn comment_marker(key: &str) -> String {
    format!(
        "`ops-agent: {}`",
        key.replace(['`', '\n', '\r'], " ").trim()
    )
}

/// What [`PlankaClient::add_comment`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commented {
    /// The comment was posted now.
    Posted,
    /// The card already had it (an earlier attempt was committed).
    Found,
    /// The card is gone from Planka (someone deleted it): nothing posted.
    Gone,
}

/// What [`PlankaClient::move_card`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// The card is in the list now.
    Moved,
    /// The card is gone from Planka: nothing moved.
    Gone,
}

impl PlankaClient {
    /// A client for `cfg` (which the caller checked is `enabled()`) for one
    /// cycle; `cache` is the owner-only Planka cache file (the token and the
    /// board ids; `None`: keep them in memory only). Secrets are read when
    /// first needed, so a missing password shows up as a pending card with
    /// the reason, not a crash.
    pub fn new(cfg: &PlankaConfig, cache: Option<PathBuf>) -> Result<PlankaClient> {
        Self::build(cfg, cache, Mode::Cycle)
    }

    /// A client that changes nothing (for `doctor`): it uses the cached
    /// token when there is one, never writes the cache, never accepts the
    /// terms, and [`PlankaClient::close`] logs out a session it opened.
    pub(crate) fn read_only(cfg: &PlankaConfig, cache: Option<PathBuf>) -> Result<PlankaClient> {
        Self::build(cfg, cache, Mode::ReadOnly)
    }

    fn build(cfg: &PlankaConfig, cache: Option<PathBuf>, mode: Mode) -> Result<PlankaClient> {
        cfg.validate()?;
        Ok(PlankaClient {
            base: cfg.url.trim().trim_end_matches('/').to_string(),
            http: crate::http::client(cfg.timeout_secs.get(), true)?,
            cfg: cfg.clone(),
            cache,
            mode,
            done_list: String::new(),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// The list cards go to once their task is closed
    /// (`escalation.done_list`; empty: they stay where they are).
    pub(crate) fn with_done_list(mut self, list: &str) -> PlankaClient {
        self.done_list = list.trim().to_string();
        self
    }

    /// See [`PlankaClient::with_done_list`].
    pub(crate) fn done_list(&self) -> &str {
        &self.done_list
    }

    /// Whether `team` has a board configured (else its tasks get no card).
    pub(crate) fn has_board(&self, team: &str) -> bool {
        self.cfg.boards.contains_key(team)
    }

    /// The team whose board gets incident cards, when configured
    /// (`planka.incident_team`).
    pub(crate) fn incident_team(&self) -> Option<&str> {
        Some(self.cfg.incident_team.trim()).filter(|t| !t.is_empty())
    }

    /// The browser link to a card, shown in replies, tasks and the ledger:
    /// on the server's URL as [`crate::scrub::url`] shows it.
    fn card_url(&self, card_id: &str) -> String {
        let base = crate::scrub::url(&self.base);
        format!("{}/cards/{card_id}", base.trim_end_matches('/'))
    }

    /// Whether Planka answered any request of this client (any status):
    /// it is up, so work queued while it was down can go now.
    pub(crate) fn answered(&self) -> bool {
        self.lock().answered
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        auth: Option<(&str, &str)>,
    ) -> Result<Value> {
        let text = self
            .send_raw(method, path, body, auth, crate::http::caps::PLANKA)
            .await?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{path}: the answer is not JSON"))
    }

    /// One request; the 2xx body as text, anything else an [`ApiError`].
    /// A request Planka does not answer marks it down for the rest of the
    /// client's life (the cycle), and every later one fails at once.
    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        auth: Option<(&str, &str)>,
        cap: usize,
    ) -> Result<String> {
        if let Some(why) = self.lock().down.clone() {
            bail!("{why} (Planka is skipped for the rest of this cycle)");
        }
        let url = format!("{}{path}", self.base);
        let shown = crate::scrub::url(&url);
        let mut req = self.http.request(method.clone(), &url);
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        // A timeout marks Planka down for the cycle: waiting again would
        // cost the same. A refused connection costs nothing and is not
        // remembered.
        let unreachable = |e: &reqwest::Error| {
            let why = format!("{method} {shown}: Planka unreachable: {e}");
            if e.is_timeout() {
                self.lock().down = Some(why.clone());
            }
            anyhow::Error::new(Unreachable(why))
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err(unreachable(&e)),
        };
        let status = resp.status().as_u16();
        let text = match crate::http::read_text(resp, cap).await {
            Ok(t) => t,
            Err(crate::http::BodyError::Transport(e)) => return Err(unreachable(&e)),
            Err(e) => {
                return Err(anyhow!(e).context(format!("{method} {shown}: reading the answer")))
            }
        };
        if status < 500 {
            self.lock().answered = true;
        }
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let message = parsed
            .as_ref()
            .and_then(|v| str_of(v, "message").map(str::to_string))
            .unwrap_or_else(|| crate::process::tail(text.as_bytes(), 200));
        Err(ApiError {
            method: method.to_string(),
            url,
            status,
            message,
            body: parsed.unwrap_or(Value::Null),
        }
        .into())
    }

    fn api_error(e: &anyhow::Error) -> Option<&ApiError> {
        e.chain().find_map(|c| c.downcast_ref::<ApiError>())
    }

    fn api_status(e: &anyhow::Error) -> Option<u16> {
        Self::api_error(e).map(|a| a.status)
    }

    /// The API generation, asked once per client.
    async fn major(&self) -> Result<Major> {
        match self.cfg.api_version {
            ApiVersion::V1 => return Ok(Major::V1),
            ApiVersion::V2 => return Ok(Major::V2),
            ApiVersion::Auto => {}
        }
        if let Some(m) = self.lock().major {
            return Ok(m);
        }
        let major = match self.send(Method::GET, "/api/bootstrap", None, None).await {
            Ok(v) => match v.pointer("/item/version").and_then(Value::as_str) {
                Some(ver) if ver.starts_with("1.") => Major::V1,
                _ => Major::V2,
            },
            Err(e) if Self::api_status(&e) == Some(404) => Major::V1,
            Err(e) => {
                return Err(
                    e.context("detecting the Planka version (set planka.api_version to skip)")
                )
            }
        };
        self.lock().major = Some(major);
        Ok(major)
    }

    /// Whether Planka answers at all, without credentials (`GET
    /// /api/bootstrap`; v1's 404 is an answer too). One cheap request,
    /// made when cards wait in the outbox and nothing else has asked.
    pub(crate) async fn ping(&self) -> bool {
        if self.answered() {
            return true;
        }
        let _ = self.send(Method::GET, "/api/bootstrap", None, None).await;
        self.answered()
    }

    fn api_key(&self) -> Result<Option<Secret>> {
        self.cfg.api_key().map(|k| k.read()).transpose()
    }

    fn username(&self) -> Result<&str> {
        self.cfg
            .username
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .context("planka.username is not set (and no api_key_file or api_key_env)")
    }

    fn password(&self) -> Result<Secret> {
        match &self.cfg.password_file {
            Some(p) => Secret::from_file(p).context("planka.password_file"),
            None => Secret::from_env(&self.cfg.password_env).context("planka.password_env"),
        }
    }

    /// The cache file as it is on disk (empty when missing or unreadable).
    fn read_cache(&self) -> CachedToken {
        let Some(path) = self.cache.as_deref() else {
            return CachedToken::default();
        };
        match files::read_private(path) {
            Ok(Some(t)) => serde_json::from_str(&t).unwrap_or_default(),
            Ok(None) => CachedToken::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "Ignoring the Planka cache.");
                CachedToken::default()
            }
        }
    }

    /// Loads the token and board ids from the cache file, once.
    fn load_cache(&self) {
        if self.lock().cache_read {
            return;
        }
        let cached = self.read_cache();
        let mut inner = self.lock();
        inner.cache_read = true;
        if cached.url != self.base {
            return;
        }
        if !cached.token.is_empty()
            && Some(cached.username.as_str()) == self.cfg.username.as_deref().map(str::trim)
            && inner.token.is_none()
        {
            inner.token = Some(Secret::new(cached.token));
        }
        if self.mode == Mode::Cycle {
            for (team, ids) in cached.boards {
                inner.boards.entry(team).or_insert(ids);
            }
        }
    }

    /// Writes the token and board ids to the cache file (a cycle only).
    fn save_cache(&self) {
        let Some(path) = self.cache.as_deref() else {
            return;
        };
        if self.mode != Mode::Cycle {
            return;
        }
        let c = {
            let inner = self.lock();
            CachedToken {
                url: self.base.clone(),
                username: self.username().unwrap_or_default().to_string(),
                token: inner
                    .token
                    .as_ref()
                    .map(|t| t.expose().to_string())
                    .unwrap_or_default(),
                boards: inner.boards.clone(),
            }
        };
        let bytes = serde_json::to_vec(&c).unwrap_or_default();
        if let Err(e) = files::write_private_atomic(path, &bytes) {
            tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "Could not write the Planka cache.");
        }
    }

    fn cached_token(&self) -> Option<Secret> {
        self.load_cache();
        self.lock().token.clone()
    }

    fn forget_token(&self) {
        self.lock().token = None;
        self.save_cache();
    }

    /// Logs in with username and password; on a v2 first login, accepts
    /// the terms when `accept_terms` allows it (never in read-only mode).
    /// A refusal is remembered: no second login this cycle.
    async fn login(&self) -> Result<Secret> {
        let result = self.login_once().await;
        if let Err(e) = &result {
            // Refused (by the server, or for want of a password), not
            // merely unreachable: remember it for the rest of the cycle.
            if e.downcast_ref::<Unreachable>().is_none() {
                self.lock().refused = Some(format!("{e:#}"));
            }
        }
        result
    }

    async fn login_once(&self) -> Result<Secret> {
        let username = self.username()?;
        let body = json!({ "emailOrUsername": username, "password": self.password()?.expose() });
        let refused = || {
            format!(
                "Planka refused the login of '{username}': check planka.username and the password"
            )
        };
        match self
            .send(Method::POST, "/api/access-tokens", Some(&body), None)
            .await
        {
            Ok(v) => token_from(&v, "POST /api/access-tokens"),
            Err(e) if Self::api_status(&e) == Some(403) => {
                let detail = Self::api_error(&e)
                    .map(|a| a.body.clone())
                    .unwrap_or(Value::Null);
                if str_of(&detail, "step") != Some("accept-terms") {
                    return Err(e.context(refused()));
                }
                let pending = str_of(&detail, "pendingToken")
                    .context("Planka asked for terms acceptance without a pendingToken")?;
                if self.mode == Mode::ReadOnly || !self.cfg.accept_terms {
                    // The pending session the refusal opened is revoked, so
                    // a look leaves nothing behind.
                    let _ = self
                        .send(
                            Method::POST,
                            "/api/access-tokens/revoke-pending-token",
                            Some(&json!({ "pendingToken": pending })),
                            None,
                        )
                        .await;
                    bail!(TermsPending {
                        accept_terms: self.cfg.accept_terms
                    });
                }
                let terms = self
                    .send(Method::GET, "/api/terms?type=general", None, None)
                    .await?;
                let signature = terms
                    .pointer("/item/signature")
                    .and_then(Value::as_str)
                    .context("GET /api/terms: no item.signature")?;
                let body = json!({ "pendingToken": pending, "signature": signature });
                let v = self
                    .send(
                        Method::POST,
                        "/api/access-tokens/accept-terms",
                        Some(&body),
                        None,
                    )
                    .await?;
                tracing::info!(url = %crate::scrub::url(&self.base), "Accepted the Planka terms for the agent's account.");
                token_from(&v, "POST /api/access-tokens/accept-terms")
            }
            Err(e) => match Self::api_status(&e) {
                Some(400 | 401) => Err(e.context(refused())),
                _ => Err(e.context("Planka login failed")),
            },
        }
    }

    async fn auth_header(&self) -> Result<(&'static str, Secret)> {
        // Refused once this cycle (a login, an API key): said as the first
        // time, so the cycle's report says it once, and not tried again.
        if let Some(why) = self.lock().refused.clone() {
            bail!("{why}");
        }
        if let Some(key) = self.api_key()? {
            return Ok(("X-Api-Key", key));
        }
        let token = match self.cached_token() {
            Some(t) => t,
            None => {
                let t = self.login().await?;
                {
                    let mut inner = self.lock();
                    inner.token = Some(t.clone());
                    inner.own_session = true;
                }
                self.save_cache();
                t
            }
        };
        Ok((
            "Authorization",
            Secret::new(format!("Bearer {}", token.expose())),
        ))
    }

    /// An authenticated call; a 401 with a password login logs in again
    /// once. A 401 with an API key says the key is no longer valid.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let text = self
            .call_raw(method, path, body, crate::http::caps::PLANKA)
            .await?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{path}: the answer is not JSON"))
    }

    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        cap: usize,
    ) -> Result<String> {
        let (name, value) = self.auth_header().await?;
        let first = self
            .send_raw(
                method.clone(),
                path,
                body,
                Some((name, value.expose())),
                cap,
            )
            .await;
        match first {
            Err(e) if Self::api_status(&e) == Some(401) && name == "Authorization" => {
                tracing::info!(url = %crate::scrub::url(&self.base), "Planka token rejected; logging in again.");
                self.forget_token();
                let (name, value) = self.auth_header().await?;
                self.send_raw(method, path, body, Some((name, value.expose())), cap)
                    .await
            }
            Err(e) if Self::api_status(&e) == Some(401) => {
                let key = self
                    .cfg
                    .api_key()
                    .map(|k| format!("{}: {}", k.key, k.describe()))
                    .unwrap_or_default();
                let why = format!(
                    "Planka rejected the API key ({key}): it was revoked or replaced; \
                     create a new one for the agent's user (POST /api/users/<id>/api-key) and update the secret"
                );
                let full = format!("{:#}", e.context(why));
                self.lock().refused = Some(full.clone());
                Err(anyhow!(full))
            }
            other => other,
        }
    }

    /// Read-only, for `doctor`: authenticates as a cycle would (the cached
    /// token, else a login; an API key) and says as whom.
    pub(crate) async fn whoami(&self) -> Result<String> {
        let v = self.call(Method::GET, "/api/users/me", None).await?;
        let name = v
            .pointer("/item/username")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let how = match (self.cfg.api_key().is_some(), self.lock().own_session) {
            (true, _) => "with the API key",
            (false, false) => "with the cycle's cached session",
            (false, true) => "logged in (this session is logged out again)",
        };
        Ok(format!("as {name}, {how}"))
    }

    /// The agent's own user id (`GET /api/users/me`).
    async fn own_id(&self) -> Result<String> {
        let v = self.call(Method::GET, "/api/users/me", None).await?;
        item_id(&v, "GET /api/users/me")
    }

    /// Ends a session this client opened itself (read-only mode, for
    /// `doctor`): `DELETE /api/access-tokens/me`. A cached token is left
    /// alone, it is the cycle's.
    pub(crate) async fn close(&self) {
        let token = {
            let inner = self.lock();
            match (&inner.token, inner.own_session, self.mode) {
                (Some(t), true, Mode::ReadOnly) => Some(t.clone()),
                _ => None,
            }
        };
        if let Some(t) = token {
            let bearer = format!("Bearer {}", t.expose());
            if let Err(e) = self
                .send(
                    Method::DELETE,
                    "/api/access-tokens/me",
                    None,
                    Some(("Authorization", &bearer)),
                )
                .await
            {
                tracing::warn!("Could not log out the doctor's Planka session: {e:#}");
            }
            self.lock().token = None;
        }
    }
}

/// Planka did not answer a request (refused, reset, timed out).
#[derive(Debug)]
struct Unreachable(String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// A v2 login that waits for the terms to be accepted, which this client
/// does not do (read-only, or `accept_terms = false`).
#[derive(Debug)]
pub(crate) struct TermsPending {
    /// `planka.accept_terms`: the first cycle will accept them.
    pub(crate) accept_terms: bool,
}

impl std::fmt::Display for TermsPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.accept_terms {
            write!(f, "the agent's Planka user has not accepted the terms yet; the first cycle accepts them (planka.accept_terms = true)")
        } else {
            write!(f, "Planka login needs the terms accepted: log in once in the Planka UI, or set planka.accept_terms = true")
        }
    }
}

impl std::error::Error for TermsPending {}

fn token_from(v: &Value, what: &str) -> Result<Secret> {
    v.get("item")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(Secret::new)
        .with_context(|| format!("{what}: no token in item"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_markers_cannot_break_out() {
        assert_eq!(
            comment_marker("recovery web@1700000000"),
            "`ops-agent: recovery web@1700000000`"
        );
        assert_eq!(comment_marker("a`b\nc "), "`ops-agent: a b c`");
    }

    #[test]
    fn ids_stay_strings() {
        assert_eq!(
            id_of(&json!("1357158568008091264")).as_deref(),
            Some("1357158568008091264")
        );
        assert_eq!(id_of(&json!(null)), None);
    }

    #[test]
    fn an_old_cache_file_still_loads() {
        let c: CachedToken =
            serde_json::from_str(r#"{"url":"http://p","username":"ops","token":"t"}"#).unwrap();
        assert!(c.boards.is_empty());
        assert_eq!(c.token, "t");
    }
}
