//! cluster-ctl's `api` seam against the mock: what it asks, how it retries, how its waits survive
//! closed and broken watches and 410s, how each refusal reads.

use std::time::Duration;

use cluster_ctl::api::ApiError;
use cluster_ctl::decide::OversubscribeEvidence;
use cluster_ctl::manifests::{self, DEFAULT_IMAGE, SHARE_TEMPLATE};
use k8s_openapi::api::core::v1::Pod;

use crate::mockapi::faults::{Action, Fault, Match};
use crate::mockapi::{Chaos, MockApi};
use crate::support::*;

fn share_pod(name: &str, mib: u64) -> Pod {
    manifests::render(SHARE_TEMPLATE, name, "default", DEFAULT_IMAGE, mib, None)
        .unwrap()
        .pod
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_asks_for_each_object_once() {
    let m = healthy();
    m.add_fixture("events-share-a.json");
    let s = m
        .cluster(API_TIMEOUT)
        .snapshot("default", "kube-system")
        .await
        .unwrap();
    assert_eq!(s.server_git_version, "v1.31.4+k3s1");
    assert_eq!(
        (s.nodes.len(), s.daemonsets.len(), s.events.len()),
        (1, 2, 4)
    );
    assert!(s.scheduler.is_some() && s.scheduler_endpoints.is_some());
    assert_eq!(
        m.seen_paths(),
        [
            "GET /version",
            "GET /api/v1/nodes",
            "GET /apis/apps/v1/daemonsets",
            "GET /api/v1/pods",
            "GET /apis/apps/v1/namespaces/kube-system/deployments/hami-scheduler",
            "GET /api/v1/namespaces/kube-system/endpoints/hami-scheduler",
            "GET /api/v1/namespaces/default/events",
        ]
    );
    // A missing HAMi is `None`, not an error.
    let empty = MockApi::new()
        .cluster(API_TIMEOUT)
        .snapshot("default", "kube-system")
        .await
        .unwrap();
    assert!(empty.scheduler.is_none() && empty.scheduler_endpoints.is_none());
}

#[tokio::test(start_paused = true)]
async fn rate_limits_are_waited_out_as_the_server_asks() {
    let m = healthy();
    m.fault(Fault::once(
        Match::verb("list").resource("nodes"),
        Action::TooManyRequests {
            retry_after_secs: 3,
        },
    ));
    let t0 = tokio::time::Instant::now();
    m.cluster(API_TIMEOUT)
        .snapshot("default", "kube-system")
        .await
        .unwrap();
    let lists: Vec<_> = m
        .seen()
        .into_iter()
        .filter(|s| s.uri.starts_with("/api/v1/nodes"))
        .collect();
    assert_eq!(lists.len(), 2);
    assert_eq!(
        (lists[1].started - lists[0].started).as_secs(),
        3,
        "Retry-After: 3"
    );
    assert!(t0.elapsed() >= Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_a_few_times_then_reported() {
    let m = healthy();
    m.fault(Fault::once(
        Match::verb("list").resource("pods"),
        Action::Status(500),
    ));
    m.cluster(API_TIMEOUT)
        .snapshot("default", "kube-system")
        .await
        .unwrap();
    assert_eq!(m.fired(), ["500"]);
    let always = healthy();
    always.fault(Fault::always(
        Match::verb("list").resource("pods"),
        Action::Status(503),
    ));
    let err = always
        .cluster(API_TIMEOUT)
        .snapshot("default", "kube-system")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("list pods (cluster-wide) failed: 503 ServiceUnavailable"),
        "{text}"
    );
    assert!(text.ends_with("(after 4 attempts)"), "{text}");
    assert_eq!(always.fired().len(), cluster_ctl::api::MAX_ATTEMPTS);
    // A 4xx is not retried.
    let gone = healthy();
    gone.fault(Fault::always(
        Match::verb("list").resource("pods"),
        Action::Status(404),
    ));
    let err = gone
        .cluster(API_TIMEOUT)
        .snapshot("default", "kube-system")
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::NotFound { .. }), "{err}");
    assert_eq!(gone.fired().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_call_ends_at_the_api_timeout_and_is_tried_again() {
    let m = healthy();
    m.fault(Fault::once(
        Match::verb("list").resource("daemonsets"),
        Action::Stall,
    ));
    let t0 = tokio::time::Instant::now();
    m.cluster(Duration::from_secs(10))
        .snapshot("default", "kube-system")
        .await
        .unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(15),
        "{took:?}"
    );
    tokio::task::yield_now().await;
    let stalled = m.seen().into_iter().find(|s| s.fault.is_some()).unwrap();
    assert_eq!(
        stalled.duration(),
        Some(Duration::from_secs(10)),
        "ended by the client at --api-timeout"
    );
    // Stalled every time: a timeout error naming the call.
    let always = healthy();
    always.fault(Fault::always(Match::any().path("/version"), Action::Stall));
    let err = always
        .cluster(Duration::from_secs(10))
        .server_version()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the API server did not answer GET /version within 10 s (--api-timeout) (after 4 attempts)"
    );
}

