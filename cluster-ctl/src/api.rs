//! Everything that talks to the Kubernetes API server. Every function takes a `kube::Client` (tests
//! pass one built on the mock API server in `mockapi`), only fetches, creates, deletes or watches
//! objects, and leaves the decisions to the pure modules. Every wait is a watch under a timeout.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use k8s_openapi::apimachinery::pkg::version::Info;
use kube::api::{Api, AttachParams, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::decide::{OversubscribeEvidence, match_insufficient_memory, pod_phase, pull_progress};
use crate::doctor::Snapshot;
use crate::manifests::{GPUMEM, LAB_SELECTOR};

/// Why an API operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "cannot reach the Kubernetes API server ({0}); check that the cluster is up and that --kubeconfig / KUBECONFIG / --context point at it (`kubectl version` should answer)"
    )]
    Unreachable(String),
    #[error("{what}: {source}")]
    Call {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error(
        "pod {name} already exists with {found} instead of {wanted} MiB of {GPUMEM}; run `cluster-ctl cleanup` first"
    )]
    Conflict {
        name: String,
        found: String,
        wanted: u64,
    },
    #[error("exec in pod {pod}: {what}")]
    Exec { pod: String, what: String },
}

fn call(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ApiError {
    let what = what.into();
    move |source| ApiError::Call { what, source }
}

/// The server version; any failure here means the cluster is unreachable (exit 3).
pub async fn server_version(client: &Client, timeout: Duration) -> Result<Info, ApiError> {
    match tokio::time::timeout(timeout, client.apiserver_version()).await {
        Ok(Ok(info)) => Ok(info),
        Ok(Err(e)) => Err(ApiError::Unreachable(e.to_string())),
        Err(_) => Err(ApiError::Unreachable(format!(
            "no answer within {} s",
            timeout.as_secs()
        ))),
    }
}

async fn list<K>(api: &Api<K>, lp: &ListParams, what: &str) -> Result<Vec<K>, ApiError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list(lp)
        .await
        .map_err(call(format!("list {what}")))?
        .items)
}

/// Gathers what `doctor`, `preflight` and `install-hami` decide on.
pub async fn snapshot(
    client: &Client,
    lab_namespace: &str,
    hami_namespace: &str,
    timeout: Duration,
) -> Result<Snapshot, ApiError> {
    let version = server_version(client, timeout).await?;
    let lp = ListParams::default();
    let nodes = list(&Api::<Node>::all(client.clone()), &lp, "nodes").await?;
    let daemonsets = list(&Api::<DaemonSet>::all(client.clone()), &lp, "daemonsets").await?;
    let pods = list(&Api::<Pod>::all(client.clone()), &lp, "pods").await?;
    let scheduler = Api::<Deployment>::namespaced(client.clone(), hami_namespace)
        .get_opt("hami-scheduler")
        .await
        .map_err(call("get deployment hami-scheduler"))?;
    let scheduler_endpoints = Api::<Endpoints>::namespaced(client.clone(), hami_namespace)
        .get_opt("hami-scheduler")
        .await
        .map_err(call("get endpoints hami-scheduler"))?;
    let events = list(
        &Api::<Event>::namespaced(client.clone(), lab_namespace),
        &lp,
        "events",
    )
    .await?;
    Ok(Snapshot {
        server_git_version: version.git_version,
        nodes,
        daemonsets,
        pods,
        scheduler,
        scheduler_endpoints,
        events,
        probe_verdicts: Vec::new(),
        hami_namespace: hami_namespace.to_owned(),
    })
}

