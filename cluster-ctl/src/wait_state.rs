//! What a wait shows while it waits (pure): one short text per state of the object waited for
//! (`Pending on gpu-vm-1: ContainerCreating`, `1/1 ready`, `gone`), and kubelet's image-pull events
//! as steps of a pull. `api::wait` hands these to the progress reporter on every change; the
//! predicates that end a wait stay in `decide` and `helmchart`.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod};
use kube::core::DynamicObject;

use crate::decide::{
    daemonset_ready, deployment_ready, deployment_replicas, endpoints_ready, node_registration,
};

/// The state of an object as a wait shows it; `None`: the object is not there.
pub trait WaitState {
    fn wait_state(obj: Option<&Self>) -> String;
}

impl WaitState for Pod {
    fn wait_state(pod: Option<&Self>) -> String {
        let Some(pod) = pod else {
            return "not there".to_owned();
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return "Terminating".to_owned();
        }
        if crate::decide::pod_ready(pod) {
            return "Ready".to_owned();
        }
        let phase = match crate::decide::pod_phase(pod) {
            "" => "Pending",
            p => p,
        };
        let Some(node) = crate::decide::node_name(pod) else {
            let unschedulable = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False");
            return match unschedulable {
                Some(c) => format!(
                    "{phase}: not scheduled ({}: {})",
                    c.reason.as_deref().unwrap_or("?"),
                    c.message.as_deref().unwrap_or("")
                ),
                None => format!("{phase}: waiting to be scheduled"),
            };
        };
        let waiting: Vec<String> = crate::decide::waiting_reasons(pod)
            .into_iter()
            .map(|(container, reason)| format!("{container} {reason}"))
            .collect();
        if waiting.is_empty() {
            format!("{phase} on {node}, not Ready")
        } else {
            format!("{phase} on {node}: {}", waiting.join(", "))
        }
    }
}

impl WaitState for Deployment {
    fn wait_state(d: Option<&Self>) -> String {
        d.map_or_else(
            || "not there".to_owned(),
            |d| {
                let (ready, want) = deployment_replicas(d);
                let word = if deployment_ready(d) {
                    "ready"
                } else {
                    "not ready"
                };
                format!("{ready}/{want} replicas ready ({word})")
            },
        )
    }
}

impl WaitState for DaemonSet {
    fn wait_state(ds: Option<&Self>) -> String {
        ds.map_or_else(
            || "not there".to_owned(),
            |ds| {
                let (ready, want) = ds
                    .status
                    .as_ref()
                    .map_or((0, 0), |s| (s.number_ready, s.desired_number_scheduled));
                let word = if daemonset_ready(ds) {
                    "ready"
                } else {
                    "not ready"
                };
                format!("{ready}/{want} pods ready ({word})")
            },
        )
    }
}

impl WaitState for Endpoints {
    fn wait_state(ep: Option<&Self>) -> String {
        match ep {
            None => "not there".to_owned(),
            Some(ep) if endpoints_ready(ep) => "has a ready address".to_owned(),
            Some(_) => "no ready address yet".to_owned(),
        }
    }
}

impl WaitState for Node {
    fn wait_state(node: Option<&Self>) -> String {
        node.map_or_else(
            || "not there".to_owned(),
            |n| {
                let r = node_registration(n);
                if r.registered() {
                    format!("registered by HAMi ({} GPU)", r.gpus.len())
                } else if let Some(e) = r.register_error {
                    format!("register annotation unreadable: {e}")
                } else {
                    "not registered by HAMi yet".to_owned()
                }
            },
        )
    }
}

impl WaitState for Job {
    fn wait_state(job: Option<&Self>) -> String {
        job.map_or_else(
            || "not there".to_owned(),
            |j| {
                let s = j.status.clone().unwrap_or_default();
                format!(
                    "{} active, {} succeeded, {} failed",
                    s.active.unwrap_or(0),
                    s.succeeded.unwrap_or(0),
                    s.failed.unwrap_or(0)
                )
            },
        )
    }
}

impl WaitState for DynamicObject {
    fn wait_state(obj: Option<&Self>) -> String {
        match obj {
            None => "gone".to_owned(),
            Some(o) if o.metadata.deletion_timestamp.is_some() => "being deleted".to_owned(),
            Some(_) => "present".to_owned(),
        }
    }
}

