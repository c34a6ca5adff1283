//! Secrets (tokens, passwords) as a type that cannot leak into logs.
//!
//! The config never holds a secret, only where to find it: an environment
//! variable or an owner-only file. [`Secret`] redacts itself in `Debug` and
//! `Display`, so a secret that ends up in a `tracing` field or an error
//! message prints as `***` instead of its value.
//!
//! A scheduled job (launchd, a systemd timer, a Kubernetes CronJob) starts
//! with a bare environment, so a variable exported in the operator's shell
//! never reaches it: owner-only files are the first-class source, and
//! [`SecretRef`] names which one a section will read, so `install` and
//! `doctor` can check it before a cycle needs it.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Checks that a `*_env` key names an environment variable. The value is
/// never echoed: an operator who pasted the secret itself into the key
/// must not find it in the scheduler's error log.
pub(crate) fn check_env_name(key: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        bail!(
            "{key} must name an environment variable (letters, digits and _, not starting \
             with a digit); the value is not shown in case it is the secret itself"
        );
    }
    Ok(())
}

/// A secret value whose formatting never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value obtained from a trusted place (env, owner-only file, a login response).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it (an HTTP header, a login body).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from the environment variable `name`; a missing or empty
    /// variable is an error naming the variable (never its value).
    pub(crate) fn from_env(name: &str) -> Result<Self> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => {
                let value = v.trim();
                check_value(value).with_context(|| format!("environment variable {name}"))?;
                Ok(Secret(value.to_string()))
            }
            Ok(_) => bail!("environment variable {name} is empty"),
            Err(_) => bail!("environment variable {name} is not set"),
        }
    }

    /// Reads a secret from a file that only its owner may read (`~/`
    /// expands to the home directory): a file that group or others can
    /// read is refused, because a secret there is already leaked to every
    /// local user, and so is one owned by another user, who could change
    /// it under us. At most [`MAX_FILE_BYTES`] are read: a secret is a
    /// line, and a file named by mistake (a log, a disk image) must cost
    /// an error, not the machine's memory.
    pub(crate) fn from_file(path: &Path) -> Result<Self> {
        use std::io::Read;
        let path = crate::paths::expand_tilde(&path.to_string_lossy());
        check_file(&path)?;
        let file = std::fs::File::open(&path)
            .with_context(|| format!("reading secret file {}", path.display()))?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading secret file {}", path.display()))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            bail!("{}", too_big(&path, None));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("secret file {} is not UTF-8 text", path.display()))?;
        let value = text.trim();
        if value.is_empty() {
            bail!("secret file {} is empty", path.display());
        }
        check_value(value).with_context(|| format!("secret file {}", path.display()))?;
        Ok(Secret(value.to_string()))
    }
}

/// The most a secret file may hold: far more than any token, password or
/// key the agent reads, far less than a file named by mistake.
const MAX_FILE_BYTES: u64 = 64 * 1024;

fn too_big(path: &Path, len: Option<u64>) -> String {
    format!(
        "secret file {} {}; a secret file holds at most {} KiB (is it the right file?)",
        path.display(),
        match len {
            Some(n) => format!("is {n} bytes"),
            None => "is larger than that".to_string(),
        },
        MAX_FILE_BYTES / 1024
    )
}

/// A secret is one line of text: it goes into an HTTP header or a login
/// body, where a NUL byte or a line break inside fails with an error that
/// names neither the secret nor where it came from. The error says what
/// and where, never the value.
fn check_value(value: &str) -> Result<()> {
    if let Some((at, c)) = value.char_indices().find(|(_, c)| c.is_control()) {
        let what = match c {
            '\0' => "a NUL byte".to_string(),
            '\n' | '\r' => "a line break inside the value".to_string(),
            c => format!("the control character U+{:04X}", c as u32),
        };
        bail!("holds {what} (at byte {at}); a secret is one line of text");
    }
    Ok(())
}

/// Checks a secret file as a cycle will read it (owner, mode, size,
/// content), for `doctor` and `config check`; the value is dropped.
pub(crate) fn check_readable(path: &Path) -> Result<()> {
    Secret::from_file(path).map(drop)
}

/// Checks what a reader of a secret file relies on: a regular file (a
/// symlink is followed, as `chmod 600` users expect, and its target is
/// checked), owned by us, owner-only, at most [`MAX_FILE_BYTES`]. The
/// content is not read.
pub(crate) fn check_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading secret file {}", path.display()))?;
    if !meta.is_file() {
        bail!("secret file {} is not a regular file", path.display());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        bail!(
            "secret file {} is owned by uid {}, not by us (uid {me}); chown it",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "secret file {} has mode {:o}; it must be owner-only (chmod 600)",
            path.display(),
            meta.mode() & 0o777
        );
    }
    if meta.len() > MAX_FILE_BYTES {
        bail!("{}", too_big(path, Some(meta.len())));
    }
    Ok(())
}

