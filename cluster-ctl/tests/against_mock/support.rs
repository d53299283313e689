//! What the tests share: a healthy HAMi cluster on the mock, the options of every command, helm
//! as a recording fake, the captured gpu-probe answers.

use std::time::Duration;

use cluster_ctl::commands::{Ctx, RunArgs};
use cluster_ctl::helm::HelmTarget;
use lab_runner::RecordingRunner;

use crate::mockapi::MockApi;
use crate::mockapi::exec::Reply;
use crate::mockapi::fixtures::{FIXTURE_H100_UUID, H200_UUID, fixture_text, h200};
use crate::mockapi::lifecycle::{Card, Placement};

pub const API_TIMEOUT: Duration = Duration::from_secs(30);
pub const H100_UUID: &str = FIXTURE_H100_UUID;

pub fn ctx(dry_run: bool) -> Ctx {
    Ctx {
        namespace: "default".into(),
        hami_namespace: "kube-system".into(),
        dry_run,
        helm: HelmTarget {
            kubeconfig: None,
            context: None,
            namespace: "kube-system".into(),
        },
        installer: cluster_ctl::helmchart::InstallerChoice::Auto,
    }
}

/// HAMi 2.10's two pods in kube-system as its chart names and labels them (constructed: names,
/// labels and containers from the chart; see the project's HAMi facts), Running and Ready, with
/// a few log lines each.
pub fn hami_pods(m: &MockApi) {
    use serde_json::json;
    let pod = |name: &str, component: &str, containers: &[&str], extra: serde_json::Value| {
        let mut labels = json!({"app.kubernetes.io/component": component, "app.kubernetes.io/name": "hami",
                                "app.kubernetes.io/instance": "hami", "hami.io/webhook": "ignore"});
        if let (Some(l), Some(e)) = (labels.as_object_mut(), extra.as_object()) {
            l.extend(e.clone());
        }
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
            "spec": {"nodeName": "gpu-vm-1", "containers": containers.iter().map(|c| json!({
                "name": c, "image": if *c == "kube-scheduler" { "registry.k8s.io/kube-scheduler:v1.31.4" } else { "docker.io/projecthami/hami:v2.10.0" }})).collect::<Vec<_>>()},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": containers.iter().map(|c| json!({
                    "name": c, "ready": true, "restartCount": 0, "image": "x", "imageID": "",
                    "started": true, "state": {"running": {"startedAt": "2026-11-25T09:58:00Z"}}})).collect::<Vec<_>>()}
        })
    };
    m.add(pod(
        "hami-scheduler-7d9c8b6f5-x2k4q",
        "hami-scheduler",
        &["kube-scheduler", "vgpu-scheduler-extender"],
        json!({"hami.io/scheduler-role": "leader"}),
    ))
    .add(pod(
        "hami-device-plugin-8kq2n",
        "hami-device-plugin",
        &["device-plugin", "vgpu-monitor"],
        json!({}),
    ));
    for (pod, container, log) in [
        (
            "hami-scheduler-7d9c8b6f5-x2k4q",
            "kube-scheduler",
            "I1125 09:58:02.112233       1 leaderelection.go:257] successfully acquired lease kube-system/hami-scheduler\n",
        ),
        (
            "hami-scheduler-7d9c8b6f5-x2k4q",
            "vgpu-scheduler-extender",
            "I1125 09:58:03.000001       1 scheduler.go:120] node gpu-vm-1 registered 1 device(s)\n",
        ),
        (
            "hami-device-plugin-8kq2n",
            "device-plugin",
            "I1125 09:58:01.500000       1 register.go:180] Reporting devices GPU in node gpu-vm-1\n",
        ),
        (
            "hami-device-plugin-8kq2n",
            "vgpu-monitor",
            "I1125 09:58:01.600000       1 main.go:45] monitor started\n",
        ),
    ] {
        m.set_log("kube-system", pod, container, log);
    }
}

/// A k3s node with HAMi 2.10 ready on one H100: node registered, scheduler and webhook ready,
/// device plugin ready, HAMi's pods running; pods are placed by the HAMi model with a 30 s
/// image pull.
pub fn healthy() -> MockApi {
    let m = MockApi::new();
    hami_pods(&m);
    m.add_fixture("node-hami-v2.10-h100.json")
        .add_fixture("daemonsets-hami-only.json")
        .add_fixture("deploy-hami-scheduler-tag-match.json")
        .add_fixture("endpoints-hami-scheduler-ready.json")
        .place_on(Placement {
            node: "gpu-vm-1".into(),
            cards: vec![Card {
                uuid: H100_UUID.into(),
                devmem_mib: 81559,
            }],
            pull: Duration::from_secs(30),
        });
    m
}

