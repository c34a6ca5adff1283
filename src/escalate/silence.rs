//! Silences: a deliberate "I know, leave it alone" for a check or service.
//!
//! A silenced service is still checked (its results show in `health`, as
//! silenced, and in `status`), but gets no auto-fix (`ops-agent fix` needs
//! `--force`) and no alert, follow-up or reminder. An incident alerted
//! before the silence that recovers during it still gets its recovery post,
//! so its thread does not end on "failing". Silences expire by themselves;
//! what happened during one (the service failed, it recovered) is recorded
//! on the silence, and an incident still failing when the silence ends
//! alerts then (the planner in `crate::escalate` simply sees it
//! unsilenced).
//!
//! Three ways in, one data model: `ops-agent silence <target> <duration>
//! --reason "…"` ([`Silences::add`] via [`cli_add`]), `silence --list`,
//! `silence --clear ID`, and the one chat command, `@agent silence <service>
//! <duration> <reason>` from a user on `[escalation] silence_allowlist`
//! ([`parse_command`], [`answer_chat`]). Chat text is parsed by this plain
//! code, never by the LLM, and can only create a silence.
//!
//! Silencing a check silences its service: the service is the unit that is
//! fixed and escalated. Everything here is pure: data and `now` in.

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::fix::ServiceSummary;
use crate::health::Checks;
use crate::observe::audit::{self, Event};

/// The longest silence: a forgotten silence must not hide a service forever.
const MAX_SILENCE_MS: i64 = 30 * 24 * 3_600_000;
/// Ended silences kept for `silence --list` and `status` (newest win).
const KEEP_ENDED: usize = 50;
/// Longest accepted reason, in characters.
const MAX_REASON_CHARS: usize = 300;

/// One silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Short id for `--clear` (`s1`, `s2`, …).
    id: String,
    /// A check name or a service name.
    pub(crate) target: String,
    /// Ends at this time (epoch ms).
    pub(crate) until_ms: i64,
    /// Why, in the operator's words.
    pub(crate) reason: String,
    /// Who: a Mattermost username, or the local user for the CLI.
    pub(crate) by: String,
    /// When it was made (epoch ms).
    created_ms: i64,
    /// The chat post that asked for it, so a repeated cycle after a crash
    /// does not make a second silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_post: Option<String>,
    /// When a silenced service was first seen failing during the silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_seen_ms: Option<i64>,
    /// When it recovered during the silence (recorded; only an alert posted
    /// before the silence gets a recovery post).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recovered_ms: Option<i64>,
    /// When it ended early (`--clear`); expiry leaves this empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cleared_ms: Option<i64>,
}

impl Silence {
    /// Whether it still holds at `now_ms`.
    fn is_active(&self, now_ms: i64) -> bool {
        self.cleared_ms.is_none() && now_ms < self.until_ms
    }

    /// One line for `silence --list` and the chat confirmation.
    pub(crate) fn line(&self, now_ms: i64) -> String {
        let left = if self.is_active(now_ms) {
            format!("{} left", crate::time::human_ms(self.until_ms - now_ms))
        } else {
            "ended".to_string()
        };
        let mut line = format!(
            "{}  {}  until {} ({left})  by {}: {}",
            self.id,
            self.target,
            crate::time::rfc3339_ms(self.until_ms),
            self.by,
            self.reason
        );
        if let Some(r) = self.recovered_ms {
            line.push_str(&format!(
                "; recovered during the silence at {}",
                crate::time::rfc3339_ms(r)
            ));
        } else if let Some(f) = self.failing_seen_ms {
            line.push_str(&format!(
                "; failing during the silence since {}",
                crate::time::rfc3339_ms(f)
            ));
        }
        line
    }
}

/// The silences in state (inside `EscalationState`). Bounded: active ones
/// are capped by [`MAX_SILENCE_MS`], ended ones by [`KEEP_ENDED`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Silences {
    /// Not yet expired or cleared.
    pub active: Vec<Silence>,
    /// Expired or cleared, newest last.
    pub ended: Vec<Silence>,
    /// The number of the next id.
    next_id: u64,
}

