//! The agent's own files stay bounded however busy a cycle is, through the
//! real binary: a repeated warning is said once with a count, a cycle that
//! writes more than `[log] max_bytes` rotates its activity log and audit
//! trail as it goes, and two cycles started at the same moment rotate once.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::support::agent::{text, Sandbox};
use crate::support::ollama::dead_url;
use crate::support::world::WorldBuilder;

const MAX_BYTES: u64 = 4096;
/// Bursts of cycles started at the same moment.
const BURSTS: usize = 20;

/// `path` and its rotated copies (`.1`, `.2`, …) that exist.
fn generations(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    for n in 1..100 {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        let p = PathBuf::from(name);
        if p.exists() {
            out.push(p);
        }
    }
    out.retain(|p| p.exists());
    out
}

fn read_all(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// 200 posts while the model is unreachable: the fallback's warning is
/// written once and counted, and the cycle's log and audit trail, far more
/// than 4 KiB, are rotated as they grow: no file much over `max_bytes`,
/// never more than `keep` old copies. Before, the warning came once per
/// post and the cycle wrote one file of every line it had.
#[test]
fn a_busy_cycle_says_a_repeated_warning_once_and_rotates_as_it_writes() {
    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["basic"]);
    let alice = mm.add_user("alice", "pw");
    let team = mm.add_team("basic", &[&me.id, &alice]);
    let channel = mm.add_channel(&team, "ops", &[&me.id, &alice]);
    b.ollama_at(&dead_url());
    b.line("log", &format!("max_bytes = {MAX_BYTES}"))
        .line("log", "keep = 3");
    let sb = b.sandbox();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    mm.advance_clock(1_000);
    for i in 0..200 {
        mm.post(&channel, &alice, &format!("status note {i}: all quiet"));
    }
    mm.advance_clock(1_000);
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));

    for path in [sb.log(), sb.audit_path()] {
        let files = generations(&path);
        assert!(files.len() > 1, "{} was never rotated", path.display());
        assert!(files.len() <= 4, "more than keep + 1 files: {files:?}");
        for f in &files {
            let len = std::fs::metadata(f).unwrap().len();
            assert!(len <= MAX_BYTES + 2048, "{}: {len} bytes", f.display());
        }
    }
    // The newest files hold this cycle's end: its summary line.
    assert!(sb.log_text().contains("cycle "), "{}", sb.log_text());
    let log = read_all(&generations(&sb.log()));
    let fell_back = log
        .lines()
        .filter(|l| l.contains("Classification fell back"))
        .count();
    assert_eq!(fell_back, 1, "the fallback warning, once per cycle");
    assert!(
        log.lines()
            .any(|l| l.contains("more times: Classification fell back")),
        "no count of the repeats"
    );
}

/// Twenty bursts of four cycles started at the same moment, each over a log
/// grown past `max_bytes`: one rotation per burst, so `keep` holds twenty full
/// generations. Before, rotation ran before the lock, and two cycles of a
/// burst could rotate (a near-empty generation pushing a full one out).
#[test]
fn two_cycles_started_at_once_rotate_the_log_once() {
    let mut b = WorldBuilder::new();
    b.line("log", &format!("max_bytes = {MAX_BYTES}"))
        .line("log", "keep = 40");
    let sb: Sandbox = b.sandbox();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    for burst in 0..BURSTS {
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(sb.log())
            .unwrap();
        std::io::Write::write_all(&mut log, format!("filler {burst}\n").repeat(500).as_bytes())
            .unwrap();
        // Both commands first (each writes the config), then both at once.
        let mut commands: Vec<_> = (0..4)
            .map(|_| {
                let mut c = sb.command(&["run-once"]);
                c.stdout(Stdio::null()).stderr(Stdio::piped());
                c
            })
            .collect();
        let children: Vec<_> = commands.iter_mut().map(|c| c.spawn().unwrap()).collect();
        let mut ran = 0;
        for c in children {
            let out = c.wait_with_output().unwrap();
            match out.status.code() {
                Some(0) => ran += 1,
                Some(75) => {}
                other => panic!("exit {other:?}: {}", String::from_utf8_lossy(&out.stderr)),
            }
        }
        assert!(ran >= 1, "burst {burst}: no cycle ran");
    }
    let files = generations(&sb.log());
    assert_eq!(files.len(), BURSTS + 1, "one rotation per burst: {files:?}");
    for f in &files[1..] {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len >= MAX_BYTES, "{}: a {len}-byte generation", f.display());
    }
}
