//! `gpu-probe audit`: where can a tenant still escape the slice? Each allocation path tries to hold
//! up to the target (slice × 1.25) and is reported capped / escaped / not applicable, with the bytes
//! obtained past the slice and the return code (facts §8 lists which paths HAMi-core caps).
//!
//! The in-process paths run in the worker (CUDA never runs in the parent); two processes sharing
//! one slice are orchestrated by the parent in `probe`. The ways around HAMi-core (a cleared
//! environment, the region tamper, …) are the audit's bypass group, in `bypass`. Decisions are
//! pure ([`decide`]).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cap::{self, DeviceMemory, SearchParams};
use crate::ffi::cuda::Cuda;
use crate::ffi::cuda_ext::{
    ATTACH_GLOBAL, ArrayDescriptor, CuArray, CuPool, CuStream, GRANULARITY_MINIMUM,
    allocation_prop_on_device, pool_props_on_device,
};
use crate::report::{AuditGroup, AuditOutcome, AuditPath, CudaErrorInfo, MIB, MemInfo, mib};
use cudarc::driver::sys;

const NOT_SUPPORTED: i64 = sys::CUresult::CUDA_ERROR_NOT_SUPPORTED as i64;
/// Highest CUDA result code in use (CUDA_ERROR_UNKNOWN); anything outside 0..=this (like -1) is
/// not a CUDA error.
const MAX_CUDA_RESULT: i64 = sys::CUresult::CUDA_ERROR_UNKNOWN as i64;

/// What one path did, before the decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PathRun {
    pub path: String,
    /// Why it was not tried, when it was not.
    pub not_applicable: Option<String>,
    pub held_bytes: u64,
    pub first_refusal: Option<CudaErrorInfo>,
    pub calls: u32,
    pub all_freed: bool,
}

impl PathRun {
    /// A path that was not tried, and why.
    pub fn not_tried(path: &str, why: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            not_applicable: Some(why.into()),
            held_bytes: 0,
            first_refusal: None,
            calls: 0,
            all_freed: true,
        }
    }
}

/// Audit check ids (`audit.cuMemAlloc_v2`) are built and matched in lab-report, with the other
/// check ids.
pub use lab_report::check::{audit_check_id as check_id, audit_path_matches as path_matches_check};

/// Capped / escaped / not applicable, from what a path did.
pub fn decide(run: &PathRun, slice: Option<u64>) -> AuditPath {
    let refusal = run.first_refusal.clone();
    let nonstandard_code = refusal
        .as_ref()
        .is_some_and(|r| !(0..=MAX_CUDA_RESULT).contains(&r.code));
    let mut path = AuditPath {
        path: run.path.clone(),
        outcome: AuditOutcome::NotApplicable,
        held_bytes: run.held_bytes,
        past_slice_bytes: 0,
        refusal,
        nonstandard_code,
        calls: run.calls,
        note: String::new(),
        group: AuditGroup::Allocation,
        bypass: None,
    };
    if let Some(why) = &run.not_applicable {
        path.note = why.clone();
        return path;
    }
    if run.calls == 1
        && run.held_bytes == 0
        && path
            .refusal
            .as_ref()
            .is_some_and(|r| r.code == NOT_SUPPORTED)
    {
        path.note = "the driver does not support this path here (CUDA_ERROR_NOT_SUPPORTED)".into();
        return path;
    }
    let refused = path.refusal.as_ref().map(|r| {
        format!(
            "refused with {} ({}){}",
            r.name,
            r.code,
            if nonstandard_code {
                ", not a CUDA result code"
            } else {
                ""
            }
        )
    });
    match slice {
        None => {
            path.outcome = AuditOutcome::NoSlice;
            path.note = format!("no slice configured; held {:.0} MiB", mib(run.held_bytes));
        }
        Some(slice) if run.held_bytes > slice => {
            path.outcome = AuditOutcome::Escaped;
            path.past_slice_bytes = run.held_bytes - slice;
            path.note = format!(
                "held {:.0} MiB, {:.0} MiB past the {:.0} MiB slice{}",
                mib(run.held_bytes),
                mib(path.past_slice_bytes),
                mib(slice),
                refused.map(|r| format!("; then {r}")).unwrap_or_default()
            );
        }
        Some(slice) => match refused {
            Some(r) => {
                path.outcome = AuditOutcome::Capped;
                path.note = format!(
                    "held {:.0} MiB of the {:.0} MiB slice, then {r}",
                    mib(run.held_bytes),
                    mib(slice)
                );
            }
            None => {
                path.outcome = AuditOutcome::Error;
                path.note =
                    "stopped without a refusal and without passing the slice (time bound?)".into();
            }
        },
    }
    if !run.all_freed {
        path.note
            .push_str("; some memory could not be freed (released at the worker's exit)");
    }
    path
}

