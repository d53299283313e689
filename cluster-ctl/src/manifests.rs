//! Renders the lab's pod templates (`manifests/*.yaml` at the repository root, compiled in) for a
//! sizing, and validates every rendered pod before anything is applied or written: the share,
//! oversubscribe and baseline pods, and the bypass pods B1–B6 (`manifests/bypass/`), each checked
//! to try what its exercise says. The GPU tenant policy (`manifests/policy.yaml`) is compiled in
//! here too; `harden` applies it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use lab_report::run::{BYPASSES, Bypass, Given};
use serde::Serialize;

use crate::sizing::Sizing;

pub const SHARE_TEMPLATE: &str = include_str!("../../manifests/share-pod.yaml");
pub const OVERSUBSCRIBE_TEMPLATE: &str = include_str!("../../manifests/oversubscribe-pod.yaml");
pub const BASELINE_TEMPLATE: &str = include_str!("../../manifests/baseline-pod.yaml");
/// The `--audit` baseline pod (CUDA_DISABLE_CONTROL=true: no HAMi-core) and its small slice.
pub const BASELINE: &str = "hami-baseline";
pub const BASELINE_MIB: u64 = 1000;
/// The GPU tenant policy and its binding (`cluster-ctl harden`).
pub const POLICY: &str = include_str!("../../manifests/policy.yaml");
/// The namespace the `--audit` baseline pod (CUDA_DISABLE_CONTROL=true on purpose) must run in
/// when the policy is bound: the policy's binding exempts it.
pub const BASELINE_NAMESPACE: &str = "hami-isolation-lab-baseline";
/// The bypass templates, by exercise id (`lab_report::run::BYPASSES`).
pub const BYPASS_TEMPLATES: [(&str, &str); 6] = [
    (
        "B1",
        include_str!("../../manifests/bypass/b1-visible-devices-all.yaml"),
    ),
    (
        "B2",
        include_str!("../../manifests/bypass/b2-disable-control.yaml"),
    ),
    (
        "B3",
        include_str!("../../manifests/bypass/b3-own-memory-limit.yaml"),
    ),
    (
        "B4",
        include_str!("../../manifests/bypass/b4-slice-visible-devices-all.yaml"),
    ),
    (
        "B5",
        include_str!("../../manifests/bypass/b5-region-tamper.yaml"),
    ),
    (
        "B6",
        include_str!("../../manifests/bypass/b6-privileged.yaml"),
    ),
];
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
    let mut pod = render_text(template, name, namespace, image, gpumem_mib)?;
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

/// The checks every lab pod passes, request or not: its name, the lab label (cleanup finds it by
/// it), one container running `image`. Returns that container.
fn validate_shape<'p>(
    pod: &'p Pod,
    name: &str,
    image: &str,
) -> Result<&'p k8s_openapi::api::core::v1::Container, ManifestError> {
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
    Ok(container)
}

fn validate(pod: &Pod, name: &str, gpumem_mib: u64, image: &str) -> Result<(), ManifestError> {
    let mismatch = |what: String| ManifestError::Mismatch {
        name: name.to_owned(),
        what,
    };
    let container = validate_shape(pod, name, image)?;
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

// ---------------------------------------------------------------------------------------------
// Bypass pods

/// A bypass pod ready to apply, with the exercise it belongs to.
#[derive(Debug, Clone)]
pub struct RenderedBypass {
    pub bypass: &'static Bypass,
    pub pod: RenderedPod,
}

/// The template of a bypass exercise.
pub fn bypass_template(b: &Bypass) -> Option<&'static str> {
    BYPASS_TEMPLATES
        .iter()
        .find(|(id, _)| *id == b.id)
        .map(|(_, t)| *t)
}

