//! Test helpers: load the shared real-format fixtures (`../shared/fixtures/hami/k8s`) as typed
//! Kubernetes objects. Compiled only for tests.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod};
use serde::de::DeserializeOwned;

/// Folder of the Kubernetes fixtures.
pub const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/hami/k8s"
);

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