/// One step of kubelet pulling a pod's image, from its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullStep {
    pub pod: String,
    /// `Pulling`, `Pulled`, or a failure (`Failed`, `BackOff`, `ErrImagePull`).
    pub reason: String,
    pub message: String,
}

impl PullStep {
    /// The step an event is, when it is one.
    pub fn of(ev: &Event) -> Option<Self> {
        match ev.reason.as_deref() {
            Some(r @ ("Pulling" | "Pulled" | "Failed" | "BackOff" | "ErrImagePull")) => {
                Some(Self {
                    pod: ev
                        .involved_object
                        .name
                        .clone()
                        .unwrap_or_else(|| "?".into()),
                    reason: r.to_owned(),
                    message: ev.message.clone().unwrap_or_default(),
                })
            }
            _ => None,
        }
    }

    /// The image is there (the pull ended well).
    pub fn pulled(&self) -> bool {
        self.reason == "Pulled"
    }
}

impl std::fmt::Display for PullStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.pod, self.reason, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::*;

    #[test]
    fn pods_as_a_wait_shows_them() {
        assert_eq!(Pod::wait_state(None), "not there");
        let running = fixture_pod("pod-hami-share-a-running.json");
        assert_eq!(Pod::wait_state(Some(&running)), "Ready");
        let pending = fixture_pod("pod-hami-oversubscribe-pending.json");
        let shown = Pod::wait_state(Some(&pending));
        assert!(shown.starts_with("Pending: not scheduled ("), "{shown}");
        // Placed, its container waiting: what `kubectl get pod` calls ContainerCreating.
        let mut creating = running.clone();
        let mut v = serde_json::to_value(&creating).unwrap();
        v["status"] = serde_json::json!({"phase": "Pending", "containerStatuses": [{
            "name": "main", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "ContainerCreating"}}}]});
        creating = serde_json::from_value(v).unwrap();
        assert_eq!(
            Pod::wait_state(Some(&creating)),
            format!(
                "Pending on {}: main ContainerCreating",
                crate::decide::node_name(&creating).unwrap()
            )
        );
        let mut unplaced = creating.clone();
        unplaced.spec.as_mut().unwrap().node_name = None;
        unplaced.status = None;
        assert_eq!(
            Pod::wait_state(Some(&unplaced)),
            "Pending: waiting to be scheduled"
        );
    }

    #[test]
    fn hamis_parts_as_a_wait_shows_them() {
        let d = fixture_deploy("deploy-hami-scheduler-tag-match.json");
        assert!(
            Deployment::wait_state(Some(&d)).ends_with("(ready)"),
            "{}",
            Deployment::wait_state(Some(&d))
        );
        let ready = fixture_endpoints("endpoints-hami-scheduler-ready.json");
        let empty = fixture_endpoints("endpoints-hami-scheduler-empty.json");
        assert_eq!(Endpoints::wait_state(Some(&ready)), "has a ready address");
        assert_eq!(Endpoints::wait_state(Some(&empty)), "no ready address yet");
        let node = fixture_node("node-hami-v2.10-h100.json");
        assert_eq!(Node::wait_state(Some(&node)), "registered by HAMi (1 GPU)");
        let un = fixture_node("node-gpu-on-unregistered.json");
        assert_eq!(Node::wait_state(Some(&un)), "not registered by HAMi yet");
        let ds = fixture_daemonsets("daemonsets-hami-only.json");
        assert!(DaemonSet::wait_state(ds.first()).contains("pods ready"));
        assert_eq!(DynamicObject::wait_state(None), "gone");
    }

    #[test]
    fn pull_steps_from_kubelet_events() {
        let ev = fixture_events("events-share-a.json");
        let steps: Vec<PullStep> = ev.iter().filter_map(PullStep::of).collect();
        let pulling = steps.iter().find(|s| s.reason == "Pulling").unwrap();
        assert_eq!(pulling.pod, "hami-share-a");
        assert!(!pulling.pulled());
        assert!(pulling.to_string().starts_with("hami-share-a Pulling: "));
        assert!(steps.iter().any(|s| s.pulled()), "{steps:?}");
        assert!(
            ev.iter()
                .filter(|e| e.reason.as_deref() == Some("Scheduled"))
                .all(|e| PullStep::of(e).is_none())
        );
    }
}