/// The last `lines` lines (at most 1 MiB) of one container's log, of its previous run when
/// `previous` (a crash-looping container's reason is there), under `timeout`. For `doctor`.
pub async fn container_log_tail(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: &str,
    lines: i64,
    previous: bool,
    timeout: Duration,
) -> Result<String, ApiError> {
    let what = format!("log of {namespace}/{pod} container {container}");
    let lp = kube::api::LogParams {
        container: Some(container.to_owned()),
        tail_lines: Some(lines),
        limit_bytes: Some(1 << 20),
        previous,
        ..kube::api::LogParams::default()
    };
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    match tokio::time::timeout(timeout, api.logs(pod, &lp)).await {
        Ok(r) => r.map_err(call(what)),
        Err(_) => Err(ApiError::Timeout {
            what,
            secs: timeout.as_secs(),
        }),
    }
}

/// Watches `name` until `cond` holds, under `timeout`. Returns the object that satisfied it.
pub async fn wait_for<K>(
    api: Api<K>,
    name: &str,
    cond: impl Condition<K>,
    timeout: Duration,
    what: &str,
) -> Result<Option<K>, ApiError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    match tokio::time::timeout(timeout, await_condition(api, name, cond)).await {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(e)) => Err(ApiError::Exec {
            pod: name.to_owned(),
            what: format!("watch for {what} failed: {e}"),
        }),
        Err(_) => Err(ApiError::Timeout {
            what: what.to_owned(),
            secs: timeout.as_secs(),
        }),
    }
}

/// Creates a lab pod; an existing pod with the same `gpumem` is reused (idempotent `run`).
pub async fn create_pod(api: &Api<Pod>, pod: &Pod) -> Result<Pod, ApiError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), pod).await {
        Ok(p) => Ok(p),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = api
                .get(&name)
                .await
                .map_err(call(format!("get pod {name}")))?;
            let gpumem = |p: &Pod| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.resources.as_ref())
                    .and_then(|r| r.limits.as_ref())
                    .and_then(|l| l.get(GPUMEM))
                    .map(|q| q.0.clone())
                    .unwrap_or_default()
            };
            let (found, wanted) = (gpumem(&existing), gpumem(pod));
            if found == wanted {
                Ok(existing)
            } else {
                Err(ApiError::Conflict {
                    name,
                    found,
                    wanted: wanted.parse().unwrap_or(0),
                })
            }
        }
        Err(e) => Err(call(format!("create pod {name}"))(e)),
    }
}

/// Reports kubelet pull progress (`Pulling`/`Pulled`, pull failures) for `pods` through `on_line`
/// until the task is aborted. Best effort: a failing watch only stops the progress lines.
pub fn spawn_pull_progress(
    client: Client,
    namespace: &str,
    pods: Vec<String>,
    on_line: impl Fn(String) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let api = Api::<Event>::namespaced(client, namespace);
    tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        let stream = watcher(api, watcher::Config::default()).applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(ev)) = stream.try_next().await {
            let for_us = ev
                .involved_object
                .name
                .as_ref()
                .is_some_and(|n| pods.contains(n));
            // An event object is re-sent with a higher count when it repeats.
            let key = (
                ev.metadata.name.clone().unwrap_or_default(),
                ev.count.unwrap_or(0),
            );
            if for_us
                && seen.insert(key)
                && let Some(line) = pull_progress(&ev)
            {
                on_line(line);
            }
        }
    })
}

/// The pod is Ready.
pub fn is_pod_ready() -> impl Condition<Pod> {
    |p: Option<&Pod>| p.is_some_and(crate::decide::pod_ready)
}

/// Waits for every pod in `names` to be Ready (watches, one timeout for all).
pub async fn wait_pods_ready(
    api: &Api<Pod>,
    names: &[&str],
    timeout: Duration,
) -> Result<Vec<Pod>, ApiError> {
    let whats: Vec<String> = names
        .iter()
        .map(|n| format!("pod {n} to be Ready"))
        .collect();
    let waits = names
        .iter()
        .zip(&whats)
        .map(|(n, what)| wait_for(api.clone(), n, is_pod_ready(), timeout, what));
    let results = futures::future::join_all(waits).await;
    let mut pods = Vec::new();
    for (r, n) in results.into_iter().zip(names) {
        match r? {
            Some(p) => pods.push(p),
            None => {
                return Err(ApiError::Exec {
                    pod: (*n).to_owned(),
                    what: "pod disappeared while waiting".to_owned(),
                });
            }
        }
    }
    Ok(pods)
}

