//! The Mattermost API v4 client: authentication (token, or login with a
//! cached session token), the handful of endpoints the agent uses, request
//! counting, and the mapping of HTTP statuses to the error kinds callers
//! branch on (401 → re-login, 404 → re-resolve, 429 → back off).
//!
//! Every request goes through [`Client::call`], so every request is counted,
//! has the timeout of `crate::http::client`, honours a 429's `Retry-After`
//! only while the cycle deadline allows, and fails with an error naming the
//! method, URL and status. No token ever appears in an error or log line.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::config::MattermostConfig;
use super::error::{snippet, status_error, transport_error};
pub use super::error::{MmError, MmErrorKind};
use super::wire::{Channel, CreatePost, Post, PostList, Reaction, Team, User};
use crate::secret::Secret;

/// The server's page size cap for `per_page` (larger values are clamped).
pub const MAX_PER_PAGE: u32 = 200;

/// How often one request is retried after a 429 before giving up.
const MAX_RATE_LIMIT_RETRIES: u32 = 5;

/// Without a deadline, the longest 429 wait the client accepts.
const MAX_WAIT_WITHOUT_DEADLINE: Duration = Duration::from_secs(30);

/// How the client authenticates.
pub enum Credentials {
    /// A bot or personal access token; it never expires, so a 401 is final.
    Token {
        /// The token.
        token: Secret,
        /// Where it came from ("env OPS_AGENT_MM_TOKEN"), to key caches and messages.
        source: String,
    },
    /// Login id + password, with the session token cached in an owner-only file.
    Login {
        /// Username or email.
        login_id: String,
        /// Password.
        password: Secret,
        /// Token cache file (runbook: /tmp/mm-token.json).
        cache_path: PathBuf,
    },
}

impl Credentials {
    /// Reads the secret the config points at
    /// ([`MattermostConfig::credential`] says which).
    fn from_config(cfg: &MattermostConfig, token_cache: &Path) -> Result<Self> {
        let secret = cfg.credential();
        let value = secret.read()?;
        Ok(match (&cfg.token_file, &cfg.login_id) {
            (None, Some(login_id)) => Credentials::Login {
                login_id: login_id.clone(),
                password: value,
                cache_path: token_cache.to_path_buf(),
            },
            _ => Credentials::Token {
                token: value,
                source: secret.describe(),
            },
        })
    }

    /// A non-secret description, e.g. "login opsbot" or "token from env X".
    fn describe(&self) -> String {
        match self {
            Credentials::Token { source, .. } => format!("token from {source}"),
            Credentials::Login { login_id, .. } => format!("login {login_id}"),
        }
    }
}

/// The token cache file's content (runbook format); public so the cycle
/// can set a corrupt one aside like every other state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct TokenCache {
    token: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    url: String,
}

/// A response that passed status checks.
struct Resp {
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Mattermost API v4 client. Cheap to share by reference across tasks.
pub struct Client {
    base: String,
    /// `base` as messages show it ([`crate::scrub::url`]).
    shown: String,
    http: reqwest::Client,
    creds: Credentials,
    token: Mutex<Option<Secret>>,
    user_id: Mutex<Option<String>>,
    login_lock: tokio::sync::Mutex<()>,
    requests: AtomicU32,
    deadline: Mutex<Option<Instant>>,
    version: Mutex<Option<String>>,
    made: Mutex<BTreeMap<String, Made>>,
}

/// The posts a client made in one channel: what moved its `last_post_at`
/// and `total_msg_count` (see [`super::poll::next_quiet`]). Kept per
/// channel, not per post: a busy cycle makes tens of thousands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Made {
    /// The newest one's `create_at`.
    pub(crate) newest_ms: i64,
    /// How many.
    pub(crate) count: i64,
}

impl Made {
    /// Counts a post made at `create_at` in `channel_id`.
    pub(crate) fn add(made: &mut BTreeMap<String, Made>, channel_id: &str, create_at: i64) {
        match made.get_mut(channel_id) {
            Some(m) => {
                m.newest_ms = m.newest_ms.max(create_at);
                m.count += 1;
            }
            None => {
                let m = Made {
                    newest_ms: create_at,
                    count: 1,
                };
                made.insert(channel_id.to_string(), m);
            }
        }
    }
}

