//! The exercises of one run, addressed by lab-report's typed [`ExerciseId`] (`ex[E4]`), and how
//! each is decided: by lab-report's judge (`lab_report::judge`) over the evidence files exactly as
//! `run` has just written them (read back through [`OutDir::judge`]) — the same judgement
//! evidence-pack makes again over the bundle, so there is one copy of the rules. This module names
//! the evidence of each exercise and turns the judgement into its result; `commands::run` gathers
//! the observations and writes the files. Nothing here talks to the cluster.

use std::ops::{Index, IndexMut};

use lab_report::judge::RunContext;
use lab_report::run::{overhead_claim, pod_file, probe_file};
use serde_json::{Value, json};

use crate::api::ProbeRun;
use crate::manifests::{BASELINE, SHARE_A, SHARE_B};
use crate::report::{AUDIT_CLAIM, CLAIMS, Exercise, ExerciseId, ExerciseResult, OutDir};

/// The exercises a run can have, in `run.json`'s order: the five, A1 with `--audit`, A2 with
/// `--audit --max-overhead-pct`, B1–B6 with `--bypass`.
const KNOWN: [ExerciseId; 13] = [
    ExerciseId::E1,
    ExerciseId::E2,
    ExerciseId::E3,
    ExerciseId::E4,
    ExerciseId::E5,
    ExerciseId::A1,
    ExerciseId::A2,
    ExerciseId::B1,
    ExerciseId::B2,
    ExerciseId::B3,
    ExerciseId::B4,
    ExerciseId::B5,
    ExerciseId::B6,
];

fn slot(id: &ExerciseId) -> Option<usize> {
    KNOWN.iter().position(|k| k == id)
}

/// The exercises of one run, indexed by id (`ex[ExerciseId::E4]`). A1 is reported only with
/// `--audit`, A2 only with `--audit --max-overhead-pct`.
#[derive(Debug, Clone)]
pub struct Exercises {
    all: Vec<Exercise>,
    /// What an id this run does not know indexes (written to, never reported).
    unknown: Exercise,
    audit: bool,
    overhead_bound: bool,
    bypass: bool,
}

impl Exercises {
    pub fn new(audit: bool, max_overhead_pct: Option<f64>) -> Self {
        let all = KNOWN
            .iter()
            .map(|id| {
                let claim = match id {
                    ExerciseId::A1 => AUDIT_CLAIM.to_owned(),
                    ExerciseId::A2 => overhead_claim(max_overhead_pct.unwrap_or_default()),
                    other if lab_report::run::bypass(other).is_some() => {
                        lab_report::run::bypass(other)
                            .map(|b| b.claim())
                            .unwrap_or_default()
                    }
                    other => CLAIMS
                        .iter()
                        .find(|(c, _)| c == other)
                        .map_or_else(String::new, |(_, claim)| (*claim).to_owned()),
                };
                Exercise::new(id.clone(), &claim)
            })
            .collect();
        Self {
            all,
            unknown: Exercise::new(ExerciseId::Other("unknown".into()), ""),
            audit,
            overhead_bound: audit && max_overhead_pct.is_some(),
            bypass: false,
        }
    }

    /// Also reports the bypass exercises B1–B6 (`run --bypass`).
    pub fn with_bypass(mut self, bypass: bool) -> Self {
        self.bypass = bypass;
        self
    }

    fn reported(&self, id: &ExerciseId) -> bool {
        match id {
            ExerciseId::A1 => self.audit,
            ExerciseId::A2 => self.overhead_bound,
            ExerciseId::B1
            | ExerciseId::B2
            | ExerciseId::B3
            | ExerciseId::B4
            | ExerciseId::B5
            | ExerciseId::B6 => self.bypass,
            ExerciseId::Other(_) => false,
            _ => true,
        }
    }

    /// The ids this run reports, in order.
    pub fn ids(&self) -> Vec<ExerciseId> {
        KNOWN
            .iter()
            .filter(|id| self.reported(id))
            .cloned()
            .collect()
    }

