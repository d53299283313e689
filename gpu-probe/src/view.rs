//! The virtualized view: does every source of "how much memory does this device have" report the
//! slice, or the full card? Pure decision over the numbers the probe collected.
//!
//! Under HAMi-core: NVML total = limit, `cuDeviceTotalMem_v2` = limit, `cuMemGetInfo_v2` total =
//! min(limit, physical), and nvidia-smi (itself intercepted) prints the limit (facts §9, §15).

use crate::report::{MIB, ViewDevice, ViewOutcome, mib};

/// Within a MiB counts as equal: nvidia-smi rounds to MiB.
const TOLERANCE: u64 = MIB;

/// Why `cuDeviceTotalMem_v2` can read 0: HAMi-core's hook (`device.c`) returns the device's
/// limit raw, which is 0 when none is set. The real driver never reports a 0-byte device.
pub const ZERO_TOTAL: &str = "cuDeviceTotalMem_v2 returned 0 MiB: under HAMi-core this call answers with the device's limit, and this device has none (no CUDA_DEVICE_MEMORY_LIMIT_<i> for it), so it is not a size; the real driver never reports 0";

/// The view under CUDA MPS: NVML and `cuDeviceTotalMem_v2` show the whole card (MPS does not
/// virtualize them, as expected), so only `cuMemGetInfo_v2`'s free memory can show the pinned
/// limit. Passes when that free memory is within the limit.
pub fn decide_mps(device: &ViewDevice) -> (ViewOutcome, Vec<String>) {
    let Some(slice) = device.expected_bytes else {
        return (
            ViewOutcome::NoSliceExpected,
            vec!["no pinned device memory limit is known for this device".into()],
        );
    };
    let mut reasons = Vec::new();
    if let Some(n) = device.nvml {
        reasons.push(format!(
            "NVML total {:.0} MiB: the whole card, as under MPS (not virtualized; expected)",
            mib(n.total)
        ));
    }
    if let Some(t) = device.cuda_total_mem {
        reasons.push(format!(
            "cuDeviceTotalMem_v2 {:.0} MiB: the whole card, as under MPS (expected)",
            mib(t)
        ));
    }
    let Some(info) = device.cuda_mem_info else {
        reasons.insert(0, "cuMemGetInfo_v2 could not be read".into());
        return (ViewOutcome::NoData, reasons);
    };
    if info.free <= slice + TOLERANCE {
        reasons.insert(
            0,
            format!(
                "cuMemGetInfo_v2 free {:.0} MiB is within the {:.0} MiB pinned limit (its total {:.0} MiB is the card's)",
                mib(info.free),
                mib(slice),
                mib(info.total)
            ),
        );
        (ViewOutcome::ShowsSlice, reasons)
    } else {
        reasons.insert(
            0,
            format!(
                "cuMemGetInfo_v2 free {:.0} MiB is more than the {:.0} MiB pinned limit: the limit does not reach this process",
                mib(info.free),
                mib(slice)
            ),
        );
        (ViewOutcome::ShowsFullCard, reasons)
    }
}

