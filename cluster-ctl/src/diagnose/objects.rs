//! Kubernetes objects as lines of text, so the line rules read live state and `kubectl get -o
//! json|yaml` the way they read pasted `kubectl get pods` / `describe` output: a pod as kubectl
//! lists it (`NAMESPACE NAME READY STATUS RESTARTS`), its containers' waiting and terminated
//! reasons and messages, its conditions and HAMi annotations; events; HAMi's node annotations.
//! Pure.

use k8s_openapi::api::core::v1::{ContainerStatus, Event, Node, Pod};

/// One rendered line and a needle to find it in the file it came from (for the line number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub needle: String,
}

fn r(text: String, needle: &str) -> Rendered {
    Rendered {
        text,
        needle: needle.to_owned(),
    }
}

fn state_reason(c: &ContainerStatus) -> Option<String> {
    let s = c.state.as_ref()?;
    if let Some(w) = &s.waiting {
        return w.reason.clone();
    }
    if let Some(t) = &s.terminated {
        return Some(t.reason.clone().unwrap_or_else(|| "Error".into()));
    }
    None
}

/// The STATUS column of `kubectl get pods`.
pub fn pod_status(p: &Pod) -> String {
    let Some(st) = &p.status else {
        return "Unknown".into();
    };
    if let Some(reason) = &st.reason {
        return reason.clone();
    }
    for c in st.init_container_statuses.iter().flatten() {
        let failed = c
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code != 0);
        let waiting = c
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone())
            .filter(|r| r != "PodInitializing");
        if failed || waiting.is_some() {
            return format!(
                "Init:{}",
                waiting
                    .or_else(|| state_reason(c))
                    .unwrap_or_else(|| "Error".into())
            );
        }
    }
    for c in st.container_statuses.iter().flatten() {
        if let Some(reason) =
            state_reason(c).filter(|r| r != "Completed" || st.phase.as_deref() != Some("Running"))
        {
            return reason;
        }
    }
    st.phase.clone().unwrap_or_else(|| "Unknown".into())
}

/// A pod: its `kubectl get pods -A` row, then what its status says.
pub fn pod_lines(p: &Pod) -> Vec<Rendered> {
    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
    let name = p.metadata.name.as_deref().unwrap_or("?");
    let full = format!("{ns}/{name}");
    let statuses: Vec<&ContainerStatus> = p
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .collect();
    let total = p
        .spec
        .as_ref()
        .map_or(statuses.len(), |s| s.containers.len());
    let ready = statuses.iter().filter(|c| c.ready).count();
    let restarts: i32 = statuses.iter().map(|c| c.restart_count).sum();
    let mut out = vec![r(
        format!(
            "{ns}  {name}  {ready}/{total}  {}  {restarts}",
            pod_status(p)
        ),
        name,
    )];
    if let Some(st) = &p.status {
        if let Some(msg) = &st.message {
            out.push(r(
                format!(
                    "pod {full}: {}: {msg}",
                    st.reason.as_deref().unwrap_or("status")
                ),
                msg,
            ));
        }
        for c in st.conditions.iter().flatten() {
            if c.status == "False"
                && let Some(msg) = &c.message
            {
                out.push(r(
                    format!(
                        "pod {full}: {} False {}: {msg}",
                        c.type_,
                        c.reason.as_deref().unwrap_or("")
                    ),
                    msg,
                ));
            }
        }
        let all = st
            .init_container_statuses
            .iter()
            .flatten()
            .chain(st.container_statuses.iter().flatten());
        for c in all {
            if let Some(s) = &c.state {
                if let Some(w) = &s.waiting {
                    let reason = w.reason.as_deref().unwrap_or("");
                    let msg = w.message.as_deref().unwrap_or("");
                    out.push(r(
                        format!("pod {full} container {}: waiting {reason}: {msg}", c.name),
                        if msg.is_empty() { reason } else { msg },
                    ));
                }
                if let Some(t) = &s.terminated {
                    out.push(r(
                        format!(
                            "pod {full} container {}: terminated {} (exit {}): {}",
                            c.name,
                            t.reason.as_deref().unwrap_or(""),
                            t.exit_code,
                            t.message.as_deref().unwrap_or("")
                        ),
                        &c.name,
                    ));
                }
            }
            if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
                out.push(r(
                    format!(
                        "pod {full} container {}: last terminated {} (exit {}): {}",
                        c.name,
                        t.reason.as_deref().unwrap_or(""),
                        t.exit_code,
                        t.message.as_deref().unwrap_or("")
                    ),
                    &c.name,
                ));
            }
        }
    }
    for (k, v) in p.metadata.annotations.iter().flatten() {
        if k.starts_with("hami.io/") {
            out.push(r(format!("pod {full} annotation {k}: {v}"), k));
        }
    }
    out
}

/// An event as `kubectl get events` says it, with the object it is about.
pub fn event_line(e: &Event) -> Rendered {
    let o = &e.involved_object;
    let msg = e.message.as_deref().unwrap_or("");
    r(
        format!(
            "{} {} {} {} {}/{}: {msg}",
            e.type_.as_deref().unwrap_or(""),
            e.reason.as_deref().unwrap_or(""),
            e.source
                .as_ref()
                .and_then(|s| s.component.as_deref())
                .or(e.reporting_component.as_deref())
                .unwrap_or(""),
            o.kind.as_deref().unwrap_or(""),
            o.namespace.as_deref().unwrap_or(""),
            o.name.as_deref().unwrap_or(""),
        ),
        if msg.is_empty() {
            o.name.as_deref().unwrap_or("")
        } else {
            msg
        },
    )
}

/// HAMi's annotations on a node and its `nvidia.com/gpu` allocatable.
pub fn node_lines(n: &Node) -> Vec<Rendered> {
    let name = n.metadata.name.as_deref().unwrap_or("?");
    let mut out: Vec<Rendered> = n
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("hami.io/"))
        .map(|(k, v)| r(format!("node {name} annotation {k}: {v}"), k))
        .collect();
    if let Some(q) = n
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get("nvidia.com/gpu"))
    {
        out.push(r(
            format!("node {name} allocatable nvidia.com/gpu: {}", q.0),
            name,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_crash_looping_init_container_reads_as_kubectl_shows_it() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "nvidia-driver-daemonset-2x8xv", "namespace": "gpu-operator"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Pending",
                "initContainerStatuses": [{"name": "k8s-driver-manager", "ready": false, "restartCount": 21,
                    "image": "x", "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}],
                "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                    "state": {"waiting": {"reason": "PodInitializing"}}}]}
        }))
        .unwrap();
        let lines = pod_lines(&p);
        assert_eq!(
            lines[0].text,
            "gpu-operator  nvidia-driver-daemonset-2x8xv  0/2  Init:CrashLoopBackOff  0"
        );
        assert!(lines.iter().any(|l| l.text
            == "pod gpu-operator/nvidia-driver-daemonset-2x8xv container k8s-driver-manager: waiting CrashLoopBackOff: back-off"));
    }
}
