//! The subcommands: each gathers objects through `api`, decides with the pure modules, prints a plan
//! for `--dry-run`, applies it otherwise, and returns an [`Outcome`] (what to print, exit code).
//!
//! Exit codes: 0 ok/verified, 1 a checked claim failed, 2 usage, 3 environment (unreachable
//! cluster, missing helm or probe binary, HAMi not ready for the exercises).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod};
use kube::Client;
use kube::api::{Api, ListParams};
use lab_runner::Runner;
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::{self, ApiError};
use crate::chart_install::{self, Installer};
use crate::decide::{
    self, Coexisting, NodeRegistration, OversubscribeEvidence, check_scheduler_tag, co_residency,
    container_image, daemonset_ready, deployment_ready, endpoints_ready, find_coexisting,
    node_registration,
};
use crate::doctor::{self, Finding, Severity, Snapshot};
use crate::helm::{self, HelmTarget, InstallOptions, ReleaseState};
use crate::manifests::{self, BASELINE, BASELINE_MIB, OVERSUBSCRIBE, SHARE_A, SHARE_B};
use crate::plan::{Plan, Step};
use crate::report::{
    CLAIMS, ClusterInfo, Exercise, ExerciseResult, GpuEntry, OutDir, RunReport, SCHEMA,
    SCHEMA_VERSION, now_rfc3339, probe_outcome,
};
use crate::sizing::{self, Card, Sizing};

/// Exit codes of every subcommand.
pub mod exit {
    pub const OK: u8 = 0;
    pub const CLAIM_FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const ENVIRONMENT: u8 = 3;
}

/// What a subcommand printed and how it ends.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub exit: u8,
    pub human: String,
    pub json: Value,
}

/// A subcommand that could not do its work, with the exit code that says why.
#[derive(Debug, thiserror::Error)]
#[error("{error:#}")]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn env(e: impl Into<anyhow::Error>) -> Self {
        Self {
            code: exit::ENVIRONMENT,
            error: e.into(),
        }
    }
    pub fn usage(e: impl Into<anyhow::Error>) -> Self {
        Self {
            code: exit::USAGE,
            error: e.into(),
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self::env(e)
    }
}

/// Options every subcommand shares.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Namespace of the lab pods.
    pub namespace: String,
    /// Namespace HAMi is (to be) installed in.
    pub hami_namespace: String,
    pub dry_run: bool,
    /// Limit of single API calls (and of reaching the server).
    pub api_timeout: Duration,
    pub helm: HelmTarget,
    /// How install-hami installs the chart: helm, k3s's HelmChart, or auto.
    pub installer: crate::helmchart::InstallerChoice,
}

fn progress(line: &str) {
    eprintln!("cluster-ctl: {line}");
}

