//! `cluster-ctl run`: the five exercises (and A1, A2 with `--audit`). Sizes the lab for the
//! registered card, renders and validates every pod first, refuses to start where HAMi could not
//! place or mutate the pods, then creates the pods, waits, probes over exec, writes what it saw
//! (`pods/`, `events/`, `probe/`) and has lab-report's judge decide each exercise over those files
//! as written (`crate::exercises`). An API failure after the start stops the run with every
//! remaining exercise `not-run` (and why) in `run.json`. `--bypass` adds B1–B6 (`bypass`).

mod bypass;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Ctx, Failure, Outcome, default_probe_bin, exit, progress, write_json_or_warn, write_or_warn,
};
use crate::api::{ApiError, Cluster};
use crate::decide::{self, NodeRegistration, container_image, node_registration};
use crate::doctor::{self, Finding, Severity};
use crate::exercises::{
    Exercises, audit_runs, judge, mechanism_exercise, overhead_difference, overhead_exercise,
    probe_exercise, run_context,
};
use crate::helm;
use crate::manifests::{self, BASELINE, BASELINE_MIB, OVERSUBSCRIBE, SHARE_A, SHARE_B};
use crate::plan::{Plan, Step};
use crate::report::{
    ClusterInfo, Exercise, ExerciseId, ExerciseResult, GpuEntry, OutDir, RunReport, SCHEMA,
    SCHEMA_VERSION, now_rfc3339,
};
use crate::sizing::{self, Card, Sizing};
use lab_report::judge::RunContext;
use lab_report::run::{events_file, pod_file, probe_file, probe_stderr};

/// Options of `run`.
#[derive(Debug, Clone)]
pub struct RunArgs {
    pub card_mib: Option<u64>,
    pub slice_mib: Option<u64>,
    pub oversubscribe_mib: Option<u64>,
    pub image: String,
    pub out: PathBuf,
    pub probe_bin: Option<PathBuf>,
    pub node: Option<String>,
    pub pod_timeout: Duration,
    pub event_timeout: Duration,
    pub probe_timeout: Duration,
    /// Also run `gpu-probe audit`, `overhead` and `compute` in share pod A (exercise A1).
    pub audit: bool,
    /// With `audit`: hold HAMi-core's median latency overhead to this many percent of the
    /// baseline pod's (exercise A2); without it the overhead is a measurement.
    pub max_overhead_pct: Option<f64>,
    /// Also run the bypass exercises B1–B6, after E1–E5 (in the lab namespace).
    pub bypass: bool,
    /// The namespace of `audit`'s baseline pod (`None`: the lab namespace). With the GPU tenant
    /// policy bound it must be one the binding exempts.
    pub baseline_namespace: Option<String>,
}

impl RunArgs {
    /// Where the baseline pod runs.
    pub fn baseline_namespace<'a>(&'a self, ctx: &'a Ctx) -> &'a str {
        self.baseline_namespace.as_deref().unwrap_or(&ctx.namespace)
    }
}

