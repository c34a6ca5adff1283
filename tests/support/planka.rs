//! A stateful fake Planka server (v2 by default, v1 switchable) for tests
//! and the demo stack.
//!
//! It keeps users, access tokens, API keys, projects, boards, board
//! memberships with their roles, lists (with v2's `archive`/`trash` system
//! lists, `name: null`, and `closed` lists whose cards are `isClosed`),
//! labels, cards and card labels the way the real server does
//! (`plankanban/planka` `server/config/routes.js` and the controllers),
//! hands out snowflake ids above 2^53 as strings, validates what the real
//! one validates (the login name, card `type` and `position`, label
//! colours, duplicate card labels), and records every request. As on the
//! real 2.1.1 (checked against it by `tests/planka_real`): a non-member
//! gets "not found" for a board's lists and cards, a viewer 403 "Not
//! enough rights" on every write; `GET /api/projects` shows only the
//! user's boards; `GET /api/lists/{id}/cards?search=` finds cards by name
//! or description, 50 at most, with their card labels; `GET
//! /api/users/me`, `DELETE /api/access-tokens/me` (log out) and `POST
//! /api/access-tokens/revoke-pending-token` exist. Faults go through the shared fault layer
//! ([`FakePlanka::set_fault`], [`FakePlanka::fail_next`]) with Planka's
//! `{"code","message"}` body; [`Fault::Unauthorized`] answers 401 to every
//! authenticated API call while logins still work.
//!
//! Comments are kept per major the way the server stores them: v2 comments
//! `{id, cardId, userId, text, createdAt, updatedAt}`, v1 `commentCard`
//! actions `{id, cardId, userId, type, data: {text}, createdAt, updatedAt}`,
//! and read back newest first, 50 a page, older pages by `beforeId` (v2
//! `GET /api/cards/{id}/comments`, `Comment.qm.getByCardId`; v1 `GET
//! /api/cards/{id}/actions`, `cards.getActions`, which without `withDetails`
//! answers comment actions only, the only actions this fake keeps).
//!
//! Deliberately stricter than the real v1 in one place: a v1 card create
//! with a `type` field is a 400, so tests prove the client speaks v1.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use super::fault::{Fault, Match, Req, Service};
use super::harness::{in_background, FakeServer};

/// Which Planka generation the fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Planka 1.26: no bootstrap, `/labels`, `/comment-actions`, no list types.
    V1,
    /// Planka 2.1: bootstrap, terms, API keys, `/card-labels`, card `type`.
    V2,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// JSON body (`Null` when absent or not JSON).
    pub body: Value,
    /// `bearer`, `api-key` or `none`.
    pub auth: &'static str,
}

/// The default account.
pub const USERNAME: &str = "ops";
/// Its password.
pub const PASSWORD: &str = "planka-secret";
/// The terms signature `GET /api/terms` hands out.
pub const TERMS_SIGNATURE: &str =
    "3f1c6a0b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

struct User {
    id: String,
    username: String,
    email: String,
    password: String,
    terms_accepted: bool,
}

struct Data {
    version: Version,
    require_terms: bool,
    users: Vec<User>,
    tokens: HashMap<String, String>,
    pending_tokens: HashMap<String, String>,
    api_keys: HashMap<String, String>,
    projects: Vec<Value>,
    boards: Vec<Value>,
    lists: Vec<Value>,
    labels: Vec<Value>,
    cards: Vec<Value>,
    card_labels: Vec<Value>,
    comments: Vec<Value>,
    /// Board memberships `{id, boardId, userId, role}` (`editor`, `viewer`).
    memberships: Vec<Value>,
    requests: Vec<Recorded>,
    next_id: u64,
    logins: u32,
    /// Failed logins (wrong password, invalid name).
    failed_logins: u32,
    /// Orders cards by when they entered their list (`listChangedAt`).
    list_clock: u64,
}

impl Data {
    fn id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }
}

type Shared = Arc<Mutex<Data>>;

/// The fake's side of the fault layer.
struct Planka(Shared);

/// A running fake; drop it to stop.
pub struct FakePlanka {
    /// Base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    data: Shared,
    server: FakeServer,
}

fn err(status: u16, code: &str, message: &str) -> (u16, Value) {
    (status, json!({ "code": code, "message": message }))
}