fn findings_text(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            let tag = match f.severity {
                Severity::Problem => "PROBLEM",
                Severity::Info => "info",
            };
            format!(
                "{tag} [{}] {}: {}\n    fix: {}\n",
                f.rule, f.subject, f.what, f.fix
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// preflight

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

fn preflight_human(r: &PreflightReport) -> String {
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
            "HAMi release: unknown (helm not found); hami-scheduler Deployment {}\n",
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

fn helm_release(runner: &dyn Runner, target: &HelmTarget) -> Result<Option<ReleaseState>, Failure> {
    if !runner.exists("helm") {
        return Ok(None);
    }
    let out = runner
        .run_checked(&helm::list_cmd(target))
        .map_err(Failure::env)?;
    let list = helm::parse_helm_list(&out.stdout).map_err(Failure::env)?;
    Ok(Some(helm::release_state(&list)))
}

pub async fn preflight(
    client: &Client,
    runner: &dyn Runner,
    ctx: &Ctx,
) -> Result<Outcome, Failure> {
    let s = api::snapshot(client, &ctx.namespace, &ctx.hami_namespace, ctx.api_timeout).await?;
    // Preflight only reports the release: a failing `helm list` is shown, not fatal.
    let release = helm_release(runner, &ctx.helm).unwrap_or_else(|e| {
        progress(&format!("could not read the HAMi release: {e}"));
        None
    });
    let mut r = preflight_report(&s, release);
    if runner.exists("helm") {
        r.helm_major = helm::helm_major(runner).ok();
    }
    r.installer = chart_install::choose(client, ctx, &s.server_git_version)
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

// ---------------------------------------------------------------------------------------------
// install-hami

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

pub async fn install_hami(
    client: &Client,
    runner: &dyn Runner,
    ctx: &Ctx,
    opts: &InstallOptions,
    wait: Duration,
) -> Result<Outcome, Failure> {
    let s = api::snapshot(client, &ctx.namespace, &ctx.hami_namespace, ctx.api_timeout).await?;
    let choice = chart_install::choose(client, ctx, &s.server_git_version).await?;
    progress(&format!("installer: {}", choice.why));
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
            chart_install::install(client, ctx, opts, &choice, deadline).await?
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
    verify_install(client, ctx, &s, deadline, &plan, job).await
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
    client: &Client,
    ctx: &Ctx,
    s: &Snapshot,
    deadline: tokio::time::Instant,
    plan: &Plan,
    job: Option<chart_install::JobReport>,
) -> Result<Outcome, Failure> {
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let ns = &ctx.hami_namespace;
    progress("waiting for hami-scheduler to be ready");
    let scheduler = api::wait_for(
        Api::<Deployment>::namespaced(client.clone(), ns),
        "hami-scheduler",
        |d: Option<&Deployment>| d.is_some_and(deployment_ready),
        left(),
        "Deployment hami-scheduler ready",
    )
    .await;
    progress("waiting for the webhook endpoints");
    let endpoints = api::wait_for(
        Api::<Endpoints>::namespaced(client.clone(), ns),
        "hami-scheduler",
        |e: Option<&Endpoints>| e.is_some_and(endpoints_ready),
        left(),
        "Endpoints hami-scheduler",
    )
    .await;
    progress("waiting for hami-device-plugin");
    let plugin = api::wait_for(
        Api::<DaemonSet>::namespaced(client.clone(), ns),
        "hami-device-plugin",
        |d: Option<&DaemonSet>| d.is_some_and(daemonset_ready),
        left(),
        "DaemonSet hami-device-plugin",
    )
    .await;
    let mut regs = Vec::new();
    for node in s.nodes.iter().filter(|n| node_registration(n).labelled) {
        let name = node.metadata.name.clone().unwrap_or_default();
        progress(&format!("waiting for node {name} to be registered by HAMi"));
        let got = api::wait_for(
            Api::<Node>::all(client.clone()),
            &name,
            |n: Option<&Node>| n.is_some_and(|n| node_registration(n).registered()),
            left(),
            "node registration",
        )
        .await;
        regs.push(match got {
            Ok(Some(n)) => node_registration(&n),
            _ => {
                let now = Api::<Node>::all(client.clone())
                    .get_opt(&name)
                    .await
                    .ok()
                    .flatten();
                node_registration(now.as_ref().unwrap_or(node))
            }
        });
    }
    if regs.is_empty() {
        regs = s.nodes.iter().map(node_registration).collect();
    }
    // A timed-out wait leaves the object as it is now.
    let now_deploy = match scheduler {
        Ok(d) => d,
        Err(_) => Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt("hami-scheduler")
            .await
            .ok()
            .flatten(),
    };
    let now_ep = match endpoints {
        Ok(e) => e,
        Err(_) => Api::<Endpoints>::namespaced(client.clone(), ns)
            .get_opt("hami-scheduler")
            .await
            .ok()
            .flatten(),
    };
    let now_ds = match plugin {
        Ok(d) => d,
        Err(_) => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .get_opt("hami-device-plugin")
            .await
            .ok()
            .flatten(),
    };
    let checks = install_checks(
        &s.server_git_version,
        now_deploy.as_ref(),
        now_ep.as_ref(),
        now_ds.as_ref(),
        &regs,
    );
    let all_ok = checks.iter().all(|c| c.ok);
    let mut human = job
        .as_ref()
        .map(chart_install::JobReport::line)
        .unwrap_or_default();
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
        let fresh = api::snapshot(client, &ctx.namespace, ns, ctx.api_timeout).await?;
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

// ---------------------------------------------------------------------------------------------
// run

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
}

/// The claim of the optional audit exercise.
pub const AUDIT_CLAIM: &str = "In share pod A, no allocation path (pitch, managed, async, pools, VMM, arrays, a cleared-env child, a second process) holds more than the slice (gpu-probe audit).";

/// The probe runs of `--audit`: file stem and gpu-probe arguments.
pub fn audit_runs(slice_mib: u64) -> Vec<(&'static str, Vec<String>)> {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    vec![
        (
            "audit",
            owned(&[
                "audit",
                "--expect-mib",
                &slice_mib.to_string(),
                "--output",
                "json",
            ]),
        ),
        ("overhead", owned(&["overhead", "--output", "json"])),
        (
            "compute",
            owned(&["compute", "--seconds", "5", "--output", "json"]),
        ),
    ]
}

/// A1 from the audit report's JSON (pure): pass only when every applicable path is capped.
pub fn audit_exercise(ex: &mut Exercise, stdout: &str, slice_mib: u64) {
    use gpu_probe::report::{AuditOutcome, Report};
    ex.number("slice_mib", slice_mib);
    let report: Report = match serde_json::from_str(stdout) {
        Ok(r) => r,
        Err(e) => {
            ex.set(
                ExerciseResult::Fail,
                format!("gpu-probe audit printed no report ({e})"),
            );
            return;
        }
    };
    let Some(audit) = report.audit else {
        ex.set(
            ExerciseResult::Fail,
            format!("gpu-probe audit: {}", report.verdict.summary),
        );
        return;
    };
    let names = |o: AuditOutcome| -> Vec<String> {
        audit
            .paths
            .iter()
            .filter(|p| p.outcome == o)
            .map(|p| p.path.clone())
            .collect()
    };
    let (escaped, capped) = (names(AuditOutcome::Escaped), names(AuditOutcome::Capped));
    ex.numbers.insert("escaped".into(), json!(escaped));
    ex.numbers.insert("capped".into(), json!(capped));
    ex.numbers.insert(
        "not_applicable".into(),
        json!(names(AuditOutcome::NotApplicable)),
    );
    let past: u64 = audit
        .paths
        .iter()
        .map(|p| p.past_slice_bytes)
        .max()
        .unwrap_or(0);
    ex.number("max_past_slice_mib", past / (1024 * 1024));
    if !escaped.is_empty() {
        ex.set(
            ExerciseResult::Fail,
            format!(
                "{} path(s) escaped the {slice_mib} MiB slice: {}",
                escaped.len(),
                escaped.join(", ")
            ),
        );
    } else if capped.is_empty() {
        ex.set(
            ExerciseResult::Fail,
            "no path was capped or escaped: nothing was shown".to_owned(),
        );
    } else {
        ex.set(
            ExerciseResult::Pass,
            format!(
                "all {} applicable paths were capped at the {slice_mib} MiB slice",
                capped.len()
            ),
        );
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
            format!("in {SHARE_A}: `gpu-probe audit --expect-mib {}`, `overhead`, `compute --seconds 5`; then `gpu-probe overhead` in pod {BASELINE} (CUDA_DISABLE_CONTROL=true, {BASELINE_MIB} MiB, deleted after)", sizing.slice_mib),
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
    let rendered = lab_pods(&sizing, ctx, args).map_err(Failure::usage)?;
    Ok(dry_run_outcome(
        &sizing,
        &rendered,
        &run_plan(&sizing, ctx, args),
    ))
}

/// Every pod the run may create, rendered and validated before any is applied: the three lab
/// pods, and with `--audit` the baseline pod.
fn lab_pods(
    sizing: &Sizing,
    ctx: &Ctx,
    args: &RunArgs,
) -> Result<Vec<manifests::RenderedPod>, manifests::ManifestError> {
    let mut pods = manifests::render_all(sizing, &ctx.namespace, &args.image)?;
    if args.audit {
        pods.push(manifests::render(
            manifests::BASELINE_TEMPLATE,
            BASELINE,
            &ctx.namespace,
            &args.image,
            BASELINE_MIB,
            sizing.pin_uuid.as_deref(),
        )?);
    }
    Ok(pods)
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

/// `gpu-probe` next to the running executable.
pub fn default_probe_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("gpu-probe")))
        .unwrap_or_else(|| PathBuf::from("gpu-probe"))
}

fn write_or_warn(out: &OutDir, rel: &str, bytes: &[u8]) -> Option<String> {
    match out.write(rel, bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            progress(&format!(
                "could not write {}: {e}",
                out.root.join(rel).display()
            ));
            None
        }
    }
}

fn write_json_or_warn<T: Serialize>(out: &OutDir, rel: &str, v: &T) -> Option<String> {
    match out.write_json(rel, v) {
        Ok(r) => Some(r),
        Err(e) => {
            progress(&format!(
                "could not write {}: {e}",
                out.root.join(rel).display()
            ));
            None
        }
    }
}

/// E2/E3 result from a probe run.
pub fn probe_exercise(ex: &mut Exercise, pod: &str, run: &api::ProbeRun, slice_mib: u64) {
    ex.number("expect_mib", slice_mib);
    ex.number(
        "probe_exit_code",
        run.exit_code.map_or(Value::Null, Value::from),
    );
    match probe_outcome(&run.stdout).as_deref() {
        Some("verified") => ex.set(ExerciseResult::Pass, format!("gpu-probe in {pod}: verified ({slice_mib} MiB slice)")),
        Some("not-verified") => ex.set(ExerciseResult::Fail, format!("gpu-probe in {pod}: not-verified — the pod is not limited to its {slice_mib} MiB slice (run `cluster-ctl doctor --from <out>`)")),
        Some(other @ ("inconclusive" | "environment")) => ex.set(ExerciseResult::Fail, format!("gpu-probe in {pod}: {other}; see probe/{pod}.stderr")),
        Some(other) => ex.set(ExerciseResult::Fail, format!("gpu-probe in {pod}: unknown outcome {other:?}")),
        None => ex.set(ExerciseResult::Fail, format!("gpu-probe in {pod} printed no JSON verdict (exit {:?}); see probe/{pod}.stderr", run.exit_code)),
    }
}

/// A1: runs the audit, overhead and compute probes in share pod A (gpu-probe is already there),
/// then `overhead` in a baseline pod without HAMi-core for the with/without difference.
/// What the `--audit` steps work with.
struct AuditEnv<'a> {
    client: &'a Client,
    ctx: &'a Ctx,
    args: &'a RunArgs,
    sizing: &'a Sizing,
    out: &'a OutDir,
    probe: &'a [u8],
}

