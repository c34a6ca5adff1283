//! Secrets (tokens, passwords) as a type that cannot leak into logs.
//!
//! The config never holds a secret, only where to find it: an environment
//! variable or an owner-only file. [`Secret`] redacts itself in `Debug` and
//! `Display`, so a secret that ends up in a `tracing` field or an error
//! message prints as `***` instead of its value.

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Checks that a `*_env` key names an environment variable. The value is
/// never echoed: an operator who pasted the secret itself into the key
/// must not find it in the scheduler's error log.
pub fn check_env_name(key: &str, name: &str) -> Result<()> {
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
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from the environment variable `name`; a missing or empty
    /// variable is an error naming the variable (never its value).
    pub fn from_env(name: &str) -> Result<Self> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_string())),
            Ok(_) => bail!("environment variable {name} is empty"),
            Err(_) => bail!("environment variable {name} is not set"),
        }
    }

    /// Reads a secret from a file that only its owner may read: a file that
    /// group or others can read is refused, because a secret there is
    /// already leaked to every local user.
    pub fn from_file(path: &Path) -> Result<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(path)
                .with_context(|| format!("reading secret file {}", path.display()))?;
            if meta.mode() & 0o077 != 0 {
                bail!(
                    "secret file {} has mode {:o}; it must be owner-only (chmod 600)",
                    path.display(),
                    meta.mode() & 0o777
                );
            }
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading secret file {}", path.display()))?;
        let value = text.trim();
        if value.is_empty() {
            bail!("secret file {} is empty", path.display());
        }
        Ok(Secret(value.to_string()))
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
