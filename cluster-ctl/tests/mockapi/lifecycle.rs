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
