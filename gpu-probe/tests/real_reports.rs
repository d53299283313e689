//! The reports recorded on the H100 (tests/data) still parse with today's types, and today's
//! decision code reaches the same outcomes from their numbers.

use gpu_probe::cap::redecide;
use gpu_probe::report::{CapOutcome, Outcome, Report, SCHEMA, ViewOutcome};

fn load(name: &str) -> Report {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} does not parse: {e}"))
}

#[test]
fn bare_h100_all_report_redecides_the_same() {
    let r = load("h100-bare-all-expect-8000.json");
    assert_eq!(r.schema, SCHEMA);
    assert_eq!(r.verdict.outcome, Outcome::NotVerified);
    let view = r.view.expect("view");
    let d = &view.devices[0];
    assert_eq!(gpu_probe::view::decide(d).0, ViewOutcome::ShowsFullCard);
    assert_eq!(d.outcome, ViewOutcome::ShowsFullCard);
    let c = &r.cap.expect("cap").devices[0];
    assert_eq!(redecide(c).0, CapOutcome::NotEnforced);
    assert_eq!(c.alloc_calls as usize, c.steps.len());
    assert_eq!(
        c.steps.last().map(|s| s.held_after_bytes),
        Some(c.held_bytes)
    );
}

#[test]
fn view_and_ceiling_reports_parse() {
    let v = load("h100-bare-view-env-limit-8000m.json");
    assert_eq!(v.expected[0].source, "CUDA_DEVICE_MEMORY_LIMIT_0");
    let c = load("h100-bare-cap-ceiling-3000.json");
    assert_eq!(
        c.cap.expect("cap").devices[0].outcome,
        CapOutcome::Inconclusive
    );
}

#[test]
fn bare_h100_audit_redecides_every_path_the_same() {
    use gpu_probe::audit::{PathRun, decide};
    for name in [
        "h100-bare-audit-expect-4000.json",
        "h100-bare-audit-expect-8000.json",
    ] {
        let a = load(name).audit.expect("audit");
        assert_eq!(a.paths.len(), 9, "{name}");
        for p in &a.paths {
            let run = PathRun {
                path: p.path.clone(),
                not_applicable: (p.outcome == gpu_probe::report::AuditOutcome::NotApplicable)
                    .then(|| p.note.clone()),
                held_bytes: p.held_bytes,
                first_refusal: p.refusal.clone(),
                calls: p.calls,
                all_freed: true,
            };
            assert_eq!(
                decide(&run, a.slice_bytes).outcome,
                p.outcome,
                "{name}: {}",
                p.path
            );
        }
    }
}

#[test]
fn filling_the_h100_is_inconclusive_not_enforced() {
    let r = load("h100-bare-cap-fill-card.json");
    let c = &r.cap.expect("cap").devices[0];
    assert_eq!(c.outcome, CapOutcome::Inconclusive);
    assert_eq!(redecide(c).0, CapOutcome::Inconclusive);
}

#[test]
fn a_non_hami_library_failed_the_real_selftest() {
    let t = load("h100-selftest-libz-not-hami.json")
        .selftest
        .expect("selftest");
    assert_eq!(t.outcome, Outcome::NotVerified);
    assert_eq!(t.sharing_capped, Some(false));
}

#[test]
fn overhead_and_compute_reports_parse() {
    let o = load("h100-bare-overhead.json").overhead.expect("overhead");
    assert_eq!(o.alloc.len(), 3);
    let c = load("h100-bare-compute-5s.json").compute.expect("compute");
    assert!(!c.windows.is_empty());
}

