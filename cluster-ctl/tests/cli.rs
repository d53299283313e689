//! The real `cluster-ctl` binary: offline dry run, JSON output, exit 3 on an unreachable cluster,
//! exit 2 on bad flags, the `kubectl-hami_probe` plugin name, and — against the mock API server
//! on 127.0.0.1, through a kubeconfig — preflight, a stalling server, rejected credentials.

// std's Command, not lab_runner: the built CLI under test runs as a shell runs it (exit code,
// pipes, a plugin symlink, SIGINT by `kill`).
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "mockapi/mod.rs"]
mod mockapi;

use std::process::{Command, Output};

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cluster-ctl"))
        .args(args)
        .env_remove("KUBECONFIG")
        // No helm from the host: these tests must not depend on (or reach a cluster through) it.
        .env("PATH", "/nonexistent-path-for-tests")
        .env("HOME", "/nonexistent-home-for-tests")
        .output()
        .unwrap()
}

#[test]
fn dry_run_prints_manifests_and_plan_without_a_cluster() {
    let out = ctl(&["run", "--dry-run", "--card-mib", "49140"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("nvidia.com/gpumem: '8000'"), "{text}");
    assert!(text.contains("nvidia.com/gpumem: '41000'"), "{text}");
    assert!(text.contains("nvidia/cuda:12.4.1-base-ubuntu22.04"));
    assert!(text.contains("plan for `cluster-ctl run`"));
}

#[test]
fn dry_run_with_bypass_prints_the_bypass_pods_and_their_steps() {
    let out = ctl(&[
        "run",
        "--dry-run",
        "--card-mib",
        "143771",
        "--audit",
        "--bypass",
        "--baseline-namespace",
        "hami-isolation-lab-baseline",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pod in 1..=6 {
        assert!(
            text.contains(&format!("# manifests/hami-bypass-b{pod}.yaml")),
            "{text}"
        );
        assert!(text.contains(&format!("bypass-b{pod}")), "{text}");
    }
    // B3 claims the whole card for itself; B5 runs the audit's bypass rows.
    assert!(text.contains("143771m"), "{text}");
    assert!(text.contains("audit --rows bypass"), "{text}");
    assert!(
        text.contains("hami-isolation-lab-baseline/hami-baseline"),
        "{text}"
    );
}

#[test]
fn dry_run_json_is_one_document() {
    let out = ctl(&[
        "run",
        "--dry-run",
        "--card-mib",
        "49140",
        "--output",
        "json",
        "--slice-mib",
        "6000",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sizing"]["slice_mib"], 6000);
    let over = v["sizing"]["oversubscribe_mib"].as_u64().unwrap();
    assert!(over > 49140 - 12000 && over <= 49140);
    assert_eq!(v["manifests"].as_array().unwrap().len(), 3);
}

#[test]
fn impossible_sizing_is_a_usage_error_with_the_valid_range() {
    let out = ctl(&[
        "run",
        "--dry-run",
        "--card-mib",
        "49140",
        "--oversubscribe-mib",
        "20000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("33141..=49140"), "{err}");
}

#[test]
fn unreachable_cluster_exits_3_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:9\n    insecure-skip-tls-verify: true\ncontexts:\n- name: lab\n  context:\n    cluster: c\n    user: u\ncurrent-context: lab\nusers:\n- name: u\n  user:\n    token: not-a-real-token\n",
    )
    .unwrap();
    let out = ctl(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--api-timeout",
        "5",
        "preflight",
    ]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("cannot reach the Kubernetes API server"),
        "{err}"
    );
    assert!(
        !err.contains("not-a-real-token"),
        "credentials must never be printed: {err}"
    );
}

#[test]
fn no_kubeconfig_at_all_exits_3() {
    let out = ctl(&["doctor"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("--kubeconfig")
    );
}

#[test]
fn unknown_flag_exits_2() {
    assert_eq!(ctl(&["run", "--no-such-flag"]).status.code(), Some(2));
}

#[test]
fn works_as_the_kubectl_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("kubectl-hami_probe");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cluster-ctl"), &link).unwrap();
    let out = Command::new(&link).arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text.contains("<POD>") && text.contains("--container"),
        "{text}"
    );
}

/// A kubeconfig with two contexts: `dead` (current, nothing listens) and `lab` (the mock on
/// `addr`, authenticated with `token`).
fn kubeconfig(dir: &std::path::Path, addr: std::net::SocketAddr, token: &str) -> String {
    let path = dir.join("config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster:\n    server: http://127.0.0.1:9\n- name: local\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: dead\n  context:\n    cluster: dead\n    user: u\n- name: lab\n  context:\n    cluster: local\n    user: u\ncurrent-context: dead\nusers:\n- name: u\n  user:\n    token: {token}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// The binary, run off the async runtime that serves the mock.
async fn ctl_async(args: Vec<String>) -> (Output, std::time::Duration) {
    tokio::task::spawn_blocking(move || {
        let t0 = std::time::Instant::now();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ctl(&refs);
        (out, t0.elapsed())
    })
    .await
    .unwrap()
}

fn healthy_mock() -> mockapi::MockApi {
    let m = mockapi::MockApi::new();
    m.add_fixture("node-hami-v2.10-h100.json")
        .add_fixture("daemonsets-hami-only.json")
        .add_fixture("deploy-hami-scheduler-tag-match.json")
        .add_fixture("endpoints-hami-scheduler-ready.json");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_through_a_kubeconfig_context_against_the_mock_api_server() {
    let m = healthy_mock();
    let addr = m.serve_tcp().await;
    let dir = tempfile::tempdir().unwrap();
    let k = kubeconfig(dir.path(), addr, mockapi::TOKEN);
    let (out, _) = ctl_async(vec![
        "--kubeconfig".into(),
        k.clone(),
        "--context".into(),
        "lab".into(),
        "-o".into(),
        "json".into(),
        "preflight".into(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["server_version"], "v1.31.4+k3s1");
    assert_eq!(v["nodes"][0]["name"], "gpu-vm-1");
    assert_eq!(v["nodes"][0]["gpus"][0]["devmem_mib"], 81559);
    assert_eq!(v["coexisting"].as_array().unwrap().len(), 0);
    // The real client's requests: bearer token from the kubeconfig, the same calls.
    assert!(
        m.seen()
            .iter()
            .all(|s| s.user.as_deref()
                == Some("system:serviceaccount:hami-isolation-lab:cluster-ctl"))
    );
    assert_eq!(m.seen_paths()[0], "GET /version");
    // Without --context the current (dead) context is used: exit 3.
    let (dead, _) = ctl_async(vec![
        "--kubeconfig".into(),
        k,
        "--api-timeout".into(),
        "2".into(),
        "preflight".into(),
    ])
    .await;
    assert_eq!(dead.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&dead.stderr).contains("cannot reach the Kubernetes API server")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_version_but_stalls_lists_gets_a_timeout_not_a_hang() {
    use mockapi::faults::{Action, Fault, Match};
    let m = healthy_mock();
    m.fault(Fault::always(
        Match::verb("list").resource("nodes"),
        Action::Stall,
    ));
    let addr = m.serve_tcp().await;
    let dir = tempfile::tempdir().unwrap();
    let k = kubeconfig(dir.path(), addr, mockapi::TOKEN);
    let (out, took) = ctl_async(vec![
        "--kubeconfig".into(),
        k,
        "--context".into(),
        "lab".into(),
        "--api-timeout".into(),
        "1".into(),
        "preflight".into(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("the API server did not answer list nodes (cluster-wide) within 1 s (--api-timeout) (after 4 attempts)"), "{stderr}");
    // Four 1 s attempts and the backoff between them, not a hang.
    assert!(took < std::time::Duration::from_secs(25), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_are_named_as_such() {
    let m = healthy_mock();
    let addr = m.serve_tcp().await;
    let dir = tempfile::tempdir().unwrap();
    let k = kubeconfig(dir.path(), addr, "revoked-token");
    let (out, _) = ctl_async(vec![
        "--kubeconfig".into(),
        k,
        "--context".into(),
        "lab".into(),
        "doctor".into(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("the API server rejected the credentials (401 Unauthorized)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("revoked-token"),
        "credentials must never be printed: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harden_dry_run_through_the_binary_plans_both_objects_and_writes_nothing() {
    let m = healthy_mock();
    let addr = m.serve_tcp().await;
    let dir = tempfile::tempdir().unwrap();
    let k = kubeconfig(dir.path(), addr, mockapi::TOKEN);
    let (out, _) = ctl_async(vec![
        "--kubeconfig".into(),
        k.clone(),
        "--context".into(),
        "lab".into(),
        "harden".into(),
        "--dry-run".into(),
        "--exempt-namespace".into(),
        "gpu-admin".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "create ValidatingAdmissionPolicy hami-isolation-lab-gpu-tenant",
        "create ValidatingAdmissionPolicyBinding hami-isolation-lab-gpu-tenant",
        "exempt namespaces (pods there are not checked): kube-system, hami-isolation-lab-baseline, gpu-admin",
        "kind: ValidatingAdmissionPolicyBinding",
    ] {
        assert!(stdout.contains(want), "{want:?} missing:\n{stdout}");
    }
    let paths = m.seen_paths();
    assert!(
        paths.iter().any(|p| p
            .starts_with("GET /apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/")),
        "{paths:?}"
    );
    assert!(
        paths.iter().all(|p| p.starts_with("GET ")),
        "--dry-run wrote: {paths:?}"
    );
    // A bad namespace name is a usage error before any call.
    let (bad, _) = ctl_async(vec![
        "--kubeconfig".into(),
        k,
        "--context".into(),
        "lab".into(),
        "harden".into(),
        "--exempt-namespace".into(),
        "Bad_NS".into(),
    ])
    .await;
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn fleet_emit_cronjob_prints_valid_objects_without_a_cluster() {
    let out = ctl(&[
        "fleet",
        "--emit-cronjob",
        "--schedule",
        "17 */6 * * *",
        "--cronjob-image",
        "registry.example.com/hami-isolation-lab:0.1.0",
        "--pushgateway",
        "http://pushgateway.monitoring.svc:9091",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kinds: Vec<String> = text
        .split("\n---\n")
        .map(|d| {
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(d).unwrap();
            v["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds.last().map(String::as_str), Some("CronJob"));
    assert!(kinds.contains(&"ServiceAccount".to_owned()) && kinds.contains(&"Role".to_owned()));
    // A schedule cron cannot read, or no place for the results: usage errors with the fix.
    let bad = ctl(&[
        "fleet",
        "--emit-cronjob",
        "--schedule",
        "hourly",
        "--cronjob-image",
        "x",
        "--pushgateway",
        "http://p:9091",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("five fields"));
    let nowhere = ctl(&[
        "fleet",
        "--emit-cronjob",
        "--schedule",
        "@hourly",
        "--cronjob-image",
        "x",
    ]);
    assert_eq!(nowhere.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("--metrics-file"));
}

/// Ctrl-C in the middle of a fleet run: the binary stops, deletes every probe pod it created
/// (waiting until they are gone), writes fleet.json with the cards not done as "run stopped",
/// and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_interrupted_by_ctrl_c_removes_its_pods_and_reports_the_cards_not_done() {
    use mockapi::gpu_cluster::{GpuNode, gpu_cluster};
    let m = gpu_cluster(&[GpuNode::new(0, 3)], std::time::Duration::ZERO);
    m.settings(|s| s.kubelet_stop = std::time::Duration::from_millis(200));
    m.probe_reply(
        "*",
        "all",
        mockapi::exec::Reply {
            takes: std::time::Duration::from_secs(60),
            ..mockapi::exec::Reply::new(&mockapi::fixtures::h200("h1-8000.json"), "", 0)
        },
    );
    let addr = m.serve_tcp().await;
    let dir = tempfile::tempdir().unwrap();
    let k = kubeconfig(dir.path(), addr, mockapi::TOKEN);
    let bin = dir.path().join("gpu-probe");
    std::fs::write(&bin, b"\x7fELF gpu-probe").unwrap();
    let out_dir = dir.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_cluster-ctl"))
        .args([
            "--kubeconfig",
            &k,
            "--context",
            "lab",
            "-n",
            mockapi::SA_NAMESPACE,
            "fleet",
        ])
        .args([
            "--slice-mib",
            "8000",
            "--parallel",
            "2",
            "--probe-bin",
            bin.to_str().unwrap(),
        ])
        .args(["--out", out_dir.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until both probes run (their exec calls seen), then Ctrl-C.
    let t0 = std::time::Instant::now();
    while m
        .exec_calls()
        .iter()
        .filter(|c| c.command[0] == "/tmp/gpu-probe")
        .count()
        < 2
    {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "the probes never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert_eq!(status.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(30),
        "it did not wait for the probes"
    );
    assert!(
        m.names("pods", mockapi::SA_NAMESPACE).is_empty(),
        "{:?}",
        m.names("pods", mockapi::SA_NAMESPACE)
    );
    let report: lab_report::fleet::FleetReport =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("fleet.json")).unwrap())
            .unwrap();
    assert_eq!(report.totals.cards, 3);
    assert_eq!(report.totals.verified, 0);
    assert!(
        report.nodes[0].cards.iter().all(|c| matches!(
            &c.not_checked,
            Some(lab_report::fleet::NotChecked::RunStopped { why }) if why.contains("Ctrl-C")
        )),
        "{:#?}",
        report.nodes[0].cards
    );
}
