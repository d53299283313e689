//! The cap search and its verdict, as pure code over a [`DeviceMemory`] trait so the logic is
//! tested without a GPU (a simulated HAMi-core limit, a simulated full card, odd error codes).
//!
//! Search: hold memory in large steps; on each refusal halve the step; stop when the step falls
//! below the resolution (the boundary is then known to within it) or when the ceiling is reached.
//! The ceiling keeps a probe on an uncapped card from taking the whole card from its neighbours.

use std::time::{Duration, Instant};

use crate::report::{
    CapDevice, CapOutcome, CapStep, CudaErrorInfo, MIB, MemInfo, OomLine, StopReason, mib,
};
use crate::report_conformance::SiblingUsage;

/// Device memory as the search sees it.
pub trait DeviceMemory {
    /// Allocates `bytes`; on refusal returns the raw result code and the driver's name for it.
    fn alloc(&mut self, bytes: u64) -> Result<u64, (i64, String)>;
    /// Frees an allocation made by `alloc`.
    fn free(&mut self, handle: u64) -> Result<(), (i64, String)>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchParams {
    pub ceiling: u64,
    pub resolution: u64,
    pub initial_step: u64,
    pub time_bound: Duration,
    /// Treat any failure as a refusal (the audit's paths: HAMi-core's async path returns -1).
    pub any_error_is_refusal: bool,
}

/// A [`DeviceMemory`] whose every allocation is a progress event: the task's position is the MiB
/// held (of the search's ceiling), its message what the step asked and got.
pub struct Watched<'a> {
    pub inner: &'a mut dyn DeviceMemory,
    pub task: &'a lab_runner::progress::Task,
    held: u64,
}

impl std::fmt::Debug for Watched<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("task", self.task)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl<'a> Watched<'a> {
    pub fn new(inner: &'a mut dyn DeviceMemory, task: &'a lab_runner::progress::Task) -> Self {
        Self {
            inner,
            task,
            held: 0,
        }
    }
}

impl DeviceMemory for Watched<'_> {
    fn alloc(&mut self, bytes: u64) -> Result<u64, (i64, String)> {
        let result = self.inner.alloc(bytes);
        match &result {
            Ok(_) => {
                self.held += bytes;
                self.task
                    .update(self.held / MIB, &format!("+{} MiB held", mib(bytes)));
            }
            Err((code, name)) => self.task.update(
                self.held / MIB,
                &format!("{} MiB refused: {name} ({code})", mib(bytes)),
            ),
        }
        result
    }
    fn free(&mut self, handle: u64) -> Result<(), (i64, String)> {
        self.inner.free(handle)
    }
}

