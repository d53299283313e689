//! HAMi through k3s's own helm controller: a `helm.cattle.io/v1` HelmChart, so a k3s cluster needs
//! no helm binary.
//!
//! k3s runs helm-controller (k3s-io/helm-controller) for HelmChart objects in `kube-system`. For
//! a HelmChart `hami` it creates the Job `helm-install-hami` (`helm-delete-hami` while the
//! HelmChart is being deleted), whose pod runs klipper-helm: `helm install`/`upgrade` of
//! `spec.chart` from `spec.repo` at `spec.version` into `spec.targetNamespace`, each `spec.set`
//! entry passed as `--set` (ints, booleans, null) or `--set-string` (the rest). The Job ends with
//! the condition `Complete` or, after `spec.backOffLimit` retries, `Failed`. When the spec changes
//! the controller replaces the Job (a new uid). klipper-helm also clears a stuck release: a
//! `pending-*` release is set to `failed`, and a `failed` one is uninstalled and installed again
//! (`failurePolicy: reinstall`), the same recovery `helm` gets from cluster-ctl on other clusters.
//! (helm-controller `pkg/controllers/chart/chart.go`, klipper-helm `entry`, both at their July 2026
//! heads; k3s docs `docs/helm/helm.md`.)
//!
//! Everything here is pure: which installer and why ([`choose`]), the object ([`object`]), what
//! to do given what exists ([`decide`]), the patch ([`spec_patch`]), the Job's state
//! ([`job_state`], [`finished_job`]) and the plan steps. `api` fetches and writes; `commands` and
//! `chart_install` tie them together.

use k8s_openapi::api::batch::v1::Job;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::helm::{self, HelmError, InstallOptions};
use crate::plan::Step;

pub const API_VERSION: &str = "helm.cattle.io/v1";
pub const GROUP: &str = "helm.cattle.io";
pub const VERSION: &str = "v1";
pub const KIND: &str = "HelmChart";
pub const PLURAL: &str = "helmcharts";
/// The CRD k3s registers; served means the helm controller's objects exist on this cluster.
pub const CRD: &str = "helmcharts.helm.cattle.io";
/// k3s's helm controller manages HelmCharts in its system namespace only; the chart's objects go
/// to `spec.targetNamespace`.
pub const NAMESPACE: &str = "kube-system";
/// The HelmChart's name, which is also helm's release name.
pub const NAME: &str = helm::RELEASE;
/// Retries before the Job is `Failed` (the controller's default is 1000: a broken install would
/// retry for hours before anyone saw its log).
pub const BACKOFF_LIMIT: i64 = 4;
/// A failed release is uninstalled and installed again (the controller's default, said out loud
/// so a HelmChartConfig is the only thing that changes it).
pub const FAILURE_POLICY: &str = "reinstall";
/// The container of the Job's pod that runs helm.
pub const JOB_CONTAINER: &str = "helm";
/// Labels the Job controller puts on a Job's pods (the second before Kubernetes 1.27).
pub const JOB_POD_LABELS: [&str; 2] = ["batch.kubernetes.io/job-name", "job-name"];
/// Marks the HelmChart as cluster-ctl's.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "cluster-ctl");

/// `helm-install-<name>`.
pub fn install_job(name: &str) -> String {
    format!("helm-install-{name}")
}

/// `helm-delete-<name>`: runs while the HelmChart is being deleted.
pub fn delete_job(name: &str) -> String {
    format!("helm-delete-{name}")
}

/// `--installer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum InstallerChoice {
    /// k3s's HelmChart on k3s, helm elsewhere.
    #[default]
    Auto,
    Helm,
    HelmChart,
}

/// The installer that will be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Installer {
    Helm,
    HelmChart,
}

/// The installer and why (printed first in the plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    pub installer: Installer,
    pub why: String,
}