/// `healthy()` just after `helm upgrade --install`: nothing is ready yet, and HAMi comes up
/// during the wait — the scheduler at 10 s, its webhook endpoints at 20 s, the device plugin at
/// 30 s, the node's registration at 40 s (so every wait lists, then watches).
pub fn hami_coming_up() -> MockApi {
    use crate::mockapi::lifecycle::{Step, WorldTimeline};
    use crate::mockapi::store::ObjKey;
    use serde_json::json;
    let m = healthy();
    let ready_endpoints: serde_json::Value =
        crate::mockapi::fixtures::fixture("endpoints-hami-scheduler-ready.json");
    let node: serde_json::Value = crate::mockapi::fixtures::fixture("node-hami-v2.10-h100.json");
    let register = node["metadata"]["annotations"]["hami.io/node-nvidia-register"].clone();
    let key = |resource: &str, ns: &str, name: &str| ObjKey {
        resource: resource.into(),
        namespace: ns.into(),
        name: name.into(),
    };
    m.patch(
        "deployments.apps",
        "kube-system",
        "hami-scheduler",
        json!({"status": {"readyReplicas": 0, "availableReplicas": 0}}),
    );
    m.patch(
        "endpoints",
        "kube-system",
        "hami-scheduler",
        json!({"subsets": null}),
    );
    m.patch(
        "daemonsets.apps",
        "kube-system",
        "hami-device-plugin",
        json!({"status": {"numberReady": 0}}),
    );
    m.patch(
        "nodes",
        "",
        "gpu-vm-1",
        json!({"metadata": {"annotations": {"hami.io/node-nvidia-register": null}}}),
    );
    m.start_world(
        WorldTimeline::default()
            .at(Duration::from_secs(10), key("deployments.apps", "kube-system", "hami-scheduler"), Step::Patch(json!({"status": {"readyReplicas": 1, "availableReplicas": 1}})))
            .at(Duration::from_secs(20), key("endpoints", "kube-system", "hami-scheduler"), Step::Patch(json!({"subsets": ready_endpoints["subsets"]})))
            .at(Duration::from_secs(30), key("daemonsets.apps", "kube-system", "hami-device-plugin"), Step::Patch(json!({"status": {"numberReady": 1}})))
            .at(Duration::from_secs(40), key("nodes", "", "gpu-vm-1"), Step::Patch(json!({"metadata": {"annotations": {"hami.io/node-nvidia-register": register}}}))),
    );
    m
}

/// `healthy()` whose pods answer gpu-probe with the reports captured under real HAMi-core on
/// an H200 (`all`: verified; `audit`: three paths escaped; `overhead` with and without). The
/// node's card carries that H200's UUID (in its registration and where the scheduler places
/// slices), so what the probes saw is the GPU the pods were given, as on the real machine; its
/// memory stays the fixture's.
pub fn healthy_with_probes() -> MockApi {
    let m = healthy();
    let node: serde_json::Value = crate::mockapi::fixtures::fixture("node-hami-v2.10-h100.json");
    let register = node["metadata"]["annotations"]["hami.io/node-nvidia-register"]
        .as_str()
        .unwrap()
        .replace(FIXTURE_H100_UUID, H200_UUID);
    m.patch(
        "nodes",
        "",
        "gpu-vm-1",
        serde_json::json!({"metadata": {"annotations": {"hami.io/node-nvidia-register": register}}}),
    );
    m.place_on(Placement {
        node: "gpu-vm-1".into(),
        cards: vec![Card {
            uuid: H200_UUID.into(),
            devmem_mib: 81559,
        }],
        pull: Duration::from_secs(30),
    });
    m.probe_reply(
        "*",
        "all",
        Reply::new(&h200("h1-8000.json"), &h200("h1-8000.err"), 0),
    )
    .probe_reply(
        "*",
        "audit",
        Reply::new(&h200("h4-audit.json"), &h200("h4-audit.err"), 1),
    )
    .probe_reply(
        "hami-share-a",
        "overhead",
        Reply::new(&h200("p1-overhead-hami.json"), "", 0),
    )
    .probe_reply(
        "hami-baseline",
        "overhead",
        Reply::new(&h200("p0-overhead-bare.json"), "", 0),
    )
    .probe_reply(
        "*",
        "compute",
        Reply::new(&h200("p1-overhead-hami.json"), "", 0),
    );
    m
}

/// helm 3 with the HAMi release in `list_fixture`.
pub fn helm(list_fixture: &str) -> RecordingRunner {
    let r = RecordingRunner::new(&["helm"]);
    r.reply("helm version", 0, "v3.16.2+g13654a5\n", "");
    r.reply("helm list", 0, &fixture_text(list_fixture), "");
    r
}

/// `run`'s options with a probe binary in `dir` (its bytes are only copied, never run).
pub fn run_args(dir: &std::path::Path, audit: bool) -> RunArgs {
    let bin = dir.join("gpu-probe-bin");
    std::fs::write(&bin, b"\x7fELF gpu-probe").unwrap();
    RunArgs {
        card_mib: None,
        slice_mib: None,
        oversubscribe_mib: None,
        image: cluster_ctl::manifests::DEFAULT_IMAGE.into(),
        out: dir.join("out"),
        probe_bin: Some(bin),
        node: None,
        pod_timeout: Duration::from_secs(600),
        event_timeout: Duration::from_secs(120),
        probe_timeout: Duration::from_secs(300),
        audit,
        max_overhead_pct: None,
        bypass: false,
        baseline_namespace: None,
    }
}

