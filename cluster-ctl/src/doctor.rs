//! `cluster-ctl doctor`'s checks over a snapshot of cluster objects: each known failure that shows
//! in objects as a pure function returning what is wrong and how to fix it. They are facts of the
//! diagnosis engine (`crate::diagnose`), which also reads logs and pasted text; [`diagnose`] runs
//! that engine over a snapshot and returns its findings per object, as `install-hami` and `run`
//! print them. Unit-tested rule by rule on the shared fixtures.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod};
use serde::Serialize;

use crate::decide::{
    HAMI_SCHEDULER, check_scheduler_tag, find_coexisting, node_registration,
    requests_hami_resource, scheduler_name, waiting_reasons,
};

/// What `doctor` looks at. Gathered by `api::Cluster::snapshot` (or built from fixtures in tests).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub server_git_version: String,
    pub nodes: Vec<Node>,
    pub daemonsets: Vec<DaemonSet>,
    /// Pods of all namespaces.
    pub pods: Vec<Pod>,
    pub scheduler: Option<Deployment>,
    pub scheduler_endpoints: Option<Endpoints>,
    /// Events of the lab namespace.
    pub events: Vec<Event>,
    /// `(pod, verdict.outcome)` of gpu-probe reports of an earlier `run --out DIR`, if given.
    pub probe_verdicts: Vec<(String, String)>,
    /// Namespace HAMi is installed in.
    pub hami_namespace: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Breaks the lab or isolation.
    Problem,
    /// Worth knowing, nothing to fix.
    Info,
}

/// One diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    pub subject: String,
    pub what: String,
    pub fix: String,
}

type Rule = fn(&Snapshot) -> Vec<Finding>;

/// The checks over objects, in the order `doctor` always had them (the engine's facts).
pub const RULES: [(&str, Rule); 9] = [
    ("hami-not-installed", hami_not_installed),
    ("two-device-plugins", two_device_plugins),
    ("node-unlabelled", node_unlabelled),
    ("node-unregistered", node_unregistered),
    ("scheduler-image-pull", scheduler_image_pull),
    ("tag-mismatch", tag_mismatch),
    ("webhook-no-endpoints", webhook_no_endpoints),
    ("default-scheduler-pods", default_scheduler_pods),
    ("full-card-view", full_card_view),
];

/// The diagnosis engine over the snapshot (a full listing: absence counts), as one finding per
/// object a check named (or per failure the rendered objects showed), most likely first, infos last.
pub fn diagnose(s: &Snapshot) -> Vec<Finding> {
    let ev = crate::diagnose::live::evidence_from_live(s.clone(), Vec::new(), Vec::new());
    crate::diagnose::diagnose(&ev)
        .findings
        .iter()
        .flat_map(per_object)
        .collect()
}

/// An engine finding as `doctor`'s per-object findings.
fn per_object(f: &crate::diagnose::Finding) -> Vec<Finding> {
    let mut out: Vec<Finding> = f
        .evidence
        .iter()
        .filter_map(|e| {
            let fix = e.detector_fix.clone()?;
            let (subject, what) = e.text.split_once(": ").unwrap_or((e.text.as_str(), ""));
            Some(Finding {
                rule: e.mode,
                severity: crate::diagnose::rules::rule(e.mode).map_or(f.severity, |r| r.severity),
                subject: subject.to_owned(),
                what: what.to_owned(),
                fix,
            })
        })
        .collect();
    if out.is_empty()
        && let Some(e) = f.evidence.first()
    {
        let mut fix = f.fix.join("; ");
        if !f.commands.is_empty() {
            fix.push_str(&format!(" (`{}`)", f.commands.join("`, `")));
        }
        out.push(Finding {
            rule: f.mode,
            severity: f.severity,
            subject: e.source.clone(),
            what: format!("{}: {}", f.cause, e.text),
            fix,
        });
    }
    out
}

fn finding(rule: &'static str, subject: impl Into<String>, what: String, fix: String) -> Finding {
    Finding {
        rule,
        severity: Severity::Problem,
        subject: subject.into(),
        what,
        fix,
    }
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    match (&meta.namespace, &meta.name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.clone(),
        _ => "?".to_owned(),
    }
}

pub fn hami_not_installed(s: &Snapshot) -> Vec<Finding> {
    if s.scheduler.is_some() {
        return Vec::new();
    }
    vec![finding(
        "hami-not-installed",
        format!("{}/hami-scheduler", s.hami_namespace),
        "no hami-scheduler Deployment: HAMi is not installed in this namespace".to_owned(),
        "run `cluster-ctl install-hami` (or pass --hami-namespace where it is installed)"
            .to_owned(),
    )]
}

