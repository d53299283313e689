//! `gpu-probe selftest --lib PATH`: checks a HAMi-core library against this node's driver without
//! Kubernetes — "is HAMi-core still working here after a driver upgrade?".
//!
//! It starts gpu-probe itself as a child with the library injected the way a HAMi pod has it
//! (`LD_PRELOAD`, `CUDA_REDIRECT` so the library finds itself, the limit env, a shared region file
//! in a fresh temporary directory), takes that child's view/cap/mechanism verdict, then runs two
//! processes sharing one slice. A missing library or one that is not HAMi-core gives a clear
//! failure, never a pass.

use std::path::Path;
use std::time::Duration;

use lab_runner::{Cmd, Runner};

use crate::probe::{self, Options};
use crate::report::{
    CapOutcome, MIB, MechanismOutcome, Outcome, Report, SelftestSection, ViewOutcome,
};

/// The environment a HAMi pod gives its containers, for `lib` and a `limit_mib` slice.
pub fn injected_env(lib: &str, limit_mib: u64, region: &Path) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), lib.into()),
        ("CUDA_REDIRECT".into(), lib.into()),
        ("CUDA_DEVICE_MEMORY_LIMIT".into(), format!("{limit_mib}m")),
        (
            "CUDA_DEVICE_MEMORY_SHARED_CACHE".into(),
            region.display().to_string(),
        ),
        ("CUDA_DEVICE_SM_LIMIT".into(), "0".into()),
        ("LIBCUDA_LOG_LEVEL".into(), "1".into()),
    ]
}

/// Decides the selftest from the child's report and the sharing run (pure).
pub fn decide(
    lib: &str,
    limit_mib: u64,
    child: Result<&Report, &str>,
    sharing: Option<(u64, u64, bool)>,
) -> SelftestSection {
    let mut t = SelftestSection {
        library: lib.into(),
        limit_mib,
        library_found: true,
        child_verdict: None,
        view_outcome: None,
        cap_outcome: None,
        cap_held_bytes: None,
        mechanism_outcome: None,
        sharing_holder_bytes: sharing.map(|s| s.0),
        sharing_prober_held_bytes: sharing.map(|s| s.1),
        sharing_capped: sharing.map(|s| s.2),
        outcome: Outcome::NotVerified,
        reasons: Vec::new(),
    };
    let report = match child {
        Ok(r) => r,
        Err(e) => {
            t.outcome = Outcome::Environment;
            t.reasons.push(format!(
                "the probe with the library injected did not produce a report: {e}"
            ));
            return t;
        }
    };
    t.child_verdict = Some(report.verdict.clone());
    t.view_outcome = report
        .view
        .as_ref()
        .and_then(|v| v.devices.first())
        .map(|d| d.outcome);
    let cap = report.cap.as_ref().and_then(|c| c.devices.first());
    t.cap_outcome = cap.map(|c| c.outcome);
    t.cap_held_bytes = cap.map(|c| c.held_bytes);
    t.mechanism_outcome = report.mechanism.as_ref().map(|m| m.outcome);
    if report.verdict.outcome == Outcome::Environment {
        t.outcome = Outcome::Environment;
        t.reasons.push(format!(
            "the probe could not run: {}",
            report.verdict.summary
        ));
        return t;
    }
    let mut ok = true;
    if t.mechanism_outcome != Some(MechanismOutcome::HamiCoreActive) {
        ok = false;
        let why = report
            .mechanism
            .as_ref()
            .and_then(|m| m.reasons.first().cloned())
            .unwrap_or_default();
        t.reasons
            .push(format!("{lib} does not act as HAMi-core here: {why}"));
    }
    if t.view_outcome != Some(ViewOutcome::ShowsSlice) {
        ok = false;
        t.reasons.push(format!(
            "the view does not show the {limit_mib} MiB slice ({:?})",
            t.view_outcome
        ));
    }
    match (t.cap_outcome, cap) {
        (Some(CapOutcome::Enforced), Some(c)) => {
            t.reasons.push(format!(
                "the cap holds: refused after {:.0} MiB of {limit_mib} MiB",
                crate::report::mib(c.held_bytes)
            ));
        }
        (other, _) => {
            ok = false;
            t.reasons
                .push(format!("the cap is not enforced ({other:?})"));
        }
    }
    match sharing {
        Some((holder, total, true)) => t.reasons.push(format!(
            "two processes share the slice: together {:.0} MiB (holder {:.0} MiB) ≤ {limit_mib} MiB",
            crate::report::mib(total),
            crate::report::mib(holder)
        )),
        Some((holder, total, false)) => {
            ok = false;
            t.reasons.push(format!(
                "two processes together held {:.0} MiB (holder {:.0} MiB), more than the {limit_mib} MiB slice",
                crate::report::mib(total),
                crate::report::mib(holder)
            ));
        }
        None => {
            ok = false;
            t.reasons.push("the two-process check did not run".into());
        }
    }
    if ok {
        t.outcome = Outcome::Verified;
    }
    t
}

