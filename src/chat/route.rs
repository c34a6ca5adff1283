//! What a new post is to the agent, decided once per post before anything
//! else happens to it: a silence command (answered by plain code), an
//! acknowledgement in one of the agent's alert threads (the escalation
//! stage reads it), or work (classify, file, reply). Pure.

use crate::escalate::silence::{self, SilenceRequest};
use crate::escalate::EscalationState;
use crate::mattermost::NewPost;

/// The way a post goes through the chat stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `@agent silence <service> <duration> <reason>`, parsed (or why not):
    /// never classified, never filed.
    Silence(Result<SilenceRequest, String>),
    /// A reply in the thread of an alert the agent posted: an
    /// acknowledgement, never new work.
    AlertAck,
    /// Everything else: classify, then file and reply when actionable.
    Work,
}

impl Route {
    /// Whether the post goes to the classifier.
    pub(crate) fn is_work(&self) -> bool {
        matches!(self, Route::Work)
    }
}

/// Routes one post. `agent_username` is the agent's own (unknown before the
/// first successful poll: then nothing is a command).
pub(crate) fn route(
    post: &NewPost,
    agent_username: Option<&str>,
    escalation: &EscalationState,
) -> Route {
    if let Some(me) = agent_username {
        if let Some(request) = silence::parse_command(&post.message, me) {
            return Route::Silence(request);
        }
    }
    if !post.root_id.is_empty() && escalation.is_alert_thread(&post.root_id) {
        return Route::AlertAck;
    }
    Route::Work
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escalate::Incident;

    fn post(message: &str, root_id: &str) -> NewPost {
        NewPost {
            id: "p1".into(),
            message: message.into(),
            root_id: root_id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn route_table() {
        let mut esc = EscalationState::default();
        esc.incidents.push(Incident {
            alert_post_id: Some("alert-1".into()),
            ..Default::default()
        });
        let me = Some("ops-agent");
        type Row = (&'static str, NewPost, Option<&'static str>, Route);
        let table: Vec<Row> = vec![
            ("plain work", post("planka is down", ""), me, Route::Work),
            (
                "a silence command",
                post("@ops-agent silence web 2h deploying", ""),
                me,
                Route::Silence(Ok(SilenceRequest {
                    target: "web".into(),
                    duration_ms: 7_200_000,
                    reason: "deploying".into(),
                })),
            ),
            (
                "a malformed silence command is still a command",
                post("@ops-agent silence web", ""),
                me,
                Route::Silence(Err(String::new())),
            ),
            (
                "unknown agent name: nothing is a command",
                post("@ops-agent silence web 2h x", ""),
                None,
                Route::Work,
            ),
            (
                "a reply in an alert thread",
                post("looking at it", "alert-1"),
                me,
                Route::AlertAck,
            ),
            (
                "a command in an alert thread is a command",
                post("@ops-agent silence web 1h on it", "alert-1"),
                me,
                Route::Silence(Ok(SilenceRequest {
                    target: "web".into(),
                    duration_ms: 3_600_000,
                    reason: "on it".into(),
                })),
            ),
            (
                "a reply in another thread is work",
                post("the site is down too", "other-root"),
                me,
                Route::Work,
            ),
        ];
        for (name, p, me, want) in table {
            let got = route(&p, me, &esc);
            match (&got, &want) {
                (Route::Silence(Err(_)), Route::Silence(Err(_))) => {}
                _ => assert_eq!(got, want, "{name}"),
            }
        }
    }
}