/// The server is k3s (`v1.33.5+k3s1`).
pub fn is_k3s(git_version: &str) -> bool {
    git_version.contains("+k3s")
}

/// Pure: which installer. Errs when `--installer helm-chart` is asked on a cluster that serves
/// no HelmChart.
pub fn choose(
    asked: InstallerChoice,
    git_version: &str,
    crd_served: bool,
) -> Result<Choice, String> {
    let chart = |why: String| Choice {
        installer: Installer::HelmChart,
        why,
    };
    let helm = |why: String| Choice {
        installer: Installer::Helm,
        why,
    };
    match asked {
        InstallerChoice::Helm => Ok(helm("--installer helm: `helm upgrade --install`".into())),
        InstallerChoice::HelmChart if crd_served => Ok(chart(format!(
            "--installer helm-chart: a {API_VERSION} {KIND} that the cluster's helm controller installs (no helm binary)"
        ))),
        InstallerChoice::HelmChart => Err(format!(
            "--installer helm-chart, but this cluster ({git_version}) serves no {CRD}: only k3s and RKE2 have the helm controller; use --installer helm"
        )),
        InstallerChoice::Auto if crd_served && is_k3s(git_version) => Ok(chart(format!(
            "the server is k3s ({git_version}) and serves {API_VERSION} {KIND}: k3s's helm controller installs the chart, so no helm binary is needed (--installer helm to use helm instead)"
        ))),
        InstallerChoice::Auto if is_k3s(git_version) => Ok(helm(format!(
            "the server is k3s ({git_version}) but serves no {CRD} (started with --disable-helm-controller?): `helm upgrade --install`"
        ))),
        InstallerChoice::Auto => Ok(helm(format!(
            "the server ({git_version}) is not k3s: `helm upgrade --install` (--installer helm-chart where a helm controller runs)"
        ))),
    }
}

/// What went wrong building the HelmChart.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("--set {0:?} is not KEY=VALUE")]
    BadSet(String),
    #[error(transparent)]
    Helm(#[from] HelmError),
}

/// A `--set` value as the HelmChart's `set` map holds it: integers as numbers, so the controller
/// passes them with `--set` (typed) like helm's own `--set` does; everything else as a string
/// (booleans and null the controller also passes typed).
fn set_value(v: &str) -> Value {
    // Only the canonical decimal form: `010` or `+1` stay strings, as helm keeps them.
    match v.parse::<i32>() {
        Ok(n) if n.to_string() == v => json!(n),
        _ => json!(v),
    }
}

/// The `set` map: the scheduler image values (as for helm) then the user's `--set`.
pub fn set_map(opts: &InstallOptions) -> Result<Map<String, Value>, ChartError> {
    let mut sets = helm::scheduler_image_sets(opts)?;
    sets.extend(opts.extra_set.iter().cloned());
    let mut map = Map::new();
    for s in &sets {
        let (k, v) = s
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| ChartError::BadSet(s.clone()))?;
        map.insert(k.to_owned(), set_value(v));
    }
    Ok(map)
}

/// The spec cluster-ctl manages: chart, repo, version, target namespace, values, failure policy
/// and retries.
pub fn spec(opts: &InstallOptions, target_namespace: &str) -> Result<Value, ChartError> {
    Ok(json!({
        "chart": helm::CHART,
        "repo": helm::REPO_URL,
        "version": opts.chart_version,
        "targetNamespace": target_namespace,
        "set": set_map(opts)?,
        "failurePolicy": FAILURE_POLICY,
        "backOffLimit": BACKOFF_LIMIT,
    }))
}

/// The whole HelmChart object.
pub fn object(opts: &InstallOptions, target_namespace: &str) -> Result<Value, ChartError> {
    Ok(json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {MANAGED_BY.0: MANAGED_BY.1},
        },
        "spec": spec(opts, target_namespace)?,
    }))
}

/// `1` and `"1"` are the same value to helm's `--set`.
fn same_value(a: &Value, b: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text(a) == text(b)
}

