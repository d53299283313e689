//! The interception's cost in README.md ("What HAMi-core costs a process") is rendered from the
//! captured reports in `tests/data/overhead-h200` (`gpu-probe overhead`, bare and under four real
//! HAMi-core revisions, 3 runs each): this test fails when the table and the reports differ, and
//! when a report does not show the mode it is filed under (bare: sharing method none; a revision:
//! HAMi-core). `GPU_PROBE_BLESS=1 cargo test -p gpu-probe --test overhead_h200` rewrites the block.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod readme_block;

use std::path::PathBuf;

use gpu_probe::report::Report;
use lab_report::probe::{LatencyStats, OverheadSection};
use lab_report::report_conformance::SharingMethod;

const BEGIN: &str =
    "<!-- overhead-table:begin (generated from tests/data/overhead-h200; do not edit) -->";
const END: &str = "<!-- overhead-table:end -->";
/// The modes in column order: the bare card, then the revisions newest first.
const MODES: [&str; 5] = ["bare", "8f3a89c", "5091a2f", "ecbf908", "c0f9da6"];
const RUNS: [u32; 3] = [1, 2, 3];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The overhead section of run `run` of `mode`, its sharing method checked.
fn section(mode: &str, run: u32) -> OverheadSection {
    let path = root().join(format!("tests/data/overhead-h200/{mode}-{run}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let r: Report =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let method = r.method.as_ref().map(|m| m.method);
    let want = if mode == "bare" {
        SharingMethod::None
    } else {
        SharingMethod::HamiCore
    };
    assert_eq!(method, Some(want), "{}", path.display());
    assert_eq!(r.verdict.exit_code, 0, "{}", path.display());
    r.overhead
        .unwrap_or_else(|| panic!("{}: no overhead section", path.display()))
}

/// One row: the median (and range) over the runs of `pick`'s p50, per mode.
fn latency_row(
    label: &str,
    sections: &[Vec<OverheadSection>],
    pick: impl Fn(&OverheadSection) -> Option<&LatencyStats>,
) -> String {
    let mut cells = Vec::new();
    let mut bare = 0.0;
    for (i, runs) in sections.iter().enumerate() {
        let p50: Vec<f64> = runs
            .iter()
            .map(|s| pick(s).expect("the row is in every report").p50_us)
            .collect();
        let (lo, hi) = (
            p50.iter().copied().fold(f64::INFINITY, f64::min),
            p50.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        let m = median_of(p50);
        if i == 0 {
            bare = m;
            cells.push(format!("{m:.1} ({lo:.1}–{hi:.1})"));
        } else {
            cells.push(format!("{m:.1} ({lo:.1}–{hi:.1}), {:.2}×", m / bare));
        }
    }
    format!("| {label} | {} |\n", cells.join(" | "))
}

fn generated() -> String {
    let sections: Vec<Vec<OverheadSection>> = MODES
        .iter()
        .map(|m| RUNS.iter().map(|r| section(m, *r)).collect())
        .collect();
    let mut s = format!(
        "| p50 in µs: median of 3 runs (range), × the bare card | {} |\n|---|{}\n",
        MODES
            .iter()
            .map(|m| if *m == "bare" {
                "bare card".to_owned()
            } else {
                format!("HAMi-core {m}")
            })
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(MODES.len())
    );
    for (i, size) in ["1 MiB", "64 MiB", "1 GiB"].iter().enumerate() {
        s.push_str(&latency_row(
            &format!("`cuMemAlloc_v2` {size}"),
            &sections,
            |o| o.alloc.get(i),
        ));
    }
    for (i, size) in ["1 MiB", "64 MiB", "1 GiB"].iter().enumerate() {
        s.push_str(&latency_row(
            &format!("`cuMemFree_v2` {size}"),
            &sections,
            |o| o.free.get(i),
        ));
    }
    s.push_str(&latency_row("empty kernel launch", &sections, |o| {
        o.launch.as_ref()
    }));
    s.push_str(&latency_row("launch + synchronize", &sections, |o| {
        o.launch_sync.as_ref()
    }));
    let gbps = |pick: fn(&OverheadSection) -> &Vec<f64>| {
        sections
            .iter()
            .map(|runs| {
                let all: Vec<f64> = runs.iter().flat_map(|o| pick(o).iter().copied()).collect();
                format!("{:.1}", median_of(all))
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    s.push_str(&format!(
        "| pinned copy H→D, GB/s (median of every repetition) | {} |\n",
        gbps(|o| &o.htod_gbps)
    ));
    s.push_str(&format!(
        "| pinned copy D→H, GB/s (median of every repetition) | {} |\n",
        gbps(|o| &o.dtoh_gbps)
    ));
    s
}

/// The median of any number of values (the lower middle one for an even count).
fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

#[test]
fn readme_overhead_table_is_generated_from_the_reports() {
    readme_block::check(
        BEGIN,
        END,
        &generated(),
        "overhead table (from tests/data/overhead-h200)",
        "GPU_PROBE_BLESS=1 cargo test -p gpu-probe --test overhead_h200",
    );
}

#[test]
fn every_run_of_the_capture_exited_0() {
    let times = std::fs::read_to_string(root().join("tests/data/overhead-h200/times.txt")).unwrap();
    let lines: Vec<Vec<&str>> = times
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), MODES.len() * RUNS.len(), "{times}");
    for f in &lines {
        assert_eq!(f.len(), 5, "mode run exit start end: {f:?}");
        assert!(MODES.contains(&f[0]), "{f:?}");
        assert_eq!(f[2], "0", "{f:?}");
    }
}
