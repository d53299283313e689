//! Every subcommand against the mock API server, helm as a recording fake, gpu-probe answering
//! with the reports captured under real HAMi-core on an H200.

use std::time::Duration;

use cluster_ctl::commands::{self, exit};
use cluster_ctl::helm::InstallOptions;
use lab_runner::RecordingRunner;
use serde_json::Value;

use crate::mockapi::MockApi;
use crate::mockapi::fixtures::{H200_UUID, h100_bare, h200};
use crate::support::*;

fn report(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("out/run.json")).unwrap()).unwrap()
}

// --- preflight -----------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn preflight_reads_the_cluster_and_the_helm_release() {
    let m = healthy();
    let r = helm("helm-list-pending-install.json");
    let out = commands::preflight(&m.cluster(API_TIMEOUT), &r, &ctx(false))
        .await
        .unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert!(out.human.contains("pending-install"), "{}", out.human);
    assert_eq!(out.json["server_version"], "v1.31.4+k3s1");
    assert_eq!(out.json["helm_major"], 3);
    assert_eq!(
        r.lines(),
        [
            "helm list -a -o json --filter '^hami$' --namespace kube-system",
            "helm version --short"
        ]
    );
    assert!(
        m.seen().iter().all(|s| s.method == "GET"),
        "preflight only reads"
    );
}

#[tokio::test(start_paused = true)]
async fn preflight_beside_the_gpu_operator_exits_1() {
    let m = healthy();
    m.add_fixture("daemonsets-gpu-operator.json");
    let out = commands::preflight(
        &m.cluster(API_TIMEOUT),
        &RecordingRunner::new(&[]),
        &ctx(false),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::CLAIM_FAILED);
    assert!(out.human.contains("REFUSED"), "{}", out.human);
    assert!(out.human.contains("helm: not usable"), "{}", out.human);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_cluster_exits_3() {
    let m = MockApi::new();
    m.settings(|s| s.unreachable = true);
    let err = commands::preflight(
        &m.cluster(API_TIMEOUT),
        &RecordingRunner::new(&[]),
        &ctx(false),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, exit::ENVIRONMENT);
    assert!(
        err.to_string()
            .contains("cannot reach the Kubernetes API server"),
        "{err}"
    );
}

// --- install-hami --------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn install_dry_run_plans_clearing_the_stuck_release_and_changes_nothing() {
    let m = healthy();
    let r = helm("helm-list-pending-install.json");
    let out = commands::install_hami(
        &m.cluster(API_TIMEOUT),
        &r,
        &ctx(true),
        &InstallOptions::default(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::OK);
    let ids: Vec<&str> = out.json["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "installer",
            "clear-stuck-release",
            "upgrade-install",
            "verify-scheduler",
            "verify-webhook",
            "verify-device-plugin",
            "verify-node"
        ]
    );
    assert_eq!(
        r.lines(),
        [
            "helm version --short",
            "helm list -a -o json --filter '^hami$' --namespace kube-system"
        ]
    );
    assert!(m.seen().iter().all(|s| s.method == "GET"));
}

#[tokio::test(start_paused = true)]
async fn install_runs_helm_in_order_and_verifies_each_item_by_watch() {
    let m = healthy();
    let r = helm("helm-list-pending-install.json");
    let out = commands::install_hami(
        &m.cluster(API_TIMEOUT),
        &r,
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert_eq!(
        r.lines(),
        [
            "helm version --short",
            "helm list -a -o json --filter '^hami$' --namespace kube-system",
            "helm uninstall hami --namespace kube-system",
            "helm upgrade --install hami hami --repo https://project-hami.github.io/HAMi/ --version 2.10.0 --namespace kube-system --set scheduler.kubeScheduler.image.registry=registry.k8s.io --set scheduler.kubeScheduler.image.repository=kube-scheduler",
        ]
    );
    let checks = out.json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 5);
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:?}");
    assert!(out.human.contains("GPU-4f7efa07-0f69-f62e-5958-365ed3785eb2 NVIDIA H100 80GB HBM3 81559 MiB devcore 100 mode hami-core health true"), "{}", out.human);
    let uris: Vec<String> = m.seen().into_iter().map(|s| s.uri).collect();
    assert!(
        uris.iter().any(
            |u| u.starts_with("/apis/apps/v1/namespaces/kube-system/deployments?")
                && u.contains("fieldSelector=metadata.name%3Dhami-scheduler")
        ),
        "{uris:?}"
    );
    assert!(
        uris.iter()
            .any(|u| u.starts_with("/api/v1/nodes?") && u.contains("metadata.name%3Dgpu-vm-1")),
        "{uris:?}"
    );
}

