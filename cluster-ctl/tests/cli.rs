//! The real `cluster-ctl` binary: offline dry run, JSON output, exit 3 on an unreachable cluster,
//! exit 2 on bad flags, and the `kubectl-hami_probe` plugin name.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cluster-ctl"))
        .args(args)
        .env_remove("KUBECONFIG")
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