async fn audit_share_a(
    env: &AuditEnv<'_>,
    baseline: Option<&manifests::RenderedPod>,
    ex: &mut Exercise,
) {
    let AuditEnv {
        client,
        ctx,
        args,
        sizing,
        out,
        ..
    } = *env;
    let mut evidence = Vec::new();
    let mut with_hami = None;
    for (stem, argv) in audit_runs(sizing.slice_mib) {
        progress(&format!("running gpu-probe {stem} in {SHARE_A}"));
        match api::run_copied_probe(
            client,
            &ctx.namespace,
            SHARE_A,
            None,
            &argv,
            args.probe_timeout,
        )
        .await
        {
            Ok(run) => {
                evidence.extend(write_or_warn(
                    out,
                    &format!("probe/{SHARE_A}-{stem}.json"),
                    run.stdout.as_bytes(),
                ));
                evidence.extend(write_or_warn(
                    out,
                    &format!("probe/{SHARE_A}-{stem}.stderr"),
                    run.stderr.as_bytes(),
                ));
                match stem {
                    "audit" => audit_exercise(ex, &run.stdout, sizing.slice_mib),
                    "overhead" => with_hami = Some(run.stdout),
                    _ => {}
                }
            }
            Err(e) if stem == "audit" => ex.set(ExerciseResult::NotRun, e.to_string()),
            Err(e) => progress(&format!("gpu-probe {stem} in {SHARE_A} failed: {e}")),
        }
    }
    match baseline_overhead(env, baseline, &mut evidence).await {
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
}

/// `gpu-probe overhead` in the baseline pod (CUDA_DISABLE_CONTROL=true), which is deleted after.
async fn baseline_overhead(
    env: &AuditEnv<'_>,
    baseline: Option<&manifests::RenderedPod>,
    evidence: &mut Vec<String>,
) -> Result<String, String> {
    let AuditEnv {
        client,
        ctx,
        args,
        sizing,
        out,
        probe,
    } = *env;
    let pod = baseline.ok_or("the baseline pod was not rendered")?;
    let room = sizing.card.devmem_mib.saturating_sub(2 * sizing.slice_mib);
    if room < BASELINE_MIB {
        return Err(format!(
            "only {room} MiB left beside the two slices, the baseline pod needs {BASELINE_MIB}"
        ));
    }
    evidence.push(format!("manifests/{BASELINE}.yaml"));
    let pods_api = Api::<Pod>::namespaced(client.clone(), &ctx.namespace);
    progress(&format!(
        "creating pod {BASELINE} (CUDA_DISABLE_CONTROL=true: no HAMi-core)"
    ));
    api::create_pod(&pods_api, &pod.pod)
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        api::wait_pods_ready(&pods_api, &[BASELINE], args.pod_timeout)
            .await
            .map_err(|e| e.to_string())?;
        api::copy_probe(
            client,
            &ctx.namespace,
            BASELINE,
            None,
            probe,
            args.probe_timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
        let argv = [
            "overhead".to_owned(),
            "--output".to_owned(),
            "json".to_owned(),
        ];
        let run = api::run_copied_probe(
            client,
            &ctx.namespace,
            BASELINE,
            None,
            &argv,
            args.probe_timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
        evidence.extend(write_or_warn(
            out,
            &format!("probe/{BASELINE}-overhead.json"),
            run.stdout.as_bytes(),
        ));
        evidence.extend(write_or_warn(
            out,
            &format!("probe/{BASELINE}-overhead.stderr"),
            run.stderr.as_bytes(),
        ));
        Ok(run.stdout)
    }
    .await;
    let _ = pods_api
        .delete(BASELINE, &kube::api::DeleteParams::default())
        .await;
    result
}

/// p50 latencies with HAMi-core (share pod A) and without (the baseline pod), and their
/// difference, from two `gpu-probe overhead` reports (pure).
pub fn overhead_difference(with_json: &str, without_json: &str) -> serde_json::Map<String, Value> {
    use gpu_probe::report::{LatencyStats, Report};
    let parse = |t: &str| {
        serde_json::from_str::<Report>(t)
            .ok()
            .and_then(|r| r.overhead)
    };
    let mut m = serde_json::Map::new();
    let (Some(w), Some(wo)) = (parse(with_json), parse(without_json)) else {
        m.insert(
            "error".into(),
            json!("one of the overhead reports is missing or not a gpu-probe report"),
        );
        return m;
    };
    let mut pair = |key: String, a: Option<&LatencyStats>, b: Option<&LatencyStats>| {
        if let (Some(a), Some(b)) = (a, b) {
            let round = |x: f64| (x * 10.0).round() / 10.0;
            m.insert(key, json!({"with": round(a.p50_us), "without": round(b.p50_us), "difference": round(a.p50_us - b.p50_us)}));
        }
    };
    for (a, b) in w.alloc.iter().zip(&wo.alloc) {
        pair(
            format!("cuMemAlloc_v2 {} MiB", a.bytes / (1024 * 1024)),
            Some(a),
            Some(b),
        );
    }
    for (a, b) in w.free.iter().zip(&wo.free) {
        pair(
            format!("cuMemFree_v2 {} MiB", a.bytes / (1024 * 1024)),
            Some(a),
            Some(b),
        );
    }
    pair(
        "empty kernel launch".into(),
        w.launch.as_ref(),
        wo.launch.as_ref(),
    );
    m
}

/// E4 result (pure).
pub fn oversubscribe_exercise(ex: &mut Exercise, evidence: &OversubscribeEvidence, phase: &str) {
    match evidence {
        OversubscribeEvidence::Named { message, .. } if phase == "Pending" => {
            ex.set(ExerciseResult::Pass, format!("Pending; hami-scheduler FilteringFailed: {message}"));
        }
        OversubscribeEvidence::Named { message, .. } => {
            ex.set(ExerciseResult::Fail, format!("hami-scheduler refused it ({message}) but the pod is {phase}"));
        }
        OversubscribeEvidence::GenericOnly { message } | OversubscribeEvidence::SummaryOnly { message } => ex.set(
            ExerciseResult::Fail,
            format!("pod {phase}; hami-scheduler did not name CardInsufficientMemory in a FilteringFailed event (only: {message}); HAMi < 2.7 emits no per-reason events"),
        ),
        OversubscribeEvidence::Nothing if phase == "Pending" => ex.set(ExerciseResult::Fail, "pod Pending but no FilteringFailed event from hami-scheduler before the timeout (is the pod on default-scheduler? run `cluster-ctl doctor`)"),
        OversubscribeEvidence::Nothing => ex.set(ExerciseResult::Fail, format!("pod is {phase}: it was scheduled beside the two slices, so memory was not accounted per card")),
    }
}

/// E5 from E1–E3 (pure).
pub fn mechanism_exercise(
    ex: &mut Exercise,
    e1: &Exercise,
    e2: &Exercise,
    e3: &Exercise,
    reports: &[(&str, Option<&str>)],
) {
    ex.evidence = e2.evidence.iter().chain(&e3.evidence).cloned().collect();
    let parts = [e1, e2, e3];
    if let Some(failed) = parts.iter().find(|e| e.result == ExerciseResult::Fail) {
        ex.set(
            ExerciseResult::Fail,
            format!("{} failed: {}", failed.id, failed.reason),
        );
        return;
    }
    if !parts.iter().all(|e| e.result == ExerciseResult::Pass) {
        ex.set(ExerciseResult::NotRun, "E1–E3 did not all run");
        return;
    }
    // E1–E3 passed: now show it is HAMi-core doing it, from each probe's mechanism section.
    let mut seen = Vec::new();
    for (pod, json) in reports {
        match mechanism_of(json.unwrap_or("")) {
            Ok(m) => {
                ex.numbers.insert(format!("{pod}_mechanism"), m.clone());
                seen.push(m);
            }
            Err(why) => {
                ex.set(ExerciseResult::Fail, format!("E1–E3 passed, but gpu-probe in {pod} does not show HAMi-core at work: {why}"));
                return;
            }
        }
    }
    let library = seen
        .first()
        .and_then(|m| m["library"].as_str())
        .unwrap_or("the HAMi-core library")
        .to_owned();
    ex.set(
        ExerciseResult::Pass,
        format!(
            "both pods share one GPU (E1), each was held to its slice (E2, E3), and in both containers {library} is preloaded, mapped after CUDA init and exports the allocation hooks, with the limit in its shared region"
        ),
    );
}

/// What one probe report shows of HAMi-core (pure): the library, how it is injected, the
/// region's limit and HAMi-core's own OOM lines; an error when it is not active.
pub fn mechanism_of(probe_json: &str) -> Result<Value, String> {
    use gpu_probe::report::{MechanismOutcome, Report};
    let report: Report =
        serde_json::from_str(probe_json).map_err(|e| format!("no probe report ({e})"))?;
    let m = report
        .mechanism
        .ok_or("the report has no mechanism section")?;
    if m.outcome != MechanismOutcome::HamiCoreActive {
        return Err(format!(
            "mechanism {:?}: {}",
            m.outcome,
            m.reasons.first().cloned().unwrap_or_default()
        ));
    }
    let lib = m
        .libraries
        .iter()
        .find(|l| l.mapped_after_cuda_init == Some(true) && l.symbols.iter().any(|s| s.exported))
        .ok_or("no injected library is mapped and exports hooks")?;
    let hooks: Vec<&str> = lib
        .symbols
        .iter()
        .filter(|s| s.exported)
        .map(|s| s.name.as_str())
        .collect();
    let limits_mib: Vec<u64> = m
        .shared_region
        .region
        .as_ref()
        .map(|r| r.limits.iter().map(|l| l / (1024 * 1024)).collect())
        .unwrap_or_default();
    let oom_lines: usize = report.cap.as_ref().map_or(0, |c| {
        c.devices.iter().map(|d| d.hami_oom_lines.len()).sum()
    });
    Ok(json!({
        "library": lib.path,
        "injected_via": lib.named_in,
        "hooks": hooks,
        "shared_region": m.shared_region.path,
        "region_limits_mib": limits_mib,
        "hami_core_oom_lines": oom_lines,
    }))
}

pub async fn run(
    client: &Client,
    runner: &dyn Runner,
    ctx: &Ctx,
    args: &RunArgs,
) -> Result<Outcome, Failure> {
    let started_at = now_rfc3339();
    let s = api::snapshot(client, &ctx.namespace, &ctx.hami_namespace, ctx.api_timeout).await?;
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
    let rendered = lab_pods(&sizing, ctx, args).map_err(Failure::usage)?;
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
    let mut ex: Vec<Exercise> = CLAIMS.iter().map(|(id, c)| Exercise::new(id, c)).collect();
    if args.audit {
        ex.push(Exercise::new("A1", AUDIT_CLAIM));
    }
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
        run_exercises(client, ctx, args, &sizing, &rendered, &out, &mut ex).await?;
    } else {
        let why = format!(
            "not started: {}",
            blockers
                .iter()
                .map(|f| format!("{} ({})", f.what, f.fix))
                .collect::<Vec<_>>()
                .join("; ")
        );
        for e in &mut ex {
            e.set(ExerciseResult::NotRun, why.clone());
        }
    }
    // Capture.
    let version = client.apiserver_version().await.ok();
    write_json_or_warn(&out, "cluster/version.json", &version);
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    write_json_or_warn(&out, "cluster/nodes.json", &nodes);
    let hami_pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &ctx.hami_namespace)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("hami-"))
        })
        .collect();
    write_json_or_warn(&out, "cluster/hami-pods.json", &hami_pods);
    let events = Api::<Event>::namespaced(client.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    write_json_or_warn(&out, "cluster/events.json", &events);
    let daemonsets = Api::<DaemonSet>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    write_json_or_warn(&out, "cluster/daemonsets.json", &daemonsets);
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
        schema: SCHEMA,
        schema_version: SCHEMA_VERSION,
        started_at,
        finished_at: now_rfc3339(),
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
        slice_mib: sizing.slice_mib,
        oversubscribe_mib: sizing.oversubscribe_mib,
        exercises: ex,
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

async fn run_exercises(
    client: &Client,
    ctx: &Ctx,
    args: &RunArgs,
    sizing: &Sizing,
    rendered: &[manifests::RenderedPod],
    out: &OutDir,
    ex: &mut [Exercise],
) -> Result<(), Failure> {
    let pods_api = Api::<Pod>::namespaced(client.clone(), &ctx.namespace);
    // The probe reports of share pods A and B, for E5's look at the mechanism.
    let mut probe_reports: [Option<String>; 2] = [None, None];
    // E1
    for r in rendered
        .iter()
        .filter(|r| r.name != OVERSUBSCRIBE && r.name != BASELINE)
    {
        progress(&format!("creating pod {}", r.name));
        api::create_pod(&pods_api, &r.pod).await?;
    }
    let watcher = api::spawn_pull_progress(
        client.clone(),
        &ctx.namespace,
        vec![SHARE_A.to_owned(), SHARE_B.to_owned()],
        |line| eprintln!("  … {line}"),
    );
    progress("waiting for the share pods to be Ready");
    let ready = api::wait_pods_ready(&pods_api, &[SHARE_A, SHARE_B], args.pod_timeout).await;
    watcher.abort();
    ex[0].number("slice_mib", sizing.slice_mib);
    let pods = match ready {
        Ok(p) => p,
        Err(e) => {
            let fresh =
                api::snapshot(client, &ctx.namespace, &ctx.hami_namespace, ctx.api_timeout).await?;
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
            ex[0].set(
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
    };
    if let [a, b] = pods.as_slice() {
        let c = co_residency(a, b);
        ex[0].set(
            if c.pass {
                ExerciseResult::Pass
            } else {
                ExerciseResult::Fail
            },
            c.reason.clone(),
        );
        ex[0].numbers.insert("gpu_uuids".into(), json!(c.gpu_uuids));
        ex[0].numbers.insert("nodes".into(), json!(c.nodes));
        ex[0].evidence = vec![
            "cluster/events.json".into(),
            "manifests/hami-share-a.yaml".into(),
            "manifests/hami-share-b.yaml".into(),
        ];
        // E2, E3
        let probe_path = probe_binary(args);
        match std::fs::read(&probe_path) {
            Err(e) => {
                for i in [1, 2] {
                    ex[i].set(
                        ExerciseResult::NotRun,
                        format!(
                            "gpu-probe binary {} not readable ({e}); pass --probe-bin PATH",
                            probe_path.display()
                        ),
                    );
                }
            }
            Ok(bytes) => {
                for (i, pod) in [(1, SHARE_A), (2, SHARE_B)] {
                    progress(&format!("running gpu-probe in {pod}"));
                    match api::copy_and_run_probe(
                        client,
                        &ctx.namespace,
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
                                &format!("probe/{pod}.json"),
                                run.stdout.as_bytes(),
                            ));
                            evidence.extend(write_or_warn(
                                out,
                                &format!("probe/{pod}.stderr"),
                                run.stderr.as_bytes(),
                            ));
                            probe_exercise(&mut ex[i], pod, &run, sizing.slice_mib);
                            probe_reports[i - 1] = Some(run.stdout.clone());
                            ex[i].evidence = evidence;
                        }
                        Err(e) => ex[i].set(ExerciseResult::NotRun, e.to_string()),
                    }
                }
                if args.audit && ex.len() > 5 && ex[1].result != ExerciseResult::NotRun {
                    let baseline = rendered.iter().find(|r| r.name == BASELINE);
                    audit_share_a(
                        &AuditEnv {
                            client,
                            ctx,
                            args,
                            sizing,
                            out,
                            probe: &bytes,
                        },
                        baseline,
                        &mut ex[5],
                    )
                    .await;
                }
            }
        }
    } else if ex[0].result == ExerciseResult::NotRun {
        ex[0].set(ExerciseResult::Fail, "share pods did not become Ready");
    }
    // E4 needs the two slices in place, so it runs only after E1 passed.
    if ex[0].result == ExerciseResult::Pass {
        if let Some(r) = rendered.iter().find(|r| r.name == OVERSUBSCRIBE) {
            progress(&format!("creating pod {OVERSUBSCRIBE}"));
            api::create_pod(&pods_api, &r.pod).await?;
            let evidence =
                api::watch_oversubscribe(client, &ctx.namespace, OVERSUBSCRIBE, args.event_timeout)
                    .await?;
            let phase = api::pod_phase_now(&pods_api, OVERSUBSCRIBE).await?;
            ex[3].number("oversubscribe_mib", sizing.oversubscribe_mib);
            ex[3].number("card_mib", sizing.card.devmem_mib);
            ex[3].number(
                "free_beside_slices_mib",
                sizing.card.devmem_mib - 2 * sizing.slice_mib,
            );
            oversubscribe_exercise(&mut ex[3], &evidence, &phase);
            ex[3].evidence = vec![
                "cluster/events.json".into(),
                format!("manifests/{OVERSUBSCRIBE}.yaml"),
            ];
        }
    } else {
        ex[3].set(
            ExerciseResult::NotRun,
            "E1 did not pass, so the slices are not in place",
        );
    }
    let (e1, e2, e3) = (ex[0].clone(), ex[1].clone(), ex[2].clone());
    let reports: Vec<(&str, Option<&str>)> = [SHARE_A, SHARE_B]
        .iter()
        .zip(&probe_reports)
        .map(|(pod, r)| (*pod, r.as_deref()))
        .collect();
    mechanism_exercise(&mut ex[4], &e1, &e2, &e3, &reports);
    ex[4].number("slice_mib", sizing.slice_mib);
    if let Some(uuids) = e1.numbers.get("gpu_uuids") {
        ex[4].numbers.insert("gpu_uuids".into(), uuids.clone());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// doctor, probe, cleanup

/// Whether a gpu-probe report's view saw the full card on some device (pure).
pub fn shows_full_card(probe_json: &str) -> bool {
    serde_json::from_str::<gpu_probe::report::Report>(probe_json).is_ok_and(|r| {
        r.view.is_some_and(|v| {
            v.devices
                .iter()
                .any(|d| d.outcome == gpu_probe::report::ViewOutcome::ShowsFullCard)
        })
    })
}

/// `(pod, outcome)` of every `probe/*.json` in a run's output folder; the outcome is
/// `shows-full-card` when the probe's view saw the whole card, else the verdict's outcome.
pub fn probe_verdicts_from(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir.join("probe")) else {
        return Vec::new();
    };
    let mut v: Vec<(String, String)> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            if path.extension()? != "json" {
                return None;
            }
            let pod = path.file_stem()?.to_str()?.to_owned();
            let text = std::fs::read_to_string(&path).ok()?;
            // The view's own word wins: a full card seen from inside is its own diagnosis.
            if shows_full_card(&text) {
                return Some((pod, "shows-full-card".to_owned()));
            }
            Some((pod, probe_outcome(&text)?))
        })
        .collect();
    v.sort();
    v
}

