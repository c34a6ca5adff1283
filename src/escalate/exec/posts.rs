//! The incident's posts: the alert in the alert channel, then the brief,
//! follow-up, reminders and recovery in its thread, and the late
//! announcement of an incident that came and went while chat was away.
//!
//! Posts are idempotent across a crash between posting and saving state:
//! every incident post carries the props [`INCIDENT_PROP`] (the key) and
//! [`EVENT_PROP`] (`alert`, `follow_up`, `reminder-N`, `recovery`), and an
//! agent post with the same pair is looked for before posting again.

use anyhow::{Context, Result};
use serde_json::{Map, Value};

use super::open::gather_brief;
use super::{incident, Ctx};
use crate::escalate::brief::render;
use crate::escalate::{EscalationState, Incident, IncidentCounters};
use crate::fix::ServiceSummary;
use crate::mattermost::wire::CreatePost;
use crate::mattermost::{Client, MmErrorKind};
use crate::time::human_ms;

/// Post prop holding the incident key on every incident post.
const INCIDENT_PROP: &str = "ops_agent_incident";
/// Post prop naming which incident post it is.
const EVENT_PROP: &str = "ops_agent_event";
/// How many recent channel posts are searched for an alert already made.
const ALERT_LOOKBACK_POSTS: u32 = 60;

/// Posts the alert (the channel id re-resolved next time if it is gone).
pub(super) async fn alert(
    ctx: &Ctx<'_>,
    key: &str,
    state: &mut EscalationState,
    now_ms: i64,
    counters: &mut IncidentCounters,
) -> Result<String> {
    let mm = ctx.mm.context("Mattermost is not configured")?;
    let channel_id = alert_channel_id(ctx, mm, state).await?;
    let inc = incident(state, key)?;
    let text = alert_text(inc);
    let (id, found_at) =
        match post_once(mm, &channel_id, None, key, "alert", &text, ctx.max_chars).await {
            Ok(found_or_new) => found_or_new,
            Err(e) => {
                if is_not_found(&e) {
                    state.alert_channel = None;
                }
                return Err(e);
            }
        };
    let inc = incident(state, key)?;
    inc.alert_post_id = Some(id.clone());
    inc.alert_channel_id = Some(channel_id);
    // The post's own time: an alert found again after a lost save
    // keeps its age, so the follow-up clock does not start over.
    inc.alerted_ms = Some(found_at.unwrap_or(now_ms));
    counters.alerts_posted += 1;
    Ok(format!("alert posted ({id})"))
}

/// Posts the brief gathered at opening in the alert's thread.
pub(super) async fn brief(ctx: &Ctx<'_>, key: &str, state: &mut EscalationState) -> Result<String> {
    let inc = incident(state, key)?;
    let Some(b) = &inc.brief else {
        inc.brief_posted = true;
        return Ok("no brief was gathered".into());
    };
    let text = render::markdown(b, key, render::CHAT_CAP.min(ctx.max_chars));
    let id = thread_post(ctx, state, key, "brief", &text).await?;
    incident(state, key)?.brief_posted = true;
    Ok(format!("brief posted in the thread ({id})"))
}

/// Calls the on-call people, with the brief gathered again now.
pub(super) async fn follow_up(
    ctx: &Ctx<'_>,
    key: &str,
    services: &[ServiceSummary],
    state: &mut EscalationState,
    now_ms: i64,
    counters: &mut IncidentCounters,
) -> Result<String> {
    let mentions: Vec<String> = ctx.cfg.on_call.iter().map(|u| format!("@{u}")).collect();
    // The evidence as it is now, for whoever is woken up.
    let current = incident(state, key)?.clone();
    let refreshed = gather_brief(ctx, &current, services, state, now_ms).await;
    let inc = incident(state, key)?;
    if let Some(b) = refreshed {
        inc.brief = Some(b);
    }
    let mut text = format!(
        "{}: nobody has acknowledged this alert for {}. **{}** is still failing ({}). Please react to the alert or reply here.",
        mentions.join(" "),
        human_ms(now_ms - inc.alerted_ms.unwrap_or(now_ms)),
        inc.service,
        inc.issue
    );
    if let Some(b) = &inc.brief {
        let room = ctx.max_chars.saturating_sub(text.len() + 40);
        text.push_str("\n\nThe brief, gathered again now:\n\n");
        text.push_str(&render::markdown(b, key, render::CHAT_CAP.min(room)));
    }
    thread_post(ctx, state, key, "follow_up", &text).await?;
    incident(state, key)?.followed_up_ms = Some(now_ms);
    counters.follow_ups += 1;
    Ok("follow-up posted".into())
}

