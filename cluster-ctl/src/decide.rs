//! Pure decisions over Kubernetes objects: scheduler image tag, coexisting NVIDIA components,
//! readiness of HAMi's parts, node registration, pod placement and scheduler events.
//!
//! kube-rs style: the async code only fetches/watches objects and awaits these functions; every one
//! of them is unit-tested on the shared fixtures.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod};
use serde::Serialize;

use crate::register::{Gpu, REGISTER_ANNOTATION, RegisterFormat, parse_register};

/// The scheduler name HAMi's webhook sets on GPU pods, hami-scheduler's event texts and their
/// parser: defined in lab-report, which judges the same objects again (E1's co-residency rule is
/// lab-report's alone, applied to the pods `run` writes).
pub use lab_report::k8s::{HAMI_SCHEDULER, INSUFFICIENT_MEMORY, OversubscribeEvidence};
/// HAMi resource names that make the webhook route a pod to HAMi.
pub const HAMI_RESOURCES: [&str; 4] = [
    "nvidia.com/gpumem",
    "nvidia.com/gpucores",
    "nvidia.com/gpumem-percentage",
    "nvidia.com/gpu",
];

// ---------------------------------------------------------------------------------------------
// Versions and image tags

/// `v1.31.4+k3s1` → `v1.31.4` (also strips `-eks-…`, as the chart's regex does). `None` when the
/// value does not start with `v<major>.<minor>.<patch>`.
pub fn strip_server_version(git_version: &str) -> Option<String> {
    let rest = git_version.strip_prefix('v')?;
    let mut end = 0;
    let mut dots = 0;
    let mut digits_in_part = 0;
    for (i, c) in rest.char_indices() {
        if c.is_ascii_digit() {
            digits_in_part += 1;
            end = i + 1;
        } else if c == '.' && dots < 2 && digits_in_part > 0 {
            dots += 1;
            digits_in_part = 0;
        } else {
            break;
        }
    }
    (dots == 2 && digits_in_part > 0).then(|| format!("v{}", &rest[..end]))
}

/// The tag of an image reference (`None` for no tag); a digest (`@sha256:…`) is ignored.
pub fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let name = &without_digest[last_slash..];
    name.split_once(':')
        .map(|(_, tag)| tag)
        .filter(|t| !t.is_empty())
}

/// Outcome of comparing the scheduler's kube-scheduler image tag with the server version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagCheck {
    pub image: Option<String>,
    pub found_tag: Option<String>,
    pub expected_tag: Option<String>,
    pub ok: bool,
}

/// The image of a named container of a Deployment.
pub fn container_image(deploy: &Deployment, container: &str) -> Option<String> {
    deploy
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)?
        .image
        .clone()
}

/// The kube-scheduler sidecar's tag must equal the server version without `+k3sN`.
pub fn check_scheduler_tag(server_git_version: &str, scheduler: &Deployment) -> TagCheck {
    let image = container_image(scheduler, "kube-scheduler");
    let found_tag = image.as_deref().and_then(image_tag).map(str::to_owned);
    let expected_tag = strip_server_version(server_git_version);
    let ok = found_tag.is_some() && found_tag == expected_tag;
    TagCheck {
        image,
        found_tag,
        expected_tag,
        ok,
    }
}

/// Every container image of a Deployment or DaemonSet pod template.
pub fn template_images(spec: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Vec<String> {
    spec.and_then(|t| t.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Coexisting NVIDIA components

/// A component that must not run beside HAMi's device plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    NvidiaDevicePlugin,
    GpuFeatureDiscovery,
    GpuOperator,
}

impl Component {
    pub fn describe(self) -> &'static str {
        match self {
            Self::NvidiaDevicePlugin => "NVIDIA device plugin",
            Self::GpuFeatureDiscovery => "GPU feature discovery (GFD)",
            Self::GpuOperator => "NVIDIA GPU Operator",
        }
    }
}

/// One coexisting object found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coexisting {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub component: Component,
}

