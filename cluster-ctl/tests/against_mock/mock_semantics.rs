//! The mock behaves as kube-apiserver does, seen through a plain `kube::Client`: these tests pin
//! its semantics so the tests of cluster-ctl rest on them.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use crate::mockapi::MockApi;
use crate::mockapi::exec::Reply;
use crate::mockapi::faults::{Action, Fault, Match};
use crate::mockapi::kinds::Kind;
use crate::support::*;

fn share_pod(name: &str, mib: u64) -> Pod {
    cluster_ctl::manifests::render(
        cluster_ctl::manifests::SHARE_TEMPLATE,
        name,
        "default",
        cluster_ctl::manifests::DEFAULT_IMAGE,
        mib,
        None,
    )
    .unwrap()
    .pod
}

fn rv(p: &Pod) -> u64 {
    p.metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn objects_get_uid_creation_time_and_growing_resource_versions() {
    let m = healthy();
    let pods: Api<Pod> = Api::namespaced(m.client(API_TIMEOUT), "default");
    let a = pods
        .create(&PostParams::default(), &share_pod("hami-share-a", 8000))
        .await
        .unwrap();
    let b = pods
        .create(&PostParams::default(), &share_pod("hami-share-b", 8000))
        .await
        .unwrap();
    assert!(a.metadata.uid.is_some() && a.metadata.uid != b.metadata.uid);
    assert!(a.metadata.creation_timestamp.is_some());
    assert!(rv(&b) > rv(&a));
    // The server's defaults and HAMi's webhook (its Service has endpoints).
    let spec = a.spec.as_ref().unwrap();
    assert_eq!(spec.scheduler_name.as_deref(), Some("hami-scheduler"));
    let requests = spec.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap();
    assert_eq!(requests["nvidia.com/gpumem"].0, "8000");
    let list = pods.list(&ListParams::default()).await.unwrap();
    assert!(
        list.metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= rv(&b)
    );
    // A second create of the same name: 409 AlreadyExists.
    let err = pods
        .create(&PostParams::default(), &share_pod("hami-share-a", 8000))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err}"
    );
    // The POST bodies are kept as sent.
    let posted: Vec<_> = m
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert_eq!(
        posted[0].body.as_ref().unwrap()["metadata"]["name"],
        "hami-share-a"
    );
    assert!(posted[0].body.as_ref().unwrap()["metadata"]["uid"].is_null());
}

