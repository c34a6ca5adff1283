//! Escalation end to end at module level: the executor against the fake
//! Mattermost (reactions and thread replies included), the fake Planka and
//! the built-in ledger, over simulated 5-minute cycles. Between cycles the
//! escalation and task state go through serde JSON, as they do through the
//! state file, so every step is also a restart.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ops_agent::escalate::silence::ChatAnswer;
use ops_agent::escalate::{self, AckHow, Ctx, EscalationConfig, EscalationState};
use ops_agent::fix::ServiceSummary;
use ops_agent::health::{CheckConfig, CheckKind, Checks, Status};
use ops_agent::mattermost::{Client, Credentials, NewPost};
use ops_agent::secret::Secret;
use ops_agent::tasks::ledger::Ledger;
use ops_agent::tasks::mc::{McBackend, McConfig};
use ops_agent::tasks::outbox::{Targets, TaskState};
use ops_agent::tasks::planka::{BoardTarget, PlankaClient, PlankaConfig};
use ops_agent::time::Secs;

use crate::support::fault::Fault;
use crate::support::mattermost::{FakeMattermost, FakePost};
use crate::support::planka::{FakePlanka, PASSWORD, USERNAME};

const PW_ENV: &str = "OPS_AGENT_TEST_ESCALATE_PLANKA_PW";
const MIN: i64 = 60_000;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 10, 12, 0, 0).unwrap()
}

struct World {
    dir: tempfile::TempDir,
    mm: FakeMattermost,
    planka_fake: FakePlanka,
    client: Client,
    planka: PlankaClient,
    mc: McBackend,
    cfg: EscalationConfig,
    checks: Checks,
    team_ids: BTreeMap<String, String>,
    agent: String,
    alice: String,
    mallory: String,
    alerts: String,
    square: String,
    done_list: String,
    /// Serialised state between cycles, as in the state file.
    state: String,
    tasks: String,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let mm = FakeMattermost::start().await;
        let agent = mm.add_bot("ops-agent");
        let alice = mm.add_user("alice", "pw");
        let mallory = mm.add_user("mallory", "pw");
        let token = mm.add_token(&agent);
        let team = mm.add_team("basic", &[&agent, &alice, &mallory]);
        let members = [agent.as_str(), alice.as_str(), mallory.as_str()];
        let alerts = mm.add_channel(&team, "ops-alerts", &members);
        let square = mm.add_channel(&team, "town-square", &members);
        let client = Client::new(
            &mm.url(),
            Credentials::Token {
                token: Secret::new(token),
                source: "test".into(),
            },
            Duration::from_secs(3),
        )
        .unwrap();