/// The spec keys whose value differs from `desired` (keys cluster-ctl does not set, such as the
/// defaults the API server fills in, are not compared).
pub fn changed_keys(existing_spec: &Value, desired: &Value) -> Vec<String> {
    let Some(want) = desired.as_object() else {
        return Vec::new();
    };
    want.iter()
        .filter(|(k, v)| {
            let have = &existing_spec[k.as_str()];
            if k.as_str() == "set" {
                let (Some(h), Some(w)) = (have.as_object(), v.as_object()) else {
                    return !(have.is_null() && v.as_object().is_some_and(Map::is_empty));
                };
                h.len() != w.len()
                    || w.iter()
                        .any(|(wk, wv)| h.get(wk).is_none_or(|hv| !same_value(hv, wv)))
            } else {
                !same_value(have, v) || have.is_null()
            }
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// The JSON merge patch (RFC 7386) that turns the existing spec into the desired one: changed
/// keys set, `set` entries no longer wanted set to null (removed). No resourceVersion is needed,
/// so the controller's own updates of the object cannot make it conflict.
pub fn spec_patch(existing_spec: &Value, desired: &Value) -> Value {
    let mut spec = Map::new();
    for k in changed_keys(existing_spec, desired) {
        let want = desired[k.as_str()].clone();
        if k == "set" {
            let mut set = want.as_object().cloned().unwrap_or_default();
            if let Some(have) = existing_spec["set"].as_object() {
                for old in have
                    .keys()
                    .filter(|o| !set.contains_key(*o))
                    .cloned()
                    .collect::<Vec<_>>()
                {
                    set.insert(old, Value::Null);
                }
            }
            spec.insert(k, Value::Object(set));
        } else {
            spec.insert(k, want);
        }
    }
    json!({"metadata": {"labels": {MANAGED_BY.0: MANAGED_BY.1}}, "spec": spec})
}

/// Where a helm-install Job is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum JobState {
    Absent,
    Running { failed_pods: i32 },
    Succeeded,
    Failed { reason: String, message: String },
}

/// Pure: the Job's state from its conditions (`Complete`/`Failed` with status True end it).
pub fn job_state(job: Option<&Job>) -> JobState {
    let Some(job) = job else {
        return JobState::Absent;
    };
    let status = job.status.as_ref();
    for c in status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        if c.status == "True" {
            match c.type_.as_str() {
                "Complete" => return JobState::Succeeded,
                "Failed" => {
                    return JobState::Failed {
                        reason: c.reason.clone().unwrap_or_default(),
                        message: c.message.clone().unwrap_or_default(),
                    };
                }
                _ => {}
            }
        }
    }
    JobState::Running {
        failed_pods: status.and_then(|s| s.failed).unwrap_or(0),
    }
}

/// The wait predicate: a Job other than the one seen before the change (`old_uid`) has finished.
pub fn finished_job(job: Option<&Job>, old_uid: Option<&str>) -> bool {
    job.is_some_and(|j| {
        j.metadata.uid.as_deref() != old_uid
            && matches!(
                job_state(Some(j)),
                JobState::Succeeded | JobState::Failed { .. }
            )
    })
}

/// What install-hami does on the HelmChart path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum ChartAction {
    Create,
    /// The spec differs in these keys: patch it; the controller replaces the Job.
    Update {
        changed: Vec<String>,
    },
    /// Same spec, the Job has not finished (an earlier install-hami stopped watching): watch it.
    Watch,
    /// Same spec, the Job failed: delete it, so the controller runs a new one.
    RetryFailedJob {
        reason: String,
    },
    /// Same spec, the Job completed: nothing to change.
    Nothing,
    /// The HelmChart is being deleted (a cleanup still running): nothing can be done now.
    BeingDeleted,
}