/// Reminds the thread that the alert is still not acknowledged.
pub(super) async fn remind(
    ctx: &Ctx<'_>,
    key: &str,
    state: &mut EscalationState,
    now_ms: i64,
    counters: &mut IncidentCounters,
) -> Result<String> {
    let inc = incident(state, key)?;
    let n = inc.reminders + 1;
    let text = format!(
        "Reminder: **{}** has been failing for {} and this alert is not acknowledged ({}).",
        inc.service,
        human_ms(now_ms - inc.failing_since_ms),
        inc.issue
    );
    thread_post(ctx, state, key, &format!("reminder-{n}"), &text).await?;
    let inc = incident(state, key)?;
    inc.reminded_ms = Some(now_ms);
    inc.reminders = n;
    counters.reminders += 1;
    Ok(format!("reminder {n} posted"))
}

/// Says in the thread that the service recovered (and what becomes of
/// its task).
pub(super) async fn recovery(
    ctx: &Ctx<'_>,
    key: &str,
    state: &mut EscalationState,
    now_ms: i64,
    counters: &mut IncidentCounters,
) -> Result<String> {
    let inc = incident(state, key)?;
    let text = format!(
        ":white_check_mark: **{}** has recovered after {} (at {}).{}",
        inc.service,
        human_ms(inc.recovered_ms.unwrap_or(now_ms) - inc.failing_since_ms),
        crate::time::rfc3339_ms(inc.recovered_ms.unwrap_or(now_ms)),
        inc.task_id
            .as_deref()
            .map(|t| if ctx.closes_tasks() {
                format!(" Task {t} is being closed.")
            } else {
                format!(" Task {t} stays open in MC (no resolve_command is set).")
            })
            .unwrap_or_default()
    );
    thread_post(ctx, state, key, "recovery", &text).await?;
    incident(state, key)?.recovery_posted = true;
    counters.recoveries_posted += 1;
    Ok("recovery posted".into())
}

/// Announces, once, an incident that opened and recovered while the
/// alert channel could not be reached.
pub(super) async fn announce_late(
    ctx: &Ctx<'_>,
    key: &str,
    state: &mut EscalationState,
    now_ms: i64,
    counters: &mut IncidentCounters,
) -> Result<String> {
    let mm = ctx.mm.context("Mattermost is not configured")?;
    let channel_id = alert_channel_id(ctx, mm, state).await?;
    let inc = incident(state, key)?;
    let recovered = inc.recovered_ms.unwrap_or(now_ms);
    let text = format!(
        ":information_source: While this channel could not be reached, **{}** failed at {} \
         and recovered at {} after {} (`{}`): {}{}",
        inc.service,
        crate::time::rfc3339_ms(inc.failing_since_ms),
        crate::time::rfc3339_ms(recovered),
        human_ms(recovered - inc.failing_since_ms),
        inc.key,
        inc.issue,
        inc.task_id
            .as_deref()
            .map(|t| format!(" Task {t}."))
            .unwrap_or_default()
    );
    let (id, found_at) =
        post_once(mm, &channel_id, None, key, "late", &text, ctx.max_chars).await?;
    let inc = incident(state, key)?;
    inc.alert_post_id = Some(id.clone());
    inc.alert_channel_id = Some(channel_id);
    inc.alerted_ms = Some(found_at.unwrap_or(now_ms));
    inc.recovery_posted = true;
    counters.alerts_posted += 1;
    Ok(format!("announced late ({id})"))
}

