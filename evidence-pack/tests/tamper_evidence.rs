//! The tamper matrix for evidence: for each claim E1–E5, A1, B1 and B4, its evidence file missing, empty,
//! cut off, replaced by a file of another kind, or replaced by one that says otherwise. On the
//! `pack` side the inputs are tampered before packing: pack exits 1 and names the claim and the
//! file, the claim fails as UNSUPPORTED in the bundle, and `verify` exits 1 naming both again. On
//! the `verify` side a good bundle is rewritten the way someone covering their tracks would (the
//! claim set to pass, the raw file replaced, the reports re-rendered, SHA256SUMS recomputed):
//! verify exits 1 with `UNSUPPORTED <claim>` and the file; a deleted evidence file is damage
//! (exit 3) naming both.
//!
//! Inputs: the `cluster-run` fixture (real H200 reports under HAMi-core, constructed Kubernetes
//! objects) plus A1 with the real H200 audit report (`lab-report/tests/data/h200`), and two
//! bypass exercises: B1 refused at admission (lab-report's constructed `Status` of the policy's
//! refusal) and B4 held to its slice (the real H200 report of an 8000 MiB HAMi-core slice).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{cli, copy_tree, data, files, rewrite};
use evidence_pack::model::ClaimVerdict;

fn lab(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lab-report/tests/data")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The cluster-run fixture with A1 added (its real audit report shows three escaped paths).
fn inputs(dir: &Path) {
    copy_tree(&data("cluster-run"), dir);
    std::fs::write(
        dir.join("probe/hami-share-a-audit.json"),
        lab("h200/h4-audit.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("probe/hami-share-a-audit.stderr"),
        lab("h200/h4-audit.err"),
    )
    .unwrap();
    let path = dir.join("run.json");
    let mut run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    run["exercises"].as_array_mut().unwrap().push(serde_json::json!({
        "id": "A1", "claim": lab_report::run::AUDIT_CLAIM, "result": "pass", "reason": "claimed",
        "evidence": ["probe/hami-share-a-audit.json", "probe/hami-share-a-audit.stderr"]
    }));
    std::fs::create_dir_all(dir.join("admission")).unwrap();
    std::fs::write(
        dir.join("admission/hami-bypass-b1.json"),
        lab("k8s/status-policy-denied-b1.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("probe/hami-bypass-b4.json"),
        lab("h200/h1-8000.json"),
    )
    .unwrap();
    for (b, file) in [
        (
            &lab_report::run::BYPASSES[0],
            "admission/hami-bypass-b1.json",
        ),
        (&lab_report::run::BYPASSES[3], "probe/hami-bypass-b4.json"),
    ] {
        run["exercises"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "id": b.id, "claim": b.claim(), "result": "pass", "reason": "claimed",
                "evidence": [file]
            }));
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&run).unwrap()).unwrap();
}

#[derive(Debug, Clone, Copy)]
enum Tamper {
    Missing,
    Empty,
    Truncated,
    WrongKind,
    Contradicting,
}

const TAMPERS: [Tamper; 5] = [
    Tamper::Missing,
    Tamper::Empty,
    Tamper::Truncated,
    Tamper::WrongKind,
    Tamper::Contradicting,
];

