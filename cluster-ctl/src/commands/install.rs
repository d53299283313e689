//! `cluster-ctl install-hami`: choose the installer (`--installer`; on k3s a `helm.cattle.io/v1`
//! HelmChart that k3s's helm controller installs, no helm binary — [`super::chart_install`];
//! elsewhere helm: clear a stuck release, `helm upgrade --install` the pinned chart, left alone
//! when the same chart and values are deployed), then verify by watches on both paths, each item
//! reported, with `doctor`'s diagnosis when one fails.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Endpoints, Node};
use lab_runner::Runner;
use serde::Serialize;
use serde_json::{Value, json};

use super::chart_install::{self, Installer, JobReport};
use super::preflight::{preflight_human, preflight_report};
use super::{Ctx, Failure, Outcome, exit, findings_text, helm_release, progress};
use crate::api::{ApiError, Cluster};
use crate::decide::{
    NodeRegistration, check_scheduler_tag, daemonset_ready, deployment_ready, endpoints_ready,
    find_coexisting, node_registration,
};
use crate::doctor::{self, Snapshot};
use crate::helm::{self, HelmTarget, InstallOptions, ReleaseState};
use crate::plan::{Plan, Step};

/// One verified item after the install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub item: String,
    pub ok: bool,
    pub detail: String,
}

/// The install plan: clear a stuck release, upgrade --install, verify. `already_current`: the
/// release is deployed with this chart version and exactly these values, so helm is not run again
/// (a second `install-hami` changes nothing).
pub fn install_plan(
    state: &ReleaseState,
    opts: &InstallOptions,
    target: &HelmTarget,
    already_current: bool,
) -> Result<(Plan, Vec<lab_runner::Cmd>), Failure> {
    let mut plan = Plan::new("install-hami");
    let mut cmds = Vec::new();
    if let Some(clear) = helm::clear_stuck_cmd(state, target) {
        let why = match state {
            ReleaseState::Stuck { status, .. } => {
                format!("release is {status}: helm refuses to upgrade it until cleared")
            }
            _ => String::new(),
        };
        plan.push(Step::new("clear-stuck-release", clear.to_string(), why));
        cmds.push(clear);
    }
    let install = helm::upgrade_install_cmd(opts, target).map_err(Failure::usage)?;
    if already_current {
        plan.push(Step::new(
            "already-installed",
            "none",
            format!(
                "release hami is deployed with chart {} and the same values: nothing to change",
                opts.chart_version
            ),
        ));
    } else {
        plan.push(Step::new(
            "upgrade-install",
            install.to_string(),
            format!(
                "install or upgrade HAMi {} (idempotent); kube-scheduler image from {}/{}{}",
                opts.chart_version,
                opts.scheduler_registry,
                opts.scheduler_repository,
                if opts.scheduler_tag.is_some() {
                    " with the tag asked for"
                } else {
                    ", tag derived by the chart from the server version"
                }
            ),
        ));
        cmds.push(install);
    }
    for step in verify_steps() {
        plan.push(step);
    }
    Ok((plan, cmds))
}

/// The read-only checks after an install, on both install paths.
pub fn verify_steps() -> Vec<Step> {
    let mut steps = Vec::new();
    for (id, why) in [
        (
            "verify-scheduler",
            "watch Deployment hami-scheduler until ready, then compare its kube-scheduler tag with the server version",
        ),
        (
            "verify-webhook",
            "watch Endpoints hami-scheduler until an address exists (before that, GPU pods are not mutated)",
        ),
        (
            "verify-device-plugin",
            "watch DaemonSet hami-device-plugin until ready",
        ),
        (
            "verify-node",
            "watch each gpu=on node until nvidia.com/gpu is allocatable and the register annotation parses",
        ),
    ] {
        steps.push(Step::new(id, "watch (read-only)", why));
    }
    steps
}

