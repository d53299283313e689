//! Test helpers: load the real-format fixtures (`tests/data/k8s`, see its README) as typed
//! Kubernetes objects. Compiled only for tests.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod};
use serde::de::DeserializeOwned;

/// Folder of the Kubernetes fixtures.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/k8s");

/// The raw text of a fixture file.
pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A fixture parsed as `T`.
pub fn fixture<T: DeserializeOwned>(name: &str) -> T {
    serde_json::from_str(&fixture_text(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `items` of a `*List` fixture.
pub fn fixture_items<T: DeserializeOwned>(name: &str) -> Vec<T> {
    let list: serde_json::Value = fixture(name);
    serde_json::from_value(list["items"].clone()).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn fixture_node(name: &str) -> Node {
    fixture(name)
}

pub fn fixture_pod(name: &str) -> Pod {
    fixture(name)
}

pub fn fixture_deploy(name: &str) -> Deployment {
    fixture(name)
}

pub fn fixture_endpoints(name: &str) -> Endpoints {
    fixture(name)
}

pub fn fixture_events(name: &str) -> Vec<Event> {
    fixture_items(name)
}

pub fn fixture_daemonsets(name: &str) -> Vec<DaemonSet> {
    fixture_items(name)
}

/// The register annotation of a node fixture (empty when absent).
pub fn register_of(node: &Node) -> String {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::register::REGISTER_ANNOTATION))
        .cloned()
        .unwrap_or_default()
}

/// A real gpu-probe report captured under real HAMi-core on an H200 (`lab-report/tests/data/h200`,
/// see its README): `h1-8000.json` (8000 MiB slice, VERIFIED), `h2-bare.json` (no HAMi-core),
/// `h4-audit.json` (three paths escape), `p0-overhead-bare.json`, `p1-overhead-hami.json`.
pub fn h200_report(name: &str) -> String {
    let path = format!(
        "{}/../lab-report/tests/data/h200/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The GPU the real H200 reports were probed on.
pub const H200_UUID: &str = "GPU-e0628ec7-253e-9593-877b-faac7911234e";

/// A share pod fixture allocated the H200 of the real reports instead of the fixture's H100 (the
/// pods are constructed objects either way).
pub fn share_pod_on_h200(file: &str) -> k8s_openapi::api::core::v1::Pod {
    let text = fixture_text(file).replace("GPU-4f7efa07-0f69-f62e-5958-365ed3785eb2", H200_UUID);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {file}: {e}"))
}

/// Two cards of `devmem_mib` with known UUIDs `GPU-a` and `GPU-b` (a multi-GPU node).
pub fn two_cards(devmem_mib: u64) -> Vec<crate::sizing::Card> {
    ["GPU-a", "GPU-b"]
        .iter()
        .map(|u| crate::sizing::Card {
            uuid: Some((*u).into()),
            devmem_mib,
        })
        .collect()
}
