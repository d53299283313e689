//! Benchmark: wall time of `gpu-probe all` against CUDA + NVML initialisation alone, on the same
//! GPU, and the number of allocation calls of the cap search; with `$HAMI_CORE_LIB`, also the
//! wall time of `gpu-probe conformance` on that library (target: the full matrix under 60 s on
//! one H200). Run with `cargo bench -p gpu-probe` (or the compiled bench binary with
//! `$GPU_PROBE_BIN` on the GPU machine). Prints SKIPPED without a GPU.

// std's Command, not lab_runner: the measured binary is spawned directly; its wall time is the
// benchmark.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use gpu_probe::report::Report;

fn probe_bin() -> PathBuf {
    std::env::var_os("GPU_PROBE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_gpu-probe")),
        PathBuf::from,
    )
}

fn time_runs(args: &[&str], runs: usize) -> (Vec<f64>, Option<String>) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new(probe_bin())
            .args(args)
            .output()
            .expect("gpu-probe runs");
        times.push(t.elapsed().as_secs_f64());
        last = Some(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    times.sort_by(f64::total_cmp);
    (times, last)
}

fn summary(name: &str, t: &[f64]) {
    let median = t[t.len() / 2];
    println!(
        "{name:<32} runs {:>2}  min {:.3}s  median {median:.3}s  max {:.3}s",
        t.len(),
        t[0],
        t[t.len() - 1]
    );
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (init, init_out) = time_runs(&["__init-only"], runs);
    if init_out.as_deref().is_none_or(|o| !o.starts_with("ok")) {
        println!(
            "SKIPPED (bench): no GPU here ({})",
            init_out.unwrap_or_default().trim()
        );
        return;
    }
    summary("CUDA + NVML init alone", &init);
    let expect = std::env::var("BENCH_EXPECT_MIB").unwrap_or_else(|_| "8000".into());
    let (all, all_out) = time_runs(&["all", "--expect-mib", &expect, "--output", "json"], runs);
    summary(&format!("gpu-probe all --expect-mib {expect}"), &all);
    if let Some(report) = all_out.and_then(|o| serde_json::from_str::<Report>(&o).ok()) {
        for d in report.cap.map(|c| c.devices).unwrap_or_default() {
            println!(
                "cap device {}: {} allocation calls, held {:.0} MiB, search {:.3}s, outcome {:?}",
                d.index,
                d.alloc_calls,
                gpu_probe::report::mib(d.held_bytes),
                d.search_seconds,
                d.outcome
            );
        }
    }
    if let Ok(lib) = std::env::var("HAMI_CORE_LIB") {
        let t = Instant::now();
        let out = Command::new(probe_bin())
            .args(["conformance", "--lib", &lib, "--output", "json"])
            .output()
            .expect("gpu-probe runs");
        let wall = t.elapsed().as_secs_f64();
        let report: Option<Report> = serde_json::from_slice(&out.stdout).ok();
        let cells = report
            .as_ref()
            .and_then(|r| r.conformance.as_ref())
            .map_or(0, |c| c.cells.len());
        println!(
            "gpu-probe conformance --lib {lib}: {wall:.1}s wall, {cells} cells, {}",
            report.map_or_else(|| "no report".to_owned(), |r| r.verdict.summary)
        );
    }
    let size = std::fs::metadata(probe_bin()).map(|m| m.len()).unwrap_or(0);
    println!(
        "binary {}: {} bytes ({:.0} KiB)",
        probe_bin().display(),
        size,
        size as f64 / 1024.0
    );
}