#[tokio::test(start_paused = true)]
async fn a_watch_streams_the_pod_from_pending_to_ready_with_bookmarks_then_closes() {
    let m = healthy();
    m.settings(|s| s.bookmark_every = Duration::from_secs(10));
    let client = m.client(API_TIMEOUT);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &share_pod("hami-share-a", 8000))
        .await
        .unwrap();
    let wp = WatchParams::default()
        .timeout(120)
        .fields("metadata.name=hami-share-a");
    let mut stream = pods
        .watch(&wp, &rv(&created).to_string())
        .await
        .unwrap()
        .boxed();
    let started = tokio::time::Instant::now();
    let mut seen = Vec::new();
    while let Some(ev) = stream.try_next().await.unwrap() {
        match ev {
            WatchEvent::Modified(p) => seen.push(format!(
                "MODIFIED {} ready={}",
                cluster_ctl::decide::pod_phase(&p),
                cluster_ctl::decide::pod_ready(&p)
            )),
            WatchEvent::Bookmark(_) => seen.push("BOOKMARK".into()),
            other => seen.push(format!("{other:?}")),
        }
    }
    // The server ended the watch at timeoutSeconds.
    assert_eq!(started.elapsed().as_secs(), 120);
    assert_eq!(seen[0], "MODIFIED Pending ready=false", "{seen:?}"); // bound to the node
    assert!(
        seen.contains(&"MODIFIED Running ready=true".to_owned()),
        "{seen:?}"
    );
    assert!(
        seen.iter().filter(|s| *s == "BOOKMARK").count() >= 10,
        "{seen:?}"
    );
    // The kubelet's events, in order.
    let events: Api<Event> = Api::namespaced(client, "default");
    let reasons: Vec<String> = events
        .list(&ListParams::default().fields("involvedObject.name=hami-share-a"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(
        reasons,
        [
            "FilteringSucceed",
            "BindingSucceed",
            "Pulling",
            "Pulled",
            "Created",
            "Started"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stale_resource_version_is_410_gone() {
    let m = healthy();
    let pods: Api<Pod> = Api::namespaced(m.client(API_TIMEOUT), "default");
    let created = pods
        .create(&PostParams::default(), &share_pod("hami-share-a", 8000))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    m.compact();
    let mut stream = pods
        .watch(&WatchParams::default(), &rv(&created).to_string())
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(s)) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
    // A list gives a fresh resourceVersion to watch from.
    let fresh = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(5), &fresh)
        .await
        .unwrap()
        .boxed();
    assert!(
        stream.try_next().await.unwrap().is_none(),
        "nothing changed: the watch just ends"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deleted_pod_is_terminating_for_its_grace_period_then_gone() {
    let m = healthy();
    let pods: Api<Pod> = Api::namespaced(m.client(API_TIMEOUT), "default");
    pods.create(&PostParams::default(), &share_pod("hami-share-a", 8000))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let t0 = tokio::time::Instant::now();
    let deleted = pods
        .delete("hami-share-a", &DeleteParams::default())
        .await
        .unwrap();
    let p = deleted.left().unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(
        p.metadata.deletion_grace_period_seconds,
        Some(1),
        "the manifests' grace period"
    );
    assert!(
        pods.get_opt("hami-share-a").await.unwrap().is_some(),
        "still Terminating"
    );
    // A create of the same name now: 409, although the pod is on its way out.
    let err = pods
        .create(&PostParams::default(), &share_pod("hami-share-a", 8000))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err}"
    );
    while pods.get_opt("hami-share-a").await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(t0.elapsed().as_secs(), 3, "1 s grace + 2 s kubelet");
    // An unscheduled pod goes at once.
    m.script_pod("never-placed", MockApi::no_lifecycle());
    pods.create(&PostParams::default(), &share_pod("never-placed", 8000))
        .await
        .unwrap();
    pods.delete("never-placed", &DeleteParams::default())
        .await
        .unwrap();
    assert!(pods.get_opt("never-placed").await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn writes_are_validated_as_a_real_server_does() {
    let m = healthy();
    let pods: Api<Pod> = Api::namespaced(m.client(API_TIMEOUT), "default");
    let mut pod = share_pod("Hami_Share", 8000);
    pod.spec.as_mut().unwrap().containers[0]
        .resources
        .as_mut()
        .unwrap()
        .limits
        .as_mut()
        .unwrap()
        .insert(
            "nvidia.com/gpumem".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("8000.5".into()),
        );
    let err = pods.create(&PostParams::default(), &pod).await.unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("{err}")
    };
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.starts_with("Pod \"Hami_Share\" is invalid: ["),
        "{}",
        s.message
    );
    assert!(
        s.message.contains("metadata.name: Invalid value"),
        "{}",
        s.message
    );
    assert!(s.message.contains("must be an integer"), "{}", s.message);
    let pods_other: Api<Pod> = Api::namespaced(m.client(API_TIMEOUT), "no-such-namespace");
    let mut elsewhere = share_pod("hami-share-a", 8000);
    elsewhere.metadata.namespace = Some("no-such-namespace".into());
    let err = pods_other
        .create(&PostParams::default(), &elsewhere)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404 && s.message.contains("namespaces \"no-such-namespace\" not found")),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn lists_page_with_limit_and_continue() {
    let m = MockApi::new();
    for i in 0..7 {
        m.add(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("n{i}")}}));
    }
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(m.client(API_TIMEOUT));
    let first = nodes.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let token = first.metadata.continue_.clone().unwrap();
    let second = nodes
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(second.items.len(), 3);
    let third = nodes
        .list(
            &ListParams::default()
                .limit(3)
                .continue_token(&second.metadata.continue_.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(third.items.len(), 1);
    assert!(third.metadata.continue_.is_none_or(|c| c.is_empty()));
}

#[tokio::test(start_paused = true)]
async fn custom_resources_are_served_as_dynamic_objects() {
    let m = MockApi::new();
    m.register_kind(Kind::new(
        "helm.cattle.io",
        "v1",
        "HelmChart",
        "helmcharts",
        true,
    ));
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("helm.cattle.io", "v1", "HelmChart"),
        "helmcharts",
    );
    let charts: Api<DynamicObject> =
        Api::namespaced_with(m.client(API_TIMEOUT), "kube-system", &ar);
    let mut chart = DynamicObject::new("hami", &ar);
    chart.data = json!({"spec": {"chart": "hami", "repo": "https://project-hami.github.io/HAMi/", "version": "2.10.0"}});
    charts.create(&PostParams::default(), &chart).await.unwrap();
    let got = charts.get("hami").await.unwrap();
    assert_eq!(got.data["spec"]["version"], "2.10.0");
    assert!(got.metadata.uid.is_some());
}

