//! Tests of the conformance decisions on real child reports (gpu-probe under real HAMi-core on an
//! H200, `tests/data/h200-hami-core`) and on simulated child ends (crashes, timeouts), and of
//! the matrix run end to end against a scripted runner.

use super::*;
use crate::report::{CudaErrorInfo, OomLine};
use crate::testdata::local;

fn h200(name: &str) -> String {
    local(&format!("h200-hami-core/{name}"))
}

/// A writer the test reads back (the matrix's progress lines).
#[derive(Clone, Default)]
struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn exited(code: i32, stderr: &str) -> ChildEnd {
    ChildEnd::Exited(Output {
        code: Some(code),
        stdout: String::new(),
        stderr: stderr.to_owned(),
    })
}

fn devices(n: u32) -> Vec<ConformanceDevice> {
    (0..n)
        .map(|i| ConformanceDevice {
            index: i,
            name: Some("NVIDIA H200".into()),
            uuid: Some(format!("GPU-{i}")),
            total_bytes: Some(143_771 * MIB),
        })
        .collect()
}

fn plan_of(id: &str, n: u32) -> CellPlan {
    let o = ConformanceOptions::new("/x/libvgpu.so", "gpu-probe".into());
    plan(&devices(n), &o)
        .into_iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("no cell {id}"))
}

