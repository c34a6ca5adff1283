//! Deployment as shipped, through the real binary: secrets that reach a
//! scheduled run (a token file, a cycle that says when chat has no token).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::support::agent::{doctor_line, text, Sandbox};
use crate::support::tier;
use crate::support::world::{quoted, WorldBuilder};

/// Writes a secret file owner-only, as the docs tell operators to.
fn write_secret(path: &Path, value: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, value.as_bytes()).unwrap();
}

/// The `mattermost` stage of the last cycle: (outcome, detail).
fn mm_stage(sb: &Sandbox) -> (String, String) {
    let v = sb.state_json();
    let stage = v["last_cycle"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "mattermost")
        .cloned()
        .unwrap();
    (
        stage["outcome"].as_str().unwrap().to_string(),
        stage["detail"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn a_cycle_with_teams_named_but_no_token_is_degraded_and_says_why() {
    let mut sb = Sandbox::new();
    sb.extra = "[mattermost]\nurl = \"http://127.0.0.1:9\"\nteams = [\"basic\"]\n".into();
    let out = sb.run(&["run-once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (outcome, detail) = mm_stage(&sb);
    assert_eq!(outcome, "degraded", "{detail}");
    assert!(
        detail.contains("mattermost.token_env") && detail.contains("OPS_AGENT_MM_TOKEN"),
        "{detail}"
    );
    let log = sb.log_text();
    assert!(
        log.contains("cycle degraded in") && log.contains("mattermost=degraded"),
        "{log}"
    );
}

#[test]
fn a_config_without_teams_and_no_token_stays_skipped_not_configured() {
    let sb = Sandbox::new();
    let out = sb.run(&["run-once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (outcome, detail) = mm_stage(&sb);
    assert_eq!(outcome, "skipped", "{detail}");
    assert!(detail.starts_with("not configured:"), "{detail}");
    assert!(sb.log_text().contains("cycle ok in"));
}

#[test]
fn the_token_file_reaches_a_cycle_with_no_token_in_its_environment() {
    let mut b = WorldBuilder::new();
    let (mm, agent) = b.mattermost(&["basic"]);
    let team = mm.add_team("basic", &[&agent.id]);
    mm.add_channel(&team, "ops", &[&agent.id]);
    let token_file = "~/.config/ops-agent/mm-token";
    b.line(
        "mattermost",
        &format!("token_file = {}", quoted(token_file)),
    );
    let mut sb = b.sandbox();
    // The scheduler's bare environment: no OPS_AGENT_MM_TOKEN.
    sb.env.retain(|(k, _)| k != "OPS_AGENT_MM_TOKEN");
    let file = sb.path(".config/ops-agent/mm-token");
    write_secret(&file, &format!("{}\n", agent.token));

    let out = sb.run(&["run-once"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let (outcome, detail) = mm_stage(&sb);
    assert_eq!(outcome, "ok", "{detail}");
    assert!(!t.contains(&agent.token) && !sb.log_text().contains(&agent.token));

    // A token file others can read is refused, and the cycle says so.
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = sb.run(&["run-once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (outcome, detail) = mm_stage(&sb);
    assert_eq!(outcome, "degraded", "{detail}");
    assert!(
        detail.contains("mattermost.token_file") && detail.contains("chmod 600"),
        "{detail}"
    );
}

// ------------------------------------------------------------ install

/// A sandbox whose config names a team and reads the token from an
/// owner-only file, with fake `launchctl`, `systemctl` and `loginctl`
/// first on PATH recording their argv in `<root>/fake/calls`.
fn install_sandbox() -> Sandbox {
    let mut sb = Sandbox::new();
    let token = sb.path(".config/ops-agent/mm-token");
    write_secret(&token, "tok-not-in-any-output\n");
    sb.extra = format!(
        "[mattermost]\nteams = [\"basic\"]\ntoken_file = {}\n",
        quoted(&token.display().to_string())
    );
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin");
    let path = std::env::var("PATH").unwrap_or_default();
    sb.env
        .push(("PATH".into(), format!("{}:{path}", bin.display())));
    sb.env.push((
        "OPS_FAKE_DAEMON_DIR".into(),
        sb.path("fake").display().to_string(),
    ));
    std::fs::create_dir_all(sb.path("fake")).unwrap();
    sb
}

/// The commands the fakes saw, one per line; cleared after reading.
fn calls(sb: &Sandbox) -> Vec<String> {
    let p = sb.path("fake/calls");
    let text = std::fs::read_to_string(&p).unwrap_or_default();
    let _ = std::fs::remove_file(&p);
    text.lines().map(str::to_string).collect()
}

fn uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn install_systemd_writes_both_units_enables_the_timer_and_print_shows_the_same() {
    let sb = install_sandbox();
    let dir = sb.path(".config/systemd/user");
    let service = dir.join("ops-agent.service");
    let timer = dir.join("ops-agent.timer");

    let printed = sb.run(&["install", "--systemd", "--print"]);
    assert_eq!(printed.status.code(), Some(0), "{}", text(&printed));
    assert!(
        !service.exists() && calls(&sb).is_empty(),
        "--print wrote or ran something"
    );

    let out = sb.run(&["install", "--systemd"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(!t.contains("tok-not-in-any-output"), "{t}");
    assert_eq!(
        calls(&sb),
        [
            "systemctl --user daemon-reload".to_string(),
            "systemctl --user enable --now ops-agent.timer".into(),
            "systemctl --user is-active ops-agent.timer".into(),
            format!("loginctl show-user {} -p Linger", uid()),
        ]
    );
    let svc = std::fs::read_to_string(&service).unwrap();
    let tmr = std::fs::read_to_string(&timer).unwrap();
    assert_eq!(
        stdout(&printed),
        format!(
            "# {}\n{svc}\n# {}\n{tmr}",
            service.display(),
            timer.display()
        )
    );
    assert_eq!((mode(&service), mode(&timer)), (0o600, 0o600));
    let exe = env!("CARGO_BIN_EXE_ops-agent");
    assert!(
        svc.contains(&format!(
            "\nExecStart={exe} --config {} run-once\n",
            sb.config().display()
        )),
        "{svc}"
    );
    assert!(tmr.contains("\nOnUnitActiveSec=300s\n"), "{tmr}");
    let s = stdout(&out);
    assert!(s.contains("secret   mattermost.token_file: "), "{s}");
    assert!(s.contains("loaded   ops-agent.timer is active"), "{s}");

    // Again: nothing to write, nothing restarted.
    let out = sb.run(&["install", "--systemd"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("same     "), "{}", text(&out));
    assert!(!calls(&sb).iter().any(|c| c.contains("restart")));

    // A different schedule is not written over the old one without --force.
    let out = sb.run(&["install", "--systemd", "--interval", "600"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("exists and differs") && t.contains("--force"),
        "{t}"
    );
    assert_eq!(std::fs::read_to_string(&timer).unwrap(), tmr);
    assert!(calls(&sb).is_empty());
    let out = sb.run(&["install", "--systemd", "--interval", "600", "--force"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("agent.schedule_interval_secs"), "{t}");
    assert!(std::fs::read_to_string(&timer)
        .unwrap()
        .contains("\nOnUnitActiveSec=600s\n"));
    assert!(calls(&sb).contains(&"systemctl --user restart ops-agent.timer".to_string()));

    // Restart: stop, reload, start, verify.
    let out = sb.run(&["restart", "--systemd"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        calls(&sb),
        [
            "systemctl --user stop ops-agent.timer",
            "systemctl --user daemon-reload",
            "systemctl --user start ops-agent.timer",
            "systemctl --user is-active ops-agent.timer",
        ]
    );

    // Uninstall: disable, remove both files and the stamp systemd keeps
    // of the persistent timer's last run, reload; state stays.
    let stamp = sb.path(".local/share/systemd/timers/stamp-ops-agent.timer");
    std::fs::create_dir_all(stamp.parent().unwrap()).unwrap();
    std::fs::write(&stamp, "").unwrap();
    let out = sb.run(&["uninstall", "--systemd"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!stamp.exists(), "{}", text(&out));
    assert_eq!(
        calls(&sb),
        [
            "systemctl --user disable --now ops-agent.timer",
            "systemctl --user daemon-reload",
        ]
    );
    assert!(!service.exists() && !timer.exists());
    let out = sb.run(&["restart", "--systemd"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not installed"), "{}", text(&out));
}

#[test]
fn install_refuses_a_job_that_would_only_have_the_token_from_this_shell() {
    let mut sb = install_sandbox();
    sb.extra = "[mattermost]\nteams = [\"basic\"]\n".into();
    sb.env
        .push(("OPS_AGENT_MM_TOKEN".into(), "tok-from-the-shell".into()));
    let out = sb.run(&["install", "--systemd"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("will not have $OPS_AGENT_MM_TOKEN") && t.contains("mattermost.token_file"),
        "{t}"
    );
    assert!(!t.contains("tok-from-the-shell"), "{t}");
    assert!(!sb.path(".config/systemd/user").exists());
    assert!(calls(&sb).is_empty());

    // A token file others can read is refused too, before anything is written.
    let mut sb = install_sandbox();
    let loose = sb.path("loose-token");
    std::fs::write(&loose, "x").unwrap();
    sb.extra = format!(
        "[mattermost]\nteams = [\"basic\"]\ntoken_file = {}\n",
        quoted(&loose.display().to_string())
    );
    let out = sb.run(&["install", "--launchd"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("must be owner-only"), "{t}");
    assert!(calls(&sb).is_empty());
}

#[test]
fn install_launchd_bootstraps_in_the_gui_domain_restart_reloads_uninstall_boots_out() {
    let sb = install_sandbox();
    let plist = sb.path("Library/LaunchAgents/com.john.ops-agent.plist");
    let out = sb.run(&["install", "--launchd"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let gui = format!("gui/{}", uid());
    let target = format!("{gui}/com.john.ops-agent");
    assert_eq!(
        calls(&sb),
        [
            format!("launchctl print {target}"),
            format!("launchctl enable {target}"),
            format!("launchctl bootstrap {gui} {}", plist.display()),
            format!("launchctl print {target}"),
        ]
    );
    let text_of = std::fs::read_to_string(&plist).unwrap();
    assert_eq!(mode(&plist), 0o600);
    // What launchd was given is what was written.
    assert_eq!(
        std::fs::read_to_string(sb.path("fake/launchd/com.john.ops-agent.loaded")).unwrap(),
        text_of
    );
    // launchd opens its log files but creates no directories.
    assert!(sb.path("system/logs").is_dir());
    assert!(text_of.contains(&format!(
        "<string>{}</string>",
        sb.path("system/logs/ops-agent-launchd-error.log").display()
    )));

    // Installed and current: nothing to do.
    let out = sb.run(&["install", "--launchd"]);
    assert!(
        stdout(&out).contains("already loaded and current"),
        "{}",
        text(&out)
    );
    assert_eq!(calls(&sb), [format!("launchctl print {target}")]);

    let out = sb.run(&["restart", "--launchd"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let seen = calls(&sb);
    let bootout = seen
        .iter()
        .position(|c| *c == format!("launchctl bootout {target}"));
    let bootstrap = seen
        .iter()
        .position(|c| *c == format!("launchctl bootstrap {gui} {}", plist.display()));
    assert!(
        matches!((bootout, bootstrap), (Some(a), Some(b)) if a < b),
        "{seen:?}"
    );
    assert_eq!(seen.last(), Some(&format!("launchctl print {target}")));

    // A bootstrap that fails is reported, with what was run.
    std::fs::write(sb.path("fake/launchd/BOOTSTRAP_FAILS"), "").unwrap();
    let out = sb.run(&["restart", "--launchd"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("Bootstrap failed: 5"), "{t}");
    std::fs::remove_file(sb.path("fake/launchd/BOOTSTRAP_FAILS")).unwrap();
    calls(&sb);

    let out = sb.run(&["uninstall", "--launchd"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!plist.exists());
    assert!(
        !calls(&sb).contains(&format!("launchctl bootout {target}")),
        "it was not loaded"
    );
}

#[test]
fn the_reference_plist_is_what_install_launchd_print_renders() {
    let mut sb = install_sandbox();
    sb.extra.clear();
    let cfg = sb.path("Library/Application Support/ops-agent/config.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(&cfg, "").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ops-agent"))
        .args([
            "--config",
            &cfg.display().to_string(),
            "install",
            "--launchd",
            "--print",
        ])
        .env_clear()
        .env("HOME", sb.root())
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let home = sb.root().display().to_string();
    let printed = stdout(&out)
        .replace(env!("CARGO_BIN_EXE_ops-agent"), "/usr/local/bin/ops-agent")
        .replace(&home, "$HOME");
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/launchd/com.john.ops-agent.plist"
    ))
    .unwrap();
    assert_eq!(
        printed,
        format!("# $HOME/Library/LaunchAgents/com.john.ops-agent.plist\n{reference}")
    );
}

/// A plist parsed by Python's plistlib (expat: strict XML, as launchd's
/// own parser and xmllint are), as JSON: `{"ok": value}` or `{"error": why}`.
fn strict_plist(xml: &str) -> serde_json::Value {
    let program = "import json, plistlib, sys\n\
        try:\n    print(json.dumps({'ok': plistlib.loads(sys.stdin.buffer.read())}))\n\
        except Exception as e:\n    print(json.dumps({'error': repr(e)}))\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", program])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (the plist's strict parser; .ci/run has it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(xml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one file `install --print` printed, without its `# <path>` line.
fn printed_file(out: &std::process::Output) -> String {
    let s = stdout(out);
    let (head, body) = s.split_once('\n').unwrap();
    assert!(head.starts_with("# /"), "{s}");
    body.to_string()
}

#[test]
fn the_rendered_and_the_reference_plist_pass_a_strict_xml_parser() {
    let sb = install_sandbox();
    let out = sb.run(&["install", "--launchd", "--print"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rendered = printed_file(&out);
    let parsed = strict_plist(&rendered);
    let plist = &parsed["ok"];
    assert_eq!(
        plist["ProgramArguments"],
        serde_json::json!([
            env!("CARGO_BIN_EXE_ops-agent"),
            "--config",
            sb.config().display().to_string(),
            "run-once"
        ]),
        "{parsed}"
    );
    assert_eq!(
        plist["StandardErrorPath"],
        sb.path("system/logs/ops-agent-launchd-error.log")
            .display()
            .to_string(),
        "the Node daemon's launchd log names"
    );
    assert_eq!(plist["StartInterval"], 300);
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/launchd/com.john.ops-agent.plist"
    ))
    .unwrap();
    let parsed = strict_plist(&reference);
    assert_eq!(parsed["ok"]["Label"], "com.john.ops-agent", "{parsed}");
    // What an XML-special config path comes out as, read strictly.
    let odd = sb.path("cfg & <odd> \"q\" 'a'.toml");
    std::fs::copy(sb.config(), &odd).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ops-agent"))
        .arg("--config")
        .arg(&odd)
        .args(["install", "--launchd", "--print"])
        .env_clear()
        .env("HOME", sb.root())
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let parsed = strict_plist(&printed_file(&out));
    assert_eq!(
        parsed["ok"]["ProgramArguments"][2],
        odd.display().to_string(),
        "{parsed}"
    );
    // The parser is strict: the comment the plist used to carry fails it.
    let old_comment = rendered.replacen("<!--\n", "<!--\n  install --launchd\n", 1);
    assert!(
        strict_plist(&old_comment)["error"]
            .as_str()
            .is_some_and(|e| e.contains("ExpatError")),
        "a comment holding `--` must not parse"
    );
}

/// The agent as started through a symlink at `dir/ops-agent` (a link to
/// the real binary: `install` writes the path it was started as).
fn linked_binary(sb: &Sandbox, dir: &std::ffi::OsStr) -> std::path::PathBuf {
    let dir = sb.root().join("opt").join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("ops-agent");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ops-agent"), &link).unwrap();
    link
}

/// `systemd-analyze --user verify` on unit files, where it is installed:
/// its complaints (empty when clean), or `None` without the tool.
fn analyze(sb: &Sandbox, files: &[std::path::PathBuf]) -> Option<String> {
    let tool = Path::new("/usr/bin/systemd-analyze");
    if !tool.exists() {
        return None;
    }
    let out = std::process::Command::new(tool)
        .args(["--user", "verify"])
        .args(files)
        .env("XDG_RUNTIME_DIR", sb.path("run"))
        .output()
        .unwrap();
    Some(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn install_refuses_paths_a_job_file_cannot_carry_and_escapes_the_rest() {
    use std::os::unix::ffi::OsStrExt;
    let mut sb = install_sandbox();
    std::fs::create_dir_all(sb.path("run")).unwrap();
    sb.env.push((
        "XDG_RUNTIME_DIR".into(),
        sb.path("run").display().to_string(),
    ));
    let units = sb.path(".config/systemd/user");
    let service = units.join("ops-agent.service");
    let timer = units.join("ops-agent.timer");
    let plist = sb.path("Library/LaunchAgents/com.john.ops-agent.plist");

    // A newline or CR in the binary's path would split ExecStart= into
    // injected unit lines; a control character is not XML; a name that is
    // not UTF-8 would come out as another name: refused for both
    // schedulers, with the value shown escaped, before anything is written
    // or run.
    let hostile: [(&[u8], &str); 4] = [
        (
            b"x\n[Service]\nExecStartPre=touch pwned\n",
            "control character '\\n'",
        ),
        (b"cr\rx", "control character '\\r'"),
        (b"esc\x1b[2Jx", "control character '\\u{1b}'"),
        (b"bad\xffname", "is not UTF-8"),
    ];
    for (name, why) in hostile {
        sb.bin = linked_binary(&sb, std::ffi::OsStr::from_bytes(name));
        for flag in ["--systemd", "--launchd"] {
            for print in [false, true] {
                let mut args = vec!["install", flag];
                if print {
                    args.push("--print");
                }
                let out = sb.run(&args);
                let t = text(&out);
                assert_eq!(out.status.code(), Some(1), "{args:?} {name:?}: {t}");
                assert!(
                    t.contains("the binary \"")
                        && t.contains(why)
                        && t.contains("rename or move it"),
                    "{args:?}: {t}"
                );
                assert!(out.stdout.is_empty(), "nothing printed: {t}");
            }
        }
        assert!(!service.exists() && !timer.exists() && !plist.exists());
        assert!(calls(&sb).is_empty(), "nothing loaded or enabled");
    }

    // A quote or backslash in the program: systemd refuses such a unit
    // ("Executable name contains special characters"), so install does;
    // launchd takes it, escaped, and a strict parser reads it back.
    sb.bin = linked_binary(&sb, "it's".as_ref());
    let out = sb.run(&["install", "--systemd"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("systemd refuses in the program it starts"),
        "{t}"
    );
    assert!(!service.exists() && calls(&sb).is_empty());
    let out = sb.run(&["install", "--launchd", "--print"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let parsed = strict_plist(&printed_file(&out));
    assert_eq!(
        parsed["ok"]["ProgramArguments"][0],
        sb.bin.display().to_string(),
        "{parsed}"
    );

    // `$` and `%` in the program and its config: `%` doubled everywhere,
    // `$` doubled in the arguments only (systemd expands variables there,
    // not in the program's path, where `$$` named a file that does not
    // exist); then install has systemd-analyze verify what it wrote.
    sb.bin = linked_binary(&sb, "a$b 100%".as_ref());
    let odd_config = sb.path("cfg $HOME 100%.toml");
    sb.write_config();
    std::fs::copy(sb.config(), &odd_config).unwrap();
    let mut cmd = std::process::Command::new(&sb.bin);
    cmd.arg("--config")
        .arg(&odd_config)
        .args(["install", "--systemd"])
        .env_clear()
        .env("HOME", sb.root());
    for (k, v) in &sb.env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let svc = std::fs::read_to_string(&service).unwrap();
    let want = format!(
        "\nExecStart=\"{}/opt/a$b 100%%/ops-agent\" --config \"{}/cfg $$HOME 100%%.toml\" run-once\n",
        sb.root().display(),
        sb.root().display()
    );
    assert!(svc.contains(&want), "{svc}");
    if let Some(complaints) = analyze(&sb, &[service.clone(), timer.clone()]) {
        assert_eq!(complaints, "", "systemd-analyze on what install wrote");
        assert!(t.contains("verified the units"), "{t}");
    }
    calls(&sb);

    // What systemd-analyze rejects is not enabled, and what was there
    // before is put back.
    let before = std::fs::read_to_string(&timer).unwrap();
    let fakes = sb.path("fake-analyze");
    std::fs::create_dir_all(&fakes).unwrap();
    let analyzer = fakes.join("systemd-analyze");
    std::fs::write(
        &analyzer,
        "#!/bin/sh\necho 'ops-agent.service: Command /x is not executable: No such file or directory' >&2\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &analyzer,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    sb.bin = linked_binary(&sb, "plain".as_ref());
    let path = sb.env.iter_mut().find(|(k, _)| k == "PATH").unwrap();
    path.1 = format!("{}:{}", fakes.display(), path.1);
    let out = sb.run(&["install", "--systemd", "--force"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("systemd-analyze rejects the units")
            && t.contains("Command /x is not executable"),
        "{t}"
    );
    assert_eq!(std::fs::read_to_string(&timer).unwrap(), before);
    assert_eq!(std::fs::read_to_string(&service).unwrap(), svc);
    assert!(calls(&sb).is_empty(), "nothing enabled");
}

/// `systemd-analyze verify` on the units `install --systemd --print`
/// renders: the `systemd_analyze` tier. Skips only where the tool is
/// missing outside CI; `.ci/run` installs it (Debian's systemd package) and
/// counts the tier's `tier-ran:` line.
#[test]
fn rendered_units_pass_systemd_analyze_verify() {
    const TIER: &str = "systemd_analyze";
    let tool = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(tool) = tool else {
        tier::missing(
            TIER,
            "systemd-analyze is not installed (.ci/run installs Debian's systemd)",
        );
        return;
    };
    let sb = install_sandbox();
    let out = sb.run(&["install", "--systemd", "--print"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed = stdout(&out);
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    let mut files = Vec::new();
    for block in printed.split("\n# /").map(|b| b.trim_start_matches("# /")) {
        let (path, body) = block.split_once('\n').unwrap();
        let name = Path::new(path).file_name().unwrap();
        let file = units.join(name);
        std::fs::write(&file, body.trim_end().to_string() + "\n").unwrap();
        files.push(file);
    }
    assert_eq!(files.len(), 2, "{printed}");
    let runtime = dir.path().join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let out = std::process::Command::new(tool)
        .arg("--user")
        .arg("verify")
        .args(&files)
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify complained:\n{}",
        text(&out)
    );
    tier::ran(TIER);
}

// ------------------------------------------------------------ operator polish

#[test]
fn usage_mistakes_exit_2_and_say_so_once() {
    let sb = Sandbox::new();
    for args in [
        &["health", "--check", "nosuch"][..],
        &["explain", "nosuch"],
        &["silence", "nosuch", "1h", "--reason", "upgrade"],
        &["silence", "memory", "soon", "--reason", "upgrade"],
        &["silence", "--clear", "s9"],
        &["fix", "nosuch", "down"],
    ] {
        let out = sb.run(args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {t}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: printed once: {t}");
        assert!(stderr.starts_with("ops-agent: "), "{args:?}: {t}");
    }
    // Exit 1 still means "something is critical".
    let mut sb = Sandbox::new();
    sb.extra = "[[checks]]\nname = \"full\"\nkind = \"disk\"\npath = \"/\"\nwarn_pct = 0.0\ncritical_pct = 0.0\n".into();
    let out = sb.run(&["health", "--check", "full"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn a_fatal_error_is_printed_once_on_stderr_and_kept_in_the_log() {
    let sb = Sandbox::new();
    let victim = sb.path("victim.json");
    std::fs::write(&victim, "{}").unwrap();
    std::fs::create_dir_all(sb.path("tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, sb.state()).unwrap();
    let out = sb.run(&["run-once"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("it is a symlink").count(), 1, "{t}");
    assert_eq!(
        sb.log_text().matches("it is a symlink").count(),
        1,
        "{}",
        sb.log_text()
    );

    // status: refused until removed, not "set aside by the next cycle".
    let out = sb.run(&["status"]);
    let s = stdout(&out);
    assert!(
        s.contains("every cycle refuses to run until it is removed")
            && !s.contains("sets it aside"),
        "{s}"
    );
}

#[test]
fn status_check_fails_when_overdue_and_passes_after_a_cycle() {
    let sb = Sandbox::new();
    let out = sb.run(&["status", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("OVERDUE: no cycle has saved state yet"));
    assert_eq!(sb.run(&["status"]).status.code(), Some(0));
    assert!(sb.run(&["run-once"]).status.success());
    let out = sb.run(&["status", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = sb.run(&["status", "--check", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn tasks_stats_with_no_tasks_says_so_without_empty_headings() {
    let sb = Sandbox::new();
    let out = sb.run(&["tasks", "stats"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out), "No tasks.\n");
}

#[test]
fn doctor_checks_what_the_scheduled_job_will_see() {
    let sb = install_sandbox();
    let out = sb.run(&["doctor"]);
    let s = stdout(&out);
    assert!(
        doctor_line(&s, "secret mattermost.token_file").starts_with("ok    "),
        "{s}"
    );
    let job = doctor_line(&s, "scheduled job");
    assert!(
        job.starts_with("warn  ")
            && job.contains("not installed")
            && job.contains("install --systemd"),
        "{s}"
    );

    assert_eq!(sb.run(&["install", "--systemd"]).status.code(), Some(0));
    calls(&sb);
    let s = stdout(&sb.run(&["doctor"]));
    assert!(
        doctor_line(&s, "scheduled job").starts_with("ok    ")
            && doctor_line(&s, "scheduled job").contains("current"),
        "{s}"
    );
    assert!(
        doctor_line(&s, "scheduled job loaded").starts_with("ok    "),
        "{s}"
    );
    assert!(calls(&sb).contains(&"systemctl --user is-active ops-agent.timer".to_string()));

    // The job runs another binary, which is gone; the timer is stopped; the
    // token file became readable by others.
    let service = sb.path(".config/systemd/user/ops-agent.service");
    let exe = env!("CARGO_BIN_EXE_ops-agent");
    let text_of = std::fs::read_to_string(&service)
        .unwrap()
        .replace(exe, "/opt/gone/ops-agent");
    std::fs::write(&service, text_of).unwrap();
    std::fs::write(
        sb.path("fake/systemd/ops-agent.timer"),
        "ActiveState=inactive\n",
    )
    .unwrap();
    std::fs::set_permissions(
        sb.path(".config/ops-agent/mm-token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let out = sb.run(&["doctor"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = stdout(&out);
    let job = doctor_line(&s, "scheduled job");
    assert!(
        job.starts_with("FAIL  ") && job.contains("runs /opt/gone/ops-agent, which does not exist"),
        "{s}"
    );
    assert!(
        doctor_line(&s, "scheduled job loaded").starts_with("FAIL  "),
        "{s}"
    );
    let secret = doctor_line(&s, "secret mattermost.token_file");
    assert!(
        secret.starts_with("FAIL  ") && secret.contains("chmod 600"),
        "{s}"
    );
}

// ------------------------------------------------------------ Kubernetes

/// The `config.toml: |` block of docs/kubernetes/configmap.yaml, dedented.
fn configmap_toml() -> String {
    let yaml = include_str!("../../docs/kubernetes/configmap.yaml");
    let mut lines = yaml
        .lines()
        .skip_while(|l| l.trim() != "config.toml: |")
        .skip(1);
    let first = lines.next().unwrap();
    let indent = first.len() - first.trim_start().len();
    std::iter::once(first)
        .chain(
            lines.take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent),
        )
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kubernetes_configmap_holds_a_config_the_agent_accepts() {
    let toml_text = configmap_toml();
    assert!(toml_text.contains("[health.engines.prod]"), "{toml_text}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, &toml_text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ops-agent"))
        .args(["--config", &file.display().to_string(), "config", "check"])
        .env_clear()
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    // Every runbook file is on the volume.
    for key in [
        "state",
        "token_cache",
        "fix_history",
        "stats",
        "log",
        "ledger",
        "lock",
        "planka_token_cache",
    ] {
        let line = stdout(&out)
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no paths.{key}: {t}"))
            .to_string();
        assert!(line.contains("\"/data/"), "{line}");
    }
    for cronjob in [
        include_str!("../../docs/kubernetes/cronjob.yaml"),
        include_str!("../../docs/kubernetes/cronjob-restricted.yaml"),
    ] {
        assert!(
            cronjob.contains("schedule: \"*/5 * * * *\"")
                && cronjob.contains("concurrencyPolicy: Forbid")
        );
        assert!(
            cronjob.contains("args: [\"--config\", \"/etc/ops-agent/config.toml\", \"run-once\"]")
        );
        assert!(cronjob.contains("mountPath: /run/secrets/ops-agent"));
    }
}

// ------------------------------------------------------------ the job as the scheduler runs it

/// `ExecStart=` words and `Environment=` pairs of a rendered service (the
/// test paths hold no spaces, so quoting is only stripped).
fn service_command(unit: &str) -> (Vec<String>, Vec<(String, String)>) {
    let unquote = |w: &str| w.trim_matches('"').replace("%%", "%").replace("$$", "$");
    let argv = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .split_whitespace()
        .map(unquote)
        .collect();
    let env = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(|v| {
            let kv = unquote(v);
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    (argv, env)
}

/// `ProgramArguments` and `EnvironmentVariables` of a rendered plist.
fn plist_command(plist_text: &str) -> (Vec<String>, Vec<(String, String)>) {
    let value = plist::Value::from_reader_xml(plist_text.as_bytes()).unwrap();
    let d = value.as_dictionary().unwrap();
    let argv = d["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_string().unwrap().to_string())
        .collect();
    let env = d["EnvironmentVariables"]
        .as_dictionary()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_string().unwrap().to_string()))
        .collect();
    (argv, env)
}

/// What `install` renders, run the way the scheduler runs it: that argv,
/// only that environment (plus HOME, which launchd and systemd set), no
/// shell. With the token in a file the cycle reads chat; the operator's
/// OPS_AGENT_MM_TOKEN does not reach it.
#[test]
fn the_installed_job_run_as_the_scheduler_runs_it_reads_chat_with_the_token_file() {
    let mut b = WorldBuilder::new();
    let (mm, agent) = b.mattermost(&["basic"]);
    let alice = mm.add_user("alice", "pw");
    let team = mm.add_team("basic", &[&agent.id, &alice]);
    let ops = mm.add_channel(&team, "ops", &[&agent.id, &alice]);
    b.line(
        "mattermost",
        &format!("token_file = {}", quoted("~/.config/ops-agent/mm-token")),
    );
    b.line("ollama", "url = \"http://127.0.0.1:9\"");
    let mut sb = b.sandbox();
    let token = agent.token.clone();
    write_secret(&sb.path(".config/ops-agent/mm-token"), &token);
    // The operator's shell has the token too; the job must not need it.
    let fakes = install_sandbox();
    sb.env.extend(fakes.env.iter().cloned());
    std::fs::create_dir_all(sb.path("fake")).unwrap();
    sb.env.retain(|(k, _)| k != "OPS_FAKE_DAEMON_DIR");
    sb.env.push((
        "OPS_FAKE_DAEMON_DIR".into(),
        sb.path("fake").display().to_string(),
    ));

    for (flag, parse) in [
        (
            "--systemd",
            service_command as fn(&str) -> (Vec<String>, Vec<(String, String)>),
        ),
        ("--launchd", plist_command),
    ] {
        mm.post(&ops, &alice, &format!("morning all, quiet night ({flag})"));
        let out = sb.run(&["install", flag, "--print"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let printed = stdout(&out);
        let first = printed.split("\n# /").next().unwrap();
        let body = first.split_once('\n').unwrap().1;
        let (argv, env) = parse(body);
        assert_eq!(
            argv.last().map(String::as_str),
            Some("run-once"),
            "{argv:?}"
        );
        let run = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(env)
            .env("HOME", sb.root())
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(0), "{flag}: {}", text(&run));
        let (outcome, detail) = mm_stage(&sb);
        assert_eq!(outcome, "ok", "{flag}: {detail}");
        assert!(detail.starts_with("1 new"), "{flag}: {detail}");
    }
    let log = sb.log_text();
    assert_eq!(log.matches("mattermost=ok(1 new").count(), 2, "{log}");
    assert!(!log.contains(&token));
}
