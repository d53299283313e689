//! Reads, creates and deletes: the snapshot the decisions work on, the lab pods' create (idempotent,
//! waiting out a Terminating namesake) and delete (waiting until gone), a pod with its events (the
//! evidence of E4), container log tails (`doctor`, `run`'s capture), and the capture for
//! `run.json`. Every request goes through [`Cluster::call`].

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::version::Info;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::{ApiError, Cluster, Op};
use crate::doctor::Snapshot;
use crate::manifests::{GPUMEM, LAB_SELECTOR};

/// What `run` keeps of the cluster for the evidence (`DIR/cluster/*.json`), read after the
/// exercises. Best effort: a list that fails is recorded as missing, never fatal.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub version: Option<Info>,
    pub nodes: Vec<Node>,
    /// Pods of HAMi's namespace whose name starts with `hami-`.
    pub hami_pods: Vec<Pod>,
    /// Events of the lab namespace.
    pub events: Vec<Event>,
    pub daemonsets: Vec<DaemonSet>,
}

fn gpumem_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.resources.as_ref())
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get(GPUMEM))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

impl Cluster {
    pub(super) fn namespaced<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub(super) fn all<K>(&self) -> Api<K>
    where
        K: Resource,
        <K as Resource>::DynamicType: Default,
    {
        Api::all(self.client.clone())
    }

    /// The server version; any failure here says the cluster cannot be used.
    pub async fn server_version(&self) -> Result<Info, ApiError> {
        let client = self.client.clone();
        self.call(&Op::version(), || client.apiserver_version())
            .await
    }