#[test]
fn the_plan_covers_every_part_of_the_matrix() {
    let o = ConformanceOptions::new("/x/libvgpu.so", "gpu-probe".into());
    let one = plan(&devices(1), &o);
    let ids: Vec<&str> = one.iter().map(|p| p.id.as_str()).collect();
    for id in [
        "limit.below-context",
        "limit.small",
        "limit.typical",
        "limit.larger-than-card",
        "spelling.4Gi",
        "spelling.08g",
        "paths.audit",
        "bypass.audit",
        "robustness.vmm-host-location",
        "robustness.alloc-without-context",
        "devices.each-own-limit",
        "devices.one-without-limit",
        "compute.baseline",
        "compute.sm-25",
        "compute.sm-50",
        "compute.sm-100",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let larger = one
        .iter()
        .find(|p| p.id == "limit.larger-than-card")
        .and_then(|p| p.slice_bytes)
        .expect("slice");
    assert!(larger > 143_771 * MIB, "{larger}");
    let spelling = one.iter().find(|p| p.id == "spelling.4Gi").expect("4Gi");
    assert_eq!(spelling.predicted_limit_bytes, Some(4));
    assert_eq!(spelling.slice_bytes, Some(4096 * MIB));
    // One GPU: the "one without a limit" cell needs two; with two it runs, with both limits set
    // in the "each its own" cell.
    assert_eq!(
        one.iter()
            .find(|p| p.id == "devices.one-without-limit")
            .map(|p| &p.kind),
        Some(&CellKind::NeedsDevices(2))
    );
    let two = plan(&devices(2), &o);
    let own = two
        .iter()
        .find(|p| p.id == "devices.each-own-limit")
        .expect("own");
    assert_eq!(own.env.len(), 2);
    assert!(matches!(
        two.iter()
            .find(|p| p.id == "devices.one-without-limit")
            .map(|p| &p.kind),
        Some(CellKind::All { .. })
    ));
}

#[test]
fn a_real_enforced_report_is_a_capped_cell_with_its_numbers_and_log_lines() {
    let p = plan_of("limit.typical", 1);
    let end = exited(0, &h200("h1-8000.err"));
    let c = decide_cap_cell(&p, &end, Some(&h200("h1-8000.json")));
    assert_eq!(c.outcome, CellOutcome::Capped, "{}", c.note);
    assert_eq!(c.held_bytes, Some(7482 * MIB));
    assert_eq!(c.enforced_limit_bytes, Some(8000 * MIB));
    assert!(c.note.contains("HAMi-core's limit check"), "{}", c.note);
    assert!(!c.log_lines.is_empty(), "the library's lines are kept");
    let check = cell_check(&c).expect("a check");
    assert_eq!(check.status, CheckStatus::Passed);
    assert_eq!(check.id, "conformance.limit.typical");
}

#[test]
fn the_bare_card_report_is_an_escaped_cell() {
    let p = plan_of("limit.typical", 1);
    let c = decide_cap_cell(&p, &exited(1, ""), Some(&h200("h2-bare.json")));
    assert_eq!(c.outcome, CellOutcome::Escaped);
    assert_eq!(c.past_slice_bytes, Some(2000 * MIB));
    assert_eq!(cell_check(&c).map(|c| c.status), Some(CheckStatus::Failed));
}

#[test]
fn crashes_and_timeouts_are_named() {
    let p = plan_of("limit.small", 1);
    let c = decide_cap_cell(&p, &ChildEnd::TimedOut(Duration::from_secs(60)), None);
    assert_eq!(c.outcome, CellOutcome::Hung);
    let killed = ChildEnd::Exited(Output {
        code: None,
        stdout: String::new(),
        stderr: "Segmentation fault".into(),
    });
    let c = decide_cap_cell(&p, &killed, None);
    assert_eq!(c.outcome, CellOutcome::Crashed);
    assert!(
        c.note.contains("killed by a signal") && c.note.contains("Segmentation"),
        "{}",
        c.note
    );
    // A report whose worker died under the library is a crash of the cell, not a measurement.
    let mut r: Report = serde_json::from_str(&h200("h1-1024.json")).expect("report");
    r.checks.push(Check {
        id: "cuda".into(),
        claim: String::new(),
        status: CheckStatus::Failed,
        reason: "the CUDA worker could not run: `gpu-probe __worker …` did not finish within 55s and was killed".into(),
        environment: true,
    });
    let c = decide_cap_cell(
        &p,
        &exited(3, ""),
        Some(&serde_json::to_string(&r).expect("json")),
    );
    assert_eq!(c.outcome, CellOutcome::Hung, "{}", c.note);
    assert_eq!(cell_check(&c).map(|c| c.status), Some(CheckStatus::Failed));
}

#[test]
fn a_misread_spelling_is_reported_with_the_limit_enforced_and_the_prediction() {
    // `1.5g`: HAMi-core reads 1 GiB (strtoul stops at the dot). Simulated from the real 1024m
    // report, whose OOM line names 1 GiB.
    let p = plan_of("spelling.1.5g", 1);
    let c = decide_cap_cell(&p, &exited(0, ""), Some(&h200("h1-1024.json")));
    assert_eq!(c.outcome, CellOutcome::Capped, "{}", c.note);
    assert_eq!(c.enforced_limit_bytes, Some(1024 * MIB));
    assert_eq!(c.predicted_limit_bytes, Some(1024 * MIB));
    assert!(
        c.note.contains("the probe predicted 1073741824 bytes"),
        "{}",
        c.note
    );
    assert_eq!(cell_check(&c).map(|c| c.status), Some(CheckStatus::Passed));
    // Had the library enforced something else, the probe's model is wrong: a failed check.
    let p = plan_of("spelling.8GB", 1);
    let c = decide_cap_cell(&p, &exited(0, ""), Some(&h200("h1-1024.json")));
    assert!(c.note.contains("WRONG"), "{}", c.note);
    assert_eq!(cell_check(&c).map(|c| c.status), Some(CheckStatus::Failed));
}

#[test]
fn the_real_audit_gives_a_cell_per_path_with_the_two_escapes() {
    let p = plan_of("paths.audit", 1);
    let cells = audit_cells(
        &p,
        &exited(1, &h200("h4-audit.err")),
        Some(&h200("h4-audit.json")),
    );
    assert_eq!(cells.len(), AUDIT_PATHS.len());
    let by = |id: &str| {
        cells
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("{id}"))
            .outcome
    };
    assert_eq!(by("path.cuMemAlloc_v2"), CellOutcome::Capped);
    assert_eq!(by("path.cuMemAllocFromPoolAsync"), CellOutcome::Escaped);
    assert_eq!(by("path.cuArrayCreate_v2"), CellOutcome::Escaped);
    assert!(
        cells
            .iter()
            .all(|c| c.id != "path.child-with-a-cleared-environment"),
        "the cleared environment is a bypass cell now"
    );
    assert_eq!(by("path.cuMemAllocManaged"), CellOutcome::NotApplicable);
    assert_eq!(by("sharing.two-processes"), CellOutcome::Capped);
    let failed: Vec<String> = cells
        .iter()
        .filter_map(cell_check)
        .filter(|c| c.status == CheckStatus::Failed)
        .map(|c| c.id)
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        cells
            .iter()
            .filter_map(cell_check)
            .all(|c| c.id != "conformance.path.cuMemAllocManaged"),
        "a path that was not applicable is no claim"
    );
    // A crashed audit still gives every path a cell, each crashed.
    let crashed = audit_cells(&p, &ChildEnd::TimedOut(Duration::from_secs(60)), None);
    assert_eq!(crashed.len(), AUDIT_PATHS.len());
    assert!(crashed.iter().all(|c| c.outcome == CellOutcome::Hung));
}

