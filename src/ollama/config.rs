//! `[ollama]`: the LLM server, the two models and their timeouts.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::secret::SecretRef;
use crate::time::Secs;

/// Which wire protocol the configured server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Ollama's native `/api/chat` and `/api/tags`: supports structured
    /// outputs (`format`), `keep_alive` and `num_ctx`.
    #[default]
    Ollama,
    /// `/v1/chat/completions` as served by llama.cpp's server, LM Studio,
    /// vLLM (and Ollama itself): no structured outputs, no `num_ctx`.
    Openai,
}

/// The `[ollama]` config section; defaults are the runbook's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OllamaConfig {
    /// Base URL of the server (no `/api` suffix).
    #[serde(serialize_with = "crate::scrub::serialize_url")]
    pub url: String,
    /// Wire protocol: "ollama" (native) or "openai" (OpenAI-compatible).
    pub backend: Backend,
    /// Small, fast model that picks a label.
    pub classify_model: String,
    /// Larger model that writes replies.
    pub reply_model: String,
    /// Per-call timeout for a classification (includes a cold model load).
    pub classify_timeout_secs: Secs,
    /// Per-call timeout for a reply.
    pub reply_timeout_secs: Secs,
    /// How long Ollama keeps the model loaded after a call ("10m", "0", "-1").
    pub keep_alive: String,
    /// Context window to request; long prompts are otherwise cut silently.
    pub num_ctx: u32,
    /// Requests in flight at once; Ollama serialises per model unless
    /// `OLLAMA_NUM_PARALLEL` is set, so more than 1 only queues there.
    pub concurrency: usize,
    /// Environment variable holding an API key for OpenAI-compatible servers
    /// that require one (sent as `Authorization: Bearer`).
    pub api_key_env: Option<String>,
    /// Owner-only file holding that API key; wins over `api_key_env` (a
    /// scheduled job has no shell variables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
}

impl Default for OllamaConfig {
    fn default() -> Self {
        OllamaConfig {
            url: "http://localhost:11434".into(),
            backend: Backend::Ollama,
            classify_model: "llama3.1:8b".into(),
            reply_model: "qwen2.5-coder:32b".into(),
            classify_timeout_secs: Secs::new(20),
            reply_timeout_secs: Secs::new(90),
            keep_alive: "10m".into(),
            num_ctx: 4096,
            concurrency: 1,
            api_key_env: None,
            api_key_file: None,
        }
    }
}

impl OllamaConfig {
    /// Checks every key without touching the network or the environment, so
    /// `ops-agent doctor` and start-up can report all mistakes by name.
    pub(crate) fn validate(&self) -> Result<()> {
        let url = self.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.len() <= "https://".len()
        {
            bail!(
                "ollama.url: '{}' is not an http(s) URL",
                crate::scrub::url(&self.url)
            );
        }
        for (key, model) in [
            ("ollama.classify_model", &self.classify_model),
            ("ollama.reply_model", &self.reply_model),
        ] {
            if model.trim().is_empty() || model.chars().any(char::is_whitespace) {
                bail!("{key}: '{model}' is not a model name");
            }
        }
        for (key, secs) in [
            ("ollama.classify_timeout_secs", self.classify_timeout_secs),
            ("ollama.reply_timeout_secs", self.reply_timeout_secs),
        ] {
            if secs.is_zero() || secs > Secs::new(600) {
                bail!("{key}: {secs} must be more than 0 and at most 600");
            }
        }
        if !valid_keep_alive(&self.keep_alive) {
            bail!(
                "ollama.keep_alive: '{}' is not a duration like \"10m\", \"300s\", \"0\" or \"-1\"",
                self.keep_alive
            );
        }
        if !(256..=262_144).contains(&self.num_ctx) {
            bail!(
                "ollama.num_ctx: {} must be between 256 and 262144",
                self.num_ctx
            );
        }
        if !(1..=16).contains(&self.concurrency) {
            bail!(
                "ollama.concurrency: {} must be between 1 and 16",
                self.concurrency
            );
        }
        if let Some(name) = &self.api_key_env {
            crate::secret::check_env_name("ollama.api_key_env", name)?;
        }
        if self
            .api_key_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            bail!("ollama.api_key_file: '' is not a path");
        }
        Ok(())
    }

    /// The API key the client sends, when one is configured:
    /// `api_key_file`, else `api_key_env`.
    pub(crate) fn api_key(&self) -> Option<SecretRef> {
        match (&self.api_key_file, &self.api_key_env) {
            (Some(p), _) => Some(SecretRef::file("ollama.api_key_file", p)),
            (None, Some(v)) => Some(SecretRef::env("ollama.api_key_env", v)),
            (None, None) => None,
        }
    }
}

