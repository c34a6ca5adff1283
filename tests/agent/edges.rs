//! The agent's edges, round two (hostile files and text from outside),
//! through the real binary: a secret file that is huge or not one line, a
//! password in an HTTP check's URL, terminal control from outside text in
//! `status` and `doctor`, uncertain tasks past the list's bound, and a
//! `resolve_command` interrupted by kills.

use std::os::unix::fs::PermissionsExt;

use crate::support::agent::{text, Sandbox};
use crate::support::harness::in_background;
use crate::support::http_endpoints::{FakeEndpoints, PRIVATE_BASIC, PRIVATE_KEY};
use crate::support::mattermost::FakeMattermost;
use crate::support::world::{quoted, WorldBuilder};

/// Writes an owner-only file.
fn owner_only(path: &std::path::Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A world whose Mattermost token is read from `~/mm-token`.
fn token_file_world() -> (Sandbox, FakeMattermost) {
    let mut b = WorldBuilder::new();
    let (mm, agent) = b.mattermost(&["wizard"]);
    let team = mm.add_team("wizard", &[&agent.id]);
    mm.add_channel(&team, "dev", &[&agent.id]);
    b.line("mattermost", "token_file = \"~/mm-token\"");
    b.ollama_at(&crate::support::ollama::dead_url());
    (b.sandbox(), mm)
}

/// The mattermost stage's detail in the last cycle.
fn mattermost_detail(sb: &Sandbox) -> String {
    let st = sb.state_json();
    st["last_cycle"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "mattermost")
        .map(|s| s.to_string())
        .unwrap_or_default()
}

#[test]
fn a_one_gib_secret_file_is_refused_by_its_size_naming_the_file() {
    let (sb, _mm) = token_file_world();
    let token = sb.path("mm-token");
    owner_only(&token, b"");
    // Sparse: a gibibyte on paper, nothing on disk.
    std::fs::File::options()
        .write(true)
        .open(&token)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let (out, _, rss) = sb.run_measured(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("run-once with a 1 GiB token file: peak RSS {rss} KiB");
    // Reading the file whole took 4 GiB; the agent's own footprint is
    // a few tens of MiB.
    assert!(rss < 512 * 1024, "peak RSS {rss} KiB");
    let detail = mattermost_detail(&sb);
    assert!(
        detail.contains(&token.display().to_string()) && detail.contains("at most 64 KiB"),
        "{detail}"
    );
    let (out, _, rss) = sb.run_measured(&["doctor"]);
    eprintln!("doctor with a 1 GiB token file: peak RSS {rss} KiB");
    assert!(rss < 512 * 1024, "peak RSS {rss} KiB");
    let report = String::from_utf8_lossy(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.contains("mattermost.token_file"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(line.contains("is 1073741824 bytes"), "{line}");
}

#[test]
fn a_token_with_a_nul_or_an_inner_line_break_names_the_file() {
    for (bytes, what) in [
        (&b"tok\0en\n"[..], "a NUL byte"),
        (b"first\nsecond\n", "a line break inside the value"),
    ] {
        let (sb, _mm) = token_file_world();
        let token = sb.path("mm-token");
        owner_only(&token, bytes);
        let out = sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
        let detail = mattermost_detail(&sb);
        assert!(
            detail.contains(&format!("secret file {}: holds {what}", token.display())),
            "{detail}"
        );
        assert!(!detail.contains("builder error"), "{detail}");
        let out = sb.run(&["doctor"]);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.lines().any(
                |l| l.contains("mattermost.token_file") && l.contains(&format!("holds {what}"))
            ),
            "{report}"
        );
    }
}

/// Every file under the sandbox except the config and the secret files,
/// and every output of the read-only commands, that holds `secret`.
fn places_holding(sb: &Sandbox, mm: &FakeMattermost, secret: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![sb.root().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name == "config.toml" || name.starts_with("secret-") {
                continue;
            }
            let bytes = std::fs::read(&p).unwrap_or_default();
            if String::from_utf8_lossy(&bytes).contains(secret) {
                found.push(p.display().to_string());
            }
        }
    }
    for p in mm.posts() {
        if p.message.contains(secret) {
            found.push(format!("Mattermost post {:?}", p.message));
        }
    }
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["health"],
        &["health", "--json"],
        &["doctor"],
        &["config", "check"],
        &["tasks", "list"],
        &["audit"],
    ] {
        let out = sb.run(args);
        if text(&out).contains(secret) {
            found.push(format!("`{}`: {}", args.join(" "), text(&out)));
        }
    }
    found
}

#[test]
fn a_password_in_an_http_check_url_is_sent_and_shown_nowhere() {
    let endpoints: FakeEndpoints = in_background(FakeEndpoints::start);
    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["basic"]);
    b.line("mattermost", "alert_channel = \"basic/ops-alerts\"");
    let team = mm.add_team("basic", &[&me.id]);
    let alerts = mm.add_channel(&team, "ops-alerts", &[&me.id]);
    b.ollama_at(&crate::support::ollama::dead_url());
    let base = endpoints.url("/status/503?token=t0ken-s3cret&page=1");
    let url = base.replace("http://", "http://monitor:pa55-s3cret@");
    b.toml(&format!(
        "[escalation]\non_call = [\"opsbot\"]\n\n\
         [[checks]]\nname = \"shop\"\nkind = \"http\"\nurl = {}\nfail_after = 1\ntimeout_secs = 2\n",
        quoted(&url)
    ));
    let sb = b.sandbox();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    // It escalated: the alert and the HIGH task carry the check's reason.
    let alert = mm
        .posts()
        .into_iter()
        .find(|p| p.channel_id == alerts)
        .unwrap_or_else(|| panic!("no alert\n{}", sb.log_text()));
    let shown = endpoints.url("/status/503?token=[redacted]&page=1");
    assert!(alert.message.contains(&shown), "{}", alert.message);
    assert_eq!(sb.ledger_tasks().len(), 1, "the HIGH task");
    for secret in ["pa55-s3cret", "t0ken-s3cret", "monitor:"] {
        let found = places_holding(&sb, &mm, secret);
        assert!(found.is_empty(), "{secret} shown in {found:#?}");
    }
    // config check says where the password belongs, naming the key.
    let out = sb.run(&["config", "check"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checks[0] (\"shop\").url: holds a user or password")
            && err.contains("basic_auth_file"),
        "{err}"
    );
}

#[test]
fn an_http_check_authenticates_from_an_owner_only_file() {
    let endpoints: FakeEndpoints = in_background(FakeEndpoints::start);
    let mut b = WorldBuilder::new();
    let private = quoted(&endpoints.url("/private"));
    b.toml(&format!(
        "[[checks]]\nname = \"basic\"\nkind = \"http\"\nurl = {private}\n\
         basic_auth_file = \"~/secret-basic\"\n\n\
         [[checks]]\nname = \"header\"\nkind = \"http\"\nurl = {private}\n\
         header_file = \"~/secret-header\"\n\n\
         [[checks]]\nname = \"none\"\nkind = \"http\"\nurl = {private}\n"
    ));
    let sb = b.sandbox();
    let (user, pw) = PRIVATE_BASIC;
    owner_only(
        &sb.path("secret-basic"),
        format!("{user}:{pw}\n").as_bytes(),
    );
    owner_only(
        &sb.path("secret-header"),
        format!("X-Api-Key: {PRIVATE_KEY}\n").as_bytes(),
    );
    let out = sb.run(&["health", "--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let status = |name: &str| {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{v}"))
            .clone()
    };
    assert_eq!(status("basic")["status"], "ok", "{v}");
    assert_eq!(status("header")["status"], "ok", "{v}");
    let none = status("none");
    assert_eq!(none["status"], "critical", "{v}");
    assert!(
        none["reason"].as_str().unwrap().contains("HTTP 401"),
        "{none}"
    );
    // A file that is not one header line: the check says which file.
    owner_only(&sb.path("secret-header"), b"just-a-token\n");
    let out = sb.run(&["health", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let header = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "header")
        .unwrap()
        .clone();
    assert_eq!(header["status"], "unknown", "{header}");
    let reason = header["reason"].as_str().unwrap();
    assert!(
        reason.contains("header_file") && reason.contains("secret-header"),
        "{reason}"
    );
    assert!(!reason.contains("just-a-token"), "{reason}");
}

#[test]
fn config_check_and_config_errors_never_show_a_url_credential() {
    let mut sb = Sandbox::new();
    sb.extra = "[heartbeat]\nurl = \"https://hb:pa55-s3cret@hc.example/ping/t0ken-uuid\"\n\n\
                [ollama]\nurl = \"http://llm:pa55-s3cret@127.0.0.1:9/\"\n"
        .into();
    let out = sb.run(&["config", "check"]);
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
    for secret in ["pa55-s3cret", "t0ken-uuid"] {
        assert!(!all.contains(secret), "{secret}: {all}");
    }
    assert!(all.contains("url = \"https://hc.example/…\""), "{all}");
    assert!(all.contains("url = \"http://127.0.0.1:9/\""), "{all}");
    sb.extra = "[mattermost]\nurl = \"ftp://admin:pa55-s3cret@mm.example\"\n".into();
    let out = sb.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mattermost.url") && !err.contains("pa55-s3cret"),
        "{err}"
    );
}