impl Silences {
    /// Adds a silence of `target` for `duration_ms`. A chat request already
    /// turned into a silence (same `source_post`) returns that one.
    fn add(
        &mut self,
        target: &str,
        duration_ms: i64,
        reason: &str,
        by: &str,
        now_ms: i64,
        source_post: Option<&str>,
    ) -> Result<Silence> {
        if let Some(post) = source_post {
            if let Some(s) = self
                .active
                .iter()
                .chain(self.ended.iter())
                .find(|s| s.source_post.as_deref() == Some(post))
            {
                return Ok(s.clone());
            }
        }
        let target = target.trim();
        if target.is_empty() {
            bail!("a silence needs a check or service name");
        }
        if duration_ms <= 0 {
            bail!("the duration must be positive");
        }
        if duration_ms > MAX_SILENCE_MS {
            bail!(
                "{} is longer than the longest silence ({})",
                crate::time::human_ms(duration_ms),
                crate::time::human_ms(MAX_SILENCE_MS)
            );
        }
        let reason = reason.trim();
        if reason.is_empty() {
            bail!("a silence needs a reason (--reason \"…\")");
        }
        self.next_id += 1;
        let s = Silence {
            id: format!("s{}", self.next_id),
            target: target.to_string(),
            until_ms: now_ms + duration_ms,
            reason: crate::text::cap(reason, MAX_REASON_CHARS),
            by: by.to_string(),
            created_ms: now_ms,
            source_post: source_post.map(str::to_string),
            failing_seen_ms: None,
            recovered_ms: None,
            cleared_ms: None,
        };
        self.active.push(s.clone());
        Ok(s)
    }

    /// The silences in force at `now_ms`, soonest end first.
    pub(crate) fn list(&self, now_ms: i64) -> Vec<&Silence> {
        let mut v: Vec<&Silence> = self.active.iter().filter(|s| s.is_active(now_ms)).collect();
        v.sort_by_key(|s| s.until_ms);
        v
    }

    /// Ends silence `id` now (`silence --clear ID`).
    pub(crate) fn clear(&mut self, id: &str, now_ms: i64) -> Result<Silence> {
        let Some(i) = self.active.iter().position(|s| s.id == id.trim()) else {
            let known: Vec<&str> = self.active.iter().map(|s| s.id.as_str()).collect();
            bail!(
                "no active silence '{id}' (active: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        };
        let mut s = self.active.remove(i);
        s.cleared_ms = Some(now_ms);
        self.push_ended(s.clone());
        Ok(s)
    }

    /// Moves silences that ended by `now_ms` to `ended`; returns them (the
    /// cycle logs each: its target alerts again from now on).
    pub fn expire(&mut self, now_ms: i64) -> Vec<Silence> {
        let (done, keep): (Vec<Silence>, Vec<Silence>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|s| !s.is_active(now_ms));
        self.active = keep;
        for s in &done {
            self.push_ended(s.clone());
        }
        done
    }

    fn push_ended(&mut self, s: Silence) {
        self.ended.push(s);
        let excess = self.ended.len().saturating_sub(KEEP_ENDED);
        self.ended.drain(..excess);
    }

    /// The silence a chat post asked for, if any.
    pub(crate) fn by_post(&self, post: &str) -> Option<&Silence> {
        self.active
            .iter()
            .chain(self.ended.iter())
            .find(|s| s.source_post.as_deref() == Some(post))
    }

    /// Puts back a silence from the state's journal, unless it is known.
    pub(crate) fn restore(&mut self, s: Silence) {
        let known = self
            .active
            .iter()
            .chain(self.ended.iter())
            .any(|x| x.id == s.id);
        if !known {
            self.active.push(s);
        }
    }

    /// The services silenced at `now_ms`: targeted by name, or owning a
    /// targeted check. The cycle passes this set to the fix stage (skip
    /// these services) and to the escalation planner.
    pub fn silenced_services(&self, checks: &Checks, now_ms: i64) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for s in self.active.iter().filter(|s| s.is_active(now_ms)) {
            out.insert(s.target.clone());
            for c in checks.iter().filter(|c| c.name == s.target) {
                out.insert(c.service().to_string());
            }
        }
        out
    }

    /// When the silence of `service` (or of one of its checks) ends, if
    /// one is in force at `now_ms`: the latest end among them.
    pub(crate) fn until_ms(&self, checks: &Checks, service: &str, now_ms: i64) -> Option<i64> {
        self.active
            .iter()
            .filter(|s| s.is_active(now_ms))
            .filter(|s| {
                s.target == service
                    || checks
                        .iter()
                        .any(|c| c.name == s.target && c.service() == service)
            })
            .map(|s| s.until_ms)
            .max()
    }

    /// Records on each active silence what its service did this cycle:
    /// failing seen, and recovery during the silence.
    pub(crate) fn observe(&mut self, checks: &Checks, services: &[ServiceSummary], now_ms: i64) {
        for s in self.active.iter_mut().filter(|s| s.is_active(now_ms)) {
            let service = checks
                .iter()
                .find(|c| c.name == s.target)
                .map(|c| c.service().to_string())
                .unwrap_or_else(|| s.target.clone());
            let Some(sum) = services.iter().find(|x| x.service == service) else {
                continue;
            };
            if sum.failing {
                s.failing_seen_ms.get_or_insert(now_ms);
                s.recovered_ms = None;
            } else if s.failing_seen_ms.is_some() && s.recovered_ms.is_none() {
                s.recovered_ms = Some(now_ms);
            }
        }
    }
}

/// Records a silence just made in the audit trail (chat or command line).
/// A chat request answered again after a crash returns the same silence;
/// recording it twice says no more than once, so no check is made.
pub(crate) fn audit_created(s: &Silence) {
    audit::record(Event::SilenceCreated {
        id: s.id.clone(),
        target: s.target.clone(),
        until: crate::time::rfc3339_ms(s.until_ms),
        by: s.by.clone(),
        reason: s.reason.clone(),
        post: s.source_post.clone(),
    });
}

/// Records the end of a silence: `expired`, or `cleared` by `by`.
pub(crate) fn audit_ended(s: &Silence, by: Option<&str>) {
    audit::record(Event::SilenceEnded {
        id: s.id.clone(),
        target: s.target.clone(),
        how: if by.is_some() { "cleared" } else { "expired" }.into(),
        by: by.map(str::to_string),
    });
}

/// The names a silence may target: every check and every service, sorted.
fn known_targets(checks: &Checks) -> Vec<String> {
    let set: BTreeSet<String> = checks
        .iter()
        .flat_map(|c| [c.name.clone(), c.service().to_string()])
        .collect();
    set.into_iter().collect()
}

/// A well-formed chat silence request (not yet checked against the
/// allowlist or the known services).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceRequest {
    /// The service named.
    pub(crate) target: String,
    /// How long.
    pub(crate) duration_ms: i64,
    /// Why (the rest of the message).
    pub(crate) reason: String,
}