impl Client {
    /// Builds a client for `base_url` (no `/api/v4`); no request is made yet.
    pub fn new(base_url: &str, creds: Credentials, timeout: Duration) -> Result<Self> {
        let http = crate::http::client(timeout, true)?;
        let base = base_url.trim().trim_end_matches('/').to_string();
        Ok(Client {
            shown: crate::scrub::url(&base),
            base,
            http,
            creds,
            token: Mutex::new(None),
            user_id: Mutex::new(None),
            login_lock: tokio::sync::Mutex::new(()),
            requests: AtomicU32::new(0),
            deadline: Mutex::new(None),
            version: Mutex::new(None),
            made: Mutex::new(BTreeMap::new()),
        })
    }

    /// Builds a client from the `[mattermost]` section and the token cache path.
    pub(crate) fn from_config(cfg: &MattermostConfig, token_cache: &Path) -> Result<Self> {
        let creds = Credentials::from_config(cfg, token_cache)?;
        Client::new(&cfg.url, creds, cfg.timeout_secs.get())
    }

    /// The base URL as messages show it: no userinfo, no secret query
    /// values ([`crate::scrub::url`]).
    pub(crate) fn base_url(&self) -> &str {
        &self.shown
    }

    /// Which server and which credentials: cached ids (own user id) are
    /// only valid for the same identity.
    pub(crate) fn identity(&self) -> String {
        format!("{} ({})", self.base, self.creds.describe())
    }

    /// Requests sent so far (every attempt, including logins and retries).
    pub(crate) fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Sets the cycle deadline: a 429 whose wait would end after it fails
    /// with [`MmErrorKind::RateLimited`] instead of sleeping.
    pub(crate) fn set_deadline(&self, deadline: Instant) {
        *self.deadline.lock().unwrap() = Some(deadline);
    }

    /// The server version from the last `X-Version-Id` header seen, e.g. "10.5.0".
    pub(crate) fn server_version(&self) -> Option<String> {
        self.version.lock().unwrap().clone()
    }

    /// The agent's own user id, once known (from login or [`Client::me`]).
    pub(crate) fn own_user_id(&self) -> Option<String> {
        self.user_id.lock().unwrap().clone()
    }

    /// Remembers the agent's id found in the state's cache, so replies and
    /// alerts do not ask `users/me` again this cycle.
    pub(crate) fn set_own_user_id(&self, id: &str) {
        self.user_id
            .lock()
            .unwrap()
            .get_or_insert_with(|| id.to_string());
    }

    /// The agent's own user id: known from the login or the cache, else
    /// asked once with `GET /users/me`.
    pub(crate) async fn own_id(&self) -> Result<String, MmError> {
        match self.own_user_id() {
            Some(id) => Ok(id),
            None => Ok(self.me().await?.id),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v4{}", self.base, path)
    }

    /// [`Client::url`] as messages show it.
    fn shown_url(&self, path: &str) -> String {
        format!("{}/api/v4{}", self.shown, path)
    }

    /// One HTTP exchange: counts it, records the version header, maps
    /// transport failures. Status handling is the caller's.
    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        token: Option<&Secret>,
    ) -> Result<(u16, HeaderMap, Vec<u8>), MmError> {
        let endpoint = format!("{method} {}", crate::scrub::url(url));
        let mut req = self.http.request(method.clone(), url);
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t.expose());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(&endpoint, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if let Some(v) = headers.get("x-version-id").and_then(|v| v.to_str().ok()) {
            *self.version.lock().unwrap() = Some(parse_version_id(v));
        }
        let bytes = match crate::http::read_body(resp, crate::http::caps::MATTERMOST).await {
            Ok(b) => b,
            Err(crate::http::BodyError::Transport(e)) => return Err(transport_error(&endpoint, e)),
            Err(e) => {
                return Err(MmError::new(
                    MmErrorKind::BadResponse,
                    &endpoint,
                    e.to_string(),
                ))
            }
        };
        Ok((status, headers, bytes))
    }