/// The in-process paths, run by the worker on device `ordinal` with its primary context current.
pub fn run_paths(
    cuda: &Cuda,
    ordinal: u32,
    target: u64,
    nvml_physical: Option<MemInfo>,
    bound: Duration,
    task: &lab_runner::progress::Task,
    later_paths: u64,
) -> Vec<PathRun> {
    let started = Instant::now();
    let params = |left: Duration| SearchParams {
        ceiling: target,
        resolution: 64 * MIB,
        initial_step: 1024 * MIB,
        time_bound: left,
        any_error_is_refusal: true,
    };
    let ext = cuda.ext;
    let mut runs = Vec::new();
    let mut stream: CuStream = std::ptr::null_mut();
    let have_stream = ext.stream_create.is_some_and(|f| {
        // SAFETY: valid out-pointer; flags 0.
        unsafe { f(&raw mut stream, 0) == 0 }
    });
    let device = i32::try_from(ordinal).unwrap_or(0);
    let mut paths: Vec<(&str, Box<dyn DeviceMemory + '_>)> = Vec::new();
    paths.push(("cuMemAlloc_v2", Box::new(Plain(cuda))));
    paths.push(("cuMemAllocPitch_v2", Box::new(Pitch(cuda))));
    let managed_ok = nvml_physical.is_some_and(|m| m.free > target.saturating_mul(2));
    paths.push(("cuMemAllocManaged", Box::new(Managed(cuda))));
    paths.push(("cuMemAllocAsync", Box::new(Async { cuda, stream })));
    let mut pool: CuPool = std::ptr::null_mut();
    let have_pool = ext.mem_pool_create.is_some_and(|f| {
        let props = pool_props_on_device(device);
        // SAFETY: valid out-pointer and pool properties.
        unsafe { f(&raw mut pool, &raw const props) == 0 }
    });
    paths.push((
        "cuMemAllocFromPoolAsync (explicit pool)",
        Box::new(FromPool { cuda, stream, pool }),
    ));
    paths.push((
        "cuMemCreate (VMM, device location)",
        Box::new(Vmm::new(cuda, device)),
    ));
    paths.push(("cuArrayCreate_v2", Box::new(Array(cuda))));

    task.set_len(paths.len() as u64 + later_paths);
    for (name, mut mem) in paths {
        let missing = match name {
            "cuMemAllocPitch_v2" => ext.mem_alloc_pitch.is_none(),
            "cuMemAllocManaged" => ext.mem_alloc_managed.is_none(),
            "cuMemAllocAsync" => ext.mem_alloc_async.is_none() || !have_stream,
            "cuMemAllocFromPoolAsync (explicit pool)" => {
                ext.mem_alloc_from_pool_async.is_none() || !have_stream || !have_pool
            }
            "cuMemCreate (VMM, device location)" => {
                ext.mem_create.is_none() || ext.mem_get_allocation_granularity.is_none()
            }
            "cuArrayCreate_v2" => ext.array_create.is_none(),
            _ => false,
        };
        let left = bound.saturating_sub(started.elapsed());
        let not_applicable = if missing {
            Some("this driver does not provide the entry point (or its stream/pool could not be created)".to_owned())
        } else if name == "cuMemAllocManaged" && !managed_ok {
            Some("not tried: the card's physical free memory is unknown (NVML virtualized) or not comfortably above the request; managed memory is never asked beyond that".to_owned())
        } else if left.is_zero() {
            Some("not tried: the audit's time bound ran out".to_owned())
        } else {
            None
        };
        if let Some(why) = not_applicable {
            task.inc(&format!("{name}: not applicable"));
            runs.push(PathRun::not_tried(name, why));
            continue;
        }
        let result = cap::search(mem.as_mut(), params(left), |_| {});
        let all_freed = cap::free_all(mem.as_mut(), &result.handles);
        task.inc(&format!("{name}: held {} MiB", result.held / MIB));
        runs.push(PathRun {
            path: name.into(),
            not_applicable: None,
            held_bytes: result.held,
            first_refusal: result.first_refusal.or(result.unexpected),
            calls: u32::try_from(result.steps.len()).unwrap_or(u32::MAX),
            all_freed,
        });
    }
    if have_pool && let Some(f) = ext.mem_pool_destroy {
        // SAFETY: the pool was created above and all its allocations were freed.
        unsafe { f(pool) };
    }
    if have_stream && let Some(f) = ext.stream_destroy {
        // SAFETY: the stream was created above.
        unsafe { f(stream) };
    }
    runs
}

fn err(cuda: &Cuda, rc: i32) -> (i64, String) {
    (i64::from(rc), cuda.error_name(i64::from(rc)))
}

fn missing() -> (i64, String) {
    (-2, "entry point missing".into())
}

struct Plain<'a>(&'a Cuda);
impl DeviceMemory for Plain<'_> {
    fn alloc(&mut self, bytes: u64) -> Result<u64, (i64, String)> {
        self.0.mem_alloc(bytes).map_err(|e| (e.code, e.name))
    }
    fn free(&mut self, h: u64) -> Result<(), (i64, String)> {
        self.0.mem_free(h).map_err(|e| (e.code, e.name))
    }
}

