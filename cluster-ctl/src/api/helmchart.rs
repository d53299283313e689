//! k3s's HelmChart (`helm.cattle.io/v1`, a CRD: a `DynamicObject` here) and the Jobs its helm
//! controller runs, for the HelmChart path of `install-hami` and `cleanup --uninstall-hami` (the
//! decisions are `crate::helmchart`'s, pure). Every request goes through [`Cluster::call`] (the
//! per-call bound, retries of transient failures); every wait is a surviving watch under its
//! deadline ([`Cluster::wait_object`]).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::Value;
use tokio::time::Instant;

use super::{ApiError, Cluster, Op};
use crate::helmchart::{GROUP, JOB_POD_LABELS, KIND, PLURAL, VERSION, finished_job};

/// Lines of a helm Job's log that are read.
pub const JOB_LOG_LINES: i64 = 200;

fn helmchart_op(verb: &'static str, namespace: &str, name: Option<&str>) -> Op {
    Op::dynamic(verb, GROUP, PLURAL, Some(namespace), name)
}

impl Cluster {
    /// The HelmChart resource in `namespace`.
    fn helmcharts(&self, namespace: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(GROUP, VERSION, KIND);
        let resource = ApiResource::from_gvk_with_plural(&gvk, PLURAL);
        Api::namespaced_with(self.client.clone(), namespace, &resource)
    }

    /// Whether the cluster serves the CRD `name`. Not being allowed to read it counts as not
    /// served (said on stderr): then the HelmChart path cannot be checked either.
    pub async fn crd_served(&self, name: &str) -> Result<bool, ApiError> {
        let api = Api::<CustomResourceDefinition>::all(self.client.clone());
        let op = Op::of::<CustomResourceDefinition>("get", None, Some(name));
        match self.get_opt(&api, op, name).await {
            Ok(crd) => Ok(crd.is_some()),
            Err(e @ ApiError::Forbidden { .. }) => {
                self.log(&format!("{e}; taking {name} as not served"));
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The HelmChart `name`, as JSON (`None` when absent).
    pub async fn get_helmchart(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let api = self.helmcharts(namespace);
        let got = self
            .get_opt(&api, helmchart_op("get", namespace, Some(name)), name)
            .await?;
        Ok(got.and_then(|o| serde_json::to_value(o).ok()))
    }

    /// Creates the HelmChart from its JSON (a 409 is returned as is: the caller decides whether
    /// the one that exists is its own).
    pub async fn create_helmchart(&self, object: &Value) -> Result<(), ApiError> {
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let op = helmchart_op("create", namespace, Some(name));
        let obj: DynamicObject =
            serde_json::from_value(object.clone()).map_err(|e| ApiError::Request {
                op: Box::new(op.clone()),
                what: format!("the {KIND} does not serialise: {e}"),
            })?;
        let api = self.helmcharts(namespace);
        let pp = PostParams::default();
        self.call(&op, || api.create(&pp, &obj)).await.map(|_| ())
    }

    /// Applies a JSON merge patch to the HelmChart (no resourceVersion: the helm controller's own
    /// updates cannot make it conflict, and repeating it changes nothing).
    pub async fn patch_helmchart(
        &self,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<(), ApiError> {
        let api = self.helmcharts(namespace);
        let op = helmchart_op("patch", namespace, Some(name));
        let pp = PatchParams::default();
        let merge = Patch::Merge(patch);
        self.call(&op, || api.patch(name, &pp, &merge))
            .await
            .map(|_| ())
    }

    /// Deletes the HelmChart; `false` when there was none. The helm controller's finalizer keeps
    /// it until its helm-delete Job has uninstalled the release: see
    /// [`Cluster::wait_helmchart_gone`].
    pub async fn delete_helmchart(&self, namespace: &str, name: &str) -> Result<bool, ApiError> {
        let api = self.helmcharts(namespace);
        let op = helmchart_op("delete", namespace, Some(name));
        let dp = DeleteParams::default();
        match self.call(&op, || api.delete(name, &dp)).await {
            Ok(_) => Ok(true),
            Err(ApiError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Watches until the HelmChart is gone, or `deadline`.
    pub async fn wait_helmchart_gone(
        &self,
        namespace: &str,
        name: &str,
        deadline: Instant,
    ) -> Result<(), ApiError> {
        self.wait_object(
            self.helmcharts(namespace),
            helmchart_op("watch", namespace, Some(name)),
            |o: Option<&DynamicObject>| o.is_none(),
            deadline,
            &format!("{KIND} {name} to be deleted (its helm-delete Job uninstalls the release)"),
        )
        .await
        .map(|_| ())
    }

    /// Deletes the Job and, in the background, its pods (a Job already gone counts as deleted).
    pub async fn delete_job(&self, namespace: &str, name: &str) -> Result<(), ApiError> {
        let api = self.namespaced::<Job>(namespace);
        let op = Op::of::<Job>("delete", Some(namespace), Some(name));
        let dp = DeleteParams::background();
        match self.call(&op, || api.delete(name, &dp)).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Watches the Job `name` until one other than `old_uid` has finished (Complete or Failed),
    /// or `deadline`.
    pub async fn wait_job_finished(
        &self,
        namespace: &str,
        name: &str,
        old_uid: Option<&str>,
        deadline: Instant,
    ) -> Result<Option<Job>, ApiError> {
        let old = old_uid.map(str::to_owned);
        self.wait_namespaced::<Job>(
            namespace,
            name,
            move |j: Option<&Job>| finished_job(j, old.as_deref()),
            deadline,
            &format!("Job {name} to finish"),
        )
        .await
    }

    /// The log of the newest pod of the Job `job` (of the Job with uid `uid` when given: a pod of
    /// an earlier Job of that name is not its), its `container`, the last [`JOB_LOG_LINES`]
    /// lines — the previous run's when the current one has none yet: the pod's name and the text.
    /// `None` when the Job has no pod.
    pub async fn job_log(
        &self,
        namespace: &str,
        job: &str,
        container: &str,
        uid: Option<&str>,
    ) -> Result<Option<(String, String)>, ApiError> {
        let api = self.namespaced::<Pod>(namespace);
        let mut found = Vec::new();
        for label in JOB_POD_LABELS {
            found = self
                .list(
                    &api,
                    Op::of::<Pod>("list", Some(namespace), None),
                    &ListParams::default().labels(&format!("{label}={job}")),
                )
                .await?;
            if !found.is_empty() {
                break;
            }
        }
        let owned_by = |p: &Pod| {
            uid.is_none_or(|uid| {
                p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == uid)
            })
        };
        let Some(pod) = found
            .into_iter()
            .filter(owned_by)
            .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        else {
            return Ok(None);
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let restarted = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == container))
            .is_some_and(|c| c.restart_count > 0);
        let mut text = self
            .container_log_tail(namespace, &name, container, JOB_LOG_LINES, false)
            .await?;
        if text.trim().is_empty() && restarted {
            text = self
                .container_log_tail(namespace, &name, container, JOB_LOG_LINES, true)
                .await?;
        }
        Ok(Some((name, text)))
    }
}