/// Pure: the action, given the existing HelmChart (its JSON) and its install Job.
pub fn decide(existing: Option<&Value>, job: Option<&Job>, desired_spec: &Value) -> ChartAction {
    let Some(existing) = existing else {
        return ChartAction::Create;
    };
    if !existing["metadata"]["deletionTimestamp"].is_null() {
        return ChartAction::BeingDeleted;
    }
    let changed = changed_keys(&existing["spec"], desired_spec);
    if !changed.is_empty() {
        return ChartAction::Update { changed };
    }
    match job_state(job) {
        JobState::Succeeded => ChartAction::Nothing,
        JobState::Failed { reason, .. } => ChartAction::RetryFailedJob { reason },
        JobState::Absent | JobState::Running { .. } => ChartAction::Watch,
    }
}

fn describe(spec: &Value) -> String {
    let set: Vec<String> = spec["set"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "chart {} {} from {} into namespace {}, failurePolicy {}, backOffLimit {}, set {}",
        spec["chart"].as_str().unwrap_or_default(),
        spec["version"].as_str().unwrap_or_default(),
        spec["repo"].as_str().unwrap_or_default(),
        spec["targetNamespace"].as_str().unwrap_or_default(),
        spec["failurePolicy"].as_str().unwrap_or_default(),
        spec["backOffLimit"],
        if set.is_empty() {
            "nothing".to_owned()
        } else {
            set.join(" ")
        }
    )
}

/// The plan steps of the HelmChart path (the installer step first; the verify steps follow).
pub fn plan_steps(choice: &Choice, action: &ChartAction, desired_spec: &Value) -> Vec<Step> {
    let job = install_job(NAME);
    let mut steps = vec![Step::new(
        "installer",
        format!("{API_VERSION} {KIND} {NAMESPACE}/{NAME}"),
        choice.why.clone(),
    )];
    let wait = Step::new(
        "wait-helm-install-job",
        format!("watch Job {NAMESPACE}/{job} until Complete or Failed; keep its log"),
        "the helm controller runs helm in that Job: its end is the install's end, and its log says why it failed",
    );
    match action {
        ChartAction::Create => {
            steps.push(Step::new(
                "create-helmchart",
                format!("create {KIND} {NAMESPACE}/{NAME}: {}", describe(desired_spec)),
                format!("no {KIND} {NAME} yet: the helm controller installs the release from it"),
            ));
            steps.push(wait);
        }
        ChartAction::Update { changed } => {
            steps.push(Step::new(
                "update-helmchart",
                format!(
                    "merge-patch {KIND} {NAMESPACE}/{NAME} ({}): {}",
                    changed.join(", "),
                    describe(desired_spec)
                ),
                "its spec differs: the helm controller replaces the Job and upgrades the release",
            ));
            steps.push(wait);
        }
        ChartAction::Watch => {
            steps.push(Step::new(
                "watch-running-job",
                "none",
                format!("{KIND} {NAME} already has this spec and its Job has not finished: watch it"),
            ));
            steps.push(wait);
        }
        ChartAction::RetryFailedJob { reason } => {
            steps.push(Step::new(
                "clear-failed-job",
                format!("delete Job {NAMESPACE}/{job} (and its pods)"),
                format!(
                    "its last install failed ({reason}): the helm controller runs a new Job, whose helm resets a stuck release and uninstalls and reinstalls a failed one (failurePolicy {FAILURE_POLICY})"
                ),
            ));
            steps.push(wait);
        }
        ChartAction::Nothing => steps.push(Step::new(
            "already-installed",
            "none",
            format!(
                "{KIND} {NAME} has chart {} and the same values, and Job {job} completed: nothing to change",
                desired_spec["version"].as_str().unwrap_or_default()
            ),
        )),
        ChartAction::BeingDeleted => steps.push(Step::new(
            "being-deleted",
            "none",
            format!("{KIND} {NAME} is being deleted (its {} Job uninstalls the release): wait for it, then run install-hami again", delete_job(NAME)),
        )),
    }
    steps
}

