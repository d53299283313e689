//! Fleet bundles: a `cluster-ctl fleet --out DIR` folder (`fleet.json` + `probe/*.json`) packs,
//! each card is judged again from its own probe report, the reports show the per-card table and
//! the grid, junit.xml has one case per card (checked by the real `xmllint`), `verify` verifies
//! it — and every way of claiming a card verified without a report that shows it fails, in `pack`
//! and in a rewritten bundle.
//!
//! The folders are built from real gpu-probe reports (`lab-report/tests/data/h200/README.md`):
//! the H200 under HAMi-core at 8000 MiB and at 1024 MiB (verified), the same card bare (failed),
//! and the machine's second H200 (its UUID from the two-device report) left not checked. Each
//! card's outcome in `fleet.json` is what `lab_report::fleet::judge_card` says of its report, as
//! `cluster-ctl fleet` decides it — never written by hand. Both verified cards are the same
//! physical card, captured under two limits, placed on two nodes.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fleet::{edit_fleet, mixed_fleet, node, probed, report, verified_fleet, write_fleet};
use common::{cli, files, rewrite};
use evidence_pack::model::{ClaimVerdict, Mode, Outcome, Summary};
use lab_report::fleet::{CardOutcome, FleetReport};
use lab_runner::{Cmd, Runner as _, SystemRunner, tier};

fn pack_cli(dir: &Path, out: &Path) -> (i32, String, String) {
    cli(&["pack", dir.to_str().unwrap(), "-o", out.to_str().unwrap()])
}

fn bundle_in(out: &Path) -> PathBuf {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .unwrap()
}

fn summary_of(tgz: &Path) -> Summary {
    serde_json::from_slice(&files(tgz)["summary.json"]).unwrap()
}

#[test]
fn a_verified_fleet_packs_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = verified_fleet(dir.path());
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = pack_cli(dir.path(), out.path());
    assert_eq!(code, 0, "{stdout}{stderr}");
    let tgz = bundle_in(out.path());
    let (code, stdout, stderr) = cli(&["verify", tgz.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let s = summary_of(&tgz);
    assert_eq!(s.mode, Mode::Fleet);
    assert_eq!(s.outcome, Outcome::AllPass);
    let ids: Vec<&str> = s.claims.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["h200-a/gpu0", "h200-b/gpu0"]);
    // Each pass rests on the judge's reading of that card's report.
    for (c, slice) in s.claims.iter().zip([8000, 1024]) {
        assert!(c.reason.contains(&format!("{slice} MiB")), "{c:?}");
        assert!(
            c.evidence.iter().any(|e| e.starts_with("raw/probe/")),
            "{c:?}"
        );
    }
    // The bundle's time is when the run ended (from fleet.json, not the clock).
    let ended = jiff::Timestamp::from_second(1_782_950_000 + 64).unwrap();
    assert_eq!(s.timestamp, ended.to_string());
    let md = String::from_utf8(files(&tgz)["report.md"].clone()).unwrap();
    let card = &fleet.nodes[0].cards[0];
    let row = format!(
        "| h200-a | ready | v2.6.1 | 0 | NVIDIA H200 | {} | 8000 MiB | {} MiB | VERIFIED |",
        card.uuid,
        card.cap_mib.unwrap()
    );
    assert!(md.contains(&row), "{row}\n{md}");
    assert_eq!(s.environment.kubernetes.as_deref(), Some("v1.33.5+k3s1"));
}

