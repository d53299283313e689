//! Tests of the bypass rows: the decisions from recorded numbers, the child protocol, the
//! static-cudart report line, the parent's restore of a region the tamper child left changed,
//! and every row's children against a scripted runner (bounded, with exactly the environment
//! the row stands for).

use super::*;
use crate::testdata::hami_fixture_gz;

const SLICE: u64 = 8000 * MIB;

fn ran(key: &str, held: u64, refusal: Option<(i64, &str)>) -> ChildRun {
    let mut r = ChildRun::new(key);
    r.held_bytes = held;
    r.calls = 12;
    r.first_refusal = refusal.map(|(code, name)| CudaErrorInfo {
        code,
        name: name.into(),
    });
    r.detail.freed = Some(true);
    r
}

#[test]
fn rows_have_distinct_check_ids_in_the_audit_namespace() {
    let ids: Vec<String> = ROWS
        .iter()
        .map(|r| crate::audit::check_id(r.path))
        .collect();
    assert_eq!(
        ids,
        [
            "audit.child-with-a-cleared-environment",
            "audit.region-tamper",
            "audit.env-less-first-writer",
            "audit.dlmopen",
            "audit.libc-dlsym",
            "audit.cuGetProcAddress",
            "audit.static-cudart",
        ]
    );
    for r in ROWS {
        assert!(
            crate::audit::path_matches_check(r.path, &crate::audit::check_id(r.path)),
            "{}",
            r.key
        );
        assert_eq!(row(r.key), Some(r));
    }
}

#[test]
fn escaped_capped_and_not_applicable_from_the_numbers() {
    let mut tamper = ran(REGION_TAMPER, 10_000 * MIB, None);
    tamper.detail.region_restored = Some(true);
    tamper.detail.steps = vec!["held 7424 MiB".into(), "wrote 33554432000".into()];
    let p = decide(&tamper, Some(SLICE));
    assert_eq!(p.outcome, AuditOutcome::Escaped);
    assert_eq!(p.past_slice_bytes, 2000 * MIB);
    assert_eq!(p.group, AuditGroup::Bypass);
    assert!(
        p.note.contains("2000 MiB past") && p.note.contains("wrote"),
        "{}",
        p.note
    );
    assert_eq!(
        p.bypass.as_ref().map(|d| d.row.as_str()),
        Some(REGION_TAMPER)
    );

    let p = decide(
        &ran(
            PROC_ADDRESS,
            7424 * MIB,
            Some((2, "CUDA_ERROR_OUT_OF_MEMORY")),
        ),
        Some(SLICE),
    );
    assert_eq!(p.outcome, AuditOutcome::Capped);
    assert!(!p.nonstandard_code);
    assert_eq!(
        p.path,
        row(PROC_ADDRESS).map(|r| r.path).unwrap_or_default()
    );

    let na = ChildRun::not_applicable(STATIC_CUDART, "no program given");
    let p = decide(&na, Some(SLICE));
    assert_eq!((p.outcome, p.calls), (AuditOutcome::NotApplicable, 0));

    // Stopped below the slice by an error that is not a refusal: neither capped nor escaped.
    let mut odd = ran(DLMOPEN, 1024 * MIB, None);
    odd.unexpected = Some(CudaErrorInfo {
        code: 1,
        name: "CUDA_ERROR_INVALID_VALUE".into(),
    });
    let p = decide(&odd, Some(SLICE));
    assert_eq!(p.outcome, AuditOutcome::Error);
    assert!(p.note.contains("not a refusal"), "{}", p.note);

    assert_eq!(
        decide(&ran(LIBC_DLSYM, 10_000 * MIB, None), None).outcome,
        AuditOutcome::NoSlice
    );
}

