//! Facts: signals read from structure rather than from a line — parsed Kubernetes objects, gpu-probe
//! reports, and the block structure of `kubectl describe`. The eight checks `doctor` always had
//! (`crate::doctor`'s pure functions over a [`Snapshot`](crate::doctor::Snapshot)) are facts here,
//! so live state and pasted `kubectl get -o json|yaml` go through the same code. Pure.

use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Pod;
use regex::Regex;
use serde::Serialize;

use super::evidence::{DocKind, Document, Evidence};
use crate::decide::{self, HAMI_SCHEDULER, node_registration};
use crate::doctor::{self, Finding};

/// A structured signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fact {
    HamiNotInstalled,
    CoexistingDevicePlugin,
    NoNodeLabelled,
    NodeUnregistered,
    SchedulerImagePull,
    SchedulerTagMismatch,
    WebhookNoEndpoints,
    PodsOnDefaultScheduler,
    ProbeFullCard,
    GpumemNotAllocatable,
    SchedulerInvalidImageName,
    UnhealthyGpu,
    ProbeNothingInjected,
    ProbePreloadMissingLibrary,
    ProbeAuditEscape,
    PendingWholeCardRequest,
    NodeGpusInUse,
}

/// One piece of evidence a fact found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub source: String,
    pub line: Option<usize>,
    pub text: String,
    /// Values for the fix's `<placeholders>`.
    pub bindings: Vec<(String, String)>,
    /// The per-object fix `doctor`'s own check wrote (kept for `doctor::diagnose`).
    pub detector_fix: Option<String>,
}

/// What `fact` finds in `ev`.
pub fn detect(fact: Fact, ev: &Evidence) -> Vec<Hit> {
    let s = &ev.snapshot;
    match fact {
        // Absence means absence only in a full listing of the cluster.
        Fact::HamiNotInstalled if ev.complete => from_findings(ev, doctor::hami_not_installed(s)),
        Fact::HamiNotInstalled => Vec::new(),
        Fact::CoexistingDevicePlugin => from_findings(ev, doctor::two_device_plugins(s)),
        Fact::NoNodeLabelled => from_findings(ev, doctor::node_unlabelled(s)),
        Fact::NodeUnregistered => from_findings(ev, doctor::node_unregistered(s)),
        Fact::SchedulerImagePull => from_findings(ev, doctor::scheduler_image_pull(s)),
        Fact::SchedulerTagMismatch => from_findings(ev, doctor::tag_mismatch(s)),
        Fact::WebhookNoEndpoints if ev.complete || s.scheduler_endpoints.is_some() => {
            from_findings(ev, doctor::webhook_no_endpoints(s))
        }
        Fact::WebhookNoEndpoints => Vec::new(),
        Fact::PodsOnDefaultScheduler => from_findings(ev, doctor::default_scheduler_pods(s)),
        Fact::ProbeFullCard => from_findings(ev, doctor::full_card_view(s)),
        Fact::GpumemNotAllocatable => from_findings(ev, doctor::gpumem_not_allocatable(s)),
        Fact::SchedulerInvalidImageName => scheduler_invalid_image_name(ev),
        Fact::UnhealthyGpu => unhealthy_gpus(ev),
        Fact::ProbeNothingInjected => probe_nothing_injected(ev),
        Fact::ProbePreloadMissingLibrary => probe_preload_missing(ev),
        Fact::ProbeAuditEscape => probe_audit_escapes(ev),
        Fact::PendingWholeCardRequest => {
            let mut v = describe_pending_whole_card(ev);
            v.extend(pending_whole_card_pods(ev));
            v
        }
        Fact::NodeGpusInUse => {
            let mut v = describe_node_gpus_allocated(ev);
            v.extend(node_gpus_in_use_pods(ev));
            v
        }
    }
}

/// `doctor`'s findings as evidence: the subject (`node X`, `pod ns/n`, `DaemonSet ns/n`, …) names
/// the object, which says where to quote it from.
fn from_findings(ev: &Evidence, findings: Vec<Finding>) -> Vec<Hit> {
    findings
        .into_iter()
        .map(|f| {
            let (kind, name) = f
                .subject
                .split_once(' ')
                .unwrap_or(("", f.subject.as_str()));
            let kind = match kind.to_ascii_lowercase().as_str() {
                "service" => "endpoints".to_owned(),
                k => k.to_owned(),
            };
            let (source, line) = ev.origin_of(kind_static(&kind), name);
            let mut bindings = Vec::new();
            match kind.as_str() {
                "node" => bindings.push(("node".to_owned(), name.to_owned())),
                "pod" => {
                    if let Some((ns, pod)) = name.split_once('/') {
                        bindings.push(("ns".to_owned(), ns.to_owned()));
                        bindings.push(("pod".to_owned(), pod.to_owned()));
                    } else {
                        bindings.push(("pod".to_owned(), name.to_owned()));
                    }
                }
                _ => {}
            }
            Hit {
                source,
                line,
                text: format!("{}: {}", f.subject, f.what),
                bindings,
                detector_fix: Some(f.fix),
            }
        })
        .collect()
}