/// Runs the selftest. `opts.worker_exe` is this gpu-probe binary.
pub fn run(opts: &Options, lib: &str, limit_mib: u64, runner: &dyn Runner) -> SelftestSection {
    if !Path::new(lib).is_file() {
        let mut t = decide(lib, limit_mib, Err("not run"), None);
        t.library_found = false;
        t.outcome = Outcome::Environment;
        t.reasons = vec![format!(
            "{lib} does not exist: on a HAMi node the library is /usr/local/vgpu/libvgpu.so (or libvgpu.so.<version>) once the device plugin has started"
        )];
        return t;
    }
    let dir = std::env::temp_dir().join(format!("gpu-probe-selftest-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let env = injected_env(lib, limit_mib, &dir.join("selftest.cache"));
    let mut child = Cmd::new(opts.worker_exe.display().to_string())
        .args([
            "all",
            "--expect-mib",
            &limit_mib.to_string(),
            "--output",
            "json",
            "--progress-events",
        ])
        .timeout(opts.bound(opts.time_bound + Duration::from_secs(180)));
    for (k, v) in &env {
        child = child.env(k, v);
    }
    let report: Result<Report, String> = probe::run_relaying(runner, &child, &opts.progress)
        .map_err(|e| e.to_string())
        .and_then(|o| {
            serde_json::from_str(&o.stdout).map_err(|e| format!("{e}; stderr: {}", o.stderr.trim()))
        });
    let sharing = report
        .as_ref()
        .ok()
        .filter(|r| r.verdict.outcome != Outcome::Environment)
        .map(|_| {
            let slice = limit_mib * MIB;
            let (run, holder) = probe::two_processes(
                opts,
                0,
                slice / 2,
                Some(slice),
                slice + slice / 4,
                runner,
                &env,
            );
            (
                holder,
                run.held_bytes,
                run.not_applicable.is_none()
                    && run.held_bytes <= slice
                    && run.first_refusal.is_some(),
            )
        });
    let _ = std::fs::remove_dir_all(&dir);
    decide(
        lib,
        limit_mib,
        report.as_ref().map_err(String::as_str),
        sharing,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CapSection, Check, CheckStatus, Verdict};

    fn child_report(mechanism: MechanismOutcome, view: ViewOutcome, cap: CapOutcome) -> Report {
        let bare: Report =
            serde_json::from_str(include_str!("../tests/data/h100-bare-all-expect-8000.json"))
                .expect("real report");
        let mut r = bare;
        if let Some(m) = r.mechanism.as_mut() {
            m.outcome = mechanism;
        }
        if let Some(v) = r.view.as_mut() {
            v.devices[0].outcome = view;
        }
        let mut c: CapSection = r.cap.clone().expect("cap");
        c.devices[0].outcome = cap;
        c.devices[0].held_bytes = 7482 * MIB;
        r.cap = Some(c);
        let status = if cap == CapOutcome::Enforced {
            CheckStatus::Passed
        } else {
            CheckStatus::Failed
        };
        r.checks = vec![Check {
            id: "cap.device0".into(),
            claim: String::new(),
            status,
            reason: String::new(),
            environment: false,
        }];
        r.verdict = Verdict::from_checks(&r.checks);
        r
    }

    #[test]
    fn a_working_hami_core_passes() {
        let r = child_report(
            MechanismOutcome::HamiCoreActive,
            ViewOutcome::ShowsSlice,
            CapOutcome::Enforced,
        );
        let t = decide(
            "/usr/local/vgpu/libvgpu.so",
            8000,
            Ok(&r),
            Some((4000 * MIB, 7900 * MIB, true)),
        );
        assert_eq!(t.outcome, Outcome::Verified, "{:?}", t.reasons);
    }

    #[test]
    fn a_library_that_is_not_hami_core_fails_clearly() {
        // e.g. --lib /lib/x86_64-linux-gnu/libz.so.1: the probe runs, nothing is hooked.
        let r = child_report(
            MechanismOutcome::Partial,
            ViewOutcome::ShowsFullCard,
            CapOutcome::NotEnforced,
        );
        let t = decide(
            "/lib/libz.so.1",
            8000,
            Ok(&r),
            Some((4000 * MIB, 10_000 * MIB, false)),
        );
        assert_eq!(t.outcome, Outcome::NotVerified);
        assert!(
            t.reasons
                .iter()
                .any(|r| r.contains("does not act as HAMi-core")),
            "{:?}",
            t.reasons
        );
        assert!(
            t.reasons
                .iter()
                .any(|r| r.contains("more than the 8000 MiB slice")),
            "{:?}",
            t.reasons
        );
    }

    #[test]
    fn a_missing_library_is_an_environment_failure_with_the_usual_path() {
        let opts = Options {
            command: crate::probe::Command::All,
            slice: crate::limits::SliceRequest::FromEnv,
            ceiling_mib: None,
            resolution_mib: 2,
            step_mib: 1024,
            time_bound: Duration::from_secs(1),
            nvidia_smi: false,
            worker_exe: "gpu-probe".into(),
            compute_seconds: 1.0,
            audit_device: 0,
            deadline: None,
            sm_band_pct: crate::probe::DEFAULT_SM_BAND_PCT,
            baseline_kps: None,
            physical_free_mib: None,
            progress: lab_runner::progress::Progress::hidden(),
            bypass: crate::bypass::BypassOptions::default(),
        };
        let fake = lab_runner::RecordingRunner::new(&[]);
        let t = run(&opts, "/nonexistent/libvgpu.so", 8000, &fake);
        assert_eq!(t.outcome, Outcome::Environment);
        assert!(!t.library_found);
        assert!(t.reasons[0].contains("/usr/local/vgpu/libvgpu.so"));
        assert!(
            fake.calls().is_empty(),
            "nothing is started for a missing library"
        );
    }

    #[test]
    fn the_injected_env_mirrors_a_hami_pod() {
        let env = injected_env("/opt/libvgpu.so", 8000, Path::new("/tmp/x/r.cache"));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CUDA_DEVICE_MEMORY_LIMIT"), Some("8000m"));
        assert_eq!(get("CUDA_REDIRECT"), Some("/opt/libvgpu.so"));
        assert_eq!(
            get("CUDA_DEVICE_MEMORY_SHARED_CACHE"),
            Some("/tmp/x/r.cache")
        );
    }

    #[test]
    fn no_report_is_an_environment_failure() {
        let t = decide("/x.so", 8000, Err("crashed"), None);
        assert_eq!(t.outcome, Outcome::Environment);
    }
}