impl FakePlanka {
    /// Starts on 127.0.0.1:0 inside the current tokio runtime.
    pub async fn start() -> FakePlanka {
        let data = Arc::new(Mutex::new(Data {
            version: Version::V2,
            require_terms: false,
            users: vec![User {
                id: "1650000000000000001".into(),
                username: USERNAME.into(),
                email: "ops@example.com".into(),
                password: PASSWORD.into(),
                terms_accepted: false,
            }],
            tokens: HashMap::new(),
            pending_tokens: HashMap::new(),
            api_keys: HashMap::new(),
            projects: vec![],
            boards: vec![],
            lists: vec![],
            labels: vec![],
            cards: vec![],
            card_labels: vec![],
            comments: vec![],
            memberships: vec![],
            requests: vec![],
            // Above 2^53 (9007199254740992): a JSON number would lose digits.
            next_id: 1_650_000_000_000_000_100,
            logins: 0,
            failed_logins: 0,
            list_clock: 0,
        }));
        let app = Router::new().fallback(handle).with_state(data.clone());
        let server = FakeServer::start(app, Arc::new(Planka(data.clone()))).await;
        FakePlanka {
            url: server.url(),
            data,
            server,
        }
    }

    /// Starts on the background runtime, for tests that run the real binary
    /// with `std::process::Command`.
    pub fn start_in_background() -> FakePlanka {
        in_background(FakePlanka::start)
    }

    /// The server: rules, holds and the fault for every request.
    pub fn server(&self) -> &FakeServer {
        &self.server
    }

    /// Sets the fault for every request ([`Fault::Refuse`] closes the port,
    /// clearing it re-opens the same one).
    pub fn set_fault(&self, fault: Fault) {
        self.server.set_fault(fault);
    }

    /// Behave again.
    pub fn clear_fault(&self) {
        self.server.clear_fault();
    }

    /// Speak v1 or v2.
    pub fn set_version(&self, v: Version) {
        self.data.lock().unwrap().version = v;
    }

    /// v2: logins of users who have not accepted the terms get the 403 step.
    pub fn require_terms(&self, on: bool) {
        self.data.lock().unwrap().require_terms = on;
    }

    /// Adds a v2 API key for the default user.
    pub fn add_api_key(&self, key: &str) {
        let mut d = self.data.lock().unwrap();
        let uid = d.users[0].id.clone();
        d.api_keys.insert(key.into(), uid);
    }

    /// Invalidates every access token (as a server restart with a new
    /// secret, or an expiry, would): the next call gets 401.
    pub fn expire_tokens(&self) {
        self.data.lock().unwrap().tokens.clear();
    }

    /// The next request whose path contains `path_part` answers `status`
    /// (once), e.g. to fail a label attach after the card was created.
    pub fn fail_next(&self, path_part: &str, status: u16) {
        self.server
            .fault_next(1, Match::path(path_part), Fault::Status(status));
    }

    /// Creates a project; returns its id.
    pub fn add_project(&self, name: &str) -> String {
        let mut d = self.data.lock().unwrap();
        let id = d.id();
        d.projects
            .push(json!({ "id": id, "name": name, "type": "shared" }));
        id
    }

    /// Creates a board (v2: with its archive and trash lists); returns its id.
    pub fn add_board(&self, project_id: &str, name: &str) -> String {
        let mut d = self.data.lock().unwrap();
        let id = d.id();
        let position = 65536.0 * (d.boards.len() + 1) as f64;
        d.boards
            .push(json!({ "id": id, "projectId": project_id, "name": name, "position": position }));
        let (mid, uid) = (d.id(), d.users[0].id.clone());
        d.memberships.push(
            json!({ "id": mid, "boardId": id, "userId": uid, "role": "editor", "canComment": null }),
        );
        if d.version == Version::V2 {
            for ty in ["archive", "trash"] {
                let lid = d.id();
                d.lists.push(
                    json!({ "id": lid, "boardId": id, "type": ty, "name": null, "position": null }),
                );
            }
        }
        id
    }

    /// Adds a list (v2 type `active`); returns its id.
    pub fn add_list(&self, board_id: &str, name: &str) -> String {
        let mut d = self.data.lock().unwrap();
        let id = d.id();
        let position = 65536.0 * (d.lists.len() + 1) as f64;
        let mut l = json!({ "id": id, "boardId": board_id, "name": name, "position": position });
        if d.version == Version::V2 {
            l["type"] = json!("active");
        }
        d.lists.push(l);
        id
    }

    /// Adds a v2 `closed` list (cards in it are closed, as in a "Done"
    /// column); returns its id.
    pub fn add_closed_list(&self, board_id: &str, name: &str) -> String {
        let id = self.add_list(board_id, name);
        let mut d = self.data.lock().unwrap();
        if let Some(l) = d.lists.iter_mut().find(|l| l["id"] == id.as_str()) {
            l["type"] = json!("closed");
        }
        id
    }