/// Watches the events of `pod` until hami-scheduler names `CardInsufficientMemory`, or the timeout.
/// Returns the strongest evidence seen (a timeout is not an error: the weaker evidence is the answer).
pub async fn watch_oversubscribe(
    client: &Client,
    namespace: &str,
    pod: &str,
    timeout: Duration,
) -> Result<OversubscribeEvidence, ApiError> {
    let api = Api::<Event>::namespaced(client.clone(), namespace);
    let cfg = watcher::Config::default().fields(&format!("involvedObject.name={pod}"));
    let mut events: Vec<Event> = Vec::new();
    let mut best = OversubscribeEvidence::Nothing;
    let stream = watcher(api, cfg).applied_objects();
    futures::pin_mut!(stream);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) | Ok(None) => return Ok(best),
            Ok(Some(Err(e))) => {
                return Err(ApiError::Exec {
                    pod: pod.to_owned(),
                    what: format!("event watch failed: {e}"),
                });
            }
            Ok(Some(Ok(ev))) => {
                events.push(ev);
                best = match_insufficient_memory(&events, pod);
                if matches!(best, OversubscribeEvidence::Named { .. }) {
                    return Ok(best);
                }
            }
        }
    }
}

/// The pod's phase now.
pub async fn pod_phase_now(api: &Api<Pod>, name: &str) -> Result<String, ApiError> {
    let p = api
        .get(name)
        .await
        .map_err(call(format!("get pod {name}")))?;
    Ok(pod_phase(&p).to_owned())
}

/// Deletes the lab pods (label `app.kubernetes.io/part-of=hami-isolation-lab`) and waits, by watch,
/// until they are gone. Returns the names deleted.
pub async fn delete_lab_pods(api: &Api<Pod>, timeout: Duration) -> Result<Vec<String>, ApiError> {
    let pods = list(api, &ListParams::default().labels(LAB_SELECTOR), "lab pods").await?;
    let mut deleted = Vec::new();
    for p in &pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(call(format!("delete pod {name}"))(e)),
        }
        let uid = p.metadata.uid.clone().unwrap_or_default();
        wait_for(
            api.clone(),
            &name,
            conditions::is_deleted(&uid),
            timeout,
            &format!("pod {name} to be deleted"),
        )
        .await?;
        deleted.push(name);
    }
    Ok(deleted)
}

// ---------------------------------------------------------------------------------------------
// Copying gpu-probe in and running it (exec subresource over WebSocket, as `kubectl cp` does)

/// Where the probe lands inside the container.
pub const PROBE_DIR: &str = "/tmp";
pub const PROBE_NAME: &str = "gpu-probe";

/// A tar archive holding one executable file, as `kubectl cp` streams it.
pub fn probe_tar(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_data(&mut header, PROBE_NAME, bytes)?;
    builder.into_inner()
}

/// The command that unpacks the archive: `head -c N` ends after exactly N bytes, so this works
/// whether or not the server supports closing stdin (older exec protocols do not).
pub fn untar_command(archive_len: usize) -> Vec<String> {
    vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!("head -c {archive_len} | tar xmf - -C {PROBE_DIR}"),
    ]
}

/// The exit code in an exec `Status` (0 on `Success`; the `ExitCode` cause otherwise).
pub fn exit_code_from_status(status: &Status) -> Option<i32> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))?
        .message
        .as_ref()?
        .trim()
        .parse()
        .ok()
}

/// What running the probe gave back.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
}

