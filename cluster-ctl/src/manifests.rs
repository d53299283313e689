//! Renders the lab's pod templates (`manifests/*.yaml` at the repository root, compiled in) for a
//! sizing, and validates every rendered pod before anything is applied or written.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use crate::sizing::Sizing;

pub const SHARE_TEMPLATE: &str = include_str!("../../manifests/share-pod.yaml");
pub const OVERSUBSCRIBE_TEMPLATE: &str = include_str!("../../manifests/oversubscribe-pod.yaml");
pub const BASELINE_TEMPLATE: &str = include_str!("../../manifests/baseline-pod.yaml");
/// The `--audit` baseline pod (CUDA_DISABLE_CONTROL=true: no HAMi-core) and its small slice.
pub const BASELINE: &str = "hami-baseline";
pub const BASELINE_MIB: u64 = 1000;
/// Small CUDA base image (not devel): the probe needs only the driver's libcuda.
pub const DEFAULT_IMAGE: &str = "nvidia/cuda:12.4.1-base-ubuntu22.04";
pub const SHARE_A: &str = "hami-share-a";
pub const SHARE_B: &str = "hami-share-b";
pub const OVERSUBSCRIBE: &str = "hami-oversubscribe";
/// Label every lab pod carries; `cleanup` deletes by it.
pub const PART_OF_KEY: &str = "app.kubernetes.io/part-of";
pub const PART_OF_VALUE: &str = "hami-isolation-lab";
/// Label selector of the lab pods.
pub const LAB_SELECTOR: &str = "app.kubernetes.io/part-of=hami-isolation-lab";
/// HAMi's per-pod GPU pin (facts/hami.md §3).
pub const PIN_ANNOTATION: &str = "nvidia.com/use-gpuuuid";
pub const GPUMEM: &str = "nvidia.com/gpumem";

/// Why a rendered manifest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "template for {name} still has placeholder {placeholder} after rendering (template and cluster-ctl disagree)"
    )]
    Unrendered { name: String, placeholder: String },
    #[error("rendered manifest for {name} is not a valid Pod: {error}")]
    Invalid { name: String, error: String },
    #[error("rendered pod {name}: {what}")]
    Mismatch { name: String, what: String },
    #[error(
        "image {0:?} is a CUDA devel image (several GiB); the lab needs only a base image such as {DEFAULT_IMAGE} — pass --image with a base or runtime tag"
    )]
    DevelImage(String),
    #[error(
        "namespace {0:?} is not a valid Kubernetes namespace name (lowercase letters, digits and '-', at most 63)"
    )]
    BadNamespace(String),
}

/// A pod ready to apply, and the YAML that is written to `DIR/manifests/<name>.yaml`.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedPod {
    pub name: String,
    pub gpumem_mib: u64,
    pub yaml: String,
    #[serde(skip)]
    pub pod: Pod,
}

fn valid_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Renders one template and validates the result.
pub fn render(
    template: &str,
    name: &str,
    namespace: &str,
    image: &str,
    gpumem_mib: u64,
    pin_uuid: Option<&str>,
) -> Result<RenderedPod, ManifestError> {
    if !valid_dns_label(namespace) {
        return Err(ManifestError::BadNamespace(namespace.to_owned()));
    }
    if image.contains("devel") {
        return Err(ManifestError::DevelImage(image.to_owned()));
    }
    let text = template
        .replace("${NAME}", name)
        .replace("${NAMESPACE}", namespace)
        .replace("${IMAGE}", image)
        .replace("${GPUMEM_MIB}", &gpumem_mib.to_string());
    if let Some(start) = text.find("${") {
        let placeholder: String = text[start..]
            .chars()
            .take_while(|c| *c != '}')
            .chain(['}'])
            .collect();
        return Err(ManifestError::Unrendered {
            name: name.to_owned(),
            placeholder,
        });
    }
    let mut pod: Pod = serde_yaml_ng::from_str(&text).map_err(|e| ManifestError::Invalid {
        name: name.to_owned(),
        error: e.to_string(),
    })?;
    if let Some(uuid) = pin_uuid {
        pod.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(PIN_ANNOTATION.to_owned(), uuid.to_owned());
    }
    validate(&pod, name, gpumem_mib, image)?;
    let yaml = serde_yaml_ng::to_string(&pod).map_err(|e| ManifestError::Invalid {
        name: name.to_owned(),
        error: e.to_string(),
    })?;
    Ok(RenderedPod {
        name: name.to_owned(),
        gpumem_mib,
        yaml,
        pod,
    })
}

