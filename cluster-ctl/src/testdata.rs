//! Test helpers: the in-repo test data (paths and loading live in `tests/common/fixtures.rs`,
//! shared with the integration tests) as typed Kubernetes objects. Compiled only for tests.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod};

#[path = "../tests/common/fixtures.rs"]
mod fixtures;
pub use fixtures::*;

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

/// A share pod fixture allocated the H200 of the real reports instead of the fixture's H100.
pub fn share_pod_on_h200(file: &str) -> Pod {
    serde_json::from_value(share_pod_on_h200_json(file))
        .unwrap_or_else(|e| panic!("fixture {file}: {e}"))
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