    /// The default user's role on a board: `editor`, `viewer`, or `None`
    /// to take its membership away.
    pub fn set_role(&self, board_id: &str, role: Option<&str>) {
        let mut d = self.data.lock().unwrap();
        let uid = d.users[0].id.clone();
        d.memberships
            .retain(|m| !(m["boardId"] == board_id && m["userId"] == uid.as_str()));
        if let Some(role) = role {
            let mid = d.id();
            d.memberships.push(
                json!({ "id": mid, "boardId": board_id, "userId": uid, "role": role, "canComment": null }),
            );
        }
    }

    /// Deletes a card as a person would in the UI (no request recorded).
    pub fn delete_card(&self, card_id: &str) {
        let mut d = self.data.lock().unwrap();
        d.cards.retain(|c| c["id"] != card_id);
        d.card_labels.retain(|cl| cl["cardId"] != card_id);
        d.comments.retain(|c| c["cardId"] != card_id);
    }

    /// Live sessions (access tokens not logged out) of the default user.
    pub fn sessions(&self) -> usize {
        let d = self.data.lock().unwrap();
        let uid = d.users[0].id.clone();
        d.tokens.values().filter(|u| **u == uid).count()
    }

    /// Whether the default user has accepted the terms.
    pub fn terms_accepted(&self) -> bool {
        self.data.lock().unwrap().users[0].terms_accepted
    }

    /// Logins the server refused (wrong password, invalid name).
    pub fn failed_logins(&self) -> u32 {
        self.data.lock().unwrap().failed_logins
    }

    /// Adds a label to a board; returns its id.
    pub fn add_label(&self, board_id: &str, name: &str, color: &str) -> String {
        let mut d = self.data.lock().unwrap();
        let id = d.id();
        d.labels.push(json!({ "id": id, "boardId": board_id, "name": name, "color": color, "position": 65536.0 }));
        id
    }

    /// Project "Ops" with one board per `(board, list)`; returns the list ids.
    pub fn seed(&self, boards: &[(&str, &str)]) -> Vec<String> {
        let p = self.add_project("Ops");
        boards
            .iter()
            .map(|(b, l)| {
                let bid = self.add_board(&p, b);
                self.add_list(&bid, l)
            })
            .collect()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.data.lock().unwrap().requests.clone()
    }

    /// How many requests had this method and a path containing `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains(part))
            .count()
    }

    /// Cards on all boards.
    pub fn cards(&self) -> Vec<Value> {
        self.data.lock().unwrap().cards.clone()
    }

    /// Labels on all boards.
    pub fn labels(&self) -> Vec<Value> {
        self.data.lock().unwrap().labels.clone()
    }

    /// Card-label links.
    pub fn card_labels(&self) -> Vec<Value> {
        self.data.lock().unwrap().card_labels.clone()
    }

    /// Comments (v2) / comment actions (v1), oldest first.
    pub fn comments(&self) -> Vec<Value> {
        self.data.lock().unwrap().comments.clone()
    }

    /// The texts of the comments on a card, oldest first (either major).
    pub fn comment_texts(&self, card_id: &str) -> Vec<String> {
        self.comments()
            .iter()
            .filter(|c| c["cardId"] == card_id)
            .filter_map(|c| c["text"].as_str().or(c["data"]["text"].as_str()))
            .map(str::to_string)
            .collect()
    }

    /// Adds a comment by the agent's user as a person would see it made
    /// (no request recorded), e.g. to fill a card's first page.
    pub fn add_comment(&self, card_id: &str, text: &str) {
        let mut d = self.data.lock().unwrap();
        let (status, body) = comment(&mut d, card_id, &json!({ "text": text }));
        assert_eq!(status, 200, "{body}");
    }

    /// Label names on a card.
    pub fn label_names_of(&self, card_id: &str) -> Vec<String> {
        let d = self.data.lock().unwrap();
        d.card_labels
            .iter()
            .filter(|cl| cl["cardId"] == card_id)
            .filter_map(|cl| d.labels.iter().find(|l| l["id"] == cl["labelId"]))
            .filter_map(|l| l["name"].as_str().map(str::to_string))
            .collect()
    }

    /// A fresh access token of the default user, for a test that calls
    /// the API itself.
    pub fn token(&self) -> String {
        let mut d = self.data.lock().unwrap();
        let token = format!("tok-{}", d.id());
        let uid = d.users[0].id.clone();
        d.tokens.insert(token.clone(), uid);
        token
    }

    /// Successful logins (password or terms acceptance).
    pub fn logins(&self) -> u32 {
        self.data.lock().unwrap().logins
    }
}

fn respond((status, body): (u16, Value)) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