    /// Marks every exercise still `not-run` with `reason` (after the run had to stop).
    pub fn not_run_because(&mut self, reason: &str) {
        for id in self.ids() {
            let e = &mut self[id];
            if e.result == ExerciseResult::NotRun && e.reason == "not run" {
                e.set(ExerciseResult::NotRun, reason);
            }
        }
    }

    /// The exercises for `run.json`.
    pub fn into_vec(self) -> Vec<Exercise> {
        let reported: Vec<bool> = KNOWN.iter().map(|id| self.reported(id)).collect();
        self.all
            .into_iter()
            .zip(reported)
            .filter_map(|(e, r)| r.then_some(e))
            .collect()
    }
}

impl Index<ExerciseId> for Exercises {
    type Output = Exercise;
    fn index(&self, id: ExerciseId) -> &Exercise {
        slot(&id)
            .and_then(|i| self.all.get(i))
            .unwrap_or(&self.unknown)
    }
}

impl IndexMut<ExerciseId> for Exercises {
    fn index_mut(&mut self, id: ExerciseId) -> &mut Exercise {
        match slot(&id) {
            Some(i) if i < self.all.len() => &mut self.all[i],
            _ => &mut self.unknown,
        }
    }
}

/// What the judge needs from the run besides the evidence files.
pub fn run_context(slice_mib: u64, max_overhead_pct: Option<f64>) -> RunContext {
    RunContext {
        slice_mib: Some(slice_mib),
        max_overhead_pct,
    }
}

/// Decides `ex` by lab-report's judge over its evidence files as written (`ex.evidence`).
pub fn judge(ex: &mut Exercise, ctx: &RunContext, out: &OutDir) {
    let j = out.judge(&ex.id.clone(), ctx, &ex.evidence);
    ex.apply(&j);
}

/// E2/E3 from the probe report as written (`ex.evidence`); an unsupported judgement also says
/// how gpu-probe ended and where to look.
pub fn probe_exercise(
    ex: &mut Exercise,
    pod: &str,
    run: &ProbeRun,
    ctx: &RunContext,
    out: &OutDir,
) {
    ex.number(
        "probe_exit_code",
        run.exit_code.map_or(Value::Null, Value::from),
    );
    let j = out.judge(&ex.id.clone(), ctx, &ex.evidence);
    ex.apply(&j);
    if !j.is_supported() {
        ex.reason = format!(
            "{} (gpu-probe in {pod} exited {:?}; see probe/{pod}.stderr and `cluster-ctl doctor --from <out>`)",
            j.reason, run.exit_code
        );
    }
}

/// E5 from E1–E3 and the evidence of both share pods: their Pod objects and probe reports.
pub fn mechanism_exercise(
    ex: &mut Exercise,
    parts: [&Exercise; 3],
    ctx: &RunContext,
    out: &OutDir,
) {
    if let Some(failed) = parts.iter().find(|e| e.result == ExerciseResult::Fail) {
        ex.set(
            ExerciseResult::Fail,
            format!("{} failed: {}", failed.id, failed.reason),
        );
        return;
    }
    if !parts.iter().all(|e| e.result == ExerciseResult::Pass) {
        ex.set(ExerciseResult::NotRun, "E1–E3 did not all run");
        return;
    }
    ex.evidence = vec![
        pod_file(SHARE_A),
        pod_file(SHARE_B),
        probe_file(SHARE_A, None),
        probe_file(SHARE_B, None),
    ];
    judge(ex, ctx, out);
}

/// A2 from the two overhead reports as written (share pod A, the baseline pod); not run when the
/// baseline pod's report is missing (A1's numbers say why).
pub fn overhead_exercise(ex: &mut Exercise, ctx: &RunContext, out: &OutDir, a1: &Exercise) {
    ex.evidence = vec![
        probe_file(SHARE_A, Some("overhead")),
        probe_file(BASELINE, Some("overhead")),
    ];
    if out.read(&ex.evidence[1]).is_none() {
        let why = a1
            .numbers
            .get("overhead_baseline")
            .and_then(Value::as_str)
            .unwrap_or("the baseline pod's overhead was not measured");
        ex.set(ExerciseResult::NotRun, why.to_owned());
        return;
    }
    judge(ex, ctx, out);
}