struct Pitch<'a>(&'a Cuda);
impl DeviceMemory for Pitch<'_> {
    fn alloc(&mut self, bytes: u64) -> Result<u64, (i64, String)> {
        let f = self.0.ext.mem_alloc_pitch.ok_or_else(missing)?;
        let (mut ptr, mut pitch) = (0u64, 0usize);
        let rows = usize::try_from(bytes / MIB).unwrap_or(usize::MAX).max(1);
        // SAFETY: out-pointers valid; 1 MiB rows of 4-byte elements.
        let rc = unsafe { f(&raw mut ptr, &raw mut pitch, MIB as usize, rows, 4) };
        if rc == 0 {
            Ok(ptr)
        } else {
            Err(err(self.0, rc))
        }
    }
    fn free(&mut self, h: u64) -> Result<(), (i64, String)> {
        self.0.mem_free(h).map_err(|e| (e.code, e.name))
    }
}

struct Managed<'a>(&'a Cuda);
impl DeviceMemory for Managed<'_> {
    fn alloc(&mut self, bytes: u64) -> Result<u64, (i64, String)> {
        let f = self.0.ext.mem_alloc_managed.ok_or_else(missing)?;
        let mut ptr = 0u64;
        // SAFETY: valid out-pointer. Only tried when the card's physical free memory is well
        // above the whole target.
        let rc = unsafe {
            f(
                &raw mut ptr,
                usize::try_from(bytes).unwrap_or(usize::MAX),
                ATTACH_GLOBAL,
            )
        };
        if rc == 0 {
            Ok(ptr)
        } else {
            Err(err(self.0, rc))
        }
    }
    fn free(&mut self, h: u64) -> Result<(), (i64, String)> {
        self.0.mem_free(h).map_err(|e| (e.code, e.name))
    }
}

