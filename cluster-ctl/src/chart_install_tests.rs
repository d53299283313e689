//! Mock-level tests of both install paths of `install-hami` and `cleanup --uninstall-hami`.
//!
//! The HelmChart path runs against the mock API server (`mockapi`) with k3s's helm controller
//! simulated in front of it ([`K3s`]): the HelmChart CRD is served; creating or patching
//! HelmChart `kube-system/hami`, or deleting a failed `helm-install-hami` Job, makes the
//! "controller" put a new Job `helm-install-hami` (a new uid) that ends as scripted — condition
//! `Complete`, or `Failed`/`BackoffLimitExceeded` — with a pod labelled
//! `batch.kubernetes.io/job-name=helm-install-hami` whose container `helm` has the scripted log
//! (served on `GET …/pods/NAME/log`). Deleting the HelmChart removes it (the finalizer's
//! uninstall succeeded) or, when scripted, leaves it with a deletionTimestamp and a failed
//! `helm-delete-hami` Job with its log. Job names, labels, conditions and the container name are
//! helm-controller's (`pkg/controllers/chart/chart.go` at 21a911f); the logs are constructed from
//! klipper-helm's `entry` script and helm's own error text. The HAMi objects the verify step
//! watches come from the shared fixtures, as in `commands_tests`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use lab_runner::RecordingRunner;
use serde_json::{Value, json};

use crate::commands::{Ctx, cleanup, exit, install_hami, preflight};
use crate::helm::{HelmTarget, InstallOptions};
use crate::helmchart::InstallerChoice;
use crate::mockapi::{MockApi, percent_decode};

const CHARTS: &str = "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts";
const JOBS: &str = "/apis/batch/v1/namespaces/kube-system/jobs";

