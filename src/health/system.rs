//! Disk and memory probes (sysinfo). These need nothing installed, which is
//! why they are what a fresh `ops-agent run-once` checks.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use sysinfo::{Disks, MemoryRefreshKind, ProcessRefreshKind, RefreshKind, System};

use super::{CheckConfig, CheckKind, Status};

/// Runs a disk or memory check (blocking: call from `spawn_blocking`).
pub(crate) fn probe(check: &CheckConfig) -> Result<(Status, String)> {
    let warn = check.warn_pct.unwrap_or(85.0);
    let crit = check.critical_pct.unwrap_or(90.0);
    match check.kind {
        CheckKind::Disk => {
            let path = crate::paths::expand_tilde(check.path.as_deref().unwrap_or("/"));
            let (mount, used_pct) = disk_usage(&path)?;
            Ok(grade(
                used_pct,
                warn,
                crit,
                &format!(
                    "{} {used_pct:.1}% used (volume {})",
                    path.display(),
                    mount.display()
                ),
            ))
        }
        CheckKind::Memory => {
            let sys = System::new_with_specifics(
                RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
            );
            let total = sys.total_memory();
            if total == 0 {
                bail!("the system reports 0 bytes of memory");
            }
            let used_pct = sys.used_memory() as f64 * 100.0 / total as f64;
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            Ok(grade(
                used_pct,
                warn,
                crit,
                &format!(
                    "memory {used_pct:.1}% used ({:.1} of {:.1} GiB)",
                    gib(sys.used_memory()),
                    gib(total)
                ),
            ))
        }
        other => bail!("kind '{}' is not a system check", other.as_str()),
    }
}

/// Grades a percentage against the thresholds; the reason names the
/// threshold that was crossed so the log line explains itself.
fn grade(used_pct: f64, warn: f64, crit: f64, what: &str) -> (Status, String) {
    if used_pct >= crit {
        (Status::Critical, format!("{what}, critical at {crit}%"))
    } else if used_pct >= warn {
        (Status::Warn, format!("{what}, warn at {warn}%"))
    } else {
        (Status::Ok, what.to_string())
    }
}

/// Finds the mounted volume that holds `path` (the longest mount point that
/// is a prefix of it) and its used percentage.
fn disk_usage(path: &Path) -> Result<(PathBuf, f64)> {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let disks = Disks::new_with_refreshed_list();
    let disk = disks
        .list()
        .iter()
        .filter(|d| path.starts_with(d.mount_point()) && d.total_space() > 0)
        .max_by_key(|d| d.mount_point().as_os_str().len());
    let Some(disk) = disk else {
        bail!("no mounted volume found for {}", path.display());
    };
    let total = disk.total_space() as f64;
    let used = total - disk.available_space() as f64;
    Ok((disk.mount_point().to_path_buf(), used * 100.0 / total))
}

/// One mounted volume's use, for an incident brief.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MountUse {
    /// Where it is mounted.
    pub(crate) mount: PathBuf,
    /// Percent used.
    pub(crate) used_pct: f64,
    /// Bytes still available.
    pub(crate) available: u64,
    /// Its size in bytes.
    pub(crate) total: u64,
}

/// Every mounted volume with a size (pseudo filesystems report none),
/// fullest first, at most `n` (blocking: call from `spawn_blocking`). A
/// filesystem mounted many times (a container engine's overlays, bind
/// mounts) is listed once, at its shortest mount point.
pub(crate) fn mounts(n: usize) -> Vec<MountUse> {
    let disks = Disks::new_with_refreshed_list();
    let mut list: Vec<&sysinfo::Disk> = disks
        .list()
        .iter()
        .filter(|d| d.total_space() > 0)
        .collect();
    list.sort_by_key(|d| d.mount_point().as_os_str().len());
    let mut seen = std::collections::BTreeSet::new();
    let mut out: Vec<MountUse> = list
        .into_iter()
        .filter(|d| seen.insert((d.total_space(), d.available_space())))
        .map(|d| {
            let total = d.total_space();
            let available = d.available_space();
            MountUse {
                mount: d.mount_point().to_path_buf(),
                used_pct: (total - available.min(total)) as f64 * 100.0 / total as f64,
                available,
                total,
            }
        })
        .collect();
    out.sort_by(|a, b| b.used_pct.total_cmp(&a.used_pct));
    out.truncate(n);
    out
}

/// The percentage a disk or memory reason states (`/ 91.2% used (volume
/// /)`): the figure [`probe`] writes, read back from the results the agent
/// keeps between cycles, so a brief can say how fast a volume fills.
pub(crate) fn used_pct_in(reason: &str) -> Option<f64> {
    let at = reason.find("% used")?;
    let start = reason[..at]
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |i| i + 1);
    reason[start..at].parse().ok()
}

/// One process by its resident memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessMemory {
    /// Its name (outside text: any program names itself).
    pub(crate) name: String,
    /// Its pid.
    pub(crate) pid: u32,
    /// Resident memory in bytes.
    pub(crate) rss: u64,
}

/// The `n` processes with the most resident memory, biggest first (threads
/// are not counted apart; blocking: call from `spawn_blocking`).
pub(crate) fn top_processes(n: usize) -> Vec<ProcessMemory> {
    let sys = System::new_with_specifics(
        RefreshKind::nothing().with_processes(ProcessRefreshKind::nothing().with_memory()),
    );
    let mut procs: Vec<ProcessMemory> = sys
        .processes()
        .values()
        .filter(|p| p.thread_kind().is_none())
        .map(|p| ProcessMemory {
            name: p.name().to_string_lossy().into_owned(),
            pid: p.pid().as_u32(),
            rss: p.memory(),
        })
        .collect();
    procs.sort_by(|a, b| b.rss.cmp(&a.rss).then(a.pid.cmp(&b.pid)));
    procs.truncate(n);
    procs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grade_names_the_crossed_threshold() {
        assert_eq!(grade(10.0, 85.0, 90.0, "x").0, Status::Ok);
        let (s, r) = grade(86.0, 85.0, 90.0, "x");
        assert_eq!(s, Status::Warn);
        assert!(r.contains("warn at 85%"));
        let (s, r) = grade(90.0, 85.0, 90.0, "x");
        assert_eq!(s, Status::Critical);
        assert!(r.contains("critical at 90%"));
    }

    #[test]
    fn the_used_percentage_is_read_back_from_a_reason() {
        let (_, reason) = grade(91.25, 85.0, 90.0, "/data 91.2% used (volume /data)");
        assert_eq!(used_pct_in(&reason), Some(91.2));
        assert_eq!(used_pct_in("memory 7.0% used (1.0 of 8.0 GiB)"), Some(7.0));
        assert_eq!(used_pct_in("/v2 100% used (volume /v2)"), Some(100.0));
        assert_eq!(used_pct_in("probe failed: no mounted volume"), None);
    }

    #[test]
    fn mounts_and_processes_are_listed_biggest_first() {
        let m = mounts(50);
        assert!(m.iter().any(|v| v.mount == Path::new("/")), "{m:?}");
        assert!(m.windows(2).all(|w| w[0].used_pct >= w[1].used_pct));
        let p = top_processes(3);
        assert!(!p.is_empty() && p.len() <= 3, "{p:?}");
        assert!(p.windows(2).all(|w| w[0].rss >= w[1].rss));
    }

    #[test]
    fn root_volume_is_found() {
        let (mount, pct) = disk_usage(Path::new("/")).unwrap();
        assert_eq!(mount, PathBuf::from("/"));
        assert!((0.0..=100.0).contains(&pct));
    }
}