/// Renders one bypass pod: `slice_mib` is its slice (ignored for the pods that ask for none),
/// `claimed_mib` the larger limit B3 sets for itself (the card's memory). Validated: the pod
/// asks for exactly what its exercise says it was given, and carries what it tries.
pub fn render_bypass(
    b: &'static Bypass,
    namespace: &str,
    image: &str,
    slice_mib: u64,
    claimed_mib: u64,
    pin_uuid: Option<&str>,
) -> Result<RenderedBypass, ManifestError> {
    let template = bypass_template(b).ok_or_else(|| ManifestError::Mismatch {
        name: b.pod.to_owned(),
        what: format!("no template for bypass {}", b.id),
    })?;
    if b.id == "B3" && claimed_mib <= slice_mib {
        return Err(ManifestError::Mismatch {
            name: b.pod.to_owned(),
            what: format!(
                "B3 claims {claimed_mib} MiB, not more than its {slice_mib} MiB slice: nothing to try"
            ),
        });
    }
    let text = template.replace("${CLAIMED_MIB}", &claimed_mib.to_string());
    let mut pod = render_text(&text, b.pod, namespace, image, slice_mib)?;
    if let Some(uuid) = pin_uuid.filter(|_| b.given == Given::Slice) {
        pod.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(PIN_ANNOTATION.to_owned(), uuid.to_owned());
    }
    validate_bypass(&pod, b, image, slice_mib, claimed_mib)?;
    let yaml = serde_yaml_ng::to_string(&pod).map_err(|e| ManifestError::Invalid {
        name: b.pod.to_owned(),
        error: e.to_string(),
    })?;
    Ok(RenderedBypass {
        bypass: b,
        pod: RenderedPod {
            name: b.pod.to_owned(),
            gpumem_mib: if b.given == Given::Slice {
                slice_mib
            } else {
                0
            },
            yaml,
            pod,
        },
    })
}

/// Renders B1–B6 for a sizing (B3 claims the whole card); all are validated before any is used.
pub fn render_bypasses(
    sizing: &Sizing,
    namespace: &str,
    image: &str,
) -> Result<Vec<RenderedBypass>, ManifestError> {
    BYPASSES
        .iter()
        .map(|b| {
            render_bypass(
                b,
                namespace,
                image,
                sizing.slice_mib,
                sizing.card.devmem_mib,
                sizing.pin_uuid.as_deref(),
            )
        })
        .collect()
}

/// Placeholders filled, parsed as a Pod (the shared part of [`render`] and [`render_bypass`]).
fn render_text(
    template: &str,
    name: &str,
    namespace: &str,
    image: &str,
    gpumem_mib: u64,
) -> Result<Pod, ManifestError> {
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
    serde_yaml_ng::from_str(&text).map_err(|e| ManifestError::Invalid {
        name: name.to_owned(),
        error: e.to_string(),
    })
}

/// The env value of `name` in the pod's container, if set.
fn env_value<'p>(pod: &'p Pod, name: &str) -> Option<&'p str> {
    pod.spec
        .as_ref()?
        .containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

