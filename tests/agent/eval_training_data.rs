//! `ops-agent eval` on the sets compiled into the shipped model: it says,
//! on stderr and in `--json`, how many scored rows the model was trained
//! on, so a 100 % there is not taken for a hold-out figure; on new posts it
//! says nothing.

use serde_json::Value;

use crate::support::agent::{text, Sandbox};

const WARNING: &str = "rows are in the embedded training data: this score is not a hold-out";

fn eval_json(sb: &Sandbox, file: &str) -> (Value, String) {
    let out = sb.run(&["eval", file, "--no-llm", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (v, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn eval_warns_on_the_embedded_training_data_and_not_on_a_hold_out() {
    let sb = Sandbox::new();
    let embedded = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/classify/data/classify-holdout-2.jsonl"
    );
    let (v, err) = eval_json(&sb, embedded);
    assert_eq!(v["rows"], 60, "{v}");
    assert_eq!(v["rows_in_training_data"], 60, "{v}");
    assert!(err.contains(&format!("60 of 60 {WARNING}")), "{err}");

    // Posts the model never saw: no warning, and 0 in the JSON.
    let holdout = sb.path("holdout.jsonl");
    std::fs::write(
        &holdout,
        "{\"text\":\"the gitea runner on zorba has been offline since lunch\",\"label\":\"INCIDENT\"}\n\
         {\"text\":\"could someone rotate the smtp password for the rendrom relay\",\"label\":\"TASK\"}\n\
         {\"text\":\"back from the dentist, catching up on the thread now\",\"label\":\"ROUTINE\"}\n",
    )
    .unwrap();
    let (v, err) = eval_json(&sb, holdout.to_str().unwrap());
    assert_eq!(v["rows"], 3, "{v}");
    assert_eq!(v["rows_in_training_data"], 0, "{v}");
    assert!(!err.contains("training data"), "{err}");

    // Training rows copied with other case and punctuation still count,
    // and the text output warns too.
    let (first, second) = {
        let text = std::fs::read_to_string(embedded).unwrap();
        let rows: Vec<Value> = text
            .lines()
            .take(2)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let t = |i: usize| rows[i]["text"].as_str().unwrap().to_string();
        (t(0), t(1))
    };
    let mixed = sb.path("mixed.jsonl");
    let row =
        |text: &str, label: &str| serde_json::json!({"text": text, "label": label}).to_string();
    std::fs::write(
        &mixed,
        [
            row(&first.to_uppercase(), "INCIDENT"),
            row(&format!("{second}!!"), "TASK"),
            row(
                "the gitea runner on zorba has been offline since lunch",
                "INCIDENT",
            ),
        ]
        .join("\n"),
    )
    .unwrap();
    let out = sb.run(&["eval", mixed.to_str().unwrap(), "--no-llm"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("2 of 3 {WARNING}")), "{}", text(&out));
}
