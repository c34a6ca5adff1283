//! Runs the real `ops-agent` binary in a sandbox: a temp HOME, every runbook
//! path inside it, and a clean environment, so tests never touch the
//! machine's `/tmp/ops-agent-state.json` or the operator's home.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temp directory with a config file pointing every path into it.
pub struct Sandbox {
    /// Owns the directory; removed on drop.
    pub dir: tempfile::TempDir,
    /// Extra TOML appended to the generated config.
    pub extra: String,
    /// Extra environment for the binary.
    pub env: Vec<(String, String)>,
}

impl Sandbox {
    /// A sandbox with the default paths under a fresh temp dir.
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
            extra: String::new(),
            env: Vec::new(),
        }
    }

    /// The sandbox root (also HOME for the binary).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the sandbox.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The state file.
    pub fn state(&self) -> PathBuf {
        self.path("tmp/ops-agent-state.json")
    }

    /// The stats file.
    pub fn stats(&self) -> PathBuf {
        self.path("system/agents/state/ops.json")
    }

    /// The activity log.
    pub fn log(&self) -> PathBuf {
        self.path("system/logs/ops-agent.log")
    }

    /// The config file path (written by [`Sandbox::write_config`]).
    pub fn config(&self) -> PathBuf {
        self.path("config.toml")
    }

    /// Writes the config: the `[paths]` section into the sandbox, plus `extra`.
    pub fn write_config(&self) {
        let r = self.root().display();
        let text = format!(
            "[paths]\nstate = \"{r}/tmp/ops-agent-state.json\"\ntoken_cache = \"{r}/tmp/mm-token.json\"\n\
             fix_history = \"{r}/tmp/ops-fix-history.json\"\nstats = \"~/system/agents/state/ops.json\"\n\
             log = \"~/system/logs/ops-agent.log\"\nledger = \"~/system/agents/state/ops-tasks.jsonl\"\n\
             lock = \"{r}/tmp/ops-agent.lock\"\nplanka_token_cache = \"{r}/tmp/planka-token.json\"\n\n{}",
            self.extra
        );
        std::fs::create_dir_all(self.path("tmp")).unwrap();
        std::fs::write(self.config(), text).unwrap();
    }

    /// A command for the binary with `--config` and the sandbox environment.
    pub fn command(&self, args: &[&str]) -> Command {
        self.write_config();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ops-agent"));
        cmd.arg("--config").arg(self.config()).args(args);
        cmd.env_clear()
            .env("HOME", self.root())
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs the binary to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running ops-agent")
    }

    /// The activity log so far ("" before the first run).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// The task records of the built-in MC ledger (update lines left out).
    pub fn ledger_tasks(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("system/agents/state/ops-tasks.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("title").is_some())
            .collect()
    }

    /// Reads the state file as JSON.
    pub fn state_json(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.state()).expect("state file"))
            .expect("state JSON")
    }
}

/// stdout and stderr of a run, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