pub fn two_device_plugins(s: &Snapshot) -> Vec<Finding> {
    find_coexisting(&s.daemonsets, &s.pods)
        .into_iter()
        .map(|c| {
            finding(
                "two-device-plugins",
                format!("{} {}/{}", c.kind, c.namespace, c.name),
                format!(
                    "{} runs beside HAMi's device plugin: both advertise nvidia.com/gpu, so pods may get whole cards without HAMi-core",
                    c.component.describe()
                ),
                format!(
                    "remove it (`kubectl -n {} delete {} {}`, or uninstall the GPU Operator / nvidia-device-plugin chart), then restart hami-device-plugin",
                    c.namespace,
                    c.kind.to_ascii_lowercase(),
                    c.name
                ),
            )
        })
        .collect()
}

pub fn node_unlabelled(s: &Snapshot) -> Vec<Finding> {
    let regs: Vec<_> = s.nodes.iter().map(node_registration).collect();
    if regs.iter().any(|r| r.labelled) {
        return Vec::new();
    }
    regs.iter()
        .map(|r| {
            finding(
                "node-unlabelled",
                format!("node {}", r.name),
                "no node is labelled gpu=on, so HAMi's device plugin DaemonSet runs nowhere"
                    .to_owned(),
                format!("kubectl label node {} gpu=on --overwrite", r.name),
            )
        })
        .collect()
}

pub fn node_unregistered(s: &Snapshot) -> Vec<Finding> {
    s.nodes
        .iter()
        .map(node_registration)
        .filter(|r| r.labelled && !r.registered())
        .map(|r| {
            let what = match &r.register_error {
                Some(e) => format!("register annotation unreadable: {e}"),
                None if r.gpus.is_empty() => format!(
                    "labelled gpu=on but HAMi registered no GPU (no hami.io/node-nvidia-register; allocatable nvidia.com/gpu = {})",
                    r.allocatable_gpu
                ),
                None => "allocatable nvidia.com/gpu is 0: the device plugin is not serving".to_owned(),
            };
            finding(
                "node-unregistered",
                format!("node {}", r.name),
                what,
                format!(
                    "check `kubectl -n {} logs ds/hami-device-plugin -c device-plugin`; on k3s the device plugin needs the nvidia runtime (`--set devicePlugin.runtimeClassName=nvidia` or nvidia as containerd's default runtime)",
                    s.hami_namespace
                ),
            )
        })
        .collect()
}

fn scheduler_pods(s: &Snapshot) -> impl Iterator<Item = &Pod> {
    s.pods.iter().filter(|p| {
        p.metadata.namespace.as_deref() == Some(s.hami_namespace.as_str())
            && p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/component"))
                .is_some_and(|c| c == HAMI_SCHEDULER)
    })
}

