//! The one secret scrubber: every piece of outside text that leaves the
//! machine (a post, a task, a card, an LLM prompt) or lands in a log passes
//! through [`text`], and every URL the agent shows passes through [`url`].
//!
//! Outside text is a container's log, an HTTP body, a command's stderr, a
//! post a client wrote: any of them can carry a password. The scrubber
//! replaces what looks like a secret with [`MARK`] and keeps the rest, so
//! the evidence still reads. It errs towards hiding: a false positive costs
//! a few characters of a log line, a false negative a leaked credential.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Captures, Regex};

/// What a secret is replaced with.
const MARK: &str = "[redacted]";

/// Names of query parameters, form fields, JSON keys and `key=value` pairs
/// whose value is a secret (matched case-insensitively, `-` and `_` alike).
const SECRET_KEYS: &str = r"pass(?:word|wd)?|pwd|secret|client[_-]?secret|token|access[_-]?token|refresh[_-]?token|auth[_-]?token|id[_-]?token|session[_-]?(?:id|token)?|api[_-]?key|apikey|access[_-]?key|secret[_-]?key|private[_-]?key|credentials?|signature|sig|x-amz-signature";

/// A URL for display: no userinfo, and the value of every secret-looking
/// query parameter replaced. Text that is not a URL is scrubbed as text.
pub(crate) fn url(u: &str) -> String {
    let u = u.trim();
    let Ok(mut parsed) = reqwest::Url::parse(u) else {
        return text(u).into_owned();
    };
    let mut changed = !parsed.username().is_empty() || parsed.password().is_some();
    // Both calls fail only for URLs that cannot have userinfo.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    if let Some(query) = parsed.query() {
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some((k, _)) if is_secret_key(k) => {
                    changed = true;
                    kept.push(format!("{k}={MARK}"));
                }
                _ => kept.push(pair.to_string()),
            }
        }
        let query = kept.join("&");
        parsed.set_query(Some(&query));
    }
    if changed {
        parsed.to_string()
    } else {
        u.to_string()
    }
}

/// A URL key of the config serialized as [`url`] shows it (serde's
/// `serialize_with`). The config is serialized only to be shown (`config
/// check`); what the agent sends is always the value as written.
pub(crate) fn serialize_url<S: serde::Serializer>(u: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&url(u))
}

/// [`serialize_url`] for an optional URL key.
pub(crate) fn serialize_opt_url<S: serde::Serializer>(
    u: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match u {
        Some(u) => s.serialize_some(&url(u)),
        None => s.serialize_none(),
    }
}

/// Outside text with its secrets replaced by [`MARK`]: URL userinfo,
/// `Authorization`-style headers, bearer tokens, `key=value` / `"key": "v"`
/// pairs with a secret-looking key, PEM private keys and the token formats
/// of common providers. Borrowed back unchanged when there is nothing to
/// hide (the common case costs one scan per pattern).
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(s);
    for (re, replace) in patterns() {
        if re.is_match(&out) {
            let replaced = re.replace_all(&out, |c: &Captures| replace(c)).into_owned();
            out = Cow::Owned(replaced);
        }
    }
    out
}

fn is_secret_key(key: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(&format!(r"(?i)^(?:{SECRET_KEYS})$")).expect("static regex"))
        .is_match(key.trim())
}

type Replace = fn(&Captures) -> String;