/// Codes that mean "no memory for you": CUDA_ERROR_OUT_OF_MEMORY, and HAMi-core's -1 on some paths.
pub fn is_refusal(code: i64) -> bool {
    code == crate::ffi::cuda::CUDA_ERROR_OUT_OF_MEMORY
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchResult {
    pub held: u64,
    pub steps: Vec<CapStep>,
    pub stopped_because: StopReason,
    pub first_refusal: Option<CudaErrorInfo>,
    /// The error that stopped the search, when it was not a refusal.
    pub unexpected: Option<CudaErrorInfo>,
    /// Allocations still held, in order; the caller frees them with [`free_all`] after any
    /// measurement it wants to make at the peak.
    pub handles: Vec<u64>,
}

/// Runs the search. `on_first_refusal` is called once, at the first refusal, while the memory is
/// still held (the worker samples NVML there).
pub fn search(
    mem: &mut dyn DeviceMemory,
    params: SearchParams,
    mut on_first_refusal: impl FnMut(u64),
) -> SearchResult {
    let start = Instant::now();
    let resolution = params.resolution.max(1);
    let mut step = params
        .initial_step
        .max(resolution)
        .min(params.ceiling.max(1));
    let mut held = 0u64;
    let mut steps = Vec::new();
    let mut handles = Vec::new();
    let mut first_refusal = None;
    let mut unexpected = None;
    let stopped_because = loop {
        if held >= params.ceiling {
            break StopReason::ReachedCeiling;
        }
        if start.elapsed() >= params.time_bound {
            break StopReason::TimeBound;
        }
        let request = step.min(params.ceiling - held);
        match mem.alloc(request) {
            Ok(handle) => {
                held += request;
                handles.push(handle);
                steps.push(CapStep {
                    request_bytes: request,
                    ok: true,
                    code: 0,
                    held_after_bytes: held,
                });
            }
            Err((code, name)) => {
                steps.push(CapStep {
                    request_bytes: request,
                    ok: false,
                    code,
                    held_after_bytes: held,
                });
                if !params.any_error_is_refusal && !is_refusal(code) {
                    unexpected = Some(CudaErrorInfo { code, name });
                    break StopReason::UnexpectedError;
                }
                if first_refusal.is_none() {
                    first_refusal = Some(CudaErrorInfo { code, name });
                    on_first_refusal(held);
                }
                step = request / 2;
                if step < resolution {
                    break StopReason::ResolutionReached;
                }
            }
        }
    };
    SearchResult {
        held,
        steps,
        stopped_because,
        first_refusal,
        unexpected,
        handles,
    }
}

/// Frees every handle; true when all frees succeeded.
pub fn free_all(mem: &mut dyn DeviceMemory, handles: &[u64]) -> bool {
    // Every handle is freed even after a failure, so no short-circuiting `all`.
    let mut all_ok = true;
    for &handle in handles.iter().rev() {
        all_ok &= mem.free(handle).is_ok();
    }
    all_ok
}

/// The evidence the verdict is decided from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapEvidence<'a> {
    pub expected: Option<u64>,
    pub result: &'a SearchResult,
    pub resolution: u64,
    pub ceiling: u64,
    pub start: Option<MemInfo>,
    pub oom_lines: &'a [OomLine],
    /// NVML's view of the device at the first refusal, if it was sampled.
    pub nvml_at_refusal: Option<MemInfo>,
    pub device: u32,
    /// What the context itself costs (the start's used memory less the siblings'); `None` where
    /// the start's total is not this process's own (an MPS server's view).
    pub context: Option<u64>,
    /// Other processes of the container holding part of the slice at the start.
    pub siblings: &'a [SiblingUsage],
}

fn m(bytes: u64) -> String {
    format!("{:.0} MiB", mib(bytes))
}

