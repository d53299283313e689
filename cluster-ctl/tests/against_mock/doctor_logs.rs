//! `doctor`'s and `run`'s reading of HAMi's container logs through `api` against the mock: each
//! log's tail read as asked (container, `tailLines`, the previous run of a restarted container),
//! turned into evidence the diagnosis engine names a failure from, and a log that does not come
//! is a note after the deadline, never a hang.

use std::time::Duration;

use cluster_ctl::diagnose::live::{evidence_from_live, log_targets, read_logs};
use cluster_ctl::doctor::Snapshot;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::mockapi::MockApi;
use crate::mockapi::faults::{Action, Fault, Match};
use crate::support::API_TIMEOUT;

/// A hami-scheduler pod in kube-system with its two containers (`restarts` of kube-scheduler).
fn scheduler_pod(name: &str, restarts: i32) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "kube-system",
                     "labels": {"app.kubernetes.io/component": "hami-scheduler"}},
        "spec": {"nodeName": "gpu-vm-1", "containers": [
            {"name": "kube-scheduler", "image": "registry.k8s.io/kube-scheduler:v1.31.4"},
            {"name": "vgpu-scheduler-extender", "image": "projecthami/hami:v2.10.0"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "kube-scheduler", "ready": true, "restartCount": restarts, "image": "x", "imageID": ""},
            {"name": "vgpu-scheduler-extender", "ready": true, "restartCount": 0, "image": "y", "imageID": ""}]}
    })
}

const LOCK_LINE: &str =
    "E0903 06:53:42 1 x] err=\"binding rejected: node user has been locked within 5 minutes\"";

#[tokio::test(start_paused = true)]
async fn logs_are_read_with_their_tail_and_become_evidence() {
    let m = MockApi::new();
    m.add(scheduler_pod("hami-scheduler-a", 1));
    let mut long = (0..300)
        .map(|i| format!("I0903 06:50:{:02} 1 scheduler.go] tick {i}", i % 60))
        .collect::<Vec<_>>()
        .join("\n");
    long.push('\n');
    long.push_str(LOCK_LINE);
    long.push('\n');
    m.set_log("kube-system", "hami-scheduler-a", "kube-scheduler", &long)
        .set_previous_log(
            "kube-system",
            "hami-scheduler-a",
            "kube-scheduler",
            "F0903 06:40:00 1 main.go] the previous run ended\n",
        );
    let pods: Vec<Pod> =
        vec![serde_json::from_value(scheduler_pod("hami-scheduler-a", 1)).unwrap()];
    let targets = log_targets(&pods, "kube-system", false);
    assert_eq!(
        targets.len(),
        3,
        "both containers and the restarted one's previous run"
    );
    let (logs, notes) = read_logs(&m.cluster(API_TIMEOUT), targets, Duration::from_secs(5)).await;
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(logs.len(), 3);
    // Asked as doctor asks: by container, the last 200 lines, at most 1 MiB.
    let asked: Vec<String> = m
        .seen()
        .into_iter()
        .filter(|s| s.attrs.resource == "pods/log")
        .map(|s| s.uri)
        .collect();
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert!(
        asked
            .iter()
            .all(|u| u.contains("tailLines=200") && u.contains("limitBytes=1048576")),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|u| u.contains("container=kube-scheduler") && u.contains("previous=true"))
    );
    let current = &logs
        .iter()
        .find(|(t, _)| t.container == "kube-scheduler" && !t.previous)
        .unwrap()
        .1;
    assert_eq!(current.lines().count(), 200, "the server kept the tail");
    let ev = evidence_from_live(Snapshot::default(), logs, notes);
    let d = cluster_ctl::diagnose::diagnose(&ev);
    let lock = d
        .findings
        .iter()
        .find(|f| f.mode == "node-lock-held")
        .unwrap_or_else(|| panic!("{:#?}", d.findings));
    assert_eq!(
        lock.evidence[0].source,
        "log kube-system/hami-scheduler-a/kube-scheduler"
    );
    assert_eq!(lock.evidence[0].line, Some(200));
    assert!(
        lock.commands
            .iter()
            .any(|c| c.contains("kubectl annotate node user hami.io/mutex.lock-"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_log_is_a_note_after_the_deadline_not_a_hang() {
    let m = MockApi::new();
    m.add(scheduler_pod("hami-scheduler-a", 0));
    m.fault(Fault::always(
        Match::verb("get").resource("pods/log"),
        Action::Stall,
    ));
    let pods: Vec<Pod> =
        vec![serde_json::from_value(scheduler_pod("hami-scheduler-a", 0)).unwrap()];
    let started = tokio::time::Instant::now();
    let (logs, notes) = read_logs(
        &m.cluster(API_TIMEOUT),
        log_targets(&pods, "kube-system", false),
        Duration::from_millis(200),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(logs.is_empty());
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("deadline"), "{notes:?}");
    // The stalled reads were given up, not left open.
    tokio::task::yield_now().await;
    assert!(m.open().is_empty(), "{:?}", m.open());
}