#[tokio::test(start_paused = true)]
async fn credentials_and_permissions_are_named() {
    let m = healthy();
    m.revoke_tokens();
    let err = m.cluster(API_TIMEOUT).server_version().await.unwrap_err();
    assert!(err.to_string().starts_with("the API server rejected the credentials (401 Unauthorized) when cluster-ctl tried to GET /version"), "{err}");
    let m = healthy();
    m.fault(Fault::once(
        Match::verb("list").resource("daemonsets"),
        Action::Status(403),
    ));
    let err = m
        .cluster(API_TIMEOUT)
        .snapshot("default", "kube-system")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("refused to let cluster-ctl list daemonsets.apps (cluster-wide)"),
        "{text}"
    );
    assert!(
        text.contains(
            "cannot list resource \\\"daemonsets\\\" in API group \\\"apps\\\" at the cluster scope"
        ) || text.contains(
            "cannot list resource \"daemonsets\" in API group \"apps\" at the cluster scope"
        ),
        "{text}"
    );
    assert!(text.contains("{apiGroups: [\"apps\"], resources: [\"daemonsets\"], verbs: [\"list\"]} in a ClusterRole"), "{text}");
    let down = healthy();
    down.settings(|s| s.unreachable = true);
    let err = down
        .cluster(API_TIMEOUT)
        .server_version()
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("--kubeconfig"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn waits_survive_closed_and_broken_watches_and_410() {
    let m = healthy();
    // Watches live 5 s, the pods take 30 s to pull; the first watch breaks after one event and
    // the second answers 410.
    m.settings(|s| s.watch_lifetime = Duration::from_secs(5))
        .fault(Fault::once(
            Match::verb("watch").resource("pods"),
            Action::DropWatchAfter { events: 1 },
        ))
        .fault(Fault::once(
            Match::verb("watch").resource("pods"),
            Action::Gone,
        ));
    let cluster = m.cluster(API_TIMEOUT);
    for name in ["hami-share-a", "hami-share-b"] {
        cluster
            .create_pod("default", &share_pod(name, 8000), Duration::from_secs(60))
            .await
            .unwrap();
    }
    let pods = cluster
        .wait_pods_ready(
            "default",
            &["hami-share-a", "hami-share-b"],
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(cluster_ctl::decide::pod_ready));
    let watches = m.seen().into_iter().filter(|s| s.watch).count();
    assert!(
        watches >= 12,
        "the watches were resumed after each close: {watches}"
    );
    assert_eq!(m.fired(), ["drop-mid-watch", "410"]);
    // Every watch asked for a timeout and for bookmarks.
    assert!(
        m.seen()
            .iter()
            .filter(|s| s.watch)
            .all(|s| s.watch_timeout == Some(290) && s.uri.contains("allowWatchBookmarks=true"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_ends_at_its_deadline_saying_what_it_waited_for() {
    let m = healthy();
    m.settings(|s| s.webhook_fails = true);
    let cluster = m.cluster(API_TIMEOUT);
    cluster
        .create_pod(
            "default",
            &share_pod("hami-share-a", 8000),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let err = cluster
        .wait_pods_ready("default", &["hami-share-a"], Duration::from_secs(300))
        .await
        .unwrap_err();
    assert_eq!(t0.elapsed(), Duration::from_secs(300));
    assert_eq!(
        err.to_string(),
        "timed out after 300 s waiting for pod hami-share-a to be Ready"
    );
    // A refusal ends a wait at once, with the permission.
    m.fault(Fault::always(
        Match::verb("list").resource("pods"),
        Action::Status(403),
    ));
    let t0 = tokio::time::Instant::now();
    let err = cluster
        .wait_pods_ready("default", &["hami-share-a"], Duration::from_secs(300))
        .await
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(
        err.to_string()
            .contains("list pods hami-share-a in namespace default"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn create_reuses_a_pod_of_the_same_size_refuses_another_and_waits_out_a_terminating_one() {
    let m = healthy();
    let cluster = m.cluster(API_TIMEOUT);
    let first = cluster
        .create_pod(
            "default",
            &share_pod("hami-share-a", 8000),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let again = cluster
        .create_pod(
            "default",
            &share_pod("hami-share-a", 8000),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(first.metadata.uid, again.metadata.uid);
    let err = cluster
        .create_pod(
            "default",
            &share_pod("hami-share-a", 9000),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("run `cluster-ctl cleanup` first"),
        "{err}"
    );
    // Placed, then deleted: while it terminates, a create meets 409 and waits for it to go.
    tokio::time::sleep(Duration::from_secs(60)).await;
    m.fault(Fault::once(Match::verb("delete"), Action::Status(500)));
    let pods_left = cluster
        .delete_lab_pods("default", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(pods_left, ["hami-share-a"]);
    assert!(
        !m.has("pods", "default", "hami-share-a"),
        "delete waits until the pod is gone"
    );
    let direct = m.client(API_TIMEOUT);
    let pods: kube::Api<Pod> = kube::Api::namespaced(direct, "default");
    let dying = pods
        .create(&Default::default(), &share_pod("hami-share-b", 8000))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    pods.delete("hami-share-b", &Default::default())
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let recreated = cluster
        .create_pod(
            "default",
            &share_pod("hami-share-b", 8000),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_secs(3),
        "it waited for the old pod to go"
    );
    assert_ne!(
        recreated.metadata.uid, dying.metadata.uid,
        "a new pod, not the dying one"
    );
    assert!(recreated.metadata.deletion_timestamp.is_none());
}

#[tokio::test(start_paused = true)]
async fn cleanup_deletes_only_lab_pods_and_a_second_one_finds_nothing() {
    let m = healthy();
    let sizing = cluster_ctl::sizing::size(
        &[cluster_ctl::sizing::Card {
            uuid: None,
            devmem_mib: 49140,
        }],
        None,
        None,
    )
    .unwrap();
    let cluster = m.cluster(API_TIMEOUT);
    for p in manifests::render_all(&sizing, "default", DEFAULT_IMAGE).unwrap() {
        cluster
            .create_pod("default", &p.pod, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let mut other: serde_json::Value =
        crate::mockapi::fixtures::fixture("pod-hami-share-a-running.json");
    other["metadata"]["name"] = "someone-elses".into();
    m.add(other);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let mut deleted = cluster
        .delete_lab_pods("default", Duration::from_secs(60))
        .await
        .unwrap();
    deleted.sort();
    assert_eq!(
        deleted,
        ["hami-oversubscribe", "hami-share-a", "hami-share-b"]
    );
    assert!(m.lab_pods().is_empty());
    assert!(m.has("pods", "default", "someone-elses"));
    assert!(
        m.seen().iter().any(|s| s.attrs.verb == "list"
            && s.uri
                .contains("labelSelector=app.kubernetes.io%2Fpart-of%3Dhami-isolation-lab")),
        "cleanup lists by the lab label"
    );
    assert!(
        cluster
            .delete_lab_pods("default", Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn the_oversubscribe_evidence_comes_from_a_surviving_event_watch() {
    let m = healthy();
    m.fault(Fault::once(
        Match::verb("watch").resource("events"),
        Action::DropWatchAfter { events: 0 },
    ));
    let cluster = m.cluster(API_TIMEOUT);
    for name in ["hami-share-a", "hami-share-b"] {
        cluster
            .create_pod("default", &share_pod(name, 8000), Duration::from_secs(60))
            .await
            .unwrap();
    }
    cluster
        .wait_pods_ready(
            "default",
            &["hami-share-a", "hami-share-b"],
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let over = manifests::render(
        manifests::OVERSUBSCRIBE_TEMPLATE,
        "hami-oversubscribe",
        "default",
        DEFAULT_IMAGE,
        75000,
        None,
    )
    .unwrap();
    cluster
        .create_pod("default", &over.pod, Duration::from_secs(60))
        .await
        .unwrap();
    let ev = cluster
        .watch_oversubscribe("default", "hami-oversubscribe", Duration::from_secs(120))
        .await
        .unwrap();
    assert!(matches!(ev, OversubscribeEvidence::Named { .. }), "{ev:?}");
    assert!(m.seen().iter().any(|s| {
        s.uri
            .contains("fieldSelector=involvedObject.name%3Dhami-oversubscribe")
    }));
    // No event at all: the timeout ends the watch with Nothing.
    let quiet = MockApi::new();
    let ev = quiet
        .cluster(API_TIMEOUT)
        .watch_oversubscribe("default", "hami-oversubscribe", Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(ev, OversubscribeEvidence::Nothing);
}

#[tokio::test(start_paused = true)]
async fn pull_progress_lines_for_the_watched_pods_only() {
    let m = healthy();
    m.settings(|s| {
        s.chaos = Some(Chaos {
            seed: 7,
            gone: 0.3,
            close_within: Duration::from_secs(4),
        });
    });
    let cluster = m.cluster(API_TIMEOUT);
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let task = cluster.spawn_pull_progress("default", vec!["hami-share-a".into()], move |l| {
        sink.lock().unwrap().push(l.to_string())
    });
    for name in ["hami-share-a", "hami-share-b"] {
        cluster
            .create_pod("default", &share_pod(name, 8000), Duration::from_secs(60))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    task.abort();
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("hami-share-a Pulling: Pulling image"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("hami-share-a Pulled: Successfully pulled"),
        "{lines:?}"
    );
}
