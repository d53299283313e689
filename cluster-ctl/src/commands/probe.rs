//! `cluster-ctl probe POD [-c CONTAINER]` (also the kubectl plugin `kubectl hami-probe`): copy
//! gpu-probe into an existing pod over exec, run `gpu-probe all`, print its JSON and exit with its
//! exit code.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::{Ctx, Failure, Outcome, exit, write_or_warn};
use crate::api::{self, Cluster};
use crate::manifests;
use crate::plan::{Plan, Step};
use crate::report::OutDir;

/// The `nvidia.com/gpumem` limit of a container (named, else the first) — the slice a probe expects.
pub fn container_gpumem(pod: &Pod, container: Option<&str>) -> Option<u64> {
    let spec = pod.spec.as_ref()?;
    let c = match container {
        Some(name) => spec.containers.iter().find(|c| c.name == name)?,
        None => spec.containers.first()?,
    };
    c.resources
        .as_ref()?
        .limits
        .as_ref()?
        .get(manifests::GPUMEM)?
        .0
        .trim()
        .parse()
        .ok()
}

#[allow(clippy::too_many_arguments)]
pub async fn probe(
    cluster: &Cluster,
    ctx: &Ctx,
    pod: &str,
    container: Option<&str>,
    expect_mib: Option<u64>,
    probe_bin: &Path,
    out: Option<&Path>,
    timeout: Duration,
) -> Result<Outcome, Failure> {
    let bytes = std::fs::read(probe_bin).map_err(|e| {
        Failure::env(anyhow::anyhow!(
            "gpu-probe binary {} not readable ({e}); pass --probe-bin PATH",
            probe_bin.display()
        ))
    })?;
    let target = cluster.get_pod(&ctx.namespace, pod).await?;
    let expect = expect_mib.or_else(|| container_gpumem(&target, container));
    if ctx.dry_run {
        let mut plan = Plan::new("probe");
        plan.push(Step::new(
            "copy",
            format!(
                "copy {} into {}/{pod}:{}/{} over exec (tar)",
                probe_bin.display(),
                ctx.namespace,
                api::PROBE_DIR,
                api::PROBE_NAME
            ),
            "the probe runs inside the container, under HAMi-core",
        ));
        plan.push(Step::new(
            "run",
            format!(
                "gpu-probe all --output json{}",
                expect
                    .map(|m| format!(" --expect-mib {m}"))
                    .unwrap_or_default()
            ),
            "report what the container sees and can allocate",
        ));
        return Ok(Outcome {
            exit: exit::OK,
            human: plan.human(),
            json: json!({"plan": plan}),
        });
    }
    let run = cluster
        .copy_and_run_probe(&ctx.namespace, pod, container, &bytes, expect, timeout)
        .await?;
    if let Some(dir) = out {
        let o = OutDir::new(dir);
        write_or_warn(&o, &format!("probe/{pod}.json"), run.stdout.as_bytes());
        write_or_warn(&o, &format!("probe/{pod}.stderr"), run.stderr.as_bytes());
    }
    eprint!("{}", run.stderr);
    let code = run
        .exit_code
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(exit::ENVIRONMENT);
    let json = serde_json::from_str(&run.stdout).unwrap_or(Value::String(run.stdout.clone()));
    Ok(Outcome {
        exit: code,
        human: run.stdout,
        json,
    })
}