/// How a helm-install Job the controller runs ends.
#[derive(Debug, Clone)]
enum End {
    Complete(&'static str),
    Failed(&'static str),
}

#[derive(Debug, Default)]
struct Controller {
    /// How the next Jobs end (the last one repeats).
    ends: VecDeque<End>,
    runs: u32,
    /// Pod name → its log.
    logs: Vec<(String, String)>,
    /// The helm controller does not run (k3s --disable-helm-controller).
    disabled: bool,
    /// Uninstalling fails: the HelmChart stays with a failed helm-delete Job.
    uninstall_fails: bool,
    /// `GET /version` answers this gitVersion instead of the fixture's.
    git_version: Option<String>,
}

/// The mock API server with a simulated k3s helm controller in front of it.
#[derive(Debug, Clone)]
struct K3s {
    api: MockApi,
    ctl: Arc<Mutex<Controller>>,
}

const INSTALL_LOG: &str = "+ helm_update install --namespace kube-system --version 2.10.0 --set-string scheduler.kubeScheduler.image.registry=registry.k8s.io --set-string scheduler.kubeScheduler.image.repository=kube-scheduler\nInstalling helm chart\nNAME: hami\nLAST DEPLOYED: Tue Dec  1 10:00:00 2026\nNAMESPACE: kube-system\nSTATUS: deployed\nREVISION: 1\n";
const FAILED_LOG: &str = "+ helm_update install --namespace kube-system --version 9.9.9\nInstalling helm chart\nError: chart \"hami\" version \"9.9.9\" not found in https://project-hami.github.io/HAMi/ repository\n";
const UNINSTALL_LOG: &str = "Uninstalling helm chart\nError: uninstallation completed with 1 error(s): context deadline exceeded\n";

fn respond(code: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = code;
    r
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (k, v) in p {
        if v.is_null() {
            if let Some(t) = target.as_object_mut() {
                t.remove(k);
            }
        } else {
            merge_patch(&mut target[k.as_str()], v);
        }
    }
}

impl K3s {
    /// A k3s node with HAMi's objects healthy and the HelmChart CRD served.
    fn new() -> Self {
        let api = MockApi::new();
        api.add_fixture("node-hami-v2.10-h100.json")
            .add_fixture("daemonsets-hami-only.json")
            .add_fixture("deploy-hami-scheduler-tag-match.json")
            .add_fixture("endpoints-hami-scheduler-ready.json")
            .add(json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "helmcharts.helm.cattle.io"},
                "spec": {"group": "helm.cattle.io", "names": {"kind": "HelmChart", "plural": "helmcharts"}, "scope": "Namespaced"}
            }));
        Self {
            api,
            ctl: Arc::new(Mutex::new(Controller::default())),
        }
    }

    fn ctl(&self) -> std::sync::MutexGuard<'_, Controller> {
        self.ctl
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn ends(&self, ends: &[End]) -> &Self {
        self.ctl().ends = ends.iter().cloned().collect();
        self
    }

    fn client(&self) -> kube::Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let me = me.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await?.to_bytes();
                me.handle(&parts.method, &parts.uri, &body).await
            }
        });
        kube::Client::new(svc, "default")
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let uri: http::Uri = path.parse().ok()?;
        let r = self.api.handle_parts(&Method::GET, &uri, b"").await.ok()?;
        if r.status() != StatusCode::OK {
            return None;
        }
        let bytes = r.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&bytes).ok()
    }

    fn helmchart_stored(&self) -> bool {
        self.api.has("helmcharts", "kube-system", "hami")
    }

    /// The controller runs a new helm-install Job for the HelmChart.
    fn run_install_job(&self) {
        let mut c = self.ctl();
        if c.disabled {
            return;
        }
        c.runs += 1;
        let n = c.runs;
        let end = if c.ends.len() > 1 {
            c.ends.pop_front()
        } else {
            c.ends.front().cloned()
        }
        .unwrap_or(End::Complete(INSTALL_LOG));
        let (conditions, log, restarts) = match end {
            End::Complete(log) => (json!([{"type": "Complete", "status": "True"}]), log, 0),
            End::Failed(log) => (
                json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]),
                log,
                4,
            ),
        };
        self.put_job("helm-install-hami", n, conditions, log, restarts, &mut c);
    }

    fn put_job(
        &self,
        job: &str,
        n: u32,
        conditions: Value,
        log: &str,
        restarts: i32,
        c: &mut Controller,
    ) {
        let pod = format!("{job}-{n:05}");
        self.api.add(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": job, "namespace": "kube-system", "uid": format!("job-uid-{n}"),
                         "labels": {"helmcharts.helm.cattle.io/chart": "hami"}},
            "spec": {"backoffLimit": 4, "template": {"spec": {"restartPolicy": "OnFailure",
                     "containers": [{"name": "helm", "image": "rancher/klipper-helm:v0.9.8-build20260701"}]}}},
            "status": {"conditions": conditions}
        }));
        self.api.add(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": "kube-system",
                         "creationTimestamp": format!("2026-12-01T10:{:02}:00Z", n % 60),
                         "labels": {"batch.kubernetes.io/job-name": job, "job-name": job}},
            "spec": {"containers": [{"name": "helm", "image": "rancher/klipper-helm:v0.9.8-build20260701"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "helm", "ready": false, "restartCount": restarts,
                       "image": "rancher/klipper-helm", "imageID": "", "state": {}}]}
        }));
        c.logs.push((pod, log.to_owned()));
    }

    async fn handle(
        &self,
        method: &Method,
        uri: &http::Uri,
        body: &[u8],
    ) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
        let path = uri.path().to_owned();
        let git_version = self.ctl().git_version.clone();
        if path == "/version"
            && let Some(v) = git_version
        {
            self.api.handle_parts(method, uri, body).await?;
            let mut version: Value = crate::testdata::fixture("version-k3s.json");
            version["gitVersion"] = json!(v);
            return Ok(respond(StatusCode::OK, serde_json::to_vec(&version)?));
        }
        if let Some(pod) = path
            .strip_prefix("/api/v1/namespaces/kube-system/pods/")
            .and_then(|p| p.strip_suffix("/log"))
        {
            // Recorded (the mock's answer is not used), then answered with the pod's log.
            self.api.handle_parts(method, uri, body).await?;
            let query = percent_decode(uri.query().unwrap_or_default());
            assert!(query.contains("container=helm"), "{query}");
            let log = self
                .ctl()
                .logs
                .iter()
                .find(|(p, _)| p == pod)
                .map(|(_, l)| l.clone());
            return Ok(match log {
                Some(l) => respond(StatusCode::OK, l.into_bytes()),
                None => respond(StatusCode::NOT_FOUND, b"{}".to_vec()),
            });
        }
        let chart = format!("{CHARTS}/hami");
        if *method == Method::PATCH && path == chart {
            // Recorded (the mock itself does not patch), then merge-patched here.
            self.api.handle_parts(method, uri, body).await?;
            let Some(mut obj) = self.get(&chart).await else {
                return Ok(respond(StatusCode::NOT_FOUND, b"{}".to_vec()));
            };
            let patch: Value = serde_json::from_slice(body)?;
            merge_patch(&mut obj, &patch);
            self.api.add(obj.clone());
            self.run_install_job();
            return Ok(respond(StatusCode::OK, serde_json::to_vec(&obj)?));
        }
        let uninstall_fails = self.ctl().uninstall_fails;
        if *method == Method::DELETE && path == chart && uninstall_fails {
            let Some(mut obj) = self.get(&chart).await else {
                return Ok(respond(StatusCode::NOT_FOUND, b"{}".to_vec()));
            };
            obj["metadata"]["deletionTimestamp"] = json!("2026-12-01T11:00:00Z");
            obj["metadata"]["finalizers"] = json!(["wrangler.cattle.io/on-helm-chart-remove"]);
            self.api.add(obj.clone());
            let mut c = self.ctl();
            c.runs += 1;
            let n = c.runs;
            self.put_job("helm-delete-hami", n, json!([]), UNINSTALL_LOG, 2, &mut c);
            return Ok(respond(StatusCode::OK, serde_json::to_vec(&obj)?));
        }
        let answer = self.api.handle_parts(method, uri, body).await?;
        let ok = answer.status().is_success();
        if ok && *method == Method::POST && path == CHARTS {
            self.run_install_job();
        }
        if ok && *method == Method::DELETE && path == format!("{JOBS}/helm-install-hami") {
            self.run_install_job();
        }
        Ok(answer)
    }

    /// `METHOD path` of each request that changed something.
    fn writes(&self) -> Vec<String> {
        self.api
            .seen_paths()
            .into_iter()
            .filter(|p| !p.starts_with("GET "))
            .collect()
    }
}

