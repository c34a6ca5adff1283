//! What the health stage stands on: each Docker engine the checks use
//! (answers? its TLS files there, the key owner-only?) and the free space
//! where the state is saved (a full volume fails every cycle's save with
//! "No space left on device" while everything else looks fine). Gathering
//! is I/O; [`engine_finding`], [`tls_finding`] and [`space_finding`] are
//! pure and table-tested.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{finding, Finding, Level};
use crate::config::Config;
use crate::health::docker::TlsFiles;
use crate::health::{self, CheckKind, CheckResult, HealthContext, Status};

/// Less free space than this on the state's volume: saves fail (a state
/// file, a ledger line and the journal fit, the next growth does not).
const FAIL_BELOW_BYTES: u64 = 1 << 20;
/// Less than this: worth a look before it fails.
const WARN_BELOW_BYTES: u64 = 64 << 20;

/// The doctor's name for an engine: `docker engine`, `docker engine <name>`.
fn engine_label(engine: Option<&str>) -> String {
    match engine {
        None => "docker engine".to_string(),
        Some(n) => format!("docker engine {n}"),
    }
}

/// Probes every engine a check uses (its `docker_engine` check, implicit
/// or configured, under that check's timeout) and looks at the TLS files
/// of each engine under `[health.engines]`. Nothing when no check uses
/// Docker.
pub(super) async fn engine_findings(config: &Config) -> Vec<Finding> {
    let engines: Vec<_> = config
        .checks
        .iter()
        .filter(|c| c.kind == CheckKind::DockerEngine)
        .cloned()
        .collect();
    if engines.is_empty() {
        return Vec::new();
    }
    let ctx = HealthContext::new(&config.health);
    let probes = engines.iter().map(|c| health::run_one(&ctx, c));
    let results = futures_util::future::join_all(probes).await;
    let mut out = Vec::new();
    for (check, result) in engines.iter().zip(&results) {
        let containers: Vec<&str> = config
            .checks
            .iter()
            .filter(|c| c.kind == CheckKind::Docker && c.engine == check.engine)
            .map(|c| c.name.as_str())
            .collect();
        out.push(engine_finding(check.engine.as_deref(), result, &containers));
        if let Some(tls) = check
            .engine
            .as_ref()
            .and_then(|n| config.health.engines.get(n))
            .and_then(|e| e.tls())
        {
            let facts = TlsFacts {
                ca: readable(&tls.ca),
                cert: readable(&tls.cert),
                key: crate::secret::check_file(&tls.key).map_err(|e| format!("{e:#}")),
            };
            out.push(tls_finding(
                check.engine.as_deref().unwrap_or_default(),
                &tls,
                &facts,
            ));
        }
    }
    out
}

/// Judges an engine's probe. An engine that does not answer is a failure:
/// every container check on it is blocked until someone acts. Pure.
pub(super) fn engine_finding(
    engine: Option<&str>,
    result: &CheckResult,
    containers: &[&str],
) -> Finding {
    let level = match result.status {
        Status::Ok => Level::Ok,
        Status::Warn => Level::Warn,
        Status::Critical | Status::Unknown => Level::Fail,
    };
    let reason = if level == Level::Fail && !containers.is_empty() {
        format!(
            "{}; its container checks ({}) cannot run",
            result.reason,
            containers.join(", ")
        )
    } else {
        result.reason.clone()
    };
    finding(engine_label(engine), level, reason)
}

fn readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether each TLS file can be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsFacts {
    /// `tls_ca` opens.
    pub(super) ca: Result<(), String>,
    /// `tls_cert` opens.
    pub(super) cert: Result<(), String>,
    /// `tls_key` is ours and owner-only (the engine client refuses it
    /// otherwise).
    pub(super) key: Result<(), String>,
}

/// Judges an engine's TLS files. Pure.
pub(super) fn tls_finding(engine: &str, tls: &TlsFiles, f: &TlsFacts) -> Finding {
    let check = format!("{} tls", engine_label(Some(engine)));
    let problems: Vec<String> = [
        ("tls_ca", &f.ca),
        ("tls_cert", &f.cert),
        ("tls_key", &f.key),
    ]
    .into_iter()
    .filter_map(|(key, r)| r.as_ref().err().map(|e| format!("{key}: {e}")))
    .collect();
    if problems.is_empty() {
        finding(
            check,
            Level::Ok,
            format!(
                "{}, {} readable; {} owner-only",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display()
            ),
        )
    } else {
        finding(check, Level::Fail, problems.join("; "))
    }
}

/// Free space on one volume that holds state-like files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SpaceFacts {
    /// Bytes an unprivileged writer may still use.
    pub(super) free_bytes: u64,
    /// Inodes still free, when the volume counts them (tmpfs, ext4).
    pub(super) free_inodes: Option<u64>,
}