/// A writer the test reads back.
#[derive(Clone, Default)]
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn install_reports_each_wait_with_its_deadline_and_what_hami_is_doing() {
    use lab_runner::progress::{Progress, Style};
    // HAMi comes up during the waits: the scheduler at 10 s, the webhook's endpoints at 20 s,
    // the device plugin at 30 s, the node's registration at 40 s.
    let m = hami_coming_up();
    let shown = Lines::default();
    let cluster = m
        .cluster(API_TIMEOUT)
        .with_progress(Progress::with_writer(Style::Lines, Box::new(shown.clone())));
    let out = commands::install_hami(
        &cluster,
        &helm("helm-list-deployed.json"),
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    let text = String::from_utf8(shown.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Each wait: its state when it started, against the deadline left, then what ended it (the
    // seconds are the mock's virtual time).
    for (first, last) in [
        (
            "Deployment hami-scheduler ready: 0/300 s after ",
            ": 1/1 replicas ready (ready) (done)",
        ),
        (
            "Endpoints hami-scheduler: 0/290 s after ",
            ": has a ready address (done)",
        ),
        (
            "DaemonSet hami-device-plugin: 0/280 s after ",
            ": 1/1 pods ready (ready) (done)",
        ),
        (
            "node registration: 0/270 s after ",
            ": registered by HAMi (1 GPU) (done)",
        ),
    ] {
        let task = &first[..first.find(':').unwrap()];
        let mine: Vec<&&str> = lines.iter().filter(|l| l.starts_with(task)).collect();
        assert!(mine.first().is_some_and(|l| l.starts_with(first)), "{text}");
        assert!(
            mine.first().is_some_and(|l| !l.ends_with("(done)")),
            "it waited: {text}"
        );
        let end = mine.last().unwrap();
        assert!(
            end.starts_with(&format!("{task}: 10/")) && end.ends_with(last),
            "{text}"
        );
    }
    assert!(
        lines.iter().any(
            |l| l.starts_with("Deployment hami-scheduler ready: 0/300 s after ")
                && l.ends_with(": 0/1 replicas ready (not ready)")
        ),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn install_waits_through_a_device_plugin_restart() {
    use crate::mockapi::lifecycle::device_plugin_restart;
    let m = healthy();
    let node: Value = crate::mockapi::fixtures::fixture("node-hami-v2.10-h100.json");
    let register = node["metadata"]["annotations"]["hami.io/node-nvidia-register"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut plugin = running_lab_pod("hami-device-plugin-7xk2p");
    plugin["metadata"]["namespace"] = "kube-system".into();
    plugin["metadata"]["labels"] =
        serde_json::json!({"app.kubernetes.io/component": "hami-device-plugin"});
    m.add(plugin);
    // The plugin crashed just before the install: not ready, the node's registration gone.
    m.patch(
        "daemonsets.apps",
        "kube-system",
        "hami-device-plugin",
        serde_json::json!({"status": {"numberReady": 0}}),
    );
    m.patch(
        "nodes",
        "",
        "gpu-vm-1",
        serde_json::json!({"metadata": {"annotations": {"hami.io/node-nvidia-register": null}}}),
    );
    m.start_world(device_plugin_restart(
        "kube-system",
        "hami-device-plugin-7xk2p",
        "gpu-vm-1",
        &register,
        Duration::from_secs(5),
        Duration::from_secs(40),
    ));
    let t0 = tokio::time::Instant::now();
    let out = commands::install_hami(
        &m.cluster(API_TIMEOUT),
        &helm("helm-list-deployed.json"),
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert!(
        t0.elapsed() >= Duration::from_secs(45),
        "it waited for the plugin to come back"
    );
}

#[tokio::test(start_paused = true)]
async fn install_reports_a_tag_mismatch_and_missing_endpoints_with_a_diagnosis() {
    let m = MockApi::new();
    m.add_fixture("node-hami-v2.10-h100.json")
        .add_fixture("daemonsets-hami-only.json")
        .add_fixture("deploy-hami-scheduler-tag-mismatch.json")
        .add_fixture("endpoints-hami-scheduler-empty.json");
    let r = helm("helm-list-deployed.json");
    let t0 = tokio::time::Instant::now();
    let out = commands::install_hami(
        &m.cluster(API_TIMEOUT),
        &r,
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(120),
        "the endpoints wait used the whole --wait-timeout"
    );
    assert_eq!(out.exit, exit::CLAIM_FAILED);
    let failed: Vec<&str> = out.json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["item"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        [
            "kube-scheduler image tag equals the server version without +k3sN",
            "webhook Service has endpoints"
        ]
    );
    let rules: Vec<&str> = out.json["diagnosis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert!(
        rules.contains(&"tag-mismatch") && rules.contains(&"webhook-no-endpoints"),
        "{rules:?}"
    );
    assert!(!r.lines().iter().any(|l| l.contains("uninstall")));
}

#[tokio::test(start_paused = true)]
async fn a_second_install_with_the_same_values_changes_nothing() {
    let m = healthy();
    let r = helm("helm-list-deployed.json");
    r.reply("helm get values", 0, r#"{"scheduler":{"kubeScheduler":{"image":{"registry":"registry.k8s.io","repository":"kube-scheduler"}}}}"#, "");
    let cluster = m.cluster(API_TIMEOUT);
    let out = commands::install_hami(
        &cluster,
        &r,
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert!(
        !r.lines().iter().any(|l| l.contains("upgrade")),
        "{:?}",
        r.lines()
    );
    assert_eq!(out.json["plan"]["steps"][0]["id"], "installer");
    assert!(
        out.json["plan"]["steps"][0]["why"]
            .as_str()
            .unwrap()
            .contains("serves no helmcharts.helm.cattle.io"),
        "k3s without the HelmChart CRD: helm"
    );
    assert_eq!(out.json["plan"]["steps"][1]["id"], "already-installed");
    let opts = InstallOptions {
        extra_set: vec!["devicePlugin.runtimeClassName=nvidia".into()],
        ..InstallOptions::default()
    };
    commands::install_hami(&cluster, &r, &ctx(false), &opts, Duration::from_secs(300))
        .await
        .unwrap();
    assert!(
        r.lines()
            .last()
            .unwrap()
            .starts_with("helm upgrade --install"),
        "{:?}",
        r.lines()
    );
}

#[tokio::test(start_paused = true)]
async fn install_without_helm_says_how_to_get_it_and_refuses_beside_the_gpu_operator() {
    let m = healthy();
    let err = commands::install_hami(
        &m.cluster(API_TIMEOUT),
        &RecordingRunner::new(&[]),
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, exit::ENVIRONMENT);
    assert!(err.to_string().contains("https://helm.sh"), "{err}");
    m.add_fixture("daemonsets-gpu-operator.json");
    let r = helm("helm-list-deployed.json");
    let out = commands::install_hami(
        &m.cluster(API_TIMEOUT),
        &r,
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::CLAIM_FAILED);
    assert!(
        !r.lines().iter().any(|l| l.contains("upgrade")),
        "{:?}",
        r.lines()
    );
}

// --- run -----------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_full_run_passes_all_five_on_the_real_h200_reports_and_packs() {
    let m = healthy_with_probes();
    let dir = tempfile::tempdir().unwrap();
    let out = commands::run(
        &m.cluster(API_TIMEOUT),
        &helm("helm-list-deployed.json"),
        &ctx(false),
        &run_args(dir.path(), false),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert_eq!(
        results(dir.path())
            .iter()
            .map(|(_, r)| r.as_str())
            .collect::<Vec<_>>(),
        ["pass"; 5]
    );
    let report = report(dir.path());
    assert_eq!(report["slice_mib"], 8000);
    assert_eq!(
        report["oversubscribe_mib"], 73000,
        "81559 − 8000, rounded down to 1000"
    );
    assert_eq!(report["cluster"]["node"], "gpu-vm-1");
    assert_eq!(report["cluster"]["hami_chart_version"], "2.10.0");
    assert_eq!(
        report["exercises"][0]["numbers"]["gpu_uuids"][0][0],
        H200_UUID
    );
    assert_eq!(
        report["exercises"][4]["numbers"]["gpu_uuids"][0][0],
        H200_UUID
    );
    assert!(
        report["exercises"][3]["reason"]
            .as_str()
            .unwrap()
            .contains("CardInsufficientMemory(gpu-vm-1)")
    );
    // Each exercise was judged over the files written for it.
    assert_eq!(
        report["exercises"][0]["evidence"],
        serde_json::json!(["pods/hami-share-a.json", "pods/hami-share-b.json"])
    );
    assert_eq!(
        report["exercises"][1]["evidence"],
        serde_json::json!(["probe/hami-share-a.json", "probe/hami-share-a.stderr"])
    );
    assert_eq!(
        report["exercises"][3]["evidence"],
        serde_json::json!([
            "pods/hami-oversubscribe.json",
            "events/hami-oversubscribe.json",
            "manifests/hami-oversubscribe.yaml"
        ])
    );
    assert_eq!(
        report["exercises"][4]["evidence"],
        serde_json::json!([
            "pods/hami-share-a.json",
            "pods/hami-share-b.json",
            "probe/hami-share-a.json",
            "probe/hami-share-b.json"
        ])
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/probe/hami-share-b.json")).unwrap(),
        h200("h1-8000.json"),
        "the probe's report is kept verbatim"
    );
    for e in report["exercises"].as_array().unwrap() {
        for ev in e["evidence"].as_array().unwrap() {
            assert!(
                dir.path().join("out").join(ev.as_str().unwrap()).is_file(),
                "evidence {ev} missing"
            );
        }
    }
    // What the API server was sent: the three lab pods, as rendered, in order.
    let posted: Vec<String> = m
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST")
        .map(|s| {
            s.body.unwrap()["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        posted,
        ["hami-share-a", "hami-share-b", "hami-oversubscribe"]
    );
    // The gpu-probe that ran was the one copied in, with the slice.
    let runs: Vec<String> = m
        .exec_calls()
        .into_iter()
        .filter(|c| c.command[0] == "/tmp/gpu-probe")
        .map(|c| format!("{} {}", c.pod, c.command.join(" ")))
        .collect();
    assert_eq!(
        runs,
        [
            "hami-share-a /tmp/gpu-probe all --output json --expect-mib 8000",
            "hami-share-b /tmp/gpu-probe all --output json --expect-mib 8000",
        ]
    );
    // The contract with evidence-pack: the folder packs, and the five claims keep their verdicts.
    let plan = evidence_pack::bundle::plan(&dir.path().join("out"), None).unwrap();
    assert_eq!(plan.summary.claims.len(), 5);
    assert!(
        plan.summary
            .claims
            .iter()
            .all(|c| c.verdict == evidence_pack::model::ClaimVerdict::Pass)
    );
    // Nothing left open: the pull-progress watch was stopped.
    tokio::task::yield_now().await;
    assert!(m.open().is_empty(), "{:?}", m.open());
    // A second run reuses the pods.
    let again = commands::run(
        &m.cluster(API_TIMEOUT),
        &helm("helm-list-deployed.json"),
        &ctx(false),
        &run_args(dir.path(), false),
    )
    .await
    .unwrap();
    assert_eq!(again.exit, exit::OK, "{}", again.human);
}

#[tokio::test(start_paused = true)]
async fn a_full_run_on_the_real_bare_report_fails_e2_e3_and_e5() {
    use crate::mockapi::exec::Reply;
    let m = healthy_with_probes();
    m.probe_reply("*", "all", Reply::new(&h200("h2-bare.json"), "", 1));
    let dir = tempfile::tempdir().unwrap();
    let out = commands::run(
        &m.cluster(API_TIMEOUT),
        &helm("helm-list-deployed.json"),
        &ctx(false),
        &run_args(dir.path(), false),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::CLAIM_FAILED, "{}", out.human);
    let r: Vec<String> = results(dir.path()).into_iter().map(|(_, r)| r).collect();
    assert_eq!(r, ["pass", "fail", "fail", "pass", "fail"]);
    let report = report(dir.path());
    let e2 = report["exercises"][1]["reason"].as_str().unwrap();
    assert!(e2.contains("more than the 8000 MiB slice"), "{e2}");
    assert!(e2.contains("exited Some(1)"), "{e2}");
    assert!(
        report["exercises"][4]["reason"]
            .as_str()
            .unwrap()
            .starts_with("E2 failed"),
        "{}",
        report["exercises"][4]["reason"]
    );
}

#[tokio::test(start_paused = true)]
async fn run_audit_with_an_overhead_bound_judges_a2_from_both_overhead_reports() {
    use crate::mockapi::exec::Reply;
    let m = healthy_with_probes();
    // Both pods answer with the same real overhead report: 0 % overhead, within the bound.
    m.probe_reply(
        "hami-baseline",
        "overhead",
        Reply::new(&h200("p1-overhead-hami.json"), "", 0),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut args = run_args(dir.path(), true);
    args.max_overhead_pct = Some(1000.0);
    commands::run(
        &m.cluster(API_TIMEOUT),
        &helm("helm-list-deployed.json"),
        &ctx(false),
        &args,
    )
    .await
    .unwrap();
    let ids: Vec<String> = results(dir.path()).into_iter().map(|(i, _)| i).collect();
    assert_eq!(ids, ["E1", "E2", "E3", "E4", "E5", "A1", "A2"]);
    let first = report(dir.path());
    assert_eq!(first["max_overhead_pct"], 1000.0);
    let a2 = &first["exercises"][6];
    assert_eq!(a2["result"], "pass", "{}", a2["reason"]);
    assert_eq!(
        a2["evidence"],
        serde_json::json!([
            "probe/hami-share-a-overhead.json",
            "probe/hami-baseline-overhead.json"
        ])
    );
    // With the real pair (bare vs HAMi-core) and a bound of 0 %, HAMi-core's cost fails A2.
    let m = healthy_with_probes();
    let dir = tempfile::tempdir().unwrap();
    let mut args = run_args(dir.path(), true);
    args.max_overhead_pct = Some(0.0);
    commands::run(
        &m.cluster(API_TIMEOUT),
        &helm("helm-list-deployed.json"),
        &ctx(false),
        &args,
    )
    .await
    .unwrap();
    let a2 = &report(dir.path())["exercises"][6];
    assert_eq!(a2["id"], "A2");
    assert_eq!(a2["result"], "fail", "{}", a2["reason"]);
}

#[tokio::test(start_paused = true)]
async fn run_audit_runs_the_three_probes_in_pod_a_and_the_baseline_pod_is_gone_after() {
    let m = healthy_with_probes();
    let dir = tempfile::tempdir().unwrap();
    let out = commands::run(
        &m.cluster(API_TIMEOUT),
        &helm("helm-list-deployed.json"),
        &ctx(false),
        &run_args(dir.path(), true),
    )
    .await
    .unwrap();
    let ids: Vec<String> = results(dir.path()).into_iter().map(|(i, _)| i).collect();
    assert_eq!(ids, ["E1", "E2", "E3", "E4", "E5", "A1"]);
    // The real H200 audit: three paths escape HAMi-core, so A1 fails and the run exits 1.
    let a1 = &report(dir.path())["exercises"][5];
    assert_eq!(a1["result"], "fail");
    assert!(
        a1["reason"]
            .as_str()
            .unwrap()
            .contains("3 path(s) holding more than the 8000 MiB slice"),
        "{a1}"
    );
    assert!(
        a1["numbers"]["overhead_p50_us_with_vs_without_hami"]["empty kernel launch"].is_object(),
        "{a1}"
    );
    assert_eq!(out.exit, exit::CLAIM_FAILED);
    let commands: Vec<String> = m
        .exec_calls()
        .iter()
        .map(|c| format!("{} {}", c.pod, c.command.join(" ")))
        .collect();
    for expected in [
        "hami-share-a /tmp/gpu-probe audit --expect-mib 8000 --output json",
        "hami-share-a /tmp/gpu-probe overhead --output json",
        "hami-share-a /tmp/gpu-probe compute --seconds 5 --output json",
        "hami-baseline /tmp/gpu-probe overhead --output json",
    ] {
        assert!(
            commands.iter().any(|c| c == expected),
            "{expected} not run: {commands:?}"
        );
    }
    let manifest =
        std::fs::read_to_string(dir.path().join("out/manifests/hami-baseline.yaml")).unwrap();
    assert!(manifest.contains("CUDA_DISABLE_CONTROL"), "{manifest}");
    assert!(
        !m.has("pods", "default", "hami-baseline"),
        "deleted, and waited for until gone"
    );
}

#[tokio::test(start_paused = true)]
async fn run_refuses_to_start_without_webhook_endpoints() {
    let m = MockApi::new();
    m.add_fixture("node-hami-v2.10-h100.json")
        .add_fixture("deploy-hami-scheduler-tag-match.json")
        .add_fixture("endpoints-hami-scheduler-empty.json");
    let dir = tempfile::tempdir().unwrap();
    let out = commands::run(
        &m.cluster(API_TIMEOUT),
        &RecordingRunner::new(&[]),
        &ctx(false),
        &run_args(dir.path(), false),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::ENVIRONMENT);
    assert!(
        m.seen().iter().all(|s| s.method == "GET"),
        "no pod may be created"
    );
    assert!(
        report(dir.path())["exercises"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no endpoints")
    );
}

#[tokio::test(start_paused = true)]
async fn run_on_an_unregistered_node_is_an_environment_error() {
    let m = MockApi::new();
    m.add_fixture("node-gpu-on-unregistered.json");
    let dir = tempfile::tempdir().unwrap();
    let err = commands::run(
        &m.cluster(API_TIMEOUT),
        &RecordingRunner::new(&[]),
        &ctx(false),
        &run_args(dir.path(), false),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, exit::ENVIRONMENT);
    assert!(err.to_string().contains("cluster-ctl doctor"));
}

#[tokio::test(start_paused = true)]
async fn share_pods_the_webhook_missed_fail_e1_with_a_diagnosis() {
    let m = healthy_with_probes();
    m.settings(|s| s.webhook_fails = true);
    let dir = tempfile::tempdir().unwrap();
    let mut args = run_args(dir.path(), false);
    args.pod_timeout = Duration::from_secs(120);
    let out = commands::run(
        &m.cluster(API_TIMEOUT),
        &RecordingRunner::new(&[]),
        &ctx(false),
        &args,
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::CLAIM_FAILED, "{}", out.human);
    let report = report(dir.path());
    let reason = report["exercises"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("timed out after 120 s"), "{reason}");
    assert!(reason.contains("the webhook missed it"), "{reason}");
    assert!(
        reason.contains("Insufficient nvidia.com/gpumem"),
        "{reason}"
    );
    assert_eq!(report["exercises"][3]["result"], "not-run");
    assert_eq!(
        m.seen().into_iter().filter(|s| s.method == "POST").count(),
        2,
        "no oversubscribe pod"
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_is_not_there_leaves_e2_e3_not_run() {
    let m = healthy();
    let dir = tempfile::tempdir().unwrap();
    let mut args = run_args(dir.path(), false);
    args.probe_bin = Some(dir.path().join("no-such-gpu-probe"));
    let out = commands::run(
        &m.cluster(API_TIMEOUT),
        &helm("helm-list-deployed.json"),
        &ctx(false),
        &args,
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::ENVIRONMENT, "{}", out.human);
    let r: Vec<String> = results(dir.path()).into_iter().map(|(_, r)| r).collect();
    assert_eq!(r, ["pass", "not-run", "not-run", "pass", "not-run"]);
    assert!(
        report(dir.path())["exercises"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("--probe-bin")
    );
}

// --- doctor, probe, cleanup ----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn doctor_finds_unmutated_pods_and_the_full_card_view() {
    let m = healthy();
    m.add_fixture("pod-unmutated-default-scheduler.json");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("probe")).unwrap();
    std::fs::write(
        dir.path().join("probe/hami-share-b.json"),
        h100_bare("h100-bare-all-expect-8000.json"),
    )
    .unwrap();
    let out = commands::doctor(&m.cluster(API_TIMEOUT), &ctx(false), Some(dir.path()))
        .await
        .unwrap();
    assert_eq!(out.exit, exit::CLAIM_FAILED);
    let rules: Vec<&str> = out.json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        [
            "default-scheduler-pods",
            "full-card-view",
            "gpumem-not-allocatable"
        ]
    );
    let fine = commands::doctor(&healthy().cluster(API_TIMEOUT), &ctx(false), None)
        .await
        .unwrap();
    assert_eq!(fine.exit, exit::OK, "{}", fine.human);
}

#[tokio::test(start_paused = true)]
async fn probe_copies_the_binary_runs_it_with_the_containers_slice_and_keeps_the_report() {
    let m = healthy();
    m.add(running_lab_pod("hami-share-a"));
    let bare = h100_bare("h100-bare-all-expect-8000.json");
    m.probe_reply(
        "hami-share-a",
        "all",
        crate::mockapi::exec::Reply::new(&bare, "[HAMI-core Msg] cleanup\n", 1),
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("gpu-probe");
    std::fs::write(&bin, b"probe-bytes").unwrap();
    let out = commands::probe(
        &m.cluster(API_TIMEOUT),
        &ctx(false),
        "hami-share-a",
        None,
        None,
        &bin,
        Some(dir.path()),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, 1, "the probe's own exit code");
    assert_eq!(out.json["verdict"]["outcome"], "not-verified");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("probe/hami-share-a.json")).unwrap(),
        bare
    );
    assert!(
        std::fs::read_to_string(dir.path().join("probe/hami-share-a.stderr"))
            .unwrap()
            .contains("HAMI-core")
    );
    let calls = m.exec_calls();
    assert_eq!(calls[0].command[..2], ["sh", "-c"]);
    assert_eq!(
        crate::mockapi::exec::archive_entries(&calls[0].stdin),
        [("gpu-probe".to_owned(), 0o755, b"probe-bytes".to_vec())]
    );
    assert_eq!(
        calls[1].command,
        [
            "/tmp/gpu-probe",
            "all",
            "--output",
            "json",
            "--expect-mib",
            "8000"
        ]
    );
    // A pod that does not exist: exit 3 naming it.
    let err = commands::probe(
        &m.cluster(API_TIMEOUT),
        &ctx(false),
        "nope",
        None,
        None,
        &bin,
        None,
        Duration::from_secs(300),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, exit::ENVIRONMENT);
    assert!(
        err.to_string().contains("pod default/nope does not exist"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn cleanup_plans_then_deletes_waits_until_gone_and_uninstalls() {
    let m = healthy();
    prepare(Command::Cleanup, &m);
    let r = helm("helm-list-deployed.json");
    let cluster = m.cluster(API_TIMEOUT);
    let plan = commands::cleanup(&cluster, &r, &ctx(true), true, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(
        plan.human
            .contains("hami-oversubscribe, hami-share-a, hami-share-b"),
        "{}",
        plan.human
    );
    assert!(
        plan.human
            .contains("helm uninstall hami --namespace kube-system")
    );
    assert_eq!(m.lab_pods().len(), 3, "a dry run deletes nothing");
    let done = commands::cleanup(&cluster, &r, &ctx(false), true, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(done.exit, exit::OK);
    assert_eq!(done.json["deleted"].as_array().unwrap().len(), 3);
    assert!(
        m.lab_pods().is_empty(),
        "gone, not Terminating: {:?}",
        m.lab_pods()
    );
    assert_eq!(
        r.lines().last().map(String::as_str),
        Some("helm uninstall hami --namespace kube-system")
    );
}