#[tokio::test(start_paused = true)]
async fn rbac_denials_carry_the_servers_message() {
    let m = healthy();
    m.enforce_rbac("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: none}\nrules: []\n");
    let pods: Api<Pod> = Api::namespaced(m.client(API_TIMEOUT), "default");
    let err = pods.list(&ListParams::default()).await.unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("{err}")
    };
    assert_eq!(s.code, 403);
    assert_eq!(
        s.message,
        "pods is forbidden: User \"system:serviceaccount:hami-isolation-lab:cluster-ctl\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(m.denied().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn faults_answer_as_a_real_server_would() {
    let m = healthy();
    m.fault(Fault::once(
        Match::verb("list").resource("nodes"),
        Action::TooManyRequests {
            retry_after_secs: 2,
        },
    ))
    .fault(Fault::once(
        Match::verb("list").resource("nodes"),
        Action::Status(500),
    ))
    .fault(Fault::once(
        Match::verb("watch").resource("nodes"),
        Action::DropWatchAfter { events: 1 },
    ))
    .fault(Fault::once(
        Match::verb("get").resource("nodes"),
        Action::Stall,
    ));
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(m.client(API_TIMEOUT));
    let err = nodes.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 429 && s.details.as_ref().is_some_and(|d| d.retry_after_seconds == 2)),
        "{err}"
    );
    let err = nodes.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 500 && s.message.contains("etcdserver")),
        "{err}"
    );
    assert!(
        nodes.list(&ListParams::default()).await.is_ok(),
        "the rules are spent"
    );
    let mut stream = nodes
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        stream.next().await,
        Some(Ok(WatchEvent::Added(_)))
    ));
    // The connection broke mid-stream: kube ends the stream (an unexpected EOF is resumable).
    assert!(matches!(stream.next().await, None | Some(Err(_))));
    let stalled = tokio::time::timeout(Duration::from_secs(40), nodes.get("gpu-vm-1")).await;
    // The response-header timeout (the layer every cluster-ctl client has) ended it at 30 s.
    assert!(
        matches!(stalled, Ok(Err(kube::Error::Service(_)))),
        "{stalled:?}"
    );
    tokio::task::yield_now().await;
    let s = m
        .seen()
        .into_iter()
        .find(|s| s.fault.as_deref() == Some("stall"))
        .unwrap();
    assert_eq!(s.duration().map(|d| d.as_secs()), Some(30));
    assert_eq!(m.fired(), ["429", "500", "drop-mid-watch", "stall"]);
}