        let planka_fake = FakePlanka::start().await;
        let project = planka_fake.add_project("Ops");
        let board = planka_fake.add_board(&project, "Basic");
        planka_fake.add_list(&board, "Inbox");
        let done_list = planka_fake.add_list(&board, "Done");
        std::env::set_var(PW_ENV, PASSWORD);
        let mut boards = BTreeMap::new();
        boards.insert(
            "basic".to_string(),
            BoardTarget {
                project: None,
                board: "Basic".into(),
                list: "Inbox".into(),
            },
        );
        let planka = PlankaClient::new(
            &PlankaConfig {
                url: planka_fake.url.clone(),
                username: Some(USERNAME.into()),
                password_env: PW_ENV.into(),
                timeout_secs: Secs::new(2),
                boards,
                ..Default::default()
            },
            None,
        )
        .unwrap();
        let mc =
            McBackend::from_config(&McConfig::default(), dir.path().join("ledger.jsonl")).unwrap();
        let resolved = dir.path().join("resolved.txt");
        let cfg = EscalationConfig {
            on_call: vec!["alice".into()],
            silence_allowlist: vec!["alice".into()],
            done_list: "Done".into(),
            resolve_command: vec![
                "sh".into(),
                "-c".into(),
                format!("echo \"$0 $1\" >> {}", resolved.display()),
                "{task_id}".into(),
                "{source}".into(),
            ],
            ..Default::default()
        };
        let mut web = CheckConfig::new("web", CheckKind::Http);
        web.url = Some("http://127.0.0.1:1/".into());
        World {
            dir,
            mm,
            planka_fake,
            client,
            planka,
            mc,
            cfg,
            checks: Checks::from(vec![web]),
            team_ids: BTreeMap::new(),
            agent,
            alice,
            mallory,
            alerts,
            square,
            done_list,
            state: serde_json::to_string(&EscalationState::default()).unwrap(),
            tasks: serde_json::to_string(&TaskState::default()).unwrap(),
        }
    }

    fn now(min: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::milliseconds(min * MIN)
    }

    fn state(&self) -> EscalationState {
        serde_json::from_str(&self.state).unwrap()
    }

    /// One escalation stage at minute `min` with `web` failing or not;
    /// silences gate it as the cycle does.
    async fn cycle(&mut self, min: i64, web_failing: bool) -> escalate::EscalateOutcome {
        let now = Self::now(min);
        let mut state: EscalationState = serde_json::from_str(&self.state).unwrap();
        let tasks: TaskState = serde_json::from_str(&self.tasks).unwrap();
        state.silences.expire(now.timestamp_millis());
        let silenced = state
            .silences
            .silenced_services(&self.checks, now.timestamp_millis());
        let services = vec![summary(web_failing)];
        let ctx = Ctx {
            cfg: &self.cfg,
            checks: &self.checks,
            mm: Some(&self.client),
            alert_channel: "basic/ops-alerts",
            max_chars: 4000,
            team_ids: &self.team_ids,
            targets: Some(Targets {
                mc: &self.mc,
                planka: Some(&self.planka),
                dry_run: false,
            }),
            owner: "ops",
            pass_env: &[],
            dry_run: false,
            brief: None,
        };
        let mut book = MemBook {
            state,
            tasks,
            checkpoints: 0,
        };
        let out = escalate::run(&ctx, &services, &silenced, &mut book, now).await;
        assert_eq!(
            book.checkpoints,
            out.performed.len() + out.errors.len(),
            "one checkpoint per action"
        );
        self.state = serde_json::to_string(&book.state).unwrap();
        self.tasks = serde_json::to_string(&book.tasks).unwrap();
        out
    }

    fn alert_posts(&self) -> Vec<FakePost> {
        self.mm
            .posts()
            .into_iter()
            .filter(|p| p.channel_id == self.alerts && p.root_id.is_empty())
            .collect()
    }

    fn thread(&self, root: &str) -> Vec<String> {
        self.mm
            .thread_replies(root)
            .into_iter()
            .map(|p| p.message)
            .collect()
    }

    fn ledger_tasks(&self) -> Vec<ops_agent::tasks::ledger::LedgerTask> {
        Ledger::new(self.dir.path().join("ledger.jsonl"))
            .load()
            .unwrap()
            .tasks
    }

    fn resolved(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("resolved.txt"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Posts `text` in town-square as `user_id` and hands it to the chat
    /// silence command, as the cycle does for each polled post.
    async fn chat(
        &mut self,
        min: i64,
        user_id: &str,
        username: &str,
        text: &str,
    ) -> (String, ChatAnswer) {
        let id = self.mm.post(&self.square, user_id, text);
        let p = self.mm.get_post(&id).unwrap();
        let post = NewPost {
            id: id.clone(),
            team: "basic".into(),
            channel_id: self.square.as_str().into(),
            channel_name: "town-square".into(),
            user_id: user_id.into(),
            username: username.into(),
            is_bot: false,
            root_id: String::new(),
            message: text.into(),
            create_at: p.create_at,
            update_at: p.update_at,
            props: Default::default(),
        };
        let mut state = self.state();
        let request = escalate::silence::parse_command(&post.message, "ops-agent")
            .expect("a silence command");
        let answer = escalate::answer_silence_post(
            &self.client,
            &post,
            request,
            escalate::SilenceRules {
                cfg: &self.cfg,
                checks: &self.checks,
                max_chars: 4000,
            },
            &mut state,
            Self::now(min).timestamp_millis(),
        )
        .await
        .unwrap();
        self.state = serde_json::to_string(&state).unwrap();
        (id, answer)
    }
}

fn summary(failing: bool) -> ServiceSummary {
    ServiceSummary {
        service: "web".into(),
        status: if failing {
            Status::Critical
        } else {
            Status::Ok
        },
        failing,
        change: None,
        failing_since_ms: failing.then(|| t0().timestamp_millis()),
        consecutive_failures: u32::from(failing) * 3,
        blocked_by: None,
        problems: if failing {
            vec!["web: HTTP 502 from http://127.0.0.1:1/ in 12 ms".into()]
        } else {
            vec![]
        },
        has_fix: false,
        fix: None,
        tried: vec![],
        budget: None,
    }
}

#[tokio::test]
async fn a_service_that_stays_down_escalates_once_follows_up_once_and_closes_the_loop_once() {
    let mut w = World::new().await;
    for i in 0..12 {
        let out = w.cycle(i * 5, true).await;
        assert!(out.errors.is_empty(), "cycle {i}: {:?}", out.errors);
    }
    let tasks = w.ledger_tasks();
    assert_eq!(tasks.len(), 1, "one HIGH task");
    let t = &tasks[0].task;
    assert_eq!((t.priority.as_str(), t.tag.as_str()), ("HIGH", "INTERNAL"));
    assert!(t.source.starts_with("web:web@"), "{}", t.source);
    let alerts = w.alert_posts();
    assert_eq!(alerts.len(), 1, "one alert post");
    let alert = &alerts[0];
    assert!(
        alert.message.contains("web is failing"),
        "{}",
        alert.message
    );
    assert!(alert.message.contains("HTTP 502"), "last check output");
    assert!(
        alert.message.contains("no fix is configured"),
        "what was tried"
    );
    assert!(alert.message.contains(&tasks[0].id), "names the task");
    // 55 minutes without an acknowledgement: exactly one follow-up.
    let replies = w.thread(&alert.id);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].starts_with("@alice"), "{}", replies[0]);
    assert!(!replies[0].contains("@channel"));

    for i in 12..15 {
        let out = w.cycle(i * 5, false).await;
        assert!(out.errors.is_empty(), "cycle {i}: {:?}", out.errors);
    }
    let replies = w.thread(&alert.id);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(replies[1].contains("recovered after 1h"), "{}", replies[1]);
    assert_eq!(w.planka_fake.comments().len(), 1);
    let card = &w.planka_fake.cards()[0];
    assert_eq!(card["listId"], w.done_list.as_str(), "card moved to Done");
    assert_eq!(w.resolved(), [format!("{} {}", tasks[0].id, t.source)]);
    let st = w.state();
    assert!(st.incidents.is_empty());
    assert_eq!(st.closed.len(), 1);
    assert!(st.closed[0].acked.is_none());
    // Nothing more, ever.
    w.cycle(80, false).await;
    assert_eq!(w.thread(&alert.id).len(), 2);
    assert_eq!(w.planka_fake.comments().len(), 1);
    assert_eq!(w.ledger_tasks().len(), 1);
}

