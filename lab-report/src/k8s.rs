//! The few facts the judge reads from Kubernetes objects, read from their JSON (serde only, no
//! Kubernetes crate): a Pod's name, scheduler, node, phase and HAMi allocation annotation; an
//! Event's object, reason, message and source. cluster-ctl builds these from its typed objects by
//! serializing them, so both tools read exactly the same fields.
//!
//! Also the two HAMi texts the judgement parses: the allocation annotation
//! `hami.io/vgpu-devices-allocated` (facts/hami.md §3: one entry per container, each ended by `;`;
//! inside it one `<uuid>,<vendor>,<mem MiB>,<cores>` per device, each ended by `:`) and the message
//! of hami-scheduler's `FilteringFailed` event. Both parsers are pure and panic-free.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The annotation holding what HAMi's scheduler allocated to each container of a pod.
pub const ALLOCATED_ANNOTATION: &str = "hami.io/vgpu-devices-allocated";
/// The scheduler name HAMi's webhook sets on GPU pods.
pub const HAMI_SCHEDULER: &str = "hami-scheduler";
/// The reason HAMi gives when a card has too little free memory.
pub const INSUFFICIENT_MEMORY: &str = "CardInsufficientMemory";

// ---------------------------------------------------------------------------------------------
// The allocation annotation

/// One device given to one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerDevice {
    pub uuid: String,
    pub vendor: String,
    pub mem_mib: u64,
    pub cores: u32,
}

/// Why an allocation annotation could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error(
        "container {container}, device {device} of `{ALLOCATED_ANNOTATION}` has {found} fields; HAMi writes 4 (`<uuid>,NVIDIA,<mem MiB>,<cores>`)"
    )]
    FieldCount {
        container: usize,
        device: usize,
        found: usize,
    },
    #[error(
        "container {container}, device {device} of `{ALLOCATED_ANNOTATION}`: `{field}` is not a number: {value:?}"
    )]
    BadNumber {
        container: usize,
        device: usize,
        field: &'static str,
        value: String,
    },
}

/// Parses the annotation into devices per container (outer index = container entry).
pub fn parse_allocated(value: &str) -> Result<Vec<Vec<ContainerDevice>>, AllocError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split_terminator(';')
        .enumerate()
        .map(|(container, entry)| {
            entry
                .split_terminator(':')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .enumerate()
                .map(|(device, d)| parse_device(container, device, d))
                .collect()
        })
        .collect()
}

fn parse_device(
    container: usize,
    device: usize,
    text: &str,
) -> Result<ContainerDevice, AllocError> {
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    let [uuid, vendor, mem, cores] = fields.as_slice() else {
        return Err(AllocError::FieldCount {
            container,
            device,
            found: fields.len(),
        });
    };
    let bad = |field: &'static str, v: &str| AllocError::BadNumber {
        container,
        device,
        field,
        value: v.to_owned(),
    };
    let mem_mib = mem.parse::<u64>().map_err(|_| bad("mem", mem))?;
    let cores = cores.parse::<u32>().map_err(|_| bad("cores", cores))?;
    Ok(ContainerDevice {
        uuid: (*uuid).to_owned(),
        vendor: (*vendor).to_owned(),
        mem_mib,
        cores,
    })
}

/// Every GPU UUID of an annotation value (any container), in order, without repeats.
pub fn allocated_uuids(value: &str) -> Result<Vec<String>, AllocError> {
    let mut uuids: Vec<String> = Vec::new();
    for d in parse_allocated(value)?.into_iter().flatten() {
        if !uuids.contains(&d.uuid) {
            uuids.push(d.uuid);
        }
    }
    Ok(uuids)
}

// ---------------------------------------------------------------------------------------------
// Pods

