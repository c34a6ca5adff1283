//! Acknowledgements, read before planning: any reaction on the alert post
//! by someone other than the agent, or a reply in its thread by a person,
//! acknowledges the incident.

use anyhow::Result;

use super::{service_of, EscalateOutcome};
use crate::escalate::{Ack, AckHow, EscalationState};
use crate::mattermost::Client;
use crate::observe::audit::{self, Event};

/// Marks alerts acknowledged: a reaction by anyone but the agent, else a
/// reply in the thread by a person (not the agent, a bot or a webhook).
pub(super) async fn observe_acks(
    mm: &Client,
    state: &mut EscalationState,
    out: &mut EscalateOutcome,
) {
    let waiting: Vec<(String, String)> = state
        .incidents
        .iter()
        .filter(|i| i.is_open() && i.acked.is_none())
        .filter_map(|i| i.alert_post_id.clone().map(|p| (i.key.clone(), p)))
        .collect();
    if waiting.is_empty() {
        return;
    }
    let own = match mm.own_id().await {
        Ok(id) => id,
        Err(e) => {
            out.errors.push(format!("acknowledgements not read: {e:#}"));
            return;
        }
    };
    for (key, post_id) in waiting {
        match find_ack(mm, &post_id, &own).await {
            Ok(Some(ack)) => {
                tracing::info!(incident = %key, by = %ack.by, how = ?ack.how, "Alert acknowledged.");
                audit::record(Event::Acknowledged {
                    incident: key.clone(),
                    service: service_of(state, &key),
                    check: audit::incident_check(&key),
                    by: ack.by.clone(),
                    how: match ack.how {
                        AckHow::Reaction => "reaction",
                        AckHow::Reply => "reply",
                    }
                    .into(),
                });
                out.counters.acknowledged += 1;
                if let Some(inc) = state.get_mut(&key) {
                    inc.acked = Some(ack);
                }
            }
            Ok(None) => {}
            Err(e) => out
                .errors
                .push(format!("{key}: acknowledgement not read: {e:#}")),
        }
    }
}

async fn find_ack(mm: &Client, post_id: &str, own: &str) -> Result<Option<Ack>> {
    let reactions = mm.reactions(post_id).await?;
    if let Some(r) = reactions
        .iter()
        .filter(|r| r.user_id != own)
        .min_by_key(|r| r.create_at)
    {
        return Ok(Some(Ack {
            by: r.user_id.clone(),
            at_ms: r.create_at,
            how: AckHow::Reaction,
        }));
    }
    let thread = mm.thread(post_id).await?;
    Ok(thread
        .posts
        .values()
        .filter(|p| p.root_id == post_id && p.user_id != own && p.delete_at == 0)
        .filter(|p| !p.prop_flag("from_bot") && !p.prop_flag("from_webhook"))
        .filter(|p| !p.kind.starts_with("system_"))
        .min_by_key(|p| p.create_at)
        .map(|p| Ack {
            by: p.user_id.clone(),
            at_ms: p.create_at,
            how: AckHow::Reply,
        }))
}
