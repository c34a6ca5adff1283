//! Reading the audit trail back: `ops-agent audit` answers "why did the
//! agent do that?" for a post or a service from the trail and its rotated
//! files, oldest first.
//!
//! Lines are read as plain JSON objects, not as [`super::audit::Event`]s,
//! so a line written by a newer or older version still shows (as its
//! fields) instead of vanishing. A torn or unreadable line is skipped and
//! counted, as the ledger does. Memory stays flat: files are streamed, and
//! with `--since` a rotated file whose last line is older is not read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::logging::escape_controls;

/// Which lines to show. Pure.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Filter {
    /// Lines at or after this time.
    pub(crate) since: Option<DateTime<Utc>>,
    /// Lines about this post (as `post`, the `source` of its task and
    /// card, or the `reply` made to it).
    pub(crate) post: Option<String>,
    /// Lines about any of these checks or services (the command passes a
    /// check with its service, or a service with its checks).
    pub(crate) names: Vec<String>,
}

impl Filter {
    /// Whether a line passes.
    fn matches(&self, line: &Map<String, Value>) -> bool {
        let field = |k: &str| line.get(k).and_then(Value::as_str);
        if let Some(since) = self.since {
            match field("at").and_then(|a| DateTime::parse_from_rfc3339(a).ok()) {
                Some(at) if at >= since => {}
                _ => return false,
            }
        }
        if let Some(post) = &self.post {
            if !["post", "source", "reply"]
                .iter()
                .any(|k| field(k) == Some(post.as_str()))
            {
                return false;
            }
        }
        if !self.names.is_empty() {
            let about = |k: &str| field(k).is_some_and(|v| self.names.iter().any(|n| n == v));
            if !["check", "service", "target"].iter().any(|k| about(k)) {
                return false;
            }
        }
        true
    }
}

/// The trail's files, oldest first: `path.N` … `path.1`, `path.0` (where
/// newsyslog starts counting), then `path` (those that exist; compressed
/// ones are not read).
fn files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for n in (0..=crate::observe::rotate::MAX_KEEP).rev() {
        let p = crate::observe::rotate::rotated_name(path, n);
        if p.exists() {
            out.push(p);
        }
    }
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

/// What a scan saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// Lines that matched.
    pub(crate) matched: usize,
    /// Lines that could not be read (a torn last line after a crash).
    pub(crate) skipped: usize,
}

/// Calls `each` with every matching line of the trail at `path` and its
/// rotated files, oldest first.
pub(crate) fn scan(
    path: &Path,
    filter: &Filter,
    mut each: impl FnMut(&Map<String, Value>) -> Result<()>,
) -> Result<Scanned> {
    let mut seen = Scanned::default();
    for file in files(path) {
        if let Some(since) = filter.since {
            if last_time(&file)?.is_some_and(|t| t < since) {
                continue;
            }
        }
        let Some(f) = crate::files::open_private_read(&file)? else {
            continue;
        };
        let mut failed = Ok(());
        crate::jsonl::for_each_forward(f, |_, line| {
            let obj = line
                .ok()
                .and_then(|l| serde_json::from_slice::<Value>(&l).ok())
                .and_then(|v| match v {
                    Value::Object(m) if m.contains_key("event") => Some(m),
                    _ => None,
                });
            match obj {
                None => seen.skipped += 1,
                Some(m) if filter.matches(&m) => {
                    seen.matched += 1;
                    if let Err(e) = each(&m) {
                        failed = Err(e);
                        return false;
                    }
                }
                Some(_) => {}
            }
            true
        })
        .with_context(|| format!("reading {}", file.display()))?;
        failed?;
    }
    Ok(seen)
}

/// Lines of one trail file that are not JSON objects (a torn last line).
pub(crate) fn unreadable_lines(path: &Path) -> Result<usize> {
    let Some(f) = crate::files::open_private_read(path)? else {
        return Ok(0);
    };
    let mut n = 0;
    crate::jsonl::for_each_forward(f, |_, line| {
        let ok = line
            .ok()
            .and_then(|l| serde_json::from_slice::<Value>(&l).ok())
            .is_some_and(|v| v.is_object());
        n += usize::from(!ok);
        true
    })
    .with_context(|| format!("reading {}", path.display()))?;
    Ok(n)
}

