//! Calls HAMi-core's issue tracker reports trouble with, tried one per worker child so a crash
//! names its call: `cuMemCreate` with a host (non-device) location (HAMi-core#187: the hook used
//! an uninitialised device id), and `cuMemAlloc_v2` on a thread with no current context
//! (HAMi-core#188: `cuCtxGetDevice` fails and the hooks index the shared region with stack
//! garbage).
//!
//! Neither call allocates device memory that counts against the slice, so the question is not
//! "capped or escaped" but whether the library handles the call and leaves its accounting as it
//! was: the shared region is read before, while the memory is held, and after. The decision is
//! [`decide`] (pure).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ffi::cuda::Cuda;
use crate::ffi::cuda_ext::{GRANULARITY_MINIMUM, Location, allocation_prop};
use crate::report::{CudaErrorInfo, MIB};
use crate::report_conformance::CellOutcome;
use cudarc::driver::sys;

pub const VMM_HOST: &str = "vmm-host-location";
pub const NO_CONTEXT: &str = "alloc-without-context";
/// Every probe this module knows.
pub const PROBES: &[&str] = &[VMM_HOST, NO_CONTEXT];

const INVALID_CONTEXT: i64 = sys::CUresult::CUDA_ERROR_INVALID_CONTEXT as i64;
const PROBE_BYTES: u64 = 64 * MIB;

/// What the shared region said at one moment, for the device the probe ran on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegionSnapshot {
    pub limits: Vec<u64>,
    /// What the container is charged per device (Σ of every slot).
    pub charged: Vec<u64>,
    pub error: Option<String>,
}

impl RegionSnapshot {
    pub fn read(path: &str) -> Self {
        match crate::region::read_region(Path::new(path)) {
            Ok(r) => Self {
                limits: r.limits,
                charged: r.charged_bytes,
                error: None,
            },
            Err(e) => Self {
                error: Some(e.to_string()),
                ..Self::default()
            },
        }
    }
}

/// What one probe did, before the decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RobustnessRun {
    pub probe: String,
    /// Why the call could not be tried here (the driver lacks it or refuses it outright).
    pub not_tried: Option<String>,
    /// The call's result.
    pub result: Option<CudaErrorInfo>,
    pub detail: String,
    pub before: RegionSnapshot,
    /// While the memory was held (VMM probe) or right after the call.
    pub during: RegionSnapshot,
    pub after: RegionSnapshot,
    /// A plain 2 MiB `cuMemAlloc_v2` still works afterwards.
    pub still_allocates: bool,
}

/// Runs `probe` on device `ordinal` (its primary context current on this thread).
pub fn run(cuda: &Cuda, ordinal: u32, probe: &str, region_path: &str) -> RobustnessRun {
    let mut run = RobustnessRun {
        probe: probe.to_owned(),
        not_tried: None,
        result: None,
        detail: String::new(),
        before: RegionSnapshot::read(region_path),
        during: RegionSnapshot::default(),
        after: RegionSnapshot::default(),
        still_allocates: false,
    };
    match probe {
        VMM_HOST => vmm_host(cuda, &mut run, region_path),
        NO_CONTEXT => no_context(cuda, &mut run, region_path),
        other => run.not_tried = Some(format!("unknown probe `{other}`")),
    }
    let _ = ordinal;
    run.after = RegionSnapshot::read(region_path);
    run.still_allocates = cuda
        .mem_alloc(2 * MIB)
        .and_then(|p| cuda.mem_free(p))
        .is_ok();
    run
}

fn info(cuda: &Cuda, rc: i32) -> CudaErrorInfo {
    CudaErrorInfo {
        code: i64::from(rc),
        name: if rc == 0 {
            "CUDA_SUCCESS".into()
        } else {
            cuda.error_name(i64::from(rc))
        },
    }
}

/// `cuMemCreate` with the location a host NUMA node (then plain host), then `cuMemRelease`.
fn vmm_host(cuda: &Cuda, run: &mut RobustnessRun, region_path: &str) {
    let (Some(create), Some(release)) = (cuda.ext.mem_create, cuda.ext.mem_release) else {
        run.not_tried = Some("this driver has no cuMemCreate/cuMemRelease".into());
        return;
    };
    let mut tried = Vec::new();
    // A host NUMA node (id 0: the first node, or the only one), then plain host memory.
    for (kind, label) in [
        (Location::CU_MEM_LOCATION_TYPE_HOST_NUMA, "host NUMA node 0"),
        (Location::CU_MEM_LOCATION_TYPE_HOST, "host"),
    ] {
        let props = allocation_prop(kind, 0);
        let mut granularity = 2 * MIB as usize;
        if let Some(g) = cuda.ext.mem_get_allocation_granularity {
            let mut v = 0usize;
            // SAFETY: valid out-pointer and props.
            if unsafe { g(&raw mut v, &raw const props, GRANULARITY_MINIMUM) } == 0 && v > 0 {
                granularity = v;
            }
        }
        let size = PROBE_BYTES.div_ceil(granularity as u64) * granularity as u64;
        let mut handle = 0u64;
        // SAFETY: valid out-pointer and props; flags 0.
        let rc = unsafe {
            create(
                &raw mut handle,
                usize::try_from(size).unwrap_or(usize::MAX),
                &raw const props,
                0,
            )
        };
        let result = info(cuda, rc);
        if rc != 0 {
            tried.push(format!("{label}: {} ({})", result.name, result.code));
            continue;
        }
        run.during = RegionSnapshot::read(region_path);
        // SAFETY: `handle` was just created and is released once.
        let released = unsafe { release(handle) };
        run.detail = format!(
            "cuMemCreate of {} MiB on the {label} returned {} ({}); cuMemRelease returned {released}",
            size / MIB,
            result.name,
            result.code
        );
        run.result = Some(result);
        return;
    }
    run.not_tried = Some(format!(
        "the driver refused host-located VMM memory here, so the library's hook was not exercised: {}",
        tried.join("; ")
    ));
}

