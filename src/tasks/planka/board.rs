//! A team's board as ids: the board, its usable lists and the agent's
//! labels, resolved once and kept in the Planka cache file.
//!
//! `GET /api/boards/{id}` is the only call that names a board's lists and
//! labels, and it answers every card on the board too (17 MB at 20,000
//! cards). So it is read when a team's ids are not known yet, when the
//! configuration names another board or list, or when the server says a
//! kept id is gone (404), and its answer is parsed for the lists, labels
//! and memberships only, with a cap of its own. Everything else goes by
//! id.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{id_of, item_id, str_of, BoardTarget, PlankaClient};
use crate::tasks::Tag;

/// The most the board read takes in: a board of about 150,000 cards. Read
/// once per board and kept, so the size costs time once, not per card.
const BOARD_CAP: usize = 128 * 1024 * 1024;

/// One list the agent may put cards in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ListId {
    pub(super) id: String,
    pub(super) name: String,
}

/// What the agent knows of a team's board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct BoardIds {
    /// The configuration these ids answer (another one re-resolves).
    pub(super) target: BoardTarget,
    pub(super) board_id: String,
    /// The board's name on the server, for messages.
    pub(super) board_name: String,
    /// The usable lists (v2: active and closed; v1: all), by position.
    pub(super) lists: Vec<ListId>,
    /// The agent's labels by name (`BILLABLE`, `INTERNAL`).
    #[serde(default)]
    pub(super) labels: BTreeMap<String, String>,
}

impl BoardIds {
    /// The list named `name` (see [`pick_list`]).
    pub(super) fn list(&self, name: &str) -> Option<&ListId> {
        pick(&self.lists, |l| Some(l.name.as_str()), name)
    }
}

/// `name` among `items`: an exact match wins over one that differs only in
/// case and surrounding spaces (how the docs promise both board and list
/// names are matched). Pure, table-tested.
fn pick<'a, T>(items: &'a [T], name_of: impl Fn(&T) -> Option<&str>, name: &str) -> Option<&'a T> {
    let want = name.trim();
    if want.is_empty() {
        return None;
    }
    items
        .iter()
        .find(|i| name_of(i).is_some_and(|n| n == want))
        .or_else(|| {
            items
                .iter()
                .find(|i| name_of(i).is_some_and(|n| n.trim().eq_ignore_ascii_case(want)))
        })
}

/// The lists of a board answer that can take cards: v2 system lists
/// (archive, trash, `name: null`) never can.
fn usable_lists(lists: &[Value]) -> Vec<ListId> {
    let mut usable: Vec<(f64, ListId)> = lists
        .iter()
        .filter(|l| !matches!(str_of(l, "type"), Some("archive") | Some("trash")))
        .filter_map(|l| {
            Some((
                l.get("position").and_then(Value::as_f64).unwrap_or(0.0),
                ListId {
                    id: l.get("id").and_then(id_of)?,
                    name: str_of(l, "name")?.to_string(),
                },
            ))
        })
        .collect();
    usable.sort_by(|a, b| a.0.total_cmp(&b.0));
    usable.into_iter().map(|(_, l)| l).collect()
}

/// `GET /api/boards/{id}` reduced to what the agent uses; the cards and
/// everything else in `included` are skipped without being kept.
#[derive(Deserialize)]
struct BoardShow {
    #[serde(default)]
    item: Value,
    included: BoardIncluded,
}

#[derive(Deserialize)]
struct BoardIncluded {
    #[serde(default)]
    lists: Vec<Value>,
    #[serde(default)]
    labels: Vec<Value>,
    #[serde(default, rename = "boardMemberships")]
    memberships: Vec<Value>,
}

/// A board as read: its ids, and its memberships (who may do what; empty
/// where the server does not answer them).
pub(super) struct BoardRead {
    pub(super) ids: BoardIds,
    pub(super) memberships: Vec<Value>,
}

impl PlankaClient {
    fn target(&self, team: &str) -> Result<BoardTarget> {
        self.cfg
            .boards
            .get(team)
            .cloned()
            .with_context(|| format!("planka.boards.{team} is not configured"))
    }

    /// The team's board ids: kept ones when they answer the configuration,
    /// else resolved now (and kept).
    pub(super) async fn board(&self, team: &str) -> Result<BoardIds> {
        let target = self.target(team)?;
        self.load_cache();
        if let Some(ids) = self.lock().boards.get(team).filter(|b| b.target == target) {
            return Ok(ids.clone());
        }
        let read = self.read_board(team, &target).await?;
        self.keep(team, read.ids.clone());
        Ok(read.ids)
    }

