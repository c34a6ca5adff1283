//! Cards: made once per task, labelled, commented once per event, moved.
//!
//! A card's description carries an `ops-agent source: <key>` line. The
//! outbox and the ledger remember which card a task has, so the line is
//! read only where a card may exist unrecorded (a crash or a timeout after
//! Planka made it): v2 asks the server's text search of each list (50
//! cards at most per list), v1 reads the board. Comments work the same
//! way: each ends with a [`comment_marker`] line naming its event, and the
//! card's newest comments are read for it before posting (both majors
//! answer the newest 50 first; one page is read, as the comment a crashed
//! step made is among the card's latest).
//!
//! New cards go after every card of the list without reading it: their
//! position is the time in milliseconds, above the positions Planka hands
//! out when people add or drag cards, and growing with each card.

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::{json, Value};

use super::board::BoardIds;
use super::config::Major;
use super::{
    comment_marker, id_of, item_id, source_marker, str_of, CardRef, Commented, Moved, PlankaClient,
};
use crate::tasks::{Tag, Task};

/// What the card description says about its marker line, so nobody edits
/// it away.
const KEEP_MARKER: &str = "(ops-agent finds this card by the next line after a crash: keep it.)";

/// The server's search takes at most this many characters.
const SEARCH_MAX: usize = 128;

/// How a card is to be made.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NewCard<'a> {
    /// An earlier attempt may have made it (a retry, a crash, a timeout):
    /// look for it by its marker first. A task made in the same call
    /// cannot have a card yet, so its card skips the search.
    pub(crate) maybe_made: bool,
    /// The list to put it in; `None`: the team's configured list.
    pub(crate) list: Option<&'a str>,
}

/// Which of a card's answers means "no such card" (not a list or a label).
fn card_not_found(e: &anyhow::Error) -> bool {
    PlankaClient::api_error(e)
        .is_some_and(|a| a.status == 404 && a.message.to_ascii_lowercase().contains("card"))
}

/// A 404 about a kept list, label or board id: read the board again.
fn stale_id(e: &anyhow::Error) -> bool {
    PlankaClient::api_error(e).is_some_and(|a| {
        let m = a.message.to_ascii_lowercase();
        a.status == 404 && (m.contains("list") || m.contains("label") || m.contains("board"))
    })
}

/// A new card's position: after every card people placed (Planka spaces
/// those 65,536 apart from the top), growing with time.
fn new_position() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64
}

/// `q` as a query value.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The card among `cards` whose description has `marker` as a line.
fn with_marker(cards: &[Value], marker: &str) -> Option<String> {
    cards
        .iter()
        .find(|c| str_of(c, "description").is_some_and(|d| d.lines().any(|l| l.trim() == marker)))
        .and_then(|c| c.get("id").and_then(id_of))
}

/// A card found by its marker: its id and the labels on it (from the same
/// answer's `included.cardLabels`), so a label already there is not
/// attached again.
struct Found {
    id: String,
    labels: Vec<String>,
}

fn found_in(answer: &Value, cards: &[Value], marker: &str) -> Option<Found> {
    let id = with_marker(cards, marker)?;
    let labels = answer
        .pointer("/included/cardLabels")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter(|cl| cl.get("cardId").and_then(id_of).as_deref() == Some(id.as_str()))
        .filter_map(|cl| cl.get("labelId").and_then(id_of))
        .collect();
    Some(Found { id, labels })
}

/// The text of one item of a card's comment page: a v2 comment's `text`, or
/// a v1 `commentCard` action's `data.text` (other v1 actions have none).
fn comment_text(item: &Value) -> Option<&str> {
    match str_of(item, "type") {
        Some("commentCard") => item.pointer("/data/text").and_then(Value::as_str),
        Some(_) => None,
        None => str_of(item, "text"),
    }
}

/// Whether one of `items` (a page of a card's comments, either major) has
/// `marker` as a line of its own. Pure, table-tested.
fn already_commented(items: &[Value], marker: &str) -> bool {
    items
        .iter()
        .filter_map(comment_text)
        .any(|t| t.lines().any(|l| l.trim() == marker))
}

impl PlankaClient {
    /// Makes the card for `task` (MC id `task_id`) on its team's board in
    /// the configured list, labelled BILLABLE/INTERNAL, or finds and
    /// completes the one an earlier attempt made.
    pub async fn create_card(&self, task: &Task, task_id: &str) -> Result<CardRef> {
        self.create(
            task,
            task_id,
            NewCard {
                maybe_made: true,
                list: None,
            },
        )
        .await
    }

    /// [`PlankaClient::create_card`] as `how` says. A kept id the server no
    /// longer knows (a list deleted and made again) re-reads the board once.
    pub(crate) async fn create(
        &self,
        task: &Task,
        task_id: &str,
        how: NewCard<'_>,
    ) -> Result<CardRef> {
        match self.create_once(task, task_id, how).await {
            Err(e) if stale_id(&e) => {
                tracing::info!(team = %task.team, "A kept Planka id is gone; reading the board again.");
                self.forget_board(&task.team);
                self.create_once(task, task_id, how).await
            }
            other => other,
        }
    }