/// Under real CUDA MPS on the H200: the reports re-decide the same from their own numbers, the
/// method is MPS, and no context cost is made of the card's total.
#[test]
fn real_mps_reports_redecide_as_mps() {
    use gpu_probe::report_conformance::SharingMethod;
    for name in [
        "mps/mps-env-limit-8000.json",
        "mps/mps-daemon-limit-6000.json",
    ] {
        let r = load(name);
        assert_eq!(r.verdict.outcome, Outcome::Verified, "{name}");
        assert_eq!(
            r.method.as_ref().map(|m| m.method),
            Some(SharingMethod::CudaMps),
            "{name}"
        );
        let v = &r.view.as_ref().expect("view").devices[0];
        assert_eq!(
            gpu_probe::view::decide_mps(v).0,
            ViewOutcome::ShowsSlice,
            "{name}"
        );
        let c = &r.cap.as_ref().expect("cap").devices[0];
        assert_eq!(redecide(c).0, CapOutcome::Enforced, "{name}");
        assert_eq!(c.context_overhead_bytes, None);
        assert!(c.held_bytes <= r.expected[0].bytes);
    }
    // Re-run with the check that connects to the socket: the daemon that quit left its socket
    // behind (pipe-directory-after-quit.txt), and it is no longer taken for a running one.
    let bare = load("mps/bare-after-mps-expect-8000.json");
    assert_eq!(bare.verdict.outcome, Outcome::NotVerified);
    let m = bare.method.as_ref().expect("method");
    assert_eq!(m.method, SharingMethod::None);
    assert!(
        m.evidence
            .iter()
            .all(|e| !e.contains("control daemon is running")),
        "{:?}",
        m.evidence
    );
    // The client with its own limit: MPS, named from NVML's client list.
    let client = load("mps/mps-env-limit-8000.json");
    assert_eq!(client.verdict.outcome, Outcome::Verified);
    let mps = client
        .method
        .as_ref()
        .and_then(|m| m.mps.clone())
        .expect("mps facts");
    assert_eq!(mps.client_connected, Some(true));
}

/// The conformance reports: every cell that failed its claim is a failed check, every check is
/// a cell, and the revisions measured here are the ones the README names.
#[test]
fn real_conformance_reports_hold_together() {
    use gpu_probe::report::CheckStatus;
    use gpu_probe::report_conformance::CellOutcome;
    for rev in ["8f3a89c", "5091a2f", "ecbf908", "c0f9da6"] {
        let r = load(&format!("conformance/{rev}-1gpu.json"));
        let c = r.conformance.as_ref().expect("conformance");
        assert_eq!(c.revision.as_deref(), Some(rev));
        assert!(c.all_freed, "{rev}");
        for cell in &c.cells {
            let check = r
                .checks
                .iter()
                .find(|k| k.id == format!("conformance.{}", cell.id));
            match cell.outcome {
                CellOutcome::NotApplicable => assert!(check.is_none(), "{rev} {}", cell.id),
                o if o.is_failure() => {
                    assert_eq!(
                        check.map(|k| k.status),
                        Some(CheckStatus::Failed),
                        "{rev} {}",
                        cell.id
                    )
                }
                _ => assert!(check.is_some(), "{rev} {}", cell.id),
            }
        }
        assert_eq!(
            r.verdict.outcome,
            Outcome::NotVerified,
            "{rev}: escapes fail it"
        );
    }
    // The newest and the v2.9 core agree cell by cell on memory.
    let new = load("conformance/8f3a89c-1gpu.json");
    let old = load("conformance/5091a2f-1gpu.json");
    let outcome = |r: &Report, id: &str| {
        r.conformance
            .as_ref()
            .and_then(|c| c.cells.iter().find(|x| x.id == id))
            .map(|x| x.outcome)
    };
    for id in [
        "limit.typical",
        "path.cuMemAllocFromPoolAsync",
        "path.cuArrayCreate_v2",
        "spelling.08g",
        "sharing.two-processes",
    ] {
        assert_eq!(outcome(&new, id), outcome(&old, id), "{id}");
    }
}

/// `compute` under /etc/ld.so.preload with its own baseline: the check follows the band.
#[test]
fn real_sm_limit_reports_fail_outside_their_band() {
    use gpu_probe::report::CheckStatus;
    for name in [
        "compute/preload-compute-sm50-run1.json",
        "compute/preload-compute-sm50-run2.json",
    ] {
        let r = load(name);
        let c = r.compute.as_ref().expect("compute");
        let cmp = c.comparison.as_ref().expect("comparison");
        assert!(!cmp.within_band, "{name}: {}", cmp.ratio);
        let check = r.checks.iter().find(|k| k.id == "compute").expect("check");
        assert_eq!(check.status, CheckStatus::Failed);
        assert!(
            (cmp.ratio - c.kernels_per_second_mean / cmp.baseline_kernels_per_second).abs() < 1e-9
        );
    }
}
