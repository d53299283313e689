//! What happens to objects after they are written, as scripted timelines (virtual time under
//! tokio's paused clock): the HAMi webhook and scheduler, the kubelet, graceful deletion, and
//! any per-test timeline (a device-plugin pod restarting, a node losing its registration).
//!
//! The default pod lifecycle models HAMi: a pod asking `nvidia.com/*` is mutated to
//! `hami-scheduler` when the webhook's Service has a ready endpoint (else it stays on
//! `default-scheduler` and is never placed: nodes do not advertise `nvidia.com/gpumem`); the
//! scheduler places it on the first GPU of the node with enough free memory (slices already
//! allocated to live pods count; `nvidia.com/use-gpuuuid` pins the card) and emits
//! `FilteringSucceed`/`BindingSucceed`, or emits HAMi's `FilteringFailed ... CardInsufficientMemory`
//! and leaves it Pending; the kubelet pulls the image (`Pulling`, then `Pulled` after the pull
//! time), starts the container and marks the pod Ready.
//!
//! k3s's helm controller ([`HelmController`], reconciled by `MockApi::run_helm_controller` on
//! every change) is modelled from k3s-io/helm-controller `pkg/controllers/chart/chart.go` and the
//! Job controller's documented behaviour: a HelmChart in kube-system is claimed (annotation
//! `helmcharts.cattle.io/managed-by`, finalizer `wrangler.cattle.io/on-helm-chart-remove`); its
//! Job `helm-install-<name>` (label `helmcharts.helm.cattle.io/chart`, annotation
//! `helmcharts.helm.cattle.io/configHash`, `backoffLimit` from the spec or 1000, a pod with
//! container `helm` and `restartPolicy: OnFailure`) is created, and deleted and created anew (a
//! new uid) whenever the spec changes or the Job is deleted; its pod carries
//! `batch.kubernetes.io/job-name`, `job-name` and the Job's controller uid and ends as scripted —
//! `Complete`, or restarting in place with the kubelet's crash back-off (10, 20, 40… s) until its
//! restarts pass `backoffLimit`, then `FailureTarget`, the pod terminated (its log goes with it),
//! then `Failed`/`BackoffLimitExceeded`. While the HelmChart is being deleted the install Job is
//! replaced by `helm-delete-<name>`; when that succeeds the finalizer is removed and the
//! HelmChart goes. Pods whose Job is gone are garbage-collected. Not modelled: HelmChartConfig,
//! the values Secret and RBAC objects the controller also applies, `spec.chartContent`, events.

use std::time::Duration;

use serde_json::{Value, json};

use super::store::ObjKey;

/// One scripted change.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A JSON merge patch of the object (status, spec.nodeName, annotations, …).
    Patch(Value),
    /// An Event about the object: type, reason, message, reporting component.
    Event {
        type_: String,
        reason: String,
        message: String,
        component: String,
    },
    /// The object is removed (DELETED).
    Remove,
    /// The scheduler decides now, on the cluster as it is now (the HAMi model of [`Placement`]).
    Schedule { webhook: bool },
    /// The pod's container `container` has logged `text` (its current run, or with `previous`
    /// the run before its last restart).
    Log {
        container: String,
        text: String,
        previous: bool,
    },
}

impl Step {
    pub fn event(type_: &str, reason: &str, message: &str, component: &str) -> Self {
        Step::Event {
            type_: type_.into(),
            reason: reason.into(),
            message: message.into(),
            component: component.into(),
        }
    }
}

/// Steps with their delay from the trigger (the pod's creation, or the timeline's start).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub steps: Vec<(Duration, Step)>,
}

impl Timeline {
    pub fn at(mut self, after: Duration, step: Step) -> Self {
        self.steps.push((after, step));
        self
    }
}

/// Steps on named objects, from the moment the timeline is started.
#[derive(Debug, Clone, Default)]
pub struct WorldTimeline {
    pub steps: Vec<(Duration, ObjKey, Step)>,
}

impl WorldTimeline {
    pub fn at(mut self, after: Duration, key: ObjKey, step: Step) -> Self {
        self.steps.push((after, key, step));
        self
    }
}

