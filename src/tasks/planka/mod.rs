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
//! | auth | password login | password login (with a one-time terms acceptance) or `X-Api-Key` |
//!
//! Ids are 64-bit snowflakes above 2^53: they are kept and sent as strings,
//! never as JSON numbers. A password login's token is cached in an owner-only
//! file and the client logs in again once when the server answers 401.
//!
//! A card's description carries an `ops-agent source: <key>` marker line, and
//! the board is searched for it before creating, so a crash between creating
//! the card and recording it never makes a second card. Comments work the
//! same way: each ends with a [`comment_marker`] line naming its event, and
//! the card's newest comments are read for it before posting (both majors
//! answer the newest 50 first, `beforeId` pages further back; one page is
//! read, as the comment a crashed step made is among the card's latest).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Tag, Task};

mod config;

use crate::files;
use crate::secret::Secret;
use config::Major;
pub use config::{ApiVersion, BoardTarget, PlankaConfig};

/// Planka spaces positions this far apart; appending is max + this.
const POSITION_GAP: f64 = 65536.0;

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
    major: Option<Major>,
    board_ids: HashMap<String, String>,
}

/// Talks to one Planka server. Shared by reference: the token, the API
/// version and resolved board ids are cached inside.
pub struct PlankaClient {
    base: String,
    http: reqwest::Client,
    cfg: PlankaConfig,
    token_cache: Option<PathBuf>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for PlankaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlankaClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The Planka token cache file's content; public so the cycle can set a
/// corrupt one aside like every other state file.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct CachedToken {
    url: String,
    username: String,
    token: String,
}

/// A board as `GET /api/boards/{id}` shows it, reduced to what we use.
#[derive(Debug, Default)]
struct BoardDetail {
    lists: Vec<Value>,
    labels: Vec<Value>,
    cards: Vec<Value>,
    card_labels: Vec<Value>,
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

fn included<'a>(body: &'a Value, key: &str) -> &'a [Value] {
    body.get("included")
        .and_then(|i| i.get(key))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn max_position<'a>(items: impl Iterator<Item = &'a Value>) -> f64 {
    items
        .filter_map(|v| v.get("position").and_then(Value::as_f64))
        .fold(0.0, f64::max)
}

/// The marker line that ties a card to its task's idempotency key.
fn source_marker(source: &str) -> String {
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

/// The text of one item of a card's comment page: a v2 comment's `text`, or
/// a v1 `commentCard` action's `data.text` (other v1 actions have none).
fn comment_text(item: &Value) -> Option<&str> {
    match str_of(item, "type") {
        Some("commentCard") => item.pointer("/data/text").and_then(Value::as_str),
        Some(_) => None,
        None => str_of(item, "text"),
    }
}

/// Whether one of `items` (a page of a card's comments, either major) has
/// `marker` as a line of its own. Pure, table-tested.
fn already_commented(items: &[Value], marker: &str) -> bool {
    items
        .iter()
        .filter_map(comment_text)
        .any(|t| t.lines().any(|l| l.trim() == marker))
}

/// What [`PlankaClient::add_comment`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commented {
    /// The comment was posted now.
    Posted,
    /// The card already had it (an earlier attempt was committed).
    Found,
}

/// Picks the list named `name` among a board's lists: system lists (v2
/// archive/trash, `name: null`) never match; an exact name wins over a
/// case-insensitive one. Pure, table-tested.
fn pick_list<'a>(lists: &'a [Value], name: &str) -> Option<&'a Value> {
    let usable = |l: &&Value| {
        !matches!(str_of(l, "type"), Some("archive") | Some("trash")) && str_of(l, "name").is_some()
    };
    lists
        .iter()
        .filter(usable)
        .find(|l| str_of(l, "name") == Some(name))
        .or_else(|| {
            lists.iter().filter(usable).find(|l| {
                str_of(l, "name").is_some_and(|n| n.trim().eq_ignore_ascii_case(name.trim()))
            })
        })
}

