//! GPU tests: run the real gpu-probe binary on a real GPU. Skipped, with a visible message, where
//! no GPU is present (CI never has one); run on the H100 by the developers (see README: "GPU tests").
//!
//! The binary is `$GPU_PROBE_BIN` when set (a binary carried to the GPU machine), else the one
//! cargo built for this test.

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
fn skip(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED (GPU test): {why}");
}

macro_rules! require_gpu {
    () => {
        if let Some(why) = no_gpu() {
            skip(&why);
            return;
        }
    };
}

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
        // Keep the real reports as evidence (the developers copy them into tests/data).
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