/// ENFORCED / NOT ENFORCED / INCONCLUSIVE, with the reasons and numbers behind it.
pub fn decide(ev: &CapEvidence<'_>) -> (CapOutcome, Vec<String>) {
    let r = ev.result;
    let mut reasons = vec![format!(
        "held {} in {} cuMemAlloc_v2 calls (ceiling {}, resolution {})",
        m(r.held),
        r.steps.len(),
        m(ev.ceiling),
        m(ev.resolution)
    )];
    if let Some(start) = ev.start {
        let mut line = format!(
            "before the search cuMemGetInfo_v2 said total {}, free {}",
            m(start.total),
            m(start.free)
        );
        if !ev.siblings.is_empty() {
            let held: u64 = ev.siblings.iter().map(|s| s.bytes).sum();
            let who = ev
                .siblings
                .iter()
                .map(|s| format!("pid {}: {}", s.pid, m(s.bytes)))
                .collect::<Vec<_>>()
                .join(", ");
            line.push_str(&format!(
                "; other processes of this container already held {} of the slice ({who}, from HAMi-core's shared region)",
                m(held)
            ));
        }
        match ev.context {
            Some(c) => line.push_str(&format!(" (the context costs {})", m(c))),
            None => line.push_str(
                " (that total is the whole card's, not this process's slice, so no context cost is computed from it)",
            ),
        }
        reasons.push(line);
    }
    let ooms: Vec<&OomLine> = ev
        .oom_lines
        .iter()
        .filter(|o| o.device == ev.device)
        .collect();
    if let Some(first) = ooms.first() {
        reasons.push(format!(
            "HAMi-core refused: Device {} OOM {} / {} ({} OOM lines)",
            first.device,
            first.requested_total_bytes,
            first.limit_bytes,
            ooms.len()
        ));
    }
    let Some(slice) = ev.expected else {
        reasons.push(
            "no slice is expected (no --expect-mib, no CUDA_DEVICE_MEMORY_LIMIT*), so there is nothing to hold the result against"
                .into(),
        );
        return (CapOutcome::Inconclusive, reasons);
    };
    if r.held > slice {
        let how = if r.stopped_because == StopReason::ReachedCeiling {
            format!(
                "and stopped at its ceiling of {} without a refusal",
                m(ev.ceiling)
            )
        } else {
            "before being refused".to_owned()
        };
        reasons.insert(
            0,
            format!(
                "held {}, more than the {} slice, {how}",
                m(r.held),
                m(slice)
            ),
        );
        return (CapOutcome::NotEnforced, reasons);
    }
    match r.stopped_because {
        StopReason::ResolutionReached => {}
        StopReason::ReachedCeiling => {
            reasons.insert(
                0,
                format!(
                    "the ceiling {} is not above the slice {}; raise --ceiling-mib",
                    m(ev.ceiling),
                    m(slice)
                ),
            );
            return (CapOutcome::Inconclusive, reasons);
        }
        StopReason::UnexpectedError => {
            let e = r
                .unexpected
                .as_ref()
                .map_or_else(String::new, |e| format!("{} ({})", e.name, e.code));
            reasons.insert(
                0,
                format!("the search stopped on an error that is not out-of-memory: {e}"),
            );
            return (CapOutcome::Inconclusive, reasons);
        }
        StopReason::TimeBound | StopReason::NotRun => {
            reasons.insert(0, "the search did not finish within its time bound".into());
            return (CapOutcome::Inconclusive, reasons);
        }
    }
    // Refused at or below the slice. Whose refusal was it: the slice's, or a full card's?
    let tolerance = MIB;
    if let Some(oom) = ooms.first() {
        if oom.limit_bytes.abs_diff(slice) <= tolerance {
            reasons.insert(
                0,
                format!(
                    "refused after {} (≤ the {} slice) by HAMi-core's limit check, which names the same limit",
                    m(r.held),
                    m(slice)
                ),
            );
            return (CapOutcome::Enforced, reasons);
        }
        reasons.insert(
            0,
            format!(
                "HAMi-core enforces a limit of {}, not the expected {}",
                m(oom.limit_bytes),
                m(slice)
            ),
        );
        return (CapOutcome::Inconclusive, reasons);
    }
    // No HAMi-core line: trust NVML only when it is not itself virtualized to the slice.
    if let Some(nvml) = ev.nvml_at_refusal {
        let virtualized = nvml.total.abs_diff(slice) <= tolerance;
        // NVML counts memory CUDA can never allocate (on the H100 a card that refused every
        // further 2 MiB still showed 680 MiB free), so "the card had memory" needs a real margin.
        let margin = (1024 * MIB).max(nvml.total / 20);
        if !virtualized && nvml.free > margin {
            reasons.insert(
                0,
                format!(
                    "refused after {} (≤ the {} slice) while the card still had {} free (NVML)",
                    m(r.held),
                    m(slice),
                    m(nvml.free)
                ),
            );
            return (CapOutcome::Enforced, reasons);
        }
        if !virtualized {
            reasons.insert(
                0,
                format!("refused after {}, but the card itself had only {} free: the card ran out, not the slice", m(r.held), m(nvml.free)),
            );
            return (CapOutcome::Inconclusive, reasons);
        }
    }
    reasons.insert(
        0,
        format!(
            "refused after {} (≤ the {} slice), but no HAMi-core OOM line was captured and the card's physical free memory is unknown",
            m(r.held),
            m(slice)
        ),
    );
    (CapOutcome::Inconclusive, reasons)
}

