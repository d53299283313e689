//! The judgement rules on recorded evidence: the real gpu-probe reports captured under real
//! HAMi-core on an H200 (`data/h200`, see its README) and the constructed Kubernetes objects of
//! `data/k8s`. Every rule is shown both ways: the real HAMi-core reports pass, the real bare-card
//! report fails, and each kind of bad evidence is UNSUPPORTED with the file named.

#![allow(clippy::unwrap_used)]

use lab_report::check::{CheckId, LocalClaimId};
use lab_report::judge::{
    EvidenceFile, Judgement, RunContext, Support, judge_check, judge_exercise, judge_local_claim,
};
use lab_report::probe::Report;
use lab_report::run::ExerciseId;

fn bytes(rel: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn report(name: &str) -> Report {
    serde_json::from_slice(&bytes(&format!("h200/{name}"))).unwrap()
}

const SLICE_8000: RunContext = RunContext {
    slice_mib: Some(8000),
    max_overhead_pct: None,
};

/// Judges `id` over `(path in the run folder, bytes)`.
fn judge(id: ExerciseId, ctx: &RunContext, files: &[(&str, Option<Vec<u8>>)]) -> Judgement {
    let ev: Vec<EvidenceFile<'_>> = files
        .iter()
        .map(|(p, b)| EvidenceFile {
            path: p,
            bytes: b.as_deref(),
        })
        .collect();
    judge_exercise(&id, ctx, &ev)
}

fn supported(j: &Judgement) {
    assert_eq!(j.support, Support::Supported, "{}", j.reason);
}

fn unsupported(j: &Judgement, file: Option<&str>, words: &str) {
    assert_eq!(j.support, Support::Unsupported, "{}", j.reason);
    assert_eq!(j.file.as_deref(), file, "{}", j.reason);
    assert!(j.reason.contains(words), "{:?} lacks {words:?}", j.reason);
}

#[test]
fn real_hami_core_reports_pass_every_check_from_their_numbers() {
    for name in ["h1-8000.json", "h1-1024.json", "h7-two.json"] {
        let r = report(name);
        for c in &r.checks {
            let j = judge_check(name, &r, &CheckId::parse(&c.id));
            supported(&j);
        }
    }
    let two = report("h7-two.json");
    let j = judge_check("h7-two.json", &two, &CheckId::cap(1));
    assert!(j.reason.contains("Device 1 OOM"), "{}", j.reason);
    let j = judge_check(
        "h6-selftest.json",
        &report("h6-selftest.json"),
        &CheckId::Selftest,
    );
    supported(&j);
}

#[test]
fn the_real_bare_card_fails_view_cap_and_mechanism() {
    let r = report("h2-bare.json");
    let f = Some("h2-bare.json");
    unsupported(
        &judge_check("h2-bare.json", &r, &CheckId::view(0)),
        f,
        "more than the 8000 MiB slice",
    );
    unsupported(
        &judge_check("h2-bare.json", &r, &CheckId::cap(0)),
        f,
        "more than the 8000 MiB slice",
    );
    unsupported(
        &judge_check("h2-bare.json", &r, &CheckId::Mechanism),
        f,
        "names no library",
    );
}

#[test]
fn audit_rows_are_judged_from_their_bytes() {
    let r = report("h4-audit.json");
    let judged: Vec<(String, Support)> = r
        .checks
        .iter()
        .map(|c| {
            let id = CheckId::parse(&c.id);
            (c.id.clone(), judge_check("h4-audit.json", &r, &id).support)
        })
        .collect();
    let passing: Vec<&str> = judged
        .iter()
        .filter(|(_, s)| *s == Support::Supported)
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(
        passing,
        [
            "audit.cuMemAlloc_v2",
            "audit.cuMemAllocPitch_v2",
            "audit.cuMemAllocAsync",
            "audit.cuMemCreate",
            "audit.second-process-of-the-same-container"
        ]
    );
    // The same rows as A1: three escaped paths fail the exercise, with their names.
    let j = judge(
        ExerciseId::A1,
        &SLICE_8000,
        &[(
            "probe/hami-share-a-audit.json",
            Some(bytes("h200/h4-audit.json")),
        )],
    );
    unsupported(&j, Some("probe/hami-share-a-audit.json"), "3 path(s)");
    assert_eq!(j.numbers["escaped"].as_array().unwrap().len(), 3);
    assert_eq!(j.numbers["max_past_slice_mib"], 2000.0);
}

#[test]
fn overhead_and_compute_are_measurements_never_passes() {
    for name in ["p0-overhead-bare.json", "p1-overhead-hami.json"] {
        let j = judge_check(name, &report(name), &CheckId::Overhead);
        assert_eq!(j.support, Support::Measured, "{}", j.reason);
    }
    let j = judge_check("h1-8000.json", &report("h1-8000.json"), &CheckId::Compute);
    assert_eq!(
        j.support,
        Support::Unsupported,
        "no compute section: {}",
        j.reason
    );
    let j = judge_check("h1-8000.json", &report("h1-8000.json"), &CheckId::Cuda);
    assert_eq!(j.support, Support::Unsupported);
}

#[test]
fn e2_from_the_real_enforced_report_and_not_from_the_bare_one() {
    let ok = judge(
        ExerciseId::E2,
        &SLICE_8000,
        &[
            ("probe/hami-share-a.json", Some(bytes("h200/h1-8000.json"))),
            ("probe/hami-share-a.stderr", Some(bytes("h200/h1-8000.err"))),
        ],
    );
    supported(&ok);
    assert!(
        ok.reason.contains("Device 0 OOM 9133096960 / 8388608000"),
        "{}",
        ok.reason
    );
    let bare = judge(
        ExerciseId::E3,
        &SLICE_8000,
        &[("probe/hami-share-b.json", Some(bytes("h200/h2-bare.json")))],
    );
    unsupported(
        &bare,
        Some("probe/hami-share-b.json"),
        "more than the 8000 MiB slice",
    );
    // A report probed against another slice than the run's does not show the run's slice.
    let other = judge(
        ExerciseId::E2,
        &RunContext {
            slice_mib: Some(1024),
            max_overhead_pct: None,
        },
        &[("probe/hami-share-a.json", Some(bytes("h200/h1-8000.json")))],
    );
    unsupported(
        &other,
        Some("probe/hami-share-a.json"),
        "not the run's 1024 MiB slice",
    );
    // The second device of the two-device run has a 20000 MiB slice: not the run's.
    let two = judge(
        ExerciseId::E2,
        &SLICE_8000,
        &[("probe/hami-share-a.json", Some(bytes("h200/h7-two.json")))],
    );
    unsupported(&two, Some("probe/hami-share-a.json"), "device 1");
}

fn pods(h200: bool) -> Vec<(&'static str, Option<Vec<u8>>)> {
    let suffix = if h200 { "-h200" } else { "" };
    vec![
        (
            "pods/hami-share-a.json",
            Some(bytes(&format!("k8s/pod-hami-share-a-running{suffix}.json"))),
        ),
        (
            "pods/hami-share-b.json",
            Some(bytes(&format!("k8s/pod-hami-share-b-running{suffix}.json"))),
        ),
    ]
}

#[test]
fn e1_from_the_two_pod_objects() {
    let j = judge(ExerciseId::E1, &SLICE_8000, &pods(false));
    supported(&j);
    assert!(j.reason.contains("GPU-4f7efa07"), "{}", j.reason);
    let mut missed = pods(false);
    missed[1].1 = Some(bytes("k8s/pod-unmutated-default-scheduler.json"));
    unsupported(
        &judge(ExerciseId::E1, &SLICE_8000, &missed),
        None,
        "default-scheduler",
    );
    // A and B on different GPUs (the H100 and the H200 copies).
    let mut apart = pods(false);
    apart[1] = pods(true)[1].clone();
    unsupported(
        &judge(ExerciseId::E1, &SLICE_8000, &apart),
        None,
        "different GPUs",
    );
}

#[test]
fn e4_from_the_pending_pod_and_its_event() {
    let files = |pod: &str, events: &str| {
        vec![
            ("pods/hami-oversubscribe.json", Some(bytes(pod))),
            ("events/hami-oversubscribe.json", Some(bytes(events))),
        ]
    };
    let ok = judge(
        ExerciseId::E4,
        &SLICE_8000,
        &files(
            "k8s/pod-hami-oversubscribe-pending.json",
            "k8s/events-oversubscribe.json",
        ),
    );
    supported(&ok);
    assert!(
        ok.reason.contains("CardInsufficientMemory"),
        "{}",
        ok.reason
    );
    // The refusal is about another pod: nothing shows this one was refused.
    unsupported(
        &judge(
            ExerciseId::E4,
            &SLICE_8000,
            &files(
                "k8s/pod-hami-oversubscribe-pending.json",
                "k8s/events-unmutated.json",
            ),
        ),
        Some("events/hami-oversubscribe.json"),
        "no FilteringFailed",
    );
    // A Running pod was scheduled beside the slices.
    let mut running: serde_json::Value =
        serde_json::from_slice(&bytes("k8s/pod-hami-oversubscribe-pending.json")).unwrap();
    running["status"]["phase"] = "Running".into();
    let j = judge(
        ExerciseId::E4,
        &SLICE_8000,
        &[
            (
                "pods/hami-oversubscribe.json",
                Some(serde_json::to_vec(&running).unwrap()),
            ),
            (
                "events/hami-oversubscribe.json",
                Some(bytes("k8s/events-oversubscribe.json")),
            ),
        ],
    );
    unsupported(&j, Some("pods/hami-oversubscribe.json"), "not Pending");
}

fn e5_files(h200_pods: bool, a: &str, b: &str) -> Vec<(&'static str, Option<Vec<u8>>)> {
    let mut files = pods(h200_pods);
    files.push(("probe/hami-share-a.json", Some(bytes(&format!("h200/{a}")))));
    files.push(("probe/hami-share-b.json", Some(bytes(&format!("h200/{b}")))));
    files
}

#[test]
fn e5_from_the_mechanism_sections_the_pods_and_the_numbers() {
    let ok = judge(
        ExerciseId::E5,
        &SLICE_8000,
        &e5_files(true, "h1-8000.json", "h1-8000.json"),
    );
    supported(&ok);
    assert!(
        ok.reason.contains("/usr/local/vgpu/libvgpu.so"),
        "{}",
        ok.reason
    );
    unsupported(
        &judge(
            ExerciseId::E5,
            &SLICE_8000,
            &e5_files(true, "h1-8000.json", "h2-bare.json"),
        ),
        Some("probe/hami-share-b.json"),
        "more than the 8000 MiB slice",
    );
    // The pods were given another GPU than the one probed.
    unsupported(
        &judge(
            ExerciseId::E5,
            &SLICE_8000,
            &e5_files(false, "h1-8000.json", "h1-8000.json"),
        ),
        Some("probe/hami-share-a.json"),
        "not the GPU the pods were given",
    );
}

#[test]
fn a2_holds_the_real_overheads_to_a_bound() {
    let files = vec![
        (
            "probe/hami-share-a-overhead.json",
            Some(bytes("h200/p1-overhead-hami.json")),
        ),
        (
            "probe/hami-baseline-overhead.json",
            Some(bytes("h200/p0-overhead-bare.json")),
        ),
    ];
    let bound = |pct: f64| RunContext {
        slice_mib: Some(8000),
        max_overhead_pct: Some(pct),
    };
    let loose = judge(ExerciseId::A2, &bound(1000.0), &files);
    supported(&loose);
    let worst = loose
        .numbers
        .iter()
        .filter(|(k, _)| k.ends_with(" p50 overhead_pct"))
        .map(|(_, v)| v.as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let tight = judge(ExerciseId::A2, &bound(worst - 0.5), &files);
    unsupported(
        &tight,
        Some("probe/hami-share-a-overhead.json"),
        "more than the",
    );
    let unset = judge(ExerciseId::A2, &SLICE_8000, &files);
    unsupported(&unset, None, "measurement");
}

#[test]
fn bad_evidence_is_unsupported_and_named() {
    let good = bytes("h200/h1-8000.json");
    let e2 = |b: Option<Vec<u8>>| {
        judge(
            ExerciseId::E2,
            &SLICE_8000,
            &[
                ("probe/hami-share-a.json", b),
                ("probe/hami-share-a.stderr", Some(Vec::new())),
            ],
        )
    };
    let f = Some("probe/hami-share-a.json");
    unsupported(&e2(None), f, "is missing");
    unsupported(&e2(Some(Vec::new())), f, "is empty");
    unsupported(
        &e2(Some(good[..good.len() / 2].to_vec())),
        f,
        "not valid JSON",
    );
    unsupported(
        &e2(Some(bytes("k8s/pod-hami-share-a-running.json"))),
        f,
        "is the Pod hami-share-a, not a gpu-probe `all` report",
    );
    unsupported(
        &e2(Some(bytes("h200/h4-audit.json"))),
        f,
        "`audit` report, not a gpu-probe `all` report",
    );
    let nothing = judge(ExerciseId::E2, &SLICE_8000, &[]);
    unsupported(&nothing, None, "no evidence file");
    let later = judge(ExerciseId::Other("B1".into()), &SLICE_8000, &pods(true));
    unsupported(&later, None, "cannot pass");
}

#[test]
fn a_local_claim_is_judged_on_its_own_report() {
    let files = |name: &'static str| {
        vec![EvidenceFile {
            path: name,
            bytes: None,
        }]
    };
    let good = bytes("h200/h1-8000.json");
    let ev = [EvidenceFile {
        path: "h1-8000.json",
        bytes: Some(&good),
    }];
    supported(&judge_local_claim(
        &LocalClaimId::parse("h1-8000:cap.device0"),
        &ev,
    ));
    unsupported(
        &judge_local_claim(&LocalClaimId::parse("h2-bare:cap.device0"), &ev),
        Some("h1-8000.json"),
        "not h2-bare.json",
    );
    unsupported(
        &judge_local_claim(&LocalClaimId::parse("cap.device0"), &files("h1-8000.json")),
        Some("h1-8000.json"),
        "missing",
    );
    unsupported(
        &judge_local_claim(&LocalClaimId::parse("cap.device3"), &ev),
        Some("h1-8000.json"),
        "holds no check",
    );
}

// ---------------------------------------------------------------------------------------------
// Bypass exercises (B1–B6): refused at admission, no GPU, held to what was given, or escaped.

fn k8s(name: &str) -> Option<Vec<u8>> {
    Some(bytes(&format!("k8s/{name}")))
}

fn h200(name: &str) -> Option<Vec<u8>> {
    Some(bytes(&format!("h200/{name}")))
}

fn escaped(j: &Judgement, file: &str, reached_mib: f64) {
    unsupported(j, Some(file), "ESCAPED");
    assert_eq!(j.numbers["outcome"], "escaped", "{}", j.reason);
    assert_eq!(j.numbers["reached_mib"], reached_mib, "{}", j.reason);
}

fn contained(j: &Judgement, shown: &str) {
    supported(j);
    assert_eq!(j.numbers["outcome"], "contained", "{}", j.reason);
    assert_eq!(j.numbers["shown"], shown, "{}", j.reason);
}

#[test]
fn a_bypass_refused_at_admission_is_contained_and_says_by_whom() {
    let j = judge(
        ExerciseId::B1,
        &SLICE_8000,
        &[(
            "admission/hami-bypass-b1.json",
            k8s("status-policy-denied-b1.json"),
        )],
    );
    contained(&j, "refused");
    assert_eq!(
        j.numbers["refused_by"],
        "ValidatingAdmissionPolicy 'hami-isolation-lab-gpu-tenant'"
    );
    assert!(j.reason.contains("visible-devices-env"), "{}", j.reason);
    let j = judge(
        ExerciseId::B6,
        &SLICE_8000,
        &[(
            "admission/hami-bypass-b6.json",
            k8s("status-webhook-denied-privileged.json"),
        )],
    );
    contained(&j, "refused");
    assert_eq!(
        j.numbers["refused_by"],
        "admission webhook \"vgpu.hami.io\""
    );
    // A 404 is a refusal, but not by an admission check: nothing is shown.
    let j = judge(
        ExerciseId::B1,
        &SLICE_8000,
        &[(
            "admission/hami-bypass-b1.json",
            k8s("status-namespace-not-found.json"),
        )],
    );
    unsupported(
        &j,
        Some("admission/hami-bypass-b1.json"),
        "not a denial by an admission policy or webhook",
    );
}

#[test]
fn a_bypass_that_sees_the_real_full_card_escaped_with_the_memory_it_reached() {
    // The real bare-card report: 143771 MiB visible and 10000 MiB held, against an 8000 MiB slice.
    let j = judge(
        ExerciseId::B4,
        &SLICE_8000,
        &[
            ("probe/hami-bypass-b4.json", h200("h2-bare.json")),
            (
                "pods/hami-bypass-b4.json",
                k8s("pod-hami-share-a-running.json"),
            ),
        ],
    );
    escaped(&j, "probe/hami-bypass-b4.json", 143771.0);
    assert!(j.reason.contains("more than the 8000 MiB"), "{}", j.reason);
    assert_eq!(j.numbers["given_mib"], 8000.0);
    // A pod that asked for no GPU escapes with any GPU memory at all: the real 8000 MiB slice view.
    let j = judge(
        ExerciseId::B1,
        &SLICE_8000,
        &[("probe/hami-bypass-b1.json", h200("h1-8000.json"))],
    );
    escaped(&j, "probe/hami-bypass-b1.json", 8000.0);
    assert_eq!(j.numbers["given_mib"], 0.0);
}

#[test]
fn a_bypass_held_to_its_slice_by_real_hami_core_is_contained_and_not_to_a_smaller_one() {
    let files = [("probe/hami-bypass-b3.json", h200("h1-8000.json"))];
    let j = judge(ExerciseId::B3, &SLICE_8000, &files);
    contained(&j, "held");
    assert!(j.reason.contains("Device 0 OOM"), "{}", j.reason);
    // The same report against a run whose slice was 1024 MiB: the pod got 8000, so it escaped.
    let small = RunContext {
        slice_mib: Some(1024),
        max_overhead_pct: None,
    };
    escaped(
        &judge(ExerciseId::B3, &small, &files),
        "probe/hami-bypass-b3.json",
        8000.0,
    );
    // Without the run's slice nothing can be judged.
    let j = judge(ExerciseId::B3, &RunContext::default(), &files);
    unsupported(&j, None, "no slice_mib");
}

#[test]
fn b5_is_judged_by_the_real_region_tamper_row_alone() {
    // gpu-probe's audit with the bypass rows, under real HAMi-core 8f3a89c on an H200: the region
    // tamper held 10000 MiB against the 8000 MiB slice.
    let bypass_audit = |rev: &str| {
        let path = format!(
            "{}/../gpu-probe/tests/data/bypass/{rev}-audit-8000.json",
            env!("CARGO_MANIFEST_DIR")
        );
        Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    };
    for rev in ["8f3a89c", "5091a2f", "ecbf908", "c0f9da6"] {
        let j = judge(
            ExerciseId::B5,
            &SLICE_8000,
            &[("probe/hami-bypass-b5.json", bypass_audit(rev))],
        );
        escaped(&j, "probe/hami-bypass-b5.json", 10000.0);
        assert!(j.reason.contains("region tamper"), "{rev}: {}", j.reason);
    }
    // On the bare card there is no region to tamper with: the row is not applicable, and the
    // other rows' escapes (not B5's attempt) do not count for B5.
    let j = judge(
        ExerciseId::B5,
        &SLICE_8000,
        &[("probe/hami-bypass-b5.json", bypass_audit("bare"))],
    );
    unsupported(&j, Some("probe/hami-bypass-b5.json"), "shows neither");
    // An audit without the row (an older gpu-probe's, three allocation paths escaped) shows
    // nothing about B5.
    let j = judge(
        ExerciseId::B5,
        &SLICE_8000,
        &[("probe/hami-bypass-b5-audit.json", h200("h4-audit.json"))],
    );
    unsupported(
        &j,
        Some("probe/hami-bypass-b5-audit.json"),
        "without the `region tamper` row",
    );
}

#[test]
fn a_bypass_that_sees_no_gpu_is_contained_only_when_the_report_says_why() {
    use lab_report::probe::{CapSection, Check, CheckStatus, ViewSection};
    // Constructed (no real report of a pod without a GPU exists here): the shape gpu-probe writes
    // when CUDA starts but lists no device (gpu-probe/src/probe.rs, the `cuda` check).
    let mut r = Report::new(
        "all",
        vec![Check {
            id: "cuda".into(),
            claim: "The CUDA driver starts and sees a GPU".into(),
            status: CheckStatus::Failed,
            reason: "CUDA started but no device is visible (NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES)".into(),
            environment: true,
        }],
    );
    r.view = Some(ViewSection {
        devices: Vec::new(),
        nvidia_smi: None,
    });
    r.cap = Some(CapSection {
        devices: Vec::new(),
    });
    let j = judge(
        ExerciseId::B1,
        &SLICE_8000,
        &[(
            "probe/hami-bypass-b1.json",
            Some(serde_json::to_vec(&r).unwrap()),
        )],
    );
    contained(&j, "no-gpu");
    assert!(j.reason.contains("no device is visible"), "{}", j.reason);
    r.checks.clear();
    let j = judge(
        ExerciseId::B1,
        &SLICE_8000,
        &[(
            "probe/hami-bypass-b1.json",
            Some(serde_json::to_vec(&r).unwrap()),
        )],
    );
    unsupported(
        &j,
        Some("probe/hami-bypass-b1.json"),
        "no failed `cuda` check",
    );
}

#[test]
fn bypass_evidence_that_contradicts_itself_or_is_of_another_kind_is_unsupported() {
    let j = judge(
        ExerciseId::B2,
        &SLICE_8000,
        &[
            (
                "admission/hami-bypass-b2.json",
                k8s("status-policy-denied-b1.json"),
            ),
            ("probe/hami-bypass-b2.json", h200("h1-8000.json")),
        ],
    );
    unsupported(
        &j,
        Some("admission/hami-bypass-b2.json"),
        "contradicts itself",
    );
    let j = judge(
        ExerciseId::B2,
        &SLICE_8000,
        &[(
            "events/hami-bypass-b2.json",
            k8s("events-oversubscribe.json"),
        )],
    );
    unsupported(
        &j,
        Some("events/hami-bypass-b2.json"),
        "not the API server's Status",
    );
    let j = judge(
        ExerciseId::B2,
        &SLICE_8000,
        &[(
            "pods/hami-bypass-b2.json",
            k8s("pod-hami-share-a-running.json"),
        )],
    );
    unsupported(&j, None, "needs the API server's refusal");
    let j = judge(
        ExerciseId::B2,
        &SLICE_8000,
        &[("probe/hami-bypass-b2.json", None)],
    );
    unsupported(&j, Some("probe/hami-bypass-b2.json"), "is missing");
}

/// A real `gpu-probe conformance` report (gpu-probe/tests/data/conformance, see its README).
fn conformance_report(rev: &str) -> Report {
    let path = format!(
        "{}/../gpu-probe/tests/data/conformance/{rev}-1gpu.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn conformance_cells_are_judged_from_their_own_numbers() {
    let r = conformance_report("8f3a89c");
    let mut passed = 0;
    for c in r.checks.iter().filter(|c| c.id.starts_with("conformance.")) {
        let j = judge_check("8f3a89c-1gpu.json", &r, &CheckId::parse(&c.id));
        if c.id.starts_with("conformance.devices.") {
            // Per-device results are only in the cell's note: a measurement, never a pass.
            assert_eq!(j.support, Support::Measured, "{}: {}", c.id, j.reason);
            continue;
        }
        // Every cell the probe passed is supported by its numbers; every cell it failed is not.
        assert_eq!(
            j.is_supported(),
            c.status == lab_report::probe::CheckStatus::Passed,
            "{}: {}",
            c.id,
            j.reason
        );
        passed += usize::from(j.is_supported());
    }
    assert!(passed >= 10, "only {passed} cells passed");
    let escaped = judge_check(
        "8f3a89c-1gpu.json",
        &r,
        &CheckId::parse("conformance.path.cuArrayCreate_v2"),
    );
    assert!(!escaped.is_supported(), "{}", escaped.reason);
}

#[test]
fn a_capped_cell_whose_numbers_say_otherwise_is_unsupported() {
    let mut r = conformance_report("8f3a89c");
    let conf = r.conformance.as_mut().unwrap();
    let cell = conf
        .cells
        .iter_mut()
        .find(|c| c.id == "path.cuMemAlloc_v2")
        .unwrap();
    let slice = cell.slice_bytes.unwrap();
    cell.held_bytes = Some(slice + 2000 * 1024 * 1024);
    let j = judge_check(
        "x.json",
        &r,
        &CheckId::parse("conformance.path.cuMemAlloc_v2"),
    );
    assert!(!j.is_supported());
    assert!(j.reason.contains("more than its"), "{}", j.reason);
    let conf = r.conformance.as_mut().unwrap();
    let cell = conf
        .cells
        .iter_mut()
        .find(|c| c.id == "path.cuMemAlloc_v2")
        .unwrap();
    cell.held_bytes = Some(slice / 2);
    cell.refusal = None;
    let j = judge_check(
        "x.json",
        &r,
        &CheckId::parse("conformance.path.cuMemAlloc_v2"),
    );
    assert!(j.reason.contains("no refusal"), "{}", j.reason);
    let j = judge_check("x.json", &r, &CheckId::parse("conformance.no-such-cell"));
    assert!(!j.is_supported());
}

#[test]
fn the_sm_band_is_recomputed_from_the_throughputs() {
    let path = format!(
        "{}/../gpu-probe/tests/data/compute/preload-compute-sm50-run1.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut r: Report = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let recorded = r
        .checks
        .iter()
        .find(|c| c.id == "compute")
        .map(|c| c.status)
        .unwrap();
    let j = judge_check("sm50.json", &r, &CheckId::Compute);
    assert_eq!(
        j.is_supported(),
        recorded == lab_report::probe::CheckStatus::Passed,
        "{}",
        j.reason
    );
    // A report that claims the band with throughputs that are not inside it is unsupported.
    let cmp = |r: &mut Report| {
        r.compute
            .as_mut()
            .unwrap()
            .comparison
            .as_mut()
            .unwrap()
            .clone()
    };
    let mut c = cmp(&mut r);
    c.limited_kernels_per_second = c.baseline_kernels_per_second * c.expected_ratio;
    c.ratio = c.expected_ratio;
    c.within_band = true;
    r.compute.as_mut().unwrap().comparison = Some(c.clone());
    assert!(judge_check("sm50.json", &r, &CheckId::Compute).is_supported());
    // The recorded ratio must be the one its throughputs give.
    c.ratio = 0.99;
    r.compute.as_mut().unwrap().comparison = Some(c);
    assert!(!judge_check("sm50.json", &r, &CheckId::Compute).is_supported());
}
