//! Tests of the subcommands: pure parts on fixtures, API calls against the mock API server
//! (`mockapi`), helm through `RecordingRunner`.

use std::time::Duration;

use lab_runner::RecordingRunner;
use serde_json::Value;

use crate::commands::*;
use crate::decide::OversubscribeEvidence;
use crate::helm::{HelmTarget, InstallOptions, ReleaseState};
use crate::mockapi::MockApi;
use crate::report::{Exercise, ExerciseResult};
use crate::testdata::*;

fn ctx(dry_run: bool) -> Ctx {
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
        installer: crate::helmchart::InstallerChoice::Auto,
    }
}

fn healthy_mock() -> MockApi {
    let m = MockApi::new();
    m.add_fixture("node-hami-v2.10-h100.json")
        .add_fixture("daemonsets-hami-only.json")
        .add_fixture("deploy-hami-scheduler-tag-match.json")
        .add_fixture("endpoints-hami-scheduler-ready.json");
    m
}

fn helm(list_fixture: &str) -> RecordingRunner {
    let r = RecordingRunner::new(&["helm"]);
    r.reply("helm version", 0, "v3.16.2+g13654a5\n", "");
    r.reply("helm list", 0, &fixture_text(list_fixture), "");
    r
}

fn run_args(out: &std::path::Path) -> RunArgs {
    RunArgs {
        card_mib: None,
        slice_mib: None,
        oversubscribe_mib: None,
        image: crate::manifests::DEFAULT_IMAGE.into(),
        out: out.to_path_buf(),
        probe_bin: Some(out.join("no-such-gpu-probe")),
        node: None,
        pod_timeout: Duration::from_secs(5),
        event_timeout: Duration::from_secs(5),
        probe_timeout: Duration::from_secs(5),
        audit: false,
    }
}

// --- preflight ---------------------------------------------------------------------------------

#[test]
fn preflight_refuses_gpu_operator_and_unlabelled_nodes() {
    let mut s = crate::doctor::Snapshot {
        server_git_version: "v1.31.4+k3s1".into(),
        nodes: vec![fixture_node("node-unlabelled.json")],
        daemonsets: fixture_daemonsets("daemonsets-gpu-operator.json"),
        ..Default::default()
    };
    let r = preflight_report(&s, Some(ReleaseState::Absent));
    assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
    assert!(r.problems[0].contains("gpu-operator/nvidia-device-plugin-daemonset"));
    assert!(r.problems[2].contains("kubectl label node gpu-vm-1 gpu=on"));
    s.daemonsets = fixture_daemonsets("daemonsets-hami-only.json");
    s.nodes = vec![fixture_node("node-gpu-on-unregistered.json")];
    assert!(preflight_report(&s, None).problems.is_empty());
}

#[tokio::test]
async fn preflight_reads_the_cluster_and_the_helm_release() {
    let m = healthy_mock();
    let r = helm("helm-list-pending-install.json");
    let out = preflight(&m.client(), &r, &ctx(false)).await.unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert!(out.human.contains("pending-install"), "{}", out.human);
    assert_eq!(out.json["server_version"], "v1.31.4+k3s1");
    assert_eq!(out.json["helm_major"], 3);
    assert_eq!(
        r.lines(),
        vec![
            "helm list -a -o json --filter '^hami$' --namespace kube-system",
            "helm version --short"
        ]
    );
}

#[tokio::test]
async fn preflight_with_gpu_operator_exits_1() {
    let m = healthy_mock();
    m.add_fixture("daemonsets-gpu-operator.json");
    let out = preflight(&m.client(), &RecordingRunner::new(&[]), &ctx(false))
        .await
        .unwrap();
    assert_eq!(out.exit, exit::CLAIM_FAILED);
    assert!(out.human.contains("REFUSED"), "{}", out.human);
    assert!(out.human.contains("helm: not usable"), "{}", out.human);
}

#[tokio::test]
async fn unreachable_cluster_exits_3() {
    let m = MockApi::new();
    m.set_unreachable();
    let err = preflight(&m.client(), &RecordingRunner::new(&[]), &ctx(false))
        .await
        .unwrap_err();
    assert_eq!(err.code, exit::ENVIRONMENT);
    assert!(
        err.to_string()
            .contains("cannot reach the Kubernetes API server"),
        "{err}"
    );
}