/// Where a configured secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretSource {
    /// An environment variable (its name).
    Env(String),
    /// An owner-only file (as configured; `~/` expands when read).
    File(PathBuf),
}

/// The secret a config section will read, and the key that says so
/// (`mattermost.token_file`), for checks made before it is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SecretRef {
    /// The config key naming the source.
    pub(crate) key: &'static str,
    /// The variable or file.
    pub(crate) source: SecretSource,
}

impl SecretRef {
    /// A secret held in the environment variable `name`.
    pub(crate) fn env(key: &'static str, name: &str) -> SecretRef {
        SecretRef {
            key,
            source: SecretSource::Env(name.to_string()),
        }
    }

    /// A secret held in the file at `path`.
    pub(crate) fn file(key: &'static str, path: &Path) -> SecretRef {
        SecretRef {
            key,
            source: SecretSource::File(path.to_path_buf()),
        }
    }

    /// Reads the secret; errors name the key, the variable or the file,
    /// never the value.
    pub(crate) fn read(&self) -> Result<Secret> {
        match &self.source {
            SecretSource::Env(name) => Secret::from_env(name),
            SecretSource::File(path) => Secret::from_file(path),
        }
        .context(self.key)
    }

    /// `env OPS_AGENT_MM_TOKEN` or `file ~/.config/ops-agent/mm-token`.
    pub(crate) fn describe(&self) -> String {
        match &self.source {
            SecretSource::Env(name) => format!("env {name}"),
            SecretSource::File(path) => format!("file {}", path.display()),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_secret_ref_reads_its_source_and_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        let r = SecretRef::file("mattermost.token_file", &p);
        let err = format!("{:#}", r.read().unwrap_err());
        assert!(
            err.starts_with("mattermost.token_file: reading secret file"),
            "{err}"
        );
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
                .unwrap();
        }
        std::fs::write(&p, " s3cret\n").unwrap();
        assert_eq!(r.read().unwrap().expose(), "s3cret");
        assert_eq!(r.describe(), format!("file {}", p.display()));
        let e = SecretRef::env("planka.password_env", "OPS_AGENT_SECRET_TEST_UNSET_4F1");
        let err = format!("{:#}", e.read().unwrap_err());
        assert_eq!(
            err,
            "planka.password_env: environment variable OPS_AGENT_SECRET_TEST_UNSET_4F1 is not set"
        );
    }

    #[cfg(unix)]
    #[test]
    fn group_readable_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "abc\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Secret::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("owner-only"), "{err}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), "abc");
    }

    fn owner_only(p: &Path, bytes: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(p, bytes).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn a_huge_file_is_refused_by_its_size_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        owner_only(&p, b"");
        // Sparse: a gibibyte on paper, nothing on disk.
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let err = format!("{:#}", Secret::from_file(&p).unwrap_err());
        assert!(
            err.contains(&p.display().to_string())
                && err.contains("is 1073741824 bytes")
                && err.contains("at most 64 KiB"),
            "{err}"
        );
        owner_only(&p, &vec![b'a'; 64 * 1024]);
        assert_eq!(Secret::from_file(&p).unwrap().expose().len(), 64 * 1024);
    }

    #[test]
    fn a_secret_with_a_nul_or_an_inner_line_break_names_the_file_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        for (bytes, what) in [
            (&b"abc\0def\n"[..], "a NUL byte (at byte 3)"),
            (b"hunter2\nsecond-line\n", "a line break inside the value"),
            (b"tab\x1bhere", "U+001B"),
        ] {
            owner_only(&p, bytes);
            let err = format!("{:#}", check_readable(&p).unwrap_err());
            assert!(
                err.starts_with(&format!("secret file {}: holds ", p.display()))
                    && err.contains(what),
                "{err}"
            );
            assert!(!err.contains("hunter2") && !err.contains("def"), "{err}");
        }
        owner_only(&p, b"\xff\xfe");
        let err = format!("{:#}", check_readable(&p).unwrap_err());
        assert!(err.contains("not UTF-8"), "{err}");
        owner_only(&p, b"  one line, spaces inside  \n");
        assert_eq!(
            Secret::from_file(&p).unwrap().expose(),
            "one line, spaces inside"
        );
    }

    #[test]
    fn a_bad_env_name_is_refused_without_echoing_it() {
        check_env_name("k", "OPS_AGENT_MM_TOKEN").unwrap();
        for bad in ["", "9X", "A-B", "xoxb-1234-secret-value", "MY KEY"] {
            let e = check_env_name("mattermost.token_env", bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("mattermost.token_env must name"), "{e}");
            assert!(bad.is_empty() || !e.contains(bad), "{e}");
        }
    }
}