#[test]
fn a_child_killed_past_its_bound_is_an_error_never_not_applicable() {
    let r = hung(CLEARED_ENVIRONMENT, Duration::from_secs(28));
    let p = decide(&r, Some(SLICE));
    assert_eq!(p.outcome, AuditOutcome::Error);
    assert!(p.note.contains("within 28s"), "{}", p.note);
    // Through the runner: a scripted timeout.
    struct Slow;
    impl Runner for Slow {
        fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
            Err(RunError::TimedOut {
                cmd: cmd.to_string(),
                after: cmd.timeout.unwrap_or_default(),
            })
        }
        fn exists(&self, _: &str) -> bool {
            true
        }
    }
    let rows = run_rows(&opts(), &spec(), &pod_env("/tmp/none.cache"), &Slow);
    for p in rows
        .iter()
        .filter(|p| p.bypass.as_ref().is_some_and(|d| d.row != STATIC_CUDART))
    {
        assert_eq!(p.outcome, AuditOutcome::Error, "{}: {}", p.path, p.note);
    }
}

#[test]
fn memory_not_back_and_a_region_not_restored_are_said() {
    let mut r = ran(REGION_TAMPER, 10_000 * MIB, None);
    r.detail.freed = Some(false);
    r.detail.region_restored = Some(false);
    let p = decide(&r, Some(SLICE));
    assert!(p.note.contains("did NOT all come back"), "{}", p.note);
    assert!(p.note.contains("NOT restored"), "{}", p.note);
}

#[test]
fn an_escaped_row_is_a_failed_check_and_a_capped_one_passes_the_judge() {
    let escaped = decide(&ran(LIBC_DLSYM, 10_000 * MIB, None), Some(SLICE));
    let capped = decide(
        &ran(
            PROC_ADDRESS,
            7424 * MIB,
            Some((2, "CUDA_ERROR_OUT_OF_MEMORY")),
        ),
        Some(SLICE),
    );
    for (p, want) in [(&escaped, false), (&capped, true)] {
        let row = lab_report::judge::audit_row(p, SLICE);
        assert_eq!(
            matches!(row, lab_report::judge::Row::Capped),
            want,
            "{}: {row:?}",
            p.path
        );
    }
}

#[test]
fn the_child_protocol_round_trips_and_a_crash_is_an_error() {
    let mut r = ran(DLMOPEN, 10_000 * MIB, None);
    r.detail.resolved_in = vec![crate::report::ResolvedSymbol {
        name: "cuMemAlloc_v2".into(),
        object: Some("/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04".into()),
    }];
    let out = format!("[HAMI-core Msg(1:2:x.c:3)]: noise\n{}", render(&r));
    assert_eq!(parse(&out), Ok(r));
    assert!(parse("").is_err());
    assert!(parse(&format!("{BEGIN}\n{{")).is_err());
}

#[test]
fn unknown_rows_are_not_applicable_in_the_child() {
    let spec = ChildSpec {
        row: "no-such-row".into(),
        device: 0,
        target_bytes: MIB,
        time_bound_ms: 10,
        alarm_secs: None,
    };
    assert!(run_child(&spec).not_applicable.is_some());
}

fn output(code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        code: Some(code),
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
    }
}

#[test]
fn the_static_program_s_line_is_read_and_a_shared_runtime_is_refused() {
    let line = r#"gpu-probe-static-cudart {"runtime_version":13000,"driver_version":13000,"mapped_preload":["/tmp/libvgpu.so"],"shared_cudart_mapped":false,"held_bytes":7784628224,"calls":13,"first_error":2,"first_error_name":"cudaErrorMemoryAllocation","all_freed":true,"start_total":8388608000,"start_free":7845445632,"end_free":7845445632}"#;
    let stderr =
        "[HAMI-core ERROR (pid:9 thread=9 allocator.c:52)]: Device 0 OOM 8450473984 / 8388608000\n";
    let r = static_cudart_run(&output(0, line, stderr));
    assert_eq!(r.not_applicable, None);
    assert_eq!(r.held_bytes, 7_784_628_224);
    assert_eq!(
        r.first_refusal.as_ref().map(|e| e.name.as_str()),
        Some("cudaErrorMemoryAllocation")
    );
    assert_eq!(r.detail.freed, Some(true));
    assert_eq!(r.detail.log_lines.len(), 1, "{:?}", r.detail.log_lines);
    assert!(r.detail.steps[0].contains("/tmp/libvgpu.so"));
    assert_eq!(decide(&r, Some(SLICE)).outcome, AuditOutcome::Capped);

    let shared = line.replace(
        "\"shared_cudart_mapped\":false",
        "\"shared_cudart_mapped\":true",
    );
    let r = static_cudart_run(&output(0, &shared, ""));
    assert!(
        r.not_applicable
            .as_deref()
            .is_some_and(|w| w.contains("-cudart static"))
    );
    let r = static_cudart_run(&output(127, "", "exec format error"));
    assert!(
        r.not_applicable
            .as_deref()
            .is_some_and(|w| w.contains("exec format error"))
    );
    let r = static_cudart_run(&output(0, "gpu-probe-static-cudart {", ""));
    assert!(
        r.not_applicable
            .as_deref()
            .is_some_and(|w| w.contains("not valid"))
    );
}