fn kind_static(kind: &str) -> &'static str {
    match kind {
        "node" => "node",
        "pod" => "pod",
        "daemonset" => "daemonset",
        "deployment" => "deployment",
        "endpoints" => "endpoints",
        "probe" => "probe",
        _ => "object",
    }
}

fn hami_scheduler_pods(ev: &Evidence) -> impl Iterator<Item = &Pod> {
    let ns = ev.snapshot.hami_namespace.clone();
    ev.snapshot.pods.iter().filter(move |p| {
        p.metadata.namespace.as_deref() == Some(ns.as_str())
            && (p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/component"))
                .is_some_and(|c| c == HAMI_SCHEDULER)
                || p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("hami-scheduler-")))
    })
}

fn pod_name(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or("?")
    )
}

fn pod_bindings(p: &Pod) -> Vec<(String, String)> {
    let mut b = vec![
        (
            "ns".to_owned(),
            p.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        ),
        (
            "pod".to_owned(),
            p.metadata.name.clone().unwrap_or_default(),
        ),
    ];
    if let Some(n) = decide::node_name(p) {
        b.push(("node".to_owned(), n.to_owned()));
    }
    b
}

fn scheduler_invalid_image_name(ev: &Evidence) -> Vec<Hit> {
    hami_scheduler_pods(ev)
        .flat_map(|p| {
            decide::waiting_reasons(p)
                .into_iter()
                .filter(|(c, r)| c == "kube-scheduler" && r == "InvalidImageName")
                .map(|(_, r)| {
                    let name = pod_name(p);
                    let (source, line) = ev.origin_of("pod", &name);
                    Hit {
                        source,
                        line,
                        text: format!("pod {name}: container kube-scheduler waiting: {r}"),
                        bindings: pod_bindings(p),
                        detector_fix: None,
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn unhealthy_gpus(ev: &Evidence) -> Vec<Hit> {
    ev.snapshot
        .nodes
        .iter()
        .map(node_registration)
        .flat_map(|r| {
            let (source, line) = ev.origin_of("node", &r.name);
            r.gpus
                .iter()
                .filter(|g| !g.health)
                .map(|g| Hit {
                    source: source.clone(),
                    line,
                    text: format!(
                        "node {}: {} ({}) is registered with health=false",
                        r.name, g.uuid, g.gpu_type
                    ),
                    bindings: vec![("node".to_owned(), r.name.clone())],
                    detector_fix: None,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The line of a probe report's file that holds `needle`, for quoting.
fn probe_line(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

fn probe_nothing_injected(ev: &Evidence) -> Vec<Hit> {
    ev.probes
        .iter()
        .filter_map(|p| {
            let m = p.report.mechanism.as_ref()?;
            (m.outcome == lab_report::probe::MechanismOutcome::Absent).then(|| Hit {
                source: p.source.clone(),
                line: probe_line(&p.text, "\"outcome\": \"absent\""),
                text: format!(
                    "pod {}: gpu-probe mechanism absent: {}",
                    p.pod,
                    m.reasons
                        .first()
                        .map(String::as_str)
                        .unwrap_or("no library injected")
                ),
                bindings: vec![("pod".to_owned(), p.pod.clone())],
                detector_fix: None,
            })
        })
        .collect()
}

fn probe_preload_missing(ev: &Evidence) -> Vec<Hit> {
    ev.probes
        .iter()
        .flat_map(|p| {
            p.report
                .mechanism
                .iter()
                .flat_map(|m| m.libraries.iter())
                .filter(|l| l.named_in == "/etc/ld.so.preload" && !l.exists)
                .map(|l| Hit {
                    source: p.source.clone(),
                    line: probe_line(&p.text, &l.path),
                    text: format!(
                        "pod {}: /etc/ld.so.preload names {}, which does not exist in the container",
                        p.pod, l.path
                    ),
                    bindings: vec![("pod".to_owned(), p.pod.clone())],
                    detector_fix: None,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn probe_audit_escapes(ev: &Evidence) -> Vec<Hit> {
    ev.probes
        .iter()
        .flat_map(|p| {
            p.report
                .audit
                .iter()
                .flat_map(|a| a.paths.iter())
                .filter(|path| path.outcome == lab_report::probe::AuditOutcome::Escaped)
                .map(|path| Hit {
                    source: p.source.clone(),
                    line: probe_line(&p.text, &format!("\"path\": \"{}\"", path.path)),
                    text: format!("pod {}: {}: {}", p.pod, path.path, path.note),
                    bindings: vec![("pod".to_owned(), p.pod.clone())],
                    detector_fix: None,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn rx(cell: &'static OnceLock<Option<Regex>>, p: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(p).ok()).as_ref()
}

/// The `kubectl describe` blocks of a text document: each starts at an unindented `Name:` line.
fn describe_blocks(doc: &Document) -> Vec<&[super::evidence::Line]> {
    let starts: Vec<usize> = doc
        .lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.text.starts_with("Name:"))
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let end = starts.get(k + 1).copied().unwrap_or(doc.lines.len());
            &doc.lines[s..end]
        })
        .collect()
}

fn hit_of(doc: &Document, l: &super::evidence::Line, text: String) -> Hit {
    Hit {
        source: doc.source.clone(),
        line: l.number,
        text,
        bindings: Vec::new(),
        detector_fix: None,
    }
}

/// `kubectl describe pod`: Status Pending, `nvidia.com/gpu: N` in Limits/Requests, no gpumem.
fn describe_pending_whole_card(ev: &Evidence) -> Vec<Hit> {
    static STATUS: OnceLock<Option<Regex>> = OnceLock::new();
    static GPU: OnceLock<Option<Regex>> = OnceLock::new();
    static MEM: OnceLock<Option<Regex>> = OnceLock::new();
    let (Some(status), Some(gpu), Some(mem)) = (
        rx(&STATUS, r"^Status:\s+Pending\s*$"),
        rx(&GPU, r"^\s+nvidia\.com/gpu:\s+[1-9]\d*\s*$"),
        rx(&MEM, r"^\s+nvidia\.com/gpumem(-percentage)?:"),
    ) else {
        return Vec::new();
    };
    let mut hits = Vec::new();
    for doc in ev.documents.iter().filter(|d| d.kind == DocKind::Text) {
        for block in describe_blocks(doc) {
            let Some(pending) = block.iter().find(|l| status.is_match(&l.text)) else {
                continue;
            };
            if block.iter().any(|l| mem.is_match(&l.text)) {
                continue;
            }
            let gpus: Vec<_> = block.iter().filter(|l| gpu.is_match(&l.text)).collect();
            let Some(first) = gpus.first() else {
                continue;
            };
            hits.push(hit_of(doc, pending, pending.quote.clone()));
            hits.push(hit_of(doc, first, first.quote.clone()));
        }
    }
    hits
}

/// `kubectl describe node`: an `Allocated resources` row `nvidia.com/gpu  N  N` with N > 0.
fn describe_node_gpus_allocated(ev: &Evidence) -> Vec<Hit> {
    static ROW: OnceLock<Option<Regex>> = OnceLock::new();
    let Some(row) = rx(&ROW, r"^\s*nvidia\.com/gpu\s+([1-9]\d*)\s+\d+\s*$") else {
        return Vec::new();
    };
    let mut hits = Vec::new();
    for doc in ev.documents.iter().filter(|d| d.kind == DocKind::Text) {
        let mut in_allocated = false;
        for l in &doc.lines {
            if l.text.trim_start().starts_with("Allocated resources:") {
                in_allocated = true;
            } else if in_allocated && row.is_match(&l.text) {
                hits.push(hit_of(doc, l, l.quote.clone()));
            }
        }
    }
    hits
}

fn quantity(p: &Pod, resource: &str) -> u64 {
    p.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| {
            let r = c.resources.as_ref()?;
            r.limits
                .as_ref()
                .and_then(|m| m.get(resource))
                .or_else(|| r.requests.as_ref().and_then(|m| m.get(resource)))
                .and_then(|q| q.0.trim().parse::<u64>().ok())
        })
        .sum()
}

fn asks(p: &Pod, resource: &str) -> bool {
    p.spec.iter().flat_map(|s| s.containers.iter()).any(|c| {
        c.resources.as_ref().is_some_and(|r| {
            [r.limits.as_ref(), r.requests.as_ref()]
                .into_iter()
                .flatten()
                .any(|m| m.contains_key(resource))
        })
    })
}

fn pending_whole_card_pods(ev: &Evidence) -> Vec<Hit> {
    ev.snapshot
        .pods
        .iter()
        .filter(|p| {
            decide::pod_phase(p) == "Pending"
                && quantity(p, "nvidia.com/gpu") > 0
                && !asks(p, "nvidia.com/gpumem")
                && !asks(p, "nvidia.com/gpumem-percentage")
        })
        .map(|p| {
            let name = pod_name(p);
            let (source, line) = ev.origin_of("pod", &name);
            Hit {
                source,
                line,
                text: format!(
                    "pod {name}: Pending, asks nvidia.com/gpu: {} without nvidia.com/gpumem",
                    quantity(p, "nvidia.com/gpu")
                ),
                bindings: pod_bindings(p),
                detector_fix: None,
            }
        })
        .collect()
}

fn node_gpus_in_use_pods(ev: &Evidence) -> Vec<Hit> {
    ev.snapshot
        .pods
        .iter()
        .filter(|p| decide::pod_phase(p) == "Running" && quantity(p, "nvidia.com/gpu") > 0)
        .filter_map(|p| {
            let node = decide::node_name(p)?;
            let name = pod_name(p);
            let (source, line) = ev.origin_of("pod", &name);
            Some(Hit {
                source,
                line,
                text: format!(
                    "node {node}: pod {name} holds nvidia.com/gpu: {}",
                    quantity(p, "nvidia.com/gpu")
                ),
                bindings: vec![("node".to_owned(), node.to_owned())],
                detector_fix: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::diagnose::diagnose;
    use crate::diagnose::live::evidence_from_live;
    use crate::doctor::Snapshot;

    fn pod(name: &str, phase: &str, limits: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ml"},
            "spec": {"nodeName": if phase == "Running" { "gpu-1" } else { "" },
                     "schedulerName": "hami-scheduler",
                     "containers": [{"name": "c", "resources": {"limits": limits}}]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    fn modes(s: Snapshot) -> Vec<&'static str> {
        let mut ev = evidence_from_live(s, Vec::new(), Vec::new());
        // Not a full listing: only what the objects show counts (no "not installed").
        ev.complete = false;
        diagnose(&ev).problems().map(|f| f.mode).collect()
    }

    #[test]
    fn objects_name_unhealthy_cards_and_whole_card_requests_on_a_used_card() {
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
            "metadata": {"name": "gpu-1", "labels": {"gpu": "on"},
                "annotations": {"hami.io/node-nvidia-register": "[{\"id\":\"GPU-a\",\"count\":10,\"devmem\":81559,\"devcore\":100,\"type\":\"NVIDIA H100\",\"mode\":\"hami-core\"}]"}},
            "status": {"allocatable": {"nvidia.com/gpu": "10"}}
        }))
        .unwrap();
        let s = Snapshot {
            nodes: vec![node],
            hami_namespace: "kube-system".into(),
            ..Default::default()
        };
        // ≥ 2.8 writes JSON with omitempty: no "health" means health false.
        assert_eq!(modes(s.clone()), vec!["gpu-marked-unhealthy"]);
        let mut busy = s.clone();
        busy.nodes.clear();
        busy.pods = vec![
            pod(
                "train-0",
                "Running",
                json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "8000"}),
            ),
            pod("train-1", "Pending", json!({"nvidia.com/gpu": "2"})),
        ];
        assert_eq!(modes(busy.clone()), vec!["card-insufficient-memory"]);
        // With a gpumem request the same Pending pod is not a whole-card request.
        busy.pods[1] = pod(
            "train-1",
            "Pending",
            json!({"nvidia.com/gpu": "2", "nvidia.com/gpumem": "4000"}),
        );
        assert!(modes(busy).is_empty());
    }

    #[test]
    fn signals_without_a_capture_match_their_documented_format() {
        // Message formats of kube-apiserver and kubelet, and HAMi's reason constant; no user
        // paste of these was found (INDEX.md), so the lines are written here from those formats.
        for (line, mode) in [
            (
                r#"W0101 00:00:00.000000 1 dispatcher.go:210] Failed calling webhook, failing open vgpu.hami.io: failed calling webhook "vgpu.hami.io": failed to call webhook: Post "https://hami-scheduler.kube-system.svc:443/webhook?timeout=10s": no endpoints available for service "hami-scheduler""#,
                "webhook-no-endpoints",
            ),
            (
                r#"Warning  Failed  3m  kubelet  Failed to pull image "registry.cn-hangzhou.aliyuncs.com/google_containers/kube-scheduler:v1.31.4": rpc error: i/o timeout"#,
                "scheduler-image-pull",
            ),
            (
                "Warning  FilteringFailed  10s  hami-scheduler  1 nodes NodeInsufficientDevice(gpu-1)",
                "request-exceeds-node-gpu-count",
            ),
        ] {
            let d = diagnose(&crate::diagnose::text::read_texts(&[(
                "paste",
                line.as_bytes(),
            )]));
            assert_eq!(
                d.problems().map(|f| f.mode).collect::<Vec<_>>(),
                vec![mode],
                "{line}"
            );
        }
    }
}
