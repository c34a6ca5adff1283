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
        let mut cmd = Command::new(binary());
        cmd.arg("--config").arg(self.config()).args(args);
        cmd.env_clear()
            .env("HOME", self.root())
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs the binary to completion and measures it: its output, its wall
    /// time and its peak resident memory in KiB.
    ///
    /// On Linux the peak is the process's own `VmHWM`, sampled every few
    /// milliseconds until it exits: `ru_maxrss` from `wait4` would count
    /// the test process's memory too, which the child carries from `fork`
    /// until `exec` (the kernel keeps the larger figure across `exec`).
    /// The high-water mark only grows, so the last sample misses at most a
    /// spike in the last milliseconds. Elsewhere it is `ru_maxrss`.
    pub fn run_measured(&self, args: &[&str]) -> (Output, std::time::Duration, u64) {
        let started = std::time::Instant::now();
        let child = self
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting ops-agent");
        let pid = child.id();
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            let status = format!("/proc/{pid}/status");
            while let Ok(text) = std::fs::read_to_string(&status) {
                // A zombie has no memory lines: the run is over.
                let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:")) else {
                    break;
                };
                let kib: u64 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                peak = peak.max(kib);
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
            peak
        });
        let output = child.wait_with_output().expect("waiting for ops-agent");
        let elapsed = started.elapsed();
        let peak = sampler.join().unwrap();
        let kib = if cfg!(target_os = "linux") {
            peak
        } else {
            children_max_rss_kib()
        };
        (output, elapsed, kib)
    }

    /// Runs the binary to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running ops-agent")
    }

    /// How many ledger tasks were filed for `source`.
    pub fn ledger_tasks_for(&self, source: &str) -> usize {
        self.ledger_tasks()
            .iter()
            .filter(|t| t["source"] == source)
            .count()
    }

    /// Makes every retry in the task outbox due now (the outbox backs off
    /// between attempts), as time passing would.
    pub fn make_outbox_due(&self) {
        let mut st = self.state_json();
        if let Some(items) = st["tasks"]["outbox"].as_array_mut() {
            for item in items {
                item["next_attempt_ms"] = 0.into();
            }
        }
        std::fs::write(self.state(), serde_json::to_vec(&st).unwrap()).unwrap();
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

/// The largest `ru_maxrss` of this process's waited-for children, in KiB.
fn children_max_rss_kib() -> u64 {
    // SAFETY: an all-zero rusage is valid, and getrusage writes only into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let rss = usage.ru_maxrss as u64;
    if cfg!(target_os = "macos") {
        rss / 1024
    } else {
        rss
    }
}

/// The binary under test: this build's, or `OPS_AGENT_TEST_BIN` (to run the
/// same tests against a release build, e.g. for its memory figures).
pub fn binary() -> PathBuf {
    std::env::var_os("OPS_AGENT_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ops-agent")))
}