fn validate(pod: &Pod, name: &str, gpumem_mib: u64, image: &str) -> Result<(), ManifestError> {
    let mismatch = |what: String| ManifestError::Mismatch {
        name: name.to_owned(),
        what,
    };
    if pod.metadata.name.as_deref() != Some(name) {
        return Err(mismatch(format!(
            "metadata.name is {:?}",
            pod.metadata.name
        )));
    }
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(PART_OF_KEY))
        .is_some_and(|v| v == PART_OF_VALUE);
    if !labelled {
        return Err(mismatch(format!(
            "label {LAB_SELECTOR} missing, cleanup could not find it"
        )));
    }
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| mismatch("no spec".to_owned()))?;
    let [container] = spec.containers.as_slice() else {
        return Err(mismatch(format!(
            "{} containers, expected 1",
            spec.containers.len()
        )));
    };
    if container.image.as_deref() != Some(image) {
        return Err(mismatch(format!("image is {:?}", container.image)));
    }
    let limits = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .ok_or_else(|| mismatch("no resource limits".to_owned()))?;
    if limits.get("nvidia.com/gpu").map(|q| q.0.as_str()) != Some("1") {
        return Err(mismatch("nvidia.com/gpu limit is not 1".to_owned()));
    }
    if limits.get(GPUMEM).map(|q| q.0.as_str()) != Some(gpumem_mib.to_string().as_str()) {
        return Err(mismatch(format!("{GPUMEM} limit is not {gpumem_mib}")));
    }
    Ok(())
}

/// Renders the three lab pods (share-a, share-b, oversubscribe); all are validated before any is used.
pub fn render_all(
    sizing: &Sizing,
    namespace: &str,
    image: &str,
) -> Result<Vec<RenderedPod>, ManifestError> {
    let pin = sizing.pin_uuid.as_deref();
    Ok(vec![
        render(
            SHARE_TEMPLATE,
            SHARE_A,
            namespace,
            image,
            sizing.slice_mib,
            pin,
        )?,
        render(
            SHARE_TEMPLATE,
            SHARE_B,
            namespace,
            image,
            sizing.slice_mib,
            pin,
        )?,
        render(
            OVERSUBSCRIBE_TEMPLATE,
            OVERSUBSCRIBE,
            namespace,
            image,
            sizing.oversubscribe_mib,
            pin,
        )?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sizing::{Card, size};

    #[test]
    fn renders_the_three_pods_for_a6000() {
        let s = size(
            &[Card {
                uuid: None,
                devmem_mib: 49140,
            }],
            None,
            None,
        )
        .unwrap();
        let pods = render_all(&s, "default", DEFAULT_IMAGE).unwrap();
        let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec![SHARE_A, SHARE_B, OVERSUBSCRIBE]);
        assert!(
            pods[0].yaml.contains("nvidia.com/gpumem: '8000'"),
            "{}",
            pods[0].yaml
        );
        assert!(
            pods[2].yaml.contains("nvidia.com/gpumem: '41000'"),
            "{}",
            pods[2].yaml
        );
        assert!(pods[0].yaml.contains("sleep"));
        assert!(pods[0].yaml.contains(DEFAULT_IMAGE));
        assert!(!pods[0].yaml.contains(PIN_ANNOTATION));
        // The YAML round-trips to the same pod.
        let back: Pod = serde_yaml_ng::from_str(&pods[2].yaml).unwrap();
        assert_eq!(back, pods[2].pod);
    }

    #[test]
    fn pinned_pods_carry_the_uuid() {
        let cards = crate::testdata::two_cards(49140);
        let s = size(&cards, None, None).unwrap();
        let pods = render_all(&s, "lab", DEFAULT_IMAGE).unwrap();
        for p in &pods {
            assert_eq!(
                p.pod
                    .metadata
                    .annotations
                    .as_ref()
                    .unwrap()
                    .get(PIN_ANNOTATION)
                    .map(String::as_str),
                Some("GPU-a")
            );
            assert_eq!(p.pod.metadata.namespace.as_deref(), Some("lab"));
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(matches!(
            render(
                SHARE_TEMPLATE,
                SHARE_A,
                "default",
                "nvidia/cuda:12.4.1-devel-ubuntu22.04",
                8000,
                None
            ),
            Err(ManifestError::DevelImage(_))
        ));
        assert!(matches!(
            render(SHARE_TEMPLATE, SHARE_A, "Bad_NS", DEFAULT_IMAGE, 8000, None),
            Err(ManifestError::BadNamespace(_))
        ));
        assert!(matches!(
            render(
                "metadata:\n  name: ${OTHER}\n",
                SHARE_A,
                "default",
                DEFAULT_IMAGE,
                8000,
                None
            ),
            Err(ManifestError::Unrendered { .. })
        ));
        assert!(matches!(
            render(
                "kind: Pod\napiVersion: v1\nmetadata:\n  name: x\n",
                SHARE_A,
                "default",
                DEFAULT_IMAGE,
                8000,
                None
            ),
            Err(ManifestError::Mismatch { .. })
        ));
        assert!(matches!(
            render("kind: [", SHARE_A, "default", DEFAULT_IMAGE, 8000, None),
            Err(ManifestError::Invalid { .. })
        ));
    }
}