/// `cuMemAlloc_v2` from a fresh thread that has no current context.
fn no_context(cuda: &Cuda, run: &mut RobustnessRun, region_path: &str) {
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            let mut ptr = 0u64;
            let r = cuda.mem_alloc_raw(PROBE_BYTES, &mut ptr);
            (r, ptr)
        })
        .join()
    });
    let Ok((rc, ptr)) = outcome else {
        run.not_tried = Some("the probe thread panicked".into());
        return;
    };
    run.during = RegionSnapshot::read(region_path);
    let result = info(cuda, rc);
    run.detail = format!(
        "cuMemAlloc_v2 of {} MiB on a thread without a current context returned {} ({}); the driver alone returns CUDA_ERROR_INVALID_CONTEXT ({INVALID_CONTEXT})",
        PROBE_BYTES / MIB,
        result.name,
        result.code
    );
    if rc == 0 && ptr != 0 {
        // It should not have succeeded; give the memory back from a thread that has the context.
        let _ = cuda.mem_free(ptr);
        run.detail
            .push_str("; it succeeded, so the memory was freed from the main thread");
    }
    run.result = Some(result);
}

/// Intact / corrupted / not applicable, with the reason (crashes and hangs are decided by the
/// caller, which saw the child die).
pub fn decide(run: &RobustnessRun, log_lines: &[String]) -> (CellOutcome, String) {
    if let Some(why) = &run.not_tried {
        return (CellOutcome::NotApplicable, why.clone());
    }
    let mut problems = Vec::new();
    if let Some(line) = log_lines.iter().find(|l| l.contains("Illegal device id")) {
        problems.push(format!("the library logged `{}`", line.trim()));
    }
    let before = &run.before;
    if before.error.is_none() {
        for (when, snap) in [("while held", &run.during), ("afterwards", &run.after)] {
            if snap.error.is_some() {
                continue;
            }
            if snap.limits != before.limits {
                problems.push(format!(
                    "the shared region's limits changed {when}: {:?} → {:?}",
                    before.limits, snap.limits
                ));
            }
            if snap.charged != before.charged {
                problems.push(format!(
                    "the device charge changed {when}: {:?} → {:?} bytes (host memory is not the slice's)",
                    before.charged, snap.charged
                ));
            }
        }
    }
    if !run.still_allocates {
        problems.push("a plain cuMemAlloc_v2 of 2 MiB failed afterwards".into());
    }
    if problems.is_empty() {
        let region = if before.error.is_some() {
            " (the shared region could not be read, so only the call and the later allocation were checked)"
        } else {
            "; the shared region's limits and charges did not move"
        };
        (
            CellOutcome::Intact,
            format!("{}{region}; a later allocation still works", run.detail),
        )
    } else {
        (
            CellOutcome::Corrupted,
            format!("{}; {}", run.detail, problems.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(charged_during: u64) -> RobustnessRun {
        let snap = |c| RegionSnapshot {
            limits: vec![8000 * MIB],
            charged: vec![c],
            error: None,
        };
        RobustnessRun {
            probe: VMM_HOST.into(),
            not_tried: None,
            result: Some(CudaErrorInfo {
                code: 0,
                name: "CUDA_SUCCESS".into(),
            }),
            detail: "cuMemCreate of 64 MiB on the host NUMA node 0 returned CUDA_SUCCESS (0)"
                .into(),
            before: snap(518 * MIB),
            during: snap(charged_during),
            after: snap(518 * MIB),
            still_allocates: true,
        }
    }

    #[test]
    fn host_memory_left_out_of_the_device_charge_is_intact() {
        let (o, why) = decide(&run(518 * MIB), &[]);
        assert_eq!(o, CellOutcome::Intact, "{why}");
    }

    #[test]
    fn a_moved_charge_or_an_illegal_device_line_is_corrupted() {
        let (o, why) = decide(&run(582 * MIB), &[]);
        assert_eq!(o, CellOutcome::Corrupted);
        assert!(why.contains("device charge changed while held"), "{why}");
        let line = "[HAMI-core ERROR (pid:1 thread=2 multiprocess_memory_limit.c:1271)]: Illegal device id: -644371744".to_owned();
        let (o, why) = decide(&run(518 * MIB), &[line]);
        assert_eq!(o, CellOutcome::Corrupted);
        assert!(why.contains("Illegal device id"), "{why}");
    }

    #[test]
    fn a_refusing_driver_is_not_applicable() {
        let mut r = run(0);
        r.not_tried = Some("the driver refused".into());
        assert_eq!(decide(&r, &[]).0, CellOutcome::NotApplicable);
    }
}
