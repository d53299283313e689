//! The tier log end to end, in a process of its own (it sets `LAB_TEST_TIER_LOG` for itself):
//! a program run through `SystemRunner` is recorded for this test, a child process inherits the
//! test's origin, and `ran` / `skipped` records parse back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lab_runner::tier::{self, Event};
use lab_runner::{Cmd, Runner, SystemRunner};

#[test]
fn program_runs_and_reports_are_recorded_for_this_test() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tiers.log");
    // SAFETY: this binary has this one test, so no other thread reads the environment meanwhile.
    unsafe { std::env::set_var(tier::LOG_ENV, &log) };
    let out = SystemRunner::new(false)
        .run(&Cmd::new("sh").args(["-c", "printf %s \"$LAB_TEST_TIER_ORIGIN\""]))
        .unwrap();
    tier::ran("mock API");
    tier::skipped("chromium", "not installed here");
    let (binary, test) = tier::origin();
    assert_eq!(test, "program_runs_and_reports_are_recorded_for_this_test");
    assert!(binary.starts_with("tier_log-"), "{binary}");
    assert_eq!(
        out.stdout,
        format!("{binary}\t{test}"),
        "child inherits the origin"
    );

    let records = tier::parse(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[0].event, Event::Exec);
    assert!(records[0].name.ends_with("/sh"), "{:?}", records[0]);
    assert_eq!(records[0].detail, "exit=0 args=-c");
    assert_eq!(
        (records[1].event, records[1].name.as_str()),
        (Event::Ran, "mock API")
    );
    assert_eq!(records[2].event, Event::Skipped);
    assert_eq!(records[2].detail, "not installed here");
    assert!(records.iter().all(|r| r.binary == binary && r.test == test));
}
