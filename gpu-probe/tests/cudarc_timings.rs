//! The before/after table of README.md ("The driver through cudarc, progress through indicatif")
//! is the captured H200 run in `tests/data/cudarc-h200/final-tree`: every size, median and range
//! in the table is computed here from `env.txt` and `times.txt`, each run's exit code is the
//! verdict the table states (bare 1, HAMi-core 0), and each GPU test log it cites passed. Editing
//! the table or the data alone fails this test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The binaries in the table's column order, as `times.txt` and `env.txt` name them.
const COLUMNS: [&str; 4] = ["before", "base", "after", "now"];

fn data(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cudarc-h200/final-tree")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn readme() -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The README's table row that starts with `label`.
fn row(readme: &str, label: &str) -> String {
    readme
        .lines()
        .find(|l| l.starts_with(&format!("| {label} |")))
        .unwrap_or_else(|| panic!("README has no row {label:?}"))
        .to_owned()
}

/// `1284408` as the README writes it: `1,284,408`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Per (mode, binary): the wall times and exit codes of its runs.
fn runs() -> BTreeMap<(String, String), Vec<(f64, i32)>> {
    let mut runs: BTreeMap<(String, String), Vec<(f64, i32)>> = BTreeMap::new();
    for line in data("times.txt").lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 6, "mode binary run exit start end: {line}");
        let (start, end): (f64, f64) = (f[4].parse().unwrap(), f[5].parse().unwrap());
        runs.entry((f[0].to_owned(), f[1].to_owned()))
            .or_default()
            .push((end - start, f[3].parse().unwrap()));
    }
    runs
}

/// `0.484 s (0.443–0.534)`: the median and range of an odd number of runs.
fn median_and_range(times: &[f64]) -> String {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    assert_eq!(t.len() % 2, 1, "an odd number of runs has one median");
    format!(
        "{:.3} s ({:.3}–{:.3})",
        t[t.len() / 2],
        t[0],
        t[t.len() - 1]
    )
}

#[test]
fn the_readme_table_is_the_captured_run() {
    let readme = readme();
    let runs = runs();
    for (mode, label, exit) in [
        ("bare", "bare card: wall time", 1),
        ("hami", "HAMi-core: wall time", 0),
    ] {
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|bin| {
                let r = &runs[&(mode.to_owned(), (*bin).to_owned())];
                assert_eq!(r.len(), 7, "{mode} {bin}: 7 runs");
                assert!(
                    r.iter().all(|(_, code)| *code == exit),
                    "{mode} {bin}: every run exits {exit}: {r:?}"
                );
                median_and_range(&r.iter().map(|(t, _)| *t).collect::<Vec<_>>())
            })
            .collect();
        let want = format!("| {label} | {} |", cells.join(" | "));
        assert_eq!(row(&readme, label), want);
    }
    let env = data("env.txt");
    let sizes: Vec<String> = COLUMNS
        .iter()
        .map(|bin| {
            let line = env
                .lines()
                .find(|l| l.starts_with(&format!("{bin} ")))
                .unwrap_or_else(|| panic!("env.txt has no size of {bin}"));
            let bytes: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            format!("{} bytes", thousands(bytes))
        })
        .collect();
    let label = "size of the portable binary";
    assert_eq!(
        row(&readme, label),
        format!("| {label} | {} |", sizes.join(" | "))
    );
}

#[test]
fn every_gpu_test_log_cited_passed() {
    for name in [
        "gpu-test-bare.txt",
        "gpu-test-hami-8f3a89c.txt",
        "gpu-test-hami-5091a2f.txt",
        "gpu-test-hami-ecbf908.txt",
        "gpu-test-hami-c0f9da6.txt",
        "gpu-test-fill-card.txt",
        "gpu-test-mps.txt",
    ] {
        let log = data(name);
        assert!(
            log.lines().any(|l| l.starts_with("test result: ok."))
                && log.lines().any(|l| l == "exit 0"),
            "{name}: {log}"
        );
        assert!(!log.contains("FAILED"), "{name}: {log}");
    }
    // The opt-in tests ran (not skipped).
    for (name, test) in [
        (
            "gpu-test-fill-card.txt",
            "a_full_card_is_a_real_refusal_but_inconclusive",
        ),
        (
            "gpu-test-mps.txt",
            "mps_client_with_a_pinned_limit_is_verified_as_mps",
        ),
    ] {
        assert!(
            data(name)
                .lines()
                .any(|l| l == format!("test {test} ... ok")),
            "{name}"
        );
    }
    // The library tier ran its four tests for each revision, none skipped.
    for rev in ["8f3a89c", "5091a2f", "ecbf908", "c0f9da6"] {
        let log = data(&format!("gpu-test-hami-{rev}.txt"));
        let passed = log
            .lines()
            .filter(|l| l.starts_with("test real_library_") && l.ends_with(" ... ok"))
            .count();
        assert_eq!(passed, 4, "{rev}: {log}");
    }
}

#[test]
fn thousands_separators() {
    assert_eq!(thousands(1_284_408), "1,284,408");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1_000), "1,000");
}
