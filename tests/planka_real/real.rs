//! The real server: its REST API through the admin's token (to set up what
//! a test needs) and its database through `psql` (to count what the agent
//! did, row by row, as the server itself stores it).
//!
//! Every test works in a realm of its own: a project, one board per team
//! with the lists "To Do" (active) and "Done" (closed), and an agent user
//! that is an editor of each board, all named after a fresh tag. Tests then
//! run in parallel and again on the same server without seeing each other's
//! cards.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

use crate::support::harness::background;
use crate::support::tier;

/// The tier's name in `tier-ran:` and `skipped:` lines.
pub const TIER: &str = "planka_real";

/// The agent users' password (Planka wants a strong one).
pub const AGENT_PASSWORD: &str = "Correct-Horse-42-Battery";

/// The server as `.ci/planka-up.sh` left it.
#[derive(Clone)]
pub struct Real {
    /// Its base URL.
    pub url: String,
    /// Its database, for `psql`.
    db: String,
    /// The admin's access token.
    admin: String,
    /// The folder with `planka.pid`.
    pub base: String,
}

impl Real {
    /// The server named by the environment, or `None` after saying why
    /// (a failure under `CI=true`).
    pub fn from_env() -> Option<Real> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (Some(url), Some(db), Some(base)) = (
            var("OPS_AGENT_REAL_PLANKA_URL"),
            var("OPS_AGENT_REAL_PLANKA_DB"),
            var("OPS_AGENT_REAL_PLANKA_BASE"),
        ) else {
            tier::missing(
                TIER,
                "OPS_AGENT_REAL_PLANKA_URL, _DB and _BASE are not set (.ci/run sets them after .ci/planka-up.sh)",
            );
            return None;
        };
        let admin = std::fs::read_to_string(format!("{base}/admin.token"))
            .unwrap_or_else(|e| panic!("{base}/admin.token: {e}"))
            .trim()
            .to_string();
        Some(Real {
            url,
            db,
            admin,
            base,
        })
    }

    /// One API call as the admin: status and JSON body.
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(
            method,
            path,
            body,
            &[("Authorization", &format!("Bearer {}", self.admin))],
        )
    }

    /// One API call with these headers (none: unauthenticated).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        background().block_on(async move {
            let mut req = reqwest::Client::new().request(method, &url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        })
    }

    /// As [`Real::admin`], failing the test unless the server says 200.
    pub fn admin_ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, v) = self.admin(method, path, Some(body));
        assert_eq!(status, 200, "{method} {path}: {v}");
        v
    }

    /// One SQL query's rows, `|`-separated columns.
    pub fn sql(&self, query: &str) -> Vec<String> {
        let out = Command::new("psql")
            .args([self.db.as_str(), "-X", "-q", "-t", "-A", "-c", query])
            .output()
            .expect("psql (the real-Planka tier counts rows with it)");
        assert!(
            out.status.success(),
            "psql: {query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// One number from SQL.
    pub fn count(&self, query: &str) -> i64 {
        self.sql(query)
            .first()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("not a number: {query}"))
    }

    /// The server's pid (for SIGSTOP).
    pub fn pid(&self) -> i32 {
        std::fs::read_to_string(format!("{}/planka.pid", self.base))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

/// A fresh name for this process and test: letters and digits only, as
/// Planka's usernames want.
pub fn fresh_tag() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    format!("t{}x{t}x{n}", std::process::id())
}

/// One board of a realm.
#[derive(Clone, Debug)]
pub struct Board {
    /// The team it belongs to.
    pub team: String,
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: String,
    /// "To Do".
    pub todo: String,
    /// "Done".
    pub done: String,
}

/// One test's corner of the server.
pub struct Realm {
    /// The server.
    pub real: Real,
    /// The tag every name carries.
    pub tag: String,
    /// The project.
    pub project: String,
    /// The agent's user: username and id.
    pub user: (String, String),
    /// One per team, in the order asked.
    pub boards: Vec<Board>,
}

impl Realm {
    /// A project with one board per `(team, board name)`, each with "To Do"
    /// and "Done", and an agent user editing all of them.
    pub fn new(real: &Real, boards: &[(&str, &str)]) -> Realm {
        let tag = fresh_tag();
        let username = format!("agent_{tag}");
        let user = real.admin_ok(
            "POST",
            "/api/users",
            json!({"email": format!("{username}@example.test"), "password": AGENT_PASSWORD,
                   "role": "boardUser", "name": "Ops Agent", "username": username}),
        )["item"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let project = real.admin_ok(
            "POST",
            "/api/projects",
            json!({"type": "shared", "name": format!("Ops {tag}")}),
        )["item"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut realm = Realm {
            real: real.clone(),
            tag,
            project,
            user: (username, user),
            boards: Vec::new(),
        };
        for (i, (team, name)) in boards.iter().enumerate() {
            let b = realm.add_board(team, name, (i + 1) as f64 * 65536.0, "editor");
            realm.boards.push(b);
        }
        realm
    }

    /// A board in the realm's project with "To Do" and "Done" and the agent
    /// as `role` (`editor` or `viewer`).
    pub fn add_board(&self, team: &str, name: &str, position: f64, role: &str) -> Board {
        let r = &self.real;
        let id = r.admin_ok(
            "POST",
            &format!("/api/projects/{}/boards", self.project),
            json!({"position": position, "name": name}),
        )["item"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let list = |ty: &str, pos: f64, name: &str| {
            r.admin_ok(
                "POST",
                &format!("/api/boards/{id}/lists"),
                json!({"type": ty, "position": pos, "name": name}),
            )["item"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let todo = list("active", 65536.0, "To Do");
        let done = list("closed", 131072.0, "Done");
        r.admin_ok(
            "POST",
            &format!("/api/boards/{id}/board-memberships"),
            json!({"userId": self.user.1, "role": role}),
        );
        Board {
            team: team.into(),
            name: name.into(),
            id,
            todo,
            done,
        }
    }

    /// The board of `team`.
    pub fn board(&self, team: &str) -> &Board {
        self.boards.iter().find(|b| b.team == team).unwrap()
    }

    /// Cards on a board.
    pub fn cards_on(&self, board: &Board) -> i64 {
        self.real.count(&format!(
            "SELECT count(*) FROM card WHERE board_id = {}",
            board.id
        ))
    }

    /// Cards on every board of the realm.
    pub fn cards(&self) -> i64 {
        self.boards.iter().map(|b| self.cards_on(b)).sum()
    }

    /// The card whose description carries `source`'s marker: id, list name.
    pub fn card_for(&self, source: &str) -> Option<(String, String)> {
        let ids: Vec<String> = self.boards.iter().map(|b| b.id.clone()).collect();
        let rows = self.real.sql(&format!(
            "SELECT c.id || '|' || coalesce(l.name, l.type) FROM card c JOIN list l ON l.id = c.list_id \
             WHERE c.board_id IN ({}) AND c.description LIKE '%ops-agent source: {source}%'",
            ids.join(",")
        ));
        assert!(
            rows.len() <= 1,
            "{} cards for {source}: {rows:?}",
            rows.len()
        );
        rows.first().map(|r| {
            let (id, list) = r.split_once('|').unwrap();
            (id.to_string(), list.to_string())
        })
    }

    /// Every card of the realm per source marker: how many cards carry it.
    pub fn cards_per_source(&self) -> Vec<(String, i64)> {
        let ids: Vec<String> = self.boards.iter().map(|b| b.id.clone()).collect();
        self.real
            .sql(&format!(
                "SELECT substring(description from 'ops-agent source: ([^\\n]*)') AS s, count(*) FROM card \
                 WHERE board_id IN ({}) GROUP BY s ORDER BY s",
                ids.join(",")
            ))
            .into_iter()
            .map(|r| {
                let (s, n) = r.rsplit_once('|').unwrap();
                (s.to_string(), n.parse().unwrap())
            })
            .collect()
    }

    /// Names of the labels on a card, sorted (one row per card label).
    pub fn labels_of(&self, card: &str) -> Vec<String> {
        self.real.sql(&format!(
            "SELECT l.name FROM card_label cl JOIN label l ON l.id = cl.label_id WHERE cl.card_id = {card} ORDER BY l.name"
        ))
    }

    /// Labels named `name` on a board (the agent makes each once).
    pub fn labels_named(&self, board: &Board, name: &str) -> i64 {
        self.real.count(&format!(
            "SELECT count(*) FROM label WHERE board_id = {} AND name = '{name}'",
            board.id
        ))
    }

    /// Comment texts on a card, oldest first (line breaks as spaces).
    pub fn comments_of(&self, card: &str) -> Vec<String> {
        self.real.sql(&format!(
            "SELECT replace(replace(text, E'\\r', ''), E'\\n', ' ') FROM comment WHERE card_id = {card} ORDER BY id"
        ))
    }

    /// The agent user's live sessions (logged in and not out, or waiting
    /// for the terms).
    pub fn sessions(&self) -> i64 {
        self.real.count(&format!(
            "SELECT count(*) FROM session WHERE user_id = {} AND deleted_at IS NULL",
            self.user.1
        ))
    }

    /// Whether the agent user has accepted the terms.
    pub fn terms_accepted(&self) -> bool {
        self.real.sql(&format!(
            "SELECT terms_accepted_at IS NOT NULL FROM user_account WHERE id = {}",
            self.user.1
        )) == ["t"]
    }
}

/// Puts `n` cards straight into the board's "To Do" list in the database,
/// as years of use would (a name and a few lines of description each, as
/// people write them), with the server's own id generator.
pub fn seed_cards(real: &Real, board: &Board, n: usize) {
    seed_cards_in(real, board, &board.todo, n)
}

/// [`seed_cards`] into the list `list` of the board.
pub fn seed_cards_in(real: &Real, board: &Board, list: &str, n: usize) {
    real.sql(&format!(
        "INSERT INTO card (board_id, list_id, type, position, name, description, \
         created_at, list_changed_at, comments_total, is_closed) \
         SELECT {b}, {l}, 'project', g * 65536, 'Old request number ' || g, \
         'Customer asked for this a while ago. ' || repeat('Some context about the request, ', 12) || g, \
         now() - (g || ' minutes')::interval, now() - (g || ' minutes')::interval, 0, false \
         FROM generate_series(1, {n}) AS g",
        b = board.id,
        l = list,
    ));
}
