//! Both install paths of `install-hami`, and `cleanup --uninstall-hami`, against the mock with
//! k3s's helm controller running (`mockapi::lifecycle::HelmController`: the HelmChart CRD served;
//! a HelmChart claimed and finalized; its helm-install Job created anew on each spec change or
//! deletion, ending Complete, or restarting its pod until `backoffLimit` and then Failed with the
//! pod — and its log — gone; helm-delete while the HelmChart is deleted), under
//! manifests/rbac.yaml as the `hami-installer` ServiceAccount. helm itself is a recording fake;
//! the helm Jobs' logs are constructed from klipper-helm's `entry` script and helm's own error
//! texts.

use std::time::Duration;

use cluster_ctl::commands::{self, Ctx, exit};
use cluster_ctl::helm::InstallOptions;
use cluster_ctl::helmchart::InstallerChoice;
use lab_runner::RecordingRunner;
use serde_json::{Value, json};

use crate::mockapi::lifecycle::{HELM_FINALIZER, HelmController, HelmRun, INSTALL_LOG};
use crate::mockapi::{INSTALLER_TOKEN, MockApi, TOKEN};
use crate::support::*;

const CHARTS: &str = "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts";
const JOBS: &str = "/apis/batch/v1/namespaces/kube-system/jobs";
const WAIT: Duration = Duration::from_secs(300);

/// klipper-helm's log of an install whose chart version does not exist (helm's error text).
const FAILED_LOG: &str = "+ helm_v3 repo add hami https://project-hami.github.io/HAMi/\n\"hami\" has been added to your repositories\n+ helm_v3 install --namespace kube-system --version 9.9.9 hami hami/hami\nError: INSTALLATION FAILED: chart \"hami\" version \"9.9.9\" not found in https://project-hami.github.io/HAMi/ repository\n";
/// klipper-helm's log of an uninstall that fails.
const UNINSTALL_FAILS_LOG: &str = "+ helm_v3 uninstall hami --namespace kube-system\nError: uninstallation completed with 1 error(s): context deadline exceeded\n";

fn ctx_with(dry_run: bool, installer: InstallerChoice) -> Ctx {
    let mut c = ctx(dry_run);
    c.installer = installer;
    c
}

