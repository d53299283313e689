//! The real gpu-probe reports captured under real HAMi-core on an H200
//! (`lab-report/tests/data/h200`, see its README) in local mode: every check passes from the
//! reports' own numbers and the bundle verifies ALL CLAIMS PASS, with the overhead runs listed as
//! measurements; the bare-card report of the same machine fails.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{cli, pack};

fn folder(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab-report/tests/data/h200");
    for name in names {
        std::fs::copy(data.join(name), dir.path().join(name)).unwrap();
    }
    dir
}

#[test]
fn the_real_hami_core_reports_verify_all_pass_with_overhead_as_measurements() {
    let dir = folder(&[
        "h1-8000.json",
        "h1-1024.json",
        "h7-two.json",
        "h6-selftest.json",
        "p0-overhead-bare.json",
        "p1-overhead-hami.json",
    ]);
    let out = tempfile::tempdir().unwrap();
    let tgz = pack(dir.path(), out.path());
    let (code, stdout, stderr) = cli(&["verify", tgz.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("ALL CLAIMS PASS: 12 pass, 0 fail"),
        "{stdout}"
    );
    for id in [
        "h1-8000:cap.device0",
        "h7-two:view.device1",
        "h6-selftest:selftest",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(id) && l.contains(" pass ")),
            "{id}: {stdout}"
        );
    }
    // Measured, listed, never a pass.
    assert!(
        stdout.contains("measured p1-overhead-hami:overhead: a measurement, not a pass"),
        "{stdout}"
    );
    assert!(
        !stdout
            .lines()
            .any(|l| l.starts_with("p0-overhead-bare:overhead ")),
        "{stdout}"
    );
}

#[test]
fn the_real_bare_card_report_fails_view_cap_and_mechanism() {
    let dir = folder(&["h2-bare.json"]);
    let out = tempfile::tempdir().unwrap();
    let tgz = pack(dir.path(), out.path());
    let (code, stdout, _) = cli(&["verify", tgz.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    for id in ["view.device0", "cap.device0", "mechanism"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(id) && l.contains("FAIL")),
            "{id}: {stdout}"
        );
    }
}

#[test]
fn a_bare_report_whose_checks_were_flipped_to_passed_is_unsupported() {
    // What the removed synthesized fixture did: a bare-card report with every check set to
    // "passed". Its own numbers (the full card seen, 10000 MiB held) say otherwise.
    let dir = folder(&["h2-bare.json"]);
    let path = dir.path().join("h2-bare.json");
    let mut report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for c in report["checks"].as_array_mut().unwrap() {
        c["status"] = "passed".into();
    }
    report["verdict"]["outcome"] = "verified".into();
    std::fs::write(&path, serde_json::to_vec(&report).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let (code, _, stderr) = cli(&[
        "pack",
        dir.path().to_str().unwrap(),
        "-o",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    for id in ["view.device0", "cap.device0", "mechanism"] {
        assert!(
            stderr.lines().any(|l| l.starts_with(&format!(
                "warning: {id}: UNSUPPORTED: h2-bare.json says pass, but h2-bare.json"
            ))),
            "{id}: {stderr}"
        );
    }
}