/// What the judge reads of a Pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodFacts {
    pub name: String,
    pub uid: Option<String>,
    /// `spec.schedulerName` (`default-scheduler` when unset, as the API server defaults it).
    pub scheduler_name: String,
    pub node_name: Option<String>,
    /// `status.phase` (empty when unknown).
    pub phase: String,
    /// The GPUs of the allocation annotation: `None` when absent, `Err` when unreadable.
    pub gpu_uuids: Option<Result<Vec<String>, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    scheduler_name: Option<String>,
    #[serde(default)]
    node_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct PodStatus {
    #[serde(default)]
    phase: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PodObject {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: Option<PodSpec>,
    #[serde(default)]
    status: Option<PodStatus>,
}

/// What the judge reads of the API server's `Status` answer to a request it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFacts {
    /// `Failure` for a refusal.
    pub status: String,
    /// The HTTP code (403 for a policy or webhook denial with reason Forbidden, 422 Invalid).
    pub code: u16,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct StatusObject {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Who refused a request at admission, read from the API server's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmissionDenial {
    /// `ValidatingAdmissionPolicy 'P' with binding 'B' denied request: …`.
    Policy { policy: String, message: String },
    /// `admission webhook "W" denied the request: …`.
    Webhook { webhook: String, message: String },
}

impl AdmissionDenial {
    /// Who refused, for people: `ValidatingAdmissionPolicy 'P'` or `admission webhook "W"`.
    pub fn by(&self) -> String {
        match self {
            Self::Policy { policy, .. } => format!("ValidatingAdmissionPolicy '{policy}'"),
            Self::Webhook { webhook, .. } => format!("admission webhook \"{webhook}\""),
        }
    }

    /// The denial's own message (after `denied request:` / `denied the request:`).
    pub fn message(&self) -> &str {
        match self {
            Self::Policy { message, .. } | Self::Webhook { message, .. } => message,
        }
    }
}

impl StatusFacts {
    /// Reads a `kind: Status` object; any other JSON is an error saying what it is.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        match kind_of(v) {
            Some("Status") => {}
            Some(other) => return Err(format!("is a Kubernetes {other}, not a Status")),
            None => return Err("is not a Kubernetes object (no `kind`)".into()),
        }
        let s: StatusObject = serde_json::from_value(v.clone())
            .map_err(|e| format!("is not a readable Status: {e}"))?;
        Ok(Self {
            status: s.status.unwrap_or_default(),
            code: s.code.unwrap_or(0),
            reason: s.reason.unwrap_or_default(),
            message: s.message.unwrap_or_default(),
        })
    }

    /// The admission check that refused the request, when this Status is such a refusal (a
    /// `Failure` with a 4xx code whose message has the API server's denial wording).
    pub fn admission_denial(&self) -> Option<AdmissionDenial> {
        if self.status != "Failure" || !(400..500).contains(&self.code) {
            return None;
        }
        let msg = self.message.as_str();
        if let Some(at) = msg.find("ValidatingAdmissionPolicy '") {
            let rest = &msg[at + "ValidatingAdmissionPolicy '".len()..];
            let (policy, tail) = rest.split_once('\'')?;
            let (_, message) = tail.split_once("denied request: ")?;
            return Some(AdmissionDenial::Policy {
                policy: policy.to_owned(),
                message: message.to_owned(),
            });
        }
        if let Some(at) = msg.find("admission webhook \"") {
            let rest = &msg[at + "admission webhook \"".len()..];
            let (webhook, tail) = rest.split_once('"')?;
            let message = tail.strip_prefix(" denied the request: ")?;
            return Some(AdmissionDenial::Webhook {
                webhook: webhook.to_owned(),
                message: message.to_owned(),
            });
        }
        None
    }
}

/// What kind of Kubernetes object a JSON value is (`kind`), if it says.
pub fn kind_of(v: &Value) -> Option<&str> {
    v.get("kind").and_then(Value::as_str)
}

