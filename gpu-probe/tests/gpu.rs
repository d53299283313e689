//! GPU tests: run the real gpu-probe binary on a real GPU. Skipped, with a visible message, where
//! no GPU is present (CI never has one); run them on a GPU host (see README:
//! "GPU tests").
//!
//! The binary is `$GPU_PROBE_BIN` when set (a binary carried to the GPU machine), else the one
//! cargo built for this test. The real-library tier runs when `$HAMI_CORE_LIB` names a
//! libvgpu.so: the enforced path, the audit and the conformance matrix under that library.

use std::path::PathBuf;
use std::process::Command;

use gpu_probe::ffi::cuda::Cuda;
use gpu_probe::report::{CapOutcome, MIB, MechanismOutcome, Report, StopReason, ViewOutcome};

fn probe_bin() -> PathBuf {
    std::env::var_os("GPU_PROBE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_gpu-probe")),
        PathBuf::from,
    )
}

/// Why the GPU tests cannot run here, if they cannot.
fn no_gpu() -> Option<String> {
    let cuda = match Cuda::load() {
        Ok(c) => c,
        Err(e) => return Some(format!("no CUDA driver ({e})")),
    };
    if let Err(e) = cuda.init() {
        return Some(format!("CUDA does not start ({e})"));
    }
    match cuda.device_count() {
        Ok(0) | Err(_) => Some("no GPU visible".into()),
        Ok(_) => None,
    }
}

fn hami_core_injected() -> bool {
    std::path::Path::new("/etc/ld.so.preload").exists() || std::env::var_os("LD_PRELOAD").is_some()
}

/// Says why a test is skipped on the real stderr: libtest captures `eprintln!` of passing tests,
/// but not direct writes, so the message stays visible in CI logs.
/// It is also recorded in the test-tier log (`cargo xtask ci`'s table), as is every test that ran
/// on a GPU.
fn skip(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED (GPU test): {why}");
    lab_runner::tier::skipped("GPU", why);
}

macro_rules! require_gpu {
    () => {
        if let Some(why) = no_gpu() {
            skip(&why);
            return;
        }
        lab_runner::tier::ran("GPU");
    };
}

/// The HAMi-core library of the real-library tier, when `$HAMI_CORE_LIB` names one.
fn hami_core_lib() -> Option<String> {
    let lib = std::env::var("HAMI_CORE_LIB").ok()?;
    std::path::Path::new(&lib).is_file().then_some(lib)
}

macro_rules! require_hami_core {
    () => {{
        require_gpu!();
        match hami_core_lib() {
            Some(lib) => lib,
            None => {
                skip("set HAMI_CORE_LIB to a libvgpu.so to run the real-library tier");
                return;
            }
        }
    }};
}

