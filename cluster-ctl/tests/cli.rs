//! The real `cluster-ctl` binary: offline dry run, JSON output, exit 3 on an unreachable cluster,
//! exit 2 on bad flags, and the `kubectl-hami_probe` plugin name.

#![allow(clippy::unwrap_used)]

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

/// A minimal HTTP/1.1 API server on 127.0.0.1 (one thread, `Connection: close`) answering the
/// read-only calls of `preflight` from the shared fixtures; records request lines.
fn fixture_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/hami/k8s"
    );
    let read = |f: &str| std::fs::read_to_string(format!("{fixtures}/{f}")).unwrap();
    let version = read("version-k3s.json");
    let node = read("node-hami-v2.10-h100.json");
    let daemonsets = read("daemonsets-hami-only.json");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_owned();
            log.lock().unwrap().push(path.clone());
            let path = path.split('?').next().unwrap_or_default().to_owned();
            let empty = r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":"1"},"items":[]}"#.to_owned();
            let (code, body) = match path.as_str() {
                "/version" => (200, version.clone()),
                "/api/v1/nodes" => (200, format!(r#"{{"apiVersion":"v1","kind":"NodeList","metadata":{{}},"items":[{node}]}}"#)),
                "/apis/apps/v1/daemonsets" => (200, daemonsets.clone()),
                "/api/v1/pods" | "/api/v1/namespaces/default/events" => (200, empty),
                _ => (404, r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"NotFound","code":404}"#.to_owned()),
            };
            let mut out = stream;
            let _ = write!(
                out,
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

#[test]
fn preflight_through_a_kubeconfig_context_against_a_local_api_server() {
    let (addr, seen) = fixture_server();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    // Two contexts: the current one is unreachable, --context picks the local server.
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster:\n    server: http://127.0.0.1:9\n- name: local\n  cluster:\n    server: {addr}\ncontexts:\n- name: dead\n  context:\n    cluster: dead\n    user: u\n- name: lab\n  context:\n    cluster: local\n    user: u\ncurrent-context: dead\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let k = kubeconfig.to_str().unwrap();
    let out = ctl(&[
        "--kubeconfig",
        k,
        "--context",
        "lab",
        "-o",
        "json",
        "preflight",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["server_version"], "v1.31.4+k3s1");
    assert_eq!(v["nodes"][0]["name"], "gpu-vm-1");
    assert_eq!(v["nodes"][0]["gpus"][0]["devmem_mib"], 81559);
    assert_eq!(v["coexisting"].as_array().unwrap().len(), 0);
    assert!(seen.lock().unwrap().iter().any(|p| p == "/version"));
    // Without --context the current (dead) context is used: exit 3.
    let dead = ctl(&["--kubeconfig", k, "--api-timeout", "5", "preflight"]);
    assert_eq!(dead.status.code(), Some(3));
}

#[test]
fn harden_dry_run_through_the_binary_plans_both_objects_and_writes_nothing() {
    let (addr, seen) = fixture_server();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {addr}\ncontexts:\n- name: lab\n  context:\n    cluster: local\n    user: u\ncurrent-context: lab\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let k = kubeconfig.to_str().unwrap();
    let out = ctl(&[
        "--kubeconfig",
        k,
        "harden",
        "--dry-run",
        "--exempt-namespace",
        "gpu-admin",
    ]);
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
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|p| p
                .starts_with("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/")),
        "{seen:?}"
    );
    // A bad namespace name is a usage error before any call.
    let bad = ctl(&["--kubeconfig", k, "harden", "--exempt-namespace", "Bad_NS"]);
    assert_eq!(bad.status.code(), Some(2));
}