impl PodFacts {
    /// Reads a Pod object (`kind: Pod`); any other JSON is an error saying what it is.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        match kind_of(v) {
            Some("Pod") => {}
            Some(other) => return Err(format!("is a Kubernetes {other}, not a Pod")),
            None => return Err("is not a Kubernetes object (no `kind`)".into()),
        }
        let pod: PodObject =
            serde_json::from_value(v.clone()).map_err(|e| format!("is not a readable Pod: {e}"))?;
        let spec = pod.spec.unwrap_or_default();
        let gpu_uuids = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ALLOCATED_ANNOTATION))
            .map(|value| allocated_uuids(value).map_err(|e| e.to_string()));
        Ok(Self {
            name: pod.metadata.name.unwrap_or_default(),
            uid: pod.metadata.uid,
            scheduler_name: spec
                .scheduler_name
                .unwrap_or_else(|| "default-scheduler".to_owned()),
            node_name: spec.node_name,
            phase: pod.status.and_then(|s| s.phase).unwrap_or_default(),
            gpu_uuids,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// What the judge reads of an Event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct EventFacts {
    pub involved_name: Option<String>,
    pub involved_uid: Option<String>,
    pub reason: Option<String>,
    pub message: String,
    pub type_: Option<String>,
    pub source_component: Option<String>,
    pub reporting_component: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Involved {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uid: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Source {
    #[serde(default)]
    component: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventObject {
    #[serde(default)]
    involved_object: Involved,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    source: Option<Source>,
    #[serde(default)]
    reporting_component: Option<String>,
}

impl EventFacts {
    /// Reads one Event object (`kind: Event`, or a bare list item with `involvedObject`).
    pub fn from_json(v: &Value) -> Result<Self, String> {
        match kind_of(v) {
            Some("Event") => {}
            None if v.get("involvedObject").is_some() => {}
            Some(other) => return Err(format!("holds a Kubernetes {other}, not an Event")),
            None => return Err("holds something that is not a Kubernetes Event".into()),
        }
        let e: EventObject = serde_json::from_value(v.clone())
            .map_err(|e| format!("holds an unreadable Event: {e}"))?;
        Ok(Self {
            involved_name: e.involved_object.name,
            involved_uid: e.involved_object.uid,
            reason: e.reason,
            message: e.message.unwrap_or_default(),
            type_: e.type_,
            source_component: e.source.and_then(|s| s.component),
            reporting_component: e.reporting_component,
        })
    }

    /// Reads a list of events: a JSON array (as cluster-ctl writes it) or a `*List` with `items`.
    pub fn list_from_json(v: &Value) -> Result<Vec<Self>, String> {
        let items = match v {
            Value::Array(items) => items,
            Value::Object(_) if kind_of(v).is_some_and(|k| k.ends_with("List")) => v
                .get("items")
                .and_then(Value::as_array)
                .ok_or("is a List without `items`")?,
            _ => return Err(describe_json(v)),
        };
        items.iter().map(Self::from_json).collect()
    }

    /// Emitted by hami-scheduler (source component or reporting component).
    pub fn from_hami_scheduler(&self) -> bool {
        self.source_component.as_deref() == Some(HAMI_SCHEDULER)
            || self.reporting_component.as_deref() == Some(HAMI_SCHEDULER)
    }
}

/// A short description of a JSON value for "is … not …" messages.
pub fn describe_json(v: &Value) -> String {
    if let Some(k) = kind_of(v) {
        return format!("is a Kubernetes {k}");
    }
    if let Some(s) = v.get("schema").and_then(Value::as_str) {
        return format!("is a `{s}` document");
    }
    match v {
        Value::Object(_) => "is a JSON object of no known kind".into(),
        Value::Array(_) => "is a JSON list of no known kind".into(),
        _ => "is a bare JSON value".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// hami-scheduler's FilteringFailed message

/// What a hami-scheduler `FilteringFailed` message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FilterMessage {
    /// v2.7+: `"<n> nodes <Reason>(<node1>,<node2>)"`.
    Reason {
        count: u32,
        reason: String,
        nodes: Vec<String>,
    },
    /// `"no available node, <N> nodes do not meet"` (v2.6+) or `"… all node scores do not meet"` (≤ v2.5).
    NoAvailableNode {
        not_meeting: Option<u32>,
    },
    Other,
}

/// Parses a `FilteringFailed` message (never panics).
pub fn parse_filter_message(msg: &str) -> FilterMessage {
    let msg = msg.trim();
    if let Some(rest) = msg.strip_prefix("no available node, ") {
        let not_meeting = rest
            .strip_suffix(" nodes do not meet")
            .and_then(|n| n.trim().parse().ok());
        return FilterMessage::NoAvailableNode { not_meeting };
    }
    let parsed = (|| {
        let (count, rest) = msg.split_once(" nodes ")?;
        let count = count.trim().parse::<u32>().ok()?;
        let (reason, rest) = rest.split_once('(')?;
        let nodes = rest.strip_suffix(')')?;
        let reason = reason.trim();
        if reason.is_empty() || !reason.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        Some(FilterMessage::Reason {
            count,
            reason: reason.to_owned(),
            nodes: nodes
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    })();
    parsed.unwrap_or(FilterMessage::Other)
}

/// The evidence for exercise 4 among a pod's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OversubscribeEvidence {
    /// A `FilteringFailed` from hami-scheduler names `CardInsufficientMemory`: the pass condition.
    Named {
        nodes: Vec<String>,
        message: String,
    },
    /// Only the generic `no available node…` (HAMi < 2.7 emits no per-reason event).
    GenericOnly {
        message: String,
    },
    /// Only kube-scheduler's `FailedScheduling` summary names the reason.
    SummaryOnly {
        message: String,
    },
    Nothing,
}

/// Finds the strongest evidence that `pod` (by name, and by uid when both sides carry one) was
/// refused for card memory.
pub fn match_insufficient_memory(
    events: &[EventFacts],
    pod: &str,
    uid: Option<&str>,
) -> OversubscribeEvidence {
    let mut best = OversubscribeEvidence::Nothing;
    for ev in events {
        let same_uid = match (uid, ev.involved_uid.as_deref()) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if ev.involved_name.as_deref() != Some(pod) || !same_uid || !ev.from_hami_scheduler() {
            continue;
        }
        let message = ev.message.clone();
        match ev.reason.as_deref() {
            Some("FilteringFailed") => match parse_filter_message(&message) {
                FilterMessage::Reason { reason, nodes, .. } if reason == INSUFFICIENT_MEMORY => {
                    return OversubscribeEvidence::Named { nodes, message };
                }
                FilterMessage::NoAvailableNode { .. }
                    if matches!(best, OversubscribeEvidence::Nothing) =>
                {
                    best = OversubscribeEvidence::GenericOnly { message };
                }
                _ => {}
            },
            Some("FailedScheduling")
                if message.contains(INSUFFICIENT_MEMORY)
                    && !matches!(best, OversubscribeEvidence::SummaryOnly { .. }) =>
            {
                best = OversubscribeEvidence::SummaryOnly { message };
            }
            _ => {}
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn per_container_and_per_device() {
        let parsed =
            parse_allocated("GPU-a,NVIDIA,8000,0:GPU-b,NVIDIA,100,30:;;GPU-c,NVIDIA,81559,100:;")
                .unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].len(), 2);
        assert_eq!(parsed[0][1].uuid, "GPU-b");
        assert_eq!(parsed[0][1].cores, 30);
        assert!(parsed[1].is_empty());
        assert_eq!(parsed[2][0].mem_mib, 81559);
        assert_eq!(
            allocated_uuids("GPU-a,NVIDIA,1,0:GPU-a,NVIDIA,1,0:;").unwrap(),
            ["GPU-a"]
        );
    }

    #[test]
    fn erased_to_allocate_value_is_one_empty_container() {
        assert_eq!(parse_allocated(";").unwrap(), vec![Vec::new()]);
    }

    #[test]
    fn errors_name_the_field() {
        assert!(matches!(
            parse_allocated("GPU-a,NVIDIA,8000:;"),
            Err(AllocError::FieldCount { found: 3, .. })
        ));
        assert!(matches!(
            parse_allocated("GPU-a,NVIDIA,8000,x:;"),
            Err(AllocError::BadNumber { field: "cores", .. })
        ));
        assert!(matches!(
            parse_allocated("GPU-a,NVIDIA,8000,99999999999:;"),
            Err(AllocError::BadNumber { field: "cores", .. })
        ));
    }

    #[test]
    fn pods_are_read_and_other_objects_are_named() {
        let pod = json!({"kind": "Pod", "metadata": {"name": "p", "annotations": {ALLOCATED_ANNOTATION: "GPU-1,NVIDIA,8000,0:;"}},
            "spec": {"schedulerName": "hami-scheduler", "nodeName": "n"}, "status": {"phase": "Running"}});
        let f = PodFacts::from_json(&pod).unwrap();
        assert_eq!(f.gpu_uuids, Some(Ok(vec!["GPU-1".to_owned()])));
        assert_eq!(
            (f.phase.as_str(), f.node_name.as_deref()),
            ("Running", Some("n"))
        );
        let bare = PodFacts::from_json(&json!({"kind": "Pod", "metadata": {"name": "q"}})).unwrap();
        assert_eq!(bare.scheduler_name, "default-scheduler");
        assert_eq!(bare.gpu_uuids, None);
        let e = PodFacts::from_json(&json!({"kind": "Node"})).unwrap_err();
        assert!(e.contains("Node, not a Pod"), "{e}");
        assert!(PodFacts::from_json(&json!({"schema": "x"})).is_err());
    }

    #[test]
    fn event_lists_in_both_shapes() {
        let ev = json!({"kind": "Event", "involvedObject": {"name": "p"}, "reason": "FilteringFailed",
            "message": "1 nodes CardInsufficientMemory(n)", "source": {"component": "hami-scheduler"}});
        let list = EventFacts::list_from_json(&json!([ev.clone()])).unwrap();
        assert!(list[0].from_hami_scheduler());
        let kube =
            EventFacts::list_from_json(&json!({"kind": "EventList", "items": [ev]})).unwrap();
        assert_eq!(
            match_insufficient_memory(&kube, "p", None),
            OversubscribeEvidence::Named {
                nodes: vec!["n".into()],
                message: "1 nodes CardInsufficientMemory(n)".into()
            }
        );
        assert_eq!(
            match_insufficient_memory(&kube, "other", None),
            OversubscribeEvidence::Nothing
        );
        assert!(EventFacts::list_from_json(&json!({"kind": "Pod"})).is_err());
        assert!(EventFacts::list_from_json(&json!([{"kind": "Pod"}])).is_err());
    }

    #[test]
    fn filter_messages_all_variants() {
        assert_eq!(
            parse_filter_message("2 nodes NodeInsufficientDevice(a,b)"),
            FilterMessage::Reason {
                count: 2,
                reason: "NodeInsufficientDevice".into(),
                nodes: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(
            parse_filter_message("no available node, 1 nodes do not meet"),
            FilterMessage::NoAvailableNode {
                not_meeting: Some(1)
            }
        );
        assert_eq!(
            parse_filter_message(
                "find fit node(gpu-vm-1), 0 nodes not fit, 1 nodes fit(gpu-vm-1:0.00)"
            ),
            FilterMessage::Other
        );
    }
}
