//! Every wait is a watch that survives: kube-runtime's `watcher` with its backoff (exponential,
//! jittered, as client-go's reflector), so a 410 Gone after a compaction re-lists, a watch the
//! server closes (its timeout) or that breaks mid-stream is resumed from the last resourceVersion,
//! and 429/5xx answers are retried — until the wait's own deadline. Only 401, 403 and a resource
//! the server does not serve end a wait early: no retry can fix them.
//!
//! The predicates are pure (`crate::decide`); this module only feeds them objects. Each wait is a
//! task of the cluster's progress reporter: its seconds out of its deadline, and what the object
//! is doing (`crate::wait_state`) each time that changes.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::Api;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::{WatchStreamExt, wait::Condition};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::{ApiError, Cluster, Op};
use crate::decide::{OversubscribeEvidence, match_insufficient_memory};
use crate::wait_state::{PullStep, WaitState};

/// `timeoutSeconds` of every watch request: the server ends the watch then (or earlier, at its
/// own limit) and the watcher resumes it. kube-runtime declares a watch dead after this plus 5 s
/// of silence.
pub const WATCH_TIMEOUT_SECS: u32 = 290;

/// How often a wait's bar moves while nothing changes.
const TICK: Duration = Duration::from_secs(1);

/// A deadline's length in whole seconds, rounded up (a wait of 600 s set a moment ago is still
/// one of 600 s).
fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Whole seconds since `started`.
fn secs_since(started: Instant) -> u64 {
    started.elapsed().as_secs()
}

/// Whether a watcher error can be waited out: everything but a refusal no retry can change.
fn fatal(op: &Op, e: &watcher::Error, secs: u64) -> Option<ApiError> {
    let (verb, source) = match e {
        watcher::Error::InitialListFailed(k) => ("list", k),
        watcher::Error::WatchStartFailed(k) | watcher::Error::WatchFailed(k) => ("watch", k),
        watcher::Error::WatchError(s) if matches!(s.code, 401 | 403) => {
            let k = kube::Error::Api(s.clone());
            let op = Op {
                verb: "watch",
                ..op.clone()
            };
            return Some(super::error::from_kube(&op, &k, secs, String::new()));
        }
        _ => return None,
    };
    match source {
        kube::Error::Api(s) if matches!(s.code, 400 | 401 | 403 | 404 | 405 | 422) => {
            let op = Op { verb, ..op.clone() };
            Some(super::error::from_kube(&op, source, secs, String::new()))
        }
        _ => None,
    }
}

/// Events of one named object: `Some(obj)` when it is there (listed, added or modified), `None`
/// when it is not (not in a fresh list, or deleted) — `watch_object`'s semantics with our config.
fn object_watch<K>(
    api: Api<K>,
    name: &str,
) -> impl futures::Stream<Item = Result<Option<K>, watcher::Error>> + Send + use<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let cfg = watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(WATCH_TIMEOUT_SECS);
    watcher::watcher(api, cfg)
        .default_backoff()
        .scan(false, |seen, event| {
            let out = match event {
                Ok(WatchEvent::Init) => {
                    *seen = false;
                    None
                }
                Ok(WatchEvent::InitApply(obj)) => {
                    *seen = true;
                    Some(Ok(Some(obj)))
                }
                Ok(WatchEvent::Apply(obj)) => Some(Ok(Some(obj))),
                Ok(WatchEvent::Delete(_)) => Some(Ok(None)),
                Ok(WatchEvent::InitDone) => (!*seen).then_some(Ok(None)),
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(Some(out))
        })
        .filter_map(futures::future::ready)
}

