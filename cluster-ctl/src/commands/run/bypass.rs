//! `run --bypass`: the bypass exercises B1–B6, one misbehaving pod at a time, after E1–E5. Each
//! pod (rendered and validated with the others before anything was applied) is created in the
//! lab namespace: refused at admission, the server's `Status` is written as
//! `admission/<pod>.json`; admitted, it is waited for until Ready, written as `pods/<pod>.json`,
//! gpu-probe is copied in and run (`crate::bypass::probe_args`), its report written as
//! `probe/<pod>.json` (and `.stderr`), and the pod is deleted — whatever happened — and waited
//! out. lab-report's judge then decides the exercise over those files as written: contained
//! (refused, no GPU, held to what it was given) or escaped, with the memory it reached.

use lab_report::run::{Bypass, admission_file, pod_file, probe_file};

use super::{RunEnv, probe_binary};
use crate::api::{Admission, ApiError};
use crate::commands::{progress, write_json_or_warn, write_or_warn};
use crate::exercises::{Exercises, judge};
use crate::manifests::RenderedBypass;
use crate::report::{Exercise, ExerciseResult};

/// Runs every bypass exercise; an API failure that is not about one pod stops the run (`Err`).
pub(super) async fn run_bypasses(
    env: &RunEnv<'_>,
    bypasses: &[RenderedBypass],
    ex: &mut Exercises,
) -> Result<(), ApiError> {
    let probe = std::fs::read(probe_binary(env.args)).map_err(|e| {
        format!(
            "gpu-probe binary {} not readable ({e}); pass --probe-bin PATH",
            probe_binary(env.args).display()
        )
    });
    for rb in bypasses {
        let id = rb.bypass.exercise_id();
        one(env, rb, probe.as_deref(), &mut ex[id]).await?;
    }
    Ok(())
}

/// One bypass exercise, decided by the judge over the files it wrote.
async fn one(
    env: &RunEnv<'_>,
    rb: &RenderedBypass,
    probe: Result<&[u8], &String>,
    ex: &mut Exercise,
) -> Result<(), ApiError> {
    let RunEnv {
        cluster,
        ctx,
        args,
        out,
        ..
    } = *env;
    let b = rb.bypass;
    let ns = ctx.namespace.as_str();
    progress(&format!(
        "bypass {}: creating pod {} (it {})",
        b.id, b.pod, b.tries
    ));
    let manifest = format!("manifests/{}.yaml", b.pod);
    let admitted = match cluster
        .create_bypass_pod(ns, &rb.pod.pod, args.pod_timeout)
        .await
    {
        Ok(Admission::Refused(status)) => {
            progress(&format!("bypass {}: refused at admission", b.id));
            ex.evidence = [write_json_or_warn(out, &admission_file(b.pod), &status)]
                .into_iter()
                .flatten()
                .chain([manifest])
                .collect();
            judge(ex, &env.judge_ctx(), out);
            return Ok(());
        }
        Ok(Admission::Created(_)) => true,
        // The cluster cannot be used at all: the run stops.
        Err(e @ (ApiError::Unreachable { .. } | ApiError::Unauthorized { .. })) => return Err(e),
        Err(e) => {
            ex.set(
                ExerciseResult::NotRun,
                format!("creating pod {} failed: {e}", b.pod),
            );
            false
        }
    };
    if !admitted {
        return Ok(());
    }
    let probed = probe_inside(env, b, probe).await;
    progress(&format!("bypass {}: deleting pod {}", b.id, b.pod));
    if let Err(e) = cluster.delete_pod(ns, b.pod, args.pod_timeout).await {
        progress(&format!(
            "could not delete pod {} ({e}); `cluster-ctl cleanup` removes it",
            b.pod
        ));
    }
    match probed {
        Ok(evidence) => {
            ex.evidence = evidence.into_iter().chain([manifest]).collect();
            judge(ex, &env.judge_ctx(), out);
        }
        Err(why) => ex.set(ExerciseResult::NotRun, why),
    }
    Ok(())
}

/// Waits for the admitted pod, writes it, runs gpu-probe inside and writes its report; returns
/// the evidence written, or why the pod could not be probed.
async fn probe_inside(
    env: &RunEnv<'_>,
    b: &Bypass,
    probe: Result<&[u8], &String>,
) -> Result<Vec<String>, String> {
    let RunEnv {
        cluster,
        ctx,
        args,
        sizing,
        out,
        ..
    } = *env;
    let ns = ctx.namespace.as_str();
    let pods = cluster
        .wait_pods_ready(ns, &[b.pod], args.pod_timeout)
        .await
        .map_err(|e| format!("admitted, but pod {} did not become Ready: {e}", b.pod))?;
    let mut evidence: Vec<String> = pods
        .iter()
        .filter_map(|p| write_json_or_warn(out, &pod_file(b.pod), p))
        .collect();
    let probe = probe.map_err(|why| format!("admitted, but not probed: {why}"))?;
    cluster
        .copy_probe(ns, b.pod, None, probe, args.probe_timeout)
        .await
        .map_err(|e| format!("admitted, but gpu-probe could not be copied in: {e}"))?;
    let argv = crate::bypass::probe_args(b, sizing.slice_mib);
    progress(&format!(
        "bypass {}: running gpu-probe {} in {}",
        b.id,
        argv.join(" "),
        b.pod
    ));
    let run = cluster
        .run_copied_probe(ns, b.pod, None, &argv, args.probe_timeout)
        .await
        .map_err(|e| format!("admitted, but gpu-probe did not run: {e}"))?;
    evidence.extend(write_or_warn(
        out,
        &probe_file(b.pod, None),
        run.stdout.as_bytes(),
    ));
    evidence.extend(write_or_warn(
        out,
        &crate::bypass::stderr_path(b),
        run.stderr.as_bytes(),
    ));
    Ok(evidence)
}
