//! `gpu-probe overhead` and `gpu-probe compute`: what the interception costs, and whether the
//! compute limit does anything. Measured in the worker; the numbers are reported with their
//! spread, never asserted in tests (targets belong to benchmarks).

use std::ffi::c_void;
use std::time::{Duration, Instant};

use crate::ffi::cuda::Cuda;
use crate::kernels::Kernels;
use crate::report::{ComputeSection, LatencyStats, MIB, OverheadSection};

/// Percentiles of `samples` (seconds) in microseconds.
pub fn stats(what: &str, bytes: u64, samples: &mut [f64]) -> LatencyStats {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i.min(samples.len() - 1)] * 1e6
    };
    LatencyStats {
        what: what.to_owned(),
        bytes,
        samples: u32::try_from(samples.len()).unwrap_or(u32::MAX),
        p50_us: at(0.5),
        p90_us: at(0.9),
        p99_us: at(0.99),
        max_us: at(1.0),
    }
}

pub fn measure_overhead(cuda: &Cuda, device: u32) -> OverheadSection {
    let mut section = OverheadSection {
        device,
        alloc: Vec::new(),
        free: Vec::new(),
        launch: None,
        launch_sync: None,
        htod_gbps: Vec::new(),
        dtoh_gbps: Vec::new(),
        copy_bytes: 0,
        notes: Vec::new(),
    };
    for (bytes, reps) in [(MIB, 200), (64 * MIB, 100), (1024 * MIB, 20)] {
        let (mut a, mut f) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let t = Instant::now();
            let Ok(ptr) = cuda.mem_alloc(bytes) else {
                section.notes.push(format!(
                    "cuMemAlloc_v2 of {} MiB was refused; fewer samples",
                    bytes / MIB
                ));
                break;
            };
            a.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let _ = cuda.mem_free(ptr);
            f.push(t.elapsed().as_secs_f64());
        }
        section.alloc.push(stats("cuMemAlloc_v2", bytes, &mut a));
        section.free.push(stats("cuMemFree_v2", bytes, &mut f));
    }
    match Kernels::load(cuda) {
        Ok(k) => {
            let _ = k.launch_empty().and_then(|()| k.synchronize()); // warm-up
            let (mut enq, mut rt) = (Vec::new(), Vec::new());
            for _ in 0..500 {
                let t = Instant::now();
                if k.launch_empty().is_err() {
                    break;
                }
                enq.push(t.elapsed().as_secs_f64());
                let _ = k.synchronize();
            }
            for _ in 0..200 {
                let t = Instant::now();
                if k.launch_empty().and_then(|()| k.synchronize()).is_err() {
                    break;
                }
                rt.push(t.elapsed().as_secs_f64());
            }
            section.launch = Some(stats("cuLaunchKernel (empty, enqueue)", 0, &mut enq));
            section.launch_sync = Some(stats(
                "cuLaunchKernel + cuCtxSynchronize (empty)",
                0,
                &mut rt,
            ));
        }
        Err(e) => section.notes.push(format!("kernels not measured: {e}")),
    }
    copy_bandwidth(cuda, &mut section);
    section
}

fn copy_bandwidth(cuda: &Cuda, section: &mut OverheadSection) {
    let ext = cuda.ext;
    let (Some(host_alloc), Some(host_free), Some(htod), Some(dtoh)) = (
        ext.mem_alloc_host,
        ext.mem_free_host,
        ext.memcpy_htod,
        ext.memcpy_dtoh,
    ) else {
        section
            .notes
            .push("copies not measured: entry points missing".into());
        return;
    };
    let bytes = 256 * MIB;
    let mut host: *mut c_void = std::ptr::null_mut();
    // SAFETY: valid out-pointer; pinned host memory, freed below.
    if unsafe { host_alloc(&raw mut host, bytes as usize) } != 0 {
        section
            .notes
            .push("copies not measured: pinned host memory refused".into());
        return;
    }
    if let Ok(dev) = cuda.mem_alloc(bytes) {
        section.copy_bytes = bytes;
        for _ in 0..5 {
            let t = Instant::now();
            // SAFETY: both buffers are `bytes` long.
            let ok = unsafe { htod(dev, host, bytes as usize) } == 0;
            let s = t.elapsed().as_secs_f64();
            if ok {
                section.htod_gbps.push(bytes as f64 / s / 1e9);
            }
            let t = Instant::now();
            // SAFETY: both buffers are `bytes` long.
            let ok = unsafe { dtoh(host, dev, bytes as usize) } == 0;
            let s = t.elapsed().as_secs_f64();
            if ok {
                section.dtoh_gbps.push(bytes as f64 / s / 1e9);
            }
        }
        let _ = cuda.mem_free(dev);
    } else {
        section
            .notes
            .push("copies not measured: 256 MiB device buffer refused".into());
    }
    // SAFETY: allocated above with cuMemAllocHost_v2.
    unsafe { host_free(host) };
}