/// Decides the outcome for one device from the sources it has.
pub fn decide(device: &ViewDevice) -> (ViewOutcome, Vec<String>) {
    let mut sources: Vec<(&str, u64)> = Vec::new();
    let mut notes = Vec::new();
    if let Some(n) = device.nvml {
        sources.push(("NVML nvmlDeviceGetMemoryInfo total", n.total));
    }
    match device.cuda_total_mem {
        Some(0) => notes.push(ZERO_TOTAL.to_owned()),
        Some(t) => sources.push(("CUDA cuDeviceTotalMem_v2", t)),
        None => {}
    }
    if let Some(c) = device.cuda_mem_info {
        sources.push(("CUDA cuMemGetInfo_v2 total", c.total));
    }
    if let Some(s) = device.nvidia_smi_total_mib {
        sources.push(("nvidia-smi memory.total", s * MIB));
    }
    if sources.is_empty() {
        return (
            ViewOutcome::NoData,
            vec!["no source could report this device's memory".into()],
        );
    }
    let Some(slice) = device.expected_bytes else {
        let reasons = sources
            .iter()
            .map(|(name, v)| format!("{name}: {:.0} MiB", mib(*v)))
            .chain(notes)
            .collect();
        return (ViewOutcome::NoSliceExpected, reasons);
    };
    let mut shows_slice = 0;
    let mut shows_more = 0;
    let mut reasons = Vec::new();
    for (name, value) in &sources {
        let word = if value.abs_diff(slice) <= TOLERANCE {
            shows_slice += 1;
            "= the slice"
        } else if *value > slice {
            shows_more += 1;
            "> the slice (full card)"
        } else {
            "< the slice"
        };
        reasons.push(format!(
            "{name}: {:.0} MiB {word} of {:.0} MiB",
            mib(*value),
            mib(slice)
        ));
    }
    reasons.extend(notes);
    let outcome = if shows_slice == sources.len() {
        ViewOutcome::ShowsSlice
    } else if shows_more == sources.len() {
        ViewOutcome::ShowsFullCard
    } else {
        ViewOutcome::Mixed
    };
    (outcome, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::MemInfo;

    fn device(
        slice: Option<u64>,
        nvml: u64,
        cuda_total: u64,
        meminfo: u64,
        smi: Option<u64>,
    ) -> ViewDevice {
        ViewDevice {
            index: 0,
            name: Some("NVIDIA H100 80GB HBM3".into()),
            uuid: None,
            nvml: Some(MemInfo {
                total: nvml,
                free: nvml,
                used: 0,
            }),
            cuda_total_mem: Some(cuda_total),
            cuda_mem_info: Some(MemInfo {
                total: meminfo,
                free: meminfo - 518 * MIB,
                used: 518 * MIB,
            }),
            nvidia_smi_total_mib: smi,
            expected_bytes: slice,
            outcome: ViewOutcome::NoData,
            reasons: vec![],
        }
    }

    #[test]
    fn hami_view_of_an_8000_slice_on_h100() {
        // The numbers observed on the H100 with HAMi-core (facts §15).
        let d = device(
            Some(8000 * MIB),
            8000 * MIB,
            8000 * MIB,
            8000 * MIB,
            Some(8000),
        );
        assert_eq!(decide(&d).0, ViewOutcome::ShowsSlice);
    }

    #[test]
    fn bare_h100_shows_the_full_card() {
        let d = device(
            Some(8000 * MIB),
            81559 * MIB,
            81079 * MIB,
            81079 * MIB,
            Some(81559),
        );
        let (outcome, reasons) = decide(&d);
        assert_eq!(outcome, ViewOutcome::ShowsFullCard);
        assert!(reasons[0].contains("81559 MiB > the slice"), "{reasons:?}");
    }

    #[test]
    fn nvml_hooked_but_cuda_not_is_mixed() {
        let d = device(Some(8000 * MIB), 8000 * MIB, 81079 * MIB, 81079 * MIB, None);
        assert_eq!(decide(&d).0, ViewOutcome::Mixed);
    }

    #[test]
    fn a_zero_total_under_hami_core_is_explained_not_compared() {
        let mut d = device(Some(8000 * MIB), 8000 * MIB, 0, 8000 * MIB, Some(8000));
        let (outcome, reasons) = decide(&d);
        assert_eq!(outcome, ViewOutcome::ShowsSlice, "{reasons:?}");
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("answers with the device's limit"))
        );
        d.expected_bytes = None;
        let (_, reasons) = decide(&d);
        assert!(
            reasons.iter().any(|r| r.contains("returned 0 MiB")),
            "{reasons:?}"
        );
    }

    /// The numbers of an MPS client with an 8000 MiB pinned limit on the H200.
    #[test]
    fn mps_view_counts_only_the_free_memory() {
        let mut d = device(
            Some(8000 * MIB),
            143_771 * MIB,
            143_162 * MIB,
            143_162 * MIB,
            Some(143_771),
        );
        d.cuda_mem_info = Some(MemInfo {
            total: 143_162 * MIB,
            free: 7_494 * MIB,
            used: 135_668 * MIB,
        });
        assert_eq!(decide_mps(&d).0, ViewOutcome::ShowsSlice);
        d.cuda_mem_info = Some(MemInfo {
            total: 143_162 * MIB,
            free: 140_000 * MIB,
            used: 3_162 * MIB,
        });
        assert_eq!(decide_mps(&d).0, ViewOutcome::ShowsFullCard);
    }

    #[test]
    fn no_slice_and_no_data() {
        let d = device(None, 81559 * MIB, 81079 * MIB, 81079 * MIB, None);
        assert_eq!(decide(&d).0, ViewOutcome::NoSliceExpected);
        let empty = ViewDevice {
            nvml: None,
            cuda_total_mem: None,
            cuda_mem_info: None,
            ..d
        };
        assert_eq!(decide(&empty).0, ViewOutcome::NoData);
    }
}