    /// Sends a request with auth, one re-login on 401 (login credentials
    /// only) and 429 back-off within the deadline.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        auth: bool,
    ) -> Result<Resp, MmError> {
        let url = self.url(path);
        let endpoint = format!("{method} {}", self.shown_url(path));
        let mut relogged = false;
        let mut rate_retries = 0;
        loop {
            let token = if auth {
                Some(self.current_token().await?)
            } else {
                None
            };
            let (status, headers, body_bytes) = self
                .send_once(&method, &url, query, body, token.as_ref())
                .await?;
            match status {
                200..=299 => {
                    return Ok(Resp {
                        headers,
                        body: body_bytes,
                    })
                }
                401 if auth && !relogged && matches!(self.creds, Credentials::Login { .. }) => {
                    tracing::info!(endpoint = %endpoint, "Mattermost session expired; logging in again.");
                    self.relogin(token.as_ref()).await?;
                    relogged = true;
                }
                429 => {
                    let wait = retry_wait(&headers);
                    let fits = match *self.deadline.lock().unwrap() {
                        Some(d) => Instant::now() + wait.unwrap_or(Duration::from_secs(1)) < d,
                        None => wait.unwrap_or_default() <= MAX_WAIT_WITHOUT_DEADLINE,
                    };
                    if rate_retries >= MAX_RATE_LIMIT_RETRIES || !fits {
                        return Err(MmError::new(
                            MmErrorKind::RateLimited { retry_after: wait },
                            &endpoint,
                            format!(
                                "HTTP 429 rate limited (retry after {}); the wait does not fit before the deadline",
                                wait.map(|w| format!("{}s", w.as_secs_f32()))
                                    .unwrap_or_else(|| "an unknown time".into())
                            ),
                        ));
                    }
                    rate_retries += 1;
                    let wait = wait.unwrap_or(Duration::from_secs(1));
                    tracing::info!(endpoint = %endpoint, wait_ms = wait.as_millis() as u64, "Mattermost rate limit hit; waiting.");
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(status_error(&endpoint, status, &body_bytes)),
            }
        }
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(T, HeaderMap), MmError> {
        let endpoint = format!("{method} {}", self.shown_url(path));
        let resp = self.call(method, path, query, body, true).await?;
        let value = serde_json::from_slice(&resp.body).map_err(|e| {
            MmError::new(
                MmErrorKind::BadResponse,
                &endpoint,
                format!("unexpected response body ({e}): {}", snippet(&resp.body)),
            )
        })?;
        Ok((value, resp.headers))
    }

    /// The token for the next request: in memory, else from the credentials
    /// or the token cache, else a fresh login.
    async fn current_token(&self) -> Result<Secret, MmError> {
        if let Some(t) = self.token.lock().unwrap().clone() {
            return Ok(t);
        }
        match &self.creds {
            Credentials::Token { token, .. } => {
                *self.token.lock().unwrap() = Some(token.clone());
                Ok(token.clone())
            }
            Credentials::Login { cache_path, .. } => {
                let _guard = self.login_lock.lock().await;
                if let Some(t) = self.token.lock().unwrap().clone() {
                    return Ok(t);
                }
                if let Some(cache) = self.read_cache(cache_path) {
                    let t = Secret::new(cache.token);
                    *self.token.lock().unwrap() = Some(t.clone());
                    if !cache.user_id.is_empty() {
                        *self.user_id.lock().unwrap() = Some(cache.user_id);
                    }
                    return Ok(t);
                }
                self.login().await
            }
        }
    }

    /// Reads the token cache; anything unusable (missing, corrupt, for
    /// another server) means "log in", a planted symlink is logged.
    fn read_cache(&self, path: &Path) -> Option<TokenCache> {
        let text = match crate::files::read_private(path) {
            Ok(Some(t)) => t,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %format!("{e:#}"), "Ignoring the Mattermost token cache.");
                return None;
            }
        };
        match serde_json::from_str::<TokenCache>(&text) {
            Ok(c) if !c.token.is_empty() && (c.url.is_empty() || c.url == self.base) => Some(c),
            Ok(_) => None,
            Err(_) => {
                tracing::warn!(file = %path.display(), "Mattermost token cache is corrupt; logging in again.");
                None
            }
        }
    }

    /// Logs in again unless another task already did since `failed` was used.
    async fn relogin(&self, failed: Option<&Secret>) -> Result<(), MmError> {
        let _guard = self.login_lock.lock().await;
        let current = self.token.lock().unwrap().clone();
        if current.is_some() && current.as_ref() != failed {
            return Ok(());
        }
        self.login().await.map(|_| ())
    }

    /// `POST /users/login`; the session token is in the `Token` header.
    /// Callers hold `login_lock`.
    async fn login(&self) -> Result<Secret, MmError> {
        let Credentials::Login {
            login_id,
            password,
            cache_path,
        } = &self.creds
        else {
            return Err(MmError::new(
                MmErrorKind::Credentials,
                &format!("POST {}", self.shown_url("/users/login")),
                "a token cannot log in",
            ));
        };
        let url = self.url("/users/login");
        let endpoint = format!("POST {}", self.shown_url("/users/login"));
        let body = serde_json::json!({"login_id": login_id, "password": password.expose()});
        let (status, headers, bytes) = self
            .send_once(&Method::POST, &url, &[], Some(&body), None)
            .await?;
        if !(200..=299).contains(&status) {
            let mut e = status_error(&endpoint, status, &bytes);
            if status == 401 {
                e.detail = format!(
                    "{} (check mattermost.login_id and the password variable)",
                    e.detail
                );
            }
            return Err(e);
        }
        let token = headers
            .get("token")
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                MmError::new(
                    MmErrorKind::BadResponse,
                    &endpoint,
                    "login succeeded but the response has no Token header",
                )
            })?
            .to_string();
        let user: User = serde_json::from_slice(&bytes).unwrap_or_default();
        let cache = TokenCache {
            token: token.clone(),
            user_id: user.id.clone(),
            url: self.base.clone(),
        };
        let json = serde_json::to_vec_pretty(&cache).expect("token cache serialises");
        if let Err(e) = crate::files::write_private_atomic(cache_path, &json) {
            // The session still works for this cycle; the next one logs in again.
            tracing::warn!(file = %cache_path.display(), error = %format!("{e:#}"), "Could not write the Mattermost token cache.");
        }
        let secret = Secret::new(token);
        *self.token.lock().unwrap() = Some(secret.clone());
        if !user.id.is_empty() {
            *self.user_id.lock().unwrap() = Some(user.id);
        }
        Ok(secret)
    }

    /// `GET /system/ping` (no auth): is the server up and healthy. Also
    /// learns the server version from the response headers.
    pub async fn ping(&self) -> Result<(), MmError> {
        let endpoint = format!("GET {}", self.shown_url("/system/ping"));
        let resp = self
            .call(Method::GET, "/system/ping", &[], None, false)
            .await?;
        let v: Value = serde_json::from_slice(&resp.body).map_err(|e| {
            MmError::new(
                MmErrorKind::BadResponse,
                &endpoint,
                format!("not JSON ({e})"),
            )
        })?;
        match v.get("status").and_then(Value::as_str) {
            Some(s) if s.eq_ignore_ascii_case("ok") => Ok(()),
            other => Err(MmError::new(
                MmErrorKind::BadResponse,
                &endpoint,
                format!("server reports status {other:?}"),
            )),
        }
    }

    /// `GET /users/me`: who the credentials belong to; remembers the id.
    pub async fn me(&self) -> Result<User, MmError> {
        let (u, _): (User, _) = self.call_json(Method::GET, "/users/me", &[], None).await?;
        *self.user_id.lock().unwrap() = Some(u.id.clone());
        Ok(u)
    }

    /// `GET /teams/name/{name}`; a missing team is [`MmErrorKind::NotFound`].
    pub(crate) async fn team_by_name(&self, name: &str) -> Result<Team, MmError> {
        let path = format!("/teams/name/{}", path_segment(name));
        Ok(self.call_json(Method::GET, &path, &[], None).await?.0)
    }

    /// `POST /users/usernames`: unknown usernames are simply absent.
    pub(crate) async fn users_by_usernames(
        &self,
        usernames: &[String],
    ) -> Result<Vec<User>, MmError> {
        if usernames.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::json!(usernames);
        Ok(self
            .call_json(Method::POST, "/users/usernames", &[], Some(&body))
            .await?
            .0)
    }

    /// `POST /users/ids`: unknown ids are simply absent.
    pub(crate) async fn users_by_ids(&self, ids: &[String]) -> Result<Vec<User>, MmError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::json!(ids);
        Ok(self
            .call_json(Method::POST, "/users/ids", &[], Some(&body))
            .await?
            .0)
    }

    /// `GET /users/me/teams/{team_id}/channels`: the agent's channels in a
    /// team (plus its direct/group channels, whose `team_id` is "").
    /// Also returns the server's clock from the `Date` header, in epoch ms
    /// (second precision, rounded down), when the server sent one.
    pub(crate) async fn my_channels(
        &self,
        team_id: &str,
    ) -> Result<(Vec<Channel>, Option<i64>), MmError> {
        let path = format!("/users/me/teams/{}/channels", path_segment(team_id));
        let (channels, headers) = self.call_json(Method::GET, &path, &[], None).await?;
        Ok((channels, server_time_ms(&headers)))
    }

    /// `GET /channels/{id}/posts?since=`: posts whose `update_at` > since,
    /// at most 1000, in no guaranteed order (see api-facts.md §1).
    pub(crate) async fn posts_since(
        &self,
        channel_id: &str,
        since_ms: i64,
    ) -> Result<PostList, MmError> {
        let path = format!("/channels/{}/posts", path_segment(channel_id));
        Ok(self
            .call_json(Method::GET, &path, &[("since", since_ms.to_string())], None)
            .await?
            .0)
    }

    /// `GET /channels/{id}/posts?page=&per_page=`: newest first, not deleted.
    pub(crate) async fn posts_page(
        &self,
        channel_id: &str,
        page: u32,
        per_page: u32,
    ) -> Result<PostList, MmError> {
        let path = format!("/channels/{}/posts", path_segment(channel_id));
        let q = [
            ("page", page.to_string()),
            ("per_page", per_page.min(MAX_PER_PAGE).to_string()),
        ];
        Ok(self.call_json(Method::GET, &path, &q, None).await?.0)
    }

    /// `GET /channels/{id}/posts?before=&page=&per_page=`: the posts
    /// created before `before_id`'s millisecond, newest first, from offset
    /// `page × per_page`; stable under concurrent new posts.
    pub(crate) async fn posts_before(
        &self,
        channel_id: &str,
        before_id: &str,
        page: u32,
        per_page: u32,
    ) -> Result<PostList, MmError> {
        let path = format!("/channels/{}/posts", path_segment(channel_id));
        let q = [
            ("before", before_id.to_string()),
            ("page", page.to_string()),
            ("per_page", per_page.min(MAX_PER_PAGE).to_string()),
        ];
        Ok(self.call_json(Method::GET, &path, &q, None).await?.0)
    }

    /// `GET /posts/{id}/thread`: the root and all replies.
    pub(crate) async fn thread(&self, post_id: &str) -> Result<PostList, MmError> {
        let path = format!("/posts/{}/thread", path_segment(post_id));
        Ok(self.call_json(Method::GET, &path, &[], None).await?.0)
    }

    /// `GET /teams/{team_id}/channels/name/{name}`: resolves the alert channel.
    pub(crate) async fn channel_by_name(
        &self,
        team_id: &str,
        name: &str,
    ) -> Result<Channel, MmError> {
        let path = format!(
            "/teams/{}/channels/name/{}",
            path_segment(team_id),
            path_segment(name)
        );
        Ok(self.call_json(Method::GET, &path, &[], None).await?.0)
    }

    /// `GET /posts/{id}/reactions`: every reaction on a post (an empty
    /// list when there is none).
    pub(crate) async fn reactions(&self, post_id: &str) -> Result<Vec<Reaction>, MmError> {
        let path = format!("/posts/{}/reactions", path_segment(post_id));
        let (list, _): (Option<Vec<Reaction>>, _) =
            self.call_json(Method::GET, &path, &[], None).await?;
        // Older servers answer `null` instead of `[]` for no reactions.
        Ok(list.unwrap_or_default())
    }

    /// `POST /posts/ids/reactions` (server 5.8+): the reactions of many
    /// posts in one request, by post id; a post without reactions (or one
    /// the agent cannot read) may be absent.
    pub(crate) async fn reactions_of(
        &self,
        post_ids: &[String],
    ) -> Result<HashMap<String, Vec<Reaction>>, MmError> {
        if post_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let body = serde_json::json!(post_ids);
        let (map, _): (HashMap<String, Option<Vec<Reaction>>>, _) = self
            .call_json(Method::POST, "/posts/ids/reactions", &[], Some(&body))
            .await?;
        Ok(map
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect())
    }

    /// `POST /posts`: creates a post (201) and returns it with its id.
    pub(crate) async fn create_post(&self, post: &CreatePost) -> Result<Post, MmError> {
        let body = serde_json::to_value(post).expect("post serialises");
        let made: Post = self
            .call_json(Method::POST, "/posts", &[], Some(&body))
            .await?
            .0;
        Made::add(
            &mut self.made.lock().unwrap(),
            &post.channel_id,
            made.create_at,
        );
        Ok(made)
    }

    /// The posts this client made, per channel id.
    pub(crate) fn posts_made(&self) -> BTreeMap<String, Made> {
        self.made.lock().unwrap().clone()
    }
}