pub async fn doctor(client: &Client, ctx: &Ctx, from: Option<&Path>) -> Result<Outcome, Failure> {
    let mut s = api::snapshot(client, &ctx.namespace, &ctx.hami_namespace, ctx.api_timeout).await?;
    if let Some(dir) = from {
        s.probe_verdicts = probe_verdicts_from(dir);
    }
    let findings = doctor::diagnose(&s);
    let problems = findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .count();
    let mut human = findings_text(&findings);
    human.push_str(&format!("doctor: {problems} problem(s)\n"));
    Ok(Outcome {
        exit: if problems == 0 {
            exit::OK
        } else {
            exit::CLAIM_FAILED
        },
        human,
        json: json!({"findings": findings}),
    })
}

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
    client: &Client,
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
    let api_pods = Api::<Pod>::namespaced(client.clone(), &ctx.namespace);
    let target = api_pods
        .get(pod)
        .await
        .map_err(|e| Failure::env(anyhow::anyhow!("pod {}/{pod}: {e}", ctx.namespace)))?;
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
    let run = api::copy_and_run_probe(
        client,
        &ctx.namespace,
        pod,
        container,
        &bytes,
        expect,
        timeout,
    )
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

pub async fn cleanup(
    client: &Client,
    runner: &dyn Runner,
    ctx: &Ctx,
    uninstall_hami: bool,
    timeout: Duration,
) -> Result<Outcome, Failure> {
    api::server_version(client, ctx.api_timeout).await?;
    let pods_api = Api::<Pod>::namespaced(client.clone(), &ctx.namespace);
    let existing = pods_api
        .list(&ListParams::default().labels(manifests::LAB_SELECTOR))
        .await
        .map_err(|e| Failure::env(anyhow::anyhow!("list lab pods: {e}")))?;
    let names: Vec<String> = existing
        .items
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
    // A HelmChart `hami` (k3s) is deleted, whoever installed it: helm alone would see the helm
    // controller install it again.
    let chart = if uninstall_hami {
        chart_install::uninstall_step(client, ctx).await?
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
            Some(_) => Some(lab_runner::Cmd::new("helm").args([
                "uninstall",
                helm::RELEASE,
                "--namespace",
                ctx.helm.namespace.as_str(),
            ])),
        }
    } else {
        None
    };
    let uninstall = uninstall.map(|c| {
        let mut c = c;
        if let Some(k) = &ctx.helm.kubeconfig {
            c = c.args(["--kubeconfig", k.as_str()]);
        }
        if let Some(x) = &ctx.helm.context {
            c = c.args(["--kube-context", x.as_str()]);
        }
        c
    });
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
    let deleted = api::delete_lab_pods(&pods_api, timeout).await?;
    if let Some(c) = &uninstall {
        runner.run_checked(c).map_err(Failure::env)?;
    }
    if chart.is_some() {
        chart_install::uninstall(client, timeout, ctx.api_timeout).await?;
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