    pub(super) async fn list<K>(
        &self,
        api: &Api<K>,
        op: Op,
        lp: &ListParams,
    ) -> Result<Vec<K>, ApiError>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        Ok(self.call(&op, || api.list(lp)).await?.items)
    }

    pub(super) async fn get_opt<K>(
        &self,
        api: &Api<K>,
        op: Op,
        name: &str,
    ) -> Result<Option<K>, ApiError>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        self.call(&op, || api.get_opt(name)).await
    }

    /// A namespaced object by name, `None` when it does not exist.
    pub async fn get_namespaced<K>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, ApiError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let op = Op::of::<K>("get", Some(namespace), Some(name));
        self.get_opt(&self.namespaced::<K>(namespace), op, name)
            .await
    }

    /// A node by name, `None` when it does not exist.
    pub async fn get_node(&self, name: &str) -> Result<Option<Node>, ApiError> {
        let op = Op::of::<Node>("get", None, Some(name));
        self.get_opt(&self.all::<Node>(), op, name).await
    }

    /// A pod that must exist.
    pub async fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, ApiError> {
        let op = Op::of::<Pod>("get", Some(namespace), Some(name));
        match self
            .get_opt(&self.namespaced::<Pod>(namespace), op.clone(), name)
            .await?
        {
            Some(p) => Ok(p),
            None => Err(ApiError::NotFound {
                op: Box::new(op),
                message: format!("pod {namespace}/{name} does not exist"),
            }),
        }
    }

    /// Gathers what `doctor`, `preflight`, `install-hami` and `run` decide on.
    pub async fn snapshot(
        &self,
        lab_namespace: &str,
        hami_namespace: &str,
    ) -> Result<Snapshot, ApiError> {
        let version = self.server_version().await?;
        let lp = ListParams::default();
        let nodes = self
            .list(&self.all::<Node>(), Op::of::<Node>("list", None, None), &lp)
            .await?;
        let daemonsets = self
            .list(
                &self.all::<DaemonSet>(),
                Op::of::<DaemonSet>("list", None, None),
                &lp,
            )
            .await?;
        let pods = self
            .list(&self.all::<Pod>(), Op::of::<Pod>("list", None, None), &lp)
            .await?;
        let scheduler = self
            .get_namespaced::<Deployment>(hami_namespace, crate::decide::HAMI_SCHEDULER)
            .await?;
        let scheduler_endpoints = self
            .get_namespaced::<Endpoints>(hami_namespace, crate::decide::HAMI_SCHEDULER)
            .await?;
        let events = self
            .list(
                &self.namespaced::<Event>(lab_namespace),
                Op::of::<Event>("list", Some(lab_namespace), None),
                &lp,
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

    /// The lab pods (label `app.kubernetes.io/part-of=hami-isolation-lab`) of `namespace`.
    pub async fn lab_pods(&self, namespace: &str) -> Result<Vec<Pod>, ApiError> {
        self.list(
            &self.namespaced::<Pod>(namespace),
            Op::of::<Pod>("list", Some(namespace), None),
            &ListParams::default().labels(LAB_SELECTOR),
        )
        .await
    }

    /// Creates a lab pod, idempotently: an existing pod with the same `gpumem` is reused; one that
    /// is Terminating (a `cleanup` still running) is waited out, under `wait`, and then created
    /// again; one with another size is an error that says to clean up.
    pub async fn create_pod(
        &self,
        namespace: &str,
        pod: &Pod,
        wait: Duration,
    ) -> Result<Pod, ApiError> {
        let name = pod.name_any();
        let api = self.namespaced::<Pod>(namespace);
        let op = Op::of::<Pod>("create", Some(namespace), Some(&name));
        let deadline = tokio::time::Instant::now() + wait;
        let pp = PostParams::default();
        loop {
            match self.call(&op, || api.create(&pp, pod)).await {
                Ok(p) => return Ok(p),
                Err(ApiError::Status { code: 409, .. }) => {}
                Err(e) => return Err(e),
            }
            let Some(existing) = self
                .get_opt(
                    &api,
                    Op::of::<Pod>("get", Some(namespace), Some(&name)),
                    &name,
                )
                .await?
            else {
                // Deleted between the two calls: create again (after a breath, within `wait`).
                if tokio::time::Instant::now() >= deadline {
                    return Err(ApiError::WaitTimeout {
                        what: format!("pod {name} to be created (it keeps being deleted)"),
                        secs: wait.as_secs(),
                        last: String::new(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if existing.metadata.deletion_timestamp.is_some() {
                crate::progress(&format!(
                    "pod {name} is still terminating; waiting until it is gone to create it again"
                ));
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.wait_pod_gone(namespace, &name, existing.metadata.uid.as_deref(), left)
                    .await?;
                continue;
            }
            let (found, wanted) = (gpumem_of(&existing), gpumem_of(pod));
            return if found == wanted {
                Ok(existing)
            } else {
                Err(ApiError::Conflict {
                    name,
                    found,
                    wanted: wanted.parse().unwrap_or(0),
                })
            };
        }
    }

    /// Deletes pod `name` (a pod already gone counts as deleted) and waits, by watch, until it is
    /// gone (graceful deletion keeps it Terminating for a while). Returns whether it existed.
    pub async fn delete_pod(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<bool, ApiError> {
        let api = self.namespaced::<Pod>(namespace);
        let op = Op::of::<Pod>("delete", Some(namespace), Some(name));
        let dp = DeleteParams::default();
        let deleted = match self.call(&op, || api.delete(name, &dp)).await {
            Ok(either) => either.left(),
            Err(ApiError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let uid = deleted.and_then(|p| p.metadata.uid);
        self.wait_pod_gone(namespace, name, uid.as_deref(), timeout)
            .await?;
        Ok(true)
    }

    /// Deletes every lab pod of `namespace` and waits until all are gone. Returns their names.
    pub async fn delete_lab_pods(
        &self,
        namespace: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, ApiError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut deleted = Vec::new();
        for p in self.lab_pods(namespace).await? {
            let name = p.name_any();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.delete_pod(namespace, &name, left).await? {
                deleted.push(name);
            }
        }
        Ok(deleted)
    }

    /// Pod `name` (`None` when it is gone) and the events about it, as they are now.
    pub async fn pod_and_events(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(Option<Pod>, Vec<Event>), ApiError> {
        let pod = self.get_namespaced::<Pod>(namespace, name).await?;
        let events = self
            .list(
                &self.namespaced::<Event>(namespace),
                Op::of::<Event>("list", Some(namespace), None),
                &ListParams::default().fields(&format!("involvedObject.name={name}")),
            )
            .await?;
        Ok((pod, events))
    }

    /// The last `lines` lines (at most 1 MiB) of one container's log, of its previous run when
    /// `previous` (a crash-looping container's reason is there).
    pub async fn container_log_tail(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        lines: i64,
        previous: bool,
    ) -> Result<String, ApiError> {
        let api = self.namespaced::<Pod>(namespace);
        let op = Op::of::<Pod>("get", Some(namespace), Some(pod)).subresource("log");
        let lp = LogParams {
            container: Some(container.to_owned()),
            tail_lines: Some(lines),
            limit_bytes: Some(1 << 20),
            previous,
            ..LogParams::default()
        };
        self.call(&op, || api.logs(pod, &lp)).await
    }

    /// What `run` keeps of the cluster (best effort: a failing list is logged and left empty).
    pub async fn capture(&self, lab_namespace: &str, hami_namespace: &str) -> Capture {
        fn kept<T>(what: &str, r: Result<T, ApiError>) -> Option<T> {
            r.map_err(|e| crate::progress(&format!("could not capture {what}: {e}")))
                .ok()
        }
        let lp = ListParams::default();
        let version = kept("the server version", self.server_version().await);
        let nodes = self
            .list(&self.all::<Node>(), Op::of::<Node>("list", None, None), &lp)
            .await;
        let hami_pods = self
            .list(
                &self.namespaced::<Pod>(hami_namespace),
                Op::of::<Pod>("list", Some(hami_namespace), None),
                &lp,
            )
            .await;
        let events = self
            .list(
                &self.namespaced::<Event>(lab_namespace),
                Op::of::<Event>("list", Some(lab_namespace), None),
                &lp,
            )
            .await;
        let daemonsets = self
            .list(
                &self.all::<DaemonSet>(),
                Op::of::<DaemonSet>("list", None, None),
                &lp,
            )
            .await;
        Capture {
            version,
            nodes: kept("nodes", nodes).unwrap_or_default(),
            hami_pods: kept("HAMi's pods", hami_pods)
                .unwrap_or_default()
                .into_iter()
                .filter(|p| p.name_any().starts_with("hami-"))
                .collect(),
            events: kept("events", events).unwrap_or_default(),
            daemonsets: kept("daemonsets", daemonsets).unwrap_or_default(),
        }
    }
}
