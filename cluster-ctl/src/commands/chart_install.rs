//! The HelmChart path of `install-hami` and `cleanup --uninstall-hami`: k3s's helm controller
//! installs HAMi, so no helm binary is needed. The decisions are `crate::helmchart`'s (pure); this
//! module reads what exists through `crate::api::Cluster`, applies the decided action and watches
//! the helm-install Job to its end, keeping its log. `install` verifies the install the same way
//! on both paths afterwards.

use std::time::Duration;

use serde::Serialize;

pub use crate::helmchart::{Choice, Installer};

use super::install::verify_steps;
use super::{Ctx, Failure};
use crate::api::{ApiError, Cluster};
use crate::helm::InstallOptions;
use crate::helmchart::{
    self, ChartAction, JOB_CONTAINER, JobState, KIND, NAME, NAMESPACE, delete_job, install_job,
};
use crate::plan::{Plan, Step};

/// Lines of the Job's log a failure message shows (all that was read is in the JSON output).
const LOG_LINES_SHOWN: usize = 40;
/// How often the log of the awaited Job is read while it runs: the Job controller terminates the
/// pod of a Job that failed (its pods restart in place, `restartPolicy: OnFailure`), and the log
/// goes with it, so the last one read is what a failure shows.
const LOG_SAMPLE: Duration = Duration::from_secs(10);

/// The helm-install Job as it ended, with its log.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub job: String,
    pub pod: Option<String>,
    pub state: JobState,
    pub log: String,
}

impl JobReport {
    /// One line for the human output.
    pub fn line(&self) -> String {
        format!(
            "ok   Job {NAMESPACE}/{} completed (helm ran in pod {})\n",
            self.job,
            self.pod.as_deref().unwrap_or("?")
        )
    }
}

/// Which installer for this cluster (`--installer`, the server version, the CRD), and why.
pub async fn choose(cluster: &Cluster, ctx: &Ctx, git_version: &str) -> Result<Choice, Failure> {
    let served = cluster.crd_served(helmchart::CRD).await?;
    helmchart::choose(ctx.installer, git_version, served)
        .map_err(|e| Failure::usage(anyhow::anyhow!(e)))
}

/// The helm Job's log, best effort (a failure to read it is said in its place); `seen` is the
/// last one read while it ran, for a Job whose pod is gone.
async fn log_of(
    cluster: &Cluster,
    job: &str,
    uid: Option<&str>,
    seen: Option<(String, String)>,
) -> (Option<String>, String) {
    match (
        cluster.job_log(NAMESPACE, job, JOB_CONTAINER, uid).await,
        seen,
    ) {
        (Ok(Some((pod, log))), _) if !log.trim().is_empty() => (Some(pod), log),
        (_, Some((pod, log))) => (
            Some(pod),
            format!("{log}(read while the Job ran; its pod is gone or its log empty now)"),
        ),
        (Ok(Some((pod, log))), None) => (Some(pod), log),
        (Ok(None), None) => (None, format!("(Job {job} has no pod)")),
        (Err(e), None) => (None, format!("(its log could not be read: {e})")),
    }
}

/// The log of the Job `job` now, when it is not the Job `old_uid` and has a pod that logged
/// something (best effort).
async fn sample_log(
    cluster: &Cluster,
    job: &str,
    old_uid: Option<&str>,
) -> Option<(String, String)> {
    let now = cluster
        .get_namespaced::<k8s_openapi::api::batch::v1::Job>(NAMESPACE, job)
        .await
        .ok()??;
    let uid = now
        .metadata
        .uid
        .as_deref()
        .filter(|u| Some(*u) != old_uid)?;
    let (pod, log) = cluster
        .job_log(NAMESPACE, job, JOB_CONTAINER, Some(uid))
        .await
        .ok()??;
    (!log.trim().is_empty()).then_some((pod, log))
}