impl Cluster {
    /// Watches `name` until `cond` holds, or `deadline`. Returns the object that satisfied it
    /// (`None` when the condition holds for an absent object).
    pub(super) async fn wait_object<K>(
        &self,
        api: Api<K>,
        op: Op,
        cond: impl Condition<K>,
        deadline: Instant,
        what: &str,
    ) -> Result<Option<K>, ApiError>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + WaitState + 'static,
    {
        let name = op.name.clone().unwrap_or_default();
        let started = Instant::now();
        let limit = whole_secs(deadline.saturating_duration_since(started));
        let task = self.progress.task(what, Some(limit), "s");
        let stream = object_watch(api, &name);
        futures::pin_mut!(stream);
        let mut last_error: Option<String> = None;
        let mut shown = String::new();
        loop {
            let tick = (Instant::now() + TICK).min(deadline);
            match tokio::time::timeout_at(tick, stream.next()).await {
                Err(_) if Instant::now() < deadline => task.tick(secs_since(started)),
                Err(_) | Ok(None) => {
                    task.finish_at(limit, &format!("timed out ({shown})"));
                    return Err(ApiError::WaitTimeout {
                        what: what.to_owned(),
                        secs: limit,
                        last: last_error
                            .map(|e| format!("; the watch last failed with: {e}"))
                            .unwrap_or_default(),
                    });
                }
                Ok(Some(Err(e))) => {
                    if let Some(fatal) = fatal(&op, &e, self.timeout.as_secs()) {
                        task.finish(&format!("stopped: {fatal}"));
                        return Err(fatal);
                    }
                    self.log(&format!("watch for {what}: {e}; resuming"));
                    last_error = Some(e.to_string());
                }
                Ok(Some(Ok(obj))) => {
                    let state = K::wait_state(obj.as_ref());
                    if cond.matches_object(obj.as_ref()) {
                        task.finish_at(secs_since(started), &state);
                        return Ok(obj);
                    }
                    if state != shown {
                        task.update(secs_since(started), &state);
                        shown = state;
                    }
                }
            }
        }
    }

    /// Waits until the namespaced object `name` satisfies `cond`.
    pub async fn wait_namespaced<K>(
        &self,
        namespace: &str,
        name: &str,
        cond: impl Condition<K>,
        deadline: Instant,
        what: &str,
    ) -> Result<Option<K>, ApiError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + WaitState
            + 'static,
    {
        let op = Op::of::<K>("watch", Some(namespace), Some(name));
        let api = Api::<K>::namespaced(self.client.clone(), namespace);
        self.wait_object(api, op, cond, deadline, what).await
    }

    /// Waits until node `name` satisfies `cond`.
    pub async fn wait_node(
        &self,
        name: &str,
        cond: impl Condition<Node>,
        deadline: Instant,
        what: &str,
    ) -> Result<Option<Node>, ApiError> {
        let op = Op::of::<Node>("watch", None, Some(name));
        let api = Api::<Node>::all(self.client.clone());
        self.wait_object(api, op, cond, deadline, what).await
    }

    /// Waits for every pod in `names` to be Ready (one deadline for all).
    pub async fn wait_pods_ready(
        &self,
        namespace: &str,
        names: &[&str],
        timeout: Duration,
    ) -> Result<Vec<Pod>, ApiError> {
        let deadline = Instant::now() + timeout;
        let whats: Vec<String> = names
            .iter()
            .map(|n| format!("pod {n} to be Ready"))
            .collect();
        let waits = names.iter().zip(&whats).map(|(n, what)| {
            self.wait_namespaced::<Pod>(
                namespace,
                n,
                |p: Option<&Pod>| p.is_some_and(crate::decide::pod_ready),
                deadline,
                what,
            )
        });
        let results = futures::future::join_all(waits).await;
        let mut pods = Vec::new();
        for r in results {
            // The condition only holds for a present pod.
            pods.extend(r?);
        }
        Ok(pods)
    }

    /// Waits until pod `name` is gone: deleted, or (when its `uid` is known) replaced by a pod
    /// with another uid.
    pub async fn wait_pod_gone(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let uid = uid.map(str::to_owned);
        self.wait_namespaced::<Pod>(
            namespace,
            name,
            move |p: Option<&Pod>| {
                p.is_none_or(|p| uid.is_some() && p.metadata.uid.as_deref() != uid.as_deref())
            },
            Instant::now() + timeout,
            &format!("pod {name} to be deleted"),
        )
        .await
        .map(|_| ())
    }