#[test]
fn each_card_of_a_mixed_fleet_is_judged_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    mixed_fleet(dir.path());
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = pack_cli(dir.path(), out.path());
    // Written, and no claim is UNSUPPORTED: the failed card is recorded as failed.
    assert_eq!(code, 0, "{stdout}{stderr}");
    let tgz = bundle_in(out.path());
    let (code, stdout, _) = cli(&["verify", tgz.to_str().unwrap()]);
    assert_eq!(code, 1, "a failed card fails the fleet: {stdout}");
    let s = summary_of(&tgz);
    let verdicts: Vec<(&str, ClaimVerdict)> = s
        .claims
        .iter()
        .map(|c| (c.id.as_str(), c.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("h200-hami/gpu0", ClaimVerdict::Pass),
            ("h200-hami/gpu1", ClaimVerdict::NotRun),
            ("h200-bare/gpu0", ClaimVerdict::Fail),
        ]
    );
    assert!(
        s.claims[1].reason.contains("card busy"),
        "{:?}",
        s.claims[1]
    );
    assert_eq!(s.fleet.len(), 3);
    let html = String::from_utf8(files(&tgz)["report.html"].clone()).unwrap();
    for class in ["cell pass", "cell fail", "cell not-run"] {
        assert_eq!(html.matches(class).count(), 1, "{class}");
    }

    let junit = String::from_utf8(files(&tgz)["junit.xml"].clone()).unwrap();
    assert!(
        junit.contains("tests=\"3\" failures=\"1\" skipped=\"1\""),
        "{junit}"
    );
    let runner = SystemRunner::new(false);
    if !runner.exists("xmllint") {
        tier::skipped(
            "xmllint",
            "xmllint (Debian package libxml2-utils) not on PATH",
        );
        return;
    }
    let path = out.path().join("junit.xml");
    std::fs::write(&path, &junit).unwrap();
    let xpath = |q: &str| {
        runner
            .run_checked(
                &Cmd::new("xmllint")
                    .args(["--xpath", q, path.to_str().unwrap()])
                    .timeout(Duration::from_secs(60)),
            )
            .unwrap()
            .stdout
            .trim()
            .to_owned()
    };
    assert_eq!(xpath("count(/testsuites/testsuite/testcase)"), "3");
    assert_eq!(
        xpath("string(//testcase[starts-with(@name,'h200-bare/gpu0')]/failure/@message)"),
        s.claims[2].reason
    );
    assert!(
        xpath("string(//testcase[starts-with(@name,'h200-hami/gpu1')]/skipped/@message)")
            .starts_with("not checked: card busy"),
    );
    assert_eq!(
        xpath(
            "count(//testcase[starts-with(@name,'h200-hami/gpu0')]/*[self::failure or self::skipped])"
        ),
        "0"
    );
}

#[test]
fn a_card_claimed_verified_without_a_report_that_shows_it_is_unsupported() {
    let second_uuid = report("h7-two.json").view.unwrap().devices[1]
        .uuid
        .clone()
        .unwrap();
    type Tamper = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, &str, &str, Tamper)> = vec![
        (
            "the bare card's failure rewritten as verified",
            "h200-bare/gpu0",
            "probe/h2-bare.json",
            Box::new(|d| {
                edit_fleet(d, |f| f.nodes[1].cards[0].outcome = CardOutcome::Verified);
            }),
        ),
        (
            "the report deleted",
            "h200-hami/gpu0",
            "probe/h1-8000.json is missing",
            Box::new(|d| std::fs::remove_file(d.join("probe/h1-8000.json")).unwrap()),
        ),
        (
            "the report emptied",
            "h200-hami/gpu0",
            "probe/h1-8000.json is empty",
            Box::new(|d| std::fs::write(d.join("probe/h1-8000.json"), "").unwrap()),
        ),
        (
            "another card's report named",
            "h200-hami/gpu1",
            "probe/h1-8000.json: is the report of card",
            Box::new(|d| {
                edit_fleet(d, |f| {
                    let c = &mut f.nodes[0].cards[1];
                    c.outcome = CardOutcome::Verified;
                    c.not_checked = None;
                    c.probe_report = Some("probe/h1-8000.json".into());
                });
            }),
        ),
        (
            "the slice changed",
            "h200-hami/gpu0",
            "not 1000 MiB",
            Box::new(|d| edit_fleet(d, |f| f.nodes[0].cards[0].slice_mib = 1000)),
        ),
        (
            "a not-checked card rewritten as verified",
            "h200-hami/gpu1",
            "names no probe report",
            Box::new(|d| {
                edit_fleet(d, |f| f.nodes[0].cards[1].outcome = CardOutcome::Verified);
            }),
        ),
    ];
    assert_ne!(
        second_uuid,
        report("h1-8000.json").view.unwrap().devices[0]
            .uuid
            .clone()
            .unwrap()
    );
    for (what, claim, says, tamper) in cases {
        let dir = tempfile::tempdir().unwrap();
        mixed_fleet(dir.path());
        tamper(dir.path());
        let out = tempfile::tempdir().unwrap();
        let (code, stdout, stderr) = pack_cli(dir.path(), out.path());
        assert_eq!(code, 1, "{what}: {stdout}{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("warning: {claim}: UNSUPPORTED")))
            .unwrap_or_else(|| panic!("{what}: no UNSUPPORTED warning: {stderr}"));
        assert!(line.contains(says), "{what}: {line}");
        let (code, stdout, _) = cli(&["verify", bundle_in(out.path()).to_str().unwrap()]);
        assert_eq!(code, 1, "{what}: {stdout}");
        assert!(
            stdout.lines().any(|l| l
                .trim_start()
                .starts_with(&format!("{claim} failed: UNSUPPORTED"))),
            "{what}: {stdout}"
        );
    }
}

