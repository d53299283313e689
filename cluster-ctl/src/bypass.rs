//! The bypass exercises B1–B6 of `run --bypass`, as data: the pods come from
//! `manifests::render_bypasses`; here is what gpu-probe runs inside each admitted one, the
//! evidence each exercise rests on, and the plan's steps. `commands::run`'s bypass part creates
//! each pod through `api::Cluster::create_bypass_pod` and writes what came back where lab-report's
//! judge reads it: the API server's refusal as `admission/<pod>.json`, or, once admitted, the Pod
//! as `pods/<pod>.json` and gpu-probe's report from inside it as `probe/<pod>.json`.
//! `lab_report::judge::judge_exercise` decides each from those files (contained: refused, no GPU,
//! or held to what it was given; escaped otherwise, with the memory reached).

use lab_report::run::{Bypass, Given, admission_file, pod_file, probe_file, probe_stderr};

use crate::plan::Step;

/// The gpu-probe arguments inside bypass pod `b`: B5 runs the audit's bypass rows (its attempt
/// is the region tamper, which only a process inside the pod can make); the others `all`, against
/// their slice when they were given one.
pub fn probe_args(b: &Bypass, slice_mib: u64) -> Vec<String> {
    let base: &[&str] = if b.id == "B5" {
        &["audit", "--rows", "bypass", "--output", "json"]
    } else {
        &["all", "--output", "json"]
    };
    let mut args: Vec<String> = base.iter().map(|s| (*s).to_owned()).collect();
    if b.given == Given::Slice {
        args.push("--expect-mib".to_owned());
        args.push(slice_mib.to_string());
    }
    args
}

/// The evidence files of one bypass exercise that the judge reads: the refusal, or the Pod and
/// the probe report (written only when they exist).
pub fn evidence_paths(b: &Bypass) -> [String; 3] {
    [
        admission_file(b.pod),
        pod_file(b.pod),
        probe_file(b.pod, None),
    ]
}

/// gpu-probe's stderr in bypass pod `b` (kept for people, not judged).
pub fn stderr_path(b: &Bypass) -> String {
    probe_stderr(b.pod, None)
}

/// The plan step of one bypass exercise.
pub fn plan_step(b: &Bypass, namespace: &str, slice_mib: u64) -> Step {
    Step::new(
        &format!("bypass-{}", b.id.to_ascii_lowercase()),
        format!(
            "create pod {namespace}/{} ({}); if admitted, wait until Ready, run `gpu-probe {}` inside, delete it",
            b.pod,
            b.tries,
            probe_args(b, slice_mib).join(" ")
        ),
        format!(
            "{}: contained if refused at admission, no GPU, or held to {}",
            b.id,
            match b.given {
                Given::Nothing => "nothing".to_owned(),
                Given::Slice => format!("its {slice_mib} MiB slice"),
            }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_report::run::BYPASSES;

    #[test]
    fn each_bypass_runs_the_probe_that_shows_its_attempt() {
        assert_eq!(probe_args(&BYPASSES[0], 8000), ["all", "--output", "json"]);
        assert_eq!(
            probe_args(&BYPASSES[1], 8000),
            ["all", "--output", "json", "--expect-mib", "8000"]
        );
        assert_eq!(
            probe_args(&BYPASSES[4], 8000),
            [
                "audit",
                "--rows",
                "bypass",
                "--output",
                "json",
                "--expect-mib",
                "8000"
            ]
        );
        assert_eq!(probe_args(&BYPASSES[5], 8000), ["all", "--output", "json"]);
        assert_eq!(
            evidence_paths(&BYPASSES[0]),
            [
                "admission/hami-bypass-b1.json",
                "pods/hami-bypass-b1.json",
                "probe/hami-bypass-b1.json"
            ]
        );
        let step = plan_step(&BYPASSES[2], "lab", 8000);
        assert!(
            step.action.contains("lab/hami-bypass-b3"),
            "{}",
            step.action
        );
        assert!(step.why.contains("8000 MiB slice"), "{}", step.why);
    }
}