    /// Forgets a team's ids (the server said one is gone): the next use
    /// reads the board again.
    pub(super) fn forget_board(&self, team: &str) {
        if self.lock().boards.remove(team).is_some() {
            self.save_cache();
        }
    }

    fn keep(&self, team: &str, ids: BoardIds) {
        self.lock().boards.insert(team.to_string(), ids);
        self.save_cache();
    }

    /// Finds the board among the user's projects and reads its lists,
    /// labels and memberships.
    pub(super) async fn read_board(&self, team: &str, target: &BoardTarget) -> Result<BoardRead> {
        let projects = self.call(Method::GET, "/api/projects", None).await?;
        let items = |key: &str| -> Vec<Value> {
            projects
                .get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let included_boards: Vec<Value> = projects
            .pointer("/included/boards")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let project_ids: Option<Vec<String>> = target.project.as_deref().map(|p| {
            let all = items("items");
            let exact: Vec<&Value> = all
                .iter()
                .filter(|v| str_of(v, "name").is_some_and(|n| n == p.trim()))
                .collect();
            let chosen = if exact.is_empty() {
                all.iter()
                    .filter(|v| {
                        str_of(v, "name").is_some_and(|n| n.trim().eq_ignore_ascii_case(p.trim()))
                    })
                    .collect()
            } else {
                exact
            };
            chosen
                .into_iter()
                .filter_map(|v| v.get("id").and_then(id_of))
                .collect()
        });
        let in_project: Vec<&Value> = included_boards
            .iter()
            .filter(|b| match &project_ids {
                None => true,
                Some(ids) => b
                    .get("projectId")
                    .and_then(id_of)
                    .is_some_and(|p| ids.contains(&p)),
            })
            .collect();
        let want = target.board.trim();
        let exact: Vec<&&Value> = in_project
            .iter()
            .filter(|b| str_of(b, "name") == Some(want))
            .collect();
        let found: Vec<&&Value> = if exact.is_empty() {
            in_project
                .iter()
                .filter(|b| str_of(b, "name").is_some_and(|n| n.trim().eq_ignore_ascii_case(want)))
                .collect()
        } else {
            exact
        };
        let board = match found.as_slice() {
            [one] => **one,
            [] => bail!(
                "Planka board '{}'{} not found or not shared with the agent's user (planka.boards.{team})",
                target.board,
                target.project.as_deref().map(|p| format!(" in project '{p}'")).unwrap_or_default()
            ),
            _ => bail!("Planka has several boards named '{}'; set planka.boards.{team}.project", target.board),
        };
        let board_id = board
            .get("id")
            .and_then(id_of)
            .context("board without an id")?;
        let text = self
            .call_raw(
                Method::GET,
                &format!("/api/boards/{board_id}"),
                None,
                BOARD_CAP,
            )
            .await?;
        let show: BoardShow = serde_json::from_str(&text)
            .with_context(|| format!("GET /api/boards/{board_id}: not a board"))?;
        let labels = show
            .included
            .labels
            .iter()
            .filter_map(|l| {
                let name = str_of(l, "name")?.trim();
                let tag = [Tag::Billable, Tag::Internal]
                    .into_iter()
                    .find(|t| t.as_str().eq_ignore_ascii_case(name))?;
                Some((tag.as_str().to_string(), l.get("id").and_then(id_of)?))
            })
            .fold(BTreeMap::new(), |mut m, (k, v)| {
                m.entry(k).or_insert(v);
                m
            });
        let ids = BoardIds {
            target: target.clone(),
            board_name: str_of(&show.item, "name")
                .or_else(|| str_of(board, "name"))
                .unwrap_or(want)
                .to_string(),
            board_id,
            lists: usable_lists(&show.included.lists),
            labels,
        };
        Ok(BoardRead {
            ids,
            memberships: show.included.memberships,
        })
    }

    /// The list `name` on the team's board; when the kept ids lack it (a
    /// list added since), the board is read again once.
    pub(super) async fn list_id(&self, team: &str, name: &str) -> Result<(BoardIds, String)> {
        let ids = self.board(team).await?;
        if let Some(l) = ids.list(name) {
            let id = l.id.clone();
            return Ok((ids, id));
        }
        self.forget_board(team);
        let ids = self.board(team).await?;
        let id = ids
            .list(name)
            .with_context(|| {
                format!(
                    "Planka board '{}' has no list '{name}' (planka.boards.{team}.list, escalation.done_list)",
                    ids.board_name
                )
            })?
            .id
            .clone();
        Ok((ids, id))
    }

    /// The id of the agent's label for `tag` on the team's board, made
    /// (once, and kept) when the board has none.
    pub(super) async fn label_id(&self, team: &str, ids: &BoardIds, tag: Tag) -> Result<String> {
        if let Some(id) = ids.labels.get(tag.as_str()) {
            return Ok(id.clone());
        }
        let body = json!({
            "name": tag.as_str(),
            "color": self.cfg.color_for(tag),
            // Labels sort by position; after any the team made is fine.
            "position": 65536.0 * (ids.labels.len() as f64 + 16.0),
        });
        let v = self
            .call(
                Method::POST,
                &format!("/api/boards/{}/labels", ids.board_id),
                Some(&body),
            )
            .await
            .map_err(|e| self.explain(e, team, ids))?;
        let id = item_id(&v, "label create")?;
        let mut kept = ids.clone();
        kept.labels.insert(tag.as_str().to_string(), id.clone());
        self.keep(team, kept);
        Ok(id)
    }

    /// Read-only, for `doctor`: reads the team's board as a card would
    /// need it (board, list, the agent an editor) and says what it found.
    pub(crate) async fn check_team(&self, team: &str) -> Result<String> {
        let target = self.target(team)?;
        let read = self.read_board(team, &target).await?;
        let ids = &read.ids;
        let list = ids.list(&target.list).with_context(|| {
            format!(
                "Planka board '{}' has no list '{}' (planka.boards.{team}.list)",
                ids.board_name, target.list
            )
        })?;
        if !read.memberships.is_empty() {
            let me = self.own_id().await?;
            let role = read
                .memberships
                .iter()
                .find(|m| m.get("userId").and_then(id_of).as_deref() == Some(me.as_str()))
                .and_then(|m| str_of(m, "role"));
            match role {
                Some("editor") => {}
                Some(other) => bail!(
                    "the agent's user is only a{} {other} of board '{}': cards would be refused (403); make it an editor of the board",
                    if other.starts_with(['a', 'e', 'i', 'o', 'u']) { "n" } else { "" },
                    ids.board_name
                ),
                // A project manager or admin sees the board without being a
                // member; cards need a membership as editor.
                None => bail!(
                    "the agent's user is not a member of board '{}': cards would be refused; add it as an editor",
                    ids.board_name
                ),
            }
        }
        Ok(format!(
            "board '{}', list '{}', the agent an editor",
            ids.board_name, list.name
        ))
    }

    /// Says what a refusal means on this board: a 403 is a role problem
    /// the operator must fix in Planka, so it names the board and the fix.
    pub(super) fn explain(&self, e: anyhow::Error, team: &str, ids: &BoardIds) -> anyhow::Error {
        if Self::api_status(&e) == Some(403) {
            let why = format!(
                "Planka refused the agent's user on board '{}' (planka.boards.{team}): make the agent an editor of the board",
                ids.board_name
            );
            return e.context(why);
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_exactly_first_then_ignoring_case_and_spaces() {
        let lists = usable_lists(&[
            json!({"id":"1","name":null,"type":"archive"}),
            json!({"id":"2","name":null,"type":"trash"}),
            json!({"id":"3","name":"inbox","type":"active","position":1}),
            json!({"id":"4","name":"Inbox","type":"active","position":2}),
            json!({"id":"5","name":"Done","type":"closed","position":3}),
            json!({"id":"6","name":" To Do ","position":4}),
        ]);
        let ids = BoardIds {
            target: BoardTarget {
                project: None,
                board: "B".into(),
                list: "Inbox".into(),
            },
            board_id: "9".into(),
            board_name: "B".into(),
            lists,
            labels: BTreeMap::new(),
        };
        for (name, want) in [
            ("Inbox", Some("4")),
            ("INBOX", Some("3")),
            ("Done", Some("5")),
            ("done ", Some("5")),
            ("to do", Some("6")),
            ("Trash", None),
            ("", None),
            ("  ", None),
        ] {
            assert_eq!(ids.list(name).map(|l| l.id.as_str()), want, "{name:?}");
        }
    }
}
