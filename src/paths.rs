//! Paths as the operator writes them in the config: `~` is the home
//! directory, said once for `[paths]`, disk checks and command argv.

use std::path::PathBuf;

/// Expands a leading `~` or `~/` to the home directory.
pub(crate) fn expand_tilde(p: &str) -> PathBuf {
    let home = || directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf());
    if p == "~" {
        if let Some(h) = home() {
            return h;
        }
    } else if let Some(rest) = p.strip_prefix("~/") {
        if let Some(h) = home() {
            return h.join(rest);
        }
    }
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_expands() {
        let home = directories::BaseDirs::new()
            .unwrap()
            .home_dir()
            .to_path_buf();
        assert_eq!(expand_tilde("~/x/y"), home.join("x/y"));
        assert_eq!(expand_tilde("~"), home);
        for unchanged in ["/abs", "a~/b", "~other/x"] {
            assert_eq!(expand_tilde(unchanged), PathBuf::from(unchanged));
        }
    }
}