fn installer(m: &MockApi) -> cluster_ctl::api::Cluster {
    m.cluster_as(INSTALLER_TOKEN, API_TIMEOUT)
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

/// `METHOD path` of each request cluster-ctl made that changes something (the controller's own
/// changes are not requests).
fn writes(m: &MockApi) -> Vec<String> {
    m.seen()
        .into_iter()
        .filter(|s| s.method != "GET")
        .map(|s| {
            format!(
                "{} {}",
                s.method,
                s.uri.split('?').next().unwrap_or_default()
            )
        })
        .collect()
}

fn no_denials(m: &MockApi) {
    let denied: Vec<String> = m
        .denied()
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect();
    assert!(
        denied.is_empty(),
        "refused by manifests/rbac.yaml: {denied:#?}"
    );
}

fn chart(m: &MockApi) -> Option<Value> {
    m.get("helmcharts.helm.cattle.io", "kube-system", "hami")
}

/// The pod of the `n`th helm Job the controller ran.
fn pod_of_run(m: &MockApi, n: usize) -> String {
    m.helm_controller().unwrap().started[n].1.clone()
}

#[tokio::test(start_paused = true)]
async fn dry_run_on_k3s_shows_the_helmchart_path_and_changes_nothing() {
    let m = k3s_with_helm_controller(HelmController::default());
    let no_helm = RecordingRunner::new(&[]);
    let out = commands::install_hami(
        &installer(&m),
        &no_helm,
        &ctx(true),
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
    for words in [
        "[installer] helm.cattle.io/v1 HelmChart kube-system/hami",
        "the server is k3s (v1.31.4+k3s1)",
        "no helm binary is needed",
        "create HelmChart kube-system/hami: chart hami 2.10.0 from https://project-hami.github.io/HAMi/",
    ] {
        assert!(out.human.contains(words), "{words}: {}", out.human);
    }
    assert!(writes(&m).is_empty(), "{:?}", writes(&m));
    assert!(m.seen().iter().all(|s| s.method == "GET"));
    assert!(no_helm.calls().is_empty());
    assert!(chart(&m).is_none());
    no_denials(&m);
}

#[tokio::test(start_paused = true)]
async fn install_on_k3s_needs_no_helm_watches_the_job_and_verifies() {
    let m = k3s_with_helm_controller(HelmController::default());
    let no_helm = RecordingRunner::new(&[]);
    let opts = InstallOptions {
        extra_set: vec!["devicePlugin.runtimeClassName=nvidia".into()],
        ..InstallOptions::default()
    };
    let out = commands::install_hami(&installer(&m), &no_helm, &ctx(false), &opts, WAIT)
        .await
        .unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert!(
        no_helm.calls().is_empty(),
        "no helm at all: {:?}",
        no_helm.lines()
    );
    // The only write: the HelmChart, as the API server stored it (the controller claimed it).
    assert_eq!(writes(&m), [format!("POST {CHARTS}")]);
    let stored = chart(&m).unwrap();
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
    assert_eq!(stored["metadata"]["finalizers"], json!([HELM_FINALIZER]));
    // The Job was watched to its end and its pod's log kept.
    let first_pod = pod_of_run(&m, 0);
    assert_eq!(out.json["helm_job"]["state"]["state"], "succeeded");
    assert_eq!(out.json["helm_job"]["pod"], first_pod.as_str());
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
    let seen = m.seen();
    assert!(
        seen.iter().any(|s| s.watch
            && s.uri.starts_with(&format!("{JOBS}?"))
            && s.uri.contains("metadata.name%3Dhelm-install-hami")),
        "the Job was watched by name"
    );
    assert!(
        seen.iter().any(|s| s
            .uri
            .contains("labelSelector=batch.kubernetes.io%2Fjob-name%3Dhelm-install-hami")),
        "its pods found by the Job controller's label"
    );
    assert!(
        seen.iter().any(|s| s.uri.starts_with(&format!(
            "/api/v1/namespaces/kube-system/pods/{first_pod}/log?"
        )) && s.uri.contains("container=helm")),
        "its log read"
    );
    no_denials(&m);

    // Idempotent: the same spec and a completed Job change nothing.
    let before = writes(&m).len();
    let again = commands::install_hami(&installer(&m), &no_helm, &ctx(false), &opts, WAIT)
        .await
        .unwrap();
    assert_eq!(again.exit, exit::OK);
    assert_eq!(ids(&again.json)[..2], ["installer", "already-installed"]);
    assert_eq!(writes(&m).len(), before, "{:?}", writes(&m));

    // Another version, a --set dropped: a merge patch; the controller replaces the Job (a new
    // uid), which is awaited; the dropped value is removed.
    let first_uid = m
        .get("jobs.batch", "kube-system", "helm-install-hami")
        .unwrap()["metadata"]["uid"]
        .clone();
    let newer = InstallOptions {
        chart_version: "2.10.1".into(),
        ..InstallOptions::default()
    };
    let up = commands::install_hami(&installer(&m), &no_helm, &ctx(false), &newer, WAIT)
        .await
        .unwrap();
    assert_eq!(up.exit, exit::OK, "{}", up.human);
    assert_eq!(ids(&up.json)[1], "update-helmchart");
    assert_eq!(writes(&m).last().unwrap(), &format!("PATCH {CHARTS}/hami"));
    let stored = chart(&m).unwrap();
    assert_eq!(stored["spec"]["version"], "2.10.1");
    assert!(
        stored["spec"]["set"]
            .get("devicePlugin.runtimeClassName")
            .is_none(),
        "{stored}"
    );
    let job = m
        .get("jobs.batch", "kube-system", "helm-install-hami")
        .unwrap();
    assert_ne!(job["metadata"]["uid"], first_uid, "a new Job");
    assert_eq!(up.json["helm_job"]["pod"], pod_of_run(&m, 1).as_str());
    no_denials(&m);
}

#[tokio::test(start_paused = true)]
async fn a_failed_chart_install_shows_the_jobs_log_and_a_rerun_retries() {
    let m = k3s_with_helm_controller(HelmController {
        installs: [
            HelmRun::Failed(FAILED_LOG.into()),
            HelmRun::Complete(INSTALL_LOG.into()),
        ]
        .into(),
        ..HelmController::default()
    });
    let no_helm = RecordingRunner::new(&[]);
    let bad = InstallOptions {
        chart_version: "9.9.9".into(),
        ..InstallOptions::default()
    };
    let t0 = tokio::time::Instant::now();
    let err = commands::install_hami(&installer(&m), &no_helm, &ctx(false), &bad, WAIT)
        .await
        .unwrap_err();
    assert_eq!(err.code, exit::ENVIRONMENT);
    assert!(
        t0.elapsed() > Duration::from_secs(150),
        "it waited while the pod restarted: {:?}",
        t0.elapsed()
    );
    let failed_pod = pod_of_run(&m, 0);
    let text = err.to_string();
    for words in [
        "Job kube-system/helm-install-hami failed (BackoffLimitExceeded",
        &format!("pod {failed_pod}"),
        "Error: INSTALLATION FAILED: chart \"hami\" version \"9.9.9\" not found in https://project-hami.github.io/HAMi/ repository",
        "run install-hami again",
    ] {
        assert!(text.contains(words), "{words}: {text}");
    }
    // The Job controller took the pod with the failed Job: the log shown was read while it ran.
    assert!(!m.has("pods", "kube-system", &failed_pod));
    assert!(text.contains("read while the Job ran"), "{text}");
    // A dry run plans clearing the failed Job; the re-run deletes it, the controller runs a new
    // one (whose helm reinstalls the failed release), and it completes.
    let dry = commands::install_hami(&installer(&m), &no_helm, &ctx(true), &bad, WAIT)
        .await
        .unwrap();
    assert_eq!(ids(&dry.json)[1], "clear-failed-job");
    let retry = commands::install_hami(&installer(&m), &no_helm, &ctx(false), &bad, WAIT)
        .await
        .unwrap();
    assert_eq!(retry.exit, exit::OK, "{}", retry.human);
    assert_eq!(
        writes(&m),
        [
            format!("POST {CHARTS}"),
            format!("DELETE {JOBS}/helm-install-hami")
        ]
    );
    assert_eq!(retry.json["helm_job"]["pod"], pod_of_run(&m, 1).as_str());
    no_denials(&m);
}

#[tokio::test(start_paused = true)]
async fn a_job_still_running_from_an_earlier_run_is_watched_not_replaced() {
    // The HelmChart and its Job as the controller left them (the Job has no pod yet), and no
    // controller acting now.
    let m = healthy();
    m.enforce_rbac(&rbac_policy());
    m.serve_helm_crd();
    let mut obj =
        cluster_ctl::helmchart::object(&InstallOptions::default(), "kube-system").unwrap();
    obj["metadata"]["finalizers"] = json!([HELM_FINALIZER]);
    let hash = crate::mockapi::lifecycle::config_hash(&obj["spec"]);
    m.add(obj);
    m.add(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "helm-install-hami", "namespace": "kube-system", "uid": "running-uid",
                     "annotations": {"helmcharts.helm.cattle.io/configHash": hash}},
        "spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "helm", "image": "rancher/klipper-helm:v0.9.4-build20250113"}]}}},
        "status": {"active": 1}
    }));
    let err = commands::install_hami(
        &installer(&m),
        &RecordingRunner::new(&[]),
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    assert!(writes(&m).is_empty(), "{:?}", writes(&m));
    let text = err.to_string();
    assert!(text.contains("did not finish within 60 s"), "{text}");
    assert!(
        text.contains("(Job helm-install-hami has no pod)"),
        "{text}"
    );
    assert!(text.contains("it watches the same Job"), "{text}");
    no_denials(&m);
}

