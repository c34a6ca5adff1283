//! Disk and memory probes (sysinfo). These need nothing installed, which is
//! why they are what a fresh `ops-agent run-once` checks.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use sysinfo::{Disks, MemoryRefreshKind, RefreshKind, System};

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
    fn root_volume_is_found() {
        let (mount, pct) = disk_usage(Path::new("/")).unwrap();
        assert_eq!(mount, PathBuf::from("/"));
        assert!((0.0..=100.0).contains(&pct));
    }
}