#[test]
fn a_limit_the_tamper_child_left_raised_is_written_back_by_the_parent() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("r.cache");
    let original = hami_fixture_gz("h100-hami-core/region-one-proc-5g.cache.gz");
    std::fs::write(&path, &original).expect("write");
    let before = tamper::read_limit(&path, 0).expect("limit");
    // The child raised it and died before restoring it.
    tamper::swap_limit(&path, 0, before, 100 * 1024 * MIB).expect("raise");
    let mut run = ran(REGION_TAMPER, 10_000 * MIB, None);
    check_restored(&mut run, &path, 0, before);
    assert_eq!(run.detail.region_restored, Some(false), "the child did not");
    assert!(
        run.detail
            .steps
            .iter()
            .any(|s| s.contains("gpu-probe wrote the original")),
        "{:?}",
        run.detail.steps
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        original,
        "byte for byte"
    );
    // Restored by the child: nothing to do, nothing said.
    let mut run = ran(REGION_TAMPER, 10_000 * MIB, None);
    check_restored(&mut run, &path, 0, before);
    assert!(run.detail.steps.is_empty());
}

fn opts() -> Options {
    let mut o = Options::new(crate::probe::Command::Audit, "gpu-probe".into());
    o.time_bound = Duration::from_secs(5);
    o.deadline = Some(Instant::now() + Duration::from_secs(40));
    o
}

fn spec() -> AuditSpec {
    AuditSpec {
        device: 0,
        slice_bytes: Some(SLICE),
        target_bytes: 10_000 * MIB,
        time_bound_ms: 5000,
        physical_free_bytes: None,
        later_paths: 0,
        skip_paths: true,
    }
}

fn pod_env(region: &str) -> BTreeMap<String, String> {
    crate::testdata::env(&[
        ("PATH", "/usr/bin"),
        ("HOME", "/root"),
        ("LD_PRELOAD", "/usr/local/vgpu/libvgpu.so"),
        ("CUDA_REDIRECT", "/usr/local/vgpu/libvgpu.so"),
        ("CUDA_DEVICE_MEMORY_LIMIT_0", "8000m"),
        ("CUDA_DEVICE_MEMORY_SHARED_CACHE", region),
    ])
}