fn api_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl Service for Planka {
    fn record(&self, req: &Req<'_>) {
        let auth = if bearer(req.headers).is_some() {
            "bearer"
        } else if api_key(req.headers).is_some() {
            "api-key"
        } else {
            "none"
        };
        self.0.lock().unwrap().requests.push(Recorded {
            method: req.method.to_string(),
            path: req.path().to_string(),
            query: req.uri.query().map(str::to_string),
            body: serde_json::from_slice(req.body).unwrap_or(Value::Null),
            auth,
        });
    }

    fn error(&self, status: StatusCode) -> Response {
        respond(err(status.as_u16(), "E_FAKE", "fake fault mode"))
    }

    fn garbage(&self) -> Response {
        (StatusCode::OK, "<html>not json").into_response()
    }

    /// Every API call but the unauthenticated routes (bootstrap, terms,
    /// logging in): those, and paths outside `/api/`, answer as usual.
    fn unauthorized(&self, req: &Req<'_>) -> Option<Response> {
        let segs: Vec<&str> = req.path().trim_start_matches('/').split('/').collect();
        let open = match (req.method.as_str(), segs.as_slice()) {
            ("POST", ["api", "access-tokens"]) => true,
            (
                _,
                ["api", "bootstrap"] | ["api", "terms"] | ["api", "access-tokens", "accept-terms"],
            ) => true,
            _ => !req.path().starts_with("/api/"),
        };
        (!open).then(|| {
            respond(err(
                401,
                "E_UNAUTHORIZED",
                "Access token is missing, invalid or expired",
            ))
        })
    }
}

async fn handle(
    State(data): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut d = data.lock().unwrap();
    let path = uri.path().to_string();
    respond(route(
        &mut d,
        &method,
        &path,
        uri.query(),
        &body,
        bearer(&headers),
        api_key(&headers),
    ))
}