// std's Command, not lab_runner: the binary under test, for its exit code, stderr and report file.
#[allow(clippy::disallowed_methods)]
fn run_probe(args: &[&str], env: &[(&str, &str)]) -> (i32, Report, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let report_path = dir.path().join("report.json");
    let mut cmd = Command::new(probe_bin());
    cmd.args(args).arg("--report-file").arg(&report_path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("gpu-probe runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = std::fs::read_to_string(&report_path).expect("report written");
    let report: Report = serde_json::from_str(&json).expect("valid report");
    if let Some(dir) = std::env::var_os("GPU_TEST_OUT") {
        // Keep the real reports as evidence (they are copied into tests/data as test data).
        let name = args.join("_").replace(['-', '/'], "");
        let _ = std::fs::write(PathBuf::from(dir).join(format!("{name}.json")), &json);
    }
    (out.status.code().unwrap_or(-1), report, stdout)
}

#[test]
fn bare_card_all_shows_full_card_not_enforced_and_frees_everything() {
    require_gpu!();
    if hami_core_injected() {
        skip("HAMi-core is injected here; this test is for a bare card");
        return;
    }
    let (code, r, stdout) = run_probe(&["all", "--expect-mib", "8000", "--output", "json"], &[]);
    assert_eq!(
        code, 1,
        "a bare card fails the claim: {}",
        r.verdict.summary
    );
    let _: Report = serde_json::from_str(&stdout).expect("stdout is the same JSON report");
    let view = r.view.expect("view");
    assert!(!view.devices.is_empty());
    for d in &view.devices {
        assert_eq!(d.outcome, ViewOutcome::ShowsFullCard, "{:?}", d.reasons);
        let nvml = d.nvml.expect("NVML total");
        assert!(nvml.total > 8000 * MIB);
        assert!(d.cuda_total_mem.expect("cuDeviceTotalMem") > 8000 * MIB);
    }
    let cap = r.cap.expect("cap");
    assert_eq!(
        cap.devices.len(),
        view.devices.len(),
        "every device is searched"
    );
    for d in &cap.devices {
        assert_eq!(d.outcome, CapOutcome::NotEnforced, "{:?}", d.reasons);
        assert_eq!(d.stopped_because, StopReason::ReachedCeiling);
        assert_eq!(d.ceiling_bytes, 10_000 * MIB, "slice × 1.25");
        assert_eq!(
            d.held_bytes, d.ceiling_bytes,
            "stops exactly at its ceiling"
        );
        assert!(d.all_freed);
        let (start, end) = (
            d.start_mem_info.expect("start"),
            d.end_mem_info.expect("end"),
        );
        assert!(
            start.free.abs_diff(end.free) < 64 * MIB,
            "freed: start free {} end free {}",
            start.free,
            end.free
        );
        assert!(d.hami_oom_lines.is_empty());
    }
    let mech = r.mechanism.expect("mechanism");
    assert_eq!(mech.outcome, MechanismOutcome::Absent);
}

#[test]
fn limit_env_is_the_expected_slice_and_the_bare_view_fails_it() {
    require_gpu!();
    if hami_core_injected() {
        skip("HAMi-core is injected here; this test is for a bare card");
        return;
    }
    let (code, r, _) = run_probe(
        &["view", "--output", "json"],
        &[("CUDA_DEVICE_MEMORY_LIMIT_0", "8000m")],
    );
    assert_eq!(code, 1);
    assert_eq!(r.expected[0].source, "CUDA_DEVICE_MEMORY_LIMIT_0");
    assert_eq!(r.expected[0].bytes, 8000 * MIB);
    assert_eq!(
        r.view.expect("view").devices[0].outcome,
        ViewOutcome::ShowsFullCard
    );
    assert!(r.cap.is_none(), "view alone allocates nothing");
}

#[test]
fn cap_without_a_slice_is_inconclusive_and_respects_the_ceiling() {
    require_gpu!();
    let (code, r, _) = run_probe(&["cap", "--ceiling-mib", "3000", "--output", "json"], &[]);
    assert_eq!(code, 1, "nothing to compare against is not verified");
    for d in r.cap.expect("cap").devices {
        assert_eq!(d.outcome, CapOutcome::Inconclusive);
        assert!(d.held_bytes <= 3000 * MIB);
        assert_eq!(d.ceiling_source, "--ceiling-mib");
    }
}

/// Fills the card to find a real CUDA_ERROR_OUT_OF_MEMORY boundary (the physical one). Takes the
/// whole GPU for a second, so it runs only when GPU_PROBE_TEST_FILL_CARD=1.
#[test]
fn a_full_card_is_a_real_refusal_but_inconclusive() {
    require_gpu!();
    if std::env::var_os("GPU_PROBE_TEST_FILL_CARD").is_none() {
        skip("set GPU_PROBE_TEST_FILL_CARD=1 to let it take the whole card");
        return;
    }
    if hami_core_injected() {
        skip("HAMi-core is injected here");
        return;
    }
    let (code, r, _) = run_probe(&["cap", "--expect-mib", "1000000", "--output", "json"], &[]);
    assert_eq!(code, 1);
    let d = &r.cap.expect("cap").devices[0];
    let refusal = d.first_refusal.as_ref().expect("the card refuses");
    assert_eq!(
        (refusal.code, refusal.name.as_str()),
        (2, "CUDA_ERROR_OUT_OF_MEMORY")
    );
    assert_eq!(d.stopped_because, StopReason::ResolutionReached);
    assert_eq!(d.outcome, CapOutcome::Inconclusive, "{:?}", d.reasons);
    assert!(d.reasons[0].contains("card ran out"), "{:?}", d.reasons);
    let total = d.start_mem_info.expect("start").total;
    assert!(
        d.held_bytes > total / 2,
        "held most of the card: {} of {}",
        d.held_bytes,
        total
    );
    assert!(d.all_freed);
}

#[test]
fn audit_on_a_bare_card_every_path_escapes_or_is_not_applicable() {
    require_gpu!();
    if hami_core_injected() {
        skip("HAMi-core is injected here; this test is for a bare card");
        return;
    }
    use gpu_probe::report::AuditOutcome;
    let (code, r, _) = run_probe(&["audit", "--expect-mib", "4000", "--output", "json"], &[]);
    assert_eq!(code, 1, "escaped paths fail the claim");
    let a = r.audit.expect("audit section");
    assert_eq!(a.target_bytes, 5000 * MIB);
    assert!(
        a.paths.len() >= 9,
        "{:?}",
        a.paths.iter().map(|p| &p.path).collect::<Vec<_>>()
    );
    for p in &a.paths {
        assert!(
            matches!(
                p.outcome,
                AuditOutcome::Escaped | AuditOutcome::NotApplicable
            ),
            "{}: {:?} {}",
            p.path,
            p.outcome,
            p.note
        );
        if p.outcome == AuditOutcome::Escaped {
            // The two-process path counts the holder's half slice plus what the prober took.
            let together = if p.path.starts_with("second process") {
                2000 * MIB
            } else {
                0
            };
            assert_eq!(
                p.held_bytes,
                a.target_bytes + together,
                "{} held the whole target",
                p.path
            );
            assert_eq!(p.past_slice_bytes, 1000 * MIB + together);
        }
    }
    let plain = a
        .paths
        .iter()
        .find(|p| p.path == "cuMemAlloc_v2")
        .expect("plain path");
    assert_eq!(
        plain.outcome,
        AuditOutcome::Escaped,
        "consistent with cap: NOT ENFORCED"
    );
}

#[test]
fn overhead_numbers_are_ordered_and_positive() {
    require_gpu!();
    let (code, r, _) = run_probe(&["overhead", "--output", "json"], &[]);
    assert_eq!(code, 0, "{}", r.verdict.summary);
    let o = r.overhead.expect("overhead");
    assert_eq!(o.alloc.len(), 3);
    for s in o
        .alloc
        .iter()
        .chain(&o.free)
        .chain(o.launch.iter())
        .chain(o.launch_sync.iter())
    {
        assert!(s.samples > 0, "{}", s.what);
        assert!(
            s.p50_us > 0.0 && s.p50_us <= s.p90_us && s.p90_us <= s.p99_us && s.p99_us <= s.max_us,
            "{s:?}"
        );
    }
    assert_eq!(o.htod_gbps.len(), 5);
    assert!(
        o.htod_gbps
            .iter()
            .chain(&o.dtoh_gbps)
            .all(|g| g.is_finite() && *g > 0.0)
    );
}

#[test]
fn compute_runs_windows_and_expects_no_throttling_alone() {
    require_gpu!();
    let (code, r, _) = run_probe(&["compute", "--seconds", "2", "--output", "json"], &[]);
    assert_eq!(code, 0, "{}", r.verdict.summary);
    let c = r.compute.expect("compute");
    assert!(c.windows.len() >= 3, "{:?}", c.windows);
    assert!(c.kernels_per_second_mean > 0.0);
    assert!(!c.throttling_expected);
}

#[test]
fn selftest_with_a_library_that_is_not_hami_core_is_not_verified() {
    require_gpu!();
    let lib = [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libm.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists());
    let Some(lib) = lib else {
        skip("no libz/libm to inject");
        return;
    };
    let (code, r, _) = run_probe(
        &[
            "selftest",
            "--lib",
            lib,
            "--limit-mib",
            "2000",
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(code, 1, "{}", r.verdict.summary);
    let t = r.selftest.expect("selftest");
    assert_eq!(t.outcome, gpu_probe::report::Outcome::NotVerified);
    assert_ne!(t.mechanism_outcome, Some(MechanismOutcome::HamiCoreActive));
    assert_eq!(t.sharing_capped, Some(false), "{:?}", t.reasons);
}

/// The injection a HAMi pod gets, for `lib`, a `limit_mib` slice and a fresh region in `dir`.
fn injected(lib: &str, limit_mib: u64, dir: &std::path::Path) -> Vec<(String, String)> {
    gpu_probe::selftest::injected_env(lib, limit_mib, &dir.join("region.cache"))
}

#[test]
fn real_library_enforces_the_slice_view_cap_and_mechanism() {
    let lib = require_hami_core!();
    let dir = tempfile::tempdir().expect("tmp");
    let env = injected(&lib, 4000, dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, r, _) = run_probe(&["all", "--output", "json"], &env);
    assert_eq!(code, 0, "{}: {:?}", r.verdict.summary, r.checks);
    assert_eq!(
        r.method.as_ref().map(|m| m.method),
        Some(gpu_probe::report_conformance::SharingMethod::HamiCore)
    );
    let view = &r.view.expect("view").devices[0];
    assert_eq!(view.outcome, ViewOutcome::ShowsSlice, "{:?}", view.reasons);
    let cap = &r.cap.expect("cap").devices[0];
    assert_eq!(cap.outcome, CapOutcome::Enforced, "{:?}", cap.reasons);
    assert!(cap.held_bytes <= 4000 * MIB);
    let oom = cap.hami_oom_lines.first().expect("HAMi-core's OOM line");
    assert_eq!(oom.limit_bytes, 4000 * MIB);
    assert!(cap.all_freed);
    let start = cap.start_mem_info.expect("start");
    let end = cap.end_mem_info.expect("end");
    assert!(
        start.free.abs_diff(end.free) < 64 * MIB,
        "freed: {start:?} {end:?}"
    );
    assert_eq!(
        r.mechanism.expect("mechanism").outcome,
        MechanismOutcome::HamiCoreActive
    );
}

#[test]
fn real_library_audit_caps_the_plain_paths_and_reports_every_path() {
    use gpu_probe::report::AuditOutcome;
    let lib = require_hami_core!();
    let dir = tempfile::tempdir().expect("tmp");
    let env = injected(&lib, 4000, dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (_, r, _) = run_probe(&["audit", "--output", "json"], &env);
    let a = r.audit.expect("audit");
    assert_eq!(a.slice_bytes, Some(4000 * MIB));
    assert!(a.paths.len() >= 9);
    let outcome = |name: &str| {
        a.paths
            .iter()
            .find(|p| p.path == name)
            .map(|p| p.outcome)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(outcome("cuMemAlloc_v2"), AuditOutcome::Capped);
    assert_eq!(outcome("cuMemAllocPitch_v2"), AuditOutcome::Capped);
    assert_eq!(
        outcome("second process of the same container (cuMemAlloc_v2)"),
        AuditOutcome::Capped
    );
    for p in &a.paths {
        assert_ne!(p.outcome, AuditOutcome::Error, "{}: {}", p.path, p.note);
        if p.outcome == AuditOutcome::Escaped {
            assert!(p.past_slice_bytes > 0);
            assert!(
                r.checks
                    .iter()
                    .any(|c| c.status == gpu_probe::report::CheckStatus::Failed
                        && gpu_probe::audit::path_matches_check(&p.path, &c.id)),
                "an escaped path is a failed check: {}",
                p.path
            );
        }
    }
}

#[test]
fn real_library_conformance_runs_every_cell_bounded_and_frees_the_card() {
    use gpu_probe::report_conformance::CellOutcome;
    let lib = require_hami_core!();
    let started = std::time::Instant::now();
    let (code, r, _) = run_probe(
        &[
            "conformance",
            "--lib",
            &lib,
            "--compute-seconds",
            "1",
            "--output",
            "json",
        ],
        &[],
    );
    let c = r.conformance.as_ref().expect("conformance section");
    eprintln!(
        "conformance of {lib}: {:.1}s, {} cells, exit {code}",
        started.elapsed().as_secs_f64(),
        c.cells.len()
    );
    assert!(code == 0 || code == 1, "{}", r.verdict.summary);
    assert!(c.all_freed, "every cell's memory came back");
    let by = |id: &str| {
        c.cells
            .iter()
            .find(|x| x.id == id)
            .map(|x| x.outcome)
            .unwrap_or_else(|| panic!("cell {id} missing"))
    };
    assert_eq!(by("limit.typical"), CellOutcome::Capped);
    assert_eq!(by("limit.small"), CellOutcome::Capped);
    assert_eq!(by("path.cuMemAlloc_v2"), CellOutcome::Capped);
    assert_eq!(by("sharing.two-processes"), CellOutcome::Capped);
    assert_eq!(
        by("spelling.08g"),
        CellOutcome::Escaped,
        "08g reads as no limit in every revision"
    );
    for cell in &c.cells {
        if cell.outcome.is_failure() {
            assert!(
                r.checks
                    .iter()
                    .any(|k| k.id == format!("conformance.{}", cell.id)
                        && k.status == gpu_probe::report::CheckStatus::Failed),
                "{} is a failed check",
                cell.id
            );
        }
    }
}

/// The card's used memory, physically (this test process is never injected).
fn card_used_mib() -> Option<u64> {
    let nvml = gpu_probe::ffi::nvml::Nvml::init().ok()?;
    let h = nvml.handle_by_index(0).ok()?;
    nvml.memory(h).ok().map(|m| m.used / MIB)
}

/// The recorded audit of this revision (`tests/data/bypass/<revision>-audit-8000.json`): from
/// `$GPU_PROBE_BYPASS_DATA`, else this crate's test data, else the same path from the repository
/// root (where a carried test binary runs).
fn recorded_bypass_audit(revision: &str) -> Option<(PathBuf, Report)> {
    let name = format!("{revision}-audit-8000.json");
    let dirs = [
        std::env::var_os("GPU_PROBE_BYPASS_DATA").map(PathBuf::from),
        Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/bypass"
        ))),
        Some(PathBuf::from("gpu-probe/tests/data/bypass")),
    ];
    dirs.into_iter().flatten().find_map(|d| {
        let path = d.join(&name);
        let text = std::fs::read_to_string(&path).ok()?;
        Some((
            path,
            serde_json::from_str(&text).expect("a recorded report parses"),
        ))
    })
}

/// The revision of `$HAMI_CORE_LIB`: `$HAMI_CORE_REVISION`, else the `<rev>` of `libvgpu-<rev>.so`.
fn hami_core_revision(lib: &str) -> Option<String> {
    std::env::var("HAMI_CORE_REVISION").ok().or_else(|| {
        let stem = std::path::Path::new(lib).file_stem()?.to_str()?;
        stem.strip_prefix("libvgpu-").map(str::to_owned)
    })
}

/// Every bypass row under the real library, 8000m: each bounded, its memory back on the card,
/// the region tamper tried and its bytes restored, every escape a failed check, and each row's
/// outcome the one recorded for this revision in `tests/data/bypass`.
#[test]
fn real_library_bypass_rows_reproduce_the_recorded_outcomes() {
    use gpu_probe::bypass::{REGION_TAMPER, ROWS, STATIC_CUDART};
    use gpu_probe::report::{AuditGroup, AuditOutcome, CheckStatus};
    let lib = require_hami_core!();
    // HAMi mounts /tmp/vgpulock into every pod; older HAMi-core waits a minute without it.
    gpu_probe::conformance::ensure_lock_dir(std::path::Path::new(
        gpu_probe::conformance::VGPU_LOCK_DIR,
    ));
    let dir = tempfile::tempdir().expect("tmp");
    let env = injected(&lib, 8000, dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let program = std::env::var("GPU_PROBE_STATIC_CUDART").ok();
    let mut args = vec!["audit", "--rows", "bypass", "--output", "json"];
    if let Some(p) = &program {
        args.extend(["--static-cudart", p.as_str()]);
    }
    let used_before = card_used_mib();
    let started = std::time::Instant::now();
    let (_, r, _) = run_probe(&args, &env);
    let seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let used_after = card_used_mib();
    let a = r.audit.as_ref().expect("audit");
    assert_eq!(a.slice_bytes, Some(8000 * MIB));
    assert!(seconds < 150.0, "bounded: {seconds:.1}s");
    if let (Some(b), Some(e)) = (used_before, used_after) {
        assert!(
            e <= b + 64,
            "the card's memory came back: {b} MiB before, {e} after"
        );
    }
    let find = |rows: &[gpu_probe::report::AuditPath], key: &str| {
        rows.iter()
            .find(|p| p.bypass.as_ref().is_some_and(|d| d.row == key))
            .cloned()
    };
    for row in ROWS {
        let p = find(&a.paths, row.key).unwrap_or_else(|| panic!("row {} missing", row.key));
        eprintln!("{}: {:?} {}", row.key, p.outcome, p.note);
        assert_eq!(p.group, AuditGroup::Bypass);
        assert_ne!(p.outcome, AuditOutcome::Error, "{}: {}", row.key, p.note);
        let d = p.bypass.as_ref().expect("detail");
        assert_ne!(d.freed, Some(false), "{}: memory not back", row.key);
        let check = r
            .checks
            .iter()
            .find(|c| gpu_probe::audit::path_matches_check(&p.path, &c.id))
            .expect("a check per row");
        match p.outcome {
            AuditOutcome::Escaped => {
                assert!(p.past_slice_bytes > 0);
                assert_eq!(check.status, CheckStatus::Failed, "{}", row.key);
            }
            AuditOutcome::Capped => {
                assert!(p.held_bytes <= 8000 * MIB);
                assert!(p.refusal.is_some());
                assert_eq!(check.status, CheckStatus::Passed, "{}", row.key);
            }
            _ => {}
        }
    }
    let tamper = find(&a.paths, REGION_TAMPER).expect("tamper");
    assert_ne!(
        tamper.outcome,
        AuditOutcome::NotApplicable,
        "under HAMi-core the region exists with a limit: {}",
        tamper.note
    );
    let detail = tamper.bypass.as_ref().expect("detail");
    assert_eq!(detail.region_restored, Some(true), "{:?}", detail.steps);
    assert_eq!(detail.region_limit_before_bytes, Some(8000 * MIB));

    let Some(revision) = hami_core_revision(&lib) else {
        skip("name the revision (HAMI_CORE_REVISION) to compare with its recorded rows");
        return;
    };
    let Some((path, recorded)) = recorded_bypass_audit(&revision) else {
        skip(&format!(
            "no recorded audit for {revision} in tests/data/bypass: only the invariants were checked"
        ));
        return;
    };
    let was = recorded.audit.expect("recorded audit");
    for row in ROWS {
        let then_row = find(&was.paths, row.key);
        if then_row
            .as_ref()
            .is_some_and(|p| p.note.contains("did not finish within"))
        {
            // Recorded while its child was killed (see tests/data/bypass/README.md): no outcome.
            skip(&format!(
                "{}: the recording of {revision} has no outcome",
                row.key
            ));
            continue;
        }
        let (now, then) = (
            find(&a.paths, row.key).map(|p| p.outcome),
            then_row.map(|p| p.outcome),
        );
        if row.key == STATIC_CUDART
            && (program.is_none() || then == Some(AuditOutcome::NotApplicable))
        {
            continue; // the program is given to one run and not the other
        }
        assert_eq!(now, then, "{} against {}", row.key, path.display());
    }
}

/// Under a running MPS control daemon (`GPU_PROBE_TEST_MPS=1`, `CUDA_MPS_PIPE_DIRECTORY` set):
/// a client with an 8000 MiB pinned limit is VERIFIED as CUDA MPS.
#[test]
fn mps_client_with_a_pinned_limit_is_verified_as_mps() {
    require_gpu!();
    if std::env::var_os("GPU_PROBE_TEST_MPS").is_none() {
        skip("set GPU_PROBE_TEST_MPS=1 with an MPS control daemon running");
        return;
    }
    let (code, r, _) = run_probe(
        &["all", "--output", "json"],
        &[("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "0=8000M")],
    );
    let m = r.method.as_ref().expect("method");
    assert_eq!(
        m.method,
        gpu_probe::report_conformance::SharingMethod::CudaMps,
        "{:?}",
        m.evidence
    );
    assert_eq!(code, 0, "{}: {:?}", r.verdict.summary, r.checks);
    let cap = &r.cap.expect("cap").devices[0];
    assert_eq!(cap.outcome, CapOutcome::Enforced, "{:?}", cap.reasons);
    assert!(cap.held_bytes <= 8000 * MIB);
    assert_eq!(cap.context_overhead_bytes, None);
}