#[tokio::test]
async fn a_reaction_or_a_reply_acknowledges_and_prevents_the_follow_up() {
    let mut w = World::new().await;
    w.cycle(0, true).await;
    let alert = w.alert_posts()[0].id.clone();
    // The agent's own reaction does not count.
    w.mm.react_as(&alert, &w.agent.clone(), "eyes");
    w.mm.react_as(&alert, &w.alice.clone(), "+1");
    for i in 1..20 {
        w.cycle(i * 5, true).await;
    }
    assert!(w.thread(&alert).is_empty(), "{:?}", w.thread(&alert));
    let ack = w.state().incidents[0].acked.clone().unwrap();
    assert_eq!(
        (ack.by.as_str(), ack.how),
        (w.alice.as_str(), AckHow::Reaction)
    );

    let mut w = World::new().await;
    w.cycle(0, true).await;
    let alert = w.alert_posts()[0].id.clone();
    w.mm.reply(&alert, &w.mallory.clone(), "looking");
    for i in 1..10 {
        w.cycle(i * 5, true).await;
    }
    assert_eq!(w.thread(&alert), ["looking"]);
    assert_eq!(
        w.state().incidents[0].acked.as_ref().unwrap().how,
        AckHow::Reply
    );
}

#[tokio::test]
async fn mattermost_down_at_escalation_creates_the_task_now_and_posts_next_cycle_once() {
    let mut w = World::new().await;
    w.mm.set_fault(Fault::Refuse);
    let out = w.cycle(0, true).await;
    assert!(!out.errors.is_empty());
    assert_eq!(
        w.ledger_tasks().len(),
        1,
        "task created while Mattermost is down"
    );
    w.mm.clear_fault();
    assert!(w.alert_posts().is_empty());
    for i in 1..4 {
        let out = w.cycle(i * 5, true).await;
        assert!(out.errors.is_empty(), "{:?}", out.errors);
    }
    assert_eq!(w.alert_posts().len(), 1);
    assert_eq!(w.ledger_tasks().len(), 1);
    assert_eq!(
        w.state().incidents[0].alerted_ms,
        Some(World::now(5).timestamp_millis())
    );
}