    async fn create_once(&self, task: &Task, task_id: &str, how: NewCard<'_>) -> Result<CardRef> {
        let major = self.major().await?;
        let team = &task.team;
        let target = self.target_list(team, how.list)?;
        let (ids, list_id) = self.list_id(team, &target).await?;
        let marker = source_marker(&task.source);
        let found = if how.maybe_made {
            self.find_card(major, &ids, &task.source, &marker).await?
        } else {
            None
        };
        let (card_id, existed, labels) = match found {
            Some(f) => (f.id, true, f.labels),
            None => {
                let name: String = task.title.chars().take(1024).collect();
                let description = format!(
                    "{}\n\nMC task: {task_id}\n{KEEP_MARKER}\n{marker}",
                    task.description
                );
                let mut body =
                    json!({ "name": name, "description": description, "position": new_position() });
                if major == Major::V2 {
                    body["type"] = json!("project");
                }
                let v = self
                    .call(
                        Method::POST,
                        &format!("/api/lists/{list_id}/cards"),
                        Some(&body),
                    )
                    .await
                    .map_err(|e| self.explain(e, team, &ids))?;
                (item_id(&v, "card create")?, false, Vec::new())
            }
        };
        self.attach_tag_label(major, team, &ids, &card_id, task.tag, &labels)
            .await?;
        Ok(CardRef {
            card_url: self.card_url(&card_id),
            card_id,
            existed,
        })
    }

    fn target_list(&self, team: &str, list: Option<&str>) -> Result<String> {
        match list {
            Some(l) => Ok(l.to_string()),
            None => Ok(self
                .cfg
                .boards
                .get(team)
                .with_context(|| format!("planka.boards.{team} is not configured"))?
                .list
                .clone()),
        }
    }

