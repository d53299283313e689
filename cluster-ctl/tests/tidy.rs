//! Tidy checks of cluster-ctl's source tree: the invariants of ARCHITECTURE.md that a compiler
//! does not check. Only `src/api/` talks to the API server (no `kube::Api`, `Api::<…>`,
//! `Api::namespaced/all`, raw `Client` request or `watcher` anywhere else in `src/`); the mock API
//! server and other test doubles stay out of `src/`. (The workspace-wide rules — a `//!` comment
//! on every file, workspace dependencies, READMEs — are `cargo test -p xtask tidy`'s.)

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The code lines of a file (comments dropped: a doc may name what it must not do).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.starts_with("//"))
}

#[test]
fn only_the_api_module_talks_to_the_api_server() {
    let api = src().join("api");
    let forbidden = [
        "kube::Api",
        "Api::<",
        "Api::namespaced",
        "Api::all",
        "kube::api::",
        "kube::runtime",
        ".apiserver_version(",
        "Client::try_from",
        "kube::Client",
        "watcher(",
        "await_condition",
    ];
    let mut breaches = Vec::new();
    for file in rust_files(&src()) {
        if file.starts_with(&api) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in code_lines(&text) {
            for f in forbidden {
                if line.contains(f) {
                    breaches.push(format!("{}:{n}: {f} in `{line}`", file.display()));
                }
            }
        }
    }
    assert!(
        breaches.is_empty(),
        "API calls outside src/api/ (move them into api):\n{}",
        breaches.join("\n")
    );
}

#[test]
fn the_tidy_check_sees_a_breach() {
    // The check above must be able to fail: a line as a breach would be written is caught.
    let breach = "    let pods = Api::<Pod>::namespaced(client.clone(), ns);";
    assert!(code_lines(breach).any(|(_, l)| l.contains("Api::<")));
    assert!(code_lines("// Api::<Pod> in a comment").next().is_none());
}

#[test]
fn test_doubles_stay_out_of_src() {
    for file in rust_files(&src()) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.contains("mock") && !name.contains("execserver"),
            "{} belongs under tests/",
            file.display()
        );
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("tower::service_fn"),
            "{}: a test service in src/",
            file.display()
        );
    }
}