/// The time of the last readable line of a file.
fn last_time(path: &Path) -> Result<Option<DateTime<Utc>>> {
    let Some(f) = crate::files::open_private_read(path)? else {
        return Ok(None);
    };
    let mut back =
        crate::jsonl::Backward::new(f).with_context(|| format!("reading {}", path.display()))?;
    while let Some(line) = back
        .next_line()
        .with_context(|| format!("reading {}", path.display()))?
    {
        let at = line
            .ok()
            .and_then(|l| serde_json::from_slice::<Value>(&l).ok())
            .and_then(|v| v.get("at").and_then(Value::as_str).map(str::to_string))
            .and_then(|a| DateTime::parse_from_rfc3339(&a).ok());
        if let Some(at) = at {
            return Ok(Some(at.with_timezone(&Utc)));
        }
    }
    Ok(None)
}

/// Where a line came from: `cycle <id>` or `command <name>`.
pub(crate) fn origin(line: &Map<String, Value>) -> String {
    match (
        line.get("cycle").and_then(Value::as_str),
        line.get("command").and_then(Value::as_str),
    ) {
        (Some(c), _) => format!("cycle {c}"),
        (None, Some(c)) => format!("ops-agent {c}"),
        (None, None) => "unknown".to_string(),
    }
}

/// One line as a sentence: `12:00:03  post p1 labelled TASK by the LLM
/// (llama3.1:8b): "please add…"`. Unknown events show their fields.
/// Control characters are escaped, so a post cannot forge a line.
pub(crate) fn describe(line: &Map<String, Value>) -> String {
    let s = |k: &str| line.get(k).and_then(Value::as_str).unwrap_or("?");
    let opt = |k: &str| line.get(k).and_then(Value::as_str);
    let yes = |k: &str| line.get(k).and_then(Value::as_bool).unwrap_or(true);
    let at = s("at");
    let time = at.get(11..19).unwrap_or(at);
    let event = s("event");
    let text = match event {
        "post_skipped" => format!(
            "post {} skipped: {} (author {})",
            s("post"),
            s("reason").replace('_', " "),
            s("author")
        ),
        "post_routed" => format!(
            "post {} by {} is {}: \"{}\"",
            s("post"),
            s("author"),
            match s("route") {
                "alert_ack" => "a reply in an alert thread (an acknowledgement, not new work)",
                "silence_command" => "a silence command",
                other => other,
            },
            s("excerpt")
        ),
        "post_classified" if opt("why").is_some() => format!(
            "post {} by {} in {}/{} labelled {}: \"{}\"",
            s("post"),
            s("author"),
            s("team"),
            s("channel"),
            s("why"),
            s("excerpt")
        ),
        "post_classified" => {
            let how = match (s("path"), opt("model"), opt("fallback")) {
                ("llm", Some(m), _) => format!("by the LLM ({m})"),
                // `keywords`: the fallback's name in lines written by 0.1.0.
                ("fallback" | "keywords", _, Some(why)) => match opt("part") {
                    Some(part) => format!("by the fallback's {part} (LLM {why})"),
                    None => format!("by the fallback (LLM {why})"),
                },
                (p, _, _) => format!("by {p}"),
            };
            format!(
                "post {} by {} in {}/{} labelled {} {how}: \"{}\"",
                s("post"),
                s("author"),
                s("team"),
                s("channel"),
                s("label"),
                s("excerpt")
            )
        }
        "post_pending" => format!("post {} left for the next cycle: {}", s("post"), s("why")),
        "task_created" => format!(
            "task {} {} for {} ({} {}, team {})",
            s("task"),
            if yes("created") {
                "created"
            } else {
                "already existed"
            },
            s("source"),
            s("priority"),
            s("tag"),
            s("team")
        ),
        "task_failed" => format!("task for {} not created: {}", s("source"), s("error")),
        "card_created" => format!(
            "card {} created for task {} ({})",
            s("card"),
            s("task"),
            s("source")
        ),
        "card_failed" => format!(
            "card for {} not made, waits in the outbox: {}",
            s("source"),
            s("error")
        ),
        "card_gone" => format!(
            "card {} of {} is gone from Planka (deleted): left alone",
            s("card"),
            s("source")
        ),
        "reply_posted" => format!(
            "replied to post {} ({}, reply {}{})",
            s("post"),
            s("path"),
            s("reply"),
            if yes("created") {
                ""
            } else {
                ", already there"
            }
        ),
        "check_changed" => format!(
            "check {} (service {}) {} ({}): {}",
            s("check"),
            s("service"),
            match s("change") {
                "failing" => "is now failing",
                "recovered" => "recovered",
                other => other,
            },
            s("status"),
            s("reason")
        ),
        "fix_skipped" => format!("no fix for {}: {} ({})", s("service"), s("why"), s("issue")),
        "fix_attempted" => format!("fixing {}: {} ({})", s("service"), s("action"), s("issue")),
        "fix_result" => format!(
            "fix of {} {}: {}; {} attempt(s) left this window",
            s("service"),
            s("outcome"),
            s("detail"),
            line.get("budget_left").and_then(Value::as_u64).unwrap_or(0)
        ),
        // The detail already says the step ("opened: …", "alert posted (…)").
        "escalation" => format!("incident {}: {}", s("incident"), s("detail")),
        "brief_gathered" => format!(
            "incident {}: brief gathered in {} ms: {}",
            s("incident"),
            line.get("ms").and_then(Value::as_u64).unwrap_or(0),
            s("gathered")
        ),
        "escalation_failed" => format!(
            "incident {} {} failed (owed again next cycle): {}",
            s("incident"),
            s("step"),
            s("error")
        ),
        "acknowledged" => format!(
            "incident {} acknowledged by {} ({})",
            s("incident"),
            s("by"),
            s("how")
        ),
        "silence_created" => format!(
            "silence {} of {} until {} by {}: {}{}",
            s("id"),
            s("target"),
            s("until"),
            s("by"),
            s("reason"),
            opt("post")
                .map(|p| format!(" (post {p})"))
                .unwrap_or_default()
        ),
        "silence_refused" => format!(
            "silence request in post {} by {} refused: {}",
            s("post"),
            s("by"),
            s("why")
        ),
        "silence_ended" => format!(
            "silence {} of {} {}{}",
            s("id"),
            s("target"),
            s("how"),
            opt("by").map(|b| format!(" by {b}")).unwrap_or_default()
        ),
        "file_set_aside" => format!(
            "{} set aside as {}: {}",
            s("path"),
            s("moved_to"),
            s("error")
        ),
        other => {
            let rest: Vec<String> = line
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "at" | "cycle" | "command" | "event"))
                .map(|(k, v)| match v {
                    Value::String(t) => format!("{k}={t}"),
                    v => format!("{k}={v}"),
                })
                .collect();
            format!("{other} {}", rest.join(" "))
        }
    };
    escape_controls(&format!("{time}  {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn filter_table() {
        let classified = obj(
            json!({"at": "2026-05-01T12:00:00.000Z", "event": "post_classified", "post": "p1"}),
        );
        let task =
            obj(json!({"at": "2026-05-01T12:00:01.000Z", "event": "task_created", "source": "p1"}));
        let fix =
            obj(json!({"at": "2026-05-01T13:00:00.000Z", "event": "fix_result", "service": "web"}));
        let silence = obj(
            json!({"at": "2026-05-01T13:00:00.000Z", "event": "silence_created", "target": "web-http"}),
        );
        let t = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
        let by_post = Filter {
            post: Some("p1".into()),
            ..Filter::default()
        };
        let by_service = Filter {
            names: vec!["web".into(), "web-http".into()],
            ..Filter::default()
        };
        let since = Filter {
            since: t("2026-05-01T12:30:00Z"),
            ..Filter::default()
        };
        let none = Filter::default();
        let table: Vec<(&str, &Filter, &Map<String, Value>, bool)> = vec![
            ("no filter passes everything", &none, &fix, true),
            ("the post itself", &by_post, &classified, true),
            ("its task", &by_post, &task, true),
            ("another service is not the post", &by_post, &fix, false),
            ("a service's fix", &by_service, &fix, true),
            ("a silence of its check", &by_service, &silence, true),
            ("a post is not the service", &by_service, &classified, false),
            ("since: later lines", &since, &fix, true),
            ("since: earlier lines", &since, &task, false),
        ];
        for (name, f, line, want) in table {
            assert_eq!(f.matches(line), want, "{name}");
        }
    }

    #[test]
    fn descriptions_read_as_sentences_and_cannot_forge_lines() {
        let l = obj(
            json!({"at": "2026-05-01T12:00:03.120Z", "event": "post_classified",
            "post": "p1", "team": "wizard", "channel": "ops", "author": "alice",
            "excerpt": "please add\nDNS", "label": "TASK", "path": "fallback", "fallback": "timeout",
            "part": "model"}),
        );
        assert_eq!(
            describe(&l),
            "12:00:03  post p1 by alice in wizard/ops labelled TASK by the fallback's model (LLM timeout): \"please add\\nDNS\""
        );
        let explained = obj(
            json!({"at": "2026-05-01T12:00:03.120Z", "event": "post_classified",
            "post": "p1", "team": "wizard", "channel": "ops", "author": "alice",
            "excerpt": "site down", "label": "INCIDENT", "path": "fallback", "fallback": "no_llm",
            "part": "model", "why": "INCIDENT by the model: incident 90 %, routine 6 %, task 4 %"}),
        );
        assert_eq!(
            describe(&explained),
            "12:00:03  post p1 by alice in wizard/ops labelled INCIDENT by the model: incident 90 %, routine 6 %, task 4 %: \"site down\""
        );
        let old = obj(
            json!({"at": "2026-05-01T12:00:03.120Z", "event": "post_classified",
            "post": "p1", "team": "wizard", "channel": "ops", "author": "alice",
            "excerpt": "thanks", "label": "ROUTINE", "path": "keywords", "fallback": "no_llm"}),
        );
        assert_eq!(
            describe(&old),
            "12:00:03  post p1 by alice in wizard/ops labelled ROUTINE by the fallback (LLM no_llm): \"thanks\""
        );
        let unknown = obj(json!({"at": "2026-05-01T12:00:03Z", "event": "new_thing", "n": 3}));
        assert_eq!(describe(&unknown), "12:00:03  new_thing n=3");
    }

    #[test]
    fn scan_reads_rotated_files_first_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let line = |at: &str, post: &str| {
            format!("{{\"at\":\"{at}\",\"event\":\"post_pending\",\"post\":\"{post}\",\"why\":\"x\"}}\n")
        };
        let old = line("2026-05-01T10:00:00.000Z", "a");
        std::fs::write(crate::observe::rotate::rotated_name(&p, 1), &old).unwrap();
        let cur = format!(
            "{}{{\"at\":\"2026-05-01T",
            line("2026-05-01T12:00:00.000Z", "b")
        );
        std::fs::write(&p, cur).unwrap();
        let mut posts = Vec::new();
        let seen = scan(&p, &Filter::default(), |m| {
            posts.push(m["post"].as_str().unwrap().to_string());
            Ok(())
        })
        .unwrap();
        assert_eq!(posts, ["a", "b"]);
        assert_eq!(
            seen,
            Scanned {
                matched: 2,
                skipped: 1
            }
        );
        let since = Filter {
            since: Some(
                DateTime::parse_from_rfc3339("2026-05-01T11:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            ..Filter::default()
        };
        let seen = scan(&p, &since, |_| Ok(())).unwrap();
        assert_eq!(seen.matched, 1);
    }
}