fn set_fleet_json(files: &mut BTreeMap<String, Vec<u8>>, edit: impl FnOnce(&mut FleetReport)) {
    let mut fleet: FleetReport = serde_json::from_slice(&files["raw/fleet.json"]).unwrap();
    edit(&mut fleet);
    files.insert(
        "raw/fleet.json".into(),
        serde_json::to_vec_pretty(&fleet).unwrap(),
    );
}

#[test]
fn a_rewritten_fleet_bundle_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    mixed_fleet(dir.path());
    let out = tempfile::tempdir().unwrap();
    pack_cli(dir.path(), out.path());
    let good = bundle_in(out.path());
    let pass = |s: &mut Summary, id: &str| {
        for c in &mut s.claims {
            if c.id == id {
                c.verdict = ClaimVerdict::Pass;
                c.reason = "claimed".into();
            }
        }
    };
    type Edit = Box<dyn Fn(&mut Summary, &mut BTreeMap<String, Vec<u8>>)>;
    let cases: Vec<(&str, &str, &str, Edit)> = vec![
        (
            "the bare card set to pass in summary.json and fleet.json",
            "h200-bare/gpu0",
            "raw/probe/h2-bare.json",
            Box::new(move |s, f| {
                pass(s, "h200-bare/gpu0");
                set_fleet_json(f, |fl| fl.nodes[1].cards[0].outcome = CardOutcome::Verified);
            }),
        ),
        (
            "the bare card set to pass in summary.json only",
            "h200-bare/gpu0",
            "does not say this card was verified",
            Box::new(move |s, _| pass(s, "h200-bare/gpu0")),
        ),
        (
            "the verified card's report replaced by the bare one",
            "h200-hami/gpu0",
            "raw/probe/h1-8000.json",
            Box::new(|_, f| {
                let bare = f["raw/probe/h2-bare.json"].clone();
                f.insert("raw/probe/h1-8000.json".into(), bare);
            }),
        ),
        (
            "the fleet table's slice changed",
            "fleet table",
            "raw/fleet.json",
            Box::new(|s, _| s.fleet[0].slice_mib = Some(1000)),
        ),
    ];
    for (what, claim, says, edit) in cases {
        let t = tempfile::tempdir().unwrap();
        let to = t.path().join(good.file_name().unwrap());
        rewrite(&good, &to, |s, f| edit(s, f));
        let (code, stdout, stderr) = cli(&["verify", to.to_str().unwrap()]);
        assert_eq!(code, 1, "{what}: {stdout}{stderr}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("UNSUPPORTED {claim}:")))
            .unwrap_or_else(|| panic!("{what}: {stdout}"));
        assert!(line.contains(says), "{what}: {line}");
    }
    // The untouched bundle re-judges clean (only the bare card fails, as recorded).
    let (code, stdout, _) = cli(&["verify", good.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(!stdout.contains("UNSUPPORTED"), "{stdout}");
}

#[test]
fn a_node_whose_registration_is_unreadable_is_a_card_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let a = probed(dir.path(), "h1-8000.json", 0, 8000);
    let mut broken = node("h200-c", vec![]);
    broken.register_error =
        Some("hami.io/node-nvidia-register: not JSON and not the legacy format".into());
    write_fleet(dir.path(), vec![node("h200-a", vec![a]), broken]);
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = pack_cli(dir.path(), out.path());
    assert_eq!(code, 0, "{stdout}{stderr}");
    let s = summary_of(&bundle_in(out.path()));
    assert_eq!(s.outcome, Outcome::Incomplete);
    let c = s
        .claims
        .iter()
        .find(|c| c.id == "h200-c/registration")
        .unwrap();
    assert_eq!(c.verdict, ClaimVerdict::NotRun);
    assert!(c.reason.contains("registration unreadable"), "{c:?}");
}

#[test]
fn a_bad_fleet_json_is_refused_with_a_fix() {
    type Spoil = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "not JSON",
            Box::new(|d| std::fs::write(d.join("fleet.json"), "{cut off").unwrap()),
            "fleet.json does not parse",
        ),
        (
            "another schema",
            Box::new(|d| edit_fleet(d, |f| f.schema = "something/else".into())),
            "fleet.json has schema `something/else`",
        ),
        (
            "another version",
            Box::new(|d| edit_fleet(d, |f| f.schema_version = 2)),
            "fleet.json has schema_version 2",
        ),
        (
            "beside a run.json",
            Box::new(|d| {
                std::fs::write(
                    d.join("run.json"),
                    r#"{"schema":"hami-isolation-lab/cluster-run","schema_version":1}"#,
                )
                .unwrap()
            }),
            "holds both run.json and fleet.json",
        ),
    ];
    for (what, spoil, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        mixed_fleet(dir.path());
        spoil(dir.path());
        let (code, _, stderr) = cli(&["pack", dir.path().to_str().unwrap(), "--dry-run"]);
        assert_eq!(code, 2, "{what}: {stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("fix:"),
            "{what}: {stderr}"
        );
    }
}