fn patterns() -> &'static [(Regex, Replace)] {
    static P: OnceLock<Vec<(Regex, Replace)>> = OnceLock::new();
    P.get_or_init(|| {
        let re = |p: &str| Regex::new(p).expect("static regex");
        vec![
            // PEM private keys, whole block (or to the end of a cut excerpt).
            (
                re(r"(?s)-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)"),
                (|c| format!("-----BEGIN {}PRIVATE KEY----- {MARK}", &c[1])) as Replace,
            ),
            // A line that is only a long base64 run: the body of a private
            // key (or a token) whose BEGIN line fell before a log's tail.
            // A hex digest or a container id alone on its line stays.
            (
                re(r"(?m)^([ \t]*)[A-Za-z0-9+/]{40,}={0,2}[ \t]*$"),
                |c| {
                    if c[0].trim().chars().all(|ch| ch.is_ascii_hexdigit()) {
                        c[0].to_string()
                    } else {
                        format!("{}{MARK}", &c[1])
                    }
                },
            ),
            // scheme://user:password@host -> scheme://[redacted]@host
            (
                re(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:]*(?::[^\s/@]*)?@"),
                |c| format!("{}{MARK}@", &c[1]),
            ),
            // Authorization: Bearer x / Proxy-Authorization / X-Api-Key / Cookie headers.
            (
                re(r"(?im)\b((?:proxy-)?authorization|x-[a-z-]*(?:token|key|secret|auth)[a-z-]*|cookie|set-cookie)(\s*[:=]\s*)[^\r\n]+"),
                |c| format!("{}{}{MARK}", &c[1], &c[2]),
            ),
            // A bare bearer or basic credential (one with a digit or a
            // symbol in it: "basic functionality" is English).
            (
                re(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}"),
                |c| {
                    let cred = &c[0][c[1].len() + c[2].len()..];
                    if cred.chars().any(|ch| !ch.is_ascii_alphabetic()) {
                        format!("{}{}{MARK}", &c[1], &c[2])
                    } else {
                        c[0].to_string()
                    }
                },
            ),
            // "password": "x", password=x, token: x, ?api_key=x&
            (
                re(&format!(
                    r#"(?i)(["']?\b[a-z0-9_-]*(?:{SECRET_KEYS})["']?)(\s*[:=]\s*)("[^"]*"|'[^']*'|[^\s&,;"'}}\]]+)"#
                )),
                |c| {
                    let v = &c[3];
                    if v.trim_matches(['"', '\'']).starts_with(MARK.trim_end_matches(']')) {
                        return c[0].to_string();
                    }
                    let q = if v.starts_with('"') { "\"" } else if v.starts_with('\'') { "'" } else { "" };
                    format!("{}{}{q}{MARK}{q}", &c[1], &c[2])
                },
            ),
            // A secret on a command line: `--password hunter2`.
            (
                re(r"(?i)(\s--?(?:password|passwd|pass|token|api-key|apikey|secret|client-secret)[ \t]+)([^\s-][^\s]*)"),
                |c| format!("{}{MARK}", &c[1]),
            ),
            // Webhook URLs whose path is the credential (Slack, Discord).
            (
                re(r"(?i)\b(https?://(?:hooks\.slack\.com/services|(?:discord|discordapp)\.com/api/webhooks)/)[A-Za-z0-9/_-]+"),
                |c| format!("{}{MARK}", &c[1]),
            ),
            // Provider token formats: GitHub, GitLab, Slack, AWS, Google,
            // Stripe, OpenAI-style, npm, JWTs.
            (
                re(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|(?:AKIA|ASIA)[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|[sr]k_(?:live|test)_[0-9A-Za-z]{16,}|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|npm_[A-Za-z0-9]{36}|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"),
                |_| MARK.to_string(),
            ),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_hides_every_kind_of_secret_and_keeps_the_rest() {
        let cases: &[(&str, &str)] = &[
            ("nothing secret here: disk at 93%", "nothing secret here: disk at 93%"),
            (
                "GET http://monitor:hunter2@shop.local/health failed",
                "GET http://[redacted]@shop.local/health failed",
            ),
            ("postgres://app@db:5432/x", "postgres://[redacted]@db:5432/x"),
            ("mail me at ops@example.com", "mail me at ops@example.com"),
            ("Authorization: Bearer abc.def.ghi", "Authorization: [redacted]"),
            ("authorization=Basic dXNlcjpwYXNz", "authorization=[redacted]"),
            ("X-Api-Key: 12345", "X-Api-Key: [redacted]"),
            ("curl -H 'Bearer 0123456789abcdef'", "curl -H 'Bearer [redacted]'"),
            ("password=hunter2 user=bob", "password=[redacted] user=bob"),
            ("DB_PASSWORD=hunter2", "DB_PASSWORD=[redacted]"),
            (r#"{"token": "s3cr3t", "ok": true}"#, r#"{"token": "[redacted]", "ok": true}"#),
            ("?api_key=abc&page=2", "?api_key=[redacted]&page=2"),
            ("client_secret: 'xyz'", "client_secret: '[redacted]'"),
            ("key ghp_0123456789abcdefghijABCDEFGHIJ012345 leaked", "key [redacted] leaked"),
            ("xoxb-123456789012-abcdefghij", "[redacted]"),
            ("aws AKIAIOSFODNN7EXAMPLE", "aws [redacted]"),
            ("sk_live_0123456789abcdefABCD", "[redacted]"),
            ("OPENAI sk-proj-abcdefghijklmnopqrstuvwx", "OPENAI [redacted]"),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "jwt [redacted]",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----\nnext",
                "-----BEGIN RSA PRIVATE KEY----- [redacted]\nnext",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMIIEow (cut",
                "-----BEGIN PRIVATE KEY----- [redacted]",
            ),
            ("the session was long", "the session was long"),
            ("token expired, log in again", "token expired, log in again"),
            ("token validation failed", "token validation failed"),
            ("basic functionality works", "basic functionality works"),
            (
                "exec psql --password hunter2 -h db",
                "exec psql --password [redacted] -h db",
            ),
            ("mysql -p --token abc.def", "mysql -p --token [redacted]"),
            ("the pass was fine", "the pass was fine"),
            (
                "MIIEowIBAAKCAQEAvRmJ0Zq8j3XbGk2c9yT0pQ7mN1rS4uV6wX8yZ0aB2cD4eF6g\n-----END RSA PRIVATE KEY-----",
                "[redacted]\n-----END RSA PRIVATE KEY-----",
            ),
            (
                "  dGhpcyBpcyBhIHNlY3JldCB0b2tlbiB2YWx1ZSBoZXJl==",
                "  [redacted]",
            ),
            (
                "request id 0f8e7d6c5b4a39281706f5e4d3c2b1a0 done",
                "request id 0f8e7d6c5b4a39281706f5e4d3c2b1a0 done",
            ),
            (
                "4f9a0c2e7b1d3f5a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a",
                "4f9a0c2e7b1d3f5a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a",
            ),
            (
                "POST https://hooks.slack.com/services/T0001/B0002/XyZ123abc failed",
                "POST https://hooks.slack.com/services/[redacted] failed",
            ),
            (
                "https://discord.com/api/webhooks/123456/AbC-dEf_9",
                "https://discord.com/api/webhooks/[redacted]",
            ),
            (
                "connecting to postgres://queue:Tr0ub4dor-S3cret@db.internal:5432/jobs",
                "connecting to postgres://[redacted]@db.internal:5432/jobs",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(text(input), *want, "input: {input:?}");
        }
    }

    #[test]
    fn text_borrows_when_there_is_nothing_to_hide() {
        assert!(matches!(text("all good"), Cow::Borrowed(_)));
    }

    #[test]
    fn text_is_idempotent() {
        let once = text("http://a:b@h/ password=x Authorization: Bearer y").into_owned();
        assert_eq!(text(&once), once);
    }

    #[test]
    fn url_drops_userinfo_and_secret_query_values() {
        let cases: &[(&str, &str)] = &[
            ("http://monitor:pass@host/health", "http://host/health"),
            ("https://user@host:8443/x", "https://host:8443/x"),
            (
                "https://host/x?token=abc&page=2",
                "https://host/x?token=[redacted]&page=2",
            ),
            (
                "https://host/x?Api-Key=abc",
                "https://host/x?Api-Key=[redacted]",
            ),
            ("http://localhost:8065", "http://localhost:8065"),
            ("not a url, password=x", "not a url, password=[redacted]"),
        ];
        for (input, want) in cases {
            assert_eq!(url(input), *want, "input: {input:?}");
        }
    }
}