#[tokio::test]
async fn a_silence_from_an_allowed_user_suppresses_the_alert_until_it_expires() {
    let mut w = World::new().await;
    let (post, answer) = w
        .chat(
            0,
            &w.alice.clone(),
            "alice",
            "@ops-agent silence web 1h deploying the new release",
        )
        .await;
    assert!(matches!(answer, ChatAnswer::Created(_)), "{answer:?}");
    let reply = w.thread(&post);
    assert_eq!(reply.len(), 1);
    assert!(reply[0].contains("Silenced **web**"), "{}", reply[0]);
    for i in 0..12 {
        let out = w.cycle(i * 5, true).await;
        assert!(out.performed.is_empty(), "{:?}", out.performed);
    }
    assert!(w.alert_posts().is_empty());
    assert!(w.ledger_tasks().is_empty());
    let s = &w.state().silences.active[0];
    assert_eq!(s.failing_seen_ms, Some(t0().timestamp_millis()));
    // The silence ends with web still failing: the alert goes out then, once.
    w.cycle(60, true).await;
    w.cycle(65, true).await;
    assert_eq!(w.alert_posts().len(), 1);
    assert_eq!(w.ledger_tasks().len(), 1);
    assert_eq!(w.state().silences.ended.len(), 1);
}

#[tokio::test]
async fn a_silence_request_from_anyone_else_is_refused_and_changes_nothing() {
    let mut w = World::new().await;
    let before = w.state.clone();
    let (post, answer) = w
        .chat(
            0,
            &w.mallory.clone(),
            "mallory",
            "@ops-agent silence web 1h trust me",
        )
        .await;
    assert_eq!(answer, ChatAnswer::Refused);
    assert_eq!(w.state, before);
    let reply = w.thread(&post);
    assert!(reply[0].starts_with("Sorry @mallory"), "{reply:?}");
    w.cycle(0, true).await;
    assert_eq!(w.alert_posts().len(), 1, "not silenced");
    // An allowed user naming an unknown service learns the known ones.
    let (post, answer) = w
        .chat(
            1,
            &w.alice.clone(),
            "alice",
            "@ops-agent silence wbe 1h typo",
        )
        .await;
    assert!(matches!(answer, ChatAnswer::Invalid(_)));
    assert!(
        w.thread(&post)[0].contains("Known services: web"),
        "{:?}",
        w.thread(&post)
    );
    assert!(w.state().silences.active.is_empty());
}

/// The stage's state in memory; checkpoints are counted.
struct MemBook {
    state: EscalationState,
    tasks: TaskState,
    checkpoints: usize,
}

impl escalate::Book for MemBook {
    fn parts(&mut self) -> (&mut EscalationState, &mut TaskState) {
        (&mut self.state, &mut self.tasks)
    }

    fn checkpoint(&mut self) -> anyhow::Result<()> {
        self.checkpoints += 1;
        Ok(())
    }
}
