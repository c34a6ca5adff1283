//! One builder for a test world: it starts the fakes a test asks for (on
//! the background runtime, so the real binary can run while they serve)
//! and writes the agent config wired to them into a [`Sandbox`]: URLs,
//! credentials in the sandbox's environment, Planka boards, the Docker
//! host. What the test sets up inside a fake (users, teams, posts,
//! containers) stays in the test, on the fake it gets back.
//!
//! ```ignore
//! let mut b = WorldBuilder::new();
//! let (mm, agent) = b.mattermost(&["basic"]);          // [mattermost], token env
//! let llm = b.ollama();                                 // [ollama]
//! let planka = b.planka(&[("basic", "Basic", "Inbox")]); // [planka], boards, password env
//! let docker = b.docker();                              // [health] docker_host
//! b.line("mattermost", "alert_channel = \"basic/ops-alerts\"");
//! b.toml("[[checks]]\nname = \"web\"\nkind = \"docker\"\ncontainer = \"web\"\n");
//! let sb = b.sandbox();
//! ```

use super::agent::Sandbox;
use super::docker::FakeDocker;
use super::mattermost::FakeMattermost;
use super::ollama::FakeOllama;
use super::planka::{FakePlanka, PASSWORD, USERNAME};

/// The agent's account on the fake Mattermost.
pub struct MmAgent {
    /// Its user id.
    pub id: String,
    /// Its access token (in the sandbox as `OPS_AGENT_MM_TOKEN`).
    pub token: String,
}

/// Collects fakes and config; [`WorldBuilder::sandbox`] hands over the
/// sandbox with the config in [`Sandbox::extra`].
pub struct WorldBuilder {
    sb: Sandbox,
    /// `[section]` -> `key = value` lines, in the order first set.
    sections: Vec<(String, Vec<String>)>,
    raw: String,
}

impl Default for WorldBuilder {
    fn default() -> Self {
        WorldBuilder::new()
    }
}

/// A TOML basic string.
pub fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl WorldBuilder {
    /// A fresh sandbox, no fakes, no config beyond its `[paths]`.
    pub fn new() -> WorldBuilder {
        WorldBuilder {
            sb: Sandbox::new(),
            sections: Vec::new(),
            raw: String::new(),
        }
    }

    /// Sets `key = value` (one line of TOML) in `[section]`, replacing a
    /// line with the same key.
    pub fn line(&mut self, section: &str, line: &str) -> &mut Self {
        let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
        let i = match self.sections.iter().position(|(s, _)| s == section) {
            Some(i) => i,
            None => {
                self.sections.push((section.to_string(), Vec::new()));
                self.sections.len() - 1
            }
        };
        let lines = &mut self.sections[i].1;
        match lines.iter().position(|l| key(l) == key(line)) {
            Some(j) => lines[j] = line.to_string(),
            None => lines.push(line.to_string()),
        }
        self
    }

    /// TOML appended as is after the sections (its own tables, `[[checks]]`).
    pub fn toml(&mut self, text: &str) -> &mut Self {
        self.raw.push_str(text);
        self
    }

    /// An environment variable for the binary.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.sb.env.push((key.to_string(), value.to_string()));
        self
    }

    /// A fake Mattermost with the agent's account (`opsbot`, password
    /// `agent-pw`) and its access token in `OPS_AGENT_MM_TOKEN`;
    /// `[mattermost]` polls `teams` with a 3 s timeout. The teams and
    /// channels themselves are the test's to create on the fake.
    pub fn mattermost(&mut self, teams: &[&str]) -> (FakeMattermost, MmAgent) {
        let mm = FakeMattermost::start_in_background();
        let id = mm.add_user("opsbot", "agent-pw");
        let token = mm.add_token(&id);
        self.env("OPS_AGENT_MM_TOKEN", &token);
        let teams: Vec<String> = teams.iter().map(|t| quoted(t)).collect();
        self.line("mattermost", &format!("url = {}", quoted(&mm.url())))
            .line("mattermost", &format!("teams = [{}]", teams.join(", ")))
            .line("mattermost", "timeout_secs = 3");
        (mm, MmAgent { id, token })
    }

    /// A fake Ollama; `[ollama]` points at it (see [`WorldBuilder::ollama_at`]).
    pub fn ollama(&mut self) -> FakeOllama {
        let llm = FakeOllama::start_in_background();
        self.ollama_at(llm.url());
        llm
    }

    /// `[ollama]` at `url` (a fake, or a dead URL) with 2 s classify and
    /// reply timeouts (see [`WorldBuilder::llm_timeouts`]).
    pub fn ollama_at(&mut self, url: &str) -> &mut Self {
        self.line("ollama", &format!("url = {}", quoted(url)));
        if !self.has("ollama", "classify_timeout_secs") {
            self.llm_timeouts(2);
        }
        self
    }

    /// The classify and reply timeouts of `[ollama]`.
    pub fn llm_timeouts(&mut self, secs: u64) -> &mut Self {
        self.line("ollama", &format!("classify_timeout_secs = {secs}"))
            .line("ollama", &format!("reply_timeout_secs = {secs}"))
    }

    /// A fake Planka with project "Ops" and one board and list per
    /// `(team, board, list)`, in that order; `[planka]` logs in as `ops`
    /// (password in `OPS_AGENT_PLANKA_PASSWORD`) with a 3 s timeout and
    /// maps each team to its board and list.
    pub fn planka(&mut self, boards: &[(&str, &str, &str)]) -> FakePlanka {
        let planka = FakePlanka::start_in_background();
        let seed: Vec<(&str, &str)> = boards.iter().map(|(_, b, l)| (*b, *l)).collect();
        planka.seed(&seed);
        self.env("OPS_AGENT_PLANKA_PASSWORD", PASSWORD);
        self.line("planka", &format!("url = {}", quoted(&planka.url)))
            .line("planka", &format!("username = {}", quoted(USERNAME)))
            .line("planka", "timeout_secs = 3");
        for (team, board, list) in boards {
            let section = format!("planka.boards.{team}");
            self.line(&section, &format!("board = {}", quoted(board)))
                .line(&section, &format!("list = {}", quoted(list)));
        }
        planka
    }

    /// A fake Docker engine; `[health]` points at it (see
    /// [`WorldBuilder::docker_at`]).
    pub fn docker(&mut self) -> FakeDocker {
        let docker = FakeDocker::start_in_background();
        self.docker_at(&docker.host());
        docker
    }

    /// `[health]` with `docker_host` (a fake's, or one where nothing
    /// listens) and a 10 ms re-probe pause.
    pub fn docker_at(&mut self, host: &str) -> &mut Self {
        self.line("health", &format!("docker_host = {}", quoted(host)))
            .line("health", "reprobe_pause_ms = 10")
    }

    /// The sandbox, its config wired to the fakes.
    pub fn sandbox(mut self) -> Sandbox {
        let mut text = String::new();
        for (section, lines) in &self.sections {
            text.push_str(&format!("[{section}]\n"));
            for l in lines {
                text.push_str(l);
                text.push('\n');
            }
            text.push('\n');
        }
        text.push_str(&self.raw);
        self.sb.extra = text;
        self.sb
    }

    fn has(&self, section: &str, key: &str) -> bool {
        self.sections
            .iter()
            .any(|(s, lines)| s == section && lines.iter().any(|l| l.starts_with(key)))
    }
}
