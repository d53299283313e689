//! Parser of the pod annotation `hami.io/vgpu-devices-allocated` (facts/hami.md §3): one entry per
//! container (init containers first), each ended by `;`; inside it one `<uuid>,<vendor>,<mem MiB>,<cores>`
//! per device, each ended by `:`. Example: `GPU-…,NVIDIA,8000,0:;`.
//!
//! Pure and panic-free on any input (property-tested here; the parser itself is lab-report's).

/// The parser lives in lab-report, where the judge reads the same annotation from Pod JSON.
pub use lab_report::k8s::{ALLOCATED_ANNOTATION, AllocError, ContainerDevice, parse_allocated};

/// All GPU UUIDs a pod was allocated (any container), in order, without repeats. `None` when the pod
/// has no allocation annotation (not scheduled by HAMi yet, or the webhook missed it).
pub fn pod_gpu_uuids(
    pod: &k8s_openapi::api::core::v1::Pod,
) -> Option<Result<Vec<String>, AllocError>> {
    let value = pod
        .metadata
        .annotations
        .as_ref()?
        .get(ALLOCATED_ANNOTATION)?;
    Some(lab_report::k8s::allocated_uuids(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::fixture_pod;
    use proptest::prelude::*;

    #[test]
    fn share_pods_are_on_the_same_gpu() {
        let a = fixture_pod("pod-hami-share-a-running.json");
        let b = fixture_pod("pod-hami-share-b-running.json");
        let ua = pod_gpu_uuids(&a).unwrap().unwrap();
        let ub = pod_gpu_uuids(&b).unwrap().unwrap();
        assert_eq!(
            ua,
            vec!["GPU-4f7efa07-0f69-f62e-5958-365ed3785eb2".to_owned()]
        );
        assert_eq!(ua, ub);
    }

    #[test]
    fn unmutated_pod_has_no_allocation() {
        assert!(pod_gpu_uuids(&fixture_pod("pod-unmutated-default-scheduler.json")).is_none());
    }

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
        assert_eq!(parsed[2][0].vendor, "NVIDIA");
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
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,300}") {
            let _ = parse_allocated(&s);
        }

        #[test]
        fn never_panics_on_annotation_like_text(s in "[GPU0-9a-f,:;NVIDIA-]{0,200}") {
            let _ = parse_allocated(&s);
        }

        #[test]
        fn round_trip(mem in 0u64..10_000_000, cores in 0u32..=100) {
            let parsed = parse_allocated(&format!("GPU-z,NVIDIA,{mem},{cores}:;")).unwrap();
            prop_assert_eq!(parsed[0][0].mem_mib, mem);
            prop_assert_eq!(parsed[0][0].cores, cores);
        }
    }
}
