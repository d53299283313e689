//! The worker: the part of the probe that initialises CUDA, run as a child process of gpu-probe.
//!
//! Why a child: HAMi-core writes its OOM lines to the process's own stderr, which the parent can
//! only capture from a child; the child's exit releases every context and allocation even if
//! something goes wrong; and the parent never holds a CUDA context that HAMi-core would charge
//! to the slice while the search runs. The worker prints one JSON document between markers on
//! stdout (anything else a preloaded library prints is kept apart).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use lab_runner::progress::Progress;

use crate::cap::{self, DeviceMemory, SearchParams, SearchResult};
use crate::ffi::cuda::Cuda;
use crate::ffi::nvml::Nvml;
use crate::ffi::symbols;
use crate::maps;
use crate::region;
use crate::report::{MIB, MemInfo, SymbolCheck};

pub const BEGIN: &str = "--- gpu-probe worker report begin ---";
pub const END: &str = "--- gpu-probe worker report end ---";

/// What the parent asks the worker to do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerSpec {
    /// Expected slice per CUDA ordinal (bytes), `None` where none is expected.
    pub expected: Vec<Option<u64>>,
    pub run_cap: bool,
    pub ceiling_bytes: Option<u64>,
    pub resolution_bytes: u64,
    pub initial_step_bytes: u64,
    pub time_bound_ms: u64,
    /// Libraries to look for in the maps and check for hooks.
    pub libraries: Vec<String>,
    pub region_path: String,
    /// `audit`: try every in-process allocation path on one device.
    #[serde(default)]
    pub audit: Option<AuditSpec>,
    /// `overhead`: latencies and bandwidth on device 0.
    #[serde(default)]
    pub overhead: bool,
    /// `compute`: the busy kernel on device 0 for this long.
    #[serde(default)]
    pub compute: Option<ComputeSpec>,
    /// The cap search's ceiling on a device without an expected slice (default: the device's
    /// memory). Keeps the search from taking a whole unlimited card beside limited ones.
    #[serde(default)]
    pub unlimited_ceiling_bytes: Option<u64>,
    /// `conformance`: one call the tracker reports trouble with ([`crate::robustness::PROBES`]).
    #[serde(default)]
    pub robustness: Option<String>,
    /// The worker ends itself (SIGALRM) after this many seconds: a worker stuck inside the
    /// library (a semaphore, a lock) must not outlive a parent that was killed.
    #[serde(default)]
    pub alarm_secs: Option<u64>,
}