async fn exec_collect(
    api: &Api<Pod>,
    pod: &str,
    container: Option<&str>,
    command: Vec<String>,
    stdin: Option<Vec<u8>>,
) -> Result<ProbeRun, ApiError> {
    let mut ap = AttachParams::default().stdin(stdin.is_some());
    if let Some(c) = container {
        ap = ap.container(c);
    }
    let err = |what: String| ApiError::Exec {
        pod: pod.to_owned(),
        what,
    };
    let mut proc = api
        .exec(pod, command, &ap)
        .await
        .map_err(|e| err(format!("could not start exec (is the pod Running?): {e}")))?;
    let status = proc.take_status();
    let mut out = proc.stdout();
    let mut errs = proc.stderr();
    if let (Some(bytes), Some(mut w)) = (stdin, proc.stdin()) {
        w.write_all(&bytes)
            .await
            .map_err(|e| err(format!("writing stdin: {e}")))?;
        w.shutdown()
            .await
            .map_err(|e| err(format!("closing stdin: {e}")))?;
    }
    let read = |r: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>| async move {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            r.read_to_end(&mut buf).await.map(|_| buf)
        } else {
            Ok(buf)
        }
    };
    let (o, e) = tokio::join!(read(out.take()), read(errs.take()));
    let stdout =
        String::from_utf8_lossy(&o.map_err(|e| err(format!("reading stdout: {e}")))?).into_owned();
    let stderr =
        String::from_utf8_lossy(&e.map_err(|e| err(format!("reading stderr: {e}")))?).into_owned();
    let exit_code = match status {
        Some(s) => s.await.as_ref().and_then(exit_code_from_status),
        None => None,
    };
    proc.join()
        .await
        .map_err(|e| err(format!("exec stream: {e}")))?;
    Ok(ProbeRun {
        stdout,
        stderr,
        exit_code,
    })
}

/// Copies the gpu-probe binary into `pod` (a tar stream over exec, as `kubectl cp` does).
pub async fn copy_probe(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    probe: &[u8],
    timeout: Duration,
) -> Result<(), ApiError> {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let archive = probe_tar(probe).map_err(|e| ApiError::Exec {
        pod: pod.to_owned(),
        what: format!("building the tar archive: {e}"),
    })?;
    let copied = tokio::time::timeout(
        timeout,
        exec_collect(
            &api,
            pod,
            container,
            untar_command(archive.len()),
            Some(archive),
        ),
    )
    .await
    .map_err(|_| ApiError::Timeout {
        what: format!("copying gpu-probe into pod {pod}"),
        secs: timeout.as_secs(),
    })??;
    if copied.exit_code != Some(0) {
        return Err(ApiError::Exec {
            pod: pod.to_owned(),
            what: format!(
                "copying gpu-probe failed (exit {:?}): {} — the image needs `sh`, `head` and `tar` (the CUDA base images have them)",
                copied.exit_code,
                copied.stderr.trim()
            ),
        });
    }
    Ok(())
}

/// Copies the gpu-probe binary into `pod` and runs `gpu-probe all --output json --expect-mib N`.
pub async fn copy_and_run_probe(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    probe: &[u8],
    expect_mib: Option<u64>,
    timeout: Duration,
) -> Result<ProbeRun, ApiError> {
    copy_probe(client, namespace, pod, container, probe, timeout).await?;
    let mut args = vec!["all".to_owned(), "--output".to_owned(), "json".to_owned()];
    if let Some(mib) = expect_mib {
        args.push("--expect-mib".to_owned());
        args.push(mib.to_string());
    }
    run_copied_probe(client, namespace, pod, container, &args, timeout).await
}