/// An audit report made before the bypass rows has only the cleared-environment child among
/// them: that cell is its row, the others say the audit had no such row, and a crashed audit
/// gives every bypass cell its fate.
#[test]
fn bypass_cells_from_an_audit_without_the_newer_rows() {
    let p = plan_of("bypass.audit", 1);
    assert_eq!(p.kind, CellKind::Bypass);
    let cells = bypass_cells(
        &p,
        &exited(1, &h200("h4-audit.err")),
        Some(&h200("h4-audit.json")),
    );
    assert_eq!(cells.len(), crate::bypass::ROWS.len());
    assert!(cells.iter().all(|c| c.group == CellGroup::Bypass));
    let cleared = cells
        .iter()
        .find(|c| c.id == "bypass.cleared-environment")
        .expect("cleared");
    assert_eq!(cleared.outcome, CellOutcome::Escaped);
    assert_eq!(cleared.past_slice_bytes, Some(2000 * MIB));
    let tamper = cells
        .iter()
        .find(|c| c.id == "bypass.region-tamper")
        .expect("tamper");
    assert_eq!(tamper.outcome, CellOutcome::NotApplicable);
    assert!(tamper.note.contains("no such row"));
    assert_eq!(cells.iter().filter_map(cell_check).count(), 1);
    let hung = bypass_cells(&p, &ChildEnd::TimedOut(Duration::from_secs(30)), None);
    assert!(hung.iter().all(|c| c.outcome == CellOutcome::Hung));
}

#[test]
fn two_devices_each_held_to_its_own_limit_from_the_real_two_gpu_report() {
    let mut p = plan_of("devices.each-own-limit", 2);
    // h7-two.json ran with 8000m and 20000m.
    p.env = vec![limit_env(0, "8000m"), limit_env(1, "20000m")];
    let c = decide_cap_cell(
        &p,
        &exited(0, ""),
        Some(&local("h200-hami-core/h7-two.json")),
    );
    assert_eq!(c.outcome, CellOutcome::Capped, "{}", c.note);
    assert!(
        c.note
            .contains("device 1: held 19482 MiB of its 20000 MiB slice"),
        "{}",
        c.note
    );
}

#[test]
fn a_device_without_a_limit_beside_a_limited_one_escapes_and_the_probe_fails_it() {
    // Simulated from the real two-device report: device 1 without a limit, searched up to the
    // largest slice × 1.25 and never refused; the probe's own check names the hole.
    let mut r: Report = serde_json::from_str(&local("h200-hami-core/h7-two.json")).expect("r");
    let cap = r.cap.as_mut().expect("cap");
    cap.devices[1].held_bytes = 10_000 * MIB;
    cap.devices[1].ceiling_bytes = 10_000 * MIB;
    cap.devices[1].hami_oom_lines.clear();
    cap.devices[1].first_refusal = None;
    for c in &mut r.checks {
        if c.id == "cap.device1" {
            c.status = CheckStatus::Failed;
            c.reason = "NO SLICE: device 1 has no slice while HAMi-core limits device 0".into();
        }
    }
    let p = plan_of("devices.one-without-limit", 2);
    let c = decide_cap_cell(
        &p,
        &exited(1, ""),
        Some(&serde_json::to_string(&r).expect("j")),
    );
    assert_eq!(c.outcome, CellOutcome::Escaped, "{}", c.note);
    assert!(
        c.note.contains("device 1: no slice, held 10000 MiB"),
        "{}",
        c.note
    );
    assert!(c.note.contains("gpu-probe FAILS it"), "{}", c.note);
}

