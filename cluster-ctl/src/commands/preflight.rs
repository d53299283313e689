//! `cluster-ctl preflight`: the server version, the nodes and which carry `gpu=on`, a coexisting
//! NVIDIA device plugin / GPU Operator / GFD (refused, exit 1), the HAMi release helm knows, and
//! how install-hami would install the chart (helm, or k3s's HelmChart: then no helm is needed).

use lab_runner::Runner;
use serde::Serialize;
use serde_json::Value;

use super::chart_install::{self, Installer};
use super::{Ctx, Failure, Outcome, exit, helm_release, progress};
use crate::api::Cluster;
use crate::decide::{Coexisting, NodeRegistration, find_coexisting, node_registration};
use crate::doctor::Snapshot;
use crate::helm::{self, ReleaseState};

/// What `preflight` found (pure result over a snapshot).
#[derive(Debug, Clone, Serialize)]
pub struct PreflightReport {
    pub server_version: String,
    pub nodes: Vec<NodeRegistration>,
    pub coexisting: Vec<Coexisting>,
    pub release: Option<ReleaseState>,
    /// Major version of helm (3 or 4) when found and supported.
    pub helm_major: Option<u32>,
    /// How install-hami would install the chart, and why.
    pub installer: Option<chart_install::Choice>,
    pub hami_scheduler_present: bool,
    pub problems: Vec<String>,
}

/// Decides preflight on a snapshot and the helm release (when helm could be asked).
pub fn preflight_report(s: &Snapshot, release: Option<ReleaseState>) -> PreflightReport {
    let nodes: Vec<NodeRegistration> = s.nodes.iter().map(node_registration).collect();
    let coexisting = find_coexisting(&s.daemonsets, &s.pods);
    let mut problems = Vec::new();
    for c in &coexisting {
        problems.push(format!(
            "{} {} {}/{} must be removed before HAMi (both would advertise nvidia.com/gpu): kubectl -n {} delete {} {} — or uninstall the GPU Operator / NVIDIA device plugin chart",
            c.component.describe(), c.kind, c.namespace, c.name, c.namespace, c.kind.to_ascii_lowercase(), c.name
        ));
    }
    if !nodes.iter().any(|n| n.labelled) {
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        problems.push(format!(
            "no node is labelled gpu=on (HAMi's device plugin runs only there): kubectl label node {} gpu=on",
            names.first().copied().unwrap_or("<gpu-node>")
        ));
    }
    PreflightReport {
        server_version: s.server_git_version.clone(),
        nodes,
        coexisting,
        release,
        helm_major: None,
        installer: None,
        hami_scheduler_present: s.scheduler.is_some(),
        problems,
    }
}

pub(super) fn preflight_human(r: &PreflightReport) -> String {
    let mut out = format!("server version: {}\n", r.server_version);
    for n in &r.nodes {
        out.push_str(&format!(
            "node {}: gpu=on {}, nvidia.com/gpu allocatable {}, HAMi-registered GPUs {}\n",
            n.name,
            if n.labelled { "yes" } else { "no" },
            n.allocatable_gpu,
            n.gpus.len()
        ));
    }
    if let Some(c) = &r.installer {
        out.push_str(&format!("installer: {}\n", c.why));
    }
    let chart_path = r
        .installer
        .as_ref()
        .is_some_and(|c| c.installer == Installer::HelmChart);
    out.push_str(&match r.helm_major {
        Some(m) => format!("helm: {m}\n"),
        None if chart_path => {
            "helm: not found (not needed: install-hami uses k3s's HelmChart)\n".to_owned()
        }
        None => format!(
            "helm: not usable (install-hami needs it): {}\n",
            helm::INSTALL_HINT
        ),
    });
    out.push_str(&match &r.release {
        Some(ReleaseState::Absent) => "HAMi release: none\n".to_owned(),
        Some(state) => format!("HAMi release: {state:?}\n"),
        None => format!(
            "HAMi release: unknown (helm missing, or `helm list` failed); hami-scheduler Deployment {}\n",
            if r.hami_scheduler_present {
                "present"
            } else {
                "absent"
            }
        ),
    });
    if r.problems.is_empty() {
        out.push_str("preflight: OK\n");
    } else {
        for p in &r.problems {
            out.push_str(&format!("REFUSED: {p}\n"));
        }
    }
    out
}

pub async fn preflight(
    cluster: &Cluster,
    runner: &dyn Runner,
    ctx: &Ctx,
) -> Result<Outcome, Failure> {
    let s = cluster
        .snapshot(&ctx.namespace, &ctx.hami_namespace)
        .await?;
    // Preflight only reports the release: a failing `helm list` is shown, not fatal.
    let release = helm_release(runner, &ctx.helm).unwrap_or_else(|e| {
        progress(&format!("could not read the HAMi release: {e}"));
        None
    });
    let mut r = preflight_report(&s, release);
    if runner.exists("helm") {
        r.helm_major = helm::helm_major(runner).ok();
    }
    r.installer = chart_install::choose(cluster, ctx, &s.server_git_version)
        .await
        .map_err(|e| progress(&format!("installer: {e}")))
        .ok();
    Ok(Outcome {
        exit: if r.problems.is_empty() {
            exit::OK
        } else {
            exit::CLAIM_FAILED
        },
        human: preflight_human(&r),
        json: serde_json::to_value(&r).unwrap_or(Value::Null),
    })
}
