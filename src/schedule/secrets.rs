//! Will the scheduled job find its secrets? launchd and systemd start a job
//! with a bare environment, so a secret that comes from a variable of the
//! operator's shell is not there: `install` refuses such a job rather than
//! install one that runs every cycle without chat and reports `cycle ok`.
//! [`needs`] lists the secrets the config will read; [`judge`] decides,
//! purely, from what the caller found out about each file and variable.

use std::path::Path;

use crate::mattermost::MattermostConfig;
use crate::ollama::OllamaConfig;
use crate::secret::{SecretRef, SecretSource};
use crate::tasks::planka::PlankaConfig;

/// A secret the job will read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SecretNeed {
    /// Which and where.
    pub(crate) secret: SecretRef,
    /// Whether the job cannot do its configured work without it (chat
    /// when the config names teams; Planka once enabled; the LLM key once
    /// set). Unconfigured Mattermost is optional.
    pub(crate) required: bool,
}

/// The secrets the config will read, in the order of the sections.
pub(crate) fn needs(
    mm: &MattermostConfig,
    planka: &PlankaConfig,
    ollama: &OllamaConfig,
) -> Vec<SecretNeed> {
    let mut out = vec![SecretNeed {
        secret: mm.credential(),
        required: mm.required,
    }];
    out.extend(planka.credential().map(|secret| SecretNeed {
        secret,
        required: true,
    }));
    out.extend(ollama.api_key().map(|secret| SecretNeed {
        secret,
        required: true,
    }));
    out
}

/// What the job will find, sorted by what it means for `install`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The job would run without a secret it needs: do not install it.
    pub(crate) refuse: Vec<String>,
    /// Worth saying, not worth refusing.
    pub(crate) warn: Vec<String>,
    /// Secrets the job will read, one line each.
    pub(crate) ok: Vec<String>,
}

/// The `*_file` key next to an `*_env` key, and the file the docs suggest.
fn file_alternative(env_key: &str) -> (String, &'static str) {
    let file_key = match env_key.strip_suffix("_env") {
        Some(stem) => format!("{stem}_file"),
        None => env_key.to_string(),
    };
    let path = match env_key {
        "mattermost.token_env" => "~/.config/ops-agent/mm-token",
        "mattermost.password_env" => "~/.config/ops-agent/mm-password",
        "planka.password_env" => "~/.config/ops-agent/planka-password",
        "planka.api_key_env" => "~/.config/ops-agent/planka-api-key",
        _ => "~/.config/ops-agent/llm-key",
    };
    (file_key, path)
}

/// Judges each secret: a file must pass `file_ok` (ours, owner-only,
/// readable); a variable is never seen by the job, so it is refused when
/// the secret is required or the operator's shell has it set (they rely
/// on it), and only noted when Mattermost is simply not configured. Pure.
pub(crate) fn judge(
    needs: &[SecretNeed],
    file_ok: &dyn Fn(&Path) -> Result<(), String>,
    env_set: &dyn Fn(&str) -> bool,
) -> Verdict {
    let mut v = Verdict::default();
    for n in needs {
        let key = n.secret.key;
        match &n.secret.source {
            SecretSource::File(path) => match file_ok(path) {
                Ok(()) => v.ok.push(format!("{key}: {} (owner-only)", path.display())),
                Err(e) if n.required => v.refuse.push(format!("{key}: {e}")),
                Err(e) => v.warn.push(format!("{key}: {e}")),
            },
            SecretSource::Env(name) => {
                let (file_key, path) = file_alternative(key);
                let why = format!(
                    "{key} = \"{name}\": the scheduled job starts with a bare environment and \
                     will not have ${name}; put the value in an owner-only file and name it \
                     with {file_key} (umask 077; printf %s \"${name}\" > {path}; then \
                     {file_key} = \"{path}\")"
                );
                if n.required || env_set(name) {
                    v.refuse.push(why);
                } else {
                    v.warn.push(format!(
                        "Mattermost is not configured (no teams in the config file, no token \
                         file, ${name} unset): scheduled cycles skip chat"
                    ));
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(secret: SecretRef, required: bool) -> SecretNeed {
        SecretNeed { secret, required }
    }

    #[test]
    fn needs_follow_the_sections() {
        let mut mm = MattermostConfig::default();
        let mut planka = PlankaConfig::default();
        let mut llm = OllamaConfig::default();
        let n = needs(&mm, &planka, &llm);
        assert_eq!(
            n,
            [need(
                SecretRef::env("mattermost.token_env", "OPS_AGENT_MM_TOKEN"),
                false
            )]
        );
        mm.required = true;
        mm.token_file = Some("/t".into());
        planka.username = Some("opsagent".into());
        llm.api_key_file = Some("/k".into());
        let keys: Vec<(&str, bool)> = needs(&mm, &planka, &llm)
            .iter()
            .map(|n| (n.secret.key, n.required))
            .collect();
        assert_eq!(
            keys,
            [
                ("mattermost.token_file", true),
                ("planka.password_env", true),
                ("ollama.api_key_file", true)
            ]
        );
    }

    #[test]
    fn judgement_table() {
        let good = Path::new("/good");
        let file_ok = |p: &Path| {
            if p == good {
                Ok(())
            } else {
                Err(format!("secret file {} has mode 644", p.display()))
            }
        };
        let env_set = |n: &str| n == "SET_IN_SHELL";
        type Case = (SecretNeed, &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (need(SecretRef::file("mattermost.token_file", good), true), "ok", "owner-only"),
            (need(SecretRef::file("mattermost.token_file", "/bad".as_ref()), true), "refuse", "mode 644"),
            (need(SecretRef::file("mattermost.token_file", "/bad".as_ref()), false), "warn", "mode 644"),
            (
                need(SecretRef::env("mattermost.token_env", "UNSET"), true),
                "refuse",
                "will not have $UNSET; put the value in an owner-only file and name it with mattermost.token_file",
            ),
            (
                need(SecretRef::env("mattermost.token_env", "SET_IN_SHELL"), false),
                "refuse",
                "> ~/.config/ops-agent/mm-token",
            ),
            (
                need(SecretRef::env("mattermost.token_env", "UNSET"), false),
                "warn",
                "scheduled cycles skip chat",
            ),
            (
                need(SecretRef::env("planka.api_key_env", "UNSET"), true),
                "refuse",
                "planka.api_key_file = \"~/.config/ops-agent/planka-api-key\"",
            ),
        ];
        for (n, want, needle) in cases {
            let v = judge(std::slice::from_ref(&n), &file_ok, &env_set);
            let (bucket, other) = match want {
                "ok" => (&v.ok, v.refuse.len() + v.warn.len()),
                "refuse" => (&v.refuse, v.ok.len() + v.warn.len()),
                _ => (&v.warn, v.ok.len() + v.refuse.len()),
            };
            assert_eq!(bucket.len(), 1, "{n:?}: {v:?}");
            assert_eq!(other, 0, "{n:?}: {v:?}");
            assert!(bucket[0].contains(needle), "{n:?}: {}", bucket[0]);
        }
    }
}