/// The run plan for a sizing (pure).
pub fn run_plan(sizing: &Sizing, ctx: &Ctx, args: &RunArgs) -> Plan {
    let ns = &ctx.namespace;
    let mut p = Plan::new("run");
    p.push(Step::new(
        "apply-share-a",
        format!(
            "create pod {ns}/{SHARE_A} (nvidia.com/gpumem {} MiB)",
            sizing.slice_mib
        ),
        "E1: first slice",
    ));
    p.push(Step::new(
        "apply-share-b",
        format!(
            "create pod {ns}/{SHARE_B} (nvidia.com/gpumem {} MiB)",
            sizing.slice_mib
        ),
        "E1: second slice, must share the GPU",
    ));
    p.push(Step::new(
        "wait-ready",
        format!(
            "watch both pods until Ready (timeout {} s), showing Pulling/Pulled",
            args.pod_timeout.as_secs()
        ),
        "the probes need running containers",
    ));
    p.push(Step::new(
        "check-co-residency",
        "read schedulerName, nodeName and hami.io/vgpu-devices-allocated",
        "E1: hami-scheduler placed both on one node and one GPU UUID",
    ));
    for (id, pod, e) in [
        ("probe-share-a", SHARE_A, "E2"),
        ("probe-share-b", SHARE_B, "E3"),
    ] {
        p.push(Step::new(id, format!("copy gpu-probe into {pod} over exec (tar, like kubectl cp), run `gpu-probe all --output json --expect-mib {}`", sizing.slice_mib), format!("{e}: the pod sees and can allocate only its slice")));
    }
    if args.audit {
        p.push(Step::new(
            "audit-share-a",
            format!("in {SHARE_A}: `gpu-probe audit --expect-mib {}`, `overhead`, `compute --seconds 5`; then `gpu-probe overhead` in pod {}/{BASELINE} (CUDA_DISABLE_CONTROL=true, {BASELINE_MIB} MiB, deleted after)", sizing.slice_mib, args.baseline_namespace(ctx)),
            "A1: which allocation paths are capped, what the interception costs (with vs without HAMi-core), whether the compute limit acts",
        ));
    }
    p.push(Step::new(
        "apply-oversubscribe",
        format!(
            "create pod {ns}/{OVERSUBSCRIBE} (nvidia.com/gpumem {} MiB)",
            sizing.oversubscribe_mib
        ),
        format!(
            "E4: fits the empty {} MiB card but not the {} MiB left beside the two slices",
            sizing.card.devmem_mib,
            sizing.card.devmem_mib - 2 * sizing.slice_mib
        ),
    ));
    p.push(Step::new("watch-filtering-failed", format!("watch events of {OVERSUBSCRIBE} for FilteringFailed from hami-scheduler naming CardInsufficientMemory (timeout {} s)", args.event_timeout.as_secs()), "E4: the refusal must come from HAMi's memory accounting"));
    p.push(Step::new(
        "mechanism",
        "combine E1–E3",
        "E5: isolation is enforced inside each co-resident container",
    ));
    if args.bypass {
        for b in &lab_report::run::BYPASSES {
            p.push(crate::bypass::plan_step(b, ns, sizing.slice_mib));
        }
    }
    p.push(Step::new(
        "capture",
        format!(
            "write {}/cluster/*.json, probe/, manifests/ and run.json",
            args.out.display()
        ),
        "evidence for evidence-pack (no Secrets, env values scrubbed)",
    ));
    if let Some(uuid) = &sizing.pin_uuid {
        p.push(Step::new(
            "note-pin",
            format!("all lab pods carry {}: {uuid}", manifests::PIN_ANNOTATION),
            "several GPUs: the oversubscribe pod must compete for the slices' card",
        ));
    }
    p
}

fn dry_run_outcome(sizing: &Sizing, rendered: &[manifests::RenderedPod], plan: &Plan) -> Outcome {
    let mut human = format!(
        "sizing: card {} MiB, slice {} MiB, oversubscribe {} MiB (must be > {} and <= {})\n",
        sizing.card.devmem_mib,
        sizing.slice_mib,
        sizing.oversubscribe_mib,
        sizing.card.devmem_mib - 2 * sizing.slice_mib,
        sizing.card.devmem_mib
    );
    for r in rendered {
        human.push_str(&format!("---\n# manifests/{}.yaml\n{}", r.name, r.yaml));
    }
    human.push_str("---\n");
    human.push_str(&plan.human());
    Outcome {
        exit: exit::OK,
        human,
        json: json!({"sizing": sizing, "manifests": rendered, "plan": plan}),
    }
}

/// `run --dry-run --card-mib N`: sizing, manifests and plan without any cluster.
pub fn run_dry_offline(card_mib: u64, ctx: &Ctx, args: &RunArgs) -> Result<Outcome, Failure> {
    let sizing = sizing::size(
        &[Card {
            uuid: None,
            devmem_mib: card_mib,
        }],
        args.slice_mib,
        args.oversubscribe_mib,
    )
    .map_err(Failure::usage)?;
    let (rendered, _) = lab_pods(&sizing, ctx, args).map_err(Failure::usage)?;
    Ok(dry_run_outcome(
        &sizing,
        &rendered,
        &run_plan(&sizing, ctx, args),
    ))
}