/// Percent-encodes the few characters that would break a path segment;
/// ids and team names are `[a-z0-9-_]` in practice.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// How long a 429 asks us to wait: `Retry-After` (seconds), else
/// `X-Ratelimit-Reset` (seconds until the bucket refills, as Mattermost's
/// throttled limiter sends it).
fn retry_wait(headers: &HeaderMap) -> Option<Duration> {
    let secs = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
    };
    secs("retry-after")
        .or_else(|| secs("x-ratelimit-reset"))
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// `X-Version-Id` is "<version>.<build>.<config hash>.<licensed>", e.g.
/// "10.5.0.13.abc.true"; the first three fields are the release.
fn parse_version_id(raw: &str) -> String {
    let parts: Vec<&str> = raw.split('.').collect();
    if parts.len() >= 3 && parts[..3].iter().all(|p| p.parse::<u32>().is_ok()) {
        parts[..3].join(".")
    } else {
        raw.to_string()
    }
}

fn server_time_ms(headers: &HeaderMap) -> Option<i64> {
    let v = headers.get("date")?.to_str().ok()?;
    chrono::DateTime::parse_from_rfc2822(v)
        .ok()
        .map(|d| d.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn version_id_is_trimmed_to_the_release() {
        assert_eq!(parse_version_id("10.5.0.13461093547.abc123.true"), "10.5.0");
        assert_eq!(parse_version_id("9.11.2.9.11.2.h.false"), "9.11.2");
        assert_eq!(parse_version_id("dev"), "dev");
    }

    #[test]
    fn retry_wait_prefers_retry_after() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_wait(&h), None);
        h.insert("x-ratelimit-reset", HeaderValue::from_static("3"));
        assert_eq!(retry_wait(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after", HeaderValue::from_static("1"));
        assert_eq!(retry_wait(&h), Some(Duration::from_secs(1)));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_wait(&h), Some(Duration::from_secs(3)));
    }

    #[test]
    fn status_errors_name_endpoint_status_and_server_message() {
        let e = status_error(
            "GET http://h/api/v4/users/me",
            401,
            br#"{"id":"api.context.session_expired.app_error","message":"Invalid or expired session","status_code":401}"#,
        );
        assert_eq!(e.kind, MmErrorKind::Unauthorized);
        let s = e.to_string();
        assert!(
            s.starts_with("GET http://h/api/v4/users/me: HTTP 401"),
            "{s}"
        );
        assert!(s.contains("Invalid or expired session"), "{s}");
        assert_eq!(status_error("x", 404, b"").kind, MmErrorKind::NotFound);
        assert_eq!(
            status_error("x", 502, b"<html>").kind,
            MmErrorKind::Status(502)
        );
    }

    #[test]
    fn props_accept_string_and_bool() {
        let mut p = Post::default();
        p.props
            .insert("from_bot".into(), Value::String("true".into()));
        p.props.insert("from_webhook".into(), Value::Bool(true));
        p.props.insert("x".into(), Value::String("false".into()));
        assert!(p.prop_flag("from_bot") && p.prop_flag("from_webhook"));
        assert!(!p.prop_flag("x") && !p.prop_flag("missing"));
    }

    #[test]
    fn date_header_parses_to_ms() {
        let mut h = HeaderMap::new();
        h.insert(
            "date",
            HeaderValue::from_static("Tue, 15 Nov 1994 08:12:31 GMT"),
        );
        assert_eq!(server_time_ms(&h), Some(784887151000));
    }
}