/// Terminal control from outside (an MC command's stderr, which may echo a
/// client's post, and a heartbeat monitor's error body) reaches `status`
/// and `doctor` escaped: no screen clear, no bell, no forged line.
#[test]
fn status_and_doctor_escape_terminal_control_from_outside() {
    let endpoints: FakeEndpoints = in_background(FakeEndpoints::start);
    let mut b = WorldBuilder::new();
    let (mm, agent) = b.mattermost(&["wizard"]);
    let alice = mm.add_user("alice", "pw");
    let team = mm.add_team("wizard", &[&agent.id, &alice]);
    let channel = mm.add_channel(&team, "dev", &[&agent.id, &alice]);
    b.ollama_at(&crate::support::ollama::dead_url());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("mc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'mc: \\033[2J\\033[31mboom\\007\\nok    config  forged line\\n' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    b.line(
        "mc",
        &format!(
            "command = [{}, \"{{source}}\"]",
            quoted(&script.display().to_string())
        ),
    );
    b.line(
        "heartbeat",
        &format!("url = {}", quoted(&endpoints.url("/hostile"))),
    );
    let sb = b.sandbox();
    mm.post(&channel, &alice, "please deploy the hotfix tonight");
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    for args in [&["status"][..], &["doctor"]] {
        let out = sb.run(args);
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            printed.contains("boom"),
            "`{}` shows the hostile text: {printed}",
            args[0]
        );
        assert!(
            !out.stdout.iter().any(|b| *b == 0x1b || *b == 0x07),
            "`{}` printed raw terminal control: {printed:?}",
            args[0]
        );
        assert!(
            !printed
                .lines()
                .any(|l| l.starts_with("ok    config  forged")),
            "`{}` printed a forged line: {printed}",
            args[0]
        );
    }
}

