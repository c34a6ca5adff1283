//! Processes as the kernel sees them, for tests that claim a command was
//! killed: the living members of a process group, read from `/proc`.
//! A zombie is not living: a killed orphan waits there for a parent (or a
//! PID 1 that does not reap, in a container) to collect it.

use std::time::{Duration, Instant};

/// The pids of the living (not zombie) processes in group `pgid`.
pub fn living_in_group(pgid: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parens.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let living = !matches!(fields.first(), Some(&"Z") | Some(&"X"));
        if living && fields.get(2).and_then(|g| g.parse().ok()) == Some(pgid) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits (up to `within`) until group `pgid` has no living member; returns
/// the members still living then (empty: the group is gone). SIGKILL is
/// delivered asynchronously, so a group killed a moment ago may need one.
pub fn wait_group_gone(pgid: i32, within: Duration) -> Vec<i32> {
    let end = Instant::now() + within;
    loop {
        let living = living_in_group(pgid);
        if living.is_empty() || Instant::now() >= end {
            return living;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids a fake command wrote, one per line, to `file` (its own `$$`
/// first: the group it leads).
pub fn pids_in(file: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().expect("a pid per line"))
        .collect()
}
