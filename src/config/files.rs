//! The files the config names, checked together: each is an absolute path
//! (a scheduled job runs in `/`, so a relative one would be another file
//! than the operator's shell reads) and no file the agent writes is named by
//! two keys. For `config check`, the secret and TLS files are also read as a
//! cycle would, each problem a warning naming its key.
//!
//! Two keys naming one file is how the agent destroys its own data: a
//! metrics textfile that is the ledger is overwritten every cycle, a log
//! rotation that names the state file renames it away. Paths are compared
//! as the system resolves them (after `~`, `..` and symlinks, and by inode
//! when the file exists, so a hard link is caught too), not as written.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};

use std::collections::BTreeMap;

use crate::health::docker::EngineConfig;
use crate::health::CheckConfig;
use crate::mattermost::MattermostConfig;
use crate::ollama::OllamaConfig;
use crate::tasks::planka::PlankaConfig;

/// A file a key names.
#[derive(Debug, Clone)]
pub(super) struct Named {
    /// The key, as the operator writes it (`log.also_rotate[1]`).
    pub(super) key: String,
    /// The path, `~` expanded.
    pub(super) path: PathBuf,
    /// What the agent does to it, when it writes it ("every cycle
    /// replaces it"): such a file may be named by no other key. `None`:
    /// read only (a secret, a certificate), which keys may share.
    pub(super) writes: Option<&'static str>,
}

impl Named {
    /// A file the agent writes; `how` says what happens to it.
    pub(super) fn written(key: impl Into<String>, path: &Path, how: &'static str) -> Named {
        Named {
            key: key.into(),
            path: crate::paths::expand_tilde(&path.to_string_lossy()),
            writes: Some(how),
        }
    }

    /// A file the agent only reads.
    pub(super) fn read(key: impl Into<String>, path: &Path) -> Named {
        Named {
            key: key.into(),
            path: crate::paths::expand_tilde(&path.to_string_lossy()),
            writes: None,
        }
    }
}

/// Refuses a relative path, and a file the agent writes that another key
/// names too. Errors name both keys and the file.
pub(super) fn check(named: &[Named]) -> Result<()> {
    for n in named {
        if !n.path.is_absolute() {
            bail!(
                "{}: '{}' is a relative path; a scheduled job starts in '/', so it would be \
                 another file than your shell's: write it from '/' or '~/'",
                n.key,
                n.path.display()
            );
        }
    }
    let ids: Vec<Identity> = named.iter().map(|n| identity(&n.path)).collect();
    for (i, a) in named.iter().enumerate() {
        for (j, b) in named.iter().enumerate().skip(i + 1) {
            if ids[i] != ids[j] || (a.writes.is_none() && b.writes.is_none()) {
                continue;
            }
            // The two were looked at one after the other: a cycle saving
            // meanwhile (a new file renamed over the old) can free an inode
            // number for the other path. One file for both keys is one at
            // the same moment too.
            if identity(&a.path) != identity(&b.path) {
                continue;
            }
            let how = b.writes.or(a.writes).unwrap_or_default();
            bail!(
                "{}: '{}' is also {}'s file, and {how}: the agent would destroy its own data; \
                 each key needs its own file",
                b.key,
                b.path.display(),
                a.key
            );
        }
    }
    Ok(())
}

/// Which file a path is: its device and inode when it exists (through
/// symlinks, so every name of one file agrees), else where it would be
/// created (its nearest existing ancestor resolved, the rest as written).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Identity {
    Inode(u64, u64),
    Path(PathBuf),
}

fn identity(path: &Path) -> Identity {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Identity::Inode(m.dev(), m.ino()),
        Err(_) => Identity::Path(resolve(path)),
    }
}