/// Ends this process after `secs` seconds, whatever it is doing (the default action of
/// SIGALRM); the backstop for children that outlive their parent's bound.
pub fn end_after(secs: u64) {
    let secs = u32::try_from(secs).unwrap_or(u32::MAX);
    // SAFETY: alarm(2) only schedules a signal; no memory is touched.
    unsafe {
        libc::alarm(secs);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditSpec {
    pub device: u32,
    pub slice_bytes: Option<u64>,
    pub target_bytes: u64,
    pub time_bound_ms: u64,
    /// The card's physical free memory, when the caller knows it and NVML here is virtualized
    /// (lets the managed-memory path be tried safely).
    #[serde(default)]
    pub physical_free_bytes: Option<u64>,
    /// Paths the parent runs after the worker (counted in the audit's progress).
    #[serde(default)]
    pub later_paths: u64,
    /// Skip the in-process paths (`audit --rows bypass`).
    #[serde(default)]
    pub skip_paths: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComputeSpec {
    pub seconds: f64,
    /// Whether an interception library is injected at all (else nothing can throttle).
    #[serde(default)]
    pub hami_injected: bool,
    pub sm_limit: Option<u64>,
    pub policy: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct WorkerOutput {
    pub cuda_driver_version: Option<i32>,
    /// Why CUDA could not be used at all.
    pub error: Option<String>,
    /// Seconds from loading libcuda to the last primary context being current.
    pub init_seconds: f64,
    pub devices: Vec<WorkerDevice>,
    pub caps: Vec<WorkerCap>,
    /// The libraries and region file (from the spec) that are mapped after CUDA init.
    pub mapped: Vec<String>,
    pub symbols: BTreeMap<String, Result<Vec<SymbolCheck>, String>>,
    #[serde(default)]
    pub audit_runs: Vec<crate::audit::PathRun>,
    #[serde(default)]
    pub overhead: Option<crate::report::OverheadSection>,
    #[serde(default)]
    pub compute: Option<Result<crate::report::ComputeSection, String>>,
    /// The worker's own pid (HAMi-core's region slots name processes by it).
    #[serde(default)]
    pub pid: u32,
    /// NVML's process lists per device, taken while the worker's contexts exist.
    #[serde(default)]
    pub processes: Vec<DeviceProcesses>,
    #[serde(default)]
    pub robustness: Option<crate::robustness::RobustnessRun>,
}

/// Which processes NVML lists on one device (compute contexts, and CUDA MPS clients).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceProcesses {
    pub ordinal: u32,
    pub compute_pids: Result<Vec<u32>, String>,
    pub mps_pids: Result<Vec<u32>, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct WorkerDevice {
    pub ordinal: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub total_mem: Option<u64>,
    pub mem_info: Option<MemInfo>,
    pub errors: Vec<String>,
    /// Its primary context was created and made current.
    #[serde(default)]
    pub context: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerCap {
    pub device: u32,
    pub ceiling_bytes: u64,
    pub ceiling_source: String,
    pub resolution_bytes: u64,
    pub start_mem_info: Option<MemInfo>,
    pub end_mem_info: Option<MemInfo>,
    pub held: u64,
    pub steps: Vec<crate::report::CapStep>,
    pub stopped_because: crate::report::StopReason,
    pub first_refusal: Option<crate::report::CudaErrorInfo>,
    pub unexpected: Option<crate::report::CudaErrorInfo>,
    pub all_freed: bool,
    pub region_charged_at_peak: Option<u64>,
    pub nvml_at_first_refusal: Option<MemInfo>,
    pub search_seconds: f64,
    /// Other processes in the shared region holding memory on this device when the search began.
    #[serde(default)]
    pub siblings_at_start: Vec<crate::report_conformance::SiblingUsage>,
}

impl WorkerCap {
    /// The search result in the form [`cap::decide`] takes.
    pub fn search_result(&self) -> SearchResult {
        SearchResult {
            held: self.held,
            steps: self.steps.clone(),
            stopped_because: self.stopped_because,
            first_refusal: self.first_refusal.clone(),
            unexpected: self.unexpected.clone(),
            handles: Vec::new(),
        }
    }
}

/// `cuMemAlloc_v2` / `cuMemFree_v2` as the search's device memory.
struct CudaMemory<'a>(&'a Cuda);

impl DeviceMemory for CudaMemory<'_> {
    fn alloc(&mut self, bytes: u64) -> Result<u64, (i64, String)> {
        self.0.mem_alloc(bytes).map_err(|e| (e.code, e.name))
    }
    fn free(&mut self, handle: u64) -> Result<(), (i64, String)> {
        self.0.mem_free(handle).map_err(|e| (e.code, e.name))
    }
}

/// The ceiling for one device: `--ceiling-mib`, else slice × 1.25, else the device's memory.
/// The ceiling when one follows from the options: `--ceiling-mib`, else slice × 1.25 (a search
/// that reaches it has shown the slice is not enforced, without taking the card from neighbours).
pub fn slice_ceiling(explicit: Option<u64>, expected: Option<u64>) -> Option<(u64, String)> {
    explicit
        .map(|c| (c, "--ceiling-mib".to_owned()))
        .or(expected.map(|slice| (slice + slice / 4, "slice × 1.25".to_owned())))
}

pub fn ceiling_for(
    explicit: Option<u64>,
    expected: Option<u64>,
    device: &WorkerDevice,
) -> (u64, String) {
    if let Some(known) = slice_ceiling(explicit, expected) {
        return known;
    }
    // Under HAMi-core without a limit cuDeviceTotalMem_v2 returns 0; cuMemGetInfo still knows.
    let card = device
        .total_mem
        .filter(|&t| t > 0)
        .or(device.mem_info.map(|m| m.total))
        .unwrap_or(0);
    (card, "the device's memory (no slice known)".into())
}

/// Runs the worker and returns its output (never panics on driver errors: they are reported).
/// The cap search's steps and the audit's paths are events of `progress` (the parent shows them).
pub fn run(spec: &WorkerSpec, progress: &Progress) -> WorkerOutput {
    if let Some(secs) = spec.alarm_secs {
        end_after(secs);
    }
    let started = Instant::now();
    let mut out = WorkerOutput::default();
    let cuda = match Cuda::load() {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    if let Err(e) = cuda.init() {
        out.error = Some(format!(
            "{e}: the driver is present but CUDA cannot start (no GPU visible to this container? \
             check NVIDIA_VISIBLE_DEVICES and that the pod requested nvidia.com/gpu)"
        ));
        return out;
    }
    out.cuda_driver_version = cuda.driver_version().ok();
    let count = match cuda.device_count() {
        Ok(n) => n,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    for ordinal in 0..count {
        out.devices.push(open_device(&cuda, ordinal));
    }
    out.init_seconds = started.elapsed().as_secs_f64();
    out.pid = std::process::id();
    out.processes = device_processes(&out.devices);

    let mapped = std::fs::read_to_string("/proc/self/maps")
        .map(|m| maps::mapped_paths(&m))
        .unwrap_or_default();
    out.mapped = spec
        .libraries
        .iter()
        .chain(std::iter::once(&spec.region_path))
        .filter(|p| maps::is_mapped(&mapped, p))
        .cloned()
        .collect();
    for lib in &spec.libraries {
        if Path::new(lib).exists() {
            out.symbols.insert(
                lib.clone(),
                symbols::check_library(lib, symbols::HOOK_SYMBOLS),
            );
        }
    }

    if spec.run_cap {
        let nvml = Nvml::init().ok();
        for dev in &out.devices {
            if !dev.context {
                continue; // its context could not be created; the device's errors say why
            }
            let expected = spec.expected.get(dev.ordinal as usize).copied().flatten();
            out.caps.push(cap_device(
                &cuda,
                nvml.as_ref(),
                spec,
                dev,
                expected,
                progress,
            ));
        }
    }
    if let Some(a) = spec.audit.as_ref().filter(|a| !a.skip_paths)
        && let Some(dev) = out
            .devices
            .iter()
            .find(|d| d.ordinal == a.device && d.mem_info.is_some())
    {
        if let Ok(h) = cuda.device(dev.ordinal) {
            let _ = cuda.enter_primary_context(h);
        }
        // Physical free memory: from the caller, else NVML when it is not virtualized.
        let given = a.physical_free_bytes.map(|free| MemInfo {
            total: 0,
            free,
            used: 0,
        });
        let physical = given.or_else(|| {
            Nvml::init().ok().and_then(|n| {
                let m = n
                    .memory(n.handle_by_uuid(dev.uuid.as_deref()?).ok()?)
                    .ok()?;
                let virtualized = a.slice_bytes.is_some_and(|s| m.total.abs_diff(s) <= MIB);
                (!virtualized).then_some(m)
            })
        });
        let task = progress.task("audit", None, "paths");
        out.audit_runs = crate::audit::run_paths(
            &cuda,
            a.device,
            a.target_bytes,
            physical,
            Duration::from_millis(a.time_bound_ms),
            &task,
            a.later_paths,
        );
    }
    if spec.overhead && out.devices.first().is_some_and(|d| d.mem_info.is_some()) {
        if let Ok(h) = cuda.device(0) {
            let _ = cuda.enter_primary_context(h);
        }
        out.overhead = Some(crate::overhead::measure_overhead(&cuda, 0));
    }
    if let Some(c) = &spec.compute
        && out.devices.first().is_some_and(|d| d.mem_info.is_some())
    {
        if let Ok(h) = cuda.device(0) {
            let _ = cuda.enter_primary_context(h);
        }
        out.compute = Some(crate::overhead::measure_compute(
            &cuda,
            0,
            c.seconds,
            c.sm_limit,
            c.policy.clone(),
            c.hami_injected,
        ));
    }
    if let Some(probe) = &spec.robustness
        && out.devices.first().is_some_and(|d| d.context)
    {
        if let Ok(h) = cuda.device(0) {
            let _ = cuda.enter_primary_context(h);
        }
        out.robustness = Some(crate::robustness::run(&cuda, 0, probe, &spec.region_path));
    }
    for dev in &out.devices {
        if let Ok(d) = cuda.device(dev.ordinal) {
            let _ = cuda.release_primary_context(d);
        }
    }
    out
}

/// NVML's compute and MPS process lists for each opened device.
fn device_processes(devices: &[WorkerDevice]) -> Vec<DeviceProcesses> {
    let Ok(nvml) = Nvml::init() else {
        return Vec::new();
    };
    devices
        .iter()
        .filter_map(|d| {
            let h = nvml.handle_by_uuid(d.uuid.as_deref()?).ok()?;
            let pids = |r: Result<Vec<(u32, u64)>, crate::ffi::nvml::NvmlError>| {
                r.map(|v| v.into_iter().map(|(pid, _)| pid).collect())
                    .map_err(|e| e.to_string())
            };
            Some(DeviceProcesses {
                ordinal: d.ordinal,
                compute_pids: pids(nvml.compute_processes(h)),
                mps_pids: pids(nvml.mps_processes(h)),
            })
        })
        .collect()
}

/// `gpu-probe __hold`: holds `bytes` on `device` until `release` exists (or `timeout` passes),
/// writing how much it holds to `ready` first. The other half of "two processes share one slice".
pub fn hold(
    device: u32,
    bytes: u64,
    ready: &Path,
    release: &Path,
    timeout: Duration,
) -> Result<u64, String> {
    let cuda = Cuda::load().map_err(|e| e.to_string())?;
    cuda.init().map_err(|e| e.to_string())?;
    let d = cuda.device(device).map_err(|e| e.to_string())?;
    cuda.enter_primary_context(d).map_err(|e| e.to_string())?;
    let mut ptrs = Vec::new();
    let mut held = 0u64;
    while held < bytes {
        let chunk = (bytes - held).min(1024 * MIB);
        match cuda.mem_alloc(chunk) {
            Ok(p) => {
                ptrs.push(p);
                held += chunk;
            }
            Err(_) => break,
        }
    }
    let _ = std::fs::write(ready, held.to_string());
    let started = Instant::now();
    while !release.exists() && started.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in ptrs {
        let _ = cuda.mem_free(p);
    }
    Ok(held)
}

fn open_device(cuda: &Cuda, ordinal: u32) -> WorkerDevice {
    let mut dev = WorkerDevice {
        ordinal,
        ..WorkerDevice::default()
    };
    let handle = match cuda.device(ordinal) {
        Ok(h) => h,
        Err(e) => {
            dev.errors.push(e.to_string());
            return dev;
        }
    };
    dev.name = cuda
        .name(handle)
        .map_err(|e| dev.errors.push(e.to_string()))
        .ok();
    dev.uuid = cuda
        .uuid(handle)
        .map_err(|e| dev.errors.push(e.to_string()))
        .ok();
    dev.total_mem = cuda
        .total_mem(handle)
        .map_err(|e| dev.errors.push(e.to_string()))
        .ok();
    match cuda.enter_primary_context(handle) {
        Ok(()) => {
            dev.context = true;
            dev.mem_info = cuda
                .mem_info()
                .map_err(|e| dev.errors.push(e.to_string()))
                .ok()
        }
        Err(e) => dev.errors.push(e.to_string()),
    }
    dev
}

fn cap_device(
    cuda: &Cuda,
    nvml: Option<&Nvml>,
    spec: &WorkerSpec,
    dev: &WorkerDevice,
    expected: Option<u64>,
    progress: &Progress,
) -> WorkerCap {
    let (ceiling, ceiling_source) =
        match (expected, spec.ceiling_bytes, spec.unlimited_ceiling_bytes) {
            (None, None, Some(c)) => {
                let card = ceiling_for(None, None, dev).0;
                let c = if card > 0 { c.min(card) } else { c };
                (
                    c,
                    "no slice on this device: the largest slice here × 1.25".to_owned(),
                )
            }
            _ => ceiling_for(spec.ceiling_bytes, expected, dev),
        };
    if let Ok(h) = cuda.device(dev.ordinal) {
        let _ = cuda.enter_primary_context(h);
    }
    let start_mem_info = cuda.mem_info().ok();
    // Who else in the container already holds memory here (their usage is not our context's).
    let own_pid = i32::try_from(std::process::id()).unwrap_or(-1);
    let siblings_at_start = region::read_region(Path::new(&spec.region_path))
        .map(|r| {
            r.procs
                .iter()
                .filter(|p| p.pid != 0 && p.pid != own_pid)
                .filter_map(|p| {
                    let bytes = p.used.get(dev.ordinal as usize)?.total;
                    (bytes > 0).then_some(crate::report_conformance::SiblingUsage {
                        pid: p.pid,
                        hostpid: p.hostpid,
                        bytes,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let params = SearchParams {
        ceiling,
        resolution: spec.resolution_bytes.max(MIB / 2),
        initial_step: spec.initial_step_bytes,
        time_bound: Duration::from_millis(spec.time_bound_ms),
        any_error_is_refusal: false,
    };
    let mut memory = CudaMemory(cuda);
    let mut nvml_at_first_refusal = None;
    let task = progress.task(
        &format!("cap device {}", dev.ordinal),
        Some(ceiling / MIB),
        "MiB",
    );
    let t = Instant::now();
    let result = cap::search(
        &mut cap::Watched::new(&mut memory, &task),
        params,
        |_held| {
            nvml_at_first_refusal = nvml.and_then(|n| {
                let h = n.handle_by_uuid(dev.uuid.as_deref()?).ok()?;
                n.memory(h).ok()
            });
        },
    );
    let why = serde_json::to_value(result.stopped_because)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    task.finish_at(
        result.held / MIB,
        &format!(
            "held {} MiB in {} calls ({why})",
            result.held / MIB,
            result.steps.len()
        ),
    );
    let search_seconds = t.elapsed().as_secs_f64();
    // At the peak, what does HAMi-core's region charge the container for this device?
    let region_charged_at_peak = region::read_region(Path::new(&spec.region_path))
        .ok()
        .and_then(|r| r.charged_bytes.get(dev.ordinal as usize).copied());
    let all_freed = cap::free_all(&mut memory, &result.handles);
    let end_mem_info = cuda.mem_info().ok();
    WorkerCap {
        device: dev.ordinal,
        ceiling_bytes: ceiling,
        ceiling_source,
        resolution_bytes: params.resolution,
        start_mem_info,
        end_mem_info,
        held: result.held,
        steps: result.steps,
        stopped_because: result.stopped_because,
        first_refusal: result.first_refusal,
        unexpected: result.unexpected,
        all_freed,
        region_charged_at_peak,
        nvml_at_first_refusal,
        search_seconds,
        siblings_at_start,
    }
}

/// Serialises the output between the markers.
pub fn render(out: &WorkerOutput) -> String {
    let json =
        serde_json::to_string(out).unwrap_or_else(|e| format!("{{\"error\":\"serialise: {e}\"}}"));
    format!("{BEGIN}\n{json}\n{END}\n")
}

/// Extracts the worker's output from its stdout; lines outside the markers are returned apart.
pub fn parse(stdout: &str) -> Result<(WorkerOutput, Vec<String>), String> {
    let begin = stdout
        .find(BEGIN)
        .ok_or("the worker printed no report (it may have crashed)")?;
    let rest = &stdout[begin + BEGIN.len()..];
    let end = rest.find(END).ok_or("the worker's report is cut off")?;
    let output = serde_json::from_str(rest[..end].trim())
        .map_err(|e| format!("the worker's report is not valid: {e}"))?;
    let stray = stdout[..begin]
        .lines()
        .chain(rest[end + END.len()..].lines())
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    Ok((output, stray))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_through_markers_with_stray_lines() {
        let out = WorkerOutput {
            cuda_driver_version: Some(13000),
            init_seconds: 0.25,
            ..Default::default()
        };
        let stdout = format!("[HAMI-core Msg(1:2:x.c:3)]: hello\n{}after\n", render(&out));
        let (parsed, stray) = parse(&stdout).expect("parses");
        assert_eq!(parsed, out);
        assert_eq!(
            stray,
            vec![
                "[HAMI-core Msg(1:2:x.c:3)]: hello".to_owned(),
                "after".to_owned()
            ]
        );
    }

    #[test]
    fn crashed_or_cut_off_worker_is_an_error() {
        assert!(parse("").is_err());
        assert!(parse(&format!("{BEGIN}\n{{")).is_err());
        assert!(parse(&format!("{BEGIN}\nnot json\n{END}")).is_err());
    }

    #[test]
    fn ceilings() {
        let dev = WorkerDevice {
            total_mem: Some(0),
            mem_info: Some(MemInfo {
                total: 80 * 1024 * MIB,
                free: 0,
                used: 0,
            }),
            ..Default::default()
        };
        assert_eq!(ceiling_for(None, Some(8000 * MIB), &dev).0, 10_000 * MIB);
        assert_eq!(
            ceiling_for(Some(5 * MIB), Some(8000 * MIB), &dev).0,
            5 * MIB
        );
        assert_eq!(
            ceiling_for(None, None, &dev).0,
            80 * 1024 * MIB,
            "0 from cuDeviceTotalMem falls back to cuMemGetInfo"
        );
    }

    #[test]
    fn without_a_driver_the_worker_reports_instead_of_panicking() {
        let spec = WorkerSpec {
            expected: vec![],
            run_cap: false,
            ceiling_bytes: None,
            resolution_bytes: 2 * MIB,
            initial_step_bytes: 1024 * MIB,
            time_bound_ms: 1000,
            libraries: vec![],
            region_path: "/nonexistent".into(),
            audit: None,
            overhead: false,
            compute: None,
            unlimited_ceiling_bytes: None,
            robustness: None,
            alarm_secs: None,
        };
        let out = run(&spec, &Progress::hidden());
        if out.error.is_none() {
            assert!(
                out.cuda_driver_version.is_some(),
                "a driver is present: it must report its version"
            );
        } else {
            assert!(out.devices.is_empty());
        }
    }
}