#[test]
fn compute_cells_inside_above_and_below_the_band() {
    let mut r: Report =
        serde_json::from_str(include_str!("../../tests/data/h100-bare-compute-5s.json"))
            .expect("r");
    let p = plan_of("compute.sm-50", 1);
    let mut with = |ratio: f64| {
        let c = r.compute.as_mut().expect("compute");
        c.comparison = Some(crate::report_conformance::ComputeComparison {
            baseline_kernels_per_second: 1000.0,
            baseline_source: "test".into(),
            limited_kernels_per_second: 1000.0 * ratio,
            ratio,
            expected_ratio: 0.5,
            band_percentage_points: 10.0,
            within_band: (ratio - 0.5).abs() <= 0.1,
        });
        decide_compute_cell(
            &p,
            &exited(0, ""),
            Some(&serde_json::to_string(&r).expect("j")),
        )
    };
    assert_eq!(with(0.55).outcome, CellOutcome::Capped);
    let above = with(0.97);
    assert_eq!(above.outcome, CellOutcome::Escaped);
    assert!(above.note.contains("97% of the baseline"), "{}", above.note);
    assert_eq!(with(0.2).outcome, CellOutcome::Throttled);
}

#[test]
fn robustness_cells_from_a_worker_that_died_or_answered() {
    let p = plan_of("robustness.alloc-without-context", 1);
    let died = ChildEnd::Exited(Output {
        code: None,
        stdout: String::new(),
        stderr: "[HAMI-core ERROR (pid:7 thread=8 multiprocess_memory_limit.c:1271)]: Illegal device id: -644371744\n".into(),
    });
    let c = decide_robustness_cell(&p, &died);
    assert_eq!(c.outcome, CellOutcome::Crashed);
    assert_eq!(c.log_lines.len(), 1);
    let run = crate::robustness::RobustnessRun {
        probe: crate::robustness::NO_CONTEXT.into(),
        not_tried: None,
        result: Some(CudaErrorInfo {
            code: 201,
            name: "CUDA_ERROR_INVALID_CONTEXT".into(),
        }),
        detail: "cuMemAlloc_v2 … returned CUDA_ERROR_INVALID_CONTEXT (201)".into(),
        before: crate::robustness::RegionSnapshot::default(),
        during: crate::robustness::RegionSnapshot::default(),
        after: crate::robustness::RegionSnapshot::default(),
        still_allocates: true,
    };
    let out = crate::worker::WorkerOutput {
        robustness: Some(run),
        ..crate::worker::WorkerOutput::default()
    };
    let answered = ChildEnd::Exited(Output {
        code: Some(0),
        stdout: crate::worker::render(&out),
        stderr: String::new(),
    });
    let c = decide_robustness_cell(&p, &answered);
    assert_eq!(c.outcome, CellOutcome::Intact, "{}", c.note);
    assert_eq!(
        c.refusal.as_deref(),
        Some("CUDA_ERROR_INVALID_CONTEXT (201)")
    );
}

#[test]
fn the_matrix_renders_one_row_per_cell_and_one_column_per_report() {
    let p = plan_of("limit.typical", 1);
    let capped = decide_cap_cell(&p, &exited(0, ""), Some(&h200("h1-8000.json")));
    let escaped = decide_cap_cell(&p, &exited(1, ""), Some(&h200("h2-bare.json")));
    let section = |cells: Vec<ConformanceCell>| ConformanceSection {
        library: "/x".into(),
        library_sha256: None,
        revision: None,
        injection: String::new(),
        devices: devices(1),
        cells,
        seconds: 1.0,
        all_freed: true,
    };
    let (a, b) = (section(vec![capped]), section(vec![escaped]));
    let md = markdown_matrix(&[("new".into(), &a), ("old".into(), &b)]);
    assert!(
        md.starts_with("| cell | new | old |\n|---|---|---|\n"),
        "{md}"
    );
    assert!(
        md.contains("| capped 7482/8000 | ESCAPED 10000/8000 |"),
        "{md}"
    );
    // A cell whose child was killed is never shown as a plain "n/a" with numbers.
    let mut killed = blank(&p);
    killed.held_bytes = Some(0);
    killed.note = "could not run: `x` did not finish within 28s and was killed".into();
    let c = section(vec![killed]);
    let md = markdown_matrix(&[("old".into(), &c)]);
    assert!(
        md.contains("| n/a (its child was killed at its bound) |"),
        "{md}"
    );
}