#[test]
fn a_fleet_bundle_is_redacted_and_signed_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    verified_fleet(dir.path());
    // A credential in the server URL, and a token in a probe pod's log beside the reports.
    edit_fleet(dir.path(), |f| {
        f.server = "https://admin:Sup3rSecretPassw0rd@10.0.0.1:6443".into();
    });
    std::fs::write(
        dir.path().join("probe/h1-8000.stderr"),
        "token: eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.fleet-token-value\n",
    )
    .unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (code, _, stderr) = cli(&[
        "keygen",
        "-o",
        keys.path().to_str().unwrap(),
        "--unencrypted",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let out = tempfile::tempdir().unwrap();
    let key = keys.path().join("evidence.key");
    let (code, stdout, stderr) = cli(&[
        "pack",
        dir.path().to_str().unwrap(),
        "-o",
        out.path().to_str().unwrap(),
        "--sign",
        key.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let tgz = bundle_in(out.path());
    let public = keys.path().join("evidence.pub");
    let (code, stdout, stderr) = cli(&[
        "verify",
        tgz.to_str().unwrap(),
        "--trust",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let all: Vec<u8> = files(&tgz).into_values().flatten().collect();
    let text = String::from_utf8_lossy(&all);
    for secret in ["Sup3rSecretPassw0rd", "fleet-token-value"] {
        assert!(!text.contains(secret), "{secret} left in the bundle");
    }
    let s = summary_of(&tgz);
    assert!(
        s.redactions.iter().any(|r| r.file == "fleet.json"),
        "{:?}",
        s.redactions
    );
    assert_eq!(s.outcome, Outcome::AllPass);
}
