//! Accuracy of the keyword rules on hand-labelled ops-chat messages. The
//! labels are what an SRE would expect, not what the rules say.
//!
//! * `classify-devset.jsonl` (208 rows) is the development set: the rules
//!   were tuned on it and must reach 85 %. Its last 45 rows were the first
//!   hold-out set; once the rules had been tuned against its misses it was
//!   no longer unseen, so it moved here.
//! * `classify-holdout-2.jsonl` (60 rows, 20 per label) was written before
//!   the current rules were read or changed and is never tuned on: its
//!   figure is the honest estimate of how the fallback does on new
//!   messages. To improve the rules again, move it into the dev set and
//!   write a fresh hold-out first.

use ops_agent::classify::{keywords, ClassifyConfig, Label};

#[derive(serde::Deserialize)]
struct Row {
    text: String,
    label: Label,
}

fn idx(l: Label) -> usize {
    Label::ALL.iter().position(|x| *x == l).unwrap()
}

/// Loads a set, prints accuracy, confusion matrix and misses; returns accuracy.
fn evaluate(name: &str, data: &str, min_rows: usize) -> f64 {
    let rows: Vec<Row> = data
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect();
    assert!(
        rows.len() >= min_rows,
        "{name} has only {} rows",
        rows.len()
    );
    let mut counts = [0usize; 3];
    for r in &rows {
        counts[idx(r.label)] += 1;
    }
    for (l, n) in Label::ALL.iter().zip(counts) {
        assert!(
            n * 4 >= rows.len(),
            "{name}: {l} has only {n} of {} rows: unbalanced",
            rows.len()
        );
    }

    let rules = keywords::Rules::new(&ClassifyConfig::default());
    let mut matrix = [[0usize; 3]; 3]; // [expected][got]
    let mut wrong = Vec::new();
    for r in &rows {
        let got = rules.classify(&r.text).label;
        matrix[idx(r.label)][idx(got)] += 1;
        if got != r.label {
            wrong.push(format!("  want {:<8} got {:<8} {:?}", r.label, got, r.text));
        }
    }
    let correct: usize = (0..3).map(|i| matrix[i][i]).sum();
    let accuracy = correct as f64 / rows.len() as f64;

    println!(
        "{name}: keyword rules {correct}/{} = {:.1} %",
        rows.len(),
        accuracy * 100.0
    );
    println!("confusion matrix (rows: expected, columns: got)");
    println!(
        "{:>10} {:>8} {:>8} {:>8}",
        "", "ROUTINE", "TASK", "INCIDENT"
    );
    for (i, l) in Label::ALL.iter().enumerate() {
        println!(
            "{:>10} {:>8} {:>8} {:>8}",
            l.as_str(),
            matrix[i][0],
            matrix[i][1],
            matrix[i][2]
        );
    }
    println!("misclassified:\n{}\n", wrong.join("\n"));
    accuracy
}

#[test]
fn keyword_rules_reach_85_percent_on_the_dev_set() {
    let acc = evaluate(
        "dev set",
        include_str!("../fixtures/classify-devset.jsonl"),
        150,
    );
    assert!(acc >= 0.85, "accuracy {:.1} % is below 85 %", acc * 100.0);
}

#[test]
fn keyword_rules_on_the_holdout_set() {
    let acc = evaluate(
        "hold-out set",
        include_str!("../fixtures/classify-holdout-2.jsonl"),
        60,
    );
    // A floor, not a target: a change that breaks generalisation shows here.
    // Measured once, with the rules final: 54/60 = 90.0 %; the floor sits a
    // few points under it.
    assert!(
        acc >= 0.85,
        "hold-out accuracy {:.1} % is below 85 %",
        acc * 100.0
    );
}
