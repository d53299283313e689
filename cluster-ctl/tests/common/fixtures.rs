//! Where cluster-ctl's test data lives, and how it is loaded: the one place that knows the paths
//! (`src/testdata.rs` for the unit tests and the integration tests both include this file).
//! Everything is inside the repository: `tests/data/` (see its README for provenance),
//! lab-report's copy of the reports captured under real HAMi-core on an H200, and gpu-probe's
//! own captured bare-H100 reports.

#![allow(dead_code)]

use serde::de::DeserializeOwned;

/// Kubernetes objects as a HAMi k3s cluster serves them (constructed).
pub const K8S: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/k8s");
/// gpu-probe reports captured under real HAMi-core on an H200 (the repository keeps them once, in
/// lab-report's test data; see its README).
pub const H200_REPORTS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../lab-report/tests/data/h200");
/// The GPU the real H200 reports were probed on.
pub const H200_UUID: &str = "GPU-e0628ec7-253e-9593-877b-faac7911234e";
/// The H100 of the constructed Kubernetes fixtures.
pub const FIXTURE_H100_UUID: &str = "GPU-4f7efa07-0f69-f62e-5958-365ed3785eb2";
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

/// A captured H200 gpu-probe file: `h1-8000.json`/`.err` (8000 MiB slice under HAMi-core,
/// verified), `h2-bare.json` (no HAMi-core), `h4-audit.json`/`.err` (three paths escape),
/// `p0-overhead-bare.json`, `p1-overhead-hami.json`.
pub fn h200(name: &str) -> String {
    read(H200_REPORTS, name)
}

/// A captured bare-H100 gpu-probe report of gpu-probe's test data.
pub fn h100_bare(name: &str) -> String {
    read(GPU_PROBE_DATA, name)
}

/// A share pod fixture allocated the H200 of the real reports instead of the fixture's H100 (the
/// pods are constructed objects either way), as JSON.
pub fn share_pod_on_h200_json(file: &str) -> serde_json::Value {
    let text = fixture_text(file).replace(FIXTURE_H100_UUID, H200_UUID);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {file}: {e}"))
}

/// A gpu-probe report of gpu-probe's own test data (`bypass/…`: the audits with the bypass rows,
/// captured under four real HAMi-core revisions and on the bare card of an H200; see its README).
pub fn gpu_probe_data(name: &str) -> String {
    read(GPU_PROBE_DATA, name)
}