/// Pure: the checks after install, from the objects the watches returned.
pub fn install_checks(
    server_git_version: &str,
    scheduler: Option<&Deployment>,
    endpoints: Option<&Endpoints>,
    device_plugin: Option<&DaemonSet>,
    nodes: &[NodeRegistration],
) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push(Check {
        item: "scheduler Deployment ready".into(),
        ok: scheduler.is_some_and(deployment_ready),
        detail: scheduler.map_or("hami-scheduler Deployment not found".into(), |d| {
            format!(
                "{} of {} replicas ready",
                d.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0),
                d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
            )
        }),
    });
    let tag = scheduler.map(|d| check_scheduler_tag(server_git_version, d));
    checks.push(Check {
        item: "kube-scheduler image tag equals the server version without +k3sN".into(),
        ok: tag.as_ref().is_some_and(|t| t.ok),
        detail: tag.map_or("no scheduler".into(), |t| {
            format!(
                "image {}, expected tag {}",
                t.image.unwrap_or_default(),
                t.expected_tag.unwrap_or_else(|| "?".into())
            )
        }),
    });
    checks.push(Check {
        item: "webhook Service has endpoints".into(),
        ok: endpoints.is_some_and(endpoints_ready),
        detail: if endpoints.is_some_and(endpoints_ready) {
            "an address is ready".into()
        } else {
            "no ready address (leader label not set yet?)".into()
        },
    });
    checks.push(Check {
        item: "device plugin DaemonSet ready".into(),
        ok: device_plugin.is_some_and(daemonset_ready),
        detail: device_plugin
            .and_then(|d| d.status.as_ref())
            .map_or("hami-device-plugin DaemonSet not found".into(), |s| {
                format!("{} of {} ready", s.number_ready, s.desired_number_scheduled)
            }),
    });
    let labelled: Vec<&NodeRegistration> = nodes.iter().filter(|n| n.labelled).collect();
    if labelled.is_empty() {
        checks.push(Check {
            item: "node registered".into(),
            ok: false,
            detail: "no node is labelled gpu=on".into(),
        });
    }
    for n in labelled {
        let gpus: Vec<String> = n
            .gpus
            .iter()
            .map(|g| {
                format!(
                    "{} {} {} MiB devcore {} mode {} health {}",
                    g.uuid,
                    g.gpu_type,
                    g.devmem_mib,
                    g.devcore,
                    g.mode.as_deref().unwrap_or("-"),
                    g.health
                )
            })
            .collect();
        checks.push(Check {
            item: format!("node {} registered", n.name),
            ok: n.registered(),
            detail: if n.registered() {
                format!(
                    "nvidia.com/gpu allocatable {}; {:?} register: {}",
                    n.allocatable_gpu,
                    n.format,
                    gpus.join("; ")
                )
            } else {
                n.register_error.clone().unwrap_or_else(|| {
                    format!(
                        "nvidia.com/gpu allocatable {}, {} GPUs registered",
                        n.allocatable_gpu,
                        n.gpus.len()
                    )
                })
            },
        });
    }
    checks
}

/// A wait that timed out leaves the object as it is now; any other failure (a refusal, an
/// unreachable server) ends the install with that error.
async fn or_now<K>(
    waited: Result<Option<K>, ApiError>,
    now: impl std::future::Future<Output = Result<Option<K>, ApiError>>,
) -> Result<Option<K>, ApiError> {
    match waited {
        Ok(obj) => Ok(obj),
        Err(ApiError::WaitTimeout { .. }) => now.await,
        Err(e) => Err(e),
    }
}

pub async fn install_hami(
    cluster: &Cluster,
    runner: &dyn Runner,
    ctx: &Ctx,
    opts: &InstallOptions,
    wait: Duration,
) -> Result<Outcome, Failure> {
    let s = cluster
        .snapshot(&ctx.namespace, &ctx.hami_namespace)
        .await?;
    let choice = chart_install::choose(cluster, ctx, &s.server_git_version).await?;
    cluster.log(&format!("installer: {}", choice.why));
    if choice.installer == Installer::Helm && !runner.exists("helm") {
        return Err(Failure::env(anyhow::anyhow!(
            "{} (on k3s, `--installer helm-chart` needs no helm)",
            helm::INSTALL_HINT
        )));
    }
    let coexisting = find_coexisting(&s.daemonsets, &s.pods);
    if !coexisting.is_empty() {
        let r = preflight_report(&s, None);
        return Ok(Outcome {
            exit: exit::CLAIM_FAILED,
            human: preflight_human(&r),
            json: serde_json::to_value(&r).unwrap_or(Value::Null),
        });
    }
    let deadline = tokio::time::Instant::now() + wait;
    let (plan, job) = match choice.installer {
        Installer::HelmChart => {
            chart_install::install(cluster, ctx, opts, &choice, deadline).await?
        }
        Installer::Helm => (install_with_helm(runner, ctx, opts, &choice)?, None),
    };
    if ctx.dry_run {
        return Ok(Outcome {
            exit: exit::OK,
            human: plan.human(),
            json: json!({"plan": plan}),
        });
    }
    verify_install(cluster, ctx, &s, deadline, &plan, job).await
}

