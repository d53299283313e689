//! The exercises' judgements, pure: each turns what was observed (pods, events, gpu-probe's JSON
//! reports) into a result, a reason and numbers of one [`Exercise`], addressed by its typed
//! [`ExerciseId`]. `commands::run` gathers the observations and calls these; nothing here talks
//! to the cluster or the file system.

use std::ops::{Index, IndexMut};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::api::ProbeRun;
use crate::decide::{OversubscribeEvidence, co_residency};
use crate::report::{CLAIMS, Exercise, ExerciseResult, probe_outcome};

/// The exercises `run` knows: the five, and A1 with `--audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExerciseId {
    /// Two share pods on one node and one GPU, placed by hami-scheduler.
    E1,
    /// Share pod A is held to its slice.
    E2,
    /// Share pod B is held to its slice.
    E3,
    /// The oversubscribe pod stays Pending for card memory.
    E4,
    /// The isolation comes from HAMi-core in the co-resident containers.
    E5,
    /// No allocation path in share pod A escapes the slice (`--audit`).
    A1,
}

/// The claim of the optional audit exercise.
pub const AUDIT_CLAIM: &str = "In share pod A, no allocation path (pitch, managed, async, pools, VMM, arrays, a cleared-env child, a second process) holds more than the slice (gpu-probe audit).";

impl ExerciseId {
    pub const ALL: [ExerciseId; 6] = [
        ExerciseId::E1,
        ExerciseId::E2,
        ExerciseId::E3,
        ExerciseId::E4,
        ExerciseId::E5,
        ExerciseId::A1,
    ];

    /// The id as `run.json` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExerciseId::E1 => "E1",
            ExerciseId::E2 => "E2",
            ExerciseId::E3 => "E3",
            ExerciseId::E4 => "E4",
            ExerciseId::E5 => "E5",
            ExerciseId::A1 => "A1",
        }
    }

    pub fn claim(self) -> &'static str {
        match self {
            ExerciseId::A1 => AUDIT_CLAIM,
            id => CLAIMS
                .iter()
                .find(|(c, _)| *c == id.as_str())
                .map_or("", |(_, claim)| claim),
        }
    }
}

/// The exercises of one run, indexed by id (`ex[ExerciseId::E4]`). A1 is reported only with
/// `--audit`.
#[derive(Debug, Clone)]
pub struct Exercises {
    all: [Exercise; 6],
    audit: bool,
}

impl Exercises {
    pub fn new(audit: bool) -> Self {
        Self {
            all: ExerciseId::ALL.map(|id| Exercise::new(id.as_str(), id.claim())),
            audit,
        }
    }

    /// The ids this run reports, in order.
    pub fn ids(&self) -> impl Iterator<Item = ExerciseId> + use<> {
        let audit = self.audit;
        ExerciseId::ALL
            .into_iter()
            .filter(move |id| audit || *id != ExerciseId::A1)
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
        let audit = self.audit;
        self.all
            .into_iter()
            .filter(|e| audit || e.id != ExerciseId::A1.as_str())
            .collect()
    }
}

impl Index<ExerciseId> for Exercises {
    type Output = Exercise;
    fn index(&self, id: ExerciseId) -> &Exercise {
        &self.all[id as usize]
    }
}

impl IndexMut<ExerciseId> for Exercises {
    fn index_mut(&mut self, id: ExerciseId) -> &mut Exercise {
        &mut self.all[id as usize]
    }
}

/// E1 from the two share pods as the watch returned them Ready (pure).
pub fn co_residency_exercise(ex: &mut Exercise, a: &Pod, b: &Pod) {
    let c = co_residency(a, b);
    ex.set(
        if c.pass {
            ExerciseResult::Pass
        } else {
            ExerciseResult::Fail
        },
        c.reason.clone(),
    );
    ex.numbers.insert("gpu_uuids".into(), json!(c.gpu_uuids));
    ex.numbers.insert("nodes".into(), json!(c.nodes));
    ex.evidence = vec![
        "cluster/events.json".into(),
        "manifests/hami-share-a.yaml".into(),
        "manifests/hami-share-b.yaml".into(),
    ];
}