// --- install-hami ------------------------------------------------------------------------------

#[tokio::test]
async fn install_dry_run_plans_clearing_the_stuck_release_and_changes_nothing() {
    let m = healthy_mock();
    let r = helm("helm-list-pending-install.json");
    let out = install_hami(
        &m.client(),
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
        vec![
            "helm version --short",
            "helm list -a -o json --filter '^hami$' --namespace kube-system"
        ]
    );
    assert!(m.seen().iter().all(|s| s.method == "GET"));
}

#[tokio::test]
async fn install_runs_helm_in_order_and_verifies_each_item() {
    let m = healthy_mock();
    let r = helm("helm-list-pending-install.json");
    let out = install_hami(
        &m.client(),
        &r,
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert_eq!(
        r.lines(),
        vec![
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
    // The waits are watches on single objects.
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

#[tokio::test]
async fn install_reports_a_tag_mismatch_and_missing_endpoints_with_diagnosis() {
    let m = MockApi::new();
    m.add_fixture("node-hami-v2.10-h100.json")
        .add_fixture("daemonsets-hami-only.json")
        .add_fixture("deploy-hami-scheduler-tag-mismatch.json")
        .add_fixture("endpoints-hami-scheduler-empty.json");
    let r = helm("helm-list-deployed.json");
    let out = install_hami(
        &m.client(),
        &r,
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_millis(500),
    )
    .await
    .unwrap();
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
        vec![
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

#[tokio::test]
async fn second_install_with_the_same_values_changes_nothing() {
    let m = healthy_mock();
    let r = helm("helm-list-deployed.json");
    r.reply(
        "helm get values",
        0,
        r#"{"scheduler":{"kubeScheduler":{"image":{"registry":"registry.k8s.io","repository":"kube-scheduler"}}}}"#,
        "",
    );
    let out = install_hami(
        &m.client(),
        &r,
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(5),
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
    assert_eq!(out.json["plan"]["steps"][1]["id"], "already-installed");
    // Other values (e.g. a new --set) do upgrade.
    let opts = InstallOptions {
        extra_set: vec!["devicePlugin.runtimeClassName=nvidia".into()],
        ..InstallOptions::default()
    };
    install_hami(&m.client(), &r, &ctx(false), &opts, Duration::from_secs(5))
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

#[tokio::test]
async fn install_without_helm_says_how_to_get_it() {
    let m = healthy_mock();
    let err = install_hami(
        &m.client(),
        &RecordingRunner::new(&[]),
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, exit::ENVIRONMENT);
    assert!(err.to_string().contains("https://helm.sh"), "{err}");
}

#[tokio::test]
async fn install_refuses_beside_the_gpu_operator() {
    let m = healthy_mock();
    m.add_fixture("daemonsets-gpu-operator.json");
    let r = helm("helm-list-deployed.json");
    let out = install_hami(
        &m.client(),
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

#[test]
fn install_checks_on_fixtures() {
    let node = crate::decide::node_registration(&fixture_node("node-gpu-on-unregistered.json"));
    let checks = install_checks("v1.31.4+k3s1", None, None, None, &[node]);
    assert_eq!(checks.iter().filter(|c| !c.ok).count(), 5);
    assert!(checks[4].item.contains("gpu-vm-1"));
}

// --- run ---------------------------------------------------------------------------------------

#[test]
fn dry_run_offline_for_the_a6000() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_dry_offline(49140, &ctx(true), &run_args(dir.path())).unwrap();
    assert_eq!(out.json["sizing"]["slice_mib"], 8000);
    let over = out.json["sizing"]["oversubscribe_mib"].as_u64().unwrap();
    assert!(over > 33140 && over <= 49140);
    assert!(out.human.contains("# manifests/hami-oversubscribe.yaml"));
    assert!(out.human.contains("[watch-filtering-failed]"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "dry run writes nothing"
    );
    let mut bad = run_args(dir.path());
    bad.oversubscribe_mib = Some(30000);
    assert_eq!(
        run_dry_offline(49140, &ctx(true), &bad).unwrap_err().code,
        exit::USAGE
    );
}

#[tokio::test]
async fn run_against_the_mock_writes_the_contract_files() {
    let m = healthy_mock();
    m.add_fixture("events-oversubscribe.json");
    m.on_create(
        "pods",
        "hami-share-a",
        serde_json::to_value(fixture_pod("pod-hami-share-a-running.json")).unwrap(),
    );
    m.on_create(
        "pods",
        "hami-share-b",
        serde_json::to_value(fixture_pod("pod-hami-share-b-running.json")).unwrap(),
    );
    m.on_create(
        "pods",
        "hami-oversubscribe",
        serde_json::to_value(fixture_pod("pod-hami-oversubscribe-pending.json")).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let r = helm("helm-list-deployed.json");
    // The fixture's oversubscribe pod asks 75000 MiB (fits the empty H100, not beside 2 × 8000).
    let mut args = run_args(dir.path());
    args.oversubscribe_mib = Some(75000);
    let out = run(&m.client(), &r, &ctx(false), &args).await.unwrap();
    // No probe binary: E2, E3 (and so E5) could not run; nothing failed → exit 3.
    assert_eq!(out.exit, exit::ENVIRONMENT, "{}", out.human);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap())
            .unwrap();
    assert_eq!(report["schema"], "hami-isolation-lab/cluster-run");
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["slice_mib"], 8000);
    assert_eq!(report["oversubscribe_mib"], 75000);
    assert_eq!(report["cluster"]["server_version"], "v1.31.4+k3s1");
    assert_eq!(report["cluster"]["node"], "gpu-vm-1");
    assert_eq!(report["cluster"]["gpus"][0]["devmem_mib"], 81559);
    assert_eq!(
        report["cluster"]["gpus"][0]["type"],
        "NVIDIA H100 80GB HBM3"
    );
    assert_eq!(report["cluster"]["hami_chart_version"], "2.10.0");
    assert_eq!(
        report["cluster"]["scheduler_image"],
        "registry.cn-hangzhou.aliyuncs.com/google_containers/kube-scheduler:v1.31.4"
    );
    let results: Vec<(&str, &str)> = report["exercises"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        results,
        vec![
            ("E1", "pass"),
            ("E2", "not-run"),
            ("E3", "not-run"),
            ("E4", "pass"),
            ("E5", "not-run")
        ]
    );
    assert!(
        report["exercises"][3]["reason"]
            .as_str()
            .unwrap()
            .contains("CardInsufficientMemory")
    );
    assert!(
        report["exercises"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("--probe-bin")
    );
    for f in [
        "cluster/version.json",
        "cluster/nodes.json",
        "cluster/hami-pods.json",
        "cluster/events.json",
        "cluster/daemonsets.json",
        "cluster/helm-status.json",
        "manifests/hami-share-a.yaml",
        "manifests/hami-share-b.yaml",
        "manifests/hami-oversubscribe.yaml",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    for e in report["exercises"].as_array().unwrap() {
        for ev in e["evidence"].as_array().unwrap() {
            assert!(
                dir.path().join(ev.as_str().unwrap()).is_file(),
                "evidence {ev} missing"
            );
        }
    }
    // Three pods were created, in order.
    let posts: Vec<String> = m
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST")
        .map(|s| s.uri)
        .collect();
    assert_eq!(posts.len(), 3);
    // A second run reuses the pods (no conflict error).
    let again = run(&m.client(), &r, &ctx(false), &args).await.unwrap();
    assert_eq!(again.exit, exit::ENVIRONMENT, "{}", again.human);
}

#[tokio::test]
async fn run_refuses_to_start_without_webhook_endpoints() {
    let m = MockApi::new();
    m.add_fixture("node-hami-v2.10-h100.json")
        .add_fixture("deploy-hami-scheduler-tag-match.json")
        .add_fixture("endpoints-hami-scheduler-empty.json");
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &m.client(),
        &RecordingRunner::new(&[]),
        &ctx(false),
        &run_args(dir.path()),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::ENVIRONMENT);
    assert!(
        m.seen().iter().all(|s| s.method == "GET"),
        "no pod may be created"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap())
            .unwrap();
    assert!(
        report["exercises"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no endpoints")
    );
}

#[tokio::test]
async fn run_on_an_unregistered_node_is_an_environment_error() {
    let m = MockApi::new();
    m.add_fixture("node-gpu-on-unregistered.json");
    let dir = tempfile::tempdir().unwrap();
    let err = run(
        &m.client(),
        &RecordingRunner::new(&[]),
        &ctx(false),
        &run_args(dir.path()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, exit::ENVIRONMENT);
    assert!(err.to_string().contains("cluster-ctl doctor"));
}

#[test]
fn exercise_decisions() {
    let run = |stdout: &str, code| crate::api::ProbeRun {
        stdout: stdout.into(),
        stderr: String::new(),
        exit_code: Some(code),
    };
    let mut e = Exercise::new("E2", "c");
    probe_exercise(
        &mut e,
        "hami-share-a",
        &run(r#"{"verdict":{"outcome":"verified","exit_code":0}}"#, 0),
        8000,
    );
    assert_eq!(e.result, ExerciseResult::Pass);
    assert_eq!(e.numbers["expect_mib"], 8000);
    probe_exercise(
        &mut e,
        "hami-share-a",
        &run(r#"{"verdict":{"outcome":"not-verified","exit_code":1}}"#, 1),
        8000,
    );
    assert_eq!(e.result, ExerciseResult::Fail);
    probe_exercise(&mut e, "hami-share-a", &run("garbage", 3), 8000);
    assert_eq!(e.result, ExerciseResult::Fail);
    assert!(e.reason.contains("no JSON verdict"));

    let mut e4 = Exercise::new("E4", "c");
    let named = OversubscribeEvidence::Named {
        nodes: vec!["n".into()],
        message: "1 nodes CardInsufficientMemory(n)".into(),
    };
    oversubscribe_exercise(&mut e4, &named, "Pending");
    assert_eq!(e4.result, ExerciseResult::Pass);
    oversubscribe_exercise(&mut e4, &named, "Running");
    assert_eq!(e4.result, ExerciseResult::Fail);
    oversubscribe_exercise(
        &mut e4,
        &OversubscribeEvidence::GenericOnly {
            message: "no available node, 1 nodes do not meet".into(),
        },
        "Pending",
    );
    assert_eq!(e4.result, ExerciseResult::Fail);
    assert!(e4.reason.contains("HAMi < 2.7"));
    oversubscribe_exercise(&mut e4, &OversubscribeEvidence::Nothing, "Running");
    assert!(e4.reason.contains("scheduled beside"));

    let pass = |id: &str| {
        let mut e = Exercise::new(id, "c");
        e.set(ExerciseResult::Pass, "ok");
        e
    };
    let mut e5 = Exercise::new("E5", "c");
    let active = hami_active_report();
    let reports = [
        ("hami-share-a", Some(active.as_str())),
        ("hami-share-b", Some(active.as_str())),
    ];
    mechanism_exercise(&mut e5, &pass("E1"), &pass("E2"), &pass("E3"), &reports);
    assert_eq!(e5.result, ExerciseResult::Pass, "{}", e5.reason);
    assert!(
        e5.reason.contains("/usr/local/vgpu/libvgpu.so"),
        "{}",
        e5.reason
    );
    assert_eq!(
        e5.numbers["hami-share-a_mechanism"]["region_limits_mib"][0],
        8000
    );
    let mut f = pass("E3");
    f.set(ExerciseResult::Fail, "probe saw 81559 MiB");
    mechanism_exercise(&mut e5, &pass("E1"), &pass("E2"), &f, &reports);
    assert_eq!(e5.result, ExerciseResult::Fail);
    assert!(e5.reason.starts_with("E3 failed"));
    mechanism_exercise(
        &mut e5,
        &pass("E1"),
        &Exercise::new("E2", "c"),
        &pass("E3"),
        &reports,
    );
    assert_eq!(e5.result, ExerciseResult::NotRun);
    // Passing probes whose reports show no HAMi-core (the real bare-H100 report) fail E5.
    let bare = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gpu-probe/tests/data/h100-bare-all-expect-8000.json"
    ))
    .unwrap();
    let bare_reports = [
        ("hami-share-a", Some(bare.as_str())),
        ("hami-share-b", Some(active.as_str())),
    ];
    mechanism_exercise(
        &mut e5,
        &pass("E1"),
        &pass("E2"),
        &pass("E3"),
        &bare_reports,
    );
    assert_eq!(e5.result, ExerciseResult::Fail);
    assert!(
        e5.reason.contains("does not show HAMi-core"),
        "{}",
        e5.reason
    );
    mechanism_exercise(
        &mut e5,
        &pass("E1"),
        &pass("E2"),
        &pass("E3"),
        &[("hami-share-a", None)],
    );
    assert_eq!(e5.result, ExerciseResult::Fail);
}

#[test]
fn probe_expectation_and_node_choice() {
    let pod = fixture_pod("pod-hami-share-a-running.json");
    assert_eq!(container_gpumem(&pod, None), Some(8000));
    assert_eq!(container_gpumem(&pod, Some("cuda")), Some(8000));
    assert_eq!(container_gpumem(&pod, Some("other")), None);
    let regs = vec![
        crate::decide::node_registration(&fixture_node("node-gpu-on-unregistered.json")),
        crate::decide::node_registration(&fixture_node("node-hami-v2.9-a6000.json")),
    ];
    assert_eq!(pick_node(&regs, None).unwrap().gpus[0].devmem_mib, 49140);
    assert!(pick_node(&regs, Some("nope")).is_err());
    assert!(pick_node(&regs[..1], None).unwrap_err().contains("doctor"));
}

// --- doctor, cleanup ---------------------------------------------------------------------------

#[tokio::test]
async fn doctor_finds_unmutated_pods_and_the_full_card_view() {
    let m = healthy_mock();
    m.add_fixture("pod-unmutated-default-scheduler.json");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("probe")).unwrap();
    // A real report of a probe that saw the whole card (the bare H100).
    std::fs::write(
        dir.path().join("probe/hami-share-b.json"),
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../gpu-probe/tests/data/h100-bare-all-expect-8000.json"
        ))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("probe/hami-share-b.stderr"), "").unwrap();
    let out = doctor(&m.client(), &ctx(false), Some(dir.path()))
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
        vec![
            "default-scheduler-pods",
            "full-card-view",
            "gpumem-not-allocatable"
        ]
    );
    let healthy = doctor(&healthy_mock().client(), &ctx(false), None)
        .await
        .unwrap();
    assert_eq!(healthy.exit, exit::OK, "{}", healthy.human);
}

#[tokio::test]
async fn cleanup_plans_then_deletes_and_uninstalls() {
    let m = healthy_mock();
    let s = crate::sizing::size(
        &[crate::sizing::Card {
            uuid: None,
            devmem_mib: 49140,
        }],
        None,
        None,
    )
    .unwrap();
    for p in crate::manifests::render_all(&s, "default", crate::manifests::DEFAULT_IMAGE).unwrap() {
        m.add(serde_json::to_value(&p.pod).unwrap());
    }
    let r = helm("helm-list-deployed.json");
    let plan = cleanup(&m.client(), &r, &ctx(true), true, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        plan.human
            .contains("hami-share-a, hami-share-b, hami-oversubscribe")
            || plan
                .human
                .contains("hami-oversubscribe, hami-share-a, hami-share-b"),
        "{}",
        plan.human
    );
    assert!(
        plan.human
            .contains("helm uninstall hami --namespace kube-system")
    );
    assert!(
        m.has("pods", "default", "hami-share-a"),
        "dry run deletes nothing"
    );
    let done = cleanup(&m.client(), &r, &ctx(false), true, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(done.exit, exit::OK);
    assert_eq!(done.json["deleted"].as_array().unwrap().len(), 3);
    assert!(!m.has("pods", "default", "hami-share-a"));
    assert_eq!(
        r.lines().last().map(String::as_str),
        Some("helm uninstall hami --namespace kube-system")
    );
}

#[tokio::test]
async fn stuck_share_pods_fail_e1_with_a_diagnosis() {
    let m = healthy_mock();
    m.add_fixture("events-unmutated.json");
    let unmutated = fixture_pod("pod-unmutated-default-scheduler.json");
    m.on_create(
        "pods",
        "hami-share-a",
        serde_json::to_value(&unmutated).unwrap(),
    );
    let mut b = unmutated;
    b.metadata.name = Some("hami-share-b".into());
    m.on_create("pods", "hami-share-b", serde_json::to_value(&b).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut args = run_args(dir.path());
    args.pod_timeout = Duration::from_millis(500);
    let out = run(&m.client(), &RecordingRunner::new(&[]), &ctx(false), &args)
        .await
        .unwrap();
    assert_eq!(out.exit, exit::CLAIM_FAILED, "{}", out.human);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap())
            .unwrap();
    let reason = report["exercises"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("timed out"), "{reason}");
    assert!(reason.contains("the webhook missed it"), "{reason}");
    assert!(
        reason.contains("Insufficient nvidia.com/gpumem"),
        "{reason}"
    );
    assert_eq!(report["exercises"][3]["result"], "not-run");
    // The oversubscribe pod is not created when the slices are not in place.
    let posts = m.seen().into_iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 2);
}

#[test]
fn a1_fails_on_the_real_bare_h100_audit_and_passes_when_every_path_is_capped() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gpu-probe/tests/data/h100-bare-audit-expect-8000.json"
    ))
    .unwrap();
    let mut ex = crate::report::Exercise::new("A1", AUDIT_CLAIM);
    audit_exercise(&mut ex, &text, 8000);
    assert_eq!(ex.result, crate::report::ExerciseResult::Fail);
    assert!(ex.reason.contains("9 path(s) escaped"), "{}", ex.reason);
    assert_eq!(ex.numbers["max_past_slice_mib"], 6000);

    let mut report: gpu_probe::report::Report = serde_json::from_str(&text).unwrap();
    for p in &mut report.audit.as_mut().unwrap().paths {
        p.outcome = gpu_probe::report::AuditOutcome::Capped;
        p.past_slice_bytes = 0;
    }
    let mut ex = crate::report::Exercise::new("A1", AUDIT_CLAIM);
    audit_exercise(&mut ex, &serde_json::to_string(&report).unwrap(), 8000);
    assert_eq!(
        ex.result,
        crate::report::ExerciseResult::Pass,
        "{}",
        ex.reason
    );

    let mut ex = crate::report::Exercise::new("A1", AUDIT_CLAIM);
    audit_exercise(&mut ex, "not json", 8000);
    assert_eq!(ex.result, crate::report::ExerciseResult::Fail);
}

#[test]
fn overhead_difference_from_two_real_reports() {
    let real = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gpu-probe/tests/data/h100-bare-overhead.json"
    ))
    .unwrap();
    let same = overhead_difference(&real, &real);
    assert_eq!(same["cuMemAlloc_v2 1 MiB"]["difference"], 0.0);
    assert!(same.contains_key("empty kernel launch"));
    let mut slower: gpu_probe::report::Report = serde_json::from_str(&real).unwrap();
    for a in &mut slower.overhead.as_mut().unwrap().alloc {
        a.p50_us += 25.0;
    }
    let diff = overhead_difference(&serde_json::to_string(&slower).unwrap(), &real);
    assert_eq!(diff["cuMemAlloc_v2 64 MiB"]["difference"], 25.0);
    assert!(overhead_difference("{}", &real).contains_key("error"));
}

#[test]
fn the_real_bare_h100_report_is_a_full_card_view_and_a_hami_one_is_not() {
    let bare = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gpu-probe/tests/data/h100-bare-all-expect-8000.json"
    ))
    .unwrap();
    assert!(shows_full_card(&bare));
    let audit_only = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gpu-probe/tests/data/h100-bare-audit-expect-8000.json"
    ))
    .unwrap();
    assert!(
        !shows_full_card(&audit_only),
        "an audit report has no view section"
    );
    assert!(!shows_full_card("not json"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("probe")).unwrap();
    std::fs::write(dir.path().join("probe/hami-share-a.json"), &bare).unwrap();
    std::fs::write(
        dir.path().join("probe/hami-share-a-audit.json"),
        &audit_only,
    )
    .unwrap();
    assert_eq!(
        probe_verdicts_from(dir.path()),
        vec![
            ("hami-share-a".to_owned(), "shows-full-card".to_owned()),
            ("hami-share-a-audit".to_owned(), "not-verified".to_owned())
        ]
    );
}