/// Creates the HelmChart. A 409 is a HelmChart that appeared since it was looked for — this
/// create's own earlier attempt, retried after a lost answer, or someone else's: it is taken
/// when it has the spec asked for, else the install stops and says so.
async fn create(cluster: &Cluster, opts: &InstallOptions, ctx: &Ctx) -> Result<(), Failure> {
    let obj = helmchart::object(opts, &ctx.hami_namespace).map_err(Failure::usage)?;
    cluster.log(&format!("creating {KIND} {NAMESPACE}/{NAME}"));
    match cluster.create_helmchart(&obj).await {
        Ok(()) => Ok(()),
        Err(ApiError::Status { code: 409, .. }) => {
            let now = cluster.get_helmchart(NAMESPACE, NAME).await?;
            let changed = now
                .as_ref()
                .map(|n| helmchart::changed_keys(&n["spec"], &obj["spec"]))
                .unwrap_or_default();
            if now.is_some() && changed.is_empty() {
                Ok(())
            } else {
                Err(Failure::env(anyhow::anyhow!(
                    "{KIND} {NAMESPACE}/{NAME} was created by someone else while install-hami ran (its {} differ); run install-hami again",
                    changed.join(", ")
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Plans and, unless `--dry-run`, applies the HelmChart path up to the end of its helm-install
/// Job. Returns the plan (verify steps included) and, after applying, the Job's report (`None`
/// when nothing had to change).
pub async fn install(
    cluster: &Cluster,
    ctx: &Ctx,
    opts: &InstallOptions,
    choice: &Choice,
    deadline: tokio::time::Instant,
) -> Result<(Plan, Option<JobReport>), Failure> {
    let desired = helmchart::spec(opts, &ctx.hami_namespace).map_err(Failure::usage)?;
    let job_name = install_job(NAME);
    let existing = cluster.get_helmchart(NAMESPACE, NAME).await?;
    let job = cluster
        .get_namespaced::<k8s_openapi::api::batch::v1::Job>(NAMESPACE, &job_name)
        .await?;
    let action = helmchart::decide(existing.as_ref(), job.as_ref(), &desired);
    let mut plan = Plan::new("install-hami");
    for step in helmchart::plan_steps(choice, &action, &desired) {
        plan.push(step);
    }
    if action != ChartAction::BeingDeleted {
        for step in verify_steps() {
            plan.push(step);
        }
    }
    if ctx.dry_run {
        return Ok((plan, None));
    }
    let job_uid = job.as_ref().and_then(|j| j.metadata.uid.clone());
    // The Job whose end is awaited is a new one, except when the one there is still running.
    let old_uid = match &action {
        ChartAction::Nothing => return Ok((plan, None)),
        ChartAction::BeingDeleted => {
            return Err(Failure::env(anyhow::anyhow!(
                "{KIND} {NAMESPACE}/{NAME} is being deleted (its {} Job uninstalls the release): wait until `kubectl -n {NAMESPACE} get helmchart {NAME}` finds nothing, then run install-hami again",
                delete_job(NAME)
            )));
        }
        ChartAction::Create => {
            create(cluster, opts, ctx).await?;
            job_uid
        }
        ChartAction::Update { changed } => {
            let spec = existing
                .as_ref()
                .map(|e| e["spec"].clone())
                .unwrap_or_default();
            cluster.log(&format!(
                "updating {KIND} {NAMESPACE}/{NAME}: {}",
                changed.join(", ")
            ));
            cluster
                .patch_helmchart(NAMESPACE, NAME, &helmchart::spec_patch(&spec, &desired))
                .await?;
            job_uid
        }
        ChartAction::RetryFailedJob { reason } => {
            cluster.log(&format!(
                "deleting the failed Job {NAMESPACE}/{job_name} ({reason}) so the helm controller runs helm again"
            ));
            cluster.delete_job(NAMESPACE, &job_name).await?;
            job_uid
        }
        ChartAction::Watch => None,
    };
    cluster.log(&format!(
        "watching Job {NAMESPACE}/{job_name} (helm runs in it)"
    ));
    let wait = cluster.wait_job_finished(NAMESPACE, &job_name, old_uid.as_deref(), deadline);
    futures::pin_mut!(wait);
    let mut seen = None;
    let mut sample = tokio::time::interval(LOG_SAMPLE);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ended = loop {
        tokio::select! {
            r = &mut wait => break r,
            _ = sample.tick() => {
                if let Some(l) = sample_log(cluster, &job_name, old_uid.as_deref()).await {
                    seen = Some(l);
                }
            }
        }
    };
    match ended {
        Ok(Some(j)) => {
            let (pod, log) = log_of(cluster, &job_name, j.metadata.uid.as_deref(), seen).await;
            let state = helmchart::job_state(Some(&j));
            match &state {
                JobState::Failed { reason, message } => Err(Failure::env(anyhow::anyhow!(
                    "the helm controller's Job {NAMESPACE}/{job_name} failed ({reason}: {message}); helm's log (pod {}, last {LOG_LINES_SHOWN} lines):\n{}\nfix: the cause is in the log (a chart version that does not exist, the chart repository unreachable from the cluster, a bad --set); fix it and run install-hami again: it deletes the failed Job and the helm controller tries again",
                    pod.as_deref().unwrap_or("?"),
                    helmchart::log_tail(&log, LOG_LINES_SHOWN)
                ))),
                _ => Ok((
                    plan,
                    Some(JobReport {
                        job: job_name.clone(),
                        pod,
                        state,
                        log,
                    }),
                )),
            }
        }
        Ok(None) => Err(Failure::env(anyhow::anyhow!(
            "Job {NAMESPACE}/{job_name} disappeared while it was watched; run install-hami again"
        ))),
        Err(ApiError::WaitTimeout { secs, .. }) => {
            let now = cluster
                .get_namespaced::<k8s_openapi::api::batch::v1::Job>(NAMESPACE, &job_name)
                .await?;
            let fresh = now
                .as_ref()
                .filter(|j| j.metadata.uid.as_deref() != old_uid.as_deref());
            match fresh {
                None => Err(Failure::env(anyhow::anyhow!(
                    "no new Job {NAMESPACE}/{job_name} appeared within {secs} s: the helm controller did not act on {KIND} {NAME} (k3s started with --disable-helm-controller?); install with helm instead: --installer helm"
                ))),
                Some(j) => {
                    let (pod, log) =
                        log_of(cluster, &job_name, j.metadata.uid.as_deref(), seen).await;
                    Err(Failure::env(anyhow::anyhow!(
                        "Job {NAMESPACE}/{job_name} did not finish within {secs} s ({:?}); helm's log so far (pod {}):\n{}\nfix: wait and run install-hami again (it watches the same Job), or raise --wait-timeout",
                        helmchart::job_state(Some(j)),
                        pod.as_deref().unwrap_or("?"),
                        helmchart::log_tail(&log, LOG_LINES_SHOWN)
                    )))
                }
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The plan step of `cleanup --uninstall-hami` when a HelmChart `hami` exists (then it, not helm,
/// is what uninstalls). A cluster that serves no HelmChart has none.
pub async fn uninstall_step(cluster: &Cluster) -> Result<Option<Step>, Failure> {
    let exists = cluster.get_helmchart(NAMESPACE, NAME).await?.is_some();
    Ok(exists.then(|| {
        Step::new(
            "uninstall-hami",
            format!("delete {KIND} {NAMESPACE}/{NAME}; watch until it is gone"),
            format!(
                "--uninstall-hami was given: k3s's helm controller uninstalls the release in Job {} before the {KIND} goes",
                delete_job(NAME)
            ),
        )
    }))
}

/// Deletes the HelmChart and watches until the helm controller has uninstalled the release and
/// let it go; on a timeout the helm-delete Job's log says why.
pub async fn uninstall(cluster: &Cluster, timeout: Duration) -> Result<(), Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    if !cluster.delete_helmchart(NAMESPACE, NAME).await? {
        return Ok(());
    }
    cluster.log(&format!(
        "waiting for {KIND} {NAMESPACE}/{NAME} to be gone (helm uninstalls in Job {})",
        delete_job(NAME)
    ));
    match cluster.wait_helmchart_gone(NAMESPACE, NAME, deadline).await {
        Ok(()) => Ok(()),
        Err(ApiError::WaitTimeout { secs, .. }) => {
            let job = delete_job(NAME);
            let state = cluster
                .get_namespaced::<k8s_openapi::api::batch::v1::Job>(NAMESPACE, &job)
                .await?;
            let uid = state.as_ref().and_then(|j| j.metadata.uid.clone());
            let (pod, log) = log_of(cluster, &job, uid.as_deref(), None).await;
            Err(Failure::env(anyhow::anyhow!(
                "{KIND} {NAMESPACE}/{NAME} is still there after {secs} s; Job {job}: {:?}; its log (pod {}):\n{}\nfix: read the log; run cleanup --uninstall-hami again, or raise --timeout",
                helmchart::job_state(state.as_ref()),
                pod.as_deref().unwrap_or("?"),
                helmchart::log_tail(&log, LOG_LINES_SHOWN)
            )))
        }
        Err(e) => Err(e.into()),
    }
}