#[test]
fn every_row_runs_bounded_children_with_the_environment_it_stands_for() {
    let mut escaped = ran(LIBC_DLSYM, 10_000 * MIB, None);
    escaped
        .detail
        .steps
        .push("cuMemAlloc_v2 resolved in libcuda".into());
    let mut o = opts();
    let dir = tempfile::tempdir().expect("tmp");
    let prog = dir.path().join("static_cudart");
    std::fs::write(&prog, b"#!").expect("write");
    o.bypass.static_cudart = Some(prog.clone());
    let fake = {
        let f = lab_runner::RecordingRunner::new(&["gpu-probe", &prog.display().to_string()]);
        f.reply("\"row\":\"libc-dlsym\"", 0, &render(&escaped), "");
        f
    };
    let env = pod_env("/usr/local/vgpu/pod.cache");
    let rows = run_rows(&o, &spec(), &env, &fake);
    assert_eq!(
        rows.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
        ROWS.iter().map(|r| r.path).collect::<Vec<_>>()
    );
    assert!(rows.iter().all(|p| p.group == AuditGroup::Bypass));
    let by = |key: &str| {
        rows.iter()
            .find(|p| p.bypass.as_ref().is_some_and(|d| d.row == key))
            .unwrap_or_else(|| panic!("{key}"))
    };
    assert_eq!(by(LIBC_DLSYM).outcome, AuditOutcome::Escaped);
    // Unscripted children printed nothing: not applicable, with why, never capped.
    assert_eq!(by(DLMOPEN).outcome, AuditOutcome::NotApplicable);
    assert!(
        by(DLMOPEN).note.contains("printed no report"),
        "{}",
        by(DLMOPEN).note
    );

    let calls = fake.calls();
    for c in &calls {
        let t = c.timeout.expect("every child is bounded");
        assert!(t <= Duration::from_secs(41), "{t:?}");
    }
    let worker_env = |c: &Cmd| -> BTreeMap<String, String> { c.env.iter().cloned().collect() };
    // The cleared environment: only what a pod's mount and the driver need.
    let cleared = calls
        .iter()
        .find(|c| c.args.first().is_some_and(|a| a == "__worker") && c.env.len() <= 4)
        .expect("cleared child");
    assert!(cleared.clear_env);
    assert_eq!(
        worker_env(cleared).keys().cloned().collect::<Vec<_>>(),
        ["CUDA_REDIRECT", "LD_PRELOAD", "PATH"]
    );
    // The env-less first writer: no limit, a fresh region; then the same region with the limit.
    let workers: Vec<&Cmd> = calls
        .iter()
        .filter(|c| c.args.first().is_some_and(|a| a == "__worker") && c.env.len() > 4)
        .collect();
    assert_eq!(workers.len(), 2, "first writer and second process");
    let (first, second) = (worker_env(workers[0]), worker_env(workers[1]));
    assert!(
        !first
            .keys()
            .any(|k| k.starts_with("CUDA_DEVICE_MEMORY_LIMIT"))
    );
    assert_eq!(
        second.get("CUDA_DEVICE_MEMORY_LIMIT_0").map(String::as_str),
        Some("8000m")
    );
    let region = first
        .get("CUDA_DEVICE_MEMORY_SHARED_CACHE")
        .expect("region");
    assert_eq!(second.get("CUDA_DEVICE_MEMORY_SHARED_CACHE"), Some(region));
    assert_ne!(
        region, "/usr/local/vgpu/pod.cache",
        "never the pod's own region"
    );
    assert!(workers[0].args[1].contains("\"run_cap\":false"));
    // The tamper child gets the pod's environment, region variable included.
    let tamper_call = calls
        .iter()
        .find(|c| c.args.get(1).is_some_and(|s| s.contains("region-tamper")))
        .expect("tamper child");
    assert_eq!(
        worker_env(tamper_call)
            .get("CUDA_DEVICE_MEMORY_SHARED_CACHE")
            .map(String::as_str),
        Some("/usr/local/vgpu/pod.cache")
    );
    // The static program runs as any process of the container: the environment it inherits.
    let prog_call = calls
        .iter()
        .find(|c| c.program == prog.display().to_string())
        .expect("static program");
    assert!(!prog_call.clear_env);
    assert_eq!(
        prog_call.args[..2],
        ["0".to_owned(), (10_000 * MIB).to_string()]
    );
}

#[test]
fn without_a_static_program_its_row_says_how_to_build_one() {
    let fake = lab_runner::RecordingRunner::new(&["gpu-probe"]);
    let rows = run_rows(&opts(), &spec(), &pod_env("/tmp/r.cache"), &fake);
    let p = rows
        .iter()
        .find(|p| p.bypass.as_ref().is_some_and(|d| d.row == STATIC_CUDART))
        .expect("row");
    assert_eq!(p.outcome, AuditOutcome::NotApplicable);
    assert!(p.note.contains("nvcc -cudart static"), "{}", p.note);
}