struct Async<'a> {
    cuda: &'a Cuda,
    stream: CuStream,
}
impl Async<'_> {
    fn sync(&self) -> Result<(), (i64, String)> {
        let f = self.cuda.ext.stream_synchronize.ok_or_else(missing)?;
        // SAFETY: the stream is valid for the audit's duration.
        let rc = unsafe { f(self.stream) };
        if rc == 0 {
            Ok(())
        } else {
            Err(err(self.cuda, rc))
        }
    }
}
impl DeviceMemory for Async<'_> {
    fn alloc(&mut self, bytes: u64) -> Result<u64, (i64, String)> {
        let f = self.cuda.ext.mem_alloc_async.ok_or_else(missing)?;
        let mut ptr = 0u64;
        // SAFETY: valid out-pointer and stream.
        let rc = unsafe {
            f(
                &raw mut ptr,
                usize::try_from(bytes).unwrap_or(usize::MAX),
                self.stream,
            )
        };
        if rc != 0 {
            return Err(err(self.cuda, rc));
        }
        self.sync().map(|()| ptr)
    }
    fn free(&mut self, h: u64) -> Result<(), (i64, String)> {
        let f = self.cuda.ext.mem_free_async.ok_or_else(missing)?;
        // SAFETY: `h` came from cuMemAllocAsync on this stream.
        let rc = unsafe { f(h, self.stream) };
        if rc != 0 {
            return Err(err(self.cuda, rc));
        }
        self.sync()
    }
}

struct FromPool<'a> {
    cuda: &'a Cuda,
    stream: CuStream,
    pool: CuPool,
}
impl DeviceMemory for FromPool<'_> {
    fn alloc(&mut self, bytes: u64) -> Result<u64, (i64, String)> {
        let f = self
            .cuda
            .ext
            .mem_alloc_from_pool_async
            .ok_or_else(missing)?;
        let mut ptr = 0u64;
        // SAFETY: valid out-pointer, pool and stream.
        let rc = unsafe {
            f(
                &raw mut ptr,
                usize::try_from(bytes).unwrap_or(usize::MAX),
                self.pool,
                self.stream,
            )
        };
        if rc != 0 {
            return Err(err(self.cuda, rc));
        }
        Async {
            cuda: self.cuda,
            stream: self.stream,
        }
        .sync()
        .map(|()| ptr)
    }
    fn free(&mut self, h: u64) -> Result<(), (i64, String)> {
        Async {
            cuda: self.cuda,
            stream: self.stream,
        }
        .free(h)
    }
}

struct Vmm<'a> {
    cuda: &'a Cuda,
    props: sys::CUmemAllocationProp,
    granularity: u64,
}
impl<'a> Vmm<'a> {
    fn new(cuda: &'a Cuda, device: i32) -> Self {
        let props = allocation_prop_on_device(device);
        let mut granularity = 2 * MIB as usize;
        if let Some(f) = cuda.ext.mem_get_allocation_granularity {
            let mut g = 0usize;
            // SAFETY: valid out-pointer and props.
            if unsafe { f(&raw mut g, &raw const props, GRANULARITY_MINIMUM) } == 0 && g > 0 {
                granularity = g;
            }
        }
        Self {
            cuda,
            props,
            granularity: granularity as u64,
        }
    }
}
impl DeviceMemory for Vmm<'_> {
    fn alloc(&mut self, bytes: u64) -> Result<u64, (i64, String)> {
        let f = self.cuda.ext.mem_create.ok_or_else(missing)?;
        let size = bytes.div_ceil(self.granularity) * self.granularity;
        let mut handle = 0u64;
        // SAFETY: valid out-pointer and props; flags 0.
        let rc = unsafe {
            f(
                &raw mut handle,
                usize::try_from(size).unwrap_or(usize::MAX),
                &raw const self.props,
                0,
            )
        };
        if rc == 0 {
            Ok(handle)
        } else {
            Err(err(self.cuda, rc))
        }
    }
    fn free(&mut self, h: u64) -> Result<(), (i64, String)> {
        let f = self.cuda.ext.mem_release.ok_or_else(missing)?;
        // SAFETY: `h` came from cuMemCreate.
        let rc = unsafe { f(h) };
        if rc == 0 {
            Ok(())
        } else {
            Err(err(self.cuda, rc))
        }
    }
}