fn ctx(dry_run: bool, installer: InstallerChoice) -> Ctx {
    Ctx {
        namespace: "default".into(),
        hami_namespace: "kube-system".into(),
        dry_run,
        api_timeout: Duration::from_secs(5),
        helm: HelmTarget {
            kubeconfig: None,
            context: None,
            namespace: "kube-system".into(),
        },
        installer,
    }
}

fn auto(dry_run: bool) -> Ctx {
    ctx(dry_run, InstallerChoice::Auto)
}

fn ids(out: &Value) -> Vec<String> {
    out["plan"]["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|x| x["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn dry_run_on_k3s_shows_the_helmchart_path_and_changes_nothing() {
    let k = K3s::new();
    let no_helm = RecordingRunner::new(&[]);
    let out = install_hami(
        &k.client(),
        &no_helm,
        &auto(true),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::OK);
    assert_eq!(
        ids(&out.json),
        [
            "installer",
            "create-helmchart",
            "wait-helm-install-job",
            "verify-scheduler",
            "verify-webhook",
            "verify-device-plugin",
            "verify-node"
        ]
    );
    assert!(
        out.human
            .contains("[installer] helm.cattle.io/v1 HelmChart kube-system/hami"),
        "{}",
        out.human
    );
    assert!(
        out.human.contains("the server is k3s (v1.31.4+k3s1)"),
        "{}",
        out.human
    );
    assert!(
        out.human.contains("no helm binary is needed"),
        "{}",
        out.human
    );
    assert!(k.writes().is_empty(), "{:?}", k.writes());
    assert!(no_helm.calls().is_empty());
}

#[tokio::test]
async fn install_on_k3s_needs_no_helm_watches_the_job_and_verifies() {
    let k = K3s::new();
    let no_helm = RecordingRunner::new(&[]);
    let opts = InstallOptions {
        extra_set: vec!["devicePlugin.runtimeClassName=nvidia".into()],
        ..InstallOptions::default()
    };
    let out = install_hami(&k.client(), &no_helm, &auto(false), &opts, WAIT)
        .await
        .unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert!(
        no_helm.calls().is_empty(),
        "no helm at all: {:?}",
        no_helm.lines()
    );
    assert_eq!(k.writes(), [format!("POST {CHARTS}")]);
    let stored = k.get(&format!("{CHARTS}/hami")).await.unwrap();
    assert_eq!(stored["spec"]["chart"], "hami");
    assert_eq!(stored["spec"]["version"], "2.10.0");
    assert_eq!(
        stored["spec"]["repo"],
        "https://project-hami.github.io/HAMi/"
    );
    assert_eq!(stored["spec"]["targetNamespace"], "kube-system");
    assert_eq!(
        stored["spec"]["set"]["devicePlugin.runtimeClassName"],
        "nvidia"
    );
    assert_eq!(
        stored["spec"]["set"]["scheduler.kubeScheduler.image.registry"],
        "registry.k8s.io"
    );
    assert_eq!(out.json["helm_job"]["state"]["state"], "succeeded");
    assert_eq!(out.json["helm_job"]["pod"], "helm-install-hami-00001");
    assert!(
        out.json["helm_job"]["log"]
            .as_str()
            .unwrap()
            .contains("STATUS: deployed")
    );
    assert!(
        out.human
            .contains("Job kube-system/helm-install-hami completed"),
        "{}",
        out.human
    );
    let checks = out.json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 5);
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:?}");
    // The Job was watched (a watch on that one name), its pod's log read.
    let uris: Vec<String> = k.api.seen().into_iter().map(|s| s.uri).collect();
    assert!(
        uris.iter().any(|u| u.starts_with(&format!("{JOBS}?"))
            && u.contains("metadata.name%3Dhelm-install-hami")),
        "{uris:?}"
    );
    assert!(
        uris.iter().any(|u| u.contains("labelSelector=batch.kubernetes.io%2Fjob-name%3Dhelm-install-hami")),
        "{uris:?}"
    );

    // Idempotent: the same spec and a completed Job change nothing.
    let before = k.writes().len();
    let again = install_hami(&k.client(), &no_helm, &auto(false), &opts, WAIT)
        .await
        .unwrap();
    assert_eq!(again.exit, exit::OK);
    assert_eq!(ids(&again.json)[..2], ["installer", "already-installed"]);
    assert_eq!(k.writes().len(), before, "{:?}", k.writes());

    // Other values: a merge patch, a new Job watched to its end, the dropped value removed.
    let newer = InstallOptions {
        chart_version: "2.10.1".into(),
        ..InstallOptions::default()
    };
    let up = install_hami(&k.client(), &no_helm, &auto(false), &newer, WAIT)
        .await
        .unwrap();
    assert_eq!(up.exit, exit::OK, "{}", up.human);
    assert_eq!(ids(&up.json)[1], "update-helmchart");
    assert_eq!(k.writes().last().unwrap(), &format!("PATCH {CHARTS}/hami"));
    let stored = k.get(&format!("{CHARTS}/hami")).await.unwrap();
    assert_eq!(stored["spec"]["version"], "2.10.1");
    assert!(
        stored["spec"]["set"]
            .get("devicePlugin.runtimeClassName")
            .is_none(),
        "{stored}"
    );
    assert_eq!(up.json["helm_job"]["pod"], "helm-install-hami-00002");
}