/// A card whose memory comes back after every cell (or never, with `leaks`).
struct FakeCard {
    leaks: bool,
    calls: std::sync::atomic::AtomicU64,
}

impl Card for FakeCard {
    fn devices(&self) -> Vec<ConformanceDevice> {
        devices(1)
    }
    fn used(&self) -> Option<Vec<u64>> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(vec![if self.leaks && n > 0 { 4096 * MIB } else { 0 }])
    }
    fn free_mib(&self, _: u32) -> Option<u64> {
        Some(143_000)
    }
    fn driver_version(&self) -> Option<String> {
        Some("580.159.04".into())
    }
}

/// The whole matrix against scripted children: real reports for the typical limit and the
/// audit, a crash for everything else. Every cell is there, each child bounded and given a
/// clean environment, and the verdict follows from the cells.
#[test]
fn run_end_to_end_with_scripted_children() {
    let dir = tempfile::tempdir().expect("tmp");
    let lib = dir.path().join("libvgpu.so");
    std::fs::write(&lib, b"a library").expect("write");
    let fake = lab_runner::RecordingRunner::new(&["gpu-probe"]);
    // First match wins: the specific answers before the catch-all crash.
    // A child probe runs with --progress-events: its event lines come with its stderr.
    let event = lab_runner::progress::Event {
        task: "cap device 0".into(),
        pos: 1024,
        len: Some(10000),
        unit: "MiB".into(),
        msg: "+1024 MiB held".into(),
        done: false,
    };
    fake.reply(
        "--expect-mib 8000",
        0,
        &h200("h1-8000.json"),
        &format!("{}\n{}", event.to_line(), h200("h1-8000.err")),
    );
    fake.reply("audit --output json", 1, &h200("h4-audit.json"), "");
    fake.reply("all --output json", 139, "", "Segmentation fault");
    let mut o = ConformanceOptions::new(&lib.display().to_string(), "gpu-probe".into());
    o.revision = Some("8f3a89c".into());
    o.settle = Duration::from_millis(20);
    o.lock_dir = dir.path().join("vgpulock");
    let progress_out = SharedBuffer::default();
    o.progress = lab_runner::progress::Progress::with_writer(
        lab_runner::progress::Style::Lines,
        Box::new(progress_out.clone()),
    );
    let env: BTreeMap<String, String> = [
        ("PATH".to_owned(), "/usr/bin".to_owned()),
        ("CUDA_DEVICE_MEMORY_LIMIT_0".to_owned(), "1m".to_owned()),
    ]
    .into();
    let card = FakeCard {
        leaks: false,
        calls: 0.into(),
    };
    let r = run_on(&o, &env, &fake, &card);
    let c = r.conformance.as_ref().expect("section");
    // One line as each cell starts and one as it ends, then the summary.
    let shown = progress_out.text();
    let lines: Vec<&str> = shown.lines().collect();
    let planned = plan(&c.devices, &o).len();
    assert_eq!(lines.len(), 2 * planned + 1, "{shown}");
    assert!(
        lines[0].starts_with(&format!("conformance: 0/{planned} cells after ")),
        "{shown}"
    );
    assert!(
        lines[1].starts_with(&format!("conformance: 1/{planned} cells after "))
            && lines[1].contains("limit.below-context: "),
        "{shown}"
    );
    assert!(lines.last().unwrap().ends_with("(done)"), "{shown}");
    assert!(c.library_sha256.is_some());
    assert_eq!(c.revision.as_deref(), Some("8f3a89c"));
    let by = |id: &str| c.cells.iter().find(|x| x.id == id).map(|x| x.outcome);
    assert_eq!(by("limit.typical"), Some(CellOutcome::Capped));
    assert_eq!(by("limit.small"), Some(CellOutcome::Crashed));
    assert_eq!(by("path.cuArrayCreate_v2"), Some(CellOutcome::Escaped));
    assert_eq!(
        by("devices.one-without-limit"),
        Some(CellOutcome::NotApplicable)
    );
    assert!(c.all_freed);
    assert_eq!(r.verdict.outcome, Outcome::NotVerified);
    assert!(
        r.checks
            .iter()
            .any(|k| k.id == "conformance.limit.typical" && k.status == CheckStatus::Passed)
    );
    let calls = fake.calls();
    assert!(!calls.is_empty());
    for call in &calls {
        assert!(
            call.clear_env,
            "cells never inherit the parent's environment wholesale"
        );
        assert!(call.timeout.is_some(), "every child is bounded");
        if call.args[0] != "__worker" {
            assert!(
                call.args.iter().any(|a| a == "--progress-events"),
                "a child probe reports progress to the matrix, never as plain lines in its log: {:?}",
                call.args
            );
        }
        assert!(
            call.env
                .iter()
                .any(|(k, v)| k == "LD_PRELOAD" && v.ends_with("libvgpu.so"))
        );
        assert!(call.env.iter().any(|(k, _)| k == "PATH"));
        assert!(
            !call
                .env
                .iter()
                .any(|(k, v)| k == "CUDA_DEVICE_MEMORY_LIMIT_0" && v == "1m"),
            "the parent's own HAMi-core limit never reaches a cell"
        );
        assert!(
            call.env
                .iter()
                .any(|(k, _)| k == "CUDA_DEVICE_MEMORY_SHARED_CACHE")
        );
    }
    let typical = calls
        .iter()
        .find(|c| c.args.iter().any(|a| a == "8000") && c.args[0] == "all")
        .expect("typical cell");
    assert!(
        typical
            .env
            .contains(&("CUDA_DEVICE_MEMORY_LIMIT_0".into(), "8000m".into()))
    );
    assert!(typical.args.iter().any(|a| a == "--deadline-secs"));
    // A card whose memory does not come back fails the cell.
    let leaky = FakeCard {
        leaks: true,
        calls: 0.into(),
    };
    let r = run_on(&o, &env, &fake, &leaky);
    let c = r.conformance.expect("section");
    assert!(!c.all_freed);
    assert!(
        c.cells
            .iter()
            .any(|x| x.freed == Some(false) && x.note.contains("NOT back"))
    );
}