/// Decides again from a recorded report's numbers (evidence checks and tests use it to show a
/// report's verdict follows from its own numbers).
pub fn redecide(c: &CapDevice) -> (CapOutcome, Vec<String>) {
    let result = SearchResult {
        held: c.held_bytes,
        steps: c.steps.clone(),
        stopped_because: c.stopped_because,
        first_refusal: c.first_refusal.clone(),
        unexpected: None,
        handles: Vec::new(),
    };
    decide(&CapEvidence {
        expected: c.expected_bytes,
        result: &result,
        resolution: c.resolution_bytes,
        ceiling: c.ceiling_bytes,
        start: c.start_mem_info,
        oom_lines: &c.hami_oom_lines,
        nvml_at_refusal: c.nvml_at_first_refusal,
        device: c.index,
        context: c.context_overhead_bytes,
        siblings: &c.sibling_usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_search_reports_every_step_as_an_event() {
        use lab_runner::progress::{Event, Progress, Style};
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Buffer::default();
        let progress = Progress::with_writer(Style::Events, Box::new(out.clone()));
        let task = progress.task("cap device 0", Some(10000), "MiB");
        let mut dev = SimDevice::new(Some(8000 * MIB), 80_000 * MIB);
        let r = search(
            &mut Watched::new(&mut dev, &task),
            params(10000 * MIB),
            |_| {},
        );
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let events: Vec<Event> = text.lines().filter_map(Event::parse).collect();
        assert_eq!(events.len(), r.steps.len(), "{text}");
        let last = events.last().unwrap();
        assert_eq!(last.pos, r.held / MIB);
        assert!(last.msg.contains("refused"), "{last:?}");
        assert!(events.iter().any(|e| e.msg == "+1024 MiB held"), "{text}");
    }

    /// A simulated device: `limit` is a HAMi-core-like cap on the sum held (plus `context`), and
    /// `physical_free` the card's real free memory.
    struct SimDevice {
        limit: Option<u64>,
        context: u64,
        physical_free: u64,
        held: Vec<(u64, u64)>,
        next: u64,
        calls: u32,
        fail_with: Option<i64>,
    }

    impl SimDevice {
        fn new(limit: Option<u64>, physical_free: u64) -> Self {
            Self {
                limit,
                context: 518 * MIB,
                physical_free,
                held: vec![],
                next: 1,
                calls: 0,
                fail_with: None,
            }
        }
        fn used(&self) -> u64 {
            self.held.iter().map(|(_, b)| b).sum()
        }
    }

    impl DeviceMemory for SimDevice {
        fn alloc(&mut self, bytes: u64) -> Result<u64, (i64, String)> {
            self.calls += 1;
            if let Some(code) = self.fail_with {
                return Err((code, "CUDA_ERROR_INVALID_VALUE".into()));
            }
            let over_limit = self
                .limit
                .is_some_and(|l| self.context + self.used() + bytes > l);
            if over_limit || self.used() + bytes > self.physical_free {
                return Err((2, "CUDA_ERROR_OUT_OF_MEMORY".into()));
            }
            self.next += 1;
            self.held.push((self.next, bytes));
            Ok(self.next)
        }
        fn free(&mut self, handle: u64) -> Result<(), (i64, String)> {
            let pos = self
                .held
                .iter()
                .position(|(h, _)| *h == handle)
                .ok_or((1, "bad".to_owned()))?;
            self.held.remove(pos);
            Ok(())
        }
    }

    fn params(ceiling: u64) -> SearchParams {
        SearchParams {
            ceiling,
            resolution: 2 * MIB,
            initial_step: 1024 * MIB,
            time_bound: Duration::from_secs(60),
            any_error_is_refusal: false,
        }
    }

    /// The evidence of a search with the usual resolution and no start numbers.
    fn evidence<'a>(
        expected: Option<u64>,
        result: &'a SearchResult,
        ceiling: u64,
        oom_lines: &'a [OomLine],
        nvml_at_refusal: Option<MemInfo>,
    ) -> CapEvidence<'a> {
        CapEvidence {
            expected,
            result,
            resolution: 2 * MIB,
            ceiling,
            start: None,
            oom_lines,
            nvml_at_refusal,
            device: 0,
            context: None,
            siblings: &[],
        }
    }

    /// A sibling holding 3 GiB is named as such, and the context's cost is what is left.
    #[test]
    fn siblings_usage_is_not_the_contexts_cost() {
        let result = SearchResult {
            held: 3976 * MIB,
            steps: vec![],
            stopped_because: StopReason::ResolutionReached,
            first_refusal: None,
            unexpected: None,
            handles: vec![],
        };
        let siblings = [SiblingUsage {
            pid: 77,
            hostpid: 9077,
            bytes: 3072 * MIB,
        }];
        let mut ev = evidence(Some(8000 * MIB), &result, 10_000 * MIB, &[], None);
        ev.start = Some(MemInfo {
            total: 8000 * MIB,
            free: 3892 * MIB,
            used: 4108 * MIB,
        });
        ev.siblings = &siblings;
        ev.context = Some(1036 * MIB);
        let (_, reasons) = decide(&ev);
        let line = reasons
            .iter()
            .find(|r| r.starts_with("before the search"))
            .expect("start line");
        assert!(
            line.contains("already held 3072 MiB of the slice (pid 77: 3072 MiB"),
            "{line}"
        );
        assert!(line.contains("the context costs 1036 MiB"), "{line}");
        assert!(!line.contains("4108 MiB)"), "{line}");
        ev.context = None;
        ev.siblings = &[];
        let (_, reasons) = decide(&ev);
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("no context cost is computed")),
            "{reasons:?}"
        );
    }

    fn oom(limit: u64) -> OomLine {
        OomLine {
            pid: Some(1),
            device: 0,
            requested_total_bytes: limit + 1,
            limit_bytes: limit,
            raw: String::new(),
        }
    }

    #[test]
    fn finds_the_hami_boundary_to_the_resolution_and_frees_everything() {
        let slice = 8000 * MIB;
        let mut dev = SimDevice::new(Some(slice), 80 * 1024 * MIB);
        let mut sampled = None;
        let r = search(&mut dev, params(slice * 5 / 4), |held| sampled = Some(held));
        assert_eq!(r.stopped_because, StopReason::ResolutionReached);
        let room = slice - 518 * MIB;
        assert!(
            r.held <= room && room - r.held < 2 * MIB,
            "held {} room {}",
            r.held,
            room
        );
        assert_eq!(
            sampled,
            Some(7 * 1024 * MIB),
            "sampled at the first refusal"
        );
        assert_eq!(r.steps.len() as u32, dev.calls);
        assert!(free_all(&mut dev, &r.handles));
        assert_eq!(dev.used(), 0);
        let lines = [oom(slice)];
        let ev = evidence(Some(slice), &r, slice * 5 / 4, &lines, None);
        let (outcome, reasons) = decide(&ev);
        assert_eq!(outcome, CapOutcome::Enforced, "{reasons:?}");
    }

    #[test]
    fn an_uncapped_card_stops_at_the_ceiling_and_is_not_enforced() {
        let slice = 8000 * MIB;
        let mut dev = SimDevice::new(None, 80 * 1024 * MIB);
        let r = search(&mut dev, params(10_000 * MIB), |_| {});
        assert_eq!(r.stopped_because, StopReason::ReachedCeiling);
        assert_eq!(r.held, 10_000 * MIB);
        assert!(r.first_refusal.is_none());
        let ev = evidence(Some(slice), &r, 10_000 * MIB, &[], None);
        let (outcome, reasons) = decide(&ev);
        assert_eq!(outcome, CapOutcome::NotEnforced);
        assert!(reasons[0].contains("ceiling"), "{reasons:?}");
    }

    #[test]
    fn a_full_h100_still_shows_nvml_free_memory_and_is_inconclusive() {
        // Measured on the H100: physical exhaustion at 80550 MiB held left NVML free at 680 MiB.
        let mut dev = SimDevice::new(None, 80550 * MIB);
        let r = search(&mut dev, params(1_250_000 * MIB), |_| {});
        assert_eq!(r.held, 80550 * MIB);
        let nvml = MemInfo {
            total: 81559 * MIB,
            free: 680 * MIB,
            used: 80879 * MIB,
        };
        let ev = evidence(Some(1_000_000 * MIB), &r, 1_250_000 * MIB, &[], Some(nvml));
        let (outcome, reasons) = decide(&ev);
        assert_eq!(outcome, CapOutcome::Inconclusive, "{reasons:?}");
        assert!(reasons[0].contains("card ran out"), "{reasons:?}");
    }

    #[test]
    fn a_full_card_below_the_slice_is_inconclusive_not_enforced() {
        let slice = 8000 * MIB;
        let mut dev = SimDevice::new(None, 3000 * MIB);
        let r = search(&mut dev, params(10_000 * MIB), |_| {});
        let nvml = MemInfo {
            total: 81559 * MIB,
            free: 2 * MIB,
            used: 81557 * MIB,
        };
        let ev = evidence(Some(slice), &r, 10_000 * MIB, &[], Some(nvml));
        let (outcome, reasons) = decide(&ev);
        assert_eq!(outcome, CapOutcome::Inconclusive);
        assert!(reasons[0].contains("card ran out"), "{reasons:?}");
    }

    #[test]
    fn refusal_with_physical_room_and_no_log_line_is_enforced() {
        let slice = 4000 * MIB;
        let mut dev = SimDevice::new(Some(slice), 80 * 1024 * MIB);
        let r = search(&mut dev, params(5000 * MIB), |_| {});
        let nvml = MemInfo {
            total: 81559 * MIB,
            free: 70000 * MIB,
            used: 11559 * MIB,
        };
        let mut ev = evidence(Some(slice), &r, 5000 * MIB, &[], Some(nvml));
        assert_eq!(decide(&ev).0, CapOutcome::Enforced);
        // NVML virtualized to the slice proves nothing about the card.
        ev.nvml_at_refusal = Some(MemInfo {
            total: slice,
            free: 0,
            used: slice,
        });
        assert_eq!(decide(&ev).0, CapOutcome::Inconclusive);
    }

    #[test]
    fn a_different_hami_limit_is_inconclusive() {
        let mut dev = SimDevice::new(Some(4000 * MIB), 80 * 1024 * MIB);
        let r = search(&mut dev, params(10_000 * MIB), |_| {});
        let lines = [oom(4000 * MIB)];
        let ev = evidence(Some(8000 * MIB), &r, 10_000 * MIB, &lines, None);
        let (outcome, reasons) = decide(&ev);
        assert_eq!(outcome, CapOutcome::Inconclusive);
        assert!(reasons[0].contains("not the expected"), "{reasons:?}");
    }

    #[test]
    fn unexpected_errors_stop_the_search() {
        let mut dev = SimDevice::new(None, 80 * 1024 * MIB);
        dev.fail_with = Some(1);
        let r = search(&mut dev, params(10_000 * MIB), |_| {});
        assert_eq!(r.stopped_because, StopReason::UnexpectedError);
        assert_eq!(r.steps.len(), 1);
        let ev = evidence(Some(8000 * MIB), &r, 10_000 * MIB, &[], None);
        assert_eq!(decide(&ev).0, CapOutcome::Inconclusive);
    }

    #[test]
    fn no_slice_is_inconclusive_and_small_slices_work() {
        let mut dev = SimDevice::new(Some(1000 * MIB), 80 * 1024 * MIB);
        let r = search(&mut dev, params(1250 * MIB), |_| {});
        assert!(
            r.held <= 482 * MIB && 482 * MIB - r.held < 2 * MIB,
            "{}",
            r.held
        );
        let ev = evidence(None, &r, 1250 * MIB, &[], None);
        assert_eq!(decide(&ev).0, CapOutcome::Inconclusive);
    }

    #[test]
    fn the_time_bound_stops_the_search() {
        let mut dev = SimDevice::new(None, 80 * 1024 * MIB);
        let p = SearchParams {
            time_bound: Duration::ZERO,
            ..params(10_000 * MIB)
        };
        let r = search(&mut dev, p, |_| {});
        // The bound is checked before every call, the first one included.
        assert_eq!(r.stopped_because, StopReason::TimeBound);
        assert!(r.steps.is_empty());
    }
}