#[tokio::test]
async fn a_failed_chart_install_shows_the_jobs_log_and_a_rerun_retries() {
    let k = K3s::new();
    k.ends(&[End::Failed(FAILED_LOG), End::Complete(INSTALL_LOG)]);
    let no_helm = RecordingRunner::new(&[]);
    let bad = InstallOptions {
        chart_version: "9.9.9".into(),
        ..InstallOptions::default()
    };
    let err = install_hami(&k.client(), &no_helm, &auto(false), &bad, WAIT)
        .await
        .unwrap_err();
    assert_eq!(err.code, exit::ENVIRONMENT);
    let text = err.to_string();
    assert!(
        text.contains("Job kube-system/helm-install-hami failed (BackoffLimitExceeded"),
        "{text}"
    );
    assert!(text.contains("pod helm-install-hami-00001"), "{text}");
    assert!(
        text.contains("Error: chart \"hami\" version \"9.9.9\" not found in https://project-hami.github.io/HAMi/ repository"),
        "the Job's log is shown: {text}"
    );
    assert!(text.contains("run install-hami again"), "{text}");
    // The release is stuck in a failed Job: a re-run with the same spec clears it (deletes the
    // Job, the controller runs a new one: klipper-helm uninstalls the failed release and installs).
    let dry = install_hami(&k.client(), &no_helm, &auto(true), &bad, WAIT)
        .await
        .unwrap();
    assert_eq!(ids(&dry.json)[1], "clear-failed-job");
    let retry = install_hami(&k.client(), &no_helm, &auto(false), &bad, WAIT)
        .await
        .unwrap();
    assert_eq!(retry.exit, exit::OK, "{}", retry.human);
    assert_eq!(
        k.writes(),
        [
            format!("POST {CHARTS}"),
            format!("DELETE {JOBS}/helm-install-hami")
        ]
    );
    assert_eq!(retry.json["helm_job"]["pod"], "helm-install-hami-00002");
}