/// E2/E3 result from a probe run.
pub fn probe_exercise(ex: &mut Exercise, pod: &str, run: &ProbeRun, slice_mib: u64) {
    ex.number("expect_mib", slice_mib);
    ex.number(
        "probe_exit_code",
        run.exit_code.map_or(Value::Null, Value::from),
    );
    match probe_outcome(&run.stdout).as_deref() {
        Some("verified") => ex.set(ExerciseResult::Pass, format!("gpu-probe in {pod}: verified ({slice_mib} MiB slice)")),
        Some("not-verified") => ex.set(ExerciseResult::Fail, format!("gpu-probe in {pod}: not-verified — the pod is not limited to its {slice_mib} MiB slice (run `cluster-ctl doctor --from <out>`)")),
        Some(other @ ("inconclusive" | "environment")) => ex.set(ExerciseResult::Fail, format!("gpu-probe in {pod}: {other}; see probe/{pod}.stderr")),
        Some(other) => ex.set(ExerciseResult::Fail, format!("gpu-probe in {pod}: unknown outcome {other:?}")),
        None => ex.set(ExerciseResult::Fail, format!("gpu-probe in {pod} printed no JSON verdict (exit {:?}); see probe/{pod}.stderr", run.exit_code)),
    }
}

/// E4 result (pure).
pub fn oversubscribe_exercise(ex: &mut Exercise, evidence: &OversubscribeEvidence, phase: &str) {
    match evidence {
        OversubscribeEvidence::Named { message, .. } if phase == "Pending" => {
            ex.set(ExerciseResult::Pass, format!("Pending; hami-scheduler FilteringFailed: {message}"));
        }
        OversubscribeEvidence::Named { message, .. } => {
            ex.set(ExerciseResult::Fail, format!("hami-scheduler refused it ({message}) but the pod is {phase}"));
        }
        OversubscribeEvidence::GenericOnly { message } | OversubscribeEvidence::SummaryOnly { message } => ex.set(
            ExerciseResult::Fail,
            format!("pod {phase}; hami-scheduler did not name CardInsufficientMemory in a FilteringFailed event (only: {message}); HAMi < 2.7 emits no per-reason events"),
        ),
        OversubscribeEvidence::Nothing if phase == "Pending" => ex.set(ExerciseResult::Fail, "pod Pending but no FilteringFailed event from hami-scheduler before the timeout (is the pod on default-scheduler? run `cluster-ctl doctor`)"),
        OversubscribeEvidence::Nothing => ex.set(ExerciseResult::Fail, format!("pod is {phase}: it was scheduled beside the two slices, so memory was not accounted per card")),
    }
}

/// E5 from E1–E3 (pure).
pub fn mechanism_exercise(
    ex: &mut Exercise,
    e1: &Exercise,
    e2: &Exercise,
    e3: &Exercise,
    reports: &[(&str, Option<&str>)],
) {
    ex.evidence = e2.evidence.iter().chain(&e3.evidence).cloned().collect();
    let parts = [e1, e2, e3];
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
    // E1–E3 passed: now show it is HAMi-core doing it, from each probe's mechanism section.
    let mut seen = Vec::new();
    for (pod, json) in reports {
        match mechanism_of(json.unwrap_or("")) {
            Ok(m) => {
                ex.numbers.insert(format!("{pod}_mechanism"), m.clone());
                seen.push(m);
            }
            Err(why) => {
                ex.set(ExerciseResult::Fail, format!("E1–E3 passed, but gpu-probe in {pod} does not show HAMi-core at work: {why}"));
                return;
            }
        }
    }
    let library = seen
        .first()
        .and_then(|m| m["library"].as_str())
        .unwrap_or("the HAMi-core library")
        .to_owned();
    ex.set(
        ExerciseResult::Pass,
        format!(
            "both pods share one GPU (E1), each was held to its slice (E2, E3), and in both containers {library} is preloaded, mapped after CUDA init and exports the allocation hooks, with the limit in its shared region"
        ),
    );
}

