//! `cluster-ctl cleanup [--uninstall-hami]`: delete the lab pods (by label) and wait until they
//! are gone — graceful deletion keeps them Terminating for a while — then uninstall HAMi when
//! asked: by deleting k3s's HelmChart `hami` when there is one (helm alone would see the helm
//! controller install it again), else with `helm uninstall`.

use std::time::Duration;

use lab_runner::Runner;
use serde_json::json;

use super::{Ctx, Failure, Outcome, chart_install, exit, helm_release};
use crate::api::Cluster;
use crate::helm::{self, ReleaseState};
use crate::manifests;
use crate::plan::{Plan, Step};

pub async fn cleanup(
    cluster: &Cluster,
    runner: &dyn Runner,
    ctx: &Ctx,
    uninstall_hami: bool,
    timeout: Duration,
) -> Result<Outcome, Failure> {
    cluster.server_version().await?;
    let names: Vec<String> = cluster
        .lab_pods(&ctx.namespace)
        .await?
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let mut plan = Plan::new("cleanup");
    plan.push(Step::new(
        "delete-lab-pods",
        format!(
            "delete pods -l {} in {} ({})",
            manifests::LAB_SELECTOR,
            ctx.namespace,
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ),
        "remove the lab's pods and wait until they are gone",
    ));
    // A HelmChart `hami` (k3s) is deleted, whoever installed it.
    let chart = if uninstall_hami {
        chart_install::uninstall_step(cluster).await?
    } else {
        None
    };
    if let Some(step) = &chart {
        plan.push(step.clone());
    }
    let uninstall = if uninstall_hami && chart.is_none() {
        match helm_release(runner, &ctx.helm)? {
            None => {
                return Err(Failure::env(anyhow::anyhow!(
                    "{} (no HelmChart hami either)",
                    helm::INSTALL_HINT
                )));
            }
            Some(ReleaseState::Absent) => None,
            Some(_) => Some(helm::uninstall_cmd(&ctx.helm)),
        }
    } else {
        None
    };
    if let Some(c) = &uninstall {
        plan.push(Step::new(
            "uninstall-hami",
            c.to_string(),
            "--uninstall-hami was given",
        ));
    }
    if ctx.dry_run {
        return Ok(Outcome {
            exit: exit::OK,
            human: plan.human(),
            json: json!({"plan": plan}),
        });
    }
    let deleted = cluster.delete_lab_pods(&ctx.namespace, timeout).await?;
    if let Some(c) = &uninstall {
        runner.run_checked(c).map_err(Failure::env)?;
    }
    if chart.is_some() {
        chart_install::uninstall(cluster, timeout).await?;
    }
    let uninstalled = uninstall.is_some() || chart.is_some();
    Ok(Outcome {
        exit: exit::OK,
        human: format!(
            "deleted {} lab pod(s){}\n",
            deleted.len(),
            if uninstalled {
                "; HAMi uninstalled"
            } else {
                ""
            }
        ),
        json: json!({"deleted": deleted, "uninstalled_hami": uninstalled}),
    })
}