fn route(
    d: &mut Data,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &Value,
    bearer: Option<String>,
    api_key: Option<String>,
) -> (u16, Value) {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let v2 = d.version == Version::V2;
    // Unauthenticated routes.
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["api", "bootstrap"]) if v2 => {
            return (200, json!({ "item": { "version": "2.1.1", "oidc": null } }));
        }
        ("GET", ["api", "terms"]) if v2 => {
            let _ = query;
            return (
                200,
                json!({ "item": { "type": "general", "language": "en-US", "content": "# Terms", "signature": TERMS_SIGNATURE } }),
            );
        }
        ("POST", ["api", "access-tokens"]) => return login(d, body),
        ("POST", ["api", "access-tokens", "accept-terms"]) if v2 => return accept_terms(d, body),
        ("POST", ["api", "access-tokens", "revoke-pending-token"]) if v2 => {
            let removed = body["pendingToken"]
                .as_str()
                .and_then(|p| d.pending_tokens.remove(p));
            return match removed {
                Some(_) => (200, json!({ "item": null })),
                None => err(404, "E_NOT_FOUND", "Pending token not found"),
            };
        }
        // v1 has none of these routes: unmatched routes are 404 before any auth.
        (
            _,
            ["api", "bootstrap"]
            | ["api", "terms"]
            | ["api", "access-tokens", "accept-terms"]
            | ["api", "access-tokens", "revoke-pending-token"],
        ) => {
            return err(404, "E_NOT_FOUND", "Not found");
        }
        _ => {}
    }
    let uid = bearer
        .as_ref()
        .and_then(|t| d.tokens.get(t).cloned())
        .or_else(|| {
            v2.then(|| api_key.as_ref().and_then(|k| d.api_keys.get(k).cloned()))
                .flatten()
        });
    if !path.starts_with("/api/") {
        return err(404, "E_NOT_FOUND", "Not found");
    }
    let Some(uid) = uid else {
        return err(
            401,
            "E_UNAUTHORIZED",
            "Access token is missing, invalid or expired",
        );
    };
    // The board a request's object is on, and the user's role there: a
    // non-member gets the server's "not found", a viewer 403 on writes.
    let role_on = |d: &Data, board: &Value| -> Option<String> {
        d.memberships
            .iter()
            .find(|m| &m["boardId"] == board && m["userId"] == uid.as_str())
            .and_then(|m| m["role"].as_str().map(str::to_string))
    };
    let board_of_list = |d: &Data, id: &str| {
        d.lists
            .iter()
            .find(|l| l["id"] == id)
            .map(|l| l["boardId"].clone())
    };
    let board_of_card = |d: &Data, id: &str| {
        d.cards
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["boardId"].clone())
    };
    let write = !matches!(method.as_str(), "GET");
    // (the board, what is "not found" when the user is no member of it)
    let scope: Option<(Option<Value>, &str)> = match segs.as_slice() {
        ["api", "boards", id] | ["api", "boards", id, ..] => Some((
            d.boards
                .iter()
                .find(|b| b["id"] == *id)
                .map(|b| b["id"].clone()),
            "Board not found",
        )),
        ["api", "lists", id, ..] => Some((board_of_list(d, id), "List not found")),
        ["api", "cards", id, ..] => Some((board_of_card(d, id), "Card not found")),
        _ => None,
    };
    if let Some((board, missing)) = scope {
        let Some(board) = board else {
            return err(404, "E_NOT_FOUND", missing);
        };
        match role_on(d, &board) {
            None => return err(404, "E_NOT_FOUND", missing),
            Some(role) if write && role != "editor" => {
                return err(403, "E_FORBIDDEN", "Not enough rights");
            }
            Some(_) => {}
        }
    }
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["api", "projects"]) => {
            let boards: Vec<Value> = d
                .boards
                .iter()
                .filter(|b| role_on(d, &b["id"]).is_some())
                .cloned()
                .collect();
            let projects: Vec<Value> = d
                .projects
                .iter()
                .filter(|p| boards.iter().any(|b| b["projectId"] == p["id"]))
                .cloned()
                .collect();
            let memberships: Vec<Value> = d
                .memberships
                .iter()
                .filter(|m| m["userId"] == uid.as_str())
                .cloned()
                .collect();
            (
                200,
                json!({ "items": projects, "included": { "boards": boards, "boardMemberships": memberships, "users": [] } }),
            )
        }
        ("GET", ["api", "users", "me"]) => {
            let u = d.users.iter().find(|u| u.id == uid).unwrap();
            (
                200,
                json!({ "item": { "id": u.id, "username": u.username, "email": u.email, "role": "boardUser" } }),
            )
        }
        ("DELETE", ["api", "access-tokens", "me"]) => {
            let token = bearer.clone().unwrap_or_default();
            d.tokens.remove(&token);
            (200, json!({ "item": token }))
        }
        ("GET", ["api", "boards", id]) => {
            let board = d.boards.iter().find(|b| b["id"] == *id).cloned().unwrap();
            let of = |v: &Vec<Value>| {
                v.iter()
                    .filter(|x| x["boardId"] == *id)
                    .cloned()
                    .collect::<Vec<_>>()
            };
            let cards = of(&d.cards);
            let card_labels: Vec<Value> = d
                .card_labels
                .iter()
                .filter(|cl| cards.iter().any(|c| c["id"] == cl["cardId"]))
                .cloned()
                .collect();
            (
                200,
                json!({ "item": board, "included": {
                    "lists": of(&d.lists), "labels": of(&d.labels), "cards": cards, "cardLabels": card_labels,
                    "users": [], "boardMemberships": of(&d.memberships), "cardMemberships": [], "taskLists": [], "tasks": [], "attachments": []
                } }),
            )
        }
        ("GET", ["api", "lists", list_id, "cards"]) if v2 => list_cards(d, list_id, query),
        ("POST", ["api", "lists", list_id, "cards"]) => create_card(d, list_id, body, &uid),
        ("POST", ["api", "boards", board_id, "labels"]) => create_label(d, board_id, body),
        ("POST", ["api", "cards", card_id, "card-labels"]) if v2 => attach(d, card_id, body),
        ("POST", ["api", "cards", card_id, "labels"]) if !v2 => attach(d, card_id, body),
        ("POST", ["api", "cards", card_id, "comments"]) if v2 => comment(d, card_id, body),
        ("POST", ["api", "cards", card_id, "comment-actions"]) if !v2 => comment(d, card_id, body),
        ("GET", ["api", "cards", card_id, "comments"]) if v2 => comments_page(d, card_id, query),
        ("GET", ["api", "cards", card_id, "actions"]) if !v2 => comments_page(d, card_id, query),
        ("GET", ["api", "cards", card_id]) => match d.cards.iter().find(|c| c["id"] == *card_id) {
            Some(c) => (200, json!({ "item": c })),
            None => err(404, "E_NOT_FOUND", "Card not found"),
        },
        ("DELETE", ["api", "cards", card_id]) => {
            let card = d
                .cards
                .iter()
                .find(|c| c["id"] == *card_id)
                .cloned()
                .unwrap();
            d.cards.retain(|c| c["id"] != *card_id);
            d.card_labels.retain(|cl| cl["cardId"] != *card_id);
            d.comments.retain(|c| c["cardId"] != *card_id);
            (200, json!({ "item": card }))
        }
        ("PATCH", ["api", "cards", card_id]) => {
            let list_id = body.get("listId").cloned();
            let position = body.get("position").cloned();
            let mut closed = None;
            if let Some(l) = &list_id {
                let Some(list) = d.lists.iter().find(|x| &x["id"] == l) else {
                    return err(404, "E_NOT_FOUND", "List not found");
                };
                closed = Some(list["type"] == "closed");
            }
            d.list_clock += 1;
            let clock = d.list_clock;
            match d.cards.iter_mut().find(|c| c["id"] == *card_id) {
                Some(c) => {
                    if let Some(l) = list_id {
                        if c["listId"] != l {
                            c["listChangedAt"] = json!(clock);
                        }
                        c["listId"] = l;
                    }
                    if let Some(p) = position {
                        c["position"] = p;
                    }
                    if let (Some(closed), true) = (closed, v2) {
                        c["isClosed"] = json!(closed);
                    }
                    (200, json!({ "item": c }))
                }
                None => err(404, "E_NOT_FOUND", "Card not found"),
            }
        }
        _ => err(404, "E_NOT_FOUND", "Not found"),
    }
}

