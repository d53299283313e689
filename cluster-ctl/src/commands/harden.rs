//! `cluster-ctl harden`: applies the GPU tenant policy (`manifests/policy.yaml`) through the
//! `api` seam. Render (the exempt list) → refuse a server before 1.30 → check the running pods
//! against the exempt list (HAMi's own components must be exempt) → plan against what the server
//! holds → `--dry-run` prints plan and objects → create or replace what differs, the policy first
//! → read both back, which must plan nothing. The decisions are `crate::harden`'s.

use serde_json::json;

use super::{Ctx, Failure, Outcome, exit};
use crate::api::{ApiError, Cluster};
use crate::harden::{
    Action, check_server, plan, plan_human, pods_at_risk, render_policy, type_warnings,
};

/// A refused read or write of the policy objects: `harden` needs a cluster admin, not the lab's
/// identities (which manifests/rbac.yaml keeps away from the policy on purpose).
fn admin(e: ApiError) -> Failure {
    match e {
        ApiError::Forbidden { op, message, rule } => Failure::env(anyhow::anyhow!(
            "the API server refused to let cluster-ctl {op} (403 Forbidden: {message}). `harden` applies cluster-scoped admission policy, which the lab's identities of manifests/rbac.yaml may not touch (a tenant that could change the policy could lift it): run it with a cluster admin's kubeconfig (k3s: /etc/rancher/k3s/k3s.yaml), or an identity granted {rule} and get/create/update on validatingadmissionpolicies and validatingadmissionpolicybindings"
        )),
        other => Failure::from(other),
    }
}

/// `cluster-ctl harden`.
pub async fn harden(
    cluster: &Cluster,
    ctx: &Ctx,
    extra_exempt: &[String],
) -> Result<Outcome, Failure> {
    let desired = render_policy(extra_exempt, &ctx.hami_namespace).map_err(Failure::usage)?;
    let info = cluster.server_version().await?;
    check_server(&info).map_err(Failure::env)?;
    let risk = pods_at_risk(&cluster.all_pods().await?, &desired.exempt);
    if !risk.hami_outside.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "HAMi's components run in {}, which the policy would not exempt: its device plugin is privileged and mounts /usr/local/vgpu, so its pods would be refused when they restart. Pass --hami-namespace {} (or --exempt-namespace); nothing was changed",
            risk.hami_outside.join(", "),
            risk.hami_outside[0]
        )));
    }
    let name = desired.policy.metadata.name.clone().unwrap_or_default();
    let (live_policy, live_binding) = cluster.admission_policy(&name).await.map_err(admin)?;
    let mut before = plan(
        &desired,
        live_policy.as_ref(),
        live_binding.as_ref(),
        &ctx.namespace,
    );
    before.warnings.extend(risk.warnings);
    let mut human = format!(
        "cluster-ctl harden: the GPU tenant policy on {}\n{}",
        info.git_version,
        plan_human(&before)
    );
    if ctx.dry_run || before.is_empty() {
        if ctx.dry_run {
            human.push_str("\n--dry-run: nothing changed. The objects:\n");
            human.push_str(&desired.yaml());
        } else {
            human.push_str("Nothing to do: the policy and its binding are in place.\n");
        }
        return Ok(Outcome {
            exit: exit::OK,
            human,
            json: json!({"plan": before, "applied": false, "dry_run": ctx.dry_run}),
        });
    }
    // The policy first: a binding must name an existing policy. Unchanged objects are not written.
    if before.objects[0].action != Action::Unchanged {
        cluster
            .create_or_replace(&desired.policy, live_policy.as_ref())
            .await
            .map_err(admin)?;
    }
    if before.objects[1].action != Action::Unchanged {
        cluster
            .create_or_replace(&desired.binding, live_binding.as_ref())
            .await
            .map_err(admin)?;
    }
    // Read back: the plan against what the server now holds must be empty.
    let (after_policy, after_binding) = cluster.admission_policy(&name).await.map_err(admin)?;
    let after = plan(
        &desired,
        after_policy.as_ref(),
        after_binding.as_ref(),
        &ctx.namespace,
    );
    let warnings = after_policy.as_ref().map(type_warnings).unwrap_or_default();
    if !after.is_empty() {
        human.push_str(&format!(
            "NOT APPLIED as planned: read back, the server still differs:\n{}",
            plan_human(&after)
        ));
        return Ok(Outcome {
            exit: exit::CLAIM_FAILED,
            human,
            json: json!({"plan": before, "applied": true, "read_back": after}),
        });
    }
    human.push_str("applied; read back, the server holds both objects as rendered\n");
    for w in &warnings {
        human.push_str(&format!("  the API server's type check warns: {w}\n"));
    }
    Ok(Outcome {
        exit: exit::OK,
        human,
        json: json!({"plan": before, "applied": true, "read_back": after, "type_warnings": warnings}),
    })
}