/// A claim's evidence file to tamper, what another kind of file looks like for it, and what a
/// file that says otherwise is (all real or constructed data, never edited by hand).
struct Case {
    claim: &'static str,
    file: &'static str,
    wrong_kind: Vec<u8>,
    contradicting: Vec<(&'static str, Vec<u8>)>,
    /// Words the reason must hold for a contradicting file.
    says: &'static str,
}

fn cases() -> Vec<Case> {
    let pod = lab("k8s/pod-hami-share-a-running-h200.json");
    let report = lab("h200/h1-8000.json");
    vec![
        Case {
            claim: "E1",
            file: "pods/hami-share-b.json",
            wrong_kind: report.clone(),
            contradicting: vec![(
                "pods/hami-share-b.json",
                lab("k8s/pod-unmutated-default-scheduler.json"),
            )],
            says: "default-scheduler",
        },
        Case {
            claim: "E2",
            file: "probe/hami-share-a.json",
            wrong_kind: pod.clone(),
            contradicting: vec![("probe/hami-share-a.json", lab("h200/h2-bare.json"))],
            says: "more than the 8000 MiB slice",
        },
        Case {
            claim: "E3",
            file: "probe/hami-share-b.json",
            wrong_kind: lab("h200/p1-overhead-hami.json"),
            contradicting: vec![("probe/hami-share-b.json", lab("h200/h2-bare.json"))],
            says: "more than the 8000 MiB slice",
        },
        Case {
            claim: "E4",
            file: "events/hami-oversubscribe.json",
            wrong_kind: pod.clone(),
            contradicting: vec![(
                "events/hami-oversubscribe.json",
                lab("k8s/events-unmutated.json"),
            )],
            says: "no FilteringFailed",
        },
        Case {
            claim: "E5",
            file: "probe/hami-share-b.json",
            wrong_kind: lab("h200/h4-audit.json"),
            // The pods were given another GPU (the H100 copies) than the one both probes saw.
            contradicting: vec![
                (
                    "pods/hami-share-a.json",
                    lab("k8s/pod-hami-share-a-running.json"),
                ),
                (
                    "pods/hami-share-b.json",
                    lab("k8s/pod-hami-share-b-running.json"),
                ),
            ],
            says: "not the GPU the pods were given",
        },
        Case {
            claim: "B1",
            file: "admission/hami-bypass-b1.json",
            wrong_kind: lab("k8s/events-unmutated.json"),
            // A Status, but of a missing namespace: nothing was refused at admission.
            contradicting: vec![(
                "admission/hami-bypass-b1.json",
                lab("k8s/status-namespace-not-found.json"),
            )],
            says: "not a denial by an admission policy or webhook",
        },
        Case {
            claim: "B4",
            file: "probe/hami-bypass-b4.json",
            wrong_kind: lab("k8s/events-unmutated.json"),
            // The bare card's report: the pod saw the whole card.
            contradicting: vec![("probe/hami-bypass-b4.json", lab("h200/h2-bare.json"))],
            says: "ESCAPED",
        },
        Case {
            claim: "A1",
            file: "probe/hami-share-a-audit.json",
            wrong_kind: report,
            // The real audit itself: three paths escaped the slice.
            contradicting: vec![("probe/hami-share-a-audit.json", lab("h200/h4-audit.json"))],
            says: "3 path(s) holding more than the 8000 MiB slice",
        },
    ]
}

/// Files to write over the inputs: path and bytes (`None`: delete it).
type Writes = Vec<(&'static str, Option<Vec<u8>>)>;

/// The files to write for one tamper of one case, from the good bytes, and the words the reason
/// must hold.
fn tampered(case: &Case, tamper: Tamper, good: &[u8]) -> (Writes, &'static str) {
    let one = |b: Option<Vec<u8>>| vec![(case.file, b)];
    match tamper {
        Tamper::Missing => (one(None), "is missing"),
        Tamper::Empty => (one(Some(Vec::new())), "is empty"),
        Tamper::Truncated => (
            one(Some(good[..good.len() / 2].to_vec())),
            "is not valid JSON",
        ),
        Tamper::WrongKind => (one(Some(case.wrong_kind.clone())), ", not "),
        Tamper::Contradicting => (
            case.contradicting
                .iter()
                .map(|(f, b)| (*f, Some(b.clone())))
                .collect(),
            case.says,
        ),
    }
}

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

#[test]
fn the_untampered_run_passes_e1_to_e5_b1_and_b4_and_fails_a1_on_its_real_audit() {
    let dir = tempfile::tempdir().unwrap();
    inputs(dir.path());
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = pack_cli(dir.path(), out.path());
    assert_eq!(
        code, 1,
        "A1 recorded pass, the real audit says otherwise: {stdout}{stderr}"
    );
    for id in ["E1", "E2", "E3", "E4", "E5", "B1", "B4"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{id}  pass"))),
            "{stdout}"
        );
    }
    assert!(stdout.contains("A1  FAIL"), "{stdout}");
}

#[test]
fn tampered_inputs_fail_pack_and_verify_naming_claim_and_file() {
    for case in cases() {
        for tamper in TAMPERS {
            let dir = tempfile::tempdir().unwrap();
            inputs(dir.path());
            let good = std::fs::read(dir.path().join(case.file)).unwrap();
            let (writes, says) = tampered(&case, tamper, &good);
            for (f, bytes) in &writes {
                match bytes {
                    Some(b) => std::fs::write(dir.path().join(f), b).unwrap(),
                    None => std::fs::remove_file(dir.path().join(f)).unwrap(),
                }
            }
            let what = format!("{} {tamper:?}", case.claim);
            let out = tempfile::tempdir().unwrap();
            let (code, stdout, stderr) = pack_cli(dir.path(), out.path());
            assert_eq!(code, 1, "{what}: {stdout}{stderr}");
            let line = stderr
                .lines()
                .find(|l| l.starts_with(&format!("warning: {}: UNSUPPORTED", case.claim)))
                .unwrap_or_else(|| panic!("{what}: no UNSUPPORTED warning: {stderr}"));
            let named = writes.iter().any(|(f, _)| line.contains(f));
            assert!(named && line.contains(says), "{what}: {line}");
            // The bundle holds the claim as failed, with the reason; verify says so and exits 1.
            let (code, stdout, _) = cli(&["verify", bundle_in(out.path()).to_str().unwrap()]);
            assert_eq!(code, 1, "{what}: {stdout}");
            let failed = stdout
                .lines()
                .find(|l| {
                    l.trim_start()
                        .starts_with(&format!("{} failed: UNSUPPORTED", case.claim))
                })
                .unwrap_or_else(|| panic!("{what}: {stdout}"));
            assert!(
                writes.iter().any(|(f, _)| failed.contains(f)),
                "{what}: {failed}"
            );
        }
    }
}

#[test]
fn a_rewritten_bundle_whose_evidence_does_not_show_a_pass_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    inputs(dir.path());
    let out = tempfile::tempdir().unwrap();
    pack_cli(dir.path(), out.path());
    let good = bundle_in(out.path());
    for case in cases() {
        for tamper in TAMPERS {
            let raw = format!("raw/{}", case.file);
            let original = files(&good)[&raw].clone();
            let (writes, says) = tampered(&case, tamper, &original);
            let what = format!("{} {tamper:?}", case.claim);
            let t = tempfile::tempdir().unwrap();
            let to = t.path().join(good.file_name().unwrap());
            rewrite(&good, &to, |summary, files| {
                for c in &mut summary.claims {
                    if c.id == case.claim {
                        c.verdict = ClaimVerdict::Pass;
                        c.reason = "claimed".into();
                    }
                }
                for (f, bytes) in &writes {
                    let raw = format!("raw/{f}");
                    match bytes {
                        Some(b) => {
                            files.insert(raw, b.clone());
                        }
                        None => {
                            files.remove(&raw);
                            summary.raw_files.retain(|r| *r != raw);
                        }
                    }
                }
            });
            let (code, stdout, stderr) = cli(&["verify", to.to_str().unwrap()]);
            if matches!(tamper, Tamper::Missing) {
                // The summary still names it as the claim's evidence: damage, exit 3.
                assert_eq!(code, 3, "{what}: {stdout}{stderr}");
                assert!(
                    stderr.contains(&format!(
                        "{raw} is evidence of claim {} but missing",
                        case.claim
                    )),
                    "{what}: {stderr}"
                );
                continue;
            }
            assert_eq!(code, 1, "{what}: {stdout}{stderr}");
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&format!("UNSUPPORTED {}:", case.claim)))
                .unwrap_or_else(|| panic!("{what}: {stdout}"));
            assert!(
                writes.iter().any(|(f, _)| line.contains(f)) && line.contains(says),
                "{what}: {line}"
            );
        }
    }
}

#[test]
fn a_pass_with_no_evidence_is_impossible() {
    let dir = tempfile::tempdir().unwrap();
    inputs(dir.path());
    let out = tempfile::tempdir().unwrap();
    pack_cli(dir.path(), out.path());
    let good = bundle_in(out.path());
    let t = tempfile::tempdir().unwrap();
    let to = t.path().join(good.file_name().unwrap());
    rewrite(&good, &to, |summary, _| {
        for c in &mut summary.claims {
            c.verdict = ClaimVerdict::Pass;
            c.evidence.clear();
        }
        summary.claims.push(evidence_pack::model::Claim {
            id: "B1".into(),
            claim: "a later exercise".into(),
            verdict: ClaimVerdict::Pass,
            reason: "claimed".into(),
            numbers: Default::default(),
            evidence: Vec::new(),
        });
    });
    let (code, stdout, _) = cli(&["verify", to.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    for id in ["E1", "E2", "E3", "E4", "E5", "A1", "B1"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("UNSUPPORTED {id}: no evidence file"))),
            "{id}: {stdout}"
        );
    }
}