/// Judges the free space where `uses` (the doctor's names of the files)
/// are saved, in `dir`. Pure.
pub(super) fn space_finding(dir: &Path, uses: &[&str], f: &SpaceFacts) -> Finding {
    let check = format!("free space {}", dir.display());
    let files = uses.join(", ");
    let size = human_bytes(f.free_bytes);
    if f.free_bytes < FAIL_BELOW_BYTES || f.free_inodes == Some(0) {
        let what = if f.free_inodes == Some(0) {
            "no free inodes".to_string()
        } else {
            format!("{size} free")
        };
        return finding(
            check,
            Level::Fail,
            format!(
                "No space left for the {files} ({what}): every cycle fails to save with \
                 \"No space left on device\"; free space on that volume or move [paths] elsewhere"
            ),
        );
    }
    if f.free_bytes < WARN_BELOW_BYTES {
        return finding(
            check,
            Level::Warn,
            format!("only {size} free for the {files}; saves fail when it runs out"),
        );
    }
    finding(check, Level::Ok, format!("{size} free for the {files}"))
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// One finding per volume among the directories of `files` (the doctor's
/// name, the path), named after the first directory on it. A directory
/// that does not exist yet is measured where the first save would create
/// it (its nearest existing ancestor).
pub(super) fn space_findings(files: &[(&str, &Path)]) -> Vec<Finding> {
    let mut volumes: BTreeMap<u64, (PathBuf, Vec<&str>, Option<SpaceFacts>)> = BTreeMap::new();
    let mut order: Vec<u64> = Vec::new();
    for (name, path) in files {
        let dir = path.parent().unwrap_or(Path::new("/"));
        let Some(existing) = dir.ancestors().find(|a| a.is_dir()) else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(existing) else {
            continue;
        };
        let entry = volumes.entry(meta.dev()).or_insert_with(|| {
            order.push(meta.dev());
            (dir.to_path_buf(), Vec::new(), statvfs(existing))
        });
        if !entry.1.contains(name) {
            entry.1.push(name);
        }
    }
    order
        .iter()
        .filter_map(|dev| {
            let (dir, uses, facts) = volumes.get(dev)?;
            Some(match facts {
                Some(f) => space_finding(dir, uses, f),
                None => finding(
                    format!("free space {}", dir.display()),
                    Level::Warn,
                    "could not read the volume's free space (statvfs failed)",
                ),
            })
        })
        .collect()
}

fn statvfs(dir: &Path) -> Option<SpaceFacts> {
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value for statvfs to fill.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a valid buffer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ by platform
    let (bavail, frsize, files, favail) = (
        s.f_bavail as u64,
        s.f_frsize as u64,
        s.f_files as u64,
        s.f_favail as u64,
    );
    Some(SpaceFacts {
        free_bytes: bavail.saturating_mul(frsize),
        free_inodes: (files > 0).then_some(favail),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::run::result_of;
    use crate::health::CheckConfig;

    #[test]
    fn engine_judgements() {
        let e = CheckConfig::new("docker-engine-prod", CheckKind::DockerEngine);
        let table = [
            (Status::Ok, Level::Ok, "Docker 20.10 (API 1.41)"),
            (
                Status::Critical,
                Level::Fail,
                "its container checks (db) cannot run",
            ),
            (Status::Unknown, Level::Fail, "no answer within 5s"),
        ];
        for (status, level, needle) in table {
            let r = result_of(&e, status, "no answer within 5s".into(), 1);
            let r = if status == Status::Ok {
                result_of(&e, status, "Docker 20.10 (API 1.41)".into(), 1)
            } else {
                r
            };
            let f = engine_finding(Some("prod"), &r, &["db"]);
            assert_eq!((f.check.as_str(), f.level), ("docker engine prod", level));
            assert!(f.reason.contains(needle), "{}", f.reason);
        }
        let f = engine_finding(None, &result_of(&e, Status::Ok, "x".into(), 1), &[]);
        assert_eq!(f.check, "docker engine");
    }

    #[test]
    fn tls_judgements() {
        let tls = TlsFiles {
            ca: "/c/ca.pem".into(),
            cert: "/c/cert.pem".into(),
            key: "/c/key.pem".into(),
        };
        let ok = TlsFacts {
            ca: Ok(()),
            cert: Ok(()),
            key: Ok(()),
        };
        let f = tls_finding("prod", &tls, &ok);
        assert_eq!(
            (f.check.as_str(), f.level),
            ("docker engine prod tls", Level::Ok)
        );
        let bad = TlsFacts {
            ca: Err("/c/ca.pem: No such file or directory (os error 2)".into()),
            key: Err(
                "secret file /c/key.pem has mode 644; it must be owner-only (chmod 600)".into(),
            ),
            ..ok
        };
        let f = tls_finding("prod", &tls, &bad);
        assert_eq!(f.level, Level::Fail);
        assert!(
            f.reason.starts_with("tls_ca: /c/ca.pem: No such file")
                && f.reason.contains("; tls_key: secret file")
                && !f.reason.contains("tls_cert"),
            "{}",
            f.reason
        );
    }

    #[test]
    fn space_judgements() {
        let dir = Path::new("/tmp");
        let uses = ["state file", "lock"];
        let table = [
            (
                0,
                Some(10),
                Level::Fail,
                "No space left for the state file, lock (0 B free)",
            ),
            (512 << 10, None, Level::Fail, "(512.0 KiB free)"),
            (10 << 30, Some(0), Level::Fail, "(no free inodes)"),
            (20 << 20, Some(100), Level::Warn, "only 20.0 MiB free"),
            (
                10 << 30,
                Some(100),
                Level::Ok,
                "10.0 GiB free for the state file, lock",
            ),
        ];
        for (bytes, inodes, level, needle) in table {
            let f = space_finding(
                dir,
                &uses,
                &SpaceFacts {
                    free_bytes: bytes,
                    free_inodes: inodes,
                },
            );
            assert_eq!((f.check.as_str(), f.level), ("free space /tmp", level));
            assert!(f.reason.contains(needle), "{}", f.reason);
        }
    }

    #[test]
    fn files_on_one_volume_make_one_finding() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a/state.json");
        let b = d.path().join("b/c/ledger.jsonl");
        let found = space_findings(&[("state file", &a), ("task ledger", &b)]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].check,
            format!("free space {}", d.path().join("a").display())
        );
        assert!(
            found[0].reason.contains("state file, task ledger"),
            "{:?}",
            found[0]
        );
    }
}
