//! The reports recorded on the H100 (tests/data) still parse with today's types, and today's
//! decision code reaches the same outcomes from their numbers.

use gpu_probe::cap::{CapEvidence, SearchResult, decide};
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
    let result = SearchResult {
        held: c.held_bytes,
        steps: c.steps.clone(),
        stopped_because: c.stopped_because,
        first_refusal: c.first_refusal.clone(),
        unexpected: None,
        handles: vec![],
    };
    let ev = CapEvidence {
        expected: c.expected_bytes,
        result: &result,
        resolution: c.resolution_bytes,
        ceiling: c.ceiling_bytes,
        start: c.start_mem_info,
        oom_lines: &c.hami_oom_lines,
        nvml_at_refusal: c.nvml_at_first_refusal,
        device: c.index,
    };
    assert_eq!(decide(&ev).0, CapOutcome::NotEnforced);
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
    let result = SearchResult {
        held: c.held_bytes,
        steps: c.steps.clone(),
        stopped_because: c.stopped_because,
        first_refusal: c.first_refusal.clone(),
        unexpected: None,
        handles: vec![],
    };
    let ev = CapEvidence {
        expected: c.expected_bytes,
        result: &result,
        resolution: c.resolution_bytes,
        ceiling: c.ceiling_bytes,
        start: c.start_mem_info,
        oom_lines: &c.hami_oom_lines,
        nvml_at_refusal: c.nvml_at_first_refusal,
        device: c.index,
    };
    assert_eq!(decide(&ev).0, CapOutcome::Inconclusive);
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