#[tokio::test]
async fn a_job_still_running_from_an_earlier_run_is_watched_not_replaced() {
    let k = K3s::new();
    let no_helm = RecordingRunner::new(&[]);
    let spec = crate::helmchart::object(&InstallOptions::default(), "kube-system").unwrap();
    k.api.add(spec);
    k.api.add(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "helm-install-hami", "namespace": "kube-system", "uid": "running-uid"},
        "status": {"active": 1}
    }));
    let err = install_hami(
        &k.client(),
        &no_helm,
        &auto(false),
        &InstallOptions::default(),
        Duration::from_millis(800),
    )
    .await
    .unwrap_err();
    assert!(k.writes().is_empty(), "{:?}", k.writes());
    assert!(err.to_string().contains("did not finish within"), "{err}");
    assert!(
        err.to_string()
            .contains("(Job helm-install-hami has no pod)"),
        "{err}"
    );
}

#[tokio::test]
async fn without_a_helm_controller_the_wait_says_so() {
    let k = K3s::new();
    k.ctl().disabled = true;
    let err = install_hami(
        &k.client(),
        &RecordingRunner::new(&[]),
        &auto(false),
        &InstallOptions::default(),
        Duration::from_millis(800),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("--disable-helm-controller") && text.contains("--installer helm"),
        "{text}"
    );
}