/// `path` with its existing ancestors resolved (symlinks, `..`) and the
/// part that does not exist yet normalized as written.
fn resolve(path: &Path) -> PathBuf {
    let mut rest: Vec<Component<'_>> = Vec::new();
    let mut base = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(base) {
            let mut out = real;
            for c in rest.iter().rev() {
                match c {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    c => out.push(c.as_os_str()),
                }
            }
            return out;
        }
        match (base.parent(), base.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                base = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Every secret file the config names, by key: the ones a cycle reads and
/// the ones it would read with other credentials set.
pub(super) fn secret_files(
    mm: &MattermostConfig,
    planka: &PlankaConfig,
    ollama: &OllamaConfig,
    checks: &[CheckConfig],
) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = [
        ("mattermost.token_file", &mm.token_file),
        ("mattermost.password_file", &mm.password_file),
        ("planka.password_file", &planka.password_file),
        ("planka.api_key_file", &planka.api_key_file),
        ("ollama.api_key_file", &ollama.api_key_file),
    ]
    .into_iter()
    .filter_map(|(key, p)| Some((key.to_string(), p.clone()?)))
    .collect();
    for (i, c) in checks.iter().enumerate() {
        for (key, p) in [
            ("basic_auth_file", &c.basic_auth_file),
            ("header_file", &c.header_file),
        ] {
            if let Some(p) = p {
                out.push((format!("checks[{i}] (\"{}\").{key}", c.name), p.clone()));
            }
        }
    }
    out
}

/// Reads each secret file as a cycle will (owner, mode, size, one line):
/// one warning per file that would fail, naming its key. `config check`
/// says so before a cycle finds out.
pub(super) fn secret_warnings(files: &[(String, PathBuf)]) -> Vec<String> {
    files
        .iter()
        .filter_map(|(key, p)| {
            crate::secret::check_readable(p)
                .err()
                .map(|e| format!("{key}: {e:#}"))
        })
        .collect()
}

/// Checks the TLS files of the Docker engines, for `config check`: each
/// is a file, and the key is ours and owner-only; otherwise every cycle
/// fails to reach the engine. One warning per file, naming its key (not an
/// error: a config is checked where its secrets are not mounted, a
/// Kubernetes Secret exists only in the pod; `doctor` and the cycle name
/// the file too).
pub(super) fn tls_warnings(engines: &BTreeMap<String, EngineConfig>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, e) in engines {
        let (Some(ca), Some(cert), Some(key)) = (&e.tls_ca, &e.tls_cert, &e.tls_key) else {
            continue;
        };
        for (key_name, p) in [("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)] {
            let at = format!("health.engines.{name}.{key_name}");
            let p = crate::paths::expand_tilde(&p.to_string_lossy());
            let problem = match std::fs::metadata(&p) {
                Ok(m) if !m.is_file() => Some(format!("'{}' is not a file", p.display())),
                Ok(_) if key_name == "tls_key" => crate::secret::check_file(&p)
                    .err()
                    .map(|e| format!("{e:#}")),
                Ok(_) => None,
                Err(e) => Some(format!("'{}': {e}", p.display())),
            };
            if let Some(problem) = problem {
                out.push(format!(
                    "{at}: {problem}; until that changes, no cycle reaches the engine"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_file_under_other_names_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("state")).unwrap();
        std::fs::write(root.join("state/ledger"), "").unwrap();
        std::os::unix::fs::symlink(root.join("state"), root.join("link")).unwrap();
        std::fs::hard_link(root.join("state/ledger"), root.join("hard")).unwrap();
        let ledger = Named::written("paths.ledger", &root.join("state/ledger"), "x");
        let refused = |other: PathBuf| {
            let named = [
                ledger.clone(),
                Named::written("metrics.textfile", &other, "y"),
            ];
            check(&named).unwrap_err().to_string()
        };
        for other in [
            root.join("link/ledger"),
            root.join("state/../state/ledger"),
            root.join("hard"),
        ] {
            let err = refused(other);
            assert!(
                err.starts_with("metrics.textfile: ") && err.contains("paths.ledger"),
                "{err}"
            );
        }
        // Not there yet: compared where they would be created.
        let a = Named::written("paths.state", &root.join("link/new.json"), "x");
        let b = Named::written("metrics.textfile", &root.join("state/./new.json"), "y");
        assert!(check(&[a.clone(), b]).is_err());
        let c = Named::written("paths.stats", &root.join("nowhere/a/../b"), "x");
        let d = Named::written("paths.log", &root.join("nowhere/b"), "x");
        assert!(check(&[c, d]).is_err());
        // Read-only files may be shared (one CA for two engines).
        let ca1 = Named::read("health.engines.a.tls_ca", &root.join("state/ledger"));
        let ca2 = Named::read("health.engines.b.tls_ca", &root.join("hard"));
        check(&[ca1, ca2, a]).unwrap();
    }

    #[test]
    fn a_relative_path_is_refused_with_its_key() {
        let err = check(&[Named::written(
            "paths.ledger",
            Path::new("tasks.jsonl"),
            "x",
        )])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("paths.ledger: 'tasks.jsonl' is a relative path"),
            "{err}"
        );
        check(&[Named::written("paths.ledger", Path::new("~/t.jsonl"), "x")]).unwrap();
    }
}