/// 2D float4 arrays, 16384 texels wide: 256 KiB a row.
struct Array<'a>(&'a Cuda);
const ARRAY_ROW: u64 = 16384 * 16;
impl DeviceMemory for Array<'_> {
    fn alloc(&mut self, bytes: u64) -> Result<u64, (i64, String)> {
        let f = self.0.ext.array_create.ok_or_else(missing)?;
        let desc = ArrayDescriptor {
            Width: 16384,
            Height: usize::try_from((bytes / ARRAY_ROW).max(1)).unwrap_or(usize::MAX),
            Format: sys::CUarray_format::CU_AD_FORMAT_FLOAT,
            NumChannels: 4,
        };
        let mut array: CuArray = std::ptr::null_mut();
        // SAFETY: valid out-pointer and descriptor.
        let rc = unsafe { f(&raw mut array, &raw const desc) };
        if rc == 0 {
            Ok(array as u64)
        } else {
            Err(err(self.0, rc))
        }
    }
    fn free(&mut self, h: u64) -> Result<(), (i64, String)> {
        let f = self.0.ext.array_destroy.ok_or_else(missing)?;
        // SAFETY: `h` is an array created above.
        let rc = unsafe { f(h as CuArray) };
        if rc == 0 {
            Ok(())
        } else {
            Err(err(self.0, rc))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(held: u64, refusal: Option<(i64, &str)>, calls: u32) -> PathRun {
        PathRun {
            path: "cuMemAllocAsync".into(),
            not_applicable: None,
            held_bytes: held,
            first_refusal: refusal.map(|(code, name)| CudaErrorInfo {
                code,
                name: name.into(),
            }),
            calls,
            all_freed: true,
        }
    }

    #[test]
    fn check_ids_and_their_matching() {
        assert_eq!(check_id("cuMemAlloc_v2"), "audit.cuMemAlloc_v2");
        assert_eq!(
            check_id("child with a cleared environment (cuMemAlloc_v2)"),
            "audit.child-with-a-cleared-environment"
        );
        assert!(path_matches_check(
            "cuMemAllocFromPoolAsync (explicit pool)",
            "audit.cuMemAllocFromPoolAsync"
        ));
        assert!(path_matches_check(
            "second process of the same container (cuMemAlloc_v2)",
            "audit.second"
        ));
        assert!(!path_matches_check(
            "cuMemAlloc_v2",
            "audit.cuMemAllocPitch_v2"
        ));
    }

    #[test]
    fn escaped_reports_the_bytes_past_the_slice() {
        let p = decide(&run(10_000 * MIB, None, 10), Some(8000 * MIB));
        assert_eq!(p.outcome, AuditOutcome::Escaped);
        assert_eq!(p.past_slice_bytes, 2000 * MIB);
    }

    #[test]
    fn capped_with_hami_cores_minus_one_is_flagged_nonstandard() {
        // HAMi-core's cuMemAllocAsync returns -1 on OOM (facts §8, §15).
        let p = decide(
            &run(7000 * MIB, Some((-1, "unknown CUDA result -1")), 12),
            Some(8000 * MIB),
        );
        assert_eq!(p.outcome, AuditOutcome::Capped);
        assert!(p.nonstandard_code);
        assert!(p.note.contains("not a CUDA result code"), "{}", p.note);
        let p = decide(
            &run(7000 * MIB, Some((2, "CUDA_ERROR_OUT_OF_MEMORY")), 12),
            Some(8000 * MIB),
        );
        assert!(!p.nonstandard_code);
    }

    #[test]
    fn no_slice_unsupported_and_skipped_paths() {
        assert_eq!(
            decide(&run(10_000 * MIB, None, 10), None).outcome,
            AuditOutcome::NoSlice
        );
        let unsupported = decide(
            &run(0, Some((801, "CUDA_ERROR_NOT_SUPPORTED")), 1),
            Some(8000 * MIB),
        );
        assert_eq!(unsupported.outcome, AuditOutcome::NotApplicable);
        let mut skipped = run(0, None, 0);
        skipped.not_applicable = Some("not safe".into());
        assert_eq!(
            decide(&skipped, Some(1)).outcome,
            AuditOutcome::NotApplicable
        );
        assert_eq!(
            decide(&run(100, None, 3), Some(8000 * MIB)).outcome,
            AuditOutcome::Error
        );
    }
}