fn is_hami(name: &str, labels: &BTreeMap<String, String>) -> bool {
    name.starts_with("hami-")
        || labels
            .get("app.kubernetes.io/name")
            .is_some_and(|v| v == "hami")
        || labels
            .get("app.kubernetes.io/component")
            .is_some_and(|v| v.starts_with("hami-"))
}

fn classify(namespace: &str, name: &str, labels: &BTreeMap<String, String>) -> Option<Component> {
    if is_hami(name, labels) {
        return None;
    }
    let mut words = name.to_ascii_lowercase();
    for v in labels.values() {
        words.push(' ');
        words.push_str(&v.to_ascii_lowercase());
    }
    if words.contains("gpu-feature-discovery") {
        return Some(Component::GpuFeatureDiscovery);
    }
    if words.contains("nvidia-device-plugin") {
        return Some(Component::NvidiaDevicePlugin);
    }
    if words.contains("gpu-operator") {
        return Some(Component::GpuOperator);
    }
    // Images are deliberately not used: the shared fixtures (and real clusters that mirror images)
    // show unrelated DaemonSets with NVIDIA images; names and labels are what the charts set.
    if namespace == "gpu-operator" {
        return Some(Component::GpuOperator);
    }
    None
}

/// NVIDIA device plugins, GFD and GPU Operator parts among DaemonSets and pods (HAMi's own excluded).
/// Pods owned by a DaemonSet already listed are not repeated.
pub fn find_coexisting(daemonsets: &[DaemonSet], pods: &[Pod]) -> Vec<Coexisting> {
    let mut found = Vec::new();
    for ds in daemonsets {
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let name = ds.metadata.name.clone().unwrap_or_default();
        let labels = ds.metadata.labels.clone().unwrap_or_default();
        if let Some(component) = classify(&ns, &name, &labels) {
            found.push(Coexisting {
                kind: "DaemonSet",
                namespace: ns,
                name,
                component,
            });
        }
    }
    for pod in pods {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let owned_by_listed_ds = pod.metadata.owner_references.iter().flatten().any(|o| {
            o.kind == "DaemonSet"
                && found
                    .iter()
                    .any(|f| f.kind == "DaemonSet" && f.namespace == ns && f.name == o.name)
        });
        if owned_by_listed_ds {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if let Some(component) = classify(&ns, &name, &labels) {
            found.push(Coexisting {
                kind: "Pod",
                namespace: ns,
                name,
                component,
            });
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Readiness

/// A Deployment's (ready, wanted) replicas; wanted defaults to 1, as the API server's default.
pub fn deployment_replicas(d: &Deployment) -> (i32, i32) {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    (ready, want)
}

/// A Deployment is ready when it wants ≥ 1 replica and all of them are ready.
pub fn deployment_ready(d: &Deployment) -> bool {
    let (ready, want) = deployment_replicas(d);
    want > 0 && ready >= want
}

/// A DaemonSet is ready when it is scheduled somewhere and every scheduled pod is ready.
pub fn daemonset_ready(ds: &DaemonSet) -> bool {
    ds.status.as_ref().is_some_and(|s| {
        s.desired_number_scheduled > 0 && s.number_ready >= s.desired_number_scheduled
    })
}

/// The webhook Service has at least one ready address.
pub fn endpoints_ready(ep: &Endpoints) -> bool {
    ep.subsets
        .iter()
        .flatten()
        .any(|s| s.addresses.as_ref().is_some_and(|a| !a.is_empty()))
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// What a node tells about HAMi's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRegistration {
    pub name: String,
    /// Labelled `gpu=on` (HAMi's device plugin only runs there).
    pub labelled: bool,
    /// Allocatable `nvidia.com/gpu` (physical GPUs × split count).
    pub allocatable_gpu: u64,
    /// `nvidia.com/gpumem` in allocatable (normally absent with HAMi: it is not an extended resource).
    pub allocatable_gpumem: Option<String>,
    pub format: Option<RegisterFormat>,
    pub gpus: Vec<Gpu>,
    /// Why the register annotation did not parse (absent annotation = `None` here and no gpus).
    pub register_error: Option<String>,
}

impl NodeRegistration {
    /// Registered: allocatable `nvidia.com/gpu` > 0 and the annotation parsed into ≥ 1 GPU.
    pub fn registered(&self) -> bool {
        self.allocatable_gpu > 0 && !self.gpus.is_empty()
    }
}

/// Reads the `gpu=on` label, allocatable and the register annotation of a node.
pub fn node_registration(node: &Node) -> NodeRegistration {
    let labelled = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("gpu"))
        .is_some_and(|v| v == "on");
    let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let allocatable_gpu = alloc
        .and_then(|a| a.get("nvidia.com/gpu"))
        .and_then(|q| q.0.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let allocatable_gpumem = alloc
        .and_then(|a| a.get("nvidia.com/gpumem"))
        .map(|q| q.0.clone());
    let annotation = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REGISTER_ANNOTATION));
    let (format, gpus, register_error) = match annotation.map(|v| parse_register(v)) {
        None => (None, Vec::new(), None),
        Some(Ok((f, g))) => (Some(f), g, None),
        Some(Err(e)) => (None, Vec::new(), Some(e.to_string())),
    };
    NodeRegistration {
        name: node.metadata.name.clone().unwrap_or_default(),
        labelled,
        allocatable_gpu,
        allocatable_gpumem,
        format,
        gpus,
        register_error,
    }
}

// ---------------------------------------------------------------------------------------------
// Pods

/// The pod's `Ready` condition is true.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's phase (empty when unknown).
pub fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn scheduler_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or("default-scheduler")
}

pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// The pod asks for a HAMi resource in some container (limits or requests).
pub fn requests_hami_resource(pod: &Pod) -> bool {
    pod.spec.iter().flat_map(|s| s.containers.iter()).any(|c| {
        c.resources.as_ref().is_some_and(|r| {
            [r.limits.as_ref(), r.requests.as_ref()]
                .into_iter()
                .flatten()
                .any(|m| HAMI_RESOURCES.iter().any(|k| m.contains_key(*k)))
        })
    })
}

/// Why a container of a pod is waiting (e.g. `ImagePullBackOff`), per container name.
pub fn waiting_reasons(pod: &Pod) -> Vec<(String, String)> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let reason = c.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
            Some((c.name.clone(), reason))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Scheduler events

/// What lab-report's judge reads of an event.
pub fn event_facts(ev: &Event) -> lab_report::k8s::EventFacts {
    let mut v = serde_json::to_value(ev).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.insert("kind".into(), "Event".into());
    }
    lab_report::k8s::EventFacts::from_json(&v).unwrap_or_default()
}

