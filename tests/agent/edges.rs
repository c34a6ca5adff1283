//! The agent's edges, round two (hostile files and text from outside),
//! through the real binary: a secret file that is huge or not one line, a
//! password in an HTTP check's URL, terminal control from outside text in
//! `status` and `doctor`, uncertain tasks past the list's bound, and a
//! `resolve_command` interrupted by kills.

use std::os::unix::fs::PermissionsExt;

use crate::support::agent::{text, Sandbox};
use crate::support::mattermost::FakeMattermost;
use crate::support::world::WorldBuilder;

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