/// The chat command's usage line, sent back on a malformed request.
fn usage(agent_username: &str) -> String {
    format!("Usage: `@{agent_username} silence <service> <duration> <reason>`, e.g. `@{agent_username} silence web 2h deploying the new release` (durations: 90s, 30m, 2h, 1d).")
}

/// Recognises `@<agent> silence <service> <duration> <reason>` at the start
/// of a message (leading blanks ignored, mention and verb case-insensitive).
/// `None`: not the command (the post goes on to classification);
/// `Some(Err(why))`: addressed to the agent as a silence but malformed.
pub fn parse_command(text: &str, agent_username: &str) -> Option<Result<SilenceRequest, String>> {
    let agent = agent_username.trim().trim_start_matches('@');
    if agent.is_empty() {
        return None;
    }
    let text = text.trim_start();
    let rest = text.strip_prefix('@')?;
    let (mention, rest) = split_word(rest);
    let mention = mention.trim_end_matches([':', ',']);
    if !mention.eq_ignore_ascii_case(agent) {
        return None;
    }
    let (verb, rest) = split_word(rest);
    if !verb.eq_ignore_ascii_case("silence") {
        return None;
    }
    let (target, rest) = split_word(rest);
    if target.is_empty() {
        return Some(Err(format!("Which service? {}", usage(agent))));
    }
    let (duration, reason) = split_word(rest);
    let duration_ms = match crate::time::parse_span_ms(duration) {
        Ok(d) => d,
        Err(e) => return Some(Err(format!("{e}. {}", usage(agent)))),
    };
    let reason = reason.trim();
    if reason.is_empty() {
        return Some(Err(format!("Please add a reason. {}", usage(agent))));
    }
    Some(Ok(SilenceRequest {
        target: target.to_string(),
        duration_ms,
        reason: reason.to_string(),
    }))
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// What answering a chat silence request did.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatAnswer {
    /// The silence was made (or had been made for this post already).
    Created(Silence),
    /// The author is not on the allowlist; nothing changed.
    Refused,
    /// Malformed or unknown service; nothing changed.
    Invalid(String),
}

