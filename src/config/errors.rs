//! A TOML error as the operator needs it: the key's full path and line,
//! serde's message, and never the value of a key that looks secret. The
//! toml crate's own rendering quotes the offending line, which would copy a
//! password typed into the file into stderr (the scheduler's error log).

use std::sync::OnceLock;

use regex::Regex;

/// Words that make a key look like it holds a secret.
const SECRET_WORDS: &[&str] = &["password", "passwd", "secret", "token", "api_key", "apikey"];

/// `agent.deadline_secs (line 2): invalid value: …`, or, for a key that
/// looks secret (or names one, like `password_env`), the place without
/// anything that could echo the value.
pub(crate) fn describe(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim();
    let Some(span) = err.span() else {
        return message.to_string();
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let key = key_path(text, start);
    // A second line for one key says so, whatever the key holds: the value
    // is not the problem (the example file sets `token_file`, and an
    // operator uncommenting another one must learn that, not that the
    // secret was refused).
    if message.starts_with("duplicate key") {
        return duplicate(text, start, line_no, key.as_deref());
    }
    let place = match &key {
        Some(k) => format!("{k} (line {line_no})"),
        None => format!("line {line_no}"),
    };
    let secret = key.as_deref().is_some_and(looks_secret) || line_looks_secret(text, start);
    // "unknown field `x`, expected one of …" carries no value: keep it.
    if secret && !message.starts_with("unknown field") {
        format!(
            "{place}: not accepted (the value is not shown: this key names or holds a secret; \
             keep secrets in an environment variable or an owner-only file, e.g. \
             password_env / password_file)"
        )
    } else {
        format!("{place}: {message}")
    }
}

/// "duplicate key `mattermost.token_file` at line 9 (first set at line
/// 4): keep one", or for a table header written twice, "duplicate table
/// `[agent]` …". Names the key, never its values.
fn duplicate(text: &str, at: usize, line_no: usize, key: Option<&str>) -> String {
    let starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .take(line_no.saturating_sub(1))
        .collect();
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let header = |from: usize| {
        let line = text[from..].lines().next().unwrap_or_default().trim();
        line.strip_prefix('[')
            .filter(|l| !l.starts_with('['))
            .and_then(|l| l.split(']').next())
            .map(|t| t.trim().to_string())
    };
    let (what, first) = match (key, header(line_start)) {
        (_, Some(table)) => (
            format!("table `[{table}]`"),
            starts
                .iter()
                .position(|&l| header(l).as_deref() == Some(&table)),
        ),
        (Some(key), None) => (
            format!("key `{key}`"),
            starts.iter().position(|&l| {
                !text[l..].trim_start().starts_with('[')
                    && key_path(text, l).as_deref() == Some(key)
            }),
        ),
        (None, None) => ("key".to_string(), None),
    };
    match first {
        Some(i) => format!(
            "duplicate {what} at line {line_no} (first set at line {}): the file sets it twice; keep one",
            i + 1
        ),
        None => format!("duplicate {what} at line {line_no}: the file sets it twice; keep one"),
    }
}

/// Whether a key's name looks like it holds or names a secret.
fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

fn line_looks_secret(text: &str, at: usize) -> bool {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let before_eq = text[line_start..line_end]
        .split('=')
        .next()
        .unwrap_or_default();
    looks_secret(before_eq)
}

/// The dotted path of the key at byte `at`: the table header above it
/// (`checks[2]` for the third `[[checks]]`), the inline tables it sits in,
/// and the key itself.
fn key_path(text: &str, at: usize) -> Option<String> {
    static KEY: OnceLock<Regex> = OnceLock::new();
    static HEADER: OnceLock<Regex> = OnceLock::new();
    let key_re = KEY.get_or_init(|| {
        Regex::new(r#""?([A-Za-z0-9_-]+)"?\s*=\s*(\{)?|(\})"#).expect("static regex")
    });
    let header_re = HEADER.get_or_init(|| {
        Regex::new(r"^\s*(\[\[|\[)\s*([A-Za-z0-9_.-]+)\s*\]").expect("static regex")
    });
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    // An error on a key itself (unknown field) starts before its `=`.
    let upto = if text[at..line_end].contains('=') && !text[line_start..at].contains('=') {
        line_end
    } else {
        at
    };
    // Inline tables still open at `at`, then the key that owns it.
    let mut open: Vec<String> = Vec::new();
    let mut last: Option<String> = None;
    for c in key_re.captures_iter(&text[line_start..upto]) {
        match (c.get(1), c.get(2)) {
            (Some(k), Some(_)) => {
                open.push(k.as_str().to_string());
                last = None;
            }
            (Some(k), None) => last = Some(k.as_str().to_string()),
            _ => {
                open.pop();
                last = None;
            }
        }
    }
    let parts: Vec<String> = open.into_iter().chain(last).collect();
    if parts.is_empty() {
        return None;
    }
    let mut header: Option<String> = None;
    let mut arrays: std::collections::BTreeMap<String, usize> = Default::default();
    for line in text[..line_start].lines() {
        if let Some(h) = header_re.captures(line) {
            let name = h[2].to_string();
            if &h[1] == "[[" {
                let n = arrays.entry(name.clone()).or_insert(0);
                header = Some(format!("{name}[{}]", *n));
                *n += 1;
            } else {
                header = Some(name);
            }
        }
    }
    let key = parts.join(".");
    Some(match header {
        Some(h) => format!("{h}.{key}"),
        None => key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        #[serde(default)]
        agent: Option<Agent>,
        #[serde(default)]
        planka: Option<Planka>,
        #[serde(default)]
        checks: Vec<Check>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Agent {
        deadline_secs: u64,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Planka {
        password_env: Option<String>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Check {
        name: String,
        fix: Option<Fix>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Fix {
        settle_secs: u64,
    }

    fn err(text: &str) -> String {
        describe(text, &toml::from_str::<Doc>(text).unwrap_err())
    }

    #[test]
    fn errors_name_the_key_path_and_line() {
        let table = [
            ("[agent]\ndeadline_secs = -3\n", "agent.deadline_secs (line 2): invalid value: integer `-3`"),
            ("[agent]\ndeadline_sec = 5\n", "agent.deadline_sec (line 2): unknown field `deadline_sec`"),
            (
                "[[checks]]\nname = \"a\"\n[[checks]]\nname = \"b\"\nfix = { settle_secs = \"x\" }\n",
                "checks[1].fix.settle_secs (line 5): invalid type: string \"x\"",
            ),
        ];
        for (text, want) in table {
            let got = err(text);
            assert!(got.starts_with(want), "{text:?}: {got}");
        }
    }

    #[test]
    fn a_duplicate_key_or_table_is_named_with_both_lines() {
        let table = [
            (
                "[planka]\npassword_env = \"A\"\n# note\npassword_env = \"hunter2-very-secret\"\n",
                "duplicate key `planka.password_env` at line 4 (first set at line 2): the file sets it twice; keep one",
            ),
            (
                "[agent]\ndeadline_secs = 100\n\n[planka]\n[agent]\n",
                "duplicate table `[agent]` at line 5 (first set at line 1): the file sets it twice; keep one",
            ),
            (
                "[[checks]]\nname = \"a\"\nname = \"b\"\n",
                "duplicate key `checks[0].name` at line 3 (first set at line 2)",
            ),
        ];
        for (text, want) in table {
            let got = err(text);
            assert!(got.starts_with(want), "{text:?}: {got}");
            assert!(!got.contains("hunter2"), "{got}");
        }
    }

    #[test]
    fn secret_values_are_never_echoed() {
        for text in [
            "[planka]\npassword = \"hunter2-very-secret\"\n",
            "[planka]\npassword_env = 12345678\n",
            "[planka]\napi_token = \"hunter2-very-secret\"\n",
        ] {
            let got = err(text);
            assert!(
                !got.contains("hunter2") && !got.contains("12345678"),
                "{got}"
            );
            assert!(got.contains("planka."), "{got}");
        }
    }
}