/// Finds the strongest evidence that `pod` was refused for card memory (lab-report's rule).
pub fn match_insufficient_memory(events: &[Event], pod: &str) -> OversubscribeEvidence {
    let facts: Vec<lab_report::k8s::EventFacts> = events.iter().map(event_facts).collect();
    lab_report::k8s::match_insufficient_memory(&facts, pod, None)
}

/// The distinct `Warning` messages about `pod` (reason: message), most recent last, at most 3:
/// what a stuck pod's diagnosis shows next to the doctor rules.
pub fn pod_warnings(events: &[Event], pod: &str) -> Vec<String> {
    let mut mine: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(pod) && e.type_.as_deref() == Some("Warning")
        })
        .collect();
    mine.sort_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0));
    let mut out: Vec<String> = Vec::new();
    for e in mine {
        let line = format!(
            "{} from {}: {}",
            e.reason.as_deref().unwrap_or("?"),
            e.source
                .as_ref()
                .and_then(|s| s.component.as_deref())
                .unwrap_or("?"),
            e.message.as_deref().unwrap_or("")
        );
        out.retain(|l| *l != line);
        out.push(line);
    }
    let skip = out.len().saturating_sub(3);
    out.split_off(skip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::*;
    use proptest::prelude::*;

    #[test]
    fn k3s_version_is_stripped() {
        let v: k8s_openapi::apimachinery::pkg::version::Info = fixture("version-k3s.json");
        assert_eq!(
            strip_server_version(&v.git_version).as_deref(),
            Some("v1.31.4")
        );
        assert_eq!(
            strip_server_version("v1.30.2-eks-1234").as_deref(),
            Some("v1.30.2")
        );
        assert_eq!(strip_server_version("v1.31").as_deref(), None);
        assert_eq!(strip_server_version("1.31.4").as_deref(), None);
    }

    #[test]
    fn image_tags() {
        assert_eq!(
            image_tag("registry.k8s.io/kube-scheduler:v1.31.4"),
            Some("v1.31.4")
        );
        assert_eq!(image_tag("localhost:5000/kube-scheduler"), None);
        assert_eq!(image_tag("localhost:5000/ks:v1@sha256:abc"), Some("v1"));
        assert_eq!(image_tag("kube-scheduler"), None);
    }

    #[test]
    fn tag_check_on_fixtures() {
        let ok = check_scheduler_tag(
            "v1.31.4+k3s1",
            &fixture_deploy("deploy-hami-scheduler-tag-match.json"),
        );
        assert!(ok.ok, "{ok:?}");
        let bad = check_scheduler_tag(
            "v1.31.4+k3s1",
            &fixture_deploy("deploy-hami-scheduler-tag-mismatch.json"),
        );
        assert!(!bad.ok);
        assert_eq!(bad.found_tag.as_deref(), Some("v1.20.0"));
        assert_eq!(bad.expected_tag.as_deref(), Some("v1.31.4"));
        // A raw k3s tag (chart 2.4.1) is a mismatch too.
        let mut raw = fixture_deploy("deploy-hami-scheduler-tag-match.json");
        if let Some(c) = raw.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            c.containers[0].image = Some("x/kube-scheduler:v1.31.4+k3s1".into());
        }
        assert!(!check_scheduler_tag("v1.31.4+k3s1", &raw).ok);
    }

    #[test]
    fn gpu_operator_and_gfd_are_found_hami_is_not() {
        let found = find_coexisting(&fixture_daemonsets("daemonsets-gpu-operator.json"), &[]);
        let names: Vec<(&str, Component)> = found
            .iter()
            .map(|f| (f.name.as_str(), f.component))
            .collect();
        assert_eq!(
            names,
            vec![
                (
                    "nvidia-device-plugin-daemonset",
                    Component::NvidiaDevicePlugin
                ),
                ("gpu-feature-discovery", Component::GpuFeatureDiscovery),
            ]
        );
        assert!(find_coexisting(&fixture_daemonsets("daemonsets-hami-only.json"), &[]).is_empty());
    }

    #[test]
    fn bare_device_plugin_pod_is_found_owned_pod_is_not_repeated() {
        let ds = fixture_daemonsets("daemonsets-gpu-operator.json");
        let mut pod = fixture_pod("pod-hami-share-a-running.json");
        pod.metadata.name = Some("nvidia-device-plugin-daemonset-abcde".into());
        pod.metadata.namespace = Some("gpu-operator".into());
        pod.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                kind: "DaemonSet".into(),
                name: "nvidia-device-plugin-daemonset".into(),
                ..Default::default()
            },
        ]);
        assert_eq!(find_coexisting(&ds, std::slice::from_ref(&pod)).len(), 2);
        pod.metadata.owner_references = None;
        let found = find_coexisting(&[], &[pod]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, "Pod");
        // The lab's own share pod is not a device plugin.
        assert!(find_coexisting(&[], &[fixture_pod("pod-hami-share-a-running.json")]).is_empty());
    }

    #[test]
    fn readiness_on_fixtures() {
        assert!(deployment_ready(&fixture_deploy(
            "deploy-hami-scheduler-tag-match.json"
        )));
        assert!(endpoints_ready(&fixture_endpoints(
            "endpoints-hami-scheduler-ready.json"
        )));
        assert!(!endpoints_ready(&fixture_endpoints(
            "endpoints-hami-scheduler-empty.json"
        )));
        let ds = fixture_daemonsets("daemonsets-hami-only.json");
        assert!(daemonset_ready(&ds[0]));
        let mut not_ready = ds[0].clone();
        if let Some(s) = not_ready.status.as_mut() {
            s.number_ready = 0;
        }
        assert!(!daemonset_ready(&not_ready));
        let mut d = fixture_deploy("deploy-hami-scheduler-tag-match.json");
        if let Some(s) = d.status.as_mut() {
            s.ready_replicas = None;
        }
        assert!(!deployment_ready(&d));
    }

    #[test]
    fn node_registration_on_fixtures() {
        for name in [
            "node-hami-v2.10-h100.json",
            "node-hami-v2.9-a6000.json",
            "node-hami-v2.6-l4-legacy9.json",
            "node-hami-v2.4-v100-legacy7.json",
        ] {
            let r = node_registration(&fixture_node(name));
            assert!(r.registered(), "{name}: {r:?}");
            assert!(r.labelled);
            assert_eq!(r.allocatable_gpu, 10);
            assert_eq!(r.allocatable_gpumem, None);
        }
        let un = node_registration(&fixture_node("node-gpu-on-unregistered.json"));
        assert!(un.labelled && !un.registered());
        assert_eq!(un.allocatable_gpu, 0);
        let bare = node_registration(&fixture_node("node-unlabelled.json"));
        assert!(!bare.labelled && !bare.registered());
    }

    #[test]
    fn share_pods_are_ready_and_the_unmutated_one_asks_hami() {
        let a = fixture_pod("pod-hami-share-a-running.json");
        let b = fixture_pod("pod-hami-share-b-running.json");
        assert!(pod_ready(&a) && pod_ready(&b));
        let u = fixture_pod("pod-unmutated-default-scheduler.json");
        assert!(requests_hami_resource(&u));
        assert!(!pod_ready(&u));
    }

    #[test]
    fn oversubscribe_events_match() {
        let ev = fixture_events("events-oversubscribe.json");
        assert_eq!(
            match_insufficient_memory(&ev, "hami-oversubscribe"),
            OversubscribeEvidence::Named {
                nodes: vec!["gpu-vm-1".into()],
                message: "1 nodes CardInsufficientMemory(gpu-vm-1)".into()
            }
        );
        assert_eq!(
            match_insufficient_memory(&ev, "other-pod"),
            OversubscribeEvidence::Nothing
        );
        // Without the per-reason event (HAMi < 2.7) only weaker evidence remains.
        let without: Vec<Event> = ev
            .iter()
            .filter(|e| !e.message.as_deref().unwrap_or("").starts_with("1 nodes"))
            .cloned()
            .collect();
        assert!(matches!(
            match_insufficient_memory(&without, "hami-oversubscribe"),
            OversubscribeEvidence::SummaryOnly { .. }
        ));
        let generic: Vec<Event> = ev.iter().take(1).cloned().collect();
        assert!(matches!(
            match_insufficient_memory(&generic, "hami-oversubscribe"),
            OversubscribeEvidence::GenericOnly { .. }
        ));
        // default-scheduler's refusal is not HAMi's.
        let unmut = fixture_events("events-unmutated.json");
        assert_eq!(
            match_insufficient_memory(&unmut, "hami-share-a"),
            OversubscribeEvidence::Nothing
        );
    }

    #[test]
    fn warnings_of_a_stuck_pod() {
        let w = pod_warnings(&fixture_events("events-unmutated.json"), "hami-share-a");
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("FailedScheduling from default-scheduler: 0/1 nodes are available: 1 Insufficient nvidia.com/gpumem"), "{w:?}");
        let over = pod_warnings(
            &fixture_events("events-oversubscribe.json"),
            "hami-oversubscribe",
        );
        assert_eq!(over.len(), 3);
        assert!(pod_warnings(&fixture_events("events-share-a.json"), "hami-share-a").is_empty());
    }

    proptest! {
        #[test]
        fn version_and_tag_never_panic(s in ".{0,80}") {
            let _ = strip_server_version(&s);
            let _ = image_tag(&s);
        }
    }
}