impl ChatAnswer {
    /// The thread reply text.
    pub(crate) fn reply_text(&self, author: &str, now_ms: i64) -> String {
        match self {
            ChatAnswer::Created(s) => format!(
                "Silenced **{}** until {} ({}), as @{author} asked: {}. It is still checked; no fix and no alert until then. Clear it early with `ops-agent silence --clear {}`.",
                s.target,
                crate::time::rfc3339_ms(s.until_ms),
                crate::time::human_ms(s.until_ms - now_ms),
                s.reason,
                s.id
            ),
            ChatAnswer::Refused => format!(
                "Sorry @{author}, I can only take silence requests from the people on the silence allowlist (`escalation.silence_allowlist`). Please ask one of them, or an operator with `ops-agent silence`."
            ),
            ChatAnswer::Invalid(why) => why.clone(),
        }
    }
}

/// Answers one parsed chat request: the allowlist first (anyone else gets a
/// polite refusal and learns nothing else), then the request's form, then
/// the service name; only then is the silence made (idempotent per post).
pub(crate) fn answer_chat(
    request: Result<SilenceRequest, String>,
    author: &str,
    post_id: &str,
    allowlist: &[String],
    services: &[String],
    silences: &mut Silences,
    now_ms: i64,
) -> ChatAnswer {
    if !allowlist.iter().any(|u| {
        u.trim()
            .trim_start_matches('@')
            .eq_ignore_ascii_case(author)
    }) {
        return ChatAnswer::Refused;
    }
    let req = match request {
        Ok(r) => r,
        Err(why) => return ChatAnswer::Invalid(why),
    };
    if !services.iter().any(|s| s == &req.target) {
        return ChatAnswer::Invalid(format!(
            "I know no service '{}'. Known services: {}.",
            req.target,
            services.join(", ")
        ));
    }
    match silences.add(
        &req.target,
        req.duration_ms,
        &req.reason,
        author,
        now_ms,
        Some(post_id),
    ) {
        Ok(s) => ChatAnswer::Created(s),
        Err(e) => ChatAnswer::Invalid(format!("Not silenced: {e:#}.")),
    }
}

/// `ops-agent silence <target> <duration> --reason "…"`: checks the target
/// against the configured checks and services, then adds the silence.
pub(crate) fn cli_add(
    silences: &mut Silences,
    checks: &Checks,
    target: &str,
    duration: &str,
    reason: &str,
    by: &str,
    now_ms: i64,
) -> Result<Silence> {
    let known = known_targets(checks);
    if !known.iter().any(|k| k == target.trim()) {
        bail!(
            "unknown check or service '{target}'; known: {}",
            known.join(", ")
        );
    }
    let ms = crate::time::parse_span_ms(duration).map_err(anyhow::Error::msg)?;
    silences.add(target, ms, reason, by, now_ms, None)
}

/// `silence --list` as text: active silences, then the recently ended.
pub(crate) fn render_list(silences: &Silences, now_ms: i64) -> String {
    let active = silences.list(now_ms);
    let mut out = if active.is_empty() {
        "No active silences.\n".to_string()
    } else {
        format!("Active silences: {}\n", active.len())
    };
    for s in active {
        out.push_str(&format!("  {}\n", s.line(now_ms)));
    }
    let recent: Vec<&Silence> = silences.ended.iter().rev().take(10).collect();
    if !recent.is_empty() {
        out.push_str("Recently ended:\n");
        for s in recent {
            out.push_str(&format!("  {}\n", s.line(now_ms)));
        }
    }
    out
}

