//! A stateful fake Mattermost API v4 server for tests and benchmarks.
//!
//! It keeps users (and bots), session and access tokens, teams, channels
//! with membership and `last_post_at`, posts with create/update/edit/delete
//! times, threads and props, and answers the endpoints ops-agent uses the
//! way the real server does (see api-facts.md §1), in particular `since`:
//! `update_at > since`, at most 1000 rows, chosen and returned in no
//! particular order (shuffled unless [`FakeMattermost::set_shuffle`] is
//! off), with the roots and siblings of returned replies mixed into `posts`
//! but not `order`, and deleted posts included. Paging (`page`/`per_page`
//! capped at 200, `before`) returns newest first without deleted posts, as
//! the server's SQL does: `ORDER BY CreateAt DESC` with posts sharing a
//! millisecond in the order they were stored (not by id), and `before=X`
//! meaning `CreateAt < CreateAt(X)` (so a tie group at the pivot is never
//! returned by `before`), `page` an offset within it.
//! [`FakeMattermost::post_burst`] makes a bulk import: many posts sharing a
//! few milliseconds.
//!
//! Faults go through the shared fault layer ([`FakeMattermost::set_fault`],
//! `server()` for rules and holds) with Mattermost's error body
//! (`{"id","message","status_code"}`) and 429 headers: 429 for the next N
//! requests is [`FakeMattermost::rate_limit_next`]. Expired sessions
//! ([`FakeMattermost::expire_sessions`]) are the service's own. Every
//! request is recorded. The fake has its own clock (advance it with
//! [`FakeMattermost::advance_clock`]); `create_at` and the `Date` header
//! come from it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::fault::{Fault, Match, Req, Service};
use super::harness::{in_background, FakeServer};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. /api/v4/users/me.
    pub path: String,
    /// Raw query string ("" when none).
    pub query: String,
    /// Body as text.
    pub body: String,
    /// The user id the bearer token belongs to, when it is valid.
    pub user_id: Option<String>,
}

/// A post as the server stores and returns it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FakePost {
    pub id: String,
    pub create_at: i64,
    pub update_at: i64,
    pub edit_at: i64,
    pub delete_at: i64,
    pub is_pinned: bool,
    pub user_id: String,
    pub channel_id: String,
    pub root_id: String,
    pub original_id: String,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub props: Map<String, Value>,
    pub hashtags: String,
    pub file_ids: Vec<String>,
    pub pending_post_id: String,
    pub reply_count: i64,
    pub metadata: Value,
}

/// What a test wants posted; defaults are a plain top-level post.
#[derive(Debug, Clone, Default)]
pub struct PostSpec {
    pub channel_id: String,
    pub user_id: String,
    pub message: String,
    pub root_id: String,
    pub kind: String,
    pub props: Map<String, Value>,
}

/// An emoji reaction as the server stores and returns it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FakeReaction {
    pub user_id: String,
    pub post_id: String,
    pub emoji_name: String,
    pub create_at: i64,
    pub update_at: i64,
    pub delete_at: i64,
    pub remote_id: String,
    pub channel_id: String,
}

#[derive(Debug, Clone)]
struct User {
    id: String,
    username: String,
    password: Option<String>,
    is_bot: bool,
}

#[derive(Debug, Clone)]
struct Team {
    id: String,
    name: String,
}

#[derive(Debug, Clone)]
struct Channel {
    id: String,
    team_id: String,
    kind: String,
    name: String,
    members: BTreeSet<String>,
    create_at: i64,
    last_post_at: i64,
    total_msg_count: i64,
}

#[derive(Debug, Clone)]
struct Token {
    user_id: String,
    session: bool,
}

struct World {
    clock_offset_ms: i64,
    last_ms: i64,
    next_id: u64,
    users: Vec<User>,
    tokens: HashMap<String, Token>,
    teams: Vec<Team>,
    team_members: BTreeSet<(String, String)>,
    channels: Vec<Channel>,
    posts: Vec<FakePost>,
    post_idx: HashMap<String, usize>,
    reactions: Vec<FakeReaction>,
    requests: Vec<Recorded>,
    shuffle: bool,
    /// Posts a lagging read replica does not return yet from post reads
    /// (`since`, paging), although the channel's counters include them.
    lagging: BTreeSet<String>,
    rng: u64,
    version: String,
}

