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

/// The real bare-H100 report with the mechanism section as a HAMi pod shows it (facts §5, §11,
/// §15: the library from /etc/ld.so.preload, mapped, exporting the hooks; an 8000 MiB region limit).
pub fn hami_active_report() -> String {
    use gpu_probe::report::*;
    let bare = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gpu-probe/tests/data/h100-bare-all-expect-8000.json"
    ))
    .unwrap();
    let mut r: Report = serde_json::from_str(&bare).unwrap();
    let m = r.mechanism.as_mut().unwrap();
    m.outcome = MechanismOutcome::HamiCoreActive;
    m.libraries = vec![LibraryCheck {
        path: "/usr/local/vgpu/libvgpu.so".into(),
        named_in: "/etc/ld.so.preload".into(),
        exists: true,
        mapped_after_cuda_init: Some(true),
        symbols: vec![SymbolCheck {
            name: "cuMemAlloc_v2".into(),
            exported: true,
            resolved_in: None,
        }],
        error: None,
    }];
    m.shared_region.path = "/usr/local/vgpu/x.cache".into();
    m.shared_region.region = Some(SharedRegion {
        limits: vec![8000 * 1024 * 1024],
        ..SharedRegion::default()
    });
    // What the probe reports in such a pod: every check passed.
    r.checks.retain(|c| c.id != "mechanism");
    for c in &mut r.checks {
        c.status = CheckStatus::Passed;
    }
    r.verdict = Verdict::from_checks(&r.checks);
    serde_json::to_string(&r).unwrap()
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
