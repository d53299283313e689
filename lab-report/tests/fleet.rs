//! The fleet's card judgement on real gpu-probe reports (H200 under a real HAMi-core, and the
//! bare card: `tests/data/h200/README.md`): a card is verified only by a report that shows it
//! held to the very slice its pod asked for.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use lab_report::fleet::{cap_mib, judge_card};
use lab_report::probe::Report;

fn report(name: &str) -> Report {
    let path = format!("{}/tests/data/h200/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_card_held_to_its_slice_is_verified() {
    let r = report("h1-8000.json");
    let why = judge_card(&r, 8000).unwrap();
    assert!(why.contains("8000"), "{why}");
    assert!(
        cap_mib(&r).is_some_and(|c| c <= 8000 && c > 7000),
        "{:?}",
        cap_mib(&r)
    );
}

#[test]
fn a_report_for_another_slice_does_not_verify_this_one() {
    let err = judge_card(&report("h1-8000.json"), 1000).unwrap_err();
    assert!(err.contains("not 1000 MiB"), "{err}");
    let err = judge_card(&report("h1-1024.json"), 8000).unwrap_err();
    assert!(err.contains("not 8000 MiB"), "{err}");
}

#[test]
fn the_bare_card_fails() {
    let err = judge_card(&report("h2-bare.json"), 8000).unwrap_err();
    assert!(!err.is_empty());
}

#[test]
fn two_devices_are_not_one_card() {
    let err = judge_card(&report("h7-two.json"), 8000).unwrap_err();
    assert!(err.contains("device"), "{err}");
}

#[test]
fn a_report_verifies_only_the_card_it_was_taken_on() {
    use lab_report::fleet::judge_card_of;
    let r = report("h1-8000.json");
    let own = r.view.as_ref().unwrap().devices[0].uuid.clone().unwrap();
    assert!(judge_card_of(&r, &own, 8000).is_ok());
    let err = judge_card_of(&r, "GPU-00000000-0000-4a1e-9c2b-000000000001", 8000).unwrap_err();
    assert!(
        err.contains(&format!("is the report of card {own}")),
        "{err}"
    );
    // Right card, wrong slice: still the slice rule.
    assert!(judge_card_of(&r, &own, 1000).is_err());
}