/// One GPU the mock's HAMi scheduler can place slices on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub uuid: String,
    pub devmem_mib: u64,
}

/// The cluster the pods are placed in: one GPU node, the image pull time.
#[derive(Debug, Clone)]
pub struct Placement {
    pub node: String,
    pub cards: Vec<Card>,
    pub pull: Duration,
}

pub const SCHEDULE_AFTER: Duration = Duration::from_millis(300);
const KUBELET_AFTER: Duration = Duration::from_millis(800);

/// HAMi's node lock (`pkg/util/nodelock/nodelock.go`): hami-scheduler's Bind sets this node
/// annotation (`<RFC3339>,<namespace>,<pod>`) and the device plugin's Allocate removes it, so
/// one node binds one HAMi pod at a time. A Bind while another live pod holds a lock younger
/// than `HAMI_NODELOCK_EXPIRE` (5 min) fails with "node <node> has been locked within 5m0s";
/// a lock whose pod is gone is released by the next Bind.
pub const NODE_LOCK_KEY: &str = "hami.io/mutex.lock";
pub const NODE_LOCK_EXPIRE: Duration = Duration::from_secs(300);
/// From the Bind to the device plugin's Allocate (the kubelet admitting the pod).
pub const ALLOCATE_AFTER_BIND: Duration = Duration::from_millis(500);

/// Whether `plan` is hami-scheduler binding a GPU pod (the Bind that takes the node's lock).
pub fn hami_binds(plan: &Timeline, pod: &Value) -> bool {
    asks_gpu(pod)
        && pod["spec"]["schedulerName"] == "hami-scheduler"
        && plan.steps.iter().any(|(d, s)| {
            *d <= SCHEDULE_AFTER && matches!(s, Step::Patch(p) if p["spec"]["nodeName"].is_string())
        })
}

/// kube-scheduler's backoff before it retries a pod whose binding failed `attempts` times:
/// 1 s doubling up to 10 s (podInitialBackoffSeconds, podMaxBackoffSeconds).
pub fn scheduler_backoff(attempts: u32) -> Duration {
    let secs = 1u64 << attempts.saturating_sub(1).min(4);
    Duration::from_secs(secs.min(10))
}

/// A Bind that failed on the node lock, as kube-scheduler records it: a FailedScheduling event
/// with the extender's error, `PodScheduled=False` with reason `SchedulerError` (not
/// `Unschedulable`: the pod is retried).
pub fn bind_refused(error: &str) -> Timeline {
    Timeline::default()
        .at(Duration::ZERO, Step::event("Warning", "FailedScheduling", error, "hami-scheduler"))
        .at(
            Duration::ZERO,
            Step::Patch(json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulerError", "message": error}]}})),
        )
}

/// `nvidia.com/gpumem` of the pod's first container.
pub fn gpumem(pod: &Value) -> Option<u64> {
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpumem"]
        .as_str()
        .and_then(|s| s.parse().ok())
}

pub fn asks_gpu(pod: &Value) -> bool {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["resources"]["limits"]
                .as_object()
                .is_some_and(|l| l.keys().any(|k| k.starts_with("nvidia.com/")))
        })
}

/// `(uuid, MiB)` of HAMi's allocation annotation (`GPU-…,NVIDIA,8000,0:;`).
pub fn allocated(pod: &Value) -> Option<(String, u64)> {
    let ann = pod["metadata"]["annotations"]["hami.io/vgpu-devices-allocated"].as_str()?;
    let first = ann.split([':', ';']).next()?;
    let mut parts = first.split(',');
    let uuid = parts.next()?.to_owned();
    let mib = parts.nth(1)?.parse().ok()?;
    Some((uuid, mib))
}