impl World {
    fn system_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    /// The clock without ticking (for the Date header).
    fn peek_ms(&self) -> i64 {
        (Self::system_ms() + self.clock_offset_ms).max(self.last_ms)
    }

    /// A strictly increasing server time for each write, like create_at.
    fn tick_ms(&mut self) -> i64 {
        let t = (Self::system_ms() + self.clock_offset_ms).max(self.last_ms + 1);
        self.last_ms = t;
        t
    }

    fn new_id(&mut self, prefix: char) -> String {
        self.next_id += 1;
        format!("{prefix}{:0>25}", self.next_id)
    }

    fn rand(&mut self) -> u64 {
        // xorshift: deterministic, good enough to scramble an order.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    fn channel(&self, id: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    fn post(&self, id: &str) -> Option<&FakePost> {
        self.post_idx.get(id).map(|&i| &self.posts[i])
    }

    /// The user a request's bearer token belongs to, when it is valid.
    fn user_of(&self, headers: &HeaderMap) -> Option<String> {
        bearer(headers).and_then(|t| self.tokens.get(&t).map(|t| t.user_id.clone()))
    }

    /// A post `me` may read, or the server's 404 / 403 answer.
    fn visible_post(&self, id: &str, me: &str) -> Result<FakePost, Box<Response>> {
        let Some(p) = self.post(id) else {
            return Err(Box::new(err(
                StatusCode::NOT_FOUND,
                "app.post.get.app_error",
                "Unable to get the post.",
            )));
        };
        if !self
            .channel(&p.channel_id)
            .is_some_and(|c| c.members.iter().any(|m| m == me))
        {
            return Err(Box::new(err(
                StatusCode::FORBIDDEN,
                "api.context.permissions.app_error",
                "You do not have the appropriate permissions.",
            )));
        }
        Ok(p.clone())
    }

    fn user_json(u: &User) -> Value {
        json!({"id": u.id, "username": u.username, "email": format!("{}@example.test", u.username),
               "roles": "system_user", "is_bot": u.is_bot, "delete_at": 0, "create_at": 0, "update_at": 0})
    }

    fn channel_json(c: &Channel) -> Value {
        json!({"id": c.id, "team_id": c.team_id, "type": c.kind, "name": c.name,
               "display_name": c.name, "create_at": c.create_at, "update_at": c.create_at,
               "delete_at": 0, "last_post_at": c.last_post_at, "last_root_post_at": c.last_post_at,
               "total_msg_count": c.total_msg_count, "creator_id": ""})
    }

