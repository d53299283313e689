//! The probe pod of one card (`manifests/fleet-probe-pod.yaml`, compiled in): its name, rendered
//! and validated by `crate::manifests` like every lab pod, pinned to the node by its hostname
//! label and to the card by HAMi's `nvidia.com/use-gpuuuid`.

use crate::manifests::{self, ManifestError, RenderedPod};

pub const TEMPLATE: &str = include_str!("../../../manifests/fleet-probe-pod.yaml");

/// Longest pod name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// `hami-fleet-<run>-<node>-<card index>`, lowercased; a node name that would make it too long is
/// cut and given a hash of the whole name, so two long names never meet.
pub fn pod_name(run: &str, node: &str, index: u32) -> String {
    let clean: String = node
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let prefix = format!("hami-fleet-{run}-");
    let suffix = format!("-{index}");
    let room = MAX_NAME - prefix.len() - suffix.len();
    let node_part = if clean.len() <= room {
        clean
    } else {
        let hash = fnv1a(node.as_bytes());
        format!("{}-{hash:08x}", &clean[..room - 9])
    };
    format!("{prefix}{node_part}{suffix}")
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// What one probe pod needs.
#[derive(Debug, Clone)]
pub struct ProbePod<'a> {
    pub run: &'a str,
    pub namespace: &'a str,
    pub image: &'a str,
    pub node: &'a str,
    pub hostname: &'a str,
    pub index: u32,
    pub uuid: &'a str,
    pub slice_mib: u64,
    /// The pod ends itself after this (`activeDeadlineSeconds`, and its `sleep`).
    pub lifetime_s: u64,
}

/// The rendered, validated probe pod.
pub fn render(p: &ProbePod<'_>) -> Result<RenderedPod, ManifestError> {
    let name = pod_name(p.run, p.node, p.index);
    let text = TEMPLATE
        .replace("${HOSTNAME}", p.hostname)
        .replace("${RUN}", p.run)
        .replace("${LIFETIME_S}", &p.lifetime_s.max(1).to_string());
    manifests::render(
        &text,
        &name,
        p.namespace,
        p.image,
        p.slice_mib,
        Some(p.uuid),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_pod_is_pinned_to_its_node_and_card() {
        let r = render(&ProbePod {
            run: "k3x9a",
            namespace: "hami-isolation-lab",
            image: manifests::DEFAULT_IMAGE,
            node: "gpu-node-7",
            hostname: "gpu-node-7.example",
            index: 3,
            uuid: "GPU-abc",
            slice_mib: 1000,
            lifetime_s: 600,
        })
        .unwrap();
        assert_eq!(r.name, "hami-fleet-k3x9a-gpu-node-7-3");
        let spec = r.pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.node_selector.as_ref().unwrap()["kubernetes.io/hostname"],
            "gpu-node-7.example"
        );
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(spec.automount_service_account_token, Some(false));
        let ann = r.pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[manifests::PIN_ANNOTATION], "GPU-abc");
        let labels = r.pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[super::super::RUN_LABEL], "k3x9a");
        assert_eq!(labels[super::super::ROLE_LABEL], super::super::ROLE_VALUE);
        assert!(
            r.yaml.contains("nvidia.com/gpumem: '1000'")
                || r.yaml.contains("nvidia.com/gpumem: \"1000\""),
            "{}",
            r.yaml
        );
    }

    #[test]
    fn long_node_names_stay_a_valid_distinct_name() {
        let a = "n".repeat(250) + "a";
        let b = "n".repeat(250) + "b";
        let (na, nb) = (pod_name("r", &a, 0), pod_name("r", &b, 0));
        assert!(na.len() <= 253 && nb.len() <= 253);
        assert_ne!(na, nb);
        assert_eq!(pod_name("r", "Node_X", 1), "hami-fleet-r-node-x-1");
    }
}