fn validate_bypass(
    pod: &Pod,
    b: &Bypass,
    image: &str,
    slice_mib: u64,
    claimed_mib: u64,
) -> Result<(), ManifestError> {
    let mismatch = |what: String| ManifestError::Mismatch {
        name: b.pod.to_owned(),
        what,
    };
    match b.given {
        Given::Slice => validate(pod, b.pod, slice_mib, image)?,
        Given::Nothing => {
            // The checks of `validate` that do not concern the request, then: no GPU request.
            let container = validate_shape(pod, b.pod, image)?;
            let asks = container
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .is_some_and(|l| l.keys().any(|k| k.starts_with("nvidia.com/")));
            if asks {
                return Err(mismatch(
                    "asks for a GPU, but its exercise gives it none".to_owned(),
                ));
            }
        }
    }
    let privileged = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.security_context.as_ref())
        .and_then(|sc| sc.privileged)
        == Some(true);
    let tries = match b.id {
        "B1" | "B4" => env_value(pod, "NVIDIA_VISIBLE_DEVICES") == Some("all"),
        "B2" => env_value(pod, "CUDA_DISABLE_CONTROL") == Some("true"),
        "B3" => {
            env_value(pod, "CUDA_DEVICE_MEMORY_LIMIT_0") == Some(format!("{claimed_mib}m").as_str())
        }
        // B5's attempt is the probe's; its pod must look like any slice pod.
        "B5" => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .is_some_and(|c| c.env.as_ref().is_none_or(Vec::is_empty)),
        "B6" => privileged,
        _ => false,
    };
    if !tries {
        return Err(mismatch(format!(
            "does not do what bypass {} tries ({})",
            b.id, b.tries
        )));
    }
    if privileged && b.id != "B6" {
        return Err(mismatch("is privileged, which only B6 tries".to_owned()));
    }
    Ok(())
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

    fn h200_sizing() -> Sizing {
        size(
            &[Card {
                uuid: None,
                devmem_mib: 143771,
            }],
            None,
            None,
        )
        .unwrap()
    }

    #[test]
    fn renders_every_bypass_pod_labelled_and_doing_what_it_tries() {
        let pods = render_bypasses(&h200_sizing(), "lab", DEFAULT_IMAGE).unwrap();
        let names: Vec<&str> = pods.iter().map(|p| p.pod.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hami-bypass-b1",
                "hami-bypass-b2",
                "hami-bypass-b3",
                "hami-bypass-b4",
                "hami-bypass-b5",
                "hami-bypass-b6"
            ]
        );
        for p in &pods {
            let labels = p.pod.pod.metadata.labels.as_ref().unwrap();
            assert_eq!(labels[PART_OF_KEY], PART_OF_VALUE);
            assert_eq!(labels["hami-isolation-lab/role"], "bypass");
            assert_eq!(
                labels["hami-isolation-lab/bypass"],
                p.bypass.id.to_ascii_lowercase()
            );
            assert_eq!(p.pod.pod.metadata.namespace.as_deref(), Some("lab"));
            let back: Pod = serde_yaml_ng::from_str(&p.pod.yaml).unwrap();
            assert_eq!(back, p.pod.pod);
        }
        let yaml = |i: usize| pods[i].pod.yaml.as_str();
        assert!(!yaml(0).contains("nvidia.com/gpu"), "{}", yaml(0));
        assert!(yaml(0).contains("NVIDIA_VISIBLE_DEVICES"), "{}", yaml(0));
        assert!(yaml(1).contains("CUDA_DISABLE_CONTROL"), "{}", yaml(1));
        assert!(yaml(2).contains("143771m"), "{}", yaml(2));
        assert!(yaml(2).contains("nvidia.com/gpumem: '8000'"), "{}", yaml(2));
        assert!(yaml(5).contains("privileged: true"), "{}", yaml(5));
        assert_eq!(pods[0].pod.gpumem_mib, 0);
        assert_eq!(pods[4].pod.gpumem_mib, 8000);
    }

    #[test]
    fn bypass_pods_with_a_slice_are_pinned_the_others_are_not() {
        let cards = crate::testdata::two_cards(49140);
        let s = size(&cards, None, None).unwrap();
        for p in render_bypasses(&s, "lab", DEFAULT_IMAGE).unwrap() {
            let pinned = p
                .pod
                .pod
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(PIN_ANNOTATION));
            assert_eq!(pinned, p.bypass.given == Given::Slice, "{}", p.bypass.id);
        }
    }

    #[test]
    fn a_bypass_template_that_does_not_try_its_bypass_is_refused() {
        let b3 = &BYPASSES[2];
        assert!(matches!(
            render_bypass(b3, "lab", DEFAULT_IMAGE, 8000, 8000, None),
            Err(ManifestError::Mismatch { .. })
        ));
        // B2's template rendered as B5 (which must look like any slice pod) is refused.
        let b2_text = bypass_template(&BYPASSES[1]).unwrap().replace("b2", "b5");
        let pod = render_text(&b2_text, "hami-bypass-b5", "lab", DEFAULT_IMAGE, 8000).unwrap();
        let err = validate_bypass(&pod, &BYPASSES[4], DEFAULT_IMAGE, 8000, 0).unwrap_err();
        assert!(
            err.to_string().contains("does not do what bypass B5 tries"),
            "{err}"
        );
        // The share pod is not B1 (it asks for a GPU).
        let pod =
            render_text(SHARE_TEMPLATE, "hami-bypass-b1", "lab", DEFAULT_IMAGE, 8000).unwrap();
        let err = validate_bypass(&pod, &BYPASSES[0], DEFAULT_IMAGE, 8000, 0).unwrap_err();
        assert!(err.to_string().contains("gives it none"), "{err}");
        assert!(matches!(
            render_bypass(&BYPASSES[0], "Bad_NS", DEFAULT_IMAGE, 8000, 0, None),
            Err(ManifestError::BadNamespace(_))
        ));
    }
}