#[tokio::test(start_paused = true)]
async fn without_a_helm_controller_the_wait_says_so() {
    let m = healthy();
    m.enforce_rbac(&rbac_policy());
    m.serve_helm_crd();
    let err = commands::install_hami(
        &installer(&m),
        &RecordingRunner::new(&[]),
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("--disable-helm-controller") && text.contains("--installer helm"),
        "{text}"
    );
    assert_eq!(writes(&m), [format!("POST {CHARTS}")]);
    no_denials(&m);
}

#[tokio::test(start_paused = true)]
async fn other_clusters_keep_helm_and_say_why() {
    let not_k3s = |m: &MockApi| {
        m.lock().version["gitVersion"] = json!("v1.31.4");
    };
    let m = k3s_with_helm_controller(HelmController::default());
    not_k3s(&m);
    let r = helm("helm-list-deployed.json");
    r.reply("helm list", 0, "[]", "");
    let out = commands::install_hami(
        &installer(&m),
        &r,
        &ctx(false),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    let first = &out.json["plan"]["steps"][0];
    assert_eq!(first["id"], "installer");
    assert_eq!(first["action"], "helm upgrade --install (helm 3)");
    assert!(
        first["why"]
            .as_str()
            .unwrap()
            .contains("(v1.31.4) is not k3s"),
        "{first}"
    );
    assert!(
        r.lines()
            .last()
            .unwrap()
            .starts_with("helm upgrade --install hami hami"),
        "{:?}",
        r.lines()
    );
    assert!(writes(&m).is_empty(), "no HelmChart: {:?}", writes(&m));
    // No helm there: the hint, and the way out on k3s.
    let err = commands::install_hami(
        &installer(&m),
        &RecordingRunner::new(&[]),
        &ctx(false),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, exit::ENVIRONMENT);
    assert!(
        err.to_string().contains("https://helm.sh")
            && err.to_string().contains("--installer helm-chart"),
        "{err}"
    );
    no_denials(&m);
    // --installer helm-chart where no helm controller is (the CRD not served): a usage error.
    let plain = healthy();
    plain.enforce_rbac(&rbac_policy());
    not_k3s(&plain);
    let err = commands::install_hami(
        &installer(&plain),
        &RecordingRunner::new(&[]),
        &ctx_with(false, InstallerChoice::HelmChart),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, exit::USAGE);
    assert!(
        err.to_string()
            .contains("serves no helmcharts.helm.cattle.io"),
        "{err}"
    );
    no_denials(&plain);
}

#[tokio::test(start_paused = true)]
async fn installer_helm_on_k3s_uses_helm() {
    let m = k3s_with_helm_controller(HelmController::default());
    let r = RecordingRunner::new(&["helm"]);
    r.reply("helm version", 0, "v4.0.1+gabc\n", "");
    r.reply("helm list", 0, "[]", "");
    let out = commands::install_hami(
        &installer(&m),
        &r,
        &ctx_with(false, InstallerChoice::Helm),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert_eq!(
        out.json["plan"]["steps"][0]["action"],
        "helm upgrade --install (helm 4)"
    );
    assert!(
        r.lines()
            .iter()
            .any(|l| l.starts_with("helm upgrade --install"))
    );
    assert!(writes(&m).is_empty());
    assert!(chart(&m).is_none());
    no_denials(&m);
}

#[tokio::test(start_paused = true)]
async fn preflight_on_k3s_says_helm_is_not_needed() {
    let m = k3s_with_helm_controller(HelmController::default());
    // As the lab's own ServiceAccount: reading the CRD is all it needs for this.
    let out = commands::preflight(
        &m.cluster_as(TOKEN, API_TIMEOUT),
        &RecordingRunner::new(&[]),
        &ctx(false),
    )
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
    no_denials(&m);
}

#[tokio::test(start_paused = true)]
async fn cleanup_uninstall_deletes_the_helmchart_and_waits_until_it_is_gone() {
    let m = k3s_with_helm_controller(HelmController::default());
    let no_helm = RecordingRunner::new(&[]);
    commands::install_hami(
        &installer(&m),
        &no_helm,
        &ctx(false),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap();
    let plan = commands::cleanup(&installer(&m), &no_helm, &ctx(true), true, WAIT)
        .await
        .unwrap();
    assert!(
        plan.human
            .contains("delete HelmChart kube-system/hami; watch until it is gone"),
        "{}",
        plan.human
    );
    assert!(chart(&m).is_some(), "a dry run deletes nothing");
    let done = commands::cleanup(&installer(&m), &no_helm, &ctx(false), true, WAIT)
        .await
        .unwrap();
    assert_eq!(done.exit, exit::OK);
    assert_eq!(done.json["uninstalled_hami"], true);
    assert!(chart(&m).is_none(), "gone, not just being deleted");
    assert_eq!(writes(&m).last().unwrap(), &format!("DELETE {CHARTS}/hami"));
    assert!(
        m.helm_controller()
            .unwrap()
            .started
            .iter()
            .any(|(job, _)| job == "helm-delete-hami"),
        "the controller uninstalled the release in its helm-delete Job"
    );
    assert!(
        m.seen()
            .iter()
            .any(|s| s.watch && s.uri.starts_with(&format!("{CHARTS}?"))),
        "the HelmChart was watched until gone"
    );
    assert!(no_helm.calls().is_empty());
    // Again: no HelmChart and no helm: it says how to get helm; with helm and no release,
    // nothing to uninstall.
    let err = commands::cleanup(&installer(&m), &no_helm, &ctx(false), true, WAIT)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no HelmChart hami either"),
        "{err}"
    );
    let helm = RecordingRunner::new(&["helm"]);
    helm.reply("helm list", 0, "[]", "");
    let none = commands::cleanup(&installer(&m), &helm, &ctx(false), true, WAIT)
        .await
        .unwrap();
    assert_eq!(none.json["uninstalled_hami"], false);
    no_denials(&m);
}

#[tokio::test(start_paused = true)]
async fn a_failing_uninstall_shows_the_delete_jobs_log() {
    let m = k3s_with_helm_controller(HelmController {
        uninstall: Some(HelmRun::Failed(UNINSTALL_FAILS_LOG.into())),
        ..HelmController::default()
    });
    let no_helm = RecordingRunner::new(&[]);
    commands::install_hami(
        &installer(&m),
        &no_helm,
        &ctx(false),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap();
    let err = commands::cleanup(
        &installer(&m),
        &no_helm,
        &ctx(false),
        true,
        Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    for words in [
        "HelmChart kube-system/hami is still there after 60 s",
        "Job helm-delete-hami",
        "context deadline exceeded",
    ] {
        assert!(text.contains(words), "{words}: {text}");
    }
    let stored = chart(&m).unwrap();
    assert!(!stored["metadata"]["deletionTimestamp"].is_null());
    // And install-hami meanwhile refuses to touch a HelmChart being deleted.
    let busy = commands::install_hami(
        &installer(&m),
        &no_helm,
        &ctx(false),
        &InstallOptions::default(),
        WAIT,
    )
    .await
    .unwrap_err();
    assert!(busy.to_string().contains("is being deleted"), "{busy}");
    no_denials(&m);
}