/// Every pod the run may create, rendered and validated before any is applied: the three lab
/// pods, with `--audit` the baseline pod, with `--bypass` the bypass pods (also returned with
/// their exercises).
fn lab_pods(
    sizing: &Sizing,
    ctx: &Ctx,
    args: &RunArgs,
) -> Result<(Vec<manifests::RenderedPod>, Vec<manifests::RenderedBypass>), manifests::ManifestError>
{
    let mut pods = manifests::render_all(sizing, &ctx.namespace, &args.image)?;
    let bypasses = if args.bypass {
        manifests::render_bypasses(sizing, &ctx.namespace, &args.image)?
    } else {
        Vec::new()
    };
    pods.extend(bypasses.iter().map(|b| b.pod.clone()));
    if args.audit {
        pods.push(manifests::render(
            manifests::BASELINE_TEMPLATE,
            BASELINE,
            args.baseline_namespace(ctx),
            &args.image,
            BASELINE_MIB,
            sizing.pin_uuid.as_deref(),
        )?);
    }
    Ok((pods, bypasses))
}

/// The node the lab runs on: `--node`, else the first registered one.
pub fn pick_node<'a>(
    regs: &'a [NodeRegistration],
    wanted: Option<&str>,
) -> Result<&'a NodeRegistration, String> {
    match wanted {
        Some(w) => regs.iter().find(|r| r.name == w).ok_or_else(|| format!("node {w} not found")),
        None => regs.iter().find(|r| r.registered()).ok_or_else(|| {
            "no node is registered by HAMi (gpu=on, nvidia.com/gpu allocatable, hami.io/node-nvidia-register); run `cluster-ctl doctor`".to_owned()
        }),
    }
}

fn probe_binary(args: &RunArgs) -> PathBuf {
    args.probe_bin.clone().unwrap_or_else(default_probe_bin)
}