/// The last `n` lines of a log (what a failure message shows).
pub fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(uid: &str, conditions: Value, failed: i32) -> Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "helm-install-hami", "namespace": "kube-system", "uid": uid,
                         "labels": {"helmcharts.helm.cattle.io/chart": "hami"}},
            "status": {"conditions": conditions, "failed": failed}
        }))
        .unwrap()
    }

    fn complete(uid: &str) -> Job {
        job(uid, json!([{"type": "Complete", "status": "True"}]), 0)
    }

    fn failed(uid: &str) -> Job {
        job(
            uid,
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]),
            0,
        )
    }

    #[test]
    fn auto_picks_the_helmchart_on_k3s_only() {
        let k3s = choose(InstallerChoice::Auto, "v1.33.5+k3s1", true).unwrap();
        assert_eq!(k3s.installer, Installer::HelmChart);
        assert!(k3s.why.contains("no helm binary"), "{}", k3s.why);
        let kind = choose(InstallerChoice::Auto, "v1.33.1", false).unwrap();
        assert_eq!(kind.installer, Installer::Helm);
        assert!(kind.why.contains("not k3s"), "{}", kind.why);
        // RKE2 serves the CRD but is "another cluster": helm, unless asked.
        assert_eq!(
            choose(InstallerChoice::Auto, "v1.33.5+rke2r1", true)
                .unwrap()
                .installer,
            Installer::Helm
        );
        assert_eq!(
            choose(InstallerChoice::HelmChart, "v1.33.5+rke2r1", true)
                .unwrap()
                .installer,
            Installer::HelmChart
        );
        let disabled = choose(InstallerChoice::Auto, "v1.33.5+k3s1", false).unwrap();
        assert_eq!(disabled.installer, Installer::Helm);
        assert!(
            disabled.why.contains("--disable-helm-controller"),
            "{}",
            disabled.why
        );
        assert!(
            choose(InstallerChoice::HelmChart, "v1.33.1", false)
                .unwrap_err()
                .contains("--installer helm")
        );
        assert_eq!(
            choose(InstallerChoice::Helm, "v1.33.5+k3s1", true)
                .unwrap()
                .installer,
            Installer::Helm
        );
    }

    #[test]
    fn the_object_carries_chart_version_repo_and_values_as_today() {
        let opts = InstallOptions {
            extra_set: vec![
                "devicePlugin.runtimeClassName=nvidia".into(),
                "scheduler.replicas=2".into(),
                "scheduler.leaderElect=false".into(),
                "devicePlugin.deviceSplitCount=010".into(),
            ],
            ..InstallOptions::default()
        };
        let obj = object(&opts, "kube-system").unwrap();
        assert_eq!(obj["apiVersion"], "helm.cattle.io/v1");
        assert_eq!(obj["kind"], "HelmChart");
        assert_eq!(obj["metadata"]["namespace"], "kube-system");
        assert_eq!(obj["metadata"]["name"], "hami");
        let got = &obj["spec"];
        assert_eq!(got["chart"], "hami");
        assert_eq!(got["repo"], "https://project-hami.github.io/HAMi/");
        assert_eq!(got["version"], "2.10.0");
        assert_eq!(got["targetNamespace"], "kube-system");
        assert_eq!(got["failurePolicy"], "reinstall");
        assert_eq!(got["backOffLimit"], 4);
        assert_eq!(
            got["set"],
            json!({
                "scheduler.kubeScheduler.image.registry": "registry.k8s.io",
                "scheduler.kubeScheduler.image.repository": "kube-scheduler",
                "devicePlugin.runtimeClassName": "nvidia",
                "scheduler.replicas": 2,
                "scheduler.leaderElect": "false",
                "devicePlugin.deviceSplitCount": "010"
            })
        );
        let old = InstallOptions {
            chart_version: "2.6.1".into(),
            scheduler_tag: Some("v1.31.4".into()),
            ..InstallOptions::default()
        };
        assert_eq!(
            spec_of(&old)["set"],
            json!({"scheduler.kubeScheduler.image": "registry.k8s.io/kube-scheduler", "scheduler.kubeScheduler.imageTag": "v1.31.4"})
        );
        let bad = InstallOptions {
            extra_set: vec!["novalue".into()],
            ..InstallOptions::default()
        };
        assert!(matches!(
            spec(&bad, "kube-system"),
            Err(ChartError::BadSet(_))
        ));
        let bad_version = InstallOptions {
            chart_version: "latest".into(),
            ..InstallOptions::default()
        };
        assert!(matches!(
            spec(&bad_version, "kube-system"),
            Err(ChartError::Helm(_))
        ));
    }

    fn spec_of(opts: &InstallOptions) -> Value {
        spec(opts, "kube-system").unwrap()
    }

    /// A HelmChart as the API server returns it after the controller saw it: defaults filled in,
    /// status and annotations set.
    fn existing(spec: Value) -> Value {
        let mut spec = spec;
        spec["driver"] = json!("secret");
        json!({
            "apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
            "metadata": {"name": "hami", "namespace": "kube-system", "resourceVersion": "812",
                         "annotations": {"helmcharts.cattle.io/managed-by": "helm-controller"}},
            "spec": spec,
            "status": {"jobName": "helm-install-hami",
                       "conditions": [{"type": "JobCreated", "status": "True"}, {"type": "Failed", "status": "False"}]}
        })
    }

    #[test]
    fn decide_covers_create_update_watch_retry_and_nothing() {
        let want = spec_of(&InstallOptions::default());
        assert_eq!(decide(None, None, &want), ChartAction::Create);
        let same = existing(want.clone());
        assert_eq!(
            decide(Some(&same), Some(&complete("u1")), &want),
            ChartAction::Nothing
        );
        assert_eq!(decide(Some(&same), None, &want), ChartAction::Watch);
        assert_eq!(
            decide(Some(&same), Some(&job("u1", json!([]), 1)), &want),
            ChartAction::Watch
        );
        assert_eq!(
            decide(Some(&same), Some(&failed("u1")), &want),
            ChartAction::RetryFailedJob {
                reason: "BackoffLimitExceeded".into()
            }
        );
        let newer = spec_of(&InstallOptions {
            chart_version: "2.11.0".into(),
            extra_set: vec!["devicePlugin.runtimeClassName=nvidia".into()],
            ..InstallOptions::default()
        });
        assert_eq!(
            decide(Some(&same), Some(&complete("u1")), &newer),
            ChartAction::Update {
                changed: vec!["set".into(), "version".into()]
            }
        );
        let mut deleting = same.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-01T10:00:00Z");
        assert_eq!(
            decide(Some(&deleting), None, &want),
            ChartAction::BeingDeleted
        );
        // A number the API server gives back as a number still equals our number.
        let with_int = spec_of(&InstallOptions {
            extra_set: vec!["scheduler.replicas=2".into()],
            ..InstallOptions::default()
        });
        let mut stringly = with_int.clone();
        stringly["set"]["scheduler.replicas"] = json!("2");
        assert!(changed_keys(&stringly, &with_int).is_empty());
    }

    #[test]
    fn the_patch_removes_values_no_longer_set_and_leaves_defaults_alone() {
        let before = existing(spec_of(&InstallOptions {
            extra_set: vec!["devicePlugin.runtimeClassName=nvidia".into()],
            ..InstallOptions::default()
        }));
        let want = spec_of(&InstallOptions {
            chart_version: "2.11.0".into(),
            ..InstallOptions::default()
        });
        let patch = spec_patch(&before["spec"], &want);
        assert_eq!(patch["spec"]["version"], "2.11.0");
        assert_eq!(
            patch["spec"]["set"]["devicePlugin.runtimeClassName"],
            Value::Null
        );
        assert_eq!(
            patch["spec"]["set"]["scheduler.kubeScheduler.image.registry"],
            "registry.k8s.io"
        );
        assert!(patch["spec"].get("driver").is_none(), "{patch}");
        assert!(
            patch["spec"].get("chart").is_none(),
            "unchanged keys stay out: {patch}"
        );
        assert!(patch["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn job_states_and_the_wait_predicate() {
        assert_eq!(job_state(None), JobState::Absent);
        assert_eq!(job_state(Some(&complete("u"))), JobState::Succeeded);
        assert!(
            matches!(job_state(Some(&failed("u"))), JobState::Failed { reason, .. } if reason == "BackoffLimitExceeded")
        );
        // Kubernetes ≥ 1.31 first adds SuccessCriteriaMet / FailureTarget: not the end yet.
        let almost = job("u", json!([{"type": "FailureTarget", "status": "True"}]), 4);
        assert_eq!(
            job_state(Some(&almost)),
            JobState::Running { failed_pods: 4 }
        );
        let suspended = job("u", json!([{"type": "Suspended", "status": "True"}]), 0);
        assert!(!finished_job(Some(&suspended), None));
        assert!(finished_job(Some(&complete("new")), None));
        assert!(finished_job(Some(&complete("new")), Some("old")));
        // The Job from before the change finished long ago: not the answer.
        assert!(!finished_job(Some(&complete("old")), Some("old")));
        assert!(!finished_job(None, Some("old")));
        assert!(finished_job(Some(&failed("new")), Some("old")));
    }

    #[test]
    fn the_plan_says_the_choice_and_each_step() {
        let choice = choose(InstallerChoice::Auto, "v1.33.5+k3s1", true).unwrap();
        let want = spec_of(&InstallOptions::default());
        let steps = plan_steps(&choice, &ChartAction::Create, &want);
        let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            ["installer", "create-helmchart", "wait-helm-install-job"]
        );
        assert_eq!(
            steps[0].action,
            "helm.cattle.io/v1 HelmChart kube-system/hami"
        );
        assert!(steps[0].why.contains("k3s"));
        assert!(
            steps[1].action.contains("chart hami 2.10.0 from https://project-hami.github.io/HAMi/ into namespace kube-system"),
            "{}",
            steps[1].action
        );
        assert!(
            steps[1]
                .action
                .contains("scheduler.kubeScheduler.image.registry=registry.k8s.io")
        );
        assert!(
            steps[2]
                .action
                .contains("Job kube-system/helm-install-hami")
        );
        let retry = plan_steps(
            &choice,
            &ChartAction::RetryFailedJob {
                reason: "BackoffLimitExceeded".into(),
            },
            &want,
        );
        assert_eq!(retry[1].id, "clear-failed-job");
        assert!(retry[1].why.contains("reinstalls a failed one"));
        let nothing = plan_steps(&choice, &ChartAction::Nothing, &want);
        assert_eq!(
            nothing.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["installer", "already-installed"]
        );
    }

    #[test]
    fn names_and_log_tails() {
        assert_eq!(install_job("hami"), "helm-install-hami");
        assert_eq!(delete_job("hami"), "helm-delete-hami");
        assert_eq!(log_tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(log_tail("", 5), "");
    }

    proptest::proptest! {
        #[test]
        fn comparing_any_spec_never_panics(s in ".{0,60}", k in "[a-z.]{1,12}") {
            let want = spec_of(&InstallOptions::default());
            let odd = json!({"set": {k.clone(): s.clone()}, "version": s.clone(), "chart": 3});
            let _ = changed_keys(&odd, &want);
            let _ = spec_patch(&odd, &want);
            let _ = decide(Some(&json!({"spec": s, "metadata": {"deletionTimestamp": null}})), None, &want);
            let _ = set_value(&k);
        }
    }
}