/// Planka's own check of a login name (`isEmailOrUsername`): an email, or
/// 3 to 32 letters and digits with single `_` or `.` between them.
fn is_email_or_username(v: &str) -> bool {
    if v.contains('@') {
        return v
            .split_once('@')
            .is_some_and(|(l, dom)| !l.is_empty() && dom.contains('.'));
    }
    let b = v.as_bytes();
    let an = |c: u8| c.is_ascii_alphanumeric();
    (3..=32).contains(&b.len())
        && an(b[0])
        && an(b[b.len() - 1])
        && b.iter().all(|&c| an(c) || c == b'_' || c == b'.')
        && !b.windows(2).any(|w| !an(w[0]) && !an(w[1]))
}

/// `GET /api/lists/{id}/cards` (v2, `Card.qm.getByEndlessListId`): with
/// `search`, the list's cards whose name or description contains every
/// part of it (split on spaces, commas and semicolons, any case), else all
/// of them; newest in the list first, 50 at most, with their card labels.
fn list_cards(d: &Data, list_id: &str, query: Option<&str>) -> (u16, Value) {
    let search = query.unwrap_or("").split('&').find_map(|kv| {
        kv.strip_prefix("search=").map(|v| {
            let bytes = v.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'%' if i + 2 < bytes.len() => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                        out.push(u8::from_str_radix(hex, 16).unwrap());
                        i += 3;
                    }
                    b'+' => {
                        out.push(b' ');
                        i += 1;
                    }
                    c => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    });
    if search
        .as_deref()
        .is_some_and(|s| s.is_empty() || s.chars().count() > 128)
    {
        return (
            400,
            json!({ "code": "E_MISSING_OR_INVALID_PARAMS", "problems": ["\"search\" must be 1..128 characters"] }),
        );
    }
    let parts: Vec<String> = search
        .as_deref()
        .unwrap_or("")
        .split([' ', ',', ';'])
        .filter(|p| !p.is_empty())
        .map(str::to_lowercase)
        .collect();
    let contains_all = |text: &Value| {
        let t = text.as_str().unwrap_or("").to_lowercase();
        parts.iter().all(|p| t.contains(p.as_str()))
    };
    let mut items: Vec<Value> = d
        .cards
        .iter()
        .filter(|c| c["listId"] == list_id)
        .filter(|c| parts.is_empty() || contains_all(&c["name"]) || contains_all(&c["description"]))
        .cloned()
        .collect();
    items.sort_by_key(|c| {
        std::cmp::Reverse((
            c["listChangedAt"].as_u64().unwrap_or(0),
            c["id"].as_str().and_then(|i| i.parse::<u64>().ok()),
        ))
    });
    items.truncate(50);
    let card_labels: Vec<Value> = d
        .card_labels
        .iter()
        .filter(|cl| items.iter().any(|c| c["id"] == cl["cardId"]))
        .cloned()
        .collect();
    (
        200,
        json!({ "items": items, "included": { "cardLabels": card_labels, "cardMemberships": [], "users": [], "taskLists": [], "tasks": [], "attachments": [] } }),
    )
}

fn login(d: &mut Data, body: &Value) -> (u16, Value) {
    let who = body["emailOrUsername"].as_str().unwrap_or("");
    let pw = body["password"].as_str();
    if who.is_empty() || pw.is_none() {
        return (
            400,
            json!({ "code": "E_MISSING_OR_INVALID_PARAMS", "problems": ["emailOrUsername and password are required"] }),
        );
    }
    if !is_email_or_username(who) {
        d.failed_logins += 1;
        return (
            400,
            json!({ "code": "E_MISSING_OR_INVALID_PARAMS", "problems": [format!("Invalid \"emailOrUsername\": Value ('{who}') failed custom validation.")] }),
        );
    }
    let v2 = d.version == Version::V2;
    let require_terms = d.require_terms;
    let Some(user) = d.users.iter().find(|u| u.username == who || u.email == who) else {
        d.failed_logins += 1;
        return err(401, "E_UNAUTHORIZED", "Invalid credentials");
    };
    if Some(user.password.as_str()) != pw {
        d.failed_logins += 1;
        return err(401, "E_UNAUTHORIZED", "Invalid credentials");
    }
    let uid = user.id.clone();
    let accepted = user.terms_accepted;
    if v2 && require_terms && !accepted {
        let pending = format!("pending-{}", d.id());
        d.pending_tokens.insert(pending.clone(), uid);
        return (
            403,
            json!({ "code": "E_FORBIDDEN", "message": "Terms acceptance required", "step": "accept-terms", "pendingToken": pending }),
        );
    }
    let token = format!("tok-{}", d.id());
    d.tokens.insert(token.clone(), uid);
    d.logins += 1;
    (200, json!({ "item": token }))
}

fn accept_terms(d: &mut Data, body: &Value) -> (u16, Value) {
    let Some(uid) = body["pendingToken"]
        .as_str()
        .and_then(|p| d.pending_tokens.remove(p))
    else {
        return err(401, "E_UNAUTHORIZED", "Invalid pending token");
    };
    if body["signature"].as_str() != Some(TERMS_SIGNATURE) {
        return err(403, "E_FORBIDDEN", "Invalid signature");
    }
    if let Some(u) = d.users.iter_mut().find(|u| u.id == uid) {
        u.terms_accepted = true;
    }
    let token = format!("tok-{}", d.id());
    d.tokens.insert(token.clone(), uid);
    d.logins += 1;
    (200, json!({ "item": token }))
}

fn create_card(d: &mut Data, list_id: &str, body: &Value, uid: &str) -> (u16, Value) {
    let v2 = d.version == Version::V2;
    let Some(list) = d.lists.iter().find(|l| l["id"] == list_id).cloned() else {
        return err(404, "E_NOT_FOUND", "List not found");
    };
    let mut problems = vec![];
    if v2 {
        if !matches!(body["type"].as_str(), Some("project") | Some("story")) {
            problems.push("\"type\" is required and must be project or story");
        }
    } else if !body["type"].is_null() {
        problems.push("unknown input \"type\" (v1 cards have no type)");
    }
    let name = body["name"].as_str().unwrap_or("");
    if name.is_empty() || name.chars().count() > 1024 {
        problems.push("\"name\" is required (1..1024 characters)");
    }
    if !(body["description"].is_null()
        || body["description"].as_str().is_some_and(|s| !s.is_empty()))
    {
        problems.push("\"description\" must be a non-empty string or null");
    }
    if !body["position"].is_null() && !body["position"].as_f64().is_some_and(|p| p >= 0.0) {
        problems.push("\"position\" must be a number >= 0");
    }
    if !problems.is_empty() {
        return (
            400,
            json!({ "code": "E_MISSING_OR_INVALID_PARAMS", "problems": problems }),
        );
    }
    if body["position"].is_null() {
        return err(422, "E_UNPROCESSABLE_ENTITY", "Position must be present");
    }
    let id = d.id();
    d.list_clock += 1;
    let mut card = json!({
        "id": id, "boardId": list["boardId"], "listId": list_id, "name": name,
        "description": body["description"], "position": body["position"], "creatorUserId": uid,
        "listChangedAt": d.list_clock,
    });
    if v2 {
        card["type"] = body["type"].clone();
        // A card made in a closed list ("Done") is closed (cards.createOne).
        card["isClosed"] = json!(list["type"] == "closed");
    }
    d.cards.push(card.clone());
    (200, json!({ "item": card }))
}

fn create_label(d: &mut Data, board_id: &str, body: &Value) -> (u16, Value) {
    if !d.boards.iter().any(|b| b["id"] == board_id) {
        return err(404, "E_NOT_FOUND", "Board not found");
    }
    // The server's Label.COLORS (v1.26 and v2.1 agree on these names).
    const COLORS: &[&str] = &[
        "muddy-grey",
        "autumn-leafs",
        "morning-sky",
        "antique-blue",
        "egg-yellow",
        "desert-sand",
        "dark-granite",
        "fresh-salad",
        "lagoon-blue",
        "midnight-blue",
        "light-orange",
        "pumpkin-orange",
        "light-concrete",
        "sunny-grass",
        "navy-blue",
        "lilac-eyes",
        "apricot-red",
        "orange-peel",
        "silver-glint",
        "bright-moss",
        "deep-ocean",
        "summer-sky",
        "berry-red",
        "light-cocoa",
        "grey-stone",
        "tank-green",
        "coral-green",
        "sugar-plum",
        "pink-tulip",
        "shady-rust",
        "wet-rock",
        "wet-moss",
        "turquoise-sea",
        "lavender-fields",
        "piggy-red",
        "light-mud",
        "gun-metal",
        "modern-green",
        "french-coast",
        "sweet-lilac",
        "red-burgundy",
        "pirate-gold",
    ];
    let color = body["color"].as_str().unwrap_or("");
    if !COLORS.contains(&color) || body["position"].as_f64().is_none() {
        return (
            400,
            json!({ "code": "E_MISSING_OR_INVALID_PARAMS", "problems": [format!("\"color\" must be one of {} and \"position\" a number", COLORS.join(", "))] }),
        );
    }
    let id = d.id();
    let label = json!({ "id": id, "boardId": board_id, "name": body["name"], "color": color, "position": body["position"] });
    d.labels.push(label.clone());
    (200, json!({ "item": label }))
}

fn attach(d: &mut Data, card_id: &str, body: &Value) -> (u16, Value) {
    let Some(card) = d.cards.iter().find(|c| c["id"] == card_id).cloned() else {
        return err(404, "E_NOT_FOUND", "Card not found");
    };
    // Ids are strings; a number (precision lost above 2^53) finds nothing.
    let Some(label_id) = body["labelId"].as_str() else {
        return (
            400,
            json!({ "code": "E_MISSING_OR_INVALID_PARAMS", "problems": ["\"labelId\" must be a string id"] }),
        );
    };
    if !d
        .labels
        .iter()
        .any(|l| l["id"] == label_id && l["boardId"] == card["boardId"])
    {
        return err(404, "E_NOT_FOUND", "Label not found");
    }
    if d.card_labels
        .iter()
        .any(|cl| cl["cardId"] == card_id && cl["labelId"] == label_id)
    {
        return err(409, "E_CONFLICT", "Label already in card");
    }
    let id = d.id();
    let cl = json!({ "id": id, "cardId": card_id, "labelId": label_id });
    d.card_labels.push(cl.clone());
    (200, json!({ "item": cl }))
}

fn comment(d: &mut Data, card_id: &str, body: &Value) -> (u16, Value) {
    if !d.cards.iter().any(|c| c["id"] == card_id) {
        return err(404, "E_NOT_FOUND", "Card not found");
    }
    let Some(text) = body["text"].as_str().filter(|t| !t.is_empty()) else {
        return (
            400,
            json!({ "code": "E_MISSING_OR_INVALID_PARAMS", "problems": ["\"text\" is required"] }),
        );
    };
    let id = d.id();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let user = d.users[0].id.clone();
    let c = if d.version == Version::V2 {
        json!({ "id": id, "cardId": card_id, "userId": user, "text": text,
                "createdAt": now, "updatedAt": null })
    } else {
        json!({ "id": id, "cardId": card_id, "userId": user, "type": "commentCard",
                "data": { "text": text }, "createdAt": now, "updatedAt": null })
    };
    d.comments.push(c.clone());
    (200, json!({ "item": c }))
}

/// The server's page of comments (v2) or comment actions (v1): `LIMIT = 50`
/// in both `Comment.qm.getByCardId` and `cards.getActions`.
const COMMENT_PAGE: usize = 50;

/// A card's comments, newest first (`sort('id DESC')`), those older than
/// `beforeId` when given, one page.
fn comments_page(d: &Data, card_id: &str, query: Option<&str>) -> (u16, Value) {
    if !d.cards.iter().any(|c| c["id"] == card_id) {
        return err(404, "E_NOT_FOUND", "Card not found");
    }
    let num = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
    let before = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("beforeId="))
        .and_then(|b| b.parse::<u64>().ok());
    let mut items: Vec<Value> = d
        .comments
        .iter()
        .filter(|c| c["cardId"] == card_id)
        .filter(|c| before.is_none_or(|b| num(&c["id"]).is_some_and(|id| id < b)))
        .cloned()
        .collect();
    items.sort_by_key(|c| std::cmp::Reverse(num(&c["id"])));
    items.truncate(COMMENT_PAGE);
    let users: Vec<Value> = d
        .users
        .iter()
        .filter(|u| items.iter().any(|c| c["userId"] == u.id.as_str()))
        .map(|u| json!({ "id": u.id, "username": u.username, "name": u.username }))
        .collect();
    (
        200,
        json!({ "items": items, "included": { "users": users } }),
    )
}