/// The kubelet's part: pull, create, start, Ready.
pub fn kubelet(pod: &Value, pull: Duration) -> Timeline {
    let image = pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let container = pod["spec"]["containers"][0]["name"]
        .as_str()
        .unwrap_or("main")
        .to_owned();
    let started = KUBELET_AFTER + pull;
    Timeline::default()
        .at(
            KUBELET_AFTER,
            Step::event("Normal", "Pulling", &format!("Pulling image \"{image}\""), "kubelet"),
        )
        .at(
            KUBELET_AFTER,
            Step::Patch(json!({"status": {"containerStatuses": [{
                "name": container, "ready": false, "restartCount": 0, "image": image, "imageID": "",
                "started": false, "state": {"waiting": {"reason": "ContainerCreating"}}}]}})),
        )
        .at(
            started,
            Step::event(
                "Normal",
                "Pulled",
                &format!(
                    "Successfully pulled image \"{image}\" in {:.3}s ({:.3}s including waiting). Image size: 89127545 bytes.",
                    pull.as_secs_f64(),
                    pull.as_secs_f64()
                ),
                "kubelet",
            ),
        )
        .at(started, Step::event("Normal", "Created", &format!("Created container: {container}"), "kubelet"))
        .at(started, Step::event("Normal", "Started", &format!("Started container {container}"), "kubelet"))
        .at(
            started,
            Step::Patch(json!({"status": {
                "phase": "Running", "hostIP": "10.0.0.12", "podIP": "10.42.0.22",
                "conditions": [
                    {"type": "PodReadyToStartContainers", "status": "True"},
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "ContainersReady", "status": "True"},
                    {"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{
                    "name": container, "ready": true, "restartCount": 0,
                    "image": format!("docker.io/{image}"), "imageID": "docker.io/nvidia/cuda@sha256:0f9e3c6a",
                    "containerID": "containerd://9a8b7c6d", "started": true,
                    "state": {"running": {"startedAt": "2026-11-25T10:06:41Z"}}}]}})),
        )
}