impl PlankaClient {
    /// A client for `cfg` (which the caller checked is `enabled()`);
    /// `token_cache` is an owner-only file for the login token (`None`: keep
    /// it in memory only). Secrets are read when first needed, so a missing
    /// password shows up as a pending card with the reason, not a crash.
    pub fn new(cfg: &PlankaConfig, token_cache: Option<PathBuf>) -> Result<PlankaClient> {
        cfg.validate()?;
        Ok(PlankaClient {
            base: cfg.url.trim().trim_end_matches('/').to_string(),
            http: crate::http::client(cfg.timeout_secs.get(), true)?,
            cfg: cfg.clone(),
            token_cache,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Whether `team` has a board configured (else its tasks get no card).
    pub(crate) fn has_board(&self, team: &str) -> bool {
        self.cfg.boards.contains_key(team)
    }

    /// The browser link to a card, shown in replies, tasks and the ledger:
    /// on the server's URL as [`crate::scrub::url`] shows it.
    fn card_url(&self, card_id: &str) -> String {
        let base = crate::scrub::url(&self.base);
        format!("{}/cards/{card_id}", base.trim_end_matches('/'))
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
        let url = format!("{}{path}", self.base);
        let shown = crate::scrub::url(&url);
        let mut req = self.http.request(method.clone(), &url);
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {shown}: Planka unreachable"))?;
        let status = resp.status().as_u16();
        let text = crate::http::read_text(resp, crate::http::caps::PLANKA)
            .await
            .with_context(|| format!("{method} {shown}: reading the answer"))?;
        if (200..300).contains(&status) {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).with_context(|| {
                format!("{method} {shown}: HTTP {status} but the body is not JSON")
            });
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

    fn api_status(e: &anyhow::Error) -> Option<u16> {
        e.downcast_ref::<ApiError>().map(|a| a.status)
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

    fn api_key(&self) -> Result<Option<Secret>> {
        self.cfg.api_key().map(|k| k.read()).transpose()
    }

    fn username(&self) -> Result<&str> {
        self.cfg
            .username
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .context("planka.username is not set (and no api_key_file or api_key_env)")
    }

    fn password(&self) -> Result<Secret> {
        match &self.cfg.password_file {
            Some(p) => Secret::from_file(p).context("planka.password_file"),
            None => Secret::from_env(&self.cfg.password_env).context("planka.password_env"),
        }
    }

    fn cached_token(&self) -> Option<Secret> {
        if let Some(t) = self.lock().token.clone() {
            return Some(t);
        }
        let path = self.token_cache.as_deref()?;
        let text = match files::read_private(path) {
            Ok(Some(t)) => t,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "Ignoring the Planka token cache.");
                return None;
            }
        };
        let cached: CachedToken = serde_json::from_str(&text).ok()?;
        if cached.url != self.base || Some(cached.username.as_str()) != self.cfg.username.as_deref()
        {
            return None;
        }
        let token = Secret::new(cached.token);
        self.lock().token = Some(token.clone());
        Some(token)
    }

    fn store_token(&self, token: &Secret) {
        self.lock().token = Some(token.clone());
        if let (Some(path), Ok(username)) = (self.token_cache.as_deref(), self.username()) {
            let c = CachedToken {
                url: self.base.clone(),
                username: username.to_string(),
                token: token.expose().to_string(),
            };
            let bytes = serde_json::to_vec(&c).unwrap_or_default();
            if let Err(e) = files::write_private_atomic(path, &bytes) {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "Could not cache the Planka token.");
            }
        }
    }

    fn forget_token(&self) {
        self.lock().token = None;
        if let Some(path) = self.token_cache.as_deref() {
            let _ = files::remove_if_present(path);
        }
    }

    /// Logs in with username and password; on a v2 first login, accepts
    /// the terms when `accept_terms` allows it.
    async fn login(&self) -> Result<Secret> {
        let body =
            json!({ "emailOrUsername": self.username()?, "password": self.password()?.expose() });
        match self
            .send(Method::POST, "/api/access-tokens", Some(&body), None)
            .await
        {
            Ok(v) => token_from(&v, "POST /api/access-tokens"),
            Err(e) if Self::api_status(&e) == Some(403) => {
                let detail = e
                    .downcast_ref::<ApiError>()
                    .map(|a| a.body.clone())
                    .unwrap_or(Value::Null);
                if str_of(&detail, "step") != Some("accept-terms") {
                    return Err(e.context("Planka login refused"));
                }
                if !self.cfg.accept_terms {
                    bail!("Planka login needs the terms accepted: log in once in the Planka UI, or set planka.accept_terms = true");
                }
                let pending = str_of(&detail, "pendingToken")
                    .context("Planka asked for terms acceptance without a pendingToken")?;
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
            Err(e) => Err(e.context("Planka login failed")),
        }
    }

    async fn auth_header(&self) -> Result<(&'static str, Secret)> {
        if let Some(key) = self.api_key()? {
            return Ok(("X-Api-Key", key));
        }
        let token = match self.cached_token() {
            Some(t) => t,
            None => {
                let t = self.login().await?;
                self.store_token(&t);
                t
            }
        };
        Ok((
            "Authorization",
            Secret::new(format!("Bearer {}", token.expose())),
        ))
    }

    /// An authenticated call; a 401 with a password login logs in again once.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let (name, value) = self.auth_header().await?;
        let first = self
            .send(method.clone(), path, body, Some((name, value.expose())))
            .await;
        match first {
            Err(e) if Self::api_status(&e) == Some(401) && name == "Authorization" => {
                tracing::info!(url = %crate::scrub::url(&self.base), "Planka token rejected; logging in again.");
                self.forget_token();
                let (name, value) = self.auth_header().await?;
                self.send(method, path, body, Some((name, value.expose())))
                    .await
            }
            other => other,
        }
    }

    async fn board_id(&self, team: &str) -> Result<(String, BoardTarget)> {
        let target = self
            .cfg
            .boards
            .get(team)
            .cloned()
            .with_context(|| format!("planka.boards.{team} is not configured"))?;
        if let Some(id) = self.lock().board_ids.get(team).cloned() {
            return Ok((id, target));
        }
        let projects = self.call(Method::GET, "/api/projects", None).await?;
        let project_ids: Vec<String> = match &target.project {
            Some(p) => projects
                .get("items")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .filter(|v| str_of(v, "name") == Some(p.as_str()))
                .filter_map(|v| v.get("id").and_then(id_of))
                .collect(),
            None => Vec::new(),
        };
        let found: Vec<&Value> = included(&projects, "boards")
            .iter()
            .filter(|b| str_of(b, "name") == Some(target.board.as_str()))
            .filter(|b| {
                target.project.is_none()
                    || b.get("projectId")
                        .and_then(id_of)
                        .is_some_and(|p| project_ids.contains(&p))
            })
            .collect();
        let id = match found.as_slice() {
            [one] => one.get("id").and_then(id_of).context("board without an id")?,
            [] => bail!(
                "Planka board '{}'{} not found or not shared with the agent's user (planka.boards.{team})",
                target.board,
                target.project.as_deref().map(|p| format!(" in project '{p}'")).unwrap_or_default()
            ),
            _ => bail!("Planka has several boards named '{}'; set planka.boards.{team}.project", target.board),
        };
        self.lock().board_ids.insert(team.to_string(), id.clone());
        Ok((id, target))
    }

    async fn board_detail(&self, board_id: &str) -> Result<BoardDetail> {
        let v = self
            .call(Method::GET, &format!("/api/boards/{board_id}"), None)
            .await?;
        Ok(BoardDetail {
            lists: included(&v, "lists").to_vec(),
            labels: included(&v, "labels").to_vec(),
            cards: included(&v, "cards").to_vec(),
            card_labels: included(&v, "cardLabels").to_vec(),
        })
    }

    /// Read-only: logs in (or uses the API key), finds the team's board and
    /// its list, as `create_card` would, and says what it found. For
    /// `doctor`, so a wrong password or a missing list shows before the
    /// first card is due.
    pub(crate) async fn check_team(&self, team: &str) -> Result<String> {
        self.major().await?;
        let (board_id, target) = self.board_id(team).await?;
        let detail = self.board_detail(&board_id).await?;
        pick_list(&detail.lists, &target.list).with_context(|| {
            format!(
                "Planka board '{}' has no list '{}' (planka.boards.{team}.list)",
                target.board, target.list
            )
        })?;
        Ok(format!("board '{}', list '{}'", target.board, target.list))
    }

    /// Creates the card for `task` (MC id `task_id`) on its team's board and
    /// labels it BILLABLE/INTERNAL, creating the label when the board lacks
    /// it. Finds and completes a card an earlier run made for the same
    /// source instead of making a second one.
    pub async fn create_card(&self, task: &Task, task_id: &str) -> Result<CardRef> {
        let major = self.major().await?;
        let (board_id, target) = self.board_id(&task.team).await?;
        let detail = self.board_detail(&board_id).await?;
        let list = pick_list(&detail.lists, &target.list).with_context(|| {
            format!(
                "Planka board '{}' has no list '{}' (planka.boards.{}.list)",
                target.board, target.list, task.team
            )
        })?;
        let list_id = list
            .get("id")
            .and_then(id_of)
            .context("list without an id")?;
        let marker = source_marker(&task.source);
        let existing = detail.cards.iter().find(|c| {
            str_of(c, "description").is_some_and(|d| d.lines().any(|l| l.trim() == marker))
        });
        let (card_id, existed) = match existing.and_then(|c| c.get("id").and_then(id_of)) {
            Some(id) => (id, true),
            None => {
                let position = max_position(detail.cards.iter().filter(|c| {
                    c.get("listId").and_then(id_of).as_deref() == Some(list_id.as_str())
                })) + POSITION_GAP;
                let name: String = task.title.chars().take(1024).collect();
                let description = format!("{}\n\nMC task: {task_id}\n{marker}", task.description);
                let mut body =
                    json!({ "name": name, "description": description, "position": position });
                if major == Major::V2 {
                    body["type"] = json!("project");
                }
                let v = self
                    .call(
                        Method::POST,
                        &format!("/api/lists/{list_id}/cards"),
                        Some(&body),
                    )
                    .await?;
                (
                    v.get("item")
                        .and_then(|i| i.get("id"))
                        .and_then(id_of)
                        .context("card create: no item.id in the answer")?,
                    false,
                )
            }
        };
        self.attach_tag_label(major, &board_id, &detail, &card_id, task.tag)
            .await?;
        Ok(CardRef {
            card_url: self.card_url(&card_id),
            card_id,
            existed,
        })
    }

    async fn attach_tag_label(
        &self,
        major: Major,
        board_id: &str,
        detail: &BoardDetail,
        card_id: &str,
        tag: Tag,
    ) -> Result<()> {
        let name = tag.as_str();
        let label_id = match detail
            .labels
            .iter()
            .find(|l| str_of(l, "name").is_some_and(|n| n.trim().eq_ignore_ascii_case(name)))
            .and_then(|l| l.get("id").and_then(id_of))
        {
            Some(id) => id,
            None => {
                let body = json!({
                    "name": name,
                    "color": self.cfg.color_for(tag),
                    "position": max_position(detail.labels.iter()) + POSITION_GAP,
                });
                let v = self
                    .call(
                        Method::POST,
                        &format!("/api/boards/{board_id}/labels"),
                        Some(&body),
                    )
                    .await?;
                v.get("item")
                    .and_then(|i| i.get("id"))
                    .and_then(id_of)
                    .context("label create: no item.id")?
            }
        };
        let already = detail.card_labels.iter().any(|cl| {
            cl.get("cardId").and_then(id_of).as_deref() == Some(card_id)
                && cl.get("labelId").and_then(id_of).as_deref() == Some(label_id.as_str())
        });
        if already {
            return Ok(());
        }
        let path = match major {
            Major::V2 => format!("/api/cards/{card_id}/card-labels"),
            Major::V1 => format!("/api/cards/{card_id}/labels"),
        };
        match self
            .call(Method::POST, &path, Some(&json!({ "labelId": label_id })))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if Self::api_status(&e) == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Adds a comment to a card (status updates, resolution notes) once per
    /// `key`, the stable name of the event (see [`comment_marker`]): the
    /// text ends with the marker line, and the card's newest comments are
    /// read first; when one carries the marker, nothing is posted. So a
    /// crash after Planka committed the comment and before the caller
    /// recorded it makes no second comment. A failed read is an error (the
    /// caller's step is owed again), never a blind post.
    pub async fn add_comment(&self, card_id: &str, key: &str, text: &str) -> Result<Commented> {
        let major = self.major().await?;
        let marker = comment_marker(key);
        let (list, post) = match major {
            // v1 answers comment actions only unless `withDetails` is set.
            Major::V1 => (
                format!("/api/cards/{card_id}/actions"),
                format!("/api/cards/{card_id}/comment-actions"),
            ),
            Major::V2 => (
                format!("/api/cards/{card_id}/comments"),
                format!("/api/cards/{card_id}/comments"),
            ),
        };
        let page = self
            .call(Method::GET, &list, None)
            .await
            .context("reading the card's comments")?;
        let items = page
            .get("items")
            .and_then(Value::as_array)
            .with_context(|| format!("GET {list}: no items in the answer"))?;
        if already_commented(items, &marker) {
            return Ok(Commented::Found);
        }
        let body = json!({ "text": format!("{}\n\n{marker}", text.trim_end()) });
        self.call(Method::POST, &post, Some(&body)).await?;
        Ok(Commented::Posted)
    }

    /// Moves a card to the end of list `list` on `team`'s board (e.g. to a
    /// "Done" column when an incident recovers).
    pub async fn move_card(&self, card_id: &str, team: &str, list: &str) -> Result<()> {
        let (board_id, target) = self.board_id(team).await?;
        let detail = self.board_detail(&board_id).await?;
        let l = pick_list(&detail.lists, list)
            .ok_or_else(|| anyhow!("Planka board '{}' has no list '{list}'", target.board))?;
        let list_id = l.get("id").and_then(id_of).context("list without an id")?;
        let position = max_position(
            detail
                .cards
                .iter()
                .filter(|c| c.get("listId").and_then(id_of).as_deref() == Some(list_id.as_str())),
        ) + POSITION_GAP;
        self.call(
            Method::PATCH,
            &format!("/api/cards/{card_id}"),
            Some(&json!({ "listId": list_id, "position": position })),
        )
        .await
        .map(|_| ())
    }
}

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
    fn pick_list_table() {
        let lists = vec![
            json!({"id":"1","name":null,"type":"archive"}),
            json!({"id":"2","name":null,"type":"trash"}),
            json!({"id":"3","name":"inbox","type":"active"}),
            json!({"id":"4","name":"Inbox","type":"active"}),
            json!({"id":"5","name":"Done","type":"closed"}),
            json!({"id":"6","name":"Todo"}),
        ];
        for (name, want) in [
            ("Inbox", Some("4")),
            ("INBOX", Some("3")),
            ("Done", Some("5")),
            ("Todo", Some("6")),
            ("Trash", None),
            ("", None),
        ] {
            assert_eq!(
                pick_list(&lists, name).and_then(|l| str_of(l, "id")),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn already_commented_table() {
        let m = comment_marker("recovery web@1700000000");
        assert_eq!(m, "`ops-agent: recovery web@1700000000`");
        let mine = format!("Recovered at 10:00.\n\n{m}");
        let v2 = |t: &str| json!({"id": "2", "cardId": "1", "userId": "9", "text": t});
        let v1 = |ty: &str, t: &str| json!({"id": "2", "type": ty, "data": {"text": t}});
        for (items, want, why) in [
            (vec![], false, "no comments"),
            (vec![v2(&mine)], true, "v2, the marker line"),
            (vec![v2(&mine.replace('\n', "\r\n"))], true, "v2, CRLF"),
            (
                vec![v2("hello"), v2(&format!("x\n  {m}  "))],
                true,
                "v2, padded, not first",
            ),
            (
                vec![v2(&m.replace("1700000000", "1700000001"))],
                false,
                "another event",
            ),
            (
                vec![v2(&format!("quoting {m}"))],
                false,
                "not a line of its own",
            ),
            (vec![v2(&format!("{m}x"))], false, "a longer key"),
            (vec![v1("commentCard", &mine)], true, "v1 comment action"),
            (vec![v1("moveCard", &mine)], false, "v1, another action"),
            (
                vec![json!({"id": "3", "type": "commentCard"})],
                false,
                "v1, no text",
            ),
            (
                vec![json!({"id": "4", "text": null})],
                false,
                "v2, null text",
            ),
        ] {
            assert_eq!(already_commented(&items, &m), want, "{why}");
        }
        // Keys cannot break out of the inline code or the line.
        assert_eq!(comment_marker("a`b\nc "), "`ops-agent: a b c`");
    }

    #[test]
    fn ids_stay_strings_and_positions_append() {
        assert_eq!(
            id_of(&json!("1357158568008091264")).as_deref(),
            Some("1357158568008091264")
        );
        assert_eq!(id_of(&json!(null)), None);
        let cards = [
            json!({"position": 65536.0}),
            json!({"position": 131072}),
            json!({}),
        ];
        assert_eq!(max_position(cards.iter()) + POSITION_GAP, 196608.0);
        assert_eq!(max_position([].iter()), 0.0);
    }
}