/// The results of `run.json` as (id, result).
pub fn results(dir: &std::path::Path) -> Vec<(String, String)> {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/run.json")).unwrap()).unwrap();
    report["exercises"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The subcommands the fault matrix and the RBAC test run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Preflight,
    InstallHami,
    Run,
    RunAudit,
    /// `run --audit --bypass --baseline-namespace hami-isolation-lab-baseline`.
    RunBypass,
    Doctor,
    Probe,
    Cleanup,
}

impl Command {
    pub const ALL: [Command; 8] = [
        Command::Preflight,
        Command::InstallHami,
        Command::Run,
        Command::RunAudit,
        Command::RunBypass,
        Command::Doctor,
        Command::Probe,
        Command::Cleanup,
    ];

    /// The exit code on a healthy cluster (run --audit: A1 fails on the real H200 audit, where
    /// three allocation paths escape HAMi-core).
    pub fn healthy_exit(self) -> u8 {
        match self {
            // And, without the policy bound, the bypass pods escape (the real reports).
            Command::RunAudit | Command::RunBypass => 1,
            _ => 0,
        }
    }
}

/// A lab pod as it runs on a HAMi cluster (fixture, with the lab's labels).
pub fn running_lab_pod(name: &str) -> serde_json::Value {
    let mut p: serde_json::Value =
        crate::mockapi::fixtures::fixture("pod-hami-share-a-running.json");
    p["metadata"]["name"] = name.into();
    p["metadata"]["labels"] = serde_json::json!({"app.kubernetes.io/part-of": "hami-isolation-lab", "hami-isolation-lab/role": "share"});
    p["spec"]["terminationGracePeriodSeconds"] = 1.into();
    p
}

/// What a command needs to find: `probe` a running share pod, `cleanup` the lab pods.
pub fn prepare(cmd: Command, m: &MockApi) {
    match cmd {
        Command::Probe => {
            m.add(running_lab_pod("hami-share-a"));
        }
        Command::Cleanup => {
            for name in ["hami-share-a", "hami-share-b", "hami-oversubscribe"] {
                m.add(running_lab_pod(name));
            }
        }
        // The baseline pod's namespace, and pods left from an earlier run that was cut short:
        // the baseline pod (reused, as `run` reuses a lab pod of the same size) and a bypass pod
        // (deleted first, so the pod probed is the one rendered now).
        Command::RunBypass => {
            let ns = cluster_ctl::manifests::BASELINE_NAMESPACE;
            m.add(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns}, "status": {"phase": "Active"}}));
            let mut baseline = running_lab_pod("hami-baseline");
            baseline["metadata"]["namespace"] = ns.into();
            baseline["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpumem"] =
                "1000".into();
            m.add(baseline);
            m.add(running_lab_pod("hami-bypass-b3"));
        }
        _ => {}
    }
}

/// Runs `cmd` on `cluster` as `main` would, with helm recorded and results under `dir`.
pub async fn invoke(
    cmd: Command,
    cluster: &cluster_ctl::api::Cluster,
    dir: &std::path::Path,
) -> Result<cluster_ctl::commands::Outcome, cluster_ctl::commands::Failure> {
    use cluster_ctl::commands;
    let helm = helm("helm-list-deployed.json");
    let c = ctx(false);
    match cmd {
        Command::Preflight => commands::preflight(cluster, &helm, &c).await,
        Command::InstallHami => {
            commands::install_hami(
                cluster,
                &helm,
                &c,
                &cluster_ctl::helm::InstallOptions::default(),
                Duration::from_secs(300),
            )
            .await
        }
        Command::Run => commands::run(cluster, &helm, &c, &run_args(dir, false)).await,
        Command::RunAudit => commands::run(cluster, &helm, &c, &run_args(dir, true)).await,
        Command::RunBypass => {
            let mut args = run_args(dir, true);
            args.bypass = true;
            args.baseline_namespace = Some(cluster_ctl::manifests::BASELINE_NAMESPACE.into());
            commands::run(cluster, &helm, &c, &args).await
        }
        Command::Doctor => commands::doctor(cluster, &c, None).await,
        Command::Probe => {
            let bin = dir.join("gpu-probe-bin");
            std::fs::write(&bin, b"\x7fELF gpu-probe").unwrap();
            commands::probe(
                cluster,
                &c,
                "hami-share-a",
                None,
                None,
                &bin,
                Some(dir),
                Duration::from_secs(300),
            )
            .await
        }
        Command::Cleanup => {
            commands::cleanup(cluster, &helm, &c, false, Duration::from_secs(120)).await
        }
    }
}

/// manifests/rbac.yaml, as the mock enforces it.
pub fn rbac_policy() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/rbac.yaml"
    ))
    .unwrap()
}

/// `healthy()` with k3s's helm controller running (the HelmChart CRD served) and
/// manifests/rbac.yaml enforced.
pub fn k3s_with_helm_controller(script: crate::mockapi::lifecycle::HelmController) -> MockApi {
    let m = healthy();
    m.enforce_rbac(&rbac_policy());
    m.run_helm_controller(script);
    m
}