pub fn scheduler_image_pull(s: &Snapshot) -> Vec<Finding> {
    scheduler_pods(s)
        .flat_map(|p| {
            waiting_reasons(p)
                .into_iter()
                .filter(|(c, r)| c == "kube-scheduler" && (r == "ImagePullBackOff" || r == "ErrImagePull"))
                .map(|(_, r)| {
                    finding(
                        "scheduler-image-pull",
                        format!("pod {}", name_of(&p.metadata)),
                        format!("the kube-scheduler sidecar image cannot be pulled ({r}); the chart's default registry is slow or unreachable outside China"),
                        "re-run `cluster-ctl install-hami` (it sets scheduler.kubeScheduler.image.registry=registry.k8s.io and repository=kube-scheduler)".to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn tag_mismatch(s: &Snapshot) -> Vec<Finding> {
    let Some(d) = &s.scheduler else {
        return Vec::new();
    };
    let check = check_scheduler_tag(&s.server_git_version, d);
    if check.ok {
        return Vec::new();
    }
    vec![finding(
        "tag-mismatch",
        format!("deployment {}", name_of(&d.metadata)),
        format!(
            "kube-scheduler image {} has tag {:?}, the server is {} (expected {:?})",
            check.image.as_deref().unwrap_or("?"),
            check.found_tag,
            s.server_git_version,
            check.expected_tag
        ),
        "re-run `cluster-ctl install-hami` without --scheduler-tag (charts ≥ 2.5 derive the tag from the server version without +k3sN); with a chart ≤ 2.4 pass --scheduler-tag <server version without +k3sN>".to_owned(),
    )]
}

pub fn webhook_no_endpoints(s: &Snapshot) -> Vec<Finding> {
    if s.scheduler.is_none() {
        return Vec::new();
    }
    let ready = s
        .scheduler_endpoints
        .as_ref()
        .is_some_and(crate::decide::endpoints_ready);
    if ready {
        return Vec::new();
    }
    vec![finding(
        "webhook-no-endpoints",
        format!("service {}/hami-scheduler", s.hami_namespace),
        "the webhook Service has no endpoints: pods created now are NOT mutated (failurePolicy Ignore) and land on default-scheduler".to_owned(),
        format!(
            "wait until the scheduler pod carries hami.io/scheduler-role=leader (set within ~15 s by the leader) and `kubectl -n {} get endpoints hami-scheduler` lists an address; if it never does, check `kubectl -n {} logs deploy/hami-scheduler -c vgpu-scheduler-extender`",
            s.hami_namespace, s.hami_namespace
        ),
    )]
}

pub fn default_scheduler_pods(s: &Snapshot) -> Vec<Finding> {
    s.pods
        .iter()
        .filter(|p| {
            requests_hami_resource(p)
                && scheduler_name(p) != HAMI_SCHEDULER
                && !matches!(crate::decide::pod_phase(p), "Succeeded" | "Failed")
        })
        .map(|p| {
            finding(
                "default-scheduler-pods",
                format!("pod {}", name_of(&p.metadata)),
                format!(
                    "asks for HAMi resources but has schedulerName {}: the webhook missed it (no endpoints when it was created), so HAMi-core limits do not apply",
                    scheduler_name(p)
                ),
                format!(
                    "delete and re-create it after the hami-scheduler Service has endpoints: `kubectl -n {} delete pod {}` (lab pods: `cluster-ctl cleanup && cluster-ctl run`)",
                    p.metadata.namespace.as_deref().unwrap_or("default"),
                    p.metadata.name.as_deref().unwrap_or("?")
                ),
            )
        })
        .collect()
}

pub fn full_card_view(s: &Snapshot) -> Vec<Finding> {
    s.probe_verdicts
        .iter()
        .filter(|(_, outcome)| outcome == "shows-full-card")
        .map(|(pod, outcome)| {
            finding(
                "full-card-view",
                format!("pod {pod}"),
                format!("gpu-probe in the pod saw the full card ({outcome}), not its slice: HAMi-core is not active there"),
                "on k3s the nvidia runtime is usually not containerd's default: install with `--set devicePlugin.runtimeClassName=nvidia` (cluster-ctl install-hami --set devicePlugin.runtimeClassName=nvidia) or make nvidia the default runtime, then re-create the pods".to_owned(),
            )
        })
        .collect()
}

/// Info only: HAMi does not advertise `nvidia.com/gpumem` as an extended resource.
pub fn gpumem_not_allocatable(s: &Snapshot) -> Vec<Finding> {
    s.nodes
        .iter()
        .map(node_registration)
        .filter(|r| r.registered() && r.allocatable_gpumem.is_none())
        .map(|r| Finding {
            rule: "gpumem-not-allocatable",
            severity: Severity::Info,
            subject: format!("node {}", r.name),
            what: "nvidia.com/gpumem is absent from allocatable: this is normal, HAMi's scheduler extender accounts for it".to_owned(),
            fix: "nothing to do".to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::*;

    /// A healthy single-node cluster as the fixtures show it.
    fn healthy() -> Snapshot {
        Snapshot {
            server_git_version: "v1.31.4+k3s1".into(),
            nodes: vec![fixture_node("node-hami-v2.10-h100.json")],
            daemonsets: fixture_daemonsets("daemonsets-hami-only.json"),
            pods: vec![
                fixture_pod("pod-hami-share-a-running.json"),
                fixture_pod("pod-hami-share-b-running.json"),
            ],
            scheduler: Some(fixture_deploy("deploy-hami-scheduler-tag-match.json")),
            scheduler_endpoints: Some(fixture_endpoints("endpoints-hami-scheduler-ready.json")),
            events: fixture_events("events-share-a.json"),
            probe_verdicts: vec![("hami-share-a".into(), "verified".into())],
            hami_namespace: "kube-system".into(),
        }
    }

    fn rules(f: &[Finding]) -> Vec<&str> {
        f.iter()
            .filter(|f| f.severity == Severity::Problem)
            .map(|f| f.rule)
            .collect()
    }

    #[test]
    fn healthy_cluster_has_only_the_gpumem_info() {
        let f = diagnose(&healthy());
        assert!(rules(&f).is_empty(), "{f:#?}");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, "gpumem-not-allocatable");
        assert_eq!(f[0].severity, Severity::Info);
    }

    #[test]
    fn unmutated_pod() {
        let mut s = healthy();
        s.pods
            .push(fixture_pod("pod-unmutated-default-scheduler.json"));
        let f = default_scheduler_pods(&s);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].fix
                .contains("kubectl -n default delete pod hami-share-a"),
            "{}",
            f[0].fix
        );
    }

    #[test]
    fn webhook_without_endpoints() {
        let mut s = healthy();
        s.scheduler_endpoints = Some(fixture_endpoints("endpoints-hami-scheduler-empty.json"));
        assert_eq!(rules(&diagnose(&s)), vec!["webhook-no-endpoints"]);
        s.scheduler_endpoints = None;
        assert_eq!(rules(&diagnose(&s)), vec!["webhook-no-endpoints"]);
    }

    #[test]
    fn gpu_operator_beside_hami() {
        let mut s = healthy();
        s.daemonsets = fixture_daemonsets("daemonsets-gpu-operator.json");
        let f = two_device_plugins(&s);
        assert_eq!(f.len(), 2);
        assert!(f[0].subject.contains("nvidia-device-plugin-daemonset"));
        assert!(f[1].what.contains("GFD"));
    }

    #[test]
    fn scheduler_image_pull_backoff() {
        let mut s = healthy();
        let mut p = fixture_pod("pod-hami-share-a-running.json");
        p.metadata.name = Some("hami-scheduler-7d9c8b6f5-x2k4q".into());
        p.metadata.namespace = Some("kube-system".into());
        p.metadata.labels = Some(
            [(
                "app.kubernetes.io/component".to_owned(),
                "hami-scheduler".to_owned(),
            )]
            .into(),
        );
        let mut status = p.status.clone().unwrap();
        let mut cs = status.container_statuses.clone().unwrap()[0].clone();
        cs.name = "kube-scheduler".into();
        cs.state = Some(k8s_openapi::api::core::v1::ContainerState {
            waiting: Some(k8s_openapi::api::core::v1::ContainerStateWaiting {
                reason: Some("ImagePullBackOff".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        status.container_statuses = Some(vec![cs]);
        p.status = Some(status);
        assert!(scheduler_image_pull(&s).is_empty());
        s.pods.push(p);
        let f = scheduler_image_pull(&s);
        assert_eq!(f.len(), 1);
        assert!(f[0].fix.contains("registry.k8s.io"));
    }

    #[test]
    fn unlabelled_and_unregistered_nodes() {
        let mut s = healthy();
        s.nodes = vec![fixture_node("node-unlabelled.json")];
        assert_eq!(rules(&diagnose(&s)), vec!["node-unlabelled"]);
        assert!(
            node_unlabelled(&s)[0]
                .fix
                .contains("kubectl label node gpu-vm-1 gpu=on")
        );
        s.nodes = vec![fixture_node("node-gpu-on-unregistered.json")];
        assert_eq!(rules(&diagnose(&s)), vec!["node-unregistered"]);
    }

    #[test]
    fn mismatched_tag() {
        let mut s = healthy();
        s.scheduler = Some(fixture_deploy("deploy-hami-scheduler-tag-mismatch.json"));
        let f = tag_mismatch(&s);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].what.contains("v1.20.0") && f[0].what.contains("v1.31.4"),
            "{}",
            f[0].what
        );
    }

    #[test]
    fn not_installed() {
        let mut s = healthy();
        s.scheduler = None;
        s.scheduler_endpoints = None;
        assert_eq!(rules(&diagnose(&s)), vec!["hami-not-installed"]);
    }

    #[test]
    fn probe_saw_the_full_card() {
        let mut s = healthy();
        s.probe_verdicts
            .push(("hami-share-b".into(), "shows-full-card".into()));
        // A failed audit (an escaped allocation path) is not a full-card view.
        s.probe_verdicts
            .push(("hami-share-a-audit".into(), "not-verified".into()));
        let f = full_card_view(&s);
        assert_eq!(f.len(), 1);
        assert!(f[0].subject.contains("hami-share-b"));
        assert!(f[0].fix.contains("runtimeClassName=nvidia"));
    }
}