    fn add_post(&mut self, spec: PostSpec) -> Result<FakePost, (StatusCode, &'static str)> {
        let Some(ch) = self.channel(&spec.channel_id) else {
            return Err((StatusCode::NOT_FOUND, "app.channel.get.existing.app_error"));
        };
        if !ch.members.contains(&spec.user_id) {
            return Err((StatusCode::FORBIDDEN, "api.context.permissions.app_error"));
        }
        if !spec.root_id.is_empty() {
            match self.post(&spec.root_id) {
                Some(r)
                    if r.channel_id == spec.channel_id
                        && r.root_id.is_empty()
                        && r.delete_at == 0 => {}
                _ => {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        "api.post.create_post.root_id.app_error",
                    ))
                }
            }
        }
        let now = self.tick_ms();
        let id = self.new_id('p');
        let mut props = spec.props;
        if self.user(&spec.user_id).is_some_and(|u| u.is_bot) {
            props.insert("from_bot".into(), Value::String("true".into()));
        }
        let post = FakePost {
            id: id.clone(),
            create_at: now,
            update_at: now,
            edit_at: 0,
            delete_at: 0,
            is_pinned: false,
            user_id: spec.user_id,
            channel_id: spec.channel_id.clone(),
            root_id: spec.root_id.clone(),
            original_id: String::new(),
            message: spec.message,
            kind: spec.kind,
            props,
            hashtags: String::new(),
            file_ids: Vec::new(),
            pending_post_id: String::new(),
            reply_count: 0,
            metadata: json!({}),
        };
        self.post_idx.insert(id, self.posts.len());
        self.posts.push(post.clone());
        if let Some(ch) = self.channels.iter_mut().find(|c| c.id == spec.channel_id) {
            ch.last_post_at = ch.last_post_at.max(now);
            ch.total_msg_count += 1;
        }
        if !spec.root_id.is_empty() {
            // Like the server: a reply bumps the root's UpdateAt.
            let i = self.post_idx[&spec.root_id];
            self.posts[i].update_at = now;
            self.posts[i].reply_count += 1;
        }
        Ok(post)
    }

    fn touch(&mut self, id: &str, f: impl FnOnce(&mut FakePost, i64)) {
        let now = self.tick_ms();
        let i = *self.post_idx.get(id).expect("post exists");
        f(&mut self.posts[i], now);
        self.posts[i].update_at = now;
    }

    /// A post list with the roots and siblings of replies added to `posts`.
    fn post_list(&self, order: Vec<String>, with_threads: bool) -> Value {
        let mut posts = Map::new();
        for id in &order {
            let p = self.post(id).unwrap();
            posts.insert(id.clone(), serde_json::to_value(p).unwrap());
        }
        if with_threads {
            let roots: BTreeSet<String> = order
                .iter()
                .filter_map(|id| self.post(id))
                .filter(|p| !p.root_id.is_empty())
                .map(|p| p.root_id.clone())
                .collect();
            for p in &self.posts {
                let in_thread = roots.contains(&p.id) || roots.contains(&p.root_id);
                if in_thread && !posts.contains_key(&p.id) {
                    posts.insert(p.id.clone(), serde_json::to_value(p).unwrap());
                }
            }
        }
        json!({"order": order, "posts": posts, "next_post_id": "", "prev_post_id": "",
               "has_next": false, "first_inaccessible_post_time": 0})
    }
}

struct Shared {
    world: Mutex<World>,
}

/// Handle on a running fake; clones share the same server.
#[derive(Clone)]
pub struct FakeMattermost {
    url: String,
    shared: Arc<Shared>,
    server: FakeServer,
}

fn err(status: StatusCode, id: &str, message: &str) -> Response {
    let body = json!({"id": id, "message": message, "detailed_error": "", "request_id": "fake",
                      "status_code": status.as_u16()});
    (status, axum::Json(body)).into_response()
}

fn query_map(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    route(&shared, &method, &uri, &headers, &body)
}

impl Service for Shared {
    fn record(&self, req: &Req<'_>) {
        let mut w = self.world.lock().unwrap();
        let user_id = w.user_of(req.headers);
        w.requests.push(Recorded {
            method: req.method.to_string(),
            path: req.path().to_string(),
            query: req.uri.query().unwrap_or("").to_string(),
            body: String::from_utf8_lossy(req.body).into_owned(),
            user_id,
        });
    }

    fn error(&self, status: StatusCode) -> Response {
        err(status, "fake.mode.app_error", "fake failure")
    }

    fn garbage(&self) -> Response {
        (
            [("content-type", "application/json")],
            "{\"order\": [\"abc\", <html>oops",
        )
            .into_response()
    }

