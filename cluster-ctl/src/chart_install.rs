//! The HelmChart path of `install-hami` and `cleanup --uninstall-hami`: k3s's helm controller
//! installs HAMi, so no helm binary is needed. The decisions are `helmchart`'s (pure); this
//! module reads what exists through `api`, applies the decided action and watches the
//! helm-install Job to its end, keeping its log. `commands` verifies the install the same way on
//! both paths afterwards.

use std::time::Duration;

use kube::Client;
use serde::Serialize;

pub use crate::helmchart::{Choice, Installer};

use crate::api::{self, ApiError};
use crate::commands::{Ctx, Failure, verify_steps};
use crate::helm::InstallOptions;
use crate::helmchart::{
    self, ChartAction, JOB_CONTAINER, JobState, KIND, NAME, NAMESPACE, delete_job, install_job,
};
use crate::plan::{Plan, Step};

/// Lines of the Job's log a failure message shows (all of it is in the JSON output).
const LOG_LINES_SHOWN: usize = 40;

fn progress(line: &str) {
    eprintln!("cluster-ctl: {line}");
}

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
pub async fn choose(client: &Client, ctx: &Ctx, git_version: &str) -> Result<Choice, Failure> {
    let served = api::crd_served(client, helmchart::CRD, ctx.api_timeout).await?;
    helmchart::choose(ctx.installer, git_version, served)
        .map_err(|e| Failure::usage(anyhow::anyhow!(e)))
}

/// The helm-install Job's log, best effort (a failure to read it is said in its place).
async fn log_of(client: &Client, job: &str, timeout: Duration) -> (Option<String>, String) {
    match api::job_log(client, NAMESPACE, job, JOB_CONTAINER, timeout).await {
        Ok(Some((pod, log))) => (Some(pod), log),
        Ok(None) => (None, format!("(Job {job} has no pod)")),
        Err(e) => (None, format!("(its log could not be read: {e})")),
    }
}

/// Plans and, unless `--dry-run`, applies the HelmChart path up to the end of its helm-install
/// Job. Returns the plan (verify steps included) and, after applying, the Job's report (None when
/// nothing had to change).
pub async fn install(
    client: &Client,
    ctx: &Ctx,
    opts: &InstallOptions,
    choice: &Choice,
    deadline: tokio::time::Instant,
) -> Result<(Plan, Option<JobReport>), Failure> {
    let t = ctx.api_timeout;
    let desired = helmchart::spec(opts, &ctx.hami_namespace).map_err(Failure::usage)?;
    let job_name = install_job(NAME);
    let existing = api::get_helmchart(client, NAMESPACE, NAME, t).await?;
    let job = api::get_job(client, NAMESPACE, &job_name, t).await?;
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
            let obj = helmchart::object(opts, &ctx.hami_namespace).map_err(Failure::usage)?;
            progress(&format!("creating {KIND} {NAMESPACE}/{NAME}"));
            api::create_helmchart(client, &obj, t).await?;
            job_uid
        }
        ChartAction::Update { changed } => {
            let spec = existing
                .as_ref()
                .map(|e| e["spec"].clone())
                .unwrap_or_default();
            progress(&format!(
                "updating {KIND} {NAMESPACE}/{NAME}: {}",
                changed.join(", ")
            ));
            api::patch_helmchart(
                client,
                NAMESPACE,
                NAME,
                &helmchart::spec_patch(&spec, &desired),
                t,
            )
            .await?;
            job_uid
        }
        ChartAction::RetryFailedJob { reason } => {
            progress(&format!(
                "deleting the failed Job {NAMESPACE}/{job_name} ({reason}) so the helm controller runs helm again"
            ));
            api::delete_job(client, NAMESPACE, &job_name, t).await?;
            job_uid
        }
        ChartAction::Watch => None,
    };
    progress(&format!(
        "watching Job {NAMESPACE}/{job_name} (helm runs in it)"
    ));
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let ended =
        api::wait_job_finished(client, NAMESPACE, &job_name, old_uid.as_deref(), left).await;
    match ended {
        Ok(Some(j)) => {
            let (pod, log) = log_of(client, &job_name, t).await;
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
                        job: job_name,
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
        Err(ApiError::Timeout { secs, .. }) => {
            let now = api::get_job(client, NAMESPACE, &job_name, t).await?;
            let fresh = now
                .as_ref()
                .filter(|j| j.metadata.uid.as_deref() != old_uid.as_deref());
            match fresh {
                None => Err(Failure::env(anyhow::anyhow!(
                    "no new Job {NAMESPACE}/{job_name} appeared within {secs} s: the helm controller did not act on {KIND} {NAME} (k3s started with --disable-helm-controller?); install with helm instead: --installer helm"
                ))),
                Some(j) => {
                    let (pod, log) = log_of(client, &job_name, t).await;
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
/// is what uninstalls).
pub async fn uninstall_step(client: &Client, ctx: &Ctx) -> Result<Option<Step>, Failure> {
    let exists = api::get_helmchart(client, NAMESPACE, NAME, ctx.api_timeout)
        .await?
        .is_some();
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
pub async fn uninstall(
    client: &Client,
    timeout: Duration,
    api_timeout: Duration,
) -> Result<(), Failure> {
    if !api::delete_helmchart(client, NAMESPACE, NAME, api_timeout).await? {
        return Ok(());
    }
    progress(&format!(
        "waiting for {KIND} {NAMESPACE}/{NAME} to be gone (helm uninstalls in Job {})",
        delete_job(NAME)
    ));
    match api::wait_helmchart_gone(client, NAMESPACE, NAME, timeout).await {
        Ok(()) => Ok(()),
        Err(ApiError::Timeout { secs, .. }) => {
            let job = delete_job(NAME);
            let state = api::get_job(client, NAMESPACE, &job, api_timeout).await?;
            let (pod, log) = log_of(client, &job, api_timeout).await;
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