/// `silence --list --json`: the whole record.
pub(crate) fn list_json(silences: &Silences, now_ms: i64) -> serde_json::Value {
    serde_json::json!({
        "active": silences.list(now_ms),
        "ended": silences.ended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{CheckConfig, CheckKind};

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn command_table() {
        type Want = Option<Result<(&'static str, i64, &'static str), &'static str>>;
        let cases: Vec<(&str, Want)> = vec![
            (
                "@ops-agent silence web 2h deploying now",
                Some(Ok(("web", 7_200_000, "deploying now"))),
            ),
            (
                "  @OPS-AGENT: SILENCE db 30m  disk swap ",
                Some(Ok(("db", 1_800_000, "disk swap"))),
            ),
            ("@ops-agent silence web 2h", Some(Err("reason"))),
            ("@ops-agent silence web soon because", Some(Err("duration"))),
            ("@ops-agent silence", Some(Err("Which service"))),
            ("@ops-agent please silence web 2h x", None),
            ("@someone silence web 2h x", None),
            ("silence web 2h x", None),
            ("hey @ops-agent silence web 2h x", None),
            ("@ops-agentx silence web 2h x", None),
            ("", None),
        ];
        for (text, want) in cases {
            let got = parse_command(text, "ops-agent");
            match (&got, &want) {
                (None, None) => {}
                (Some(Ok(r)), Some(Ok((t, d, why)))) => {
                    assert_eq!(
                        (r.target.as_str(), r.duration_ms, r.reason.as_str()),
                        (*t, *d, *why),
                        "{text}"
                    )
                }
                (Some(Err(e)), Some(Err(frag))) => assert!(e.contains(frag), "{text}: {e}"),
                _ => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    fn checks() -> Checks {
        let mut web = CheckConfig::new("web-http", CheckKind::Http);
        web.url = Some("http://127.0.0.1:1/".into());
        web.service = Some("web".into());
        Checks::from(vec![web, CheckConfig::new("disk", CheckKind::Disk)])
    }

    #[test]
    fn chat_answers_allowlist_first_then_form_then_service() {
        let allow = vec!["alice".to_string()];
        let services = vec!["web".to_string(), "disk".to_string()];
        let req = parse_command("@ops silence web 1h deploy", "ops").unwrap();
        let mut s = Silences::default();
        // Anyone else: refused, nothing changes, even for a bad request.
        let a = answer_chat(req.clone(), "mallory", "p1", &allow, &services, &mut s, T0);
        assert_eq!(a, ChatAnswer::Refused);
        assert!(a.reply_text("mallory", T0).starts_with("Sorry @mallory"));
        let bad = parse_command("@ops silence nope 1h x", "ops").unwrap();
        assert_eq!(
            answer_chat(bad.clone(), "bob", "p2", &allow, &services, &mut s, T0),
            ChatAnswer::Refused
        );
        assert_eq!(s, Silences::default());
        // Unknown service: the known ones are listed.
        match answer_chat(bad, "alice", "p3", &allow, &services, &mut s, T0) {
            ChatAnswer::Invalid(why) => assert!(why.contains("web, disk"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Allowed: made once per post.
        let ChatAnswer::Created(made) =
            answer_chat(req.clone(), "Alice", "p4", &allow, &services, &mut s, T0)
        else {
            panic!()
        };
        assert_eq!((made.target.as_str(), made.by.as_str()), ("web", "Alice"));
        let again = answer_chat(req, "alice", "p4", &allow, &services, &mut s, T0 + 5);
        assert_eq!(again, ChatAnswer::Created(made.clone()));
        assert_eq!(s.active.len(), 1);
        assert!(ChatAnswer::Created(made)
            .reply_text("alice", T0)
            .contains("Silenced **web**"));
    }

    #[test]
    fn add_list_clear_expire() {
        let mut s = Silences::default();
        let a = s.add("web", 3_600_000, "deploy", "cli", T0, None).unwrap();
        let b = s.add("disk", 60_000, "resize", "cli", T0, None).unwrap();
        assert_eq!((a.id.as_str(), b.id.as_str()), ("s1", "s2"));
        assert!(s.add("web", 0, "x", "cli", T0, None).is_err());
        assert!(s
            .add("web", MAX_SILENCE_MS + 1, "x", "cli", T0, None)
            .is_err());
        assert!(s.add("web", 1000, " ", "cli", T0, None).is_err());
        let ids: Vec<&str> = s.list(T0).iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, ["s2", "s1"]);
        assert!(s.clear("s9", T0).is_err());
        s.clear("s1", T0 + 1).unwrap();
        assert_eq!(s.list(T0 + 2).len(), 1);
        assert!(s.expire(T0 + 59_999).is_empty());
        let gone = s.expire(T0 + 60_000);
        assert_eq!(gone.len(), 1);
        assert!(s.list(T0 + 60_000).is_empty());
        assert_eq!(s.ended.len(), 2);
        assert!(render_list(&s, T0 + 60_000).contains("Recently ended"));
        let j = list_json(&s, T0 + 60_000);
        assert_eq!(j["ended"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_silenced_check_silences_its_service_and_cli_checks_targets() {
        let c = checks();
        let mut s = Silences::default();
        assert!(cli_add(&mut s, &c, "nope", "1h", "x", "op", T0)
            .unwrap_err()
            .to_string()
            .contains("known: "));
        assert!(cli_add(&mut s, &c, "web", "2q", "x", "op", T0).is_err());
        cli_add(&mut s, &c, "web-http", "1h", "deploy", "op", T0).unwrap();
        let set = s.silenced_services(&c, T0 + 1);
        assert!(set.contains("web") && !set.contains("disk"), "{set:?}");
        assert!(s.silenced_services(&c, T0 + 3_600_000).is_empty());
        assert!(c.services().contains(&"web".to_string()));
    }
}
