//! The real conformance reports (gpu-probe under real HAMi-core builds on an H200, committed in
//! `gpu-probe/tests/data/conformance`) pack into a bundle that `verify` finds intact; every
//! escaped path is a failed claim; report.md and report.html carry the matrix per revision.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{cli, files, pack};

fn reports() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gpu-probe/tests/data/conformance")
}

/// The JSON reports only (the folder also holds its README and the GPU procedure).
fn input() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(reports()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

#[test]
fn conformance_reports_pack_verify_intact_and_fail_on_every_escape() {
    let inp = input();
    let out = tempfile::tempdir().unwrap();
    let tgz = pack(inp.path(), out.path());
    let (code, stdout, stderr) = cli(&["verify", &tgz.display().to_string()]);
    assert_eq!(code, 1, "a claim failed: {stdout}{stderr}");
    assert!(stdout.contains("intact"), "{stdout}");
    let f = files(&tgz);
    let summary: serde_json::Value = serde_json::from_slice(&f["summary.json"]).unwrap();
    let claims = summary["claims"].as_array().unwrap();
    let verdict = |id: &str| {
        claims
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["verdict"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("claim {id} missing"))
    };
    for rev in ["8f3a89c", "5091a2f"] {
        assert_eq!(
            verdict(&format!("{rev}-1gpu:conformance.path.cuArrayCreate_v2")),
            "fail"
        );
        assert_eq!(
            verdict(&format!(
                "{rev}-1gpu:conformance.path.cuMemAllocFromPoolAsync"
            )),
            "fail"
        );
        assert_eq!(
            verdict(&format!("{rev}-1gpu:conformance.limit.typical")),
            "pass"
        );
    }
    // Every escaped cell of every matrix is a failed claim.
    let matrices = summary["conformance"].as_array().unwrap();
    assert!(matrices.len() >= 2);
    for m in matrices {
        for row in m["rows"].as_array().unwrap() {
            if row["outcome"] == "escaped" {
                assert_eq!(row["failed"], true, "{row}");
                assert_eq!(verdict(row["claim"].as_str().unwrap()), "fail");
            }
        }
    }
    let md = String::from_utf8(f["report.md"].clone()).unwrap();
    assert!(md.contains("## Conformance matrix"), "{md}");
    assert!(md.contains("### 8f3a89c ("), "{md}");
    assert!(
        md.contains("| allocation paths | `path.cuArrayCreate_v2`"),
        "{md}"
    );
    let html = String::from_utf8(f["report.html"].clone()).unwrap();
    assert!(html.contains("<h2>Conformance matrix</h2>"));
    assert!(html.contains("<table class=\"matrix\">"));
}