    /// The card whose description has `marker` as a line, on any usable
    /// list of the board (someone may have moved it). Bounded on v2: the
    /// server's search, 50 cards at most per list.
    async fn find_card(
        &self,
        major: Major,
        ids: &BoardIds,
        source: &str,
        marker: &str,
    ) -> Result<Option<Found>> {
        if major == Major::V1 {
            let v = self
                .call(Method::GET, &format!("/api/boards/{}", ids.board_id), None)
                .await?;
            let cards = v
                .pointer("/included/cards")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            return Ok(found_in(&v, &cards, marker));
        }
        let q: String = source
            .trim_start_matches('/')
            .chars()
            .take(SEARCH_MAX)
            .collect();
        for list in &ids.lists {
            let v = self
                .call(
                    Method::GET,
                    &format!("/api/lists/{}/cards?search={}", list.id, encode(&q)),
                    None,
                )
                .await
                .context("looking for a card an earlier attempt made")?;
            let items = v
                .get("items")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if let Some(found) = found_in(&v, items, marker) {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    async fn attach_tag_label(
        &self,
        major: Major,
        team: &str,
        ids: &BoardIds,
        card_id: &str,
        tag: Tag,
        on_card: &[String],
    ) -> Result<()> {
        let label_id = self.label_id(team, ids, tag).await?;
        if on_card.contains(&label_id) {
            return Ok(());
        }
        let path = match major {
            Major::V2 => format!("/api/cards/{card_id}/card-labels"),
            Major::V1 => format!("/api/cards/{card_id}/labels"),
        };
        let attach = |label: String| {
            let path = path.clone();
            async move {
                self.call(Method::POST, &path, Some(&json!({ "labelId": label })))
                    .await
            }
        };
        match attach(label_id).await {
            Ok(_) => Ok(()),
            Err(e) if Self::api_status(&e) == Some(409) => Ok(()),
            Err(e) if stale_id(&e) && !card_not_found(&e) => {
                // The label was deleted: read the board again, make it anew.
                self.forget_board(team);
                let fresh = self.board(team).await?;
                let label = self.label_id(team, &fresh, tag).await?;
                match attach(label).await {
                    Err(e) if Self::api_status(&e) != Some(409) => Err(e),
                    _ => Ok(()),
                }
            }
            Err(e) => Err(self.explain(e, team, ids)),
        }
    }

    /// Adds a comment to a card (status updates, resolution notes) once per
    /// `key`, the stable name of the event (see [`comment_marker`]): the
    /// text ends with the marker line, and the card's newest comments are
    /// read first; when one carries the marker, nothing is posted. So a
    /// crash after Planka committed the comment and before the caller
    /// recorded it makes no second comment. A failed read is an error (the
    /// caller's step is owed again), never a blind post. A card that is
    /// gone is [`Commented::Gone`]: there is nothing left to tell.
    pub async fn add_comment(&self, card_id: &str, key: &str, text: &str) -> Result<Commented> {
        let major = self.major().await?;
        let marker = comment_marker(key);
        let (list, post) = match major {
            // v1 answers comment actions only unless `withDetails` is set.
            Major::V1 => (
                format!("/api/cards/{card_id}/actions"),
                format!("/api/cards/{card_id}/comment-actions"),
            ),
            Major::V2 => (
                format!("/api/cards/{card_id}/comments"),
                format!("/api/cards/{card_id}/comments"),
            ),
        };
        let page = match self.call(Method::GET, &list, None).await {
            Ok(p) => p,
            Err(e) if card_not_found(&e) => return Ok(Commented::Gone),
            Err(e) => return Err(e.context("reading the card's comments")),
        };
        let items = page
            .get("items")
            .and_then(Value::as_array)
            .with_context(|| format!("GET {list}: no items in the answer"))?;
        if already_commented(items, &marker) {
            return Ok(Commented::Found);
        }
        let body = json!({ "text": format!("{}\n\n{marker}", text.trim_end()) });
        match self.call(Method::POST, &post, Some(&body)).await {
            Ok(_) => Ok(Commented::Posted),
            Err(e) if card_not_found(&e) => Ok(Commented::Gone),
            Err(e) if Self::api_status(&e) == Some(403) => Err(e.context(
                "Planka refused the comment: make the agent an editor of the card's board",
            )),
            Err(e) => Err(e),
        }
    }

    /// Moves a card to the end of list `list` on `team`'s board (e.g. to a
    /// "Done" column when an incident recovers).
    pub async fn move_card(&self, card_id: &str, team: &str, list: &str) -> Result<Moved> {
        match self.move_once(card_id, team, list).await {
            Err(e) if stale_id(&e) && !card_not_found(&e) => {
                self.forget_board(team);
                self.move_once(card_id, team, list).await
            }
            Err(e) if card_not_found(&e) => Ok(Moved::Gone),
            other => other,
        }
    }

    async fn move_once(&self, card_id: &str, team: &str, list: &str) -> Result<Moved> {
        let (ids, list_id) = self.list_id(team, list).await?;
        match self
            .call(
                Method::PATCH,
                &format!("/api/cards/{card_id}"),
                Some(&json!({ "listId": list_id, "position": new_position() })),
            )
            .await
        {
            Ok(_) => Ok(Moved::Moved),
            Err(e) if card_not_found(&e) => Ok(Moved::Gone),
            Err(e) => Err(self.explain(e, team, &ids)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn already_commented_table() {
        let m = comment_marker("recovery web@1700000000");
        let mine = format!("Recovered at 10:00.\n\n{m}");
        let v2 = |t: &str| json!({"id": "2", "cardId": "1", "userId": "9", "text": t});
        let v1 = |ty: &str, t: &str| json!({"id": "2", "type": ty, "data": {"text": t}});
        for (items, want, why) in [
            (vec![], false, "no comments"),
            (vec![v2(&mine)], true, "v2, the marker line"),
            (vec![v2(&mine.replace('\n', "\r\n"))], true, "v2, CRLF"),
            (
                vec![v2("hello"), v2(&format!("x\n  {m}  "))],
                true,
                "v2, padded, not first",
            ),
            (
                vec![v2(&m.replace("1700000000", "1700000001"))],
                false,
                "another event",
            ),
            (
                vec![v2(&format!("quoting {m}"))],
                false,
                "not a line of its own",
            ),
            (vec![v2(&format!("{m}x"))], false, "a longer key"),
            (vec![v1("commentCard", &mine)], true, "v1 comment action"),
            (vec![v1("moveCard", &mine)], false, "v1, another action"),
            (
                vec![json!({"id": "3", "type": "commentCard"})],
                false,
                "v1, no text",
            ),
            (
                vec![json!({"id": "4", "text": null})],
                false,
                "v2, null text",
            ),
        ] {
            assert_eq!(already_commented(&items, &m), want, "{why}");
        }
    }

    #[test]
    fn the_marker_is_found_only_as_a_line_of_its_own() {
        let m = source_marker("p1");
        let cards = [
            json!({"id": "1", "description": format!("quoting {m} here")}),
            json!({"id": "2", "description": format!("x\n{KEEP_MARKER}\n{m}1")}),
            json!({"id": "3", "description": format!("x\n{KEEP_MARKER}\n{m}")}),
        ];
        assert_eq!(with_marker(&cards, &m).as_deref(), Some("3"));
        assert_eq!(with_marker(&cards[..2], &m), None);
    }

    #[test]
    fn search_terms_are_encoded() {
        assert_eq!(encode("web:web@2024 x/y"), "web%3Aweb%402024%20x%2Fy");
        assert_eq!(encode("abc-_.~"), "abc-_.~");
    }
}