/// Runs the busy kernel for `seconds`, counting completed launches per window.
pub fn measure_compute(
    cuda: &Cuda,
    device: u32,
    seconds: f64,
    sm_limit: Option<u64>,
    policy: Option<String>,
    hami_injected: bool,
) -> Result<ComputeSection, String> {
    let k = Kernels::load(cuda).map_err(|e| e.to_string())?;
    let sms = sm_count(cuda, device).unwrap_or(132);
    let grid = sms * 4;
    let iters: u32 = 1 << 14;
    let window = 0.5f64;
    let mut windows = Vec::new();
    // Warm-up: clocks ramp and the limiter's token pool settles before anything is counted.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(500) {
        k.launch_busy(grid, 256, iters).map_err(|e| e.to_string())?;
        k.synchronize().map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    let mut window_start = Instant::now();
    let mut count = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        k.launch_busy(grid, 256, iters).map_err(|e| e.to_string())?;
        k.synchronize().map_err(|e| e.to_string())?;
        count += 1;
        if window_start.elapsed() >= Duration::from_secs_f64(window) {
            windows.push(count);
            count = 0;
            window_start = Instant::now();
        }
    }
    let n = windows.len().max(1) as f64;
    let mean = windows.iter().sum::<u64>() as f64 / n;
    let var = windows
        .iter()
        .map(|&w| (w as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let limited = sm_limit.is_some_and(|l| l > 0 && l < 100);
    let policy_word = policy.clone().unwrap_or_else(|| "default".into());
    let (throttling_expected, statement) = match (limited, policy_word.to_ascii_lowercase().as_str()) {
        _ if !hami_injected => (
            false,
            "no interception library is injected (no /etc/ld.so.preload, no LD_PRELOAD): nothing can throttle, whatever CUDA_DEVICE_SM_LIMIT says".to_owned(),
        ),
        (false, _) => (false, "no SM limit below 100 % is set (CUDA_DEVICE_SM_LIMIT unset, 0 or 100): no throttling is expected".to_owned()),
        (true, "disable") => (false, "GPU_CORE_UTILIZATION_POLICY=disable: HAMi-core never throttles".to_owned()),
        (true, "force") => (true, format!("GPU_CORE_UTILIZATION_POLICY=force: HAMi-core throttles to about {}% (coarse, time-averaged)", sm_limit.unwrap_or(0))),
        (true, _) => (false, format!(
            "SM limit {}% under the default policy: HAMi's monitor turns throttling on only while another pod of equal or higher priority uses the same GPU, so a lone pod is not throttled",
            sm_limit.unwrap_or(0)
        )),
    };
    Ok(ComputeSection {
        device,
        seconds,
        window_seconds: window,
        kernels_per_second_mean: mean / window,
        spread: if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
        windows,
        sm_limit_percent: sm_limit,
        policy,
        throttling_expected,
        statement,
        comparison: None,
    })
}

fn sm_count(cuda: &Cuda, device: u32) -> Option<u32> {
    let f = cuda.ext.device_get_attribute?;
    let mut n = 0;
    let attribute =
        cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
    // SAFETY: valid out-pointer; an attribute of this driver's enum.
    let rc = unsafe { f(&raw mut n, attribute, i32::try_from(device).ok()?) };
    (rc == 0 && n > 0).then(|| u32::try_from(n).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut s: Vec<f64> = (1..=100).map(|i| f64::from(i) * 1e-6).collect();
        let st = stats("x", 1, &mut s);
        assert_eq!(st.samples, 100);
        assert!((st.p50_us - 51.0).abs() < 1.01, "{}", st.p50_us);
        assert!((st.p99_us - 99.0).abs() < 1.01);
        assert!((st.max_us - 100.0).abs() < 1e-9);
        let empty = stats("x", 1, &mut []);
        assert_eq!((empty.samples, empty.max_us), (0, 0.0));
    }
}