#[tokio::test(start_paused = true)]
async fn exec_runs_only_what_was_copied_in_and_only_in_running_pods() {
    let m = healthy();
    m.probe_reply("*", "all", Reply::new("{\"verdict\":{}}", "", 0));
    let cluster = m.cluster(API_TIMEOUT);
    let pods: Api<Pod> = Api::namespaced(m.client(API_TIMEOUT), "default");
    pods.create(&PostParams::default(), &share_pod("hami-share-a", 8000))
        .await
        .unwrap();
    // Still being placed: exec is refused.
    let err = cluster
        .run_copied_probe(
            "default",
            "hami-share-a",
            None,
            &["all".into()],
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not have a host assigned"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    let not_copied = cluster
        .run_copied_probe(
            "default",
            "hami-share-a",
            None,
            &["all".into()],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(not_copied.exit_code, Some(127), "{not_copied:?}");
    let run = cluster
        .copy_and_run_probe(
            "default",
            "hami-share-a",
            Some("cuda"),
            b"\x7fELF",
            Some(8000),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(
        m.pod_files("default", "hami-share-a").get("/tmp/gpu-probe"),
        Some(&0o755)
    );
    let calls = m.exec_calls();
    let untar = calls.iter().find(|c| c.command[0] == "sh").unwrap();
    assert_eq!(
        crate::mockapi::exec::archive_entries(&untar.stdin)[0].2,
        b"\x7fELF"
    );
}

#[tokio::test(start_paused = true)]
async fn pod_logs_are_served_per_container() {
    let m = healthy();
    m.add_fixture("pod-hami-share-a-running.json").set_log(
        "default",
        "hami-share-a",
        "cuda",
        "[HAMI-core Msg] Initialized\n",
    );
    let pods: Api<Pod> = Api::namespaced(m.client(API_TIMEOUT), "default");
    let log = pods
        .logs("hami-share-a", &Default::default())
        .await
        .unwrap();
    assert_eq!(log, "[HAMI-core Msg] Initialized\n");
    let err = pods
        .logs(
            "hami-share-a",
            &kube::api::LogParams {
                container: Some("other".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 400),
        "{err}"
    );
    // tailLines keeps the last lines; a container that never restarted has no previous log.
    m.set_log("default", "hami-share-a", "cuda", "one\ntwo\nthree\n");
    let tail = |previous| kube::api::LogParams {
        tail_lines: Some(2),
        previous,
        ..Default::default()
    };
    assert_eq!(
        pods.logs("hami-share-a", &tail(false)).await.unwrap(),
        "two\nthree\n"
    );
    let err = pods.logs("hami-share-a", &tail(true)).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 400 && s.message.contains("previous terminated container")),
        "{err}"
    );
    m.set_previous_log("default", "hami-share-a", "cuda", "crashed\n");
    assert_eq!(
        pods.logs("hami-share-a", &tail(true)).await.unwrap(),
        "crashed\n"
    );
}

#[tokio::test(start_paused = true)]
async fn a_watch_with_a_selector_sees_objects_move_in_and_out() {
    let m = healthy();
    let client = m.client(API_TIMEOUT);
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let list = pods.list(&ListParams::default()).await.unwrap();
    let wp = WatchParams::default()
        .fields("spec.nodeName=gpu-vm-1")
        .timeout(100);
    let mut stream = pods
        .watch(&wp, &list.metadata.resource_version.unwrap())
        .await
        .unwrap()
        .boxed();
    pods.create(&PostParams::default(), &share_pod("hami-share-a", 8000))
        .await
        .unwrap();
    // Created without a node: not in the selector. Bound to gpu-vm-1: ADDED for this watch.
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(p)) => {
            assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("gpu-vm-1"))
        }
        other => panic!("{other:?}"),
    }
    m.patch(
        "pods",
        "default",
        "hami-share-a",
        json!({"spec": {"nodeName": "elsewhere"}}),
    );
    loop {
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Modified(_)) => continue,
            Some(WatchEvent::Deleted(p)) => {
                assert_eq!(
                    p.spec.unwrap().node_name.as_deref(),
                    Some("elsewhere"),
                    "moved out: DELETED for this watch"
                );
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn finalizers_hold_a_deleted_object() {
    let m = MockApi::new();
    m.add(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "namespace": "default", "finalizers": ["example.com/keep"]}}));
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(m.client(API_TIMEOUT), "default");
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let held = cms.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    m.patch(
        "configmaps",
        "default",
        "held",
        json!({"metadata": {"finalizers": null}}),
    );
    assert!(
        cms.get_opt("held").await.unwrap().is_none(),
        "the last finalizer gone, the object goes"
    );
}
