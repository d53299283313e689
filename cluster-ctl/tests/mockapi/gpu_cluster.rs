//! A cluster of many HAMi GPU nodes on the mock (constructed): each node as the k3s node fixture
//! with its own name, `kubernetes.io/hostname` label and `hami.io/node-nvidia-register` written
//! in one of HAMi's three formats, Ready or NotReady, cordoned or not; HAMi's scheduler, webhook
//! and device plugin ready; pods placed by `MockApi::place_on_nodes` (the node by the pod's
//! `nodeSelector`, then the card by HAMi's model, `nvidia.com/use-gpuuuid` pinning it).

use std::time::Duration;

use serde_json::{Value, json};

use super::MockApi;
use super::lifecycle::{Card, Placement};

/// Which format the device plugin wrote the register annotation in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// HAMi ≥ 2.8.
    Json,
    /// HAMi 2.5–2.7.
    Legacy9,
    /// HAMi ≤ 2.4.
    Legacy7,
}

/// Models of the mixed fleets: (type as NVML names it, MiB HAMi registers).
pub const MODELS: [(&str, u64); 4] = [
    ("NVIDIA H100 80GB HBM3", 81559),
    ("NVIDIA A100-SXM4-40GB", 40960),
    ("NVIDIA L4", 23034),
    ("NVIDIA H200", 143771),
];

#[derive(Debug, Clone)]
pub struct GpuCard {
    pub uuid: String,
    pub model: String,
    pub mib: u64,
    /// The scheduler knows the card (false: registered, but HAMi's scheduler cannot place on it).
    pub schedulable: bool,
}

#[derive(Debug, Clone)]
pub struct GpuNode {
    pub name: String,
    pub cards: Vec<GpuCard>,
    pub ready: bool,
    pub cordoned: bool,
    pub format: Format,
}

impl GpuNode {
    /// Node `n` with `cards` cards of mixed models, Ready, in the JSON format.
    pub fn new(n: usize, cards: usize) -> Self {
        Self {
            name: format!("gpu-{n:03}"),
            cards: (0..cards)
                .map(|c| {
                    let (model, mib) = MODELS[(n + c) % MODELS.len()];
                    GpuCard {
                        uuid: card_uuid(n, c),
                        model: model.into(),
                        mib,
                        schedulable: true,
                    }
                })
                .collect(),
            ready: true,
            cordoned: false,
            format: Format::Json,
        }
    }

    pub fn register(&self) -> String {
        match self.format {
            Format::Json => Value::Array(
                self.cards
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let mut d = json!({"id": c.uuid, "count": 10, "devmem": c.mib, "devcore": 100,
                                           "type": c.model, "mode": "hami-core", "health": true});
                        if i > 0 {
                            d["index"] = json!(i); // omitempty: index 0 is absent
                        }
                        d
                    })
                    .collect(),
            )
            .to_string(),
            Format::Legacy9 => self
                .cards
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{},10,{},100,{},0,true,{i},hami-core:", c.uuid, c.mib, c.model))
                .collect(),
            Format::Legacy7 => self
                .cards
                .iter()
                .map(|c| format!("{},10,{},100,{},0,true:", c.uuid, c.mib, c.model))
                .collect(),
        }
    }

    /// The Node object.
    pub fn object(&self) -> Value {
        let mut node: Value = super::fixtures::fixture("node-hami-v2.10-h100.json");
        node["metadata"]["name"] = json!(self.name);
        node["metadata"]["labels"]["kubernetes.io/hostname"] = json!(self.name);
        node["metadata"]["annotations"]["k3s.io/hostname"] = json!(self.name);
        node["metadata"]["annotations"]["hami.io/node-nvidia-register"] = json!(self.register());
        node["status"]["allocatable"]["nvidia.com/gpu"] =
            json!((self.cards.len() * 10).to_string());
        node["status"]["capacity"]["nvidia.com/gpu"] = json!((self.cards.len() * 10).to_string());
        if !self.ready {
            for c in node["status"]["conditions"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                if c["type"] == "Ready" {
                    c["status"] = json!("Unknown");
                    c["reason"] = json!("NodeStatusUnknown");
                    c["message"] = json!("Kubelet stopped posting node status.");
                }
            }
        }
        if self.cordoned {
            node["spec"]["unschedulable"] = json!(true);
        }
        node
    }
}

pub fn card_uuid(node: usize, card: usize) -> String {
    format!(
        "GPU-{node:08x}-{card:04x}-4a1e-9c2b-{:012x}",
        node * 16 + card
    )
}

/// The mock with HAMi ready and `nodes` registered, pods pulled in `pull`.
pub fn gpu_cluster(nodes: &[GpuNode], pull: Duration) -> MockApi {
    let m = MockApi::new();
    m.add_fixture("daemonsets-hami-only.json")
        .add_fixture("deploy-hami-scheduler-tag-match.json")
        .add_fixture("endpoints-hami-scheduler-ready.json");
    let mut placements = Vec::new();
    for n in nodes {
        m.add(n.object());
        placements.push(Placement {
            node: n.name.clone(),
            cards: n
                .cards
                .iter()
                .filter(|c| c.schedulable)
                .map(|c| Card {
                    uuid: c.uuid.clone(),
                    devmem_mib: c.mib,
                })
                .collect(),
            pull,
        });
    }
    m.place_on_nodes(placements);
    m.settings(|s| s.probe_shows_its_card = true);
    m
}

/// A tenant's pod on `node` holding `mib` of card `uuid` (HAMi's allocation annotation), Running.
pub fn tenant(name: &str, node: &str, uuid: &str, mib: u64) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default",
                     "annotations": {"hami.io/vgpu-devices-allocated": format!("{uuid},NVIDIA,{mib},0:;"),
                                     "hami.io/vgpu-node": node, "hami.io/bind-phase": "success"}},
        "spec": {"nodeName": node, "schedulerName": "hami-scheduler",
                 "containers": [{"name": "train", "image": "nvcr.io/nvidia/pytorch:24.05-py3",
                                 "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": mib.to_string()}}}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    })
}
