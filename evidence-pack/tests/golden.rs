//! Golden tests: `report.md` and `summary.json` of bundles packed from the committed fixture
//! inputs must equal the committed goldens byte for byte. `UPDATE_GOLDEN=1 cargo test -p
//! evidence-pack --test golden` rewrites the goldens (review the diff before committing).

#![allow(clippy::unwrap_used)]

mod common;

use common::{data, files, golden, pack};

fn check_golden(fixture: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let tgz = pack(&data(fixture), tmp.path());
    let files = files(&tgz);
    let dir = golden(fixture);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    for name in ["report.md", "summary.json"] {
        let got = files
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the bundle"));
        let path = dir.join(name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, got).unwrap();
            eprintln!("UPDATED golden {}", path.display());
            continue;
        }
        let want = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
                path.display()
            )
        });
        if *got != want {
            let got_s = String::from_utf8_lossy(got);
            let want_s = String::from_utf8_lossy(&want);
            let first = got_s
                .lines()
                .zip(want_s.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(got_s.lines().count().min(want_s.lines().count()));
            panic!(
                "{name} of {fixture} differs from {} at line {}:\n got: {:?}\nwant: {:?}\n(UPDATE_GOLDEN=1 regenerates)",
                path.display(),
                first + 1,
                got_s.lines().nth(first),
                want_s.lines().nth(first)
            );
        }
    }
}

#[test]
fn golden_cluster_run() {
    check_golden("cluster-run");
}

#[test]
fn golden_local_hami() {
    check_golden("local-hami");
}

/// A real gpu-probe report, captured on an H100 with no HAMi (bare card, `--expect-mib 8000`):
/// every claim fails, as it must.
#[test]
fn golden_local_h100_bare_card() {
    check_golden("local-h100-bare");
}

/// The real H100 reports committed with gpu-probe (all / view with a limit env / cap with a
/// ceiling), packed together: several reports, claim ids prefixed with the file name.
#[test]
fn golden_local_h100_lead_reports() {
    check_golden("local-h100-lead");
}

/// The other real H100 reports of gpu-probe (audit, overhead, compute, cap filling the card,
/// selftest with a library that is not HAMi-core).
#[test]
fn golden_local_h100_more_sections() {
    check_golden("local-h100-more");
}