    /// Watches the events of `pod` until hami-scheduler names `CardInsufficientMemory`, or the
    /// timeout. Returns the strongest evidence seen (a timeout is not an error: the weaker evidence
    /// is the answer). The watch survives like every wait; 401/403 end it with their error.
    pub async fn watch_oversubscribe(
        &self,
        namespace: &str,
        pod: &str,
        timeout: Duration,
    ) -> Result<OversubscribeEvidence, ApiError> {
        let api = Api::<Event>::namespaced(self.client.clone(), namespace);
        let op = Op::of::<Event>("watch", Some(namespace), None);
        let cfg = watcher::Config::default()
            .fields(&format!("involvedObject.name={pod}"))
            .timeout(WATCH_TIMEOUT_SECS);
        let stream = watcher::watcher(api, cfg).default_backoff();
        futures::pin_mut!(stream);
        let started = Instant::now();
        let deadline = started + timeout;
        let task = self
            .progress
            .task(&format!("events of {pod}"), Some(timeout.as_secs()), "s");
        let mut events: Vec<Event> = Vec::new();
        let mut best = OversubscribeEvidence::Nothing;
        loop {
            let tick = (Instant::now() + TICK).min(deadline);
            match tokio::time::timeout_at(tick, stream.next()).await {
                Err(_) if Instant::now() < deadline => task.tick(secs_since(started)),
                Err(_) | Ok(None) => {
                    task.finish_at(
                        timeout.as_secs(),
                        &format!("watched to the end: {}", evidence_text(&best)),
                    );
                    return Ok(best);
                }
                Ok(Some(Err(e))) => {
                    if let Some(fatal) = fatal(&op, &e, self.timeout.as_secs()) {
                        task.finish(&format!("stopped: {fatal}"));
                        return Err(fatal);
                    }
                    self.log(&format!("event watch of {pod}: {e}; resuming"));
                }
                Ok(Some(Ok(WatchEvent::Apply(ev) | WatchEvent::InitApply(ev)))) => {
                    // A re-list sends the same events again: keep one copy of each.
                    events
                        .retain(|e| e.metadata.uid != ev.metadata.uid || ev.metadata.uid.is_none());
                    events.push(ev);
                    let now = match_insufficient_memory(&events, pod);
                    if matches!(now, OversubscribeEvidence::Named { .. }) {
                        task.finish_at(secs_since(started), &evidence_text(&now));
                        return Ok(now);
                    }
                    if now != best {
                        task.update(secs_since(started), &evidence_text(&now));
                    }
                    best = now;
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Hands kubelet's pull steps (`Pulling`/`Pulled`, pull failures) for `pods` to `on_step`
    /// until the task is aborted. Best effort, but it survives like every wait; a
    /// refusal (401/403) only ends the progress lines.
    pub fn spawn_pull_progress(
        &self,
        namespace: &str,
        pods: Vec<String>,
        on_step: impl Fn(PullStep) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let api = Api::<Event>::namespaced(self.client.clone(), namespace);
        let op = Op::of::<Event>("watch", Some(namespace), None);
        let secs = self.timeout.as_secs();
        tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            let cfg = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
            let stream = watcher::watcher(api, cfg).default_backoff();
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                let ev = match item {
                    Ok(WatchEvent::Apply(ev) | WatchEvent::InitApply(ev)) => ev,
                    Ok(_) => continue,
                    Err(e) => {
                        if fatal(&op, &e, secs).is_some() {
                            return;
                        }
                        continue;
                    }
                };
                let for_us = ev
                    .involved_object
                    .name
                    .as_ref()
                    .is_some_and(|n| pods.contains(n));
                // An event object is re-sent with a higher count when it repeats.
                let key = (ev.name_any(), ev.count.unwrap_or(0));
                if for_us
                    && seen.insert(key)
                    && let Some(step) = PullStep::of(&ev)
                {
                    on_step(step);
                }
            }
        })
    }
}

/// What a wait for the oversubscribe refusal has seen so far, in a few words.
fn evidence_text(e: &OversubscribeEvidence) -> String {
    match e {
        OversubscribeEvidence::Named { message, .. } => format!("hami-scheduler: {message}"),
        OversubscribeEvidence::GenericOnly { message } => {
            format!("only hami-scheduler's generic refusal: {message}")
        }
        OversubscribeEvidence::SummaryOnly { message } => {
            format!("only the scheduler's summary: {message}")
        }
        OversubscribeEvidence::Nothing => "no refusal seen yet".to_owned(),
    }
}
