//! The per-revision matrix in README.md is generated from the committed conformance reports
//! (`tests/data/conformance/<revision>-<n>gpu.json`): this test fails when they differ.
//! `GPU_PROBE_BLESS=1 cargo test -p gpu-probe --test conformance_readme` rewrites the block.

mod readme_block;

use std::path::PathBuf;

use gpu_probe::report::Report;

const BEGIN: &str =
    "<!-- conformance-matrix:begin (generated from tests/data/conformance; do not edit) -->";
const END: &str = "<!-- conformance-matrix:end -->";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The revisions in order (newest first) with what ships them.
fn revisions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("tests/data/conformance/revisions.txt"))
        .expect("revisions.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut w = l.splitn(3, ' ');
            let rev = w.next().unwrap_or_default().to_owned();
            let date = w.next().unwrap_or_default();
            let what = w.next().unwrap_or_default();
            (rev, format!("{date}, {what}"))
        })
        .collect()
}

fn generated() -> String {
    let dir = root().join("tests/data/conformance");
    let mut loaded: Vec<(String, Report)> = Vec::new();
    for gpus in 1..=8 {
        for (rev, what) in revisions() {
            let path = dir.join(format!("{rev}-{gpus}gpu.json"));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let r: Report =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let c = r.conformance.as_ref().expect("a conformance report");
            assert_eq!(
                c.revision.as_deref(),
                Some(rev.as_str()),
                "{}",
                path.display()
            );
            loaded.push((format!("{rev} ({gpus} GPU; {what})"), r));
        }
    }
    assert!(
        !loaded.is_empty(),
        "no conformance reports in {}",
        dir.display()
    );
    let sections: Vec<(String, &gpu_probe::report_conformance::ConformanceSection)> = loaded
        .iter()
        .filter_map(|(name, r)| r.conformance.as_ref().map(|c| (name.clone(), c)))
        .collect();
    let mut s = gpu_probe::conformance::markdown_matrix(&sections);
    s.push('\n');
    for (name, c) in &sections {
        let failed = c.cells.iter().filter(|x| x.outcome.is_failure()).count();
        s.push_str(&format!(
            "- {name}: {} cells, {failed} failed, {:.1} s, memory back after every cell: {}\n",
            c.cells.len(),
            c.seconds,
            if c.all_freed { "yes" } else { "no" }
        ));
    }
    s
}

#[test]
fn readme_matrix_is_generated_from_the_reports() {
    readme_block::check(
        BEGIN,
        END,
        &generated(),
        "conformance matrix (from tests/data/conformance)",
        "GPU_PROBE_BLESS=1 cargo test -p gpu-probe --test conformance_readme",
    );
}
