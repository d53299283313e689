//! The virtualized view: does every source of "how much memory does this device have" report the
//! slice, or the full card? Pure decision over the numbers the probe collected.
//!
//! Under HAMi-core: NVML total = limit, `cuDeviceTotalMem_v2` = limit, `cuMemGetInfo_v2` total =
//! min(limit, physical), and nvidia-smi (itself intercepted) prints the limit (facts §9, §15).

use crate::report::{MIB, ViewDevice, ViewOutcome, mib};

/// Within a MiB counts as equal: nvidia-smi rounds to MiB.
const TOLERANCE: u64 = MIB;

/// Decides the outcome for one device from the sources it has.
pub fn decide(device: &ViewDevice) -> (ViewOutcome, Vec<String>) {
    let mut sources: Vec<(&str, u64)> = Vec::new();
    if let Some(n) = device.nvml {
        sources.push(("NVML nvmlDeviceGetMemoryInfo total", n.total));
    }
    if let Some(t) = device.cuda_total_mem {
        sources.push(("CUDA cuDeviceTotalMem_v2", t));
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