/// The alert: what failed, what was tried, the last check output, and
/// from the brief the first diagnosis and the most telling lines.
pub(super) fn alert_text(inc: &Incident) -> String {
    let mut text = format!(
        ":rotating_light: **Incident: {} is failing** (`{}`)\n\n{}",
        inc.service, inc.key, inc.details
    );
    match (&inc.task_id, &inc.card_url) {
        (Some(t), Some(url)) => text.push_str(&format!("\nTask: {t} ({url})\n")),
        (Some(t), None) => text.push_str(&format!("\nTask: {t}\n")),
        _ => text.push_str("\nTask: being created.\n"),
    }
    if let Some(b) = &inc.brief {
        text.push('\n');
        text.push_str(&render::alert_part(b));
    }
    text.push_str("\nReact to this post or reply in its thread to acknowledge.");
    text
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<crate::mattermost::MmError>()
            .is_some_and(|m| m.kind == MmErrorKind::NotFound)
    })
}

/// The alert channel id: cached in state for the configured `team/channel`,
/// else resolved (team id from the poller's cache, else by name).
async fn alert_channel_id(
    ctx: &Ctx<'_>,
    mm: &Client,
    state: &mut EscalationState,
) -> Result<String> {
    if let Some((spec, id)) = &state.alert_channel {
        if spec == ctx.alert_channel {
            return Ok(id.clone());
        }
    }
    let (team, channel) = ctx.alert_target().with_context(|| {
        format!(
            "mattermost.alert_channel '{}' is not team/channel",
            ctx.alert_channel
        )
    })?;
    let team_id = match ctx.team_ids.get(team) {
        Some(id) => id.clone(),
        None => {
            mm.team_by_name(team)
                .await
                .with_context(|| format!("resolving the alert team '{team}'"))?
                .id
        }
    };
    let ch = match mm.channel_by_name(&team_id, channel).await {
        Err(e) if e.kind == MmErrorKind::NotFound && ctx.team_ids.contains_key(team) => {
            // The cached team id may be stale: resolve the team by name once.
            let team_id = mm.team_by_name(team).await?.id;
            mm.channel_by_name(&team_id, channel).await?
        }
        r => r.with_context(|| format!("resolving the alert channel '{}'", ctx.alert_channel))?,
    };
    state.alert_channel = Some((ctx.alert_channel.to_string(), ch.id.clone()));
    Ok(ch.id)
}

async fn thread_post(
    ctx: &Ctx<'_>,
    state: &mut EscalationState,
    key: &str,
    event: &str,
    text: &str,
) -> Result<String> {
    let mm = ctx.mm.context("Mattermost is not configured")?;
    let inc = incident(state, key)?;
    let root = inc.alert_post_id.clone().context("no alert post")?;
    let channel = match inc.alert_channel_id.clone() {
        Some(c) => c,
        None => alert_channel_id(ctx, mm, state).await?,
    };
    let (id, _) = post_once(mm, &channel, Some(&root), key, event, text, ctx.max_chars).await?;
    Ok(id)
}

/// Posts `text` (made safe: no mass mentions, capped) unless the agent's
/// post for this incident and event is already there. Returns the post's
/// id, and its `create_at` when it was found rather than made (a save lost
/// after posting), so the caller can keep the original time.
async fn post_once(
    mm: &Client,
    channel_id: &str,
    root: Option<&str>,
    key: &str,
    event: &str,
    text: &str,
    max_chars: usize,
) -> Result<(String, Option<i64>)> {
    let own = mm.own_id().await?;
    let existing = match root {
        Some(r) => mm.thread(r).await?,
        None => mm.posts_page(channel_id, 0, ALERT_LOOKBACK_POSTS).await?,
    };
    if let Some(p) = existing.posts.values().find(|p| {
        p.user_id == own
            && p.delete_at == 0
            && p.prop_str(INCIDENT_PROP) == Some(key)
            && p.prop_str(EVENT_PROP) == Some(event)
    }) {
        return Ok((p.id.clone(), Some(p.create_at)));
    }
    let mut props = Map::new();
    props.insert(INCIDENT_PROP.into(), Value::String(key.to_string()));
    props.insert(EVENT_PROP.into(), Value::String(event.to_string()));
    let post = mm
        .create_post(&CreatePost {
            channel_id: channel_id.to_string(),
            message: crate::text::for_chat(text, max_chars),
            root_id: root.unwrap_or_default().to_string(),
            props,
        })
        .await
        .with_context(|| format!("posting the {event} of incident {key}"))?;
    Ok((post.id, None))
}