/// Runs the gpu-probe already copied into `pod` (by [`copy_and_run_probe`]) with `args`.
pub async fn run_copied_probe(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    args: &[String],
    timeout: Duration,
) -> Result<ProbeRun, ApiError> {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let mut cmd = vec![format!("{PROBE_DIR}/{PROBE_NAME}")];
    cmd.extend(args.iter().cloned());
    tokio::time::timeout(timeout, exec_collect(&api, pod, container, cmd, None))
        .await
        .map_err(|_| ApiError::Timeout {
            what: format!(
                "gpu-probe {} in pod {pod}",
                args.first().map_or("", String::as_str)
            ),
            secs: timeout.as_secs(),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    #[test]
    fn tar_holds_one_executable() {
        let archive = probe_tar(b"\x7fELF-probe").unwrap();
        assert_eq!(archive.len() % 512, 0);
        let mut a = tar::Archive::new(archive.as_slice());
        let mut entries = a.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some("gpu-probe"));
        assert_eq!(e.header().mode().unwrap(), 0o755);
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        assert_eq!(body, b"\x7fELF-probe");
        assert!(entries.next().is_none());
        assert_eq!(untar_command(1024)[2], "head -c 1024 | tar xmf - -C /tmp");
    }

    #[test]
    fn real_tar_unpacks_it() {
        if lab_runner::which("tar").is_none() {
            eprintln!("SKIPPED: tar not installed (Debian package `tar`)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let archive = probe_tar(b"#!/bin/sh\necho hi\n").unwrap();
        let runner = lab_runner::SystemRunner::new(false);
        let out = lab_runner::Runner::run(
            &runner,
            &lab_runner::Cmd::new("tar")
                .args(["xmf", "-", "-C", dir.path().to_str().unwrap()])
                .stdin(archive),
        )
        .unwrap();
        assert!(out.success(), "{out:?}");
        let path = dir.path().join("gpu-probe");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
    }

    #[test]
    fn exit_codes_from_exec_status() {
        let ok = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exit_code_from_status(&ok), Some(0));
        let failed = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("3".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_code_from_status(&failed), Some(3));
        assert_eq!(exit_code_from_status(&Status::default()), None);
    }
}

#[cfg(test)]
mod mock_tests {
    use super::*;
    use crate::mockapi::MockApi;

    const T: Duration = Duration::from_secs(5);

    fn healthy() -> MockApi {
        let m = MockApi::new();
        m.add_fixture("node-hami-v2.10-h100.json")
            .add_fixture("daemonsets-hami-only.json")
            .add_fixture("deploy-hami-scheduler-tag-match.json")
            .add_fixture("endpoints-hami-scheduler-ready.json")
            .add_fixture("events-share-a.json");
        m
    }

    #[tokio::test]
    async fn snapshot_asks_for_each_object_once() {
        let m = healthy();
        let s = snapshot(&m.client(), "default", "kube-system", T)
            .await
            .unwrap();
        assert_eq!(s.server_git_version, "v1.31.4+k3s1");
        assert_eq!(s.nodes.len(), 1);
        assert_eq!(s.daemonsets.len(), 2);
        assert!(s.scheduler.is_some());
        assert!(s.scheduler_endpoints.is_some());
        assert_eq!(s.events.len(), 4);
        assert_eq!(
            m.seen_paths(),
            vec![
                "GET /version",
                "GET /api/v1/nodes",
                "GET /apis/apps/v1/daemonsets",
                "GET /api/v1/pods",
                "GET /apis/apps/v1/namespaces/kube-system/deployments/hami-scheduler",
                "GET /api/v1/namespaces/kube-system/endpoints/hami-scheduler",
                "GET /api/v1/namespaces/default/events",
            ]
        );
    }

    #[tokio::test]
    async fn missing_scheduler_is_none_not_an_error() {
        let m = MockApi::new();
        let s = snapshot(&m.client(), "default", "kube-system", T)
            .await
            .unwrap();
        assert!(s.scheduler.is_none() && s.scheduler_endpoints.is_none());
    }

    #[tokio::test]
    async fn unreachable_server_is_reported_as_such() {
        let m = MockApi::new();
        m.set_unreachable();
        let err = server_version(&m.client(), T).await.unwrap_err();
        assert!(matches!(err, ApiError::Unreachable(_)));
        assert!(err.to_string().contains("--kubeconfig"), "{err}");
    }

    #[tokio::test]
    async fn create_is_idempotent_and_refuses_other_sizes() {
        let m = MockApi::new();
        let api = Api::<Pod>::namespaced(m.client(), "default");
        let pod = crate::manifests::render(
            crate::manifests::SHARE_TEMPLATE,
            "hami-share-a",
            "default",
            crate::manifests::DEFAULT_IMAGE,
            8000,
            None,
        )
        .unwrap()
        .pod;
        create_pod(&api, &pod).await.unwrap();
        assert!(m.has("pods", "default", "hami-share-a"));
        create_pod(&api, &pod).await.unwrap();
        let bigger = crate::manifests::render(
            crate::manifests::SHARE_TEMPLATE,
            "hami-share-a",
            "default",
            crate::manifests::DEFAULT_IMAGE,
            9000,
            None,
        )
        .unwrap()
        .pod;
        let err = create_pod(&api, &bigger).await.unwrap_err();
        assert!(err.to_string().contains("cluster-ctl cleanup"), "{err}");
        assert_eq!(
            m.seen_paths(),
            vec![
                "POST /api/v1/namespaces/default/pods",
                "POST /api/v1/namespaces/default/pods",
                "GET /api/v1/namespaces/default/pods/hami-share-a",
                "POST /api/v1/namespaces/default/pods",
                "GET /api/v1/namespaces/default/pods/hami-share-a",
            ]
        );
    }

    #[tokio::test]
    async fn ready_pods_are_seen_through_the_watch_list() {
        let m = MockApi::new();
        m.add_fixture("pod-hami-share-a-running.json")
            .add_fixture("pod-hami-share-b-running.json");
        let api = Api::<Pod>::namespaced(m.client(), "default");
        let pods = wait_pods_ready(&api, &["hami-share-a", "hami-share-b"], T)
            .await
            .unwrap();
        assert_eq!(pods.len(), 2);
        assert!(
            m.seen()
                .iter()
                .all(|s| s.uri.contains("fieldSelector=metadata.name")),
            "{:?}",
            m.seen()
        );
    }

    #[tokio::test]
    async fn pull_progress_lines_for_the_watched_pods_only() {
        let m = MockApi::new();
        m.add_fixture("events-share-a.json")
            .add_fixture("events-oversubscribe.json");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let task = spawn_pull_progress(
            m.client(),
            "default",
            vec!["hami-share-a".into()],
            move |l| {
                sink.lock().unwrap().push(l);
            },
        );
        let got = tokio::time::timeout(T, async {
            loop {
                if lines.lock().unwrap().len() >= 2 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        task.abort();
        assert!(got.is_ok(), "{:?}", lines.lock().unwrap());
        let lines = lines.lock().unwrap().clone();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("hami-share-a Pulling: Pulling image"),
            "{lines:?}"
        );
        assert!(lines[1].starts_with("hami-share-a Pulled:"), "{lines:?}");
    }

    #[tokio::test]
    async fn a_pending_pod_times_out_with_what_was_awaited() {
        let m = MockApi::new();
        m.add_fixture("pod-unmutated-default-scheduler.json");
        let api = Api::<Pod>::namespaced(m.client(), "default");
        let err = wait_pods_ready(&api, &["hami-share-a"], Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("hami-share-a to be Ready"));
    }

    #[tokio::test]
    async fn oversubscribe_evidence_from_the_event_watch() {
        let m = MockApi::new();
        m.add_fixture("events-oversubscribe.json")
            .add_fixture("events-share-a.json");
        let ev = watch_oversubscribe(&m.client(), "default", "hami-oversubscribe", T)
            .await
            .unwrap();
        assert!(matches!(ev, OversubscribeEvidence::Named { .. }), "{ev:?}");
        assert!(
            m.seen()[0]
                .uri
                .contains("fieldSelector=involvedObject.name%3Dhami-oversubscribe"),
            "{:?}",
            m.seen()
        );
        // No event at all: the timeout ends the watch with Nothing.
        let empty = MockApi::new();
        let ev = watch_oversubscribe(
            &empty.client(),
            "default",
            "hami-oversubscribe",
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert_eq!(ev, OversubscribeEvidence::Nothing);
    }

    #[tokio::test]
    async fn cleanup_deletes_only_lab_pods_and_waits() {
        let m = MockApi::new();
        let s = crate::sizing::size(
            &[crate::sizing::Card {
                uuid: None,
                devmem_mib: 49140,
            }],
            None,
            None,
        )
        .unwrap();
        for p in
            crate::manifests::render_all(&s, "default", crate::manifests::DEFAULT_IMAGE).unwrap()
        {
            let mut v = serde_json::to_value(&p.pod).unwrap();
            v["metadata"]["uid"] = serde_json::json!(format!("uid-{}", p.name));
            m.add(v);
        }
        let mut other = crate::testdata::fixture_pod("pod-hami-share-a-running.json");
        other.metadata.name = Some("someone-elses".into());
        m.add(serde_json::to_value(&other).unwrap());
        let api = Api::<Pod>::namespaced(m.client(), "default");
        let mut deleted = delete_lab_pods(&api, T).await.unwrap();
        deleted.sort();
        assert_eq!(
            deleted,
            vec!["hami-oversubscribe", "hami-share-a", "hami-share-b"]
        );
        assert!(m.has("pods", "default", "someone-elses"));
        assert!(!m.has("pods", "default", "hami-share-a"));
        assert!(
            m.seen()[0]
                .uri
                .contains("labelSelector=app.kubernetes.io%2Fpart-of%3Dhami-isolation-lab"),
            "{:?}",
            m.seen()[0]
        );
        // A second cleanup finds nothing and changes nothing.
        assert!(delete_lab_pods(&api, T).await.unwrap().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// harden: the GPU tenant policy (ValidatingAdmissionPolicy + binding). Kept as one block so it
// moves as a unit; the decisions are `crate::harden`'s.

/// One call under `timeout`, named `what` in its error.
async fn within<T>(
    timeout: Duration,
    what: &str,
    call_fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(timeout, call_fut).await {
        Ok(r) => r.map_err(call(what)),
        Err(_) => Err(ApiError::Timeout {
            what: what.to_owned(),
            secs: timeout.as_secs(),
        }),
    }
}

/// Every pod of the cluster, under `timeout` (what `harden` checks the exempt list against).
pub async fn list_all_pods(client: &Client, timeout: Duration) -> Result<Vec<Pod>, ApiError> {
    let api = Api::<Pod>::all(client.clone());
    Ok(
        within(timeout, "list pods", api.list(&ListParams::default()))
            .await?
            .items,
    )
}

/// The policy and the binding named `name`, as the server holds them (`None`: absent).
pub async fn get_admission_policy(
    client: &Client,
    name: &str,
    timeout: Duration,
) -> Result<
    (
        Option<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy>,
        Option<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>,
    ),
    ApiError,
> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let policies = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone());
    let policy = within(
        timeout,
        &format!("get validatingadmissionpolicy {name}"),
        policies.get_opt(name),
    )
    .await?;
    let binding = within(
        timeout,
        &format!("get validatingadmissionpolicybinding {name}"),
        bindings.get_opt(name),
    )
    .await?;
    Ok((policy, binding))
}

/// Creates `want` when the server has none (`live` is `None`), else replaces it, keeping the live
/// resourceVersion so that a concurrent change is refused rather than overwritten.
pub async fn create_or_replace<K>(
    client: &Client,
    want: &K,
    live: Option<&K>,
    timeout: Duration,
) -> Result<(), ApiError>
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api = Api::<K>::all(client.clone());
    let name = want.meta().name.clone().unwrap_or_default();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    match live {
        None => {
            within(
                timeout,
                &format!("create {kind} {name}"),
                api.create(&PostParams::default(), want),
            )
            .await?;
        }
        Some(l) => {
            let mut obj = want.clone();
            obj.meta_mut().resource_version = l.meta().resource_version.clone();
            within(
                timeout,
                &format!("replace {kind} {name}"),
                api.replace(&name, &PostParams::default(), &obj),
            )
            .await?;
        }
    }
    Ok(())
}