/// Aborts the background task when dropped, on every way out of the wait.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn run(
    cluster: &Cluster,
    runner: &dyn lab_runner::Runner,
    ctx: &Ctx,
    args: &RunArgs,
) -> Result<Outcome, Failure> {
    let started_at = now_rfc3339();
    let s = cluster
        .snapshot(&ctx.namespace, &ctx.hami_namespace)
        .await?;
    let regs: Vec<NodeRegistration> = s.nodes.iter().map(node_registration).collect();
    let node =
        pick_node(&regs, args.node.as_deref()).map_err(|e| Failure::env(anyhow::anyhow!(e)))?;
    let cards = match args.card_mib {
        Some(mib) => vec![Card {
            uuid: None,
            devmem_mib: mib,
        }],
        None => sizing::cards_from_gpus(&node.gpus),
    };
    let sizing =
        sizing::size(&cards, args.slice_mib, args.oversubscribe_mib).map_err(Failure::usage)?;
    let (rendered, bypasses) = lab_pods(&sizing, ctx, args).map_err(Failure::usage)?;
    let plan = run_plan(&sizing, ctx, args);
    if ctx.dry_run {
        return Ok(dry_run_outcome(&sizing, &rendered, &plan));
    }
    let out = OutDir::new(&args.out);
    for r in &rendered {
        write_or_warn(
            &out,
            &format!("manifests/{}.yaml", r.name),
            r.yaml.as_bytes(),
        );
    }
    let mut ex = Exercises::new(args.audit, args.max_overhead_pct).with_bypass(args.bypass);
    // Refuse to start when HAMi cannot mutate or place the pods: they would silently bypass it.
    let blockers: Vec<Finding> = doctor::diagnose(&s)
        .into_iter()
        .filter(|f| {
            f.severity == Severity::Problem
                && [
                    "hami-not-installed",
                    "webhook-no-endpoints",
                    "two-device-plugins",
                ]
                .contains(&f.rule)
        })
        .collect();
    if blockers.is_empty() {
        let env = RunEnv {
            cluster,
            ctx,
            args,
            sizing: &sizing,
            rendered: &rendered,
            out: &out,
        };
        let mut result = run_exercises(&env, &mut ex).await;
        if result.is_ok() && args.bypass {
            result = bypass::run_bypasses(&env, &bypasses, &mut ex).await;
        }
        if let Err(e) = result {
            progress(&format!("the run stopped: {e}"));
            ex.not_run_because(&format!("the run stopped: {e}"));
        }
    } else {
        let why = format!(
            "not started: {}",
            blockers
                .iter()
                .map(|f| format!("{} ({})", f.what, f.fix))
                .collect::<Vec<_>>()
                .join("; ")
        );
        for id in ex.ids() {
            ex[id].set(ExerciseResult::NotRun, why.clone());
        }
    }
    // Capture.
    let captured = cluster.capture(&ctx.namespace, &ctx.hami_namespace).await;
    write_json_or_warn(&out, "cluster/version.json", &captured.version);
    write_json_or_warn(&out, "cluster/nodes.json", &captured.nodes);
    write_json_or_warn(&out, "cluster/hami-pods.json", &captured.hami_pods);
    // For `doctor --explain DIR`: the last lines of HAMi's container logs.
    crate::diagnose::live::capture_logs(cluster, &captured.hami_pods, &ctx.hami_namespace, &out)
        .await;
    write_json_or_warn(&out, "cluster/events.json", &captured.events);
    write_json_or_warn(&out, "cluster/daemonsets.json", &captured.daemonsets);
    let releases = if runner.exists("helm") {
        runner
            .run_checked(&helm::list_cmd(&ctx.helm))
            .ok()
            .and_then(|o| helm::parse_helm_list(&o.stdout).ok())
    } else {
        None
    };
    let helm_status = match &releases {
        Some(r) => json!({"releases": r}),
        None => json!({"error": "helm not available or `helm list` failed"}),
    };
    write_json_or_warn(&out, "cluster/helm-status.json", &helm_status);
    let chart_version = releases
        .as_ref()
        .and_then(|r| r.iter().find(|r| r.name == helm::RELEASE))
        .map(|r| r.chart.trim_start_matches("hami-").to_owned())
        .or_else(|| {
            // Without helm: the chart label the HAMi chart puts on its objects.
            s.scheduler
                .as_ref()
                .and_then(|d| d.metadata.labels.as_ref())
                .and_then(|l| l.get("helm.sh/chart"))
                .map(|c| c.trim_start_matches("hami-").to_owned())
        });
    let mut hami_images: Vec<String> = s
        .scheduler
        .as_ref()
        .map(|d| decide::template_images(d.spec.as_ref().map(|s| &s.template)))
        .unwrap_or_default();
    for ds in s
        .daemonsets
        .iter()
        .filter(|d| d.metadata.name.as_deref() == Some("hami-device-plugin"))
    {
        hami_images.extend(decide::template_images(
            ds.spec.as_ref().map(|s| &s.template),
        ));
    }
    hami_images.sort();
    hami_images.dedup();
    let report = RunReport {
        schema: SCHEMA.to_owned(),
        schema_version: SCHEMA_VERSION,
        started_at: Some(started_at),
        finished_at: Some(now_rfc3339()),
        cluster: ClusterInfo {
            server_version: s.server_git_version.clone(),
            node: node.name.clone(),
            gpus: node.gpus.iter().map(GpuEntry::from).collect(),
            hami_chart_version: chart_version,
            hami_images,
            scheduler_image: s
                .scheduler
                .as_ref()
                .and_then(|d| container_image(d, "kube-scheduler")),
        },
        slice_mib: Some(sizing.slice_mib),
        oversubscribe_mib: Some(sizing.oversubscribe_mib),
        max_overhead_pct: args.max_overhead_pct,
        exercises: ex.into_vec(),
    };
    out.write_json("run.json", &report).map_err(|e| {
        Failure::env(anyhow::anyhow!(
            "writing {}/run.json: {e}",
            args.out.display()
        ))
    })?;
    let mut human = String::new();
    for e in &report.exercises {
        let r = match e.result {
            ExerciseResult::Pass => "pass",
            ExerciseResult::Fail => "FAIL",
            ExerciseResult::NotRun => "not-run",
            ExerciseResult::Unknown => "FAIL?",
        };
        human.push_str(&format!("{} {r:<7} {}\n    {}\n", e.id, e.claim, e.reason));
    }
    human.push_str(&format!("results: {}/run.json\n", args.out.display()));
    Ok(Outcome {
        exit: report.exit_code(),
        human,
        json: serde_json::to_value(&report).unwrap_or(Value::Null),
    })
}