/// Ollama accepts a Go duration string or a plain number of seconds; a
/// negative value keeps the model loaded forever.
fn valid_keep_alive(s: &str) -> bool {
    let s = s.trim();
    let body = s.strip_prefix('-').unwrap_or(s);
    if body.is_empty() {
        return false;
    }
    if body.chars().all(|c| c.is_ascii_digit()) {
        return true;
    }
    let re = regex::Regex::new(r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$").expect("static regex");
    re.is_match(body)
}

/// `keep_alive` as Ollama wants it: a number of seconds as a JSON number,
/// anything else as a duration string.
pub(crate) fn keep_alive_value(s: &str) -> Value {
    match s.trim().parse::<i64>() {
        Ok(n) => json!(n),
        Err(_) => json!(s.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        OllamaConfig::default().validate().unwrap();
    }

    #[test]
    fn validation_names_key_and_value() {
        type Edit = Box<dyn Fn(&mut OllamaConfig)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|c| c.url = "htp:/x".into()),
                "ollama.url: 'htp:/x'",
            ),
            (
                Box::new(|c| c.classify_model = "".into()),
                "ollama.classify_model",
            ),
            (
                Box::new(|c| c.reply_model = "a b".into()),
                "ollama.reply_model: 'a b'",
            ),
            (
                Box::new(|c| c.classify_timeout_secs = Secs::new(0)),
                "ollama.classify_timeout_secs: 0",
            ),
            (
                Box::new(|c| c.reply_timeout_secs = Secs::new(9999)),
                "ollama.reply_timeout_secs: 9999",
            ),
            (
                Box::new(|c| c.keep_alive = "ten minutes".into()),
                "ollama.keep_alive: 'ten minutes'",
            ),
            (Box::new(|c| c.num_ctx = 10), "ollama.num_ctx: 10"),
            (Box::new(|c| c.concurrency = 0), "ollama.concurrency: 0"),
            (
                Box::new(|c| c.api_key_env = Some("MY KEY".into())),
                "ollama.api_key_env must name an environment variable",
            ),
        ];
        for (edit, want) in cases {
            let mut c = OllamaConfig::default();
            edit(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn keep_alive_forms() {
        for ok in ["10m", "300", "0", "-1", "1h30m", "2.5s", "-1m"] {
            assert!(valid_keep_alive(ok), "{ok}");
        }
        for bad in ["", "-", "10 m", "forever", "m"] {
            assert!(!valid_keep_alive(bad), "{bad}");
        }
        assert_eq!(keep_alive_value("300"), json!(300));
        assert_eq!(keep_alive_value("10m"), json!("10m"));
    }

    #[test]
    fn config_parses_from_toml_with_defaults() {
        let c: OllamaConfig =
            toml::from_str("backend = \"openai\"\nurl = \"http://gpu:8080\"").unwrap();
        assert_eq!(c.backend, Backend::Openai);
        assert_eq!(c.classify_model, "llama3.1:8b");
        assert!(toml::from_str::<OllamaConfig>("modle = \"x\"").is_err());
    }
}
