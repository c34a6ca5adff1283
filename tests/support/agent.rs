//! Runs the real `ops-agent` binary in a sandbox: a temp HOME, every runbook
//! path inside it, and a clean environment, so tests never touch the
//! machine's `/tmp/ops-agent-state.json` or the operator's home.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A temp directory with a config file pointing every path into it.
pub struct Sandbox {
    /// Owns the directory; removed on drop.
    pub dir: tempfile::TempDir,
    /// Extra TOML appended to the generated config.
    pub extra: String,
    /// Extra environment for the binary.
    pub env: Vec<(String, String)>,
    /// The binary to run: [`binary`] unless the caller points elsewhere
    /// (the scale benchmark times an older build this way).
    pub bin: PathBuf,
}

/// One run of the binary, measured from outside.
pub struct Measured {
    /// Its exit status, stdout and stderr.
    pub output: Output,
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// CPU time it used, user plus system (its own rusage from `wait4`).
    pub cpu: Duration,
    /// Peak resident memory in KiB (see [`Sandbox::measure`]).
    pub peak_rss_kib: u64,
}

impl Sandbox {
    /// A sandbox with the default paths under a fresh temp dir.
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
            extra: String::new(),
            env: Vec::new(),
            bin: binary(),
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
        let mut cmd = Command::new(&self.bin);
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
    /// time and its peak resident memory in KiB (see [`Sandbox::measure`]).
    pub fn run_measured(&self, args: &[&str]) -> (Output, Duration, u64) {
        let m = self.measure(args);
        (m.output, m.wall, m.peak_rss_kib)
    }

    /// Runs the binary to completion and measures it: wall time, CPU time
    /// and peak resident memory.
    ///
    /// On Linux the peak is the process's own `VmHWM`, sampled every few
    /// milliseconds until it exits: `ru_maxrss` from `wait4` would count
    /// the test process's memory too, which the child carries from `fork`
    /// until `exec` (the kernel keeps the larger figure across `exec`).
    /// The high-water mark only grows, so the last sample misses at most a
    /// spike in the last milliseconds. Elsewhere it is `ru_maxrss`.
    ///
    /// CPU is the child's own `ru_utime + ru_stime`, which `wait4` on its
    /// pid returns as it reaps it: exact, and unlike the peak it does not
    /// include the parent's time before `exec`. The child is reaped here,
    /// so std's `Child` is never waited on.
    pub fn measure(&self, args: &[&str]) -> Measured {
        let started = Instant::now();
        // Reaped by `wait4` below, which std's `wait` cannot replace: it
        // drops the child's rusage.
        #[allow(clippy::zombie_processes)]
        let mut child = self
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
                std::thread::sleep(Duration::from_millis(3));
            }
            peak
        });
        // Drain both pipes while it runs, so a chatty child never blocks.
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let (status, usage) = wait4(pid);
        let wall = started.elapsed();
        let peak = sampler.join().unwrap();
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        let max_rss = usage.ru_maxrss as u64;
        Measured {
            output: Output {
                status,
                stdout: stdout.join().unwrap(),
                stderr: stderr.join().unwrap(),
            },
            wall,
            cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
            peak_rss_kib: if cfg!(target_os = "linux") {
                peak
            } else if cfg!(target_os = "macos") {
                max_rss / 1024
            } else {
                max_rss
            },
        }
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

    /// The audit trail.
    pub fn audit_path(&self) -> PathBuf {
        self.path("system/logs/ops-agent-audit.jsonl")
    }

    /// The audit trail's lines so far (none before the first run); a line
    /// that is not JSON fails the test.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The audit trail's `event` lines so far.
    pub fn audit_events(&self, event: &str) -> Vec<serde_json::Value> {
        self.audit_lines()
            .into_iter()
            .filter(|l| l["event"] == event)
            .collect()
    }

    /// Reads the state file as JSON.
    pub fn state_json(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.state()).expect("state file"))
            .expect("state JSON")
    }

    /// Starts `run-once`, waits until `hold` has stopped a request (20 s at
    /// most), kills the agent with SIGKILL and opens the gate: the held
    /// request is then served or dropped by its fake.
    pub fn kill_run_once_at(&self, hold: crate::support::fault::Hold) {
        let mut child = self.command(&["run-once"]).spawn().expect("spawn");
        let reached = hold.wait_arrived(Duration::from_secs(20));
        child.kill().expect("kill");
        child.wait().expect("wait");
        hold.release();
        assert!(reached, "the held request never came\n{}", self.log_text());
    }

    /// The corrections watch file next to the state.
    pub fn watch_file(&self) -> PathBuf {
        self.path("tmp/ops-agent-state.json.watch")
    }

    /// The watch file's lines that parse, as written.
    pub fn watch_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.watch_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every watched post id: the watch file's and the state's.
    pub fn watched_posts(&self) -> std::collections::BTreeSet<String> {
        let state = self.state_json();
        let in_state = state["chat"]["watch"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        self.watch_lines()
            .iter()
            .filter_map(|l| l["post"].as_str().map(String::from))
            .chain(in_state)
            .collect()
    }
}

/// The `ops-agent doctor` line of `check` (the status column, then the
/// name column followed by two spaces).
pub fn doctor_line<'a>(s: &'a str, check: &str) -> &'a str {
    s.lines()
        .find(|l| {
            l.get(6..)
                .and_then(|rest| rest.strip_prefix(check))
                .is_some_and(|after| after.starts_with("  "))
        })
        .unwrap_or_else(|| panic!("no '{check}' line in:\n{s}"))
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

/// Reads a pipe to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            p.read_to_end(&mut buf).expect("reading the child's output");
        }
        buf
    })
}

/// Waits for the child `pid` and reaps it: its exit status and its own
/// resource usage.
fn wait4(pid: u32) -> (std::process::ExitStatus, libc::rusage) {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 writes only into it
    // and `status`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r == pid as libc::pid_t {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "wait4: {err}");
    }
    (std::process::ExitStatus::from_raw(status), usage)
}

/// The binary under test: this build's, or `OPS_AGENT_TEST_BIN` (to run the
/// same tests against a release build, e.g. for its memory figures).
pub fn binary() -> PathBuf {
    std::env::var_os("OPS_AGENT_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ops-agent")))
}