    fn rate_limited(&self, retry_after_secs: u64) -> Response {
        let secs = retry_after_secs.to_string();
        let mut r = (StatusCode::TOO_MANY_REQUESTS, "limit exceeded\n").into_response();
        let h = r.headers_mut();
        h.insert("retry-after", HeaderValue::from_str(&secs).unwrap());
        h.insert("x-ratelimit-limit", HeaderValue::from_static("10"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset", HeaderValue::from_str(&secs).unwrap());
        r
    }

    fn unauthorized(&self, req: &Req<'_>) -> Option<Response> {
        let open = matches!(
            (req.method.as_str(), req.path()),
            ("GET", "/api/v4/system/ping") | ("POST", "/api/v4/users/login")
        );
        (!open).then(session_expired)
    }

    /// The headers every Mattermost answer carries.
    fn finish(&self, resp: &mut Response) {
        let (version, date) = {
            let w = self.world.lock().unwrap();
            let date = chrono::DateTime::from_timestamp_millis(w.peek_ms())
                .unwrap()
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string();
            (w.version.clone(), date)
        };
        let h = resp.headers_mut();
        h.insert(
            "x-version-id",
            HeaderValue::from_str(&format!("{version}.{version}.fakehash.false")).unwrap(),
        );
        h.insert("x-request-id", HeaderValue::from_static("fake"));
        h.insert("date", HeaderValue::from_str(&date).unwrap());
    }
}

fn session_expired() -> Response {
    err(
        StatusCode::UNAUTHORIZED,
        "api.context.session_expired.app_error",
        "Invalid or expired session, please login again.",
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(t.trim().to_string())
}

fn route(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let mut w = shared.world.lock().unwrap();
    let user_id = w.user_of(headers);
    let path = uri.path().strip_prefix("/api/v4/").unwrap_or("");
    let seg: Vec<&str> = path.split('/').collect();
    let q = query_map(uri.query().unwrap_or(""));
    let json_body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);

    // Endpoints without auth.
    match (method.as_str(), seg.as_slice()) {
        ("GET", ["system", "ping"]) => {
            return axum::Json(json!({"status": "OK", "ActiveSearchBackend": "database",
                "AndroidLatestVersion": "", "AndroidMinVersion": "", "IosLatestVersion": "", "IosMinVersion": ""}))
                .into_response()
        }
        ("POST", ["users", "login"]) => {
            let login = json_body.get("login_id").and_then(Value::as_str).unwrap_or("");
            let pw = json_body.get("password").and_then(Value::as_str).unwrap_or("");
            let user = w
                .users
                .iter()
                .find(|u| u.username == login && u.password.as_deref() == Some(pw) && !u.is_bot)
                .cloned();
            let Some(u) = user else {
                return err(StatusCode::UNAUTHORIZED, "api.user.login.invalid_credentials_email_username",
                    "Enter a valid email or username and/or password, or sign in using another method.");
            };
            let token = w.new_id('s');
            w.tokens.insert(token.clone(), Token { user_id: u.id.clone(), session: true });
            let mut r = (StatusCode::CREATED, axum::Json(World::user_json(&u))).into_response();
            r.headers_mut().insert("token", HeaderValue::from_str(&token).unwrap());
            return r;
        }
        _ => {}
    }
    let Some(me) = user_id else {
        return session_expired();
    };
    let ok = |v: Value| axum::Json(v).into_response();
    match (method.as_str(), seg.as_slice()) {
        ("GET", ["users", "me"]) => ok(World::user_json(w.user(&me).unwrap())),
        ("POST", ["users", "usernames"]) => {
            let names: Vec<String> = serde_json::from_value(json_body).unwrap_or_default();
            let found: Vec<Value> = w
                .users
                .iter()
                .filter(|u| names.contains(&u.username))
                .map(World::user_json)
                .collect();
            ok(Value::Array(found))
        }
        ("POST", ["users", "ids"]) => {
            let ids: Vec<String> = serde_json::from_value(json_body).unwrap_or_default();
            let found: Vec<Value> = w
                .users
                .iter()
                .filter(|u| ids.contains(&u.id))
                .map(World::user_json)
                .collect();
            ok(Value::Array(found))
        }
        ("GET", ["teams", "name", name]) => match w.teams.iter().find(|t| t.name == *name) {
            Some(t) if w.team_members.contains(&(t.id.clone(), me.clone())) => ok(
                json!({"id": t.id, "name": t.name, "display_name": t.name, "type": "O", "delete_at": 0}),
            ),
            _ => err(
                StatusCode::NOT_FOUND,
                "app.team.get_by_name.missing.app_error",
                "Unable to find the existing team.",
            ),
        },
        ("GET", ["teams", tid, "channels", "name", cname]) => {
            match w
                .channels
                .iter()
                .find(|c| c.team_id == *tid && c.name == *cname)
            {
                Some(c) if c.members.contains(&me) => ok(World::channel_json(c)),
                _ => err(
                    StatusCode::NOT_FOUND,
                    "app.channel.get_by_name.missing.app_error",
                    "Channel does not exist.",
                ),
            }
        }
        ("GET", ["users", uid, "teams", tid, "channels"]) => {
            if *uid != "me" && *uid != me {
                return err(
                    StatusCode::FORBIDDEN,
                    "api.context.permissions.app_error",
                    "You do not have the appropriate permissions.",
                );
            }
            if !w.team_members.contains(&(tid.to_string(), me.clone())) {
                return err(
                    StatusCode::FORBIDDEN,
                    "api.context.permissions.app_error",
                    "You do not have the appropriate permissions.",
                );
            }
            let list: Vec<Value> = w
                .channels
                .iter()
                .filter(|c| (c.team_id == *tid || c.team_id.is_empty()) && c.members.contains(&me))
                .map(World::channel_json)
                .collect();
            ok(Value::Array(list))
        }
        ("GET", ["channels", cid, "posts"]) => {
            let Some(ch) = w.channel(cid).cloned() else {
                return err(
                    StatusCode::NOT_FOUND,
                    "app.channel.get.existing.app_error",
                    "Unable to find the existing channel.",
                );
            };
            if !ch.members.contains(&me) {
                return err(
                    StatusCode::FORBIDDEN,
                    "api.context.permissions.app_error",
                    "You do not have the appropriate permissions.",
                );
            }
            let since: i64 = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
            if since > 0 {
                // WHERE ChannelId = ? AND UpdateAt > ? LIMIT 1000, no ORDER BY.
                let mut ids: Vec<String> = w
                    .posts
                    .iter()
                    .filter(|p| p.channel_id == ch.id && p.update_at > since)
                    .filter(|p| !w.lagging.contains(&p.id))
                    .map(|p| p.id.clone())
                    .collect();
                if w.shuffle {
                    for i in (1..ids.len()).rev() {
                        let j = (w.rand() % (i as u64 + 1)) as usize;
                        ids.swap(i, j);
                    }
                }
                ids.truncate(1000);
                return ok(w.post_list(ids, true));
            }
            let per_page = q
                .get("per_page")
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(60)
                .min(200);
            let page = q
                .get("page")
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0);
            let mut live: Vec<&FakePost> = w
                .posts
                .iter()
                .filter(|p| p.channel_id == ch.id && p.delete_at == 0)
                .filter(|p| !w.lagging.contains(&p.id))
                .collect();
            // Stable: ties keep the order they were stored in.
            live.sort_by_key(|p| std::cmp::Reverse(p.create_at));
            if let Some(before) = q.get("before").filter(|b| !b.is_empty()) {
                let Some(pivot) = w.post(before) else {
                    return err(
                        StatusCode::NOT_FOUND,
                        "app.post.get.app_error",
                        "Unable to get the post.",
                    );
                };
                let t = pivot.create_at;
                live.retain(|p| p.create_at < t);
            }
            let ids: Vec<String> = live
                .iter()
                .skip(page * per_page)
                .take(per_page)
                .map(|p| p.id.clone())
                .collect();
            ok(w.post_list(ids, true))
        }
        ("GET", ["posts", pid, "thread"]) => {
            let p = match w.visible_post(pid, &me) {
                Ok(p) => p,
                Err(r) => return *r,
            };
            let root = if p.root_id.is_empty() {
                p.id.clone()
            } else {
                p.root_id.clone()
            };
            let mut thread: Vec<&FakePost> = w
                .posts
                .iter()
                .filter(|x| (x.id == root || x.root_id == root) && x.delete_at == 0)
                .collect();
            thread.sort_by_key(|p| std::cmp::Reverse(p.create_at));
            let ids = thread.iter().map(|p| p.id.clone()).collect();
            ok(w.post_list(ids, false))
        }
        ("POST", ["posts", "ids", "reactions"]) => {
            // Like the server: every requested post the caller may read, with
            // its reactions (an empty list when it has none).
            let ids: Vec<String> = json_body
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let mut out = Map::new();
            for id in ids {
                if w.visible_post(&id, &me).is_err() {
                    continue;
                }
                let list: Vec<Value> = w
                    .reactions
                    .iter()
                    .filter(|r| r.post_id == id && r.delete_at == 0)
                    .map(|r| serde_json::to_value(r).unwrap())
                    .collect();
                out.insert(id, Value::Array(list));
            }
            ok(Value::Object(out))
        }
        ("GET", ["posts", pid, "reactions"]) => {
            if let Err(r) = w.visible_post(pid, &me) {
                return *r;
            }
            let list: Vec<Value> = w
                .reactions
                .iter()
                .filter(|r| r.post_id == *pid && r.delete_at == 0)
                .map(|r| serde_json::to_value(r).unwrap())
                .collect();
            ok(Value::Array(list))
        }
        ("POST", ["posts"]) => {
            let s = |k: &str| {
                json_body
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let spec = PostSpec {
                channel_id: s("channel_id"),
                user_id: me,
                message: s("message"),
                root_id: s("root_id"),
                kind: String::new(),
                props: json_body
                    .get("props")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            };
            match w.add_post(spec) {
                Ok(p) => (StatusCode::CREATED, axum::Json(p)).into_response(),
                Err((status, id)) => err(status, id, "could not create the post"),
            }
        }
        _ => err(
            StatusCode::NOT_FOUND,
            "api.context.404.app_error",
            "Sorry, we could not find the page.",
        ),
    }
}

impl FakeMattermost {
    /// Starts the fake on 127.0.0.1 inside the current tokio runtime.
    pub async fn start() -> FakeMattermost {
        let shared = Arc::new(Shared {
            world: Mutex::new(World {
                clock_offset_ms: 0,
                last_ms: 0,
                next_id: 0,
                users: Vec::new(),
                tokens: HashMap::new(),
                teams: Vec::new(),
                team_members: BTreeSet::new(),
                channels: Vec::new(),
                posts: Vec::new(),
                post_idx: HashMap::new(),
                reactions: Vec::new(),
                requests: Vec::new(),
                shuffle: true,
                lagging: BTreeSet::new(),
                rng: 0x9E37_79B9_7F4A_7C15,
                version: "10.5.0".into(),
            }),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = FakeServer::start(app, shared.clone()).await;
        FakeMattermost {
            url: server.url(),
            shared,
            server,
        }
    }

    /// Starts the fake on the background runtime, for tests that run the
    /// real binary with `std::process::Command`.
    pub fn start_in_background() -> FakeMattermost {
        in_background(FakeMattermost::start)
    }

    /// The server: rules, holds and the fault for every request.
    pub fn server(&self) -> &FakeServer {
        &self.server
    }

    /// Base URL (no /api/v4), e.g. http://127.0.0.1:41234.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    fn w(&self) -> std::sync::MutexGuard<'_, World> {
        self.shared.world.lock().unwrap()
    }

    /// Sets the fault for every request ([`Fault::Refuse`]: down).
    pub fn set_fault(&self, fault: Fault) {
        self.server.set_fault(fault);
    }

    /// Behave again.
    pub fn clear_fault(&self) {
        self.server.clear_fault();
    }

    /// The next `n` requests get 429 with `Retry-After: retry_after_secs`.
    pub fn rate_limit_next(&self, n: u32, retry_after_secs: u64) {
        let retry_after = Duration::from_secs(retry_after_secs);
        self.server
            .fault_next(n, Match::any(), Fault::RateLimited { retry_after });
    }

    /// A read replica that lags: `post_id` is counted in its channel's
    /// `total_msg_count`/`last_post_at` (the listing came from an
    /// up-to-date replica) but post reads do not return it until
    /// [`FakeMattermost::catch_up`].
    pub fn lag(&self, post_id: &str) {
        self.w().lagging.insert(post_id.to_string());
    }

    /// The lagging replica caught up.
    pub fn catch_up(&self) {
        self.w().lagging.clear();
    }

    /// Whether `since` answers are shuffled (default) or in storage order.
    pub fn set_shuffle(&self, on: bool) {
        self.w().shuffle = on;
    }

    /// Sets the release reported in `X-Version-Id`.
    pub fn set_version(&self, v: &str) {
        self.w().version = v.to_string();
    }

    /// Moves the server clock forward.
    pub fn advance_clock(&self, ms: i64) {
        self.w().clock_offset_ms += ms;
    }

    /// The server's current time in epoch ms.
    pub fn now_ms(&self) -> i64 {
        self.w().peek_ms()
    }

    /// Adds a user who can log in with `password`.
    pub fn add_user(&self, username: &str, password: &str) -> String {
        let mut w = self.w();
        let id = w.new_id('u');
        w.users.push(User {
            id: id.clone(),
            username: username.into(),
            password: Some(password.into()),
            is_bot: false,
        });
        id
    }

    /// Adds a bot account (cannot log in; its posts get `from_bot`).
    pub fn add_bot(&self, username: &str) -> String {
        let mut w = self.w();
        let id = w.new_id('u');
        w.users.push(User {
            id: id.clone(),
            username: username.into(),
            password: None,
            is_bot: true,
        });
        id
    }

    /// Issues a personal access / bot token for a user.
    pub fn add_token(&self, user_id: &str) -> String {
        let mut w = self.w();
        let t = w.new_id('t');
        w.tokens.insert(
            t.clone(),
            Token {
                user_id: user_id.into(),
                session: false,
            },
        );
        t
    }

    /// Revokes one token.
    pub fn revoke_token(&self, token: &str) {
        self.w().tokens.remove(token);
    }

    /// Ends every login session (access tokens stay valid): the next
    /// session-authenticated request gets 401 until the client logs in.
    pub fn expire_sessions(&self) {
        self.w().tokens.retain(|_, t| !t.session);
    }

    /// Number of live login sessions.
    pub fn session_count(&self) -> usize {
        self.w().tokens.values().filter(|t| t.session).count()
    }

    /// Adds a team; `members` can see it.
    pub fn add_team(&self, name: &str, members: &[&str]) -> String {
        let mut w = self.w();
        let id = w.new_id('t');
        w.teams.push(Team {
            id: id.clone(),
            name: name.into(),
        });
        for m in members {
            w.team_members.insert((id.clone(), m.to_string()));
        }
        id
    }

    /// Deletes a team and re-creates it under the same name with a new id
    /// (same members and channels): cached team ids go stale.
    pub fn recreate_team(&self, name: &str) -> String {
        let mut w = self.w();
        let new = w.new_id('t');
        let old = w
            .teams
            .iter()
            .find(|t| t.name == name)
            .expect("team")
            .id
            .clone();
        w.teams.iter_mut().find(|t| t.id == old).unwrap().id = new.clone();
        let members: Vec<_> = w
            .team_members
            .iter()
            .filter(|(t, _)| *t == old)
            .cloned()
            .collect();
        for (t, u) in members {
            w.team_members.remove(&(t, u.clone()));
            w.team_members.insert((new.clone(), u));
        }
        for c in w.channels.iter_mut().filter(|c| c.team_id == old) {
            c.team_id = new.clone();
        }
        new
    }

    /// Adds an open channel in a team with these members.
    pub fn add_channel(&self, team_id: &str, name: &str, members: &[&str]) -> String {
        let mut w = self.w();
        let id = w.new_id('c');
        let now = w.tick_ms();
        let kind = if team_id.is_empty() { "D" } else { "O" };
        w.channels.push(Channel {
            id: id.clone(),
            team_id: team_id.into(),
            kind: kind.into(),
            name: name.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            create_at: now,
            last_post_at: now,
            total_msg_count: 0,
        });
        id
    }

    /// Posts a plain top-level message.
    pub fn post(&self, channel_id: &str, user_id: &str, message: &str) -> String {
        self.post_spec(PostSpec {
            channel_id: channel_id.into(),
            user_id: user_id.into(),
            message: message.into(),
            ..Default::default()
        })
    }

    /// Posts a reply in a thread.
    pub fn reply(&self, root_id: &str, user_id: &str, message: &str) -> String {
        let channel_id = self.w().post(root_id).expect("root").channel_id.clone();
        self.post_spec(PostSpec {
            channel_id,
            user_id: user_id.into(),
            message: message.into(),
            root_id: root_id.into(),
            ..Default::default()
        })
    }

    /// Posts with full control (type, props, root).
    pub fn post_spec(&self, spec: PostSpec) -> String {
        self.w().add_post(spec).expect("fake post").id
    }

    /// A bulk import: `count` posts by `user_id` in `channel_id` whose
    /// `create_at` takes only `distinct_ms` values (consecutive
    /// milliseconds, stored in order). Returns their ids.
    pub fn post_burst(
        &self,
        channel_id: &str,
        user_id: &str,
        count: usize,
        distinct_ms: usize,
        message: impl Fn(usize) -> String,
    ) -> Vec<String> {
        let mut w = self.w();
        let ids: Vec<String> = (0..count)
            .map(|i| {
                let spec = PostSpec {
                    channel_id: channel_id.into(),
                    user_id: user_id.into(),
                    message: message(i),
                    ..Default::default()
                };
                w.add_post(spec).expect("fake post").id
            })
            .collect();
        let base = w.post(&ids[0]).expect("first post").create_at;
        for (i, id) in ids.iter().enumerate() {
            let at = base + (i * distinct_ms / count) as i64;
            let k = w.post_idx[id];
            w.posts[k].create_at = at;
            w.posts[k].update_at = at;
        }
        let last = base + distinct_ms as i64 - 1;
        if let Some(ch) = w.channels.iter_mut().find(|c| c.id == channel_id) {
            ch.last_post_at = last;
        }
        ids
    }

    /// Edits a post (bumps edit_at and update_at).
    pub fn edit(&self, post_id: &str, message: &str) {
        self.w().touch(post_id, |p, now| {
            p.message = message.into();
            p.edit_at = now;
        });
    }

    /// Deletes a post (delete_at, update_at; the message stays, as on some versions).
    pub fn delete(&self, post_id: &str) {
        self.w().touch(post_id, |p, now| p.delete_at = now);
    }

    /// Bumps a post as a reaction would (only update_at moves), without
    /// recording who reacted; see [`FakeMattermost::react_as`].
    pub fn react(&self, post_id: &str) {
        self.w().touch(post_id, |_, _| {});
    }

    /// `user_id` reacts with `emoji` (like `POST /reactions`): the reaction
    /// is listed by `GET /posts/{id}/reactions` and the post's update_at moves.
    pub fn react_as(&self, post_id: &str, user_id: &str, emoji: &str) {
        let mut w = self.w();
        let now = w.tick_ms();
        let channel_id = w.post(post_id).expect("post exists").channel_id.clone();
        w.reactions
            .retain(|r| !(r.post_id == post_id && r.user_id == user_id && r.emoji_name == emoji));
        w.reactions.push(FakeReaction {
            user_id: user_id.into(),
            post_id: post_id.into(),
            emoji_name: emoji.into(),
            create_at: now,
            update_at: now,
            delete_at: 0,
            remote_id: String::new(),
            channel_id,
        });
        w.touch(post_id, |_, _| {});
    }

    /// `user_id` takes back their `emoji` (like `DELETE
    /// /users/{id}/posts/{post}/reactions/{emoji}`): the post's update_at moves.
    pub fn unreact(&self, post_id: &str, user_id: &str, emoji: &str) {
        let mut w = self.w();
        w.reactions
            .retain(|r| !(r.post_id == post_id && r.user_id == user_id && r.emoji_name == emoji));
        w.touch(post_id, |_, _| {});
    }

    /// The live reactions on a post.
    pub fn reactions(&self, post_id: &str) -> Vec<FakeReaction> {
        self.w()
            .reactions
            .iter()
            .filter(|r| r.post_id == post_id && r.delete_at == 0)
            .cloned()
            .collect()
    }

    /// A copy of one post.
    pub fn get_post(&self, id: &str) -> Option<FakePost> {
        self.w().post(id).cloned()
    }

    /// All posts in storage order.
    pub fn posts(&self) -> Vec<FakePost> {
        self.w().posts.clone()
    }

    /// The posts by `user_id` tagged as the agent's reply to `post_id`
    /// (the `ops_agent_reply_to` prop), in storage order.
    pub fn tagged_replies(&self, user_id: &str, post_id: &str) -> Vec<FakePost> {
        self.w()
            .posts
            .iter()
            .filter(|p| {
                p.user_id == user_id
                    && p.props.get("ops_agent_reply_to").and_then(|v| v.as_str()) == Some(post_id)
            })
            .cloned()
            .collect()
    }

    /// The replies under a root (not deleted), oldest first.
    pub fn thread_replies(&self, root_id: &str) -> Vec<FakePost> {
        let w = self.w();
        let mut v: Vec<FakePost> = w
            .posts
            .iter()
            .filter(|p| p.root_id == root_id && p.delete_at == 0)
            .cloned()
            .collect();
        v.sort_by_key(|p| p.create_at);
        v
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.w().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.w().requests.clear();
    }

    /// Requests whose path contains `fragment`.
    pub fn count_requests(&self, method: &str, fragment: &str) -> usize {
        self.w()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path.contains(fragment))
            .count()
    }
}