impl Placement {
    /// What happens to a newly created `pod`, given the live pods already placed.
    pub fn plan(&self, pod: &Value, webhook_ready: bool, placed: &[Value]) -> Timeline {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        if !asks_gpu(pod) {
            return Timeline::default()
                .at(SCHEDULE_AFTER, Step::Patch(json!({"spec": {"nodeName": self.node}, "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}})))
                .steps
                .into_iter()
                .chain(kubelet(pod, self.pull).steps)
                .fold(Timeline::default(), |t, (d, s)| t.at(d, s));
        }
        if !webhook_ready || pod["spec"]["schedulerName"] != "hami-scheduler" {
            return Timeline::default().at(
                SCHEDULE_AFTER,
                Step::event(
                    "Warning",
                    "FailedScheduling",
                    "0/1 nodes are available: 1 Insufficient nvidia.com/gpumem. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
                    "default-scheduler",
                ),
            );
        }
        let want = gpumem(pod).unwrap_or(0);
        let pin = pod["metadata"]["annotations"]["nvidia.com/use-gpuuuid"].as_str();
        let used = |uuid: &str| -> u64 {
            placed
                .iter()
                .filter_map(allocated)
                .filter(|(u, _)| u == uuid)
                .map(|(_, m)| m)
                .sum()
        };
        let card = self
            .cards
            .iter()
            .filter(|c| pin.is_none_or(|p| p == c.uuid))
            .find(|c| c.devmem_mib.saturating_sub(used(&c.uuid)) >= want);
        let node = &self.node;
        let Some(card) = card else {
            return Timeline::default()
                .at(SCHEDULE_AFTER, Step::event("Warning", "FilteringFailed", "no available node, 1 nodes do not meet", "hami-scheduler"))
                .at(SCHEDULE_AFTER, Step::event("Warning", "FilteringFailed", &format!("1 nodes CardInsufficientMemory({node})"), "hami-scheduler"))
                .at(SCHEDULE_AFTER, Step::event("Warning", "FailedScheduling", "0/1 nodes are available: 1 1/1 CardInsufficientMemory. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.", "hami-scheduler"))
                .at(SCHEDULE_AFTER, Step::Patch(json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available"}]}})));
        };
        let bind = Timeline::default()
            .at(SCHEDULE_AFTER, Step::event("Normal", "FilteringSucceed", &format!("find fit node({node}), 0 nodes not fit, 1 nodes fit({node}:0.00)"), "hami-scheduler"))
            .at(SCHEDULE_AFTER, Step::event("Normal", "BindingSucceed", &format!("Successfully binding node [{node}] to {ns}/{name}"), "hami-scheduler"))
            .at(SCHEDULE_AFTER, Step::Patch(json!({
                "metadata": {"annotations": {
                    "hami.io/vgpu-node": node, "hami.io/vgpu-time": "1764065161", "hami.io/bind-time": "1764065161",
                    "hami.io/bind-phase": "success",
                    "hami.io/vgpu-devices-allocated": format!("{},NVIDIA,{want},0:;", card.uuid),
                    "hami.io/vgpu-devices-to-allocate": ";"}},
                "spec": {"nodeName": node},
                "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}})));
        bind.steps
            .into_iter()
            .chain(kubelet(pod, self.pull).steps)
            .fold(Timeline::default(), |t, (d, s)| t.at(d, s))
    }
}

/// kube-scheduler's node filter for a pod with a `nodeSelector` on `kubernetes.io/hostname`
/// among the GPU nodes of `placements`: the node must exist, be Ready and not cordoned; otherwise
/// the pod stays Pending with kube-scheduler's FailedScheduling message and `PodScheduled=False`.
pub fn pick_node<'a>(
    placements: &'a [Placement],
    pod: &Value,
    store: &super::store::Store,
) -> Result<&'a Placement, Timeline> {
    let nodes: Vec<&Value> = store
        .objects
        .iter()
        .filter(|(k, _)| k.resource == "nodes")
        .map(|(_, v)| v)
        .collect();
    let total = nodes.len();
    let wanted = pod["spec"]["nodeSelector"]["kubernetes.io/hostname"].as_str();
    let hostname = |n: &Value| {
        n["metadata"]["labels"]["kubernetes.io/hostname"]
            .as_str()
            .or(n["metadata"]["name"].as_str())
            .map(str::to_owned)
    };
    let refuse = |why: String| {
        Timeline::default()
            .at(SCHEDULE_AFTER, Step::event("Warning", "FailedScheduling", &why, "default-scheduler"))
            .at(SCHEDULE_AFTER, Step::Patch(json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why}]}})))
    };
    let node = nodes
        .iter()
        .find(|n| wanted.is_none_or(|w| hostname(n).as_deref() == Some(w)));
    let Some(node) = node else {
        return Err(refuse(format!(
            "0/{total} nodes are available: {total} node(s) didn't match Pod's node affinity/selector. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."
        )));
    };
    let others = total - 1;
    if node["spec"]["unschedulable"] == true {
        return Err(refuse(format!(
            "0/{total} nodes are available: 1 node(s) were unschedulable, {others} node(s) didn't match Pod's node affinity/selector."
        )));
    }
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if !ready {
        return Err(refuse(format!(
            "0/{total} nodes are available: 1 node(s) had untolerated taint {{node.kubernetes.io/not-ready: }}, {others} node(s) didn't match Pod's node affinity/selector."
        )));
    }
    let name = node["metadata"]["name"].as_str().unwrap_or_default();
    placements.iter().find(|p| p.node == name).ok_or_else(|| {
        refuse(format!(
            "0/{total} nodes are available: 1 Insufficient nvidia.com/gpu."
        ))
    })
}

/// HAMi's device plugin pod restarting (the container dies and comes back): the pod and the
/// DaemonSet go unready for `down`, the node's register annotation is rewritten on the way back.
pub fn device_plugin_restart(
    hami_ns: &str,
    pod: &str,
    node: &str,
    register: &str,
    at: Duration,
    down: Duration,
) -> WorldTimeline {
    let pod_key = ObjKey {
        resource: "pods".into(),
        namespace: hami_ns.into(),
        name: pod.into(),
    };
    let ds_key = ObjKey {
        resource: "daemonsets.apps".into(),
        namespace: hami_ns.into(),
        name: "hami-device-plugin".into(),
    };
    let node_key = ObjKey {
        resource: "nodes".into(),
        namespace: String::new(),
        name: node.into(),
    };
    let status = |ready: bool, restarts: u32| {
        json!({"status": {
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "containerStatuses": [{"name": "device-plugin", "ready": ready, "restartCount": restarts,
                "image": "docker.io/projecthami/hami:v2.10.0", "imageID": "", "started": ready,
                "state": if ready { json!({"running": {}}) } else { json!({"waiting": {"reason": "CrashLoopBackOff"}}) }}]}})
    };
    WorldTimeline::default()
        .at(at, pod_key.clone(), Step::Patch(status(false, 1)))
        .at(
            at,
            ds_key.clone(),
            Step::Patch(json!({"status": {"numberReady": 0, "numberUnavailable": 1}})),
        )
        .at(at + down, pod_key, Step::Patch(status(true, 1)))
        .at(
            at + down,
            node_key,
            Step::Patch(
                json!({"metadata": {"annotations": {"hami.io/node-nvidia-register": register}}}),
            ),
        )
        .at(
            at + down,
            ds_key,
            Step::Patch(json!({"status": {"numberReady": 1, "numberUnavailable": null}})),
        )
}

// ---------------------------------------------------------------------------------------------
// k3s's helm controller

/// The namespace k3s's helm controller watches.
pub const HELM_NAMESPACE: &str = "kube-system";
/// The finalizer wrangler's OnRemove handler puts on a HelmChart.
pub const HELM_FINALIZER: &str = "wrangler.cattle.io/on-helm-chart-remove";
const CHART_LABEL: &str = "helmcharts.helm.cattle.io/chart";
const CONFIG_HASH: &str = "helmcharts.helm.cattle.io/configHash";
const MANAGED_BY: &str = "helmcharts.cattle.io/managed-by";
const JOB_IMAGE: &str = "rancher/klipper-helm:v0.9.4-build20250113";
/// How long one run of the helm container takes.
const HELM_RUN: Duration = Duration::from_secs(3);

/// How a helm Job the controller runs ends: what klipper-helm's container logs, and whether it
/// exits 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelmRun {
    Complete(String),
    Failed(String),
}

/// The helm controller's script and what it did.
#[derive(Debug, Clone, Default)]
pub struct HelmController {
    /// How the next install Jobs end, in order; the last repeats (none: they complete).
    pub installs: std::collections::VecDeque<HelmRun>,
    /// How the uninstall Job ends (`None`: it completes).
    pub uninstall: Option<HelmRun>,
    /// Jobs created so far (for pod names).
    pub runs: u32,
    /// `(job, pod)` of every Job run, in order.
    pub started: Vec<(String, String)>,
}

impl HelmController {
    fn next_install(&mut self) -> HelmRun {
        let run = if self.installs.len() > 1 {
            self.installs.pop_front()
        } else {
            self.installs.front().cloned()
        };
        run.unwrap_or_else(|| HelmRun::Complete(INSTALL_LOG.to_owned()))
    }
}

/// klipper-helm's log of a successful install of the pinned HAMi chart (constructed from its
/// `entry` script and helm's output).
pub const INSTALL_LOG: &str = "+ helm_v3 repo add hami https://project-hami.github.io/HAMi/\n\"hami\" has been added to your repositories\n+ helm_v3 install --namespace kube-system --version 2.10.0 --set-string scheduler.kubeScheduler.image.registry=registry.k8s.io --set-string scheduler.kubeScheduler.image.repository=kube-scheduler hami hami/hami\nNAME: hami\nLAST DEPLOYED: Wed Nov 25 10:00:03 2026\nNAMESPACE: kube-system\nSTATUS: deployed\nREVISION: 1\n";
/// klipper-helm's log of a successful uninstall.
pub const UNINSTALL_LOG: &str =
    "+ helm_v3 uninstall hami --namespace kube-system\nrelease \"hami\" uninstalled\n";

/// The Job controller's name suffix for the `n`th pod (its alphabet, deterministic here).
fn pod_suffix(n: u32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// A stand-in for helm-controller's `SHA256=` hash of the chart's spec (any change changes it).
pub fn config_hash(spec: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    spec.to_string().hash(&mut h);
    format!("SHA256={:016x}", h.finish())
}

fn key(resource: &str, name: &str) -> ObjKey {
    ObjKey {
        resource: resource.into(),
        namespace: HELM_NAMESPACE.into(),
        name: name.into(),
    }
}

/// One thing the controller does after looking at the store.
#[derive(Debug, Clone)]
enum Action {
    /// Merge-patch the HelmChart.
    PatchChart(String, Value),
    /// Remove a Job and the pods it owns.
    RemoveJob(String),
    /// Run a Job for chart `name`: `delete` for helm-delete, else helm-install.
    RunJob { chart: Value, delete: bool },
    /// Remove pods whose Job is gone (the garbage collector).
    Collect(Vec<String>),
}

/// What the controller must do now (pure over the store; applying it changes the store and the
/// next look finds nothing more to do).
fn reconcile(st: &super::State) -> Vec<Action> {
    let objects = &st.store.objects;
    fn in_ns<'a>(
        objects: &'a std::collections::BTreeMap<ObjKey, Value>,
        resource: &'a str,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        objects
            .iter()
            .filter(move |(k, _)| k.resource == resource && k.namespace == HELM_NAMESPACE)
    }
    let mut actions = Vec::new();
    for (k, chart) in in_ns(objects, "helmcharts.helm.cattle.io") {
        let name = k.name.as_str();
        if chart["spec"]["chart"].as_str().is_none_or(str::is_empty) {
            continue;
        }
        let meta = &chart["metadata"];
        let finalized = meta["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == HELM_FINALIZER));
        let deleting = !meta["deletionTimestamp"].is_null();
        let install = format!("helm-install-{name}");
        let uninstall = format!("helm-delete-{name}");
        if !deleting && (!finalized || meta["annotations"][MANAGED_BY].is_null()) {
            let mut finalizers: Vec<Value> =
                meta["finalizers"].as_array().cloned().unwrap_or_default();
            if !finalized {
                finalizers.push(json!(HELM_FINALIZER));
            }
            actions.push(Action::PatchChart(
                name.to_owned(),
                json!({"metadata": {"annotations": {MANAGED_BY: "helm-controller"}, "finalizers": finalizers}}),
            ));
            continue;
        }
        if !deleting {
            let hash = config_hash(&chart["spec"]);
            match objects.get(&key("jobs.batch", &install)) {
                Some(job) if job["metadata"]["annotations"][CONFIG_HASH] == hash.as_str() => {}
                Some(_) => actions.push(Action::RemoveJob(install)),
                None => actions.push(Action::RunJob {
                    chart: chart.clone(),
                    delete: false,
                }),
            }
            continue;
        }
        if !finalized {
            continue;
        }
        if objects.contains_key(&key("jobs.batch", &install)) {
            actions.push(Action::RemoveJob(install));
            continue;
        }
        match objects.get(&key("jobs.batch", &uninstall)) {
            None => actions.push(Action::RunJob {
                chart: chart.clone(),
                delete: true,
            }),
            Some(job) if job["status"]["succeeded"].as_u64().unwrap_or(0) > 0 => {
                let finalizers: Vec<Value> = meta["finalizers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|f| *f != HELM_FINALIZER)
                    .cloned()
                    .collect();
                actions.push(Action::RemoveJob(uninstall));
                actions.push(Action::PatchChart(
                    name.to_owned(),
                    json!({"metadata": {"finalizers": finalizers}}),
                ));
            }
            Some(_) => {}
        }
    }
    let live_jobs: Vec<&str> = in_ns(objects, "jobs.batch")
        .filter_map(|(_, j)| j["metadata"]["uid"].as_str())
        .collect();
    let orphans: Vec<String> = in_ns(objects, "pods")
        .filter(|(_, p)| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| {
                    o["kind"] == "Job" && !live_jobs.contains(&o["uid"].as_str().unwrap_or(""))
                })
        })
        .map(|(k, _)| k.name.clone())
        .collect();
    if !orphans.is_empty() {
        actions.push(Action::Collect(orphans));
    }
    actions
}

impl super::MockApi {
    /// Runs k3s's helm controller (see the module doc) until the test ends: it looks at the store
    /// after every change. The HelmChart CRD is stored first, so the resource is served.
    pub fn run_helm_controller(&self, script: HelmController) -> &Self {
        self.serve_helm_crd();
        self.lock().helm = Some(script);
        let me = self.clone();
        tokio::spawn(async move {
            let mut changes = me.shared.changes.subscribe();
            loop {
                me.helm_reconcile();
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
        self
    }

    /// Stores k3s's HelmChart CRD (so `helm.cattle.io/v1` `helmcharts` are served), without a
    /// helm controller acting on them (k3s `--disable-helm-controller`).
    pub fn serve_helm_crd(&self) -> &Self {
        self.add(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "helmcharts.helm.cattle.io"},
            "spec": {"group": "helm.cattle.io", "scope": "Namespaced",
                     "names": {"kind": "HelmChart", "plural": "helmcharts", "singular": "helmchart", "listKind": "HelmChartList"},
                     "versions": [{"name": "v1", "served": true, "storage": true}]}
        }))
    }

    /// The helm controller's record (`None` when it does not run).
    pub fn helm_controller(&self) -> Option<HelmController> {
        self.lock().helm.clone()
    }

    /// Changes the helm controller's script.
    pub fn script_helm(&self, f: impl FnOnce(&mut HelmController)) -> &Self {
        if let Some(h) = self.lock().helm.as_mut() {
            f(h);
        }
        self
    }

    fn helm_reconcile(&self) {
        let actions = reconcile(&self.lock());
        for a in actions {
            match a {
                Action::PatchChart(name, patch) => {
                    self.apply(
                        &key("helmcharts.helm.cattle.io", &name),
                        &Step::Patch(patch),
                    );
                }
                Action::RemoveJob(job) => {
                    let uid = self
                        .get("jobs.batch", HELM_NAMESPACE, &job)
                        .and_then(|j| j["metadata"]["uid"].as_str().map(str::to_owned));
                    self.apply(&key("jobs.batch", &job), &Step::Remove);
                    let owned: Vec<String> = self
                        .lock()
                        .store
                        .objects
                        .iter()
                        .filter(|(k, p)| {
                            k.resource == "pods"
                                && k.namespace == HELM_NAMESPACE
                                && uid.is_some()
                                && p["metadata"]["ownerReferences"][0]["uid"].as_str()
                                    == uid.as_deref()
                        })
                        .map(|(k, _)| k.name.clone())
                        .collect();
                    for pod in owned {
                        self.apply(&key("pods", &pod), &Step::Remove);
                    }
                }
                Action::Collect(pods) => {
                    for pod in pods {
                        self.apply(&key("pods", &pod), &Step::Remove);
                    }
                }
                Action::RunJob { chart, delete } => self.run_helm_job(&chart, delete),
            }
        }
    }

    /// Creates a helm Job and its pod, and starts the timeline of how it ends.
    fn run_helm_job(&self, chart: &Value, delete: bool) {
        let name = chart["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let job = format!("helm-{}-{name}", if delete { "delete" } else { "install" });
        let (run, n) = {
            let mut st = self.lock();
            let Some(h) = st.helm.as_mut() else {
                return;
            };
            h.runs += 1;
            let run = if delete {
                h.uninstall
                    .clone()
                    .unwrap_or_else(|| HelmRun::Complete(UNINSTALL_LOG.to_owned()))
            } else {
                h.next_install()
            };
            (run, h.runs)
        };
        let backoff_limit = chart["spec"]["backOffLimit"].as_u64().unwrap_or(1000);
        let pod = format!("{job}-{}", pod_suffix(n));
        let template = json!({
            "metadata": {"labels": {CHART_LABEL: name}},
            "spec": {"restartPolicy": "OnFailure", "serviceAccountName": format!("helm-{name}"),
                     "containers": [{"name": "helm", "image": JOB_IMAGE,
                                     "args": [if delete { "delete" } else { "install" }]}]}
        });
        self.add(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": job, "namespace": HELM_NAMESPACE,
                         "labels": {CHART_LABEL: name},
                         "annotations": {CONFIG_HASH: config_hash(&chart["spec"])},
                         "ownerReferences": [{"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
                                              "name": name, "uid": chart["metadata"]["uid"]}]},
            "spec": {"backoffLimit": backoff_limit, "completions": 1, "parallelism": 1, "template": template},
            "status": {"active": 1, "ready": 0, "startTime": super::store::timestamp(self.now_secs())}
        }));
        let uid = self
            .get("jobs.batch", HELM_NAMESPACE, &job)
            .and_then(|j| j["metadata"]["uid"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let running = |restarts: u64| {
            json!({"phase": "Running", "containerStatuses": [{"name": "helm", "ready": true, "started": true,
                "restartCount": restarts, "image": JOB_IMAGE, "imageID": "",
                "state": {"running": {"startedAt": super::store::timestamp(self.now_secs())}}}]})
        };
        self.add(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": HELM_NAMESPACE,
                         "labels": {CHART_LABEL: name, "batch.kubernetes.io/job-name": job, "job-name": job,
                                    "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job,
                                              "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"nodeName": "gpu-vm-1", "restartPolicy": "OnFailure",
                     "containers": [{"name": "helm", "image": JOB_IMAGE}]},
            "status": running(0)
        }));
        if let Some(h) = self.lock().helm.as_mut() {
            h.started.push((job.clone(), pod.clone()));
        }
        let log = |text: &str, previous| Step::Log {
            container: "helm".into(),
            text: text.into(),
            previous,
        };
        let (job_key, pod_key) = (key("jobs.batch", &job), key("pods", &pod));
        let mut world = WorldTimeline::default();
        match run {
            HelmRun::Complete(text) => {
                world = world
                    .at(HELM_RUN, pod_key.clone(), log(&text, false))
                    .at(HELM_RUN, pod_key, Step::Patch(json!({"status": {"phase": "Succeeded",
                        "containerStatuses": [{"name": "helm", "ready": false, "started": false, "restartCount": 0,
                            "image": JOB_IMAGE, "imageID": "",
                            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}})))
                    .at(HELM_RUN, job_key, Step::Patch(json!({"status": {"active": null, "ready": 0, "succeeded": 1,
                        "completionTime": super::store::timestamp(self.now_secs() + HELM_RUN.as_secs()),
                        "conditions": [{"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"},
                                       {"type": "Complete", "status": "True", "reason": "CompletionsReached"}]}})));
            }
            HelmRun::Failed(text) => {
                // Each run fails after HELM_RUN; the kubelet restarts it in place after its
                // crash back-off (10 s, doubling); after backoffLimit restarts the Job fails.
                let mut at = Duration::ZERO;
                let mut back_off = Duration::from_secs(10);
                for restarts in 0..=backoff_limit.min(6) {
                    at += HELM_RUN;
                    world = world.at(at, pod_key.clone(), log(&text, false));
                    if restarts > 0 {
                        world = world.at(at, pod_key.clone(), log(&text, true));
                    }
                    if restarts == backoff_limit.min(6) {
                        break;
                    }
                    world = world.at(at, pod_key.clone(), Step::Patch(json!({"status": {"containerStatuses": [{
                        "name": "helm", "ready": false, "started": false, "restartCount": restarts + 1,
                        "image": JOB_IMAGE, "imageID": "",
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}})));
                    at += back_off;
                    back_off *= 2;
                    world = world.at(
                        at,
                        pod_key.clone(),
                        Step::Patch(json!({"status": running(restarts + 1)})),
                    );
                }
                let failure = json!({"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                                     "message": "Job has reached the specified backoff limit"});
                world = world
                    .at(at, job_key.clone(), Step::Patch(json!({"status": {"conditions": [failure]}})))
                    .at(at, pod_key.clone(), Step::Patch(json!({"metadata": {"deletionTimestamp":
                        super::store::timestamp(self.now_secs() + at.as_secs())}})))
                    .at(at + Duration::from_secs(1), pod_key, Step::Remove)
                    .at(at + Duration::from_secs(1), job_key, Step::Patch(json!({"status": {"active": null, "ready": 0, "failed": 1,
                        "conditions": [failure, {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                 "message": "Job has reached the specified backoff limit"}]}})));
            }
        }
        self.start_world(world);
    }
}
