//! Configs that parse and used to be accepted, but break the agent: each
//! row of the table must be refused by `config check` (exit 78, the key
//! named on stderr) or accepted with a warning naming the key (exit 0),
//! where the value is a legitimate choice that is more often a mistake.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::agent::{binary, text};

/// What `config check` must say about a row.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Exit 78, stderr names the key.
    Refused(&'static str),
    /// Exit 0, a warning on stderr names the key.
    Warned(&'static str),
}
use Verdict::{Refused, Warned};

/// Files a row needs before `config check` runs, under the sandbox home.
type Setup = fn(&Path);

/// One broken config: a name, `[paths]` keys that replace the sandbox's
/// (`~` is the sandbox home), the rest of the file, its files, the verdict.
struct Row {
    name: &'static str,
    paths: &'static [(&'static str, &'static str)],
    rest: &'static str,
    setup: Setup,
    verdict: Verdict,
}

fn nothing(_: &Path) {}

fn file(home: &Path, name: &str, bytes: &[u8], mode: u32) {
    let p = home.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn tls_files(home: &Path, key_mode: u32) {
    file(home, "tls/ca.pem", b"ca", 0o644);
    file(home, "tls/cert.pem", b"cert", 0o644);
    file(home, "tls/key.pem", b"key", key_mode);
}

const ENGINE_TLS: &str = "[health.engines.prod]\nhost = \"tcp://10.0.0.5:2376\"\n\
    tls_ca = \"~/tls/ca.pem\"\ntls_cert = \"~/tls/cert.pem\"\ntls_key = \"~/tls/key.pem\"\n";

const LONG_UNIT: &str = "[[checks]]\nname = \"svc\"\nkind = \"systemd\"\nunit = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.service\"\n";

fn rows() -> Vec<Row> {
    let row = |name, paths, rest, setup, verdict| Row {
        name,
        paths,
        rest,
        setup,
        verdict,
    };
    vec![
        // The cycle and its dependencies' timeouts.
        row("a deadline of a microsecond", &[], "[agent]\ndeadline_secs = 0.000001\n", nothing, Warned("agent.deadline_secs")),
        row("a heartbeat that can never hear back", &[], "[heartbeat]\nurl = \"https://hc.example/p/1\"\ntimeout_secs = 0.000001\n", nothing, Refused("heartbeat.timeout_secs")),
        row("an MC command killed before it starts", &[], "[mc]\ncommand = [\"/usr/local/bin/mc\", \"{source}\"]\ntimeout_secs = 0.000001\n", nothing, Refused("mc.timeout_secs")),
        row("an MC command with half a second", &[], "[mc]\ncommand = [\"/usr/local/bin/mc\", \"{source}\"]\ntimeout_secs = 0.5\n", nothing, Warned("mc.timeout_secs")),
        row("[mc] find without {source}", &[], "[mc]\ncommand = [\"/usr/local/bin/mc\", \"{source}\"]\nfind = [\"/usr/local/bin/mc\", \"find\", \"{title}\"]\n", nothing, Refused("mc.find")),
        // Names that reach launchctl and systemctl.
        row("a systemd unit that is an option", &[], "[[checks]]\nname = \"svc\"\nkind = \"systemd\"\nunit = \"--kill-who=all\"\n", nothing, Refused("checks[0] (\"svc\"): unit")),
        row("a launchd label that is an option", &[], "[[checks]]\nname = \"job\"\nkind = \"launchd\"\nlabel = \"-x\"\n", nothing, Refused("checks[0] (\"job\"): label")),
        row("a 300-character unit", &[], LONG_UNIT, nothing, Refused("checks[0] (\"svc\"): unit")),
        row("a schedule unit that is an option", &[], "[schedule]\nsystemd_unit = \"-ops\"\n", nothing, Refused("schedule.systemd_unit")),
        row("a schedule label that is an option", &[], "[schedule]\nlaunchd_label = \"-ops\"\n", nothing, Refused("schedule.launchd_label")),
        // The metrics textfile.
        row("a metrics file node_exporter ignores", &[], "[metrics]\ntextfile = \"~/textfile/ops.txt\"\n", nothing, Warned("metrics.textfile")),
        row("a world-writable metrics file", &[], "[metrics]\ntextfile = \"~/textfile/ops.prom\"\nmode = \"0666\"\n", nothing, Refused("metrics.mode")),
        // Relative paths: a scheduled job runs in `/`.
        row("a relative ledger", &[("ledger", "ops-tasks.jsonl")], "", nothing, Refused("paths.ledger")),
        row("a relative metrics file", &[], "[metrics]\ntextfile = \"textfile/ops.prom\"\n", nothing, Refused("metrics.textfile")),
        row("a relative token file", &[], "[mattermost]\ntoken_file = \"mm-token\"\n", nothing, Refused("mattermost.token_file")),
        row("a relative rotated file", &[], "[log]\nalso_rotate = [\"launchd.out.log\"]\n", nothing, Refused("log.also_rotate[0]")),
        // An engine's TLS files.
        row("an engine key others can read", &[], ENGINE_TLS, |h| tls_files(h, 0o644), Warned("health.engines.prod.tls_key")),
        row("an engine CA that is not there", &[], ENGINE_TLS, |h| { tls_files(h, 0o600); std::fs::remove_file(h.join("tls/ca.pem")).unwrap(); }, Warned("health.engines.prod.tls_ca")),
        // Item 2: a key naming a file another part of the agent owns.
        row("metrics written over the ledger", &[], "[metrics]\ntextfile = \"~/system/agents/state/ops-tasks.jsonl\"\n", nothing, Refused("metrics.textfile")),
        row("metrics written over the state file", &[], "[metrics]\ntextfile = \"~/tmp/ops-agent-state.json\"\n", nothing, Refused("metrics.textfile")),
        row("metrics written over the corrections", &[], "[metrics]\ntextfile = \"~/system/agents/state/ops-corrections.jsonl\"\n", nothing, Refused("metrics.textfile")),
        row("metrics written over the token file", &[], "[mattermost]\ntoken_file = \"~/mm-token\"\n\n[metrics]\ntextfile = \"~/mm-token\"\n", nothing, Refused("metrics.textfile")),
        row("the ledger rotated away", &[], "[log]\nalso_rotate = [\"~/system/agents/state/ops-tasks.jsonl\"]\n", nothing, Refused("log.also_rotate[0]")),
        row("the audit trail rotated twice", &[], "[log]\nalso_rotate = [\"~/system/logs/ops-agent-audit.jsonl\"]\n", nothing, Refused("log.also_rotate[0]")),
        row("the log rotated twice", &[], "[log]\nalso_rotate = [\"~/system/logs/ops-agent.log\"]\n", nothing, Refused("log.also_rotate[0]")),
        row("the state file rotated away", &[], "[log]\nalso_rotate = [\"~/tmp/ops-agent-state.json\"]\n", nothing, Refused("log.also_rotate[0]")),
        row("the state file's journal rotated away", &[], "[log]\nalso_rotate = [\"~/tmp/ops-agent-state.json.journal\"]\n", nothing, Refused("log.also_rotate[0]")),
        row("the corrections watch rotated away", &[], "[log]\nalso_rotate = [\"~/tmp/ops-agent-state.json.watch\"]\n", nothing, Refused("log.also_rotate[0]")),
        row("one file rotated by two entries", &[], "[log]\nalso_rotate = [\"~/a.log\", \"~/x/../a.log\"]\n", nothing, Refused("log.also_rotate[1]")),
        row("the ledger through a symlinked directory", &[], "[metrics]\ntextfile = \"~/link/ops-tasks.jsonl\"\n", |h| { std::fs::create_dir_all(h.join("system/agents/state")).unwrap(); std::os::unix::fs::symlink(h.join("system/agents/state"), h.join("link")).unwrap(); }, Refused("metrics.textfile")),
        row("the ledger by a hard link", &[], "[metrics]\ntextfile = \"~/hard.prom\"\n", |h| { file(h, "system/agents/state/ops-tasks.jsonl", b"", 0o600); std::fs::hard_link(h.join("system/agents/state/ops-tasks.jsonl"), h.join("hard.prom")).unwrap(); }, Refused("metrics.textfile")),
        row("stats and ledger one file, written two ways", &[("stats", "~/system/agents/state/../state/ops-tasks.jsonl")], "", nothing, Refused("paths.ledger")),
        // Item 5: a secret file a cycle cannot read.
        row("a gibibyte token file", &[], "[mattermost]\ntoken_file = \"~/mm-token\"\n", |h| { file(h, "mm-token", b"", 0o600); std::fs::File::options().write(true).open(h.join("mm-token")).unwrap().set_len(1 << 30).unwrap(); }, Warned("mattermost.token_file")),
        row("a token with a NUL byte", &[], "[mattermost]\ntoken_file = \"~/mm-token\"\n", |h| file(h, "mm-token", b"tok\0en\n", 0o600), Warned("mattermost.token_file")),
        row("a password on two lines", &[], "[planka]\nusername = \"ops\"\npassword_file = \"~/planka-pw\"\n", |h| file(h, "planka-pw", b"first\nsecond\n", 0o600), Warned("planka.password_file")),
        row("a check's header file that is too big", &[], "[[checks]]\nname = \"api\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\nheader_file = \"~/hdr\"\n", |h| file(h, "hdr", &vec![b'a'; 70_000], 0o600), Warned("checks[0] (\"api\").header_file")),
    ]
}

/// The sandbox's `[paths]` (every file in `home`), `overrides` replacing
/// keys, then `rest`.
fn config_text(home: &Path, overrides: &[(&str, &str)], rest: &str) -> String {
    let h = home.display();
    let mut paths = vec![
        ("state", format!("{h}/tmp/ops-agent-state.json")),
        ("token_cache", format!("{h}/tmp/mm-token.json")),
        ("fix_history", format!("{h}/tmp/ops-fix-history.json")),
        ("stats", "~/system/agents/state/ops.json".to_string()),
        ("log", "~/system/logs/ops-agent.log".to_string()),
        (
            "ledger",
            "~/system/agents/state/ops-tasks.jsonl".to_string(),
        ),
        ("lock", format!("{h}/tmp/ops-agent.lock")),
        ("planka_token_cache", format!("{h}/tmp/planka-token.json")),
    ];
    for (k, v) in overrides {
        match paths.iter_mut().find(|(key, _)| key == k) {
            Some(p) => p.1 = v.to_string(),
            None => paths.push((k, v.to_string())),
        }
    }
    let mut s = String::from("[paths]\n");
    for (k, v) in paths {
        s += &format!("{k} = \"{v}\"\n");
    }
    s + "\n" + rest
}

#[test]
fn every_accepted_but_broken_config_is_refused_or_warned_naming_the_key() {
    let mut failures = Vec::new();
    let rows = rows();
    for r in &rows {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        std::fs::create_dir_all(home.join("tmp")).unwrap();
        (r.setup)(home);
        let config = home.join("config.toml");
        std::fs::write(&config, config_text(home, r.paths, r.rest)).unwrap();
        let out = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .args(["config", "check"])
            .env_clear()
            .env("HOME", home)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let ok = match r.verdict {
            Refused(key) => out.status.code() == Some(78) && err.contains(key),
            Warned(key) => out.status.success() && err.contains(&format!("config warning: {key}")),
        };
        if !ok {
            failures.push(format!(
                "{}: want {:?}, got {}",
                r.name,
                r.verdict,
                text(&out)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn the_sandbox_config_itself_is_accepted_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &[], "")).unwrap();
    let out = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .args(["config", "check"])
        .env_clear()
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
}
