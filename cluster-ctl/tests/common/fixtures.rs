//! Where cluster-ctl's test data lives, and how it is loaded: the one place that knows the paths
//! (`src/testdata.rs` for the unit tests and the integration tests both include this file).
//! Everything is inside the repository: `tests/data/` (see its README for provenance) and
//! gpu-probe's own captured reports.

#![allow(dead_code)]

use serde::de::DeserializeOwned;

/// Kubernetes objects as a HAMi k3s cluster serves them (constructed).
pub const K8S: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/k8s");
/// gpu-probe reports captured under real HAMi-core on an H200.
pub const H200_REPORTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/h200-hami-core-reports"
);
/// gpu-probe reports captured on a bare H100 (gpu-probe's own test data).
pub const GPU_PROBE_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../gpu-probe/tests/data");

fn read(dir: &str, name: &str) -> String {
    std::fs::read_to_string(format!("{dir}/{name}"))
        .unwrap_or_else(|e| panic!("test data {dir}/{name}: {e}"))
}

/// The raw text of a Kubernetes fixture.
pub fn fixture_text(name: &str) -> String {
    read(K8S, name)
}

/// A Kubernetes fixture parsed as `T`.
pub fn fixture<T: DeserializeOwned>(name: &str) -> T {
    serde_json::from_str(&fixture_text(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `items` of a `*List` fixture.
pub fn fixture_items<T: DeserializeOwned>(name: &str) -> Vec<T> {
    let list: serde_json::Value = fixture(name);
    serde_json::from_value(list["items"].clone()).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A captured H200 + HAMi-core gpu-probe file (`h1-8000.json`, `h4-audit.err`, …).
pub fn h200(name: &str) -> String {
    read(H200_REPORTS, name)
}

/// A captured bare-H100 gpu-probe report of gpu-probe's test data.
pub fn h100_bare(name: &str) -> String {
    read(GPU_PROBE_DATA, name)
}