/// The probe runs of `--audit`: file stem and gpu-probe arguments.
pub fn audit_runs(slice_mib: u64) -> Vec<(&'static str, Vec<String>)> {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    vec![
        (
            "audit",
            owned(&[
                "audit",
                "--expect-mib",
                &slice_mib.to_string(),
                "--output",
                "json",
            ]),
        ),
        ("overhead", owned(&["overhead", "--output", "json"])),
        (
            "compute",
            owned(&["compute", "--seconds", "5", "--output", "json"]),
        ),
    ]
}

/// p50 latencies with HAMi-core (share pod A) and without (the baseline pod), and their
/// difference, from two `gpu-probe overhead` reports (pure; numbers for people, A2 is judged by
/// lab-report).
pub fn overhead_difference(with_json: &str, without_json: &str) -> serde_json::Map<String, Value> {
    use lab_report::probe::{LatencyStats, Report};
    let parse = |t: &str| {
        serde_json::from_str::<Report>(t)
            .ok()
            .and_then(|r| r.overhead)
    };
    let mut m = serde_json::Map::new();
    let (Some(w), Some(wo)) = (parse(with_json), parse(without_json)) else {
        m.insert(
            "error".into(),
            json!("one of the overhead reports is missing or not a gpu-probe report"),
        );
        return m;
    };
    let mut pair = |key: String, a: Option<&LatencyStats>, b: Option<&LatencyStats>| {
        if let (Some(a), Some(b)) = (a, b) {
            let round = |x: f64| (x * 10.0).round() / 10.0;
            m.insert(key, json!({"with": round(a.p50_us), "without": round(b.p50_us), "difference": round(a.p50_us - b.p50_us)}));
        }
    };
    for (a, b) in w.alloc.iter().zip(&wo.alloc) {
        pair(
            format!("cuMemAlloc_v2 {} MiB", a.bytes / (1024 * 1024)),
            Some(a),
            Some(b),
        );
    }
    for (a, b) in w.free.iter().zip(&wo.free) {
        pair(
            format!("cuMemFree_v2 {} MiB", a.bytes / (1024 * 1024)),
            Some(a),
            Some(b),
        );
    }
    pair(
        "empty kernel launch".into(),
        w.launch.as_ref(),
        wo.launch.as_ref(),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::*;
    use ExerciseId::*;

    const SLICE_8000: RunContext = RunContext {
        slice_mib: Some(8000),
        max_overhead_pct: None,
    };

    /// An output folder holding `files` (path, text), as `run` writes them.
    fn out_with(files: &[(&str, String)]) -> (tempfile::TempDir, OutDir) {
        let dir = tempfile::tempdir().unwrap();
        let out = OutDir::new(dir.path());
        for (rel, text) in files {
            out.write(rel, text.as_bytes()).unwrap();
        }
        (dir, out)
    }

    fn pass(id: ExerciseId) -> Exercise {
        let mut e = Exercise::new(id, "c");
        e.set(ExerciseResult::Pass, "ok");
        e
    }

    #[test]
    fn ids_claims_and_the_audit_exercises() {
        let five = Exercises::new(false, None).into_vec();
        let ids: Vec<&str> = five.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["E1", "E2", "E3", "E4", "E5"]);
        assert!(five.iter().all(|e| !e.claim.is_empty()));
        let mut six = Exercises::new(true, None);
        six[A1].set(ExerciseResult::Fail, "escaped");
        six.not_run_because("stopped: 403");
        assert_eq!(six[E4].reason, "stopped: 403");
        assert_eq!(six[A1].reason, "escaped");
        // A2 is not part of this run: what is written to it is never reported.
        six[A2].set(ExerciseResult::Pass, "not reported");
        let v = six.into_vec();
        assert_eq!(v.len(), 6);
        assert_eq!(v.last().map(|e| e.claim.as_str()), Some(AUDIT_CLAIM));
        let seven = Exercises::new(true, Some(10.0)).into_vec();
        assert_eq!(seven.last().map(|e| e.id.clone()), Some(A2));
        assert!(
            seven[6].claim.contains("at most 10 %"),
            "{}",
            seven[6].claim
        );
        // An id no run has indexes a detached exercise, never reported.
        let mut ex = Exercises::new(false, None);
        ex[Other("B1".into())].set(ExerciseResult::Pass, "x");
        assert_eq!(ex.into_vec().len(), 5);
    }

    #[test]
    fn e1_is_judged_from_the_two_pods_as_written() {
        let json = |p: &k8s_openapi::api::core::v1::Pod| serde_json::to_string(p).unwrap();
        let a = fixture_pod("pod-hami-share-a-running.json");
        let b = fixture_pod("pod-hami-share-b-running.json");
        let mut other_gpu = b.clone();
        if let Some(ann) = other_gpu.metadata.annotations.as_mut() {
            ann.insert(
                crate::podann::ALLOCATED_ANNOTATION.into(),
                "GPU-other,NVIDIA,8000,0:;".into(),
            );
        }
        let unmutated = fixture_pod("pod-unmutated-default-scheduler.json");
        for (second, want, words) in [
            (&b, ExerciseResult::Pass, "GPU-4f7efa07"),
            (&other_gpu, ExerciseResult::Fail, "different GPUs"),
            (&unmutated, ExerciseResult::Fail, "default-scheduler"),
        ] {
            let (_dir, out) = out_with(&[
                ("pods/hami-share-a.json", json(&a)),
                ("pods/hami-share-b.json", json(second)),
            ]);
            let mut e1 = Exercise::new(E1, "c");
            e1.evidence = vec![
                "pods/hami-share-a.json".into(),
                "pods/hami-share-b.json".into(),
            ];
            judge(&mut e1, &SLICE_8000, &out);
            assert_eq!(e1.result, want, "{}", e1.reason);
            assert!(e1.reason.contains(words), "{}", e1.reason);
        }
    }

    #[test]
    fn e2_is_judged_from_the_real_reports_numbers() {
        let run = |stdout: &str, code| ProbeRun {
            stdout: stdout.into(),
            stderr: String::new(),
            exit_code: Some(code),
        };
        let evidence = vec![
            "probe/hami-share-a.json".to_owned(),
            "probe/hami-share-a.stderr".to_owned(),
        ];
        for (report, want, words) in [
            (h200("h1-8000.json"), ExerciseResult::Pass, "Device 0 OOM"),
            (
                h200("h2-bare.json"),
                ExerciseResult::Fail,
                "more than the 8000 MiB slice",
            ),
            (
                h100_bare("h100-bare-all-expect-8000.json"),
                ExerciseResult::Fail,
                "more than the 8000 MiB slice",
            ),
            ("garbage".to_owned(), ExerciseResult::Fail, "not valid JSON"),
            (
                // A verdict word alone proves nothing.
                r#"{"verdict":{"outcome":"verified","exit_code":0}}"#.to_owned(),
                ExerciseResult::Fail,
                "not a gpu-probe `all` report",
            ),
        ] {
            let (_dir, out) = out_with(&[
                ("probe/hami-share-a.json", report.clone()),
                ("probe/hami-share-a.stderr", String::new()),
            ]);
            let mut e = Exercise::new(E2, "c");
            e.evidence = evidence.clone();
            probe_exercise(&mut e, "hami-share-a", &run(&report, 0), &SLICE_8000, &out);
            assert_eq!(e.result, want, "{}", e.reason);
            assert!(e.reason.contains(words), "{}", e.reason);
        }
    }

    #[test]
    fn e4_is_judged_from_the_pod_and_its_events_as_written() {
        let mut pod = fixture_pod("pod-hami-oversubscribe-pending.json");
        let pending = serde_json::to_string(&pod).unwrap();
        if let Some(status) = pod.status.as_mut() {
            status.phase = Some("Running".into());
        }
        let running = serde_json::to_string(&pod).unwrap();
        let events = fixture_events("events-oversubscribe.json");
        let named = serde_json::to_string(&events).unwrap();
        // Only the generic message (HAMi < 2.7), and no event at all.
        let generic_only: Vec<&k8s_openapi::api::core::v1::Event> = events
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some("FilteringFailed")
                    && !e
                        .message
                        .as_deref()
                        .unwrap_or_default()
                        .contains("CardInsufficientMemory")
            })
            .collect();
        assert_eq!(generic_only.len(), 1, "the fixture has the generic message");
        let generic = serde_json::to_string(&generic_only).unwrap();
        let evidence = vec![
            "pods/hami-oversubscribe.json".to_owned(),
            "events/hami-oversubscribe.json".to_owned(),
        ];
        for (pod, events, want, words) in [
            (
                &pending,
                &named,
                ExerciseResult::Pass,
                "CardInsufficientMemory",
            ),
            (&running, &named, ExerciseResult::Fail, "not Pending"),
            (&pending, &generic, ExerciseResult::Fail, "HAMi < 2.7"),
            (
                &pending,
                &"[]".to_owned(),
                ExerciseResult::Fail,
                "no FilteringFailed",
            ),
            (
                &running,
                &"[]".to_owned(),
                ExerciseResult::Fail,
                "scheduled beside",
            ),
        ] {
            let (_dir, out) = out_with(&[
                ("pods/hami-oversubscribe.json", pod.clone()),
                ("events/hami-oversubscribe.json", events.clone()),
            ]);
            let mut e4 = Exercise::new(E4, "c");
            e4.evidence = evidence.clone();
            judge(&mut e4, &SLICE_8000, &out);
            assert_eq!(e4.result, want, "{}", e4.reason);
            assert!(e4.reason.contains(words), "{}", e4.reason);
        }
    }

    #[test]
    fn e5_is_judged_from_both_pods_and_both_reports() {
        let (e1, e2, e3) = (pass(E1), pass(E2), pass(E3));
        let pod = |f: &str| serde_json::to_string(&share_pod_on_h200(f)).unwrap();
        let files = |b: String| {
            vec![
                (
                    "pods/hami-share-a.json",
                    pod("pod-hami-share-a-running.json"),
                ),
                (
                    "pods/hami-share-b.json",
                    pod("pod-hami-share-b-running.json"),
                ),
                ("probe/hami-share-a.json", h200("h1-8000.json")),
                ("probe/hami-share-b.json", b),
            ]
        };
        let (_dir, out) = out_with(&files(h200("h1-8000.json")));
        let mut e5 = Exercise::new(E5, "c");
        mechanism_exercise(&mut e5, [&e1, &e2, &e3], &SLICE_8000, &out);
        assert_eq!(e5.result, ExerciseResult::Pass, "{}", e5.reason);
        assert!(
            e5.reason.contains("/usr/local/vgpu/libvgpu.so"),
            "{}",
            e5.reason
        );
        assert!(e5.reason.contains(H200_UUID), "{}", e5.reason);
        // Passing E1–E3 do not make E5 pass when a report shows no HAMi-core: the bare H200
        // and the bare H100.
        for bare_report in [
            h200("h2-bare.json"),
            h100_bare("h100-bare-all-expect-8000.json"),
        ] {
            let (_dir, bare) = out_with(&files(bare_report));
            mechanism_exercise(&mut e5, [&e1, &e2, &e3], &SLICE_8000, &bare);
            assert_eq!(e5.result, ExerciseResult::Fail);
            assert!(
                e5.reason.starts_with("probe/hami-share-b.json"),
                "{}",
                e5.reason
            );
        }
        let mut f = pass(E3);
        f.set(ExerciseResult::Fail, "probe saw 143771 MiB");
        mechanism_exercise(&mut e5, [&e1, &e2, &f], &SLICE_8000, &out);
        assert!(e5.reason.starts_with("E3 failed"), "{}", e5.reason);
        mechanism_exercise(
            &mut e5,
            [&e1, &Exercise::new(E2, "c"), &e3],
            &SLICE_8000,
            &out,
        );
        assert_eq!(e5.result, ExerciseResult::NotRun);
        // A missing report: the judge names the file.
        let (_dir, missing) = out_with(&files(h200("h1-8000.json"))[..3]);
        mechanism_exercise(&mut e5, [&e1, &e2, &e3], &SLICE_8000, &missing);
        assert_eq!(e5.result, ExerciseResult::Fail);
        assert!(e5.reason.contains("is missing"), "{}", e5.reason);
    }

    #[test]
    fn a1_fails_on_the_real_audits_from_their_rows() {
        for (report, escaped) in [
            (h200("h4-audit.json"), 3),
            (h100_bare("h100-bare-audit-expect-8000.json"), 9),
        ] {
            let (_dir, out) = out_with(&[("probe/hami-share-a-audit.json", report)]);
            let mut ex = Exercise::new(A1, AUDIT_CLAIM);
            ex.evidence = vec!["probe/hami-share-a-audit.json".into()];
            judge(&mut ex, &SLICE_8000, &out);
            assert_eq!(ex.result, ExerciseResult::Fail);
            assert!(
                ex.reason.contains(&format!("{escaped} path(s)")),
                "{}",
                ex.reason
            );
        }
    }

    #[test]
    fn a2_is_not_run_without_the_baseline_report_and_judged_with_both() {
        let a1 = {
            let mut a = Exercise::new(A1, AUDIT_CLAIM);
            a.numbers.insert(
                "overhead_baseline".into(),
                json!("not run: only 500 MiB left beside the two slices"),
            );
            a
        };
        let bound = RunContext {
            slice_mib: Some(8000),
            max_overhead_pct: Some(1000.0),
        };
        let (_dir, out) = out_with(&[(
            "probe/hami-share-a-overhead.json",
            h200("p1-overhead-hami.json"),
        )]);
        let mut a2 = Exercise::new(A2, "c");
        overhead_exercise(&mut a2, &bound, &out, &a1);
        assert_eq!(a2.result, ExerciseResult::NotRun);
        assert!(a2.reason.contains("only 500 MiB"), "{}", a2.reason);
        // The same real report on both sides: 0 % overhead, within the bound.
        let (_dir, out) = out_with(&[
            (
                "probe/hami-share-a-overhead.json",
                h200("p1-overhead-hami.json"),
            ),
            (
                "probe/hami-baseline-overhead.json",
                h200("p1-overhead-hami.json"),
            ),
        ]);
        overhead_exercise(&mut a2, &bound, &out, &a1);
        assert_eq!(a2.result, ExerciseResult::Pass, "{}", a2.reason);
    }

    #[test]
    fn overhead_difference_from_real_reports() {
        let real = h100_bare("h100-bare-overhead.json");
        let same = overhead_difference(&real, &real);
        assert_eq!(same["cuMemAlloc_v2 1 MiB"]["difference"], 0.0);
        assert!(same.contains_key("empty kernel launch"));
        let mut slower: lab_report::probe::Report = serde_json::from_str(&real).unwrap();
        for a in &mut slower.overhead.as_mut().unwrap().alloc {
            a.p50_us += 25.0;
        }
        let diff = overhead_difference(&serde_json::to_string(&slower).unwrap(), &real);
        assert_eq!(diff["cuMemAlloc_v2 64 MiB"]["difference"], 25.0);
        assert!(overhead_difference("{}", &real).contains_key("error"));
        // The H200 pair: with and without HAMi-core, measured in separate processes.
        let h200_diff = overhead_difference(
            &h200("p1-overhead-hami.json"),
            &h200("p0-overhead-bare.json"),
        );
        assert!(
            h200_diff.contains_key("empty kernel launch"),
            "{h200_diff:?}"
        );
    }
}