/// What one probe report shows of HAMi-core (pure): the library, how it is injected, the
/// region's limit and HAMi-core's own OOM lines; an error when it is not active.
pub fn mechanism_of(probe_json: &str) -> Result<Value, String> {
    use gpu_probe::report::{MechanismOutcome, Report};
    let report: Report =
        serde_json::from_str(probe_json).map_err(|e| format!("no probe report ({e})"))?;
    let m = report
        .mechanism
        .ok_or("the report has no mechanism section")?;
    if m.outcome != MechanismOutcome::HamiCoreActive {
        return Err(format!(
            "mechanism {:?}: {}",
            m.outcome,
            m.reasons.first().cloned().unwrap_or_default()
        ));
    }
    let lib = m
        .libraries
        .iter()
        .find(|l| l.mapped_after_cuda_init == Some(true) && l.symbols.iter().any(|s| s.exported))
        .ok_or("no injected library is mapped and exports hooks")?;
    let hooks: Vec<&str> = lib
        .symbols
        .iter()
        .filter(|s| s.exported)
        .map(|s| s.name.as_str())
        .collect();
    let limits_mib: Vec<u64> = m
        .shared_region
        .region
        .as_ref()
        .map(|r| r.limits.iter().map(|l| l / (1024 * 1024)).collect())
        .unwrap_or_default();
    let oom_lines: usize = report.cap.as_ref().map_or(0, |c| {
        c.devices.iter().map(|d| d.hami_oom_lines.len()).sum()
    });
    Ok(json!({
        "library": lib.path,
        "injected_via": lib.named_in,
        "hooks": hooks,
        "shared_region": m.shared_region.path,
        "region_limits_mib": limits_mib,
        "hami_core_oom_lines": oom_lines,
    }))
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

/// A1 from the audit report's JSON (pure): pass only when every applicable path is capped.
pub fn audit_exercise(ex: &mut Exercise, stdout: &str, slice_mib: u64) {
    use gpu_probe::report::{AuditOutcome, Report};
    ex.number("slice_mib", slice_mib);
    let report: Report = match serde_json::from_str(stdout) {
        Ok(r) => r,
        Err(e) => {
            ex.set(
                ExerciseResult::Fail,
                format!("gpu-probe audit printed no report ({e})"),
            );
            return;
        }
    };
    let Some(audit) = report.audit else {
        ex.set(
            ExerciseResult::Fail,
            format!("gpu-probe audit: {}", report.verdict.summary),
        );
        return;
    };
    let names = |o: AuditOutcome| -> Vec<String> {
        audit
            .paths
            .iter()
            .filter(|p| p.outcome == o)
            .map(|p| p.path.clone())
            .collect()
    };
    let (escaped, capped) = (names(AuditOutcome::Escaped), names(AuditOutcome::Capped));
    ex.numbers.insert("escaped".into(), json!(escaped));
    ex.numbers.insert("capped".into(), json!(capped));
    ex.numbers.insert(
        "not_applicable".into(),
        json!(names(AuditOutcome::NotApplicable)),
    );
    let past: u64 = audit
        .paths
        .iter()
        .map(|p| p.past_slice_bytes)
        .max()
        .unwrap_or(0);
    ex.number("max_past_slice_mib", past / (1024 * 1024));
    if !escaped.is_empty() {
        ex.set(
            ExerciseResult::Fail,
            format!(
                "{} path(s) escaped the {slice_mib} MiB slice: {}",
                escaped.len(),
                escaped.join(", ")
            ),
        );
    } else if capped.is_empty() {
        ex.set(
            ExerciseResult::Fail,
            "no path was capped or escaped: nothing was shown".to_owned(),
        );
    } else {
        ex.set(
            ExerciseResult::Pass,
            format!(
                "all {} applicable paths were capped at the {slice_mib} MiB slice",
                capped.len()
            ),
        );
    }
}

/// p50 latencies with HAMi-core (share pod A) and without (the baseline pod), and their
/// difference, from two `gpu-probe overhead` reports (pure).
pub fn overhead_difference(with_json: &str, without_json: &str) -> serde_json::Map<String, Value> {
    use gpu_probe::report::{LatencyStats, Report};
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

    fn pass(id: ExerciseId) -> Exercise {
        let mut e = Exercise::new(id.as_str(), id.claim());
        e.set(ExerciseResult::Pass, "ok");
        e
    }

    #[test]
    fn ids_claims_and_the_audit_exercise() {
        let five = Exercises::new(false).into_vec();
        let ids: Vec<&str> = five.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["E1", "E2", "E3", "E4", "E5"]);
        assert!(five.iter().all(|e| !e.claim.is_empty()));
        let mut six = Exercises::new(true);
        six[ExerciseId::A1].set(ExerciseResult::Fail, "escaped");
        six.not_run_because("stopped: 403");
        assert_eq!(six[ExerciseId::E4].reason, "stopped: 403");
        assert_eq!(six[ExerciseId::A1].reason, "escaped");
        let v = six.into_vec();
        assert_eq!(v.last().map(|e| e.claim.as_str()), Some(AUDIT_CLAIM));
    }

    #[test]
    fn exercise_decisions() {
        let run = |stdout: &str, code| ProbeRun {
            stdout: stdout.into(),
            stderr: String::new(),
            exit_code: Some(code),
        };
        let mut e = Exercise::new("E2", "c");
        probe_exercise(&mut e, "hami-share-a", &run(&h200("h1-8000.json"), 0), 8000);
        assert_eq!(e.result, ExerciseResult::Pass);
        assert_eq!(e.numbers["expect_mib"], 8000);
        probe_exercise(
            &mut e,
            "hami-share-a",
            &run(&h100_bare("h100-bare-all-expect-8000.json"), 1),
            8000,
        );
        assert_eq!(e.result, ExerciseResult::Fail);
        assert!(e.reason.contains("not-verified"), "{}", e.reason);
        probe_exercise(&mut e, "hami-share-a", &run("garbage", 3), 8000);
        assert_eq!(e.result, ExerciseResult::Fail);
        assert!(e.reason.contains("no JSON verdict"));

        let mut e4 = Exercise::new("E4", "c");
        let named = OversubscribeEvidence::Named {
            nodes: vec!["n".into()],
            message: "1 nodes CardInsufficientMemory(n)".into(),
        };
        oversubscribe_exercise(&mut e4, &named, "Pending");
        assert_eq!(e4.result, ExerciseResult::Pass);
        oversubscribe_exercise(&mut e4, &named, "Running");
        assert_eq!(e4.result, ExerciseResult::Fail);
        oversubscribe_exercise(
            &mut e4,
            &OversubscribeEvidence::GenericOnly {
                message: "no available node, 1 nodes do not meet".into(),
            },
            "Pending",
        );
        assert_eq!(e4.result, ExerciseResult::Fail);
        assert!(e4.reason.contains("HAMi < 2.7"));
        oversubscribe_exercise(&mut e4, &OversubscribeEvidence::Nothing, "Running");
        assert!(e4.reason.contains("scheduled beside"));
    }

    #[test]
    fn e5_on_the_real_h200_hami_core_report_and_the_bare_h100_one() {
        use ExerciseId::*;
        let mut e5 = Exercise::new("E5", "c");
        let active = h200("h1-8000.json");
        let reports = [
            ("hami-share-a", Some(active.as_str())),
            ("hami-share-b", Some(active.as_str())),
        ];
        mechanism_exercise(&mut e5, &pass(E1), &pass(E2), &pass(E3), &reports);
        assert_eq!(e5.result, ExerciseResult::Pass, "{}", e5.reason);
        assert!(
            e5.reason.contains("/usr/local/vgpu/libvgpu.so"),
            "{}",
            e5.reason
        );
        assert_eq!(
            e5.numbers["hami-share-a_mechanism"]["region_limits_mib"][0],
            8000
        );
        let mut f = pass(E3);
        f.set(ExerciseResult::Fail, "probe saw 81559 MiB");
        mechanism_exercise(&mut e5, &pass(E1), &pass(E2), &f, &reports);
        assert_eq!(e5.result, ExerciseResult::Fail);
        assert!(e5.reason.starts_with("E3 failed"));
        mechanism_exercise(
            &mut e5,
            &pass(E1),
            &Exercise::new("E2", "c"),
            &pass(E3),
            &reports,
        );
        assert_eq!(e5.result, ExerciseResult::NotRun);
        // Passing probes whose reports show no HAMi-core (the real bare-H100 report) fail E5.
        let bare = h100_bare("h100-bare-all-expect-8000.json");
        let bare_reports = [
            ("hami-share-a", Some(bare.as_str())),
            ("hami-share-b", Some(active.as_str())),
        ];
        mechanism_exercise(&mut e5, &pass(E1), &pass(E2), &pass(E3), &bare_reports);
        assert_eq!(e5.result, ExerciseResult::Fail);
        assert!(
            e5.reason.contains("does not show HAMi-core"),
            "{}",
            e5.reason
        );
        mechanism_exercise(
            &mut e5,
            &pass(E1),
            &pass(E2),
            &pass(E3),
            &[("hami-share-a", None)],
        );
        assert_eq!(e5.result, ExerciseResult::Fail);
    }

    #[test]
    fn a1_fails_on_the_real_audits_and_passes_when_every_path_is_capped() {
        let text = h100_bare("h100-bare-audit-expect-8000.json");
        let mut ex = Exercise::new("A1", AUDIT_CLAIM);
        audit_exercise(&mut ex, &text, 8000);
        assert_eq!(ex.result, ExerciseResult::Fail);
        assert!(ex.reason.contains("9 path(s) escaped"), "{}", ex.reason);
        assert_eq!(ex.numbers["max_past_slice_mib"], 6000);
        // Under real HAMi-core (H200): three paths still escape.
        let mut ex = Exercise::new("A1", AUDIT_CLAIM);
        audit_exercise(&mut ex, &h200("h4-audit.json"), 8000);
        assert_eq!(ex.result, ExerciseResult::Fail);
        assert!(ex.reason.contains("3 path(s) escaped"), "{}", ex.reason);

        let mut report: gpu_probe::report::Report = serde_json::from_str(&text).unwrap();
        for p in &mut report.audit.as_mut().unwrap().paths {
            p.outcome = gpu_probe::report::AuditOutcome::Capped;
            p.past_slice_bytes = 0;
        }
        let mut ex = Exercise::new("A1", AUDIT_CLAIM);
        audit_exercise(&mut ex, &serde_json::to_string(&report).unwrap(), 8000);
        assert_eq!(ex.result, ExerciseResult::Pass, "{}", ex.reason);

        let mut ex = Exercise::new("A1", AUDIT_CLAIM);
        audit_exercise(&mut ex, "not json", 8000);
        assert_eq!(ex.result, ExerciseResult::Fail);
    }

    #[test]
    fn overhead_difference_from_real_reports() {
        let real = h100_bare("h100-bare-overhead.json");
        let same = overhead_difference(&real, &real);
        assert_eq!(same["cuMemAlloc_v2 1 MiB"]["difference"], 0.0);
        assert!(same.contains_key("empty kernel launch"));
        let mut slower: gpu_probe::report::Report = serde_json::from_str(&real).unwrap();
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