/// The helm path: clear a stuck release, `helm upgrade --install` (not with `--dry-run`).
fn install_with_helm(
    runner: &dyn Runner,
    ctx: &Ctx,
    opts: &InstallOptions,
    choice: &chart_install::Choice,
) -> Result<Plan, Failure> {
    let major = helm::helm_major(runner).map_err(Failure::env)?;
    progress(&format!("helm {major} found"));
    let state = helm_release(runner, &ctx.helm)?.unwrap_or(ReleaseState::Absent);
    let already_current = match &state {
        ReleaseState::Deployed { chart, .. }
            if *chart == format!("{}-{}", helm::CHART, opts.chart_version) =>
        {
            runner
                .run_checked(&helm::get_values_cmd(&ctx.helm))
                .is_ok_and(|o| helm::values_match(&o.stdout, opts))
        }
        _ => false,
    };
    let (mut plan, cmds) = install_plan(&state, opts, &ctx.helm, already_current)?;
    plan.steps.insert(
        0,
        Step::new(
            "installer",
            format!("helm upgrade --install (helm {major})"),
            choice.why.clone(),
        ),
    );
    if !ctx.dry_run {
        for cmd in &cmds {
            progress(&format!("running {cmd}"));
            runner.run_checked(cmd).map_err(Failure::env)?;
        }
    }
    Ok(plan)
}

/// After either install path: watch scheduler, webhook endpoints, device plugin and node
/// registration, each reported; a failed item comes with the doctor's diagnosis.
async fn verify_install(
    cluster: &Cluster,
    ctx: &Ctx,
    s: &Snapshot,
    deadline: tokio::time::Instant,
    plan: &Plan,
    job: Option<JobReport>,
) -> Result<Outcome, Failure> {
    let ns = ctx.hami_namespace.as_str();
    let scheduler_name = crate::decide::HAMI_SCHEDULER;
    let waited = cluster
        .wait_namespaced::<Deployment>(
            ns,
            scheduler_name,
            |d: Option<&Deployment>| d.is_some_and(deployment_ready),
            deadline,
            "Deployment hami-scheduler ready",
        )
        .await;
    let scheduler = or_now(
        waited,
        cluster.get_namespaced::<Deployment>(ns, scheduler_name),
    )
    .await?;
    let waited = cluster
        .wait_namespaced::<Endpoints>(
            ns,
            scheduler_name,
            |e: Option<&Endpoints>| e.is_some_and(endpoints_ready),
            deadline,
            "Endpoints hami-scheduler",
        )
        .await;
    let endpoints = or_now(
        waited,
        cluster.get_namespaced::<Endpoints>(ns, scheduler_name),
    )
    .await?;
    let waited = cluster
        .wait_namespaced::<DaemonSet>(
            ns,
            "hami-device-plugin",
            |d: Option<&DaemonSet>| d.is_some_and(daemonset_ready),
            deadline,
            "DaemonSet hami-device-plugin",
        )
        .await;
    let plugin = or_now(
        waited,
        cluster.get_namespaced::<DaemonSet>(ns, "hami-device-plugin"),
    )
    .await?;
    let mut regs = Vec::new();
    for node in s.nodes.iter().filter(|n| node_registration(n).labelled) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let waited = cluster
            .wait_node(
                &name,
                |n: Option<&Node>| n.is_some_and(|n| node_registration(n).registered()),
                deadline,
                "node registration",
            )
            .await;
        let now = or_now(waited, cluster.get_node(&name)).await?;
        regs.push(node_registration(now.as_ref().unwrap_or(node)));
    }
    if regs.is_empty() {
        regs = s.nodes.iter().map(node_registration).collect();
    }
    let checks = install_checks(
        &s.server_git_version,
        scheduler.as_ref(),
        endpoints.as_ref(),
        plugin.as_ref(),
        &regs,
    );
    let all_ok = checks.iter().all(|c| c.ok);
    let mut human = job.as_ref().map(JobReport::line).unwrap_or_default();
    for c in &checks {
        human.push_str(&format!(
            "{} {}: {}\n",
            if c.ok { "ok  " } else { "FAIL" },
            c.item,
            c.detail
        ));
    }
    let mut diagnosis = Vec::new();
    if !all_ok {
        let fresh = cluster.snapshot(&ctx.namespace, ns).await?;
        diagnosis = doctor::diagnose(&fresh);
        human.push_str("diagnosis:\n");
        human.push_str(&findings_text(&diagnosis));
    }
    Ok(Outcome {
        exit: if all_ok { exit::OK } else { exit::CLAIM_FAILED },
        human,
        json: json!({"plan": plan, "helm_job": job, "checks": checks, "diagnosis": diagnosis}),
    })
}
