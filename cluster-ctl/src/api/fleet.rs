//! What `cluster-ctl fleet` asks of the API server besides pods and exec: the nodes (narrowed by
//! a label selector on the server), every pod (HAMi's allocations), the probe pods of a run by
//! label, a probe pod's wait (the pure predicate `crate::fleet::settled`), its FailedScheduling
//! message, and the sweep that deletes a run's pods and waits until they are gone.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::ResourceExt;
use kube::api::ListParams;
use tokio::time::Instant;

use super::{ApiError, Cluster, Op};

/// How many deletions the sweep has in flight at once.
const SWEEP_PARALLEL: usize = 32;

impl Cluster {
    /// Every node, or those matching `label_selector` (`--node-selector`, applied by the server).
    pub async fn nodes(&self, label_selector: Option<&str>) -> Result<Vec<Node>, ApiError> {
        let mut lp = ListParams::default();
        if let Some(s) = label_selector {
            lp = lp.labels(s);
        }
        self.list(&self.all_nodes(), Op::of::<Node>("list", None, None), &lp)
            .await
    }

    fn all_nodes(&self) -> kube::Api<Node> {
        kube::Api::all(self.client.clone())
    }

    /// The pods of `namespace` matching `label_selector`.
    pub async fn pods_labelled(
        &self,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Vec<Pod>, ApiError> {
        self.list(
            &self.namespaced::<Pod>(namespace),
            Op::of::<Pod>("list", Some(namespace), None),
            &ListParams::default().labels(label_selector),
        )
        .await
    }

    /// Watches probe pod `name` until it is Ready, cannot be scheduled, failed or is gone
    /// (`crate::fleet::settled`), or `deadline`. `None`: the pod is gone.
    pub async fn wait_probe_pod(
        &self,
        namespace: &str,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<Pod>, ApiError> {
        self.wait_namespaced::<Pod>(
            namespace,
            name,
            crate::fleet::settled,
            deadline,
            &format!("probe pod {name} to start"),
        )
        .await
    }

    /// The last FailedScheduling message about pod `name` (the scheduler's reason).
    pub async fn failed_scheduling(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, ApiError> {
        let events: Vec<Event> = self
            .list(
                &self.namespaced::<Event>(namespace),
                Op::of::<Event>("list", Some(namespace), None),
                &ListParams::default().fields(&format!("involvedObject.name={name}")),
            )
            .await?;
        Ok(events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
            .filter_map(|e| e.message.clone())
            .next_back())
    }

    /// Deletes every pod of `namespace` matching `label_selector` and waits until all are gone
    /// (one deadline for all). Returns the names deleted and those that could not be.
    pub async fn sweep_pods(
        &self,
        namespace: &str,
        label_selector: &str,
        timeout: Duration,
    ) -> Result<(Vec<String>, Vec<(String, ApiError)>), ApiError> {
        let deadline = Instant::now() + timeout;
        let names: Vec<String> = self
            .pods_labelled(namespace, label_selector)
            .await?
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        let results: Vec<(String, Result<bool, ApiError>)> = futures::stream::iter(names)
            .map(|name| async move {
                let left = deadline.saturating_duration_since(Instant::now());
                let r = self.delete_pod(namespace, &name, left).await;
                (name, r)
            })
            .buffer_unordered(SWEEP_PARALLEL)
            .collect()
            .await;
        let mut deleted = Vec::new();
        let mut failed = Vec::new();
        for (name, r) in results {
            match r {
                Ok(true) => deleted.push(name),
                Ok(false) => {}
                Err(e) => failed.push((name, e)),
            }
        }
        deleted.sort();
        Ok((deleted, failed))
    }
}