/// More uncertain tasks than the state keeps listed: `status`, `doctor`
/// and the metrics count them all and say how many are not listed.
#[test]
fn uncertain_tasks_past_the_list_bound_are_counted_not_lost() {
    let mut b = WorldBuilder::new();
    let (mm, agent) = b.mattermost(&["wizard"]);
    let alice = mm.add_user("alice", "pw");
    let team = mm.add_team("wizard", &[&agent.id, &alice]);
    let channel = mm.add_channel(&team, "dev", &[&agent.id, &alice]);
    b.ollama_at(&crate::support::ollama::dead_url());
    let dir = tempfile::tempdir().unwrap();
    // Exit 0 without an id: each attempt may have made the task.
    let script = dir.path().join("mc.sh");
    std::fs::write(&script, "#!/bin/sh\necho 'queued, no id yet'\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    b.line(
        "mc",
        &format!(
            "command = [{}, \"{{source}}\"]",
            quoted(&script.display().to_string())
        ),
    );
    b.line("metrics", "textfile = \"~/textfile/ops_agent.prom\"");
    let sb = b.sandbox();
    const POSTS: usize = 105;
    for i in 0..POSTS {
        mm.post(
            &channel,
            &alice,
            &format!("please add user number {i} to the wizard admin"),
        );
    }
    // An attempt, one extra attempt, then given up: uncertain.
    for _ in 0..3 {
        let out = sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = sb.run(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = st["uncertain_tasks"].as_array().unwrap().len();
    let dropped = st["uncertain_dropped"].as_u64().unwrap_or(0) as usize;
    assert_eq!(
        listed + dropped,
        POSTS,
        "{listed} listed, {dropped} dropped"
    );
    assert!(dropped > 0, "the list is bounded: {listed} listed");
    let out = sb.run(&["status"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!(
            "uncertain    {POSTS} task(s) to check in MC by hand"
        )) && printed.contains(&format!("the {dropped} oldest are no longer listed")),
        "{printed}"
    );
    let out = sb.run(&["doctor"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.lines().any(|l| l.contains("mc uncertain tasks")
            && l.contains(&format!("{POSTS} task(s)"))
            && l.contains(&format!("the {dropped} oldest no longer listed"))),
        "{printed}"
    );
    let metrics = std::fs::read_to_string(sb.path("textfile/ops_agent.prom")).unwrap();
    assert!(
        metrics.contains(&format!("\nops_agent_tasks_uncertain {POSTS}\n"))
            && metrics.contains(&format!("\nops_agent_tasks_uncertain_dropped {dropped}\n")),
        "{metrics}"
    );
}

/// A TASK relabelled ROUTINE closes its task in MC through
/// `escalation.resolve_command`; the agent is killed while that command
/// runs, twice. The orphan is waited for, one extra run is made and said
/// in the thread, and a third run never happens.
#[test]
fn resolve_command_killed_twice_runs_at_most_once_more_and_says_so() {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};
    let mut b = WorldBuilder::new();
    let (mm, agent) = b.mattermost(&["wizard"]);
    let alice = mm.add_user("alice", "pw");
    let john = mm.add_user("john", "pw");
    let team = mm.add_team("wizard", &[&agent.id, &alice, &john]);
    let channel = mm.add_channel(&team, "dev", &[&agent.id, &alice, &john]);
    b.ollama_at(&crate::support::ollama::dead_url());
    let dir = tempfile::tempdir().unwrap();
    let record =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mc/record.sh");
    b.line(
        "mc",
        &format!(
            "command = [{}, \"{{source}}\"]",
            quoted(&record.display().to_string())
        ),
    );
    b.line("mc", "pass_env = [\"MC_ARGV_FILE\"]");
    b.env(
        "MC_ARGV_FILE",
        &dir.path().join("argv").display().to_string(),
    );
    // Marks itself running, counts its run, takes four seconds (the next
    // cycle must find it still alive, also on a loaded machine), unmarks.
    let resolve = dir.path().join("resolve.sh");
    std::fs::write(
        &resolve,
        "#!/bin/sh\ntouch \"$1/running.$$\"\necho \"$2\" >> \"$1/runs\"\nsleep 4\nrm -f \"$1/running.$$\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&resolve, std::fs::Permissions::from_mode(0o755)).unwrap();
    b.line(
        "escalation",
        &format!(
            "resolve_command = [{}, {}, \"{{task_id}}\"]",
            quoted(&resolve.display().to_string()),
            quoted(&dir.path().display().to_string())
        ),
    );
    b.line("corrections", "sweep_mins = 0");
    let sb = b.sandbox();
    let post = mm.post(&channel, &alice, "please add a redirect from /old to /new");
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let reply = mm
        .posts()
        .into_iter()
        .find(|p| {
            p.user_id == agent.id
                && p.props.get("ops_agent_reply_to").and_then(|v| v.as_str()) == Some(&post)
        })
        .unwrap_or_else(|| panic!("no reply\n{}", sb.log_text()));
    mm.react_as(&reply.id, &john, "speech_balloon");
    mm.post(&channel, &alice, "lunch at 1?");
    let running = || {
        std::fs::read_dir(dir.path()).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("running."))
        })
    };
    let runs = || {
        std::fs::read_to_string(dir.path().join("runs"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let wait_orphan = || {
        let end = Instant::now() + Duration::from_secs(20);
        while running() {
            assert!(
                Instant::now() < end,
                "the orphaned resolve command never ended"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let kill_while_resolving = || {
        let mut child = sb.command(&["run-once"]).spawn().unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while !running() {
            assert!(
                Instant::now() < end,
                "the resolve command never started\n{}",
                sb.log_text()
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "the cycle ended first\n{}",
                sb.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "the kill landed");
    };
    kill_while_resolving();
    // The orphan still runs: this cycle must not start another.
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_orphan();
    assert_eq!(runs(), 1, "no second run while the first was alive");
    // The first may have closed the task: one extra run, killed too.
    kill_while_resolving();
    wait_orphan();
    assert_eq!(runs(), 2);
    for _ in 0..2 {
        let out = sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(runs(), 2, "never a third run\n{}", sb.log_text());
    let announced: Vec<String> = mm
        .thread_replies(&post)
        .into_iter()
        .filter(|p| p.user_id == agent.id && p.message.starts_with("Relabelled ROUTINE"))
        .map(|p| p.message)
        .collect();
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert!(
        announced[0].contains("may still be open in MC") && announced[0].contains("interrupted"),
        "{announced:?}"
    );
}
