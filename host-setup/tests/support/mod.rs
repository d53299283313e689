//! Shared helpers of the integration tests: fixture paths, fixture trees (built by
//! `tests/make-fixture-tree.sh`, the same script a reviewer runs), observation of a tree without
//! touching the host, and the real containerd binaries available for `config dump`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use host_setup::apply::ApplyOptions;
use host_setup::observe::{Observation, Observer};
use host_setup::root::HostRoot;
use host_setup::validate::Validators;
use lab_runner::{Cmd, RecordingRunner, Runner, SystemRunner};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/host");
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/make-fixture-tree.sh");
pub const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Every containerd config fixture (all `.toml` files of tests/data/host).
pub fn containerd_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .expect("fixtures dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    names
}

/// A fresh tree for a scenario of make-fixture-tree.sh.
pub fn tree(args: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = SystemRunner::new(false);
    let path = dir.path().to_string_lossy().into_owned();
    let mut cmd = Cmd::new("bash").arg(SCRIPT).arg(path);
    cmd = cmd.args(args.iter().copied());
    runner.run_checked(&cmd).expect("make-fixture-tree.sh");
    dir
}

/// Observes a tree as `--root DIR` does, with a recording runner (no program runs).
pub fn observe_tree(root: &HostRoot) -> Observation {
    let runner = RecordingRunner::new(&[]);
    Observer {
        runner: &runner,
        root,
        probes_in_root: false,
        system: false,
    }
    .observe(None)
}

pub fn read(dir: &Path, host: &str) -> Vec<u8> {
    std::fs::read(dir.join(host.trim_start_matches('/'))).unwrap_or_default()
}

/// Real containerd binaries: (path, major version). `containerd` on PATH (Debian bookworm: 1.6)
/// and a v3-capable one from `$HOST_SETUP_CONTAINERD2` or /opt/containerd2 (tests/install-containerd2.sh).
pub fn containerd_bins() -> Vec<(String, u32)> {
    let runner = SystemRunner::new(false);
    let mut candidates = vec!["containerd".to_owned()];
    if let Ok(p) = std::env::var("HOST_SETUP_CONTAINERD2") {
        candidates.push(p);
    }
    candidates.push("/opt/containerd2/usr/bin/containerd".to_owned());
    let mut out: Vec<(String, u32)> = Vec::new();
    for c in candidates {
        if !runner.exists(&c) || out.iter().any(|(p, _)| *p == c) {
            continue;
        }
        if let Some(major) = host_setup::validate::containerd_major(&runner, &c) {
            out.push((c, major));
        }
    }
    out
}

pub fn golden_path(name: &str) -> PathBuf {
    Path::new(GOLDEN).join(name)
}

/// Compares with a golden file; `UPDATE_GOLDEN=1` rewrites it.
pub fn assert_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden {}: {e} (run with UPDATE_GOLDEN=1 to create)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "output differs from golden {}",
        path.display()
    );
}

/// Every file under `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir` with its bytes, sorted: equal snapshots mean no byte changed.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Apply options for tests: polls without pauses, a fixed backup stamp.
pub fn apply_opts(system: bool, wait_attempts: u32, validators: Validators) -> ApplyOptions {
    ApplyOptions {
        system,
        wait_attempts,
        poll_interval: std::time::Duration::ZERO,
        validators,
        stamp: "20260101T000000Z".to_owned(),
    }
}

/// `--no-validate`: for tests of other things than validation (golden bytes, rollback with a
/// recording runner, where no real containerd runs). The real-containerd tier is
/// `tests/real_containerd.rs`.
pub fn waived() -> Validators {
    Validators {
        waive: true,
        ..Validators::default()
    }
}