#[test]
fn the_lock_folder_a_pod_gets_is_made_when_missing() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("vgpulock");
    assert!(ensure_lock_dir(&dir).contains("created (mode 0777)"));
    let mode = std::fs::metadata(&dir).expect("made").permissions().mode() & 0o777;
    assert_eq!(mode, 0o777);
    assert!(ensure_lock_dir(&dir).contains("present"));
}

#[test]
fn a_missing_library_is_an_environment_failure_and_runs_nothing() {
    let fake = lab_runner::RecordingRunner::new(&["gpu-probe"]);
    let o = ConformanceOptions::new("/nonexistent/libvgpu.so", "gpu-probe".into());
    let r = run(&o, &BTreeMap::new(), &fake);
    assert_eq!(r.verdict.exit_code, 3);
    assert!(r.checks[0].reason.contains("cargo xtask hami-core"));
    assert!(fake.calls().is_empty());
}

#[test]
fn oom_lines_name_the_enforced_limit_before_the_region() {
    let mut r: Report = serde_json::from_str(&h200("h1-8000.json")).expect("r");
    let d = &mut r.cap.as_mut().expect("cap").devices[0];
    d.hami_oom_lines = vec![OomLine {
        pid: Some(1),
        device: 0,
        requested_total_bytes: 5,
        limit_bytes: 4,
        raw: String::new(),
    }];
    assert_eq!(enforced_limit(&r, 0), Some(4));
    r.cap.as_mut().expect("cap").devices[0]
        .hami_oom_lines
        .clear();
    assert_eq!(
        enforced_limit(&r, 0),
        Some(8000 * MIB),
        "from the shared region"
    );
}