/// What the exercise steps work with.
struct RunEnv<'a> {
    cluster: &'a Cluster,
    ctx: &'a Ctx,
    args: &'a RunArgs,
    sizing: &'a Sizing,
    rendered: &'a [manifests::RenderedPod],
    out: &'a OutDir,
}

impl RunEnv<'_> {
    fn pod(&self, name: &str) -> Option<&manifests::RenderedPod> {
        self.rendered.iter().find(|r| r.name == name)
    }

    /// What the judge needs from the run besides the evidence files.
    fn judge_ctx(&self) -> RunContext {
        run_context(self.sizing.slice_mib, self.args.max_overhead_pct)
    }
}

async fn run_exercises(env: &RunEnv<'_>, ex: &mut Exercises) -> Result<(), ApiError> {
    use ExerciseId::*;
    let RunEnv {
        cluster,
        ctx,
        args,
        sizing,
        out,
        ..
    } = *env;
    let ns = ctx.namespace.as_str();
    let judge_ctx = env.judge_ctx();
    // E1
    for name in [SHARE_A, SHARE_B] {
        if let Some(r) = env.pod(name) {
            progress(&format!("creating pod {name}"));
            cluster.create_pod(ns, &r.pod, args.pod_timeout).await?;
        }
    }
    let ready = {
        let _progress = AbortOnDrop(cluster.spawn_pull_progress(
            ns,
            vec![SHARE_A.to_owned(), SHARE_B.to_owned()],
            |line| eprintln!("  … {line}"),
        ));
        progress("waiting for the share pods to be Ready");
        cluster
            .wait_pods_ready(ns, &[SHARE_A, SHARE_B], args.pod_timeout)
            .await
    };
    ex[E1].number("slice_mib", sizing.slice_mib);
    let pods = match ready {
        Ok(p) => p,
        Err(e @ ApiError::WaitTimeout { .. }) => {
            let fresh = cluster.snapshot(ns, &ctx.hami_namespace).await?;
            let mut diag: Vec<String> = doctor::diagnose(&fresh)
                .into_iter()
                .filter(|f| f.severity == Severity::Problem)
                .map(|f| format!("{}: {} (fix: {})", f.subject, f.what, f.fix))
                .collect();
            for pod in [SHARE_A, SHARE_B] {
                diag.extend(
                    decide::pod_warnings(&fresh.events, pod)
                        .into_iter()
                        .map(|w| format!("{pod}: {w}")),
                );
            }
            ex[E1].set(
                ExerciseResult::Fail,
                format!(
                    "{e}; diagnosis: {}",
                    if diag.is_empty() {
                        "none of the known failures (check `kubectl describe pod`)".to_owned()
                    } else {
                        diag.join("; ")
                    }
                ),
            );
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    if let [_, _] = pods.as_slice() {
        // E1 from the two Pod objects as the watch returned them Ready, written first.
        ex[E1].evidence = pods
            .iter()
            .filter_map(|p| {
                let name = p.metadata.name.as_deref().unwrap_or("pod");
                write_json_or_warn(out, &pod_file(name), p)
            })
            .collect();
        judge(&mut ex[E1], &judge_ctx, out);
        // E2, E3
        let probe_path = probe_binary(args);
        match std::fs::read(&probe_path) {
            Err(e) => {
                for id in [E2, E3] {
                    ex[id].set(
                        ExerciseResult::NotRun,
                        format!(
                            "gpu-probe binary {} not readable ({e}); pass --probe-bin PATH",
                            probe_path.display()
                        ),
                    );
                }
            }
            Ok(bytes) => {
                for (id, pod) in [(E2, SHARE_A), (E3, SHARE_B)] {
                    progress(&format!("running gpu-probe in {pod}"));
                    match cluster
                        .copy_and_run_probe(
                            ns,
                            pod,
                            None,
                            &bytes,
                            Some(sizing.slice_mib),
                            args.probe_timeout,
                        )
                        .await
                    {
                        Ok(run) => {
                            let mut evidence = Vec::new();
                            evidence.extend(write_or_warn(
                                out,
                                &probe_file(pod, None),
                                run.stdout.as_bytes(),
                            ));
                            evidence.extend(write_or_warn(
                                out,
                                &probe_stderr(pod, None),
                                run.stderr.as_bytes(),
                            ));
                            ex[id.clone()].evidence = evidence;
                            probe_exercise(&mut ex[id], pod, &run, &judge_ctx, out);
                        }
                        Err(e) => ex[id].set(ExerciseResult::NotRun, e.to_string()),
                    }
                }
                if args.audit && ex[E2].result != ExerciseResult::NotRun {
                    audit_share_a(env, &bytes, &mut ex[A1]).await;
                    let a1 = ex[A1].clone();
                    overhead_exercise(&mut ex[A2], &judge_ctx, out, &a1);
                }
            }
        }
    } else if ex[E1].result == ExerciseResult::NotRun {
        ex[E1].set(ExerciseResult::Fail, "share pods did not become Ready");
    }
    // E4 needs the two slices in place, so it runs only after E1 passed.
    if ex[E1].result == ExerciseResult::Pass {
        if let Some(r) = env.pod(OVERSUBSCRIBE) {
            progress(&format!("creating pod {OVERSUBSCRIBE}"));
            cluster.create_pod(ns, &r.pod, args.pod_timeout).await?;
            let seen = cluster
                .watch_oversubscribe(ns, OVERSUBSCRIBE, args.event_timeout)
                .await?;
            // E4 from the pod and its events as they are once the watch ended, written first.
            let (pod, events) = cluster.pod_and_events(ns, OVERSUBSCRIBE).await?;
            ex[E4].number("oversubscribe_mib", sizing.oversubscribe_mib);
            ex[E4].number("card_mib", sizing.card.devmem_mib);
            ex[E4].number(
                "free_beside_slices_mib",
                sizing.card.devmem_mib - 2 * sizing.slice_mib,
            );
            ex[E4].number("watch_saw", json!(seen));
            ex[E4].evidence = [
                pod.and_then(|p| write_json_or_warn(out, &pod_file(OVERSUBSCRIBE), &p)),
                write_json_or_warn(out, &events_file(OVERSUBSCRIBE), &events),
                Some(format!("manifests/{OVERSUBSCRIBE}.yaml")),
            ]
            .into_iter()
            .flatten()
            .collect();
            judge(&mut ex[E4], &judge_ctx, out);
        }
    } else {
        ex[E4].set(
            ExerciseResult::NotRun,
            "E1 did not pass, so the slices are not in place",
        );
    }
    let (e1, e2, e3) = (ex[E1].clone(), ex[E2].clone(), ex[E3].clone());
    mechanism_exercise(&mut ex[E5], [&e1, &e2, &e3], &judge_ctx, out);
    ex[E5].number("slice_mib", sizing.slice_mib);
    Ok(())
}

/// A1: runs the audit, overhead and compute probes in share pod A (gpu-probe is already there),
/// then `overhead` in a baseline pod without HAMi-core for the with/without difference.
async fn audit_share_a(env: &RunEnv<'_>, probe: &[u8], ex: &mut Exercise) {
    let RunEnv {
        cluster,
        ctx,
        args,
        sizing,
        out,
        ..
    } = *env;
    let mut evidence = Vec::new();
    let mut with_hami = None;
    let mut audited = false;
    for (stem, argv) in audit_runs(sizing.slice_mib) {
        progress(&format!("running gpu-probe {stem} in {SHARE_A}"));
        match cluster
            .run_copied_probe(&ctx.namespace, SHARE_A, None, &argv, args.probe_timeout)
            .await
        {
            Ok(run) => {
                evidence.extend(write_or_warn(
                    out,
                    &probe_file(SHARE_A, Some(stem)),
                    run.stdout.as_bytes(),
                ));
                evidence.extend(write_or_warn(
                    out,
                    &probe_stderr(SHARE_A, Some(stem)),
                    run.stderr.as_bytes(),
                ));
                match stem {
                    "audit" => audited = true,
                    "overhead" => with_hami = Some(run.stdout),
                    _ => {}
                }
            }
            Err(e) if stem == "audit" => ex.set(ExerciseResult::NotRun, e.to_string()),
            Err(e) => progress(&format!("gpu-probe {stem} in {SHARE_A} failed: {e}")),
        }
    }
    match baseline_overhead(env, probe, &mut evidence).await {
        Ok(without) => {
            if let Some(with) = with_hami {
                ex.numbers.insert(
                    "overhead_p50_us_with_vs_without_hami".into(),
                    Value::Object(overhead_difference(&with, &without)),
                );
            }
        }
        Err(why) => {
            ex.numbers
                .insert("overhead_baseline".into(), json!(format!("not run: {why}")));
        }
    }
    ex.evidence = evidence;
    ex.number("slice_mib", sizing.slice_mib);
    if audited {
        judge(ex, &env.judge_ctx(), out);
    }
}

/// `gpu-probe overhead` in the baseline pod (CUDA_DISABLE_CONTROL=true), which is deleted after,
/// whatever happened, and waited for until it is gone (so an immediate re-run cannot reuse a
/// dying pod).
async fn baseline_overhead(
    env: &RunEnv<'_>,
    probe: &[u8],
    evidence: &mut Vec<String>,
) -> Result<String, String> {
    let RunEnv {
        cluster,
        ctx,
        args,
        sizing,
        out,
        ..
    } = *env;
    let ns = args.baseline_namespace(ctx);
    let pod = env
        .pod(BASELINE)
        .ok_or("the baseline pod was not rendered")?;
    let room = sizing.card.devmem_mib.saturating_sub(2 * sizing.slice_mib);
    if room < BASELINE_MIB {
        return Err(format!(
            "only {room} MiB left beside the two slices, the baseline pod needs {BASELINE_MIB}"
        ));
    }
    evidence.push(format!("manifests/{BASELINE}.yaml"));
    progress(&format!(
        "creating pod {BASELINE} (CUDA_DISABLE_CONTROL=true: no HAMi-core)"
    ));
    let created = cluster
        .create_pod(ns, &pod.pod, args.pod_timeout)
        .await
        .map_err(|e| e.to_string());
    let result = async {
        created?;
        cluster
            .wait_pods_ready(ns, &[BASELINE], args.pod_timeout)
            .await
            .map_err(|e| e.to_string())?;
        cluster
            .copy_probe(ns, BASELINE, None, probe, args.probe_timeout)
            .await
            .map_err(|e| e.to_string())?;
        let argv = [
            "overhead".to_owned(),
            "--output".to_owned(),
            "json".to_owned(),
        ];
        let run = cluster
            .run_copied_probe(ns, BASELINE, None, &argv, args.probe_timeout)
            .await
            .map_err(|e| e.to_string())?;
        evidence.extend(write_or_warn(
            out,
            &probe_file(BASELINE, Some("overhead")),
            run.stdout.as_bytes(),
        ));
        evidence.extend(write_or_warn(
            out,
            &probe_stderr(BASELINE, Some("overhead")),
            run.stderr.as_bytes(),
        ));
        Ok(run.stdout)
    }
    .await;
    progress(&format!("deleting pod {BASELINE}"));
    if let Err(e) = cluster.delete_pod(ns, BASELINE, args.pod_timeout).await {
        progress(&format!(
            "could not delete pod {BASELINE} ({e}); `cluster-ctl cleanup` removes it"
        ));
    }
    result
}