#[tokio::test]
async fn other_clusters_keep_helm_and_say_why() {
    let k = K3s::new();
    k.ctl().git_version = Some("v1.31.4".into());
    let r = RecordingRunner::new(&["helm"]);
    r.reply("helm version", 0, "v3.16.2+g13654a5\n", "");
    r.reply("helm list", 0, "[]", "");
    let out = install_hami(
        &k.client(),
        &r,
        &auto(false),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert_eq!(out.json["plan"]["steps"][0]["id"], "installer");
    assert_eq!(
        out.json["plan"]["steps"][0]["action"],
        "helm upgrade --install (helm 3)"
    );
    assert!(
        out.json["plan"]["steps"][0]["why"]
            .as_str()
            .unwrap()
            .contains("(v1.31.4) is not k3s")
    );
    assert!(
        r.lines()
            .last()
            .unwrap()
            .starts_with("helm upgrade --install hami hami"),
        "{:?}",
        r.lines()
    );
    assert!(k.writes().is_empty(), "no HelmChart: {:?}", k.writes());
    // No helm there: the hint, and the way out on k3s.
    let err = install_hami(
        &k.client(),
        &RecordingRunner::new(&[]),
        &auto(false),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("https://helm.sh")
            && err.to_string().contains("--installer helm-chart"),
        "{err}"
    );
    // --installer helm-chart where no helm controller is: a usage error.
    let mut plain = K3s::new();
    plain.api = MockApi::new();
    plain.ctl().git_version = Some("v1.31.4".into());
    let err = install_hami(
        &plain.client(),
        &RecordingRunner::new(&[]),
        &ctx(false, InstallerChoice::HelmChart),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, exit::USAGE);
}

#[tokio::test]
async fn installer_helm_on_k3s_uses_helm() {
    let k = K3s::new();
    let r = RecordingRunner::new(&["helm"]);
    r.reply("helm version", 0, "v4.0.1+gabc\n", "");
    r.reply("helm list", 0, "[]", "");
    let out = install_hami(
        &k.client(),
        &r,
        &ctx(false, InstallerChoice::Helm),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::OK);
    assert!(
        r.lines()
            .iter()
            .any(|l| l.starts_with("helm upgrade --install"))
    );
    assert!(k.writes().is_empty());
}

#[tokio::test]
async fn preflight_on_k3s_says_helm_is_not_needed() {
    let k = K3s::new();
    let out = preflight(&k.client(), &RecordingRunner::new(&[]), &auto(false))
        .await
        .unwrap();
    assert!(
        out.human.contains("installer: the server is k3s"),
        "{}",
        out.human
    );
    assert!(
        out.human.contains("helm: not found (not needed"),
        "{}",
        out.human
    );
    assert_eq!(out.json["installer"]["installer"], "helm-chart");
}

#[tokio::test]
async fn cleanup_uninstall_deletes_the_helmchart_and_waits_until_it_is_gone() {
    let k = K3s::new();
    let no_helm = RecordingRunner::new(&[]);
    install_hami(
        &k.client(),
        &no_helm,
        &auto(false),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap();
    let plan = cleanup(&k.client(), &no_helm, &auto(true), true, WAIT)
        .await
        .unwrap();
    assert!(
        plan.human
            .contains("delete HelmChart kube-system/hami; watch until it is gone"),
        "{}",
        plan.human
    );
    assert!(k.helmchart_stored(), "a dry run deletes nothing");
    let done = cleanup(&k.client(), &no_helm, &auto(false), true, WAIT)
        .await
        .unwrap();
    assert_eq!(done.exit, exit::OK);
    assert_eq!(done.json["uninstalled_hami"], true);
    assert!(!k.helmchart_stored());
    assert_eq!(k.writes().last().unwrap(), &format!("DELETE {CHARTS}/hami"));
    assert!(no_helm.calls().is_empty());
    // Again: nothing left to uninstall, and still no helm needed... unless no HelmChart and no
    // helm: then it says how to get helm.
    let err = cleanup(&k.client(), &no_helm, &auto(false), true, WAIT)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no HelmChart hami either"),
        "{err}"
    );
    let helm = RecordingRunner::new(&["helm"]);
    helm.reply("helm list", 0, "[]", "");
    let none = cleanup(&k.client(), &helm, &auto(false), true, WAIT)
        .await
        .unwrap();
    assert_eq!(none.json["uninstalled_hami"], false);
}

#[tokio::test]
async fn a_failing_uninstall_shows_the_delete_jobs_log() {
    let k = K3s::new();
    let no_helm = RecordingRunner::new(&[]);
    install_hami(
        &k.client(),
        &no_helm,
        &auto(false),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap();
    k.ctl().uninstall_fails = true;
    let err = cleanup(
        &k.client(),
        &no_helm,
        &auto(false),
        true,
        Duration::from_millis(800),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("HelmChart kube-system/hami is still there"),
        "{text}"
    );
    assert!(text.contains("Job helm-delete-hami"), "{text}");
    assert!(
        text.contains("context deadline exceeded"),
        "the delete Job's log: {text}"
    );
    // And install-hami meanwhile refuses to touch a HelmChart being deleted.
    let busy = install_hami(
        &k.client(),
        &no_helm,
        &auto(false),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap_err();
    assert!(busy.to_string().contains("is being deleted"), "{busy}");
}
