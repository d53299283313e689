//! `gpu-probe conformance --lib PATH`: what one HAMi-core library really caps on this driver and
//! card, as a matrix, without Kubernetes.
//!
//! Every cell is a child gpu-probe (or a bare worker) started with the injection a HAMi pod gets
//! — the library preloaded (`LD_PRELOAD`, with `CUDA_REDIRECT` so it finds itself), a fresh
//! `CUDA_DEVICE_MEMORY_SHARED_CACHE` per cell, `LIBCUDA_LOG_LEVEL=1` — plus the cell's limits.
//! Each child is bounded in time (a deadline it applies to its own children, and a kill past it),
//! and after each cell the card's memory must be back (NVML in this process, which is not
//! injected). The cells ([`plan`]) cover limit sizes, limit spellings, every allocation path of
//! `audit`, two processes sharing a slice, every device with its own limit and one without, the
//! calls HAMi-core's tracker reports trouble with, and `CUDA_DEVICE_SM_LIMIT` against a baseline.
//!
//! The decisions ([`decide_cap_cell`], [`decide_compute_cell`], [`audit_cells`], …) are pure
//! functions of the children's reports, tested on recorded and simulated reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab_runner::{Cmd, Output, RunError, Runner};

use crate::ffi::nvml::Nvml;
use crate::hamicore::is_hami_core_line;
use crate::limits;
use crate::report::{
    AuditOutcome, CapOutcome, Check, CheckStatus, MIB, Outcome, Report, StopReason, mib,
};
use crate::report_conformance::{
    CellGroup, CellOutcome, ConformanceCell, ConformanceDevice, ConformanceSection,
};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct ConformanceOptions {
    pub lib: String,
    /// The upstream revision the library was built from, as the user names it.
    pub revision: Option<String>,
    /// This gpu-probe binary (the children are itself).
    pub probe_exe: PathBuf,
    /// Each cell's bound; past it the child is killed and the cell is `hung`.
    pub cell_timeout: Duration,
    /// Seconds of busy kernels per compute measurement.
    pub compute_seconds: f64,
    pub sm_band_pct: f64,
    /// The SM limits to measure (percent).
    pub sm_limits: Vec<u64>,
    /// The typical slice (MiB), used by the path, sharing and robustness cells.
    pub typical_mib: u64,
    /// How long a cell waits for the card's memory to come back after its child ended.
    pub settle: Duration,
    /// The whole matrix's bound: cells that would start past it are not run (and say so).
    pub budget: Duration,
    /// The folder HAMi mounts at `/tmp/vgpulock` in pods ([`VGPU_LOCK_DIR`]).
    pub lock_dir: PathBuf,
    /// Where the matrix shows how far it got (one event as each cell starts and ends).
    pub progress: lab_runner::progress::Progress,
    /// The static-cudart program of the bypass cells (`audit --static-cudart`).
    pub static_cudart: Option<PathBuf>,
}

impl ConformanceOptions {
    pub fn new(lib: &str, probe_exe: PathBuf) -> Self {
        Self {
            lib: lib.to_owned(),
            revision: None,
            probe_exe,
            cell_timeout: Duration::from_secs(60),
            compute_seconds: 2.0,
            sm_band_pct: crate::probe::DEFAULT_SM_BAND_PCT,
            sm_limits: vec![25, 50, 100],
            typical_mib: 8000,
            settle: Duration::from_secs(3),
            budget: Duration::from_secs(300),
            lock_dir: PathBuf::from(VGPU_LOCK_DIR),
            progress: lab_runner::progress::Progress::hidden(),
            static_cudart: None,
        }
    }
}

/// How a cell is run.
#[derive(Debug, Clone, PartialEq)]
pub enum CellKind {
    /// `gpu-probe all`, the slice expected as `expect_mib` (what the user meant).
    All { expect_mib: Option<u64> },
    /// `gpu-probe audit --rows allocation` (gives every path cell and the sharing cell).
    Audit,
    /// `gpu-probe audit --rows bypass` (gives every bypass cell).
    Bypass,
    /// A bare worker running one call of [`crate::robustness::PROBES`].
    Robustness(String),
    /// The unlimited compute baseline (gives no cell of its own).
    Baseline,
    /// `gpu-probe compute` under `CUDA_DEVICE_SM_LIMIT=N` against the baseline.
    Compute(u64),
    /// The cell needs more devices than this machine shows.
    NeedsDevices(u32),
}

/// One planned cell.
#[derive(Debug, Clone, PartialEq)]
pub struct CellPlan {
    pub id: String,
    pub group: CellGroup,
    pub title: String,
    pub claim: String,
    pub kind: CellKind,
    /// Limits and policies for the child, on top of the injection.
    pub env: Vec<(String, String)>,
    pub device: Option<u32>,
    pub slice_bytes: Option<u64>,
    /// HAMi-core's reading of a spelling, as [`limits::hami_core_reading`] predicts it.
    pub predicted_limit_bytes: Option<u64>,
}

fn limit_env(device: u32, value: &str) -> (String, String) {
    (format!("{}_{device}", limits::LIMIT_VAR), value.to_owned())
}

/// The audit paths, by the names `audit` gives them (a crashed audit still gets one cell each).
pub const AUDIT_PATHS: &[&str] = &[
    "cuMemAlloc_v2",
    "cuMemAllocPitch_v2",
    "cuMemAllocManaged",
    "cuMemAllocAsync",
    "cuMemAllocFromPoolAsync (explicit pool)",
    "cuMemCreate (VMM, device location)",
    "cuArrayCreate_v2",
    "second process of the same container (cuMemAlloc_v2)",
];

/// The spellings tried: (text, what the user meant in MiB, why it is there).
pub const SPELLINGS: &[(&str, u64, &str)] = &[
    ("8000M", 8000, "upper-case suffix, accepted"),
    ("8388608000", 8000, "plain bytes, accepted"),
    (
        "4Gi",
        4096,
        "a Kubernetes-style suffix: HAMi-core reads 4 bytes",
    ),
    ("8GB", 8192, "a two-letter suffix: HAMi-core reads 8 bytes"),
    ("1.5g", 1536, "a fraction: HAMi-core reads 1 GiB"),
    (
        "08g",
        8192,
        "a leading zero: octal, HAMi-core reads 0 = no limit",
    ),
];

/// The cells for these devices.
pub fn plan(devices: &[ConformanceDevice], o: &ConformanceOptions) -> Vec<CellPlan> {
    let typical = o.typical_mib;
    let card_mib = devices
        .iter()
        .filter_map(|d| d.total_bytes)
        .max()
        .map_or(200_000, |b| b / MIB);
    let larger = (card_mib + card_mib / 2).div_ceil(1000) * 1000;
    let mut cells = Vec::new();
    let mut cell = |id: &str,
                    group,
                    title: String,
                    claim: String,
                    kind,
                    env: Vec<(String, String)>,
                    slice_mib: Option<u64>,
                    predicted: Option<u64>| {
        cells.push(CellPlan {
            id: id.to_owned(),
            group,
            title,
            claim,
            kind,
            env,
            device: Some(0),
            slice_bytes: slice_mib.map(|m| m * MIB),
            predicted_limit_bytes: predicted,
        });
    };
    for (id, mib_, what) in [
        ("limit.below-context", 256, "below the CUDA context's cost"),
        ("limit.small", 1024, "small"),
        ("limit.typical", typical, "typical"),
        ("limit.larger-than-card", larger, "larger than the card"),
    ] {
        cell(
            id,
            CellGroup::Limits,
            format!("{mib_}m ({what})"),
            format!("Device 0 holds no more than a {mib_} MiB slice ({what})"),
            CellKind::All {
                expect_mib: Some(mib_),
            },
            vec![limit_env(0, &format!("{mib_}m"))],
            Some(mib_),
            Some(mib_ * MIB),
        );
    }
    for (text, meant, why) in SPELLINGS {
        cell(
            &format!("spelling.{text}"),
            CellGroup::Spellings,
            format!("CUDA_DEVICE_MEMORY_LIMIT_0={text} ({why})"),
            format!(
                "`{text}` (meant as {meant} MiB) is held to what HAMi-core reads, as the probe predicts, and never more than meant"
            ),
            CellKind::All {
                expect_mib: Some(*meant),
            },
            vec![limit_env(0, text)],
            Some(*meant),
            Some(limits::hami_core_reading(text)),
        );
    }
    cell(
        "paths.audit",
        CellGroup::Paths,
        format!("every allocation path of `audit`, {typical}m"),
        String::new(),
        CellKind::Audit,
        vec![limit_env(0, &format!("{typical}m"))],
        Some(typical),
        None,
    );
    cell(
        "bypass.audit",
        CellGroup::Bypass,
        format!("every bypass row of `audit`, {typical}m"),
        String::new(),
        CellKind::Bypass,
        vec![limit_env(0, &format!("{typical}m"))],
        Some(typical),
        None,
    );
    for (probe, issue, title) in [
        (
            crate::robustness::VMM_HOST,
            "HAMi-core#187",
            "cuMemCreate with a host NUMA location (not device memory)",
        ),
        (
            crate::robustness::NO_CONTEXT,
            "HAMi-core#188",
            "cuMemAlloc_v2 on a thread without a current context",
        ),
    ] {
        cell(
            &format!("robustness.{probe}"),
            CellGroup::Robustness,
            format!("{title} ({issue})"),
            format!("{title} neither crashes nor moves the slice's accounting ({issue})"),
            CellKind::Robustness((*probe).to_owned()),
            vec![limit_env(0, &format!("{typical}m"))],
            Some(typical),
            None,
        );
    }
    // Devices: every device its own limit; and (2+ devices) device 0 limited, the rest not.
    let n = u32::try_from(devices.len().max(1)).unwrap_or(1);
    let own: Vec<(String, String)> = (0..n)
        .map(|i| limit_env(i, &format!("{}m", 4000 + 2000 * u64::from(i))))
        .collect();
    cells.push(CellPlan {
        id: "devices.each-own-limit".into(),
        group: CellGroup::Devices,
        title: format!(
            "every visible device its own limit ({})",
            own.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        claim: "Each visible device is held to its own slice".into(),
        kind: CellKind::All { expect_mib: None },
        env: own,
        device: None,
        slice_bytes: None,
        predicted_limit_bytes: None,
    });
    cells.push(CellPlan {
        id: "devices.one-without-limit".into(),
        group: CellGroup::Devices,
        title: format!("device 0 limited to {typical}m, the others without a limit"),
        claim: "A device without a slice beside a limited one is held to something".into(),
        kind: if n >= 2 {
            CellKind::All { expect_mib: None }
        } else {
            CellKind::NeedsDevices(2)
        },
        env: vec![limit_env(0, &format!("{typical}m"))],
        device: None,
        slice_bytes: None,
        predicted_limit_bytes: None,
    });
    cells.push(CellPlan {
        id: "compute.baseline".into(),
        group: CellGroup::Compute,
        title: "unlimited baseline".into(),
        claim: String::new(),
        kind: CellKind::Baseline,
        env: vec![limit_env(0, &format!("{typical}m"))],
        device: Some(0),
        slice_bytes: None,
        predicted_limit_bytes: None,
    });
    for &sm in &o.sm_limits {
        cells.push(CellPlan {
            id: format!("compute.sm-{sm}"),
            group: CellGroup::Compute,
            title: format!("CUDA_DEVICE_SM_LIMIT={sm}, GPU_CORE_UTILIZATION_POLICY=force"),
            claim: format!(
                "Busy-kernel throughput under a {sm}% SM limit is {sm}% of the baseline, ±{:.0} points",
                o.sm_band_pct
            ),
            kind: CellKind::Compute(sm),
            env: vec![
                limit_env(0, &format!("{typical}m")),
                ("CUDA_DEVICE_SM_LIMIT".into(), sm.to_string()),
                ("GPU_CORE_UTILIZATION_POLICY".into(), "force".into()),
            ],
            device: Some(0),
            slice_bytes: None,
            predicted_limit_bytes: None,
        });
    }
    cells
}

/// The child's fate before any report is read.
#[derive(Debug, Clone, PartialEq)]
pub enum ChildEnd {
    /// It exited (any code) and printed what it printed.
    Exited(Output),
    /// It was killed past its bound.
    TimedOut(Duration),
    /// It could not be started.
    NotStarted(String),
}

/// HAMi-core's lines every process prints at exit, whatever happened: not evidence of anything.
fn is_exit_boilerplate(line: &str) -> bool {
    line.contains("Cleanup on exit for PID") || line.contains("Exit cleanup complete for PID")
}

/// The HAMi-core lines of a child's stderr, deduplicated (first 12), less the exit boilerplate.
pub fn hami_lines(stderr: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in stderr
        .lines()
        .filter(|l| is_hami_core_line(l) && !is_exit_boilerplate(l))
    {
        let l = l.trim().to_owned();
        if !out.contains(&l) {
            out.push(l);
        }
        if out.len() >= 12 {
            break;
        }
    }
    out
}

fn blank(p: &CellPlan) -> ConformanceCell {
    ConformanceCell {
        id: p.id.clone(),
        group: p.group,
        title: p.title.clone(),
        claim: p.claim.clone(),
        env: p.env.clone(),
        device: p.device,
        slice_bytes: p.slice_bytes,
        outcome: CellOutcome::NotApplicable,
        held_bytes: None,
        past_slice_bytes: None,
        enforced_limit_bytes: None,
        predicted_limit_bytes: p.predicted_limit_bytes,
        refusal: None,
        compute: None,
        note: String::new(),
        log_lines: Vec::new(),
        exit_code: None,
        seconds: 0.0,
        freed: None,
    }
}

/// Crashed / hung / a report: what a child that should print a report gave back.
fn child_report(
    end: &ChildEnd,
    report_file: Option<&str>,
) -> Result<Report, (CellOutcome, String)> {
    match end {
        ChildEnd::TimedOut(after) => Err((
            CellOutcome::Hung,
            format!(
                "the child did not finish within {}s and was killed",
                after.as_secs()
            ),
        )),
        ChildEnd::NotStarted(e) => Err((
            CellOutcome::Crashed,
            format!("the child could not start: {e}"),
        )),
        ChildEnd::Exited(out) => {
            let text = report_file.map_or_else(|| out.stdout.clone(), str::to_owned);
            match serde_json::from_str::<Report>(&text) {
                Ok(r) => Ok(r),
                Err(_) => {
                    let tail: Vec<&str> = out.stderr.lines().rev().take(4).collect();
                    let how = out.code.map_or_else(
                        || "was killed by a signal".to_owned(),
                        |c| format!("exited {c}"),
                    );
                    Err((
                        CellOutcome::Crashed,
                        format!(
                            "the child {how} without a report; stderr: {}",
                            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                        ),
                    ))
                }
            }
        }
    }
}

/// A report whose CUDA worker hung or died is a hung or crashed cell, not a measurement.
fn worker_failure(r: &Report) -> Option<(CellOutcome, String)> {
    let cuda = r
        .checks
        .iter()
        .find(|c| c.id == "cuda" && c.status == CheckStatus::Failed)?;
    let outcome = if cuda.reason.contains("did not finish within") {
        CellOutcome::Hung
    } else {
        CellOutcome::Crashed
    };
    Some((
        outcome,
        format!("the CUDA worker failed under the library: {}", cuda.reason),
    ))
}

fn m(b: u64) -> String {
    format!("{:.0} MiB", mib(b))
}

/// The limit the library enforced on `device`: its OOM line, else its shared region.
fn enforced_limit(r: &Report, device: u32) -> Option<u64> {
    let oom = r
        .cap
        .as_ref()
        .and_then(|c| c.devices.iter().find(|d| d.index == device))
        .and_then(|d| d.hami_oom_lines.first())
        .map(|o| o.limit_bytes);
    oom.or_else(|| {
        r.mechanism
            .as_ref()?
            .shared_region
            .region
            .as_ref()?
            .limits
            .get(device as usize)
            .copied()
    })
}

/// A limit-size, spelling or device cell from the child's `all` report (pure).
pub fn decide_cap_cell(p: &CellPlan, end: &ChildEnd, report_file: Option<&str>) -> ConformanceCell {
    let mut cell = blank(p);
    if let ChildEnd::Exited(out) = end {
        cell.exit_code = out.code;
        cell.log_lines = hami_lines(&out.stderr);
    }
    let r = match child_report(end, report_file) {
        Ok(r) => r,
        Err((o, why)) => {
            cell.outcome = o;
            cell.note = why;
            return cell;
        }
    };
    add_report_lines(&mut cell, &r);
    if let Some((o, why)) = worker_failure(&r) {
        cell.outcome = o;
        cell.note = why;
        return cell;
    }
    let Some(cap) = &r.cap else {
        cell.outcome = CellOutcome::Crashed;
        cell.note = "the child's report has no cap section".into();
        return cell;
    };
    if p.device.is_none() {
        return decide_devices_cell(cell, &r, p);
    }
    let device = p.device.unwrap_or(0);
    let Some(d) = cap.devices.iter().find(|d| d.index == device) else {
        cell.outcome = CellOutcome::Crashed;
        cell.note = format!("no cap search ran on device {device}");
        return cell;
    };
    let slice = p.slice_bytes.unwrap_or(0);
    cell.held_bytes = Some(d.held_bytes);
    cell.refusal = d
        .first_refusal
        .as_ref()
        .map(|e| format!("{} ({})", e.name, e.code));
    cell.enforced_limit_bytes = enforced_limit(&r, device);
    let view = r
        .view
        .as_ref()
        .and_then(|v| v.devices.iter().find(|v| v.index == device));
    let nvml_total = view.and_then(|v| v.nvml).map(|n| n.total);
    let mut notes = Vec::new();
    if d.held_bytes > slice {
        cell.outcome = CellOutcome::Escaped;
        cell.past_slice_bytes = Some(d.held_bytes - slice);
        notes.push(format!(
            "held {}, {} past the {} slice{}",
            m(d.held_bytes),
            m(d.held_bytes - slice),
            m(slice),
            if d.stopped_because == StopReason::ReachedCeiling {
                format!(
                    " (stopped at its {} ceiling without a refusal)",
                    m(d.ceiling_bytes)
                )
            } else {
                String::new()
            }
        ));
    } else if d.stopped_because == StopReason::TimeBound {
        cell.outcome = CellOutcome::Hung;
        notes.push(format!(
            "the search ran out of time after {}",
            m(d.held_bytes)
        ));
    } else {
        cell.outcome = CellOutcome::Capped;
        let by = if d.hami_oom_lines.is_empty() {
            if d.outcome == CapOutcome::Inconclusive && p.id == "limit.larger-than-card" {
                "the card itself (the slice is larger than the card)".to_owned()
            } else {
                "the driver (no HAMi-core OOM line)".to_owned()
            }
        } else {
            "HAMi-core's limit check".to_owned()
        };
        notes.push(format!(
            "held {} of the {} slice, then refused by {by}{}",
            m(d.held_bytes),
            m(slice),
            cell.refusal
                .as_ref()
                .map(|r| format!(" with {r}"))
                .unwrap_or_default()
        ));
    }
    if let Some(e) = cell.enforced_limit_bytes {
        notes.push(if e == 0 {
            "HAMi-core enforces no limit".to_owned()
        } else {
            format!("HAMi-core enforces {e} bytes ({})", m(e))
        });
    }
    if let Some(pred) = p.predicted_limit_bytes
        && p.group == CellGroup::Spellings
    {
        let matches = cell.enforced_limit_bytes.is_none_or(|e| e == pred);
        notes.push(format!(
            "the probe predicted {}{}",
            if pred == 0 {
                "no limit".to_owned()
            } else {
                format!("{pred} bytes")
            },
            if matches { "" } else { " — it was WRONG" }
        ));
    }
    if let (Some(t), Some(s)) = (nvml_total, p.slice_bytes)
        && let Some(card) = r
            .view
            .as_ref()
            .and_then(|v| v.devices.iter().find(|v| v.index == device))
            .and_then(|v| v.cuda_mem_info)
            .map(|i| i.total)
        && s > card
    {
        notes.push(format!(
            "NVML reports a total of {} on a card whose CUDA total is {}",
            m(t),
            m(card)
        ));
    }
    if let Some(c) = d.context_overhead_bytes {
        notes.push(format!("the context cost {}", m(c)));
    }
    if !d.all_freed {
        notes.push("NOT every allocation could be freed".into());
    }
    cell.note = notes.join("; ");
    cell
}

fn add_report_lines(cell: &mut ConformanceCell, r: &Report) {
    let extra = r.cap.iter().flat_map(|c| c.devices.iter()).flat_map(|d| {
        d.hami_oom_lines.iter().map(|o| o.raw.clone()).chain(
            d.other_stderr
                .iter()
                .filter(|l| is_hami_core_line(l) && !is_exit_boilerplate(l))
                .cloned(),
        )
    });
    for l in extra {
        if cell.log_lines.len() >= 12 {
            break;
        }
        if !cell.log_lines.contains(&l) {
            cell.log_lines.push(l);
        }
    }
}

/// Every device its own limit, or device 0 limited and the others not.
fn decide_devices_cell(mut cell: ConformanceCell, r: &Report, p: &CellPlan) -> ConformanceCell {
    let cap = r
        .cap
        .as_ref()
        .map(|c| c.devices.as_slice())
        .unwrap_or_default();
    let limit_of = |i: u32| {
        p.env
            .iter()
            .find(|(k, _)| *k == format!("{}_{i}", limits::LIMIT_VAR))
            .and_then(|(k, v)| limits::parse_limit(k, v).ok())
    };
    let mut notes = Vec::new();
    let mut escaped = false;
    let mut held_total = 0;
    for d in cap {
        held_total += d.held_bytes;
        match limit_of(d.index) {
            Some(slice) if d.held_bytes > slice => {
                escaped = true;
                notes.push(format!(
                    "device {}: held {}, past its {} slice",
                    d.index,
                    m(d.held_bytes),
                    m(slice)
                ));
            }
            Some(slice) => notes.push(format!(
                "device {}: held {} of its {} slice, then refused{}",
                d.index,
                m(d.held_bytes),
                m(slice),
                d.hami_oom_lines
                    .first()
                    .map(|o| format!(" (HAMi-core: limit {})", m(o.limit_bytes)))
                    .unwrap_or_default()
            )),
            None => {
                escaped = true;
                let named = r
                    .checks
                    .iter()
                    .find(|c| c.id == format!("cap.device{}", d.index))
                    .filter(|c| c.status == CheckStatus::Failed && c.reason.contains("no slice"))
                    .is_some();
                notes.push(format!(
                    "device {}: no slice, held {} without a refusal (ceiling {}); gpu-probe {} it",
                    d.index,
                    m(d.held_bytes),
                    m(d.ceiling_bytes),
                    if named { "FAILS" } else { "does NOT fail" }
                ));
            }
        }
    }
    cell.held_bytes = Some(held_total);
    cell.outcome = if escaped {
        CellOutcome::Escaped
    } else {
        CellOutcome::Capped
    };
    cell.note = notes.join("; ");
    cell
}

/// The path cells and the sharing cell from one `audit` child (pure).
pub fn audit_cells(
    p: &CellPlan,
    end: &ChildEnd,
    report_file: Option<&str>,
) -> Vec<ConformanceCell> {
    let base = |path: &str| {
        let id = crate::audit::check_id(path);
        let short = id.trim_start_matches("audit.").to_owned();
        let sharing = path.starts_with("second process");
        let mut c = blank(p);
        c.id = if sharing {
            "sharing.two-processes".to_owned()
        } else {
            format!("path.{short}")
        };
        c.group = if sharing {
            CellGroup::Sharing
        } else {
            CellGroup::Paths
        };
        c.title = path.to_owned();
        c.claim = if sharing {
            "Two processes of one container together hold no more than one slice".to_owned()
        } else {
            format!("{path} holds no more than the slice")
        };
        c
    };
    let (out_code, lines) = match end {
        ChildEnd::Exited(o) => (o.code, hami_lines(&o.stderr)),
        _ => (None, Vec::new()),
    };
    let r = match child_report(end, report_file) {
        Ok(r) => r,
        Err((o, why)) => {
            return AUDIT_PATHS
                .iter()
                .map(|path| {
                    let mut c = base(path);
                    c.outcome = o;
                    c.note = why.clone();
                    c.exit_code = out_code;
                    c.log_lines.clone_from(&lines);
                    c
                })
                .collect();
        }
    };
    let failure = worker_failure(&r);
    let audit = r.audit.as_ref();
    AUDIT_PATHS
        .iter()
        .map(|path| {
            let mut c = base(path);
            c.exit_code = out_code;
            c.log_lines.clone_from(&lines);
            if let Some((o, why)) = &failure {
                c.outcome = *o;
                c.note.clone_from(why);
                return c;
            }
            let Some(ap) = audit.and_then(|a| a.paths.iter().find(|x| x.path == *path)) else {
                c.note = "the audit reported no such path".into();
                return c;
            };
            c.held_bytes = Some(ap.held_bytes);
            c.past_slice_bytes = (ap.past_slice_bytes > 0).then_some(ap.past_slice_bytes);
            c.refusal = ap
                .refusal
                .as_ref()
                .map(|e| format!("{} ({})", e.name, e.code));
            c.outcome = match ap.outcome {
                AuditOutcome::Capped => CellOutcome::Capped,
                AuditOutcome::Escaped => CellOutcome::Escaped,
                AuditOutcome::NoSlice | AuditOutcome::NotApplicable => CellOutcome::NotApplicable,
                AuditOutcome::Error => CellOutcome::Hung,
            };
            c.note.clone_from(&ap.note);
            c
        })
        .collect()
}

/// The bypass cells from one `audit --rows bypass` child (pure): one per [`crate::bypass::ROWS`],
/// `bypass.<row>`, with the row's steps and HAMi-core's lines from each of its children.
pub fn bypass_cells(
    p: &CellPlan,
    end: &ChildEnd,
    report_file: Option<&str>,
) -> Vec<ConformanceCell> {
    let base = |row: &crate::bypass::Row| {
        let mut c = blank(p);
        c.id = format!("bypass.{}", row.key);
        c.group = CellGroup::Bypass;
        c.title = row.path.to_owned();
        c.claim = format!("{} holds no more than the slice", row.what);
        c
    };
    let rows = crate::bypass::ROWS;
    let (out_code, lines) = match end {
        ChildEnd::Exited(o) => (o.code, hami_lines(&o.stderr)),
        _ => (None, Vec::new()),
    };
    let r = match child_report(end, report_file) {
        Ok(r) => r,
        Err((o, why)) => {
            return rows
                .iter()
                .map(|row| {
                    let mut c = base(row);
                    c.outcome = o;
                    c.note = why.clone();
                    c.exit_code = out_code;
                    c.log_lines.clone_from(&lines);
                    c
                })
                .collect();
        }
    };
    let failure = worker_failure(&r);
    let audit = r.audit.as_ref();
    rows.iter()
        .map(|row| {
            let mut c = base(row);
            c.exit_code = out_code;
            if let Some((o, why)) = &failure {
                c.outcome = *o;
                c.note.clone_from(why);
                c.log_lines.clone_from(&lines);
                return c;
            }
            let Some(ap) = audit.and_then(|a| a.paths.iter().find(|x| x.path == row.path)) else {
                c.note = "the audit reported no such row".into();
                return c;
            };
            c.held_bytes = Some(ap.held_bytes);
            c.past_slice_bytes = (ap.past_slice_bytes > 0).then_some(ap.past_slice_bytes);
            c.refusal = ap
                .refusal
                .as_ref()
                .map(|e| format!("{} ({})", e.name, e.code));
            c.outcome = match ap.outcome {
                AuditOutcome::Capped => CellOutcome::Capped,
                AuditOutcome::Escaped => CellOutcome::Escaped,
                AuditOutcome::NoSlice | AuditOutcome::NotApplicable => CellOutcome::NotApplicable,
                // Stopped by an error that was not a refusal, or by its bound.
                AuditOutcome::Error if ap.refusal.is_some() => CellOutcome::Crashed,
                AuditOutcome::Error => CellOutcome::Hung,
            };
            c.note.clone_from(&ap.note);
            if let Some(d) = &ap.bypass {
                c.log_lines.clone_from(&d.log_lines);
                c.enforced_limit_bytes = d.region_limit_before_bytes;
            }
            for l in &lines {
                if c.log_lines.len() < 12 && !c.log_lines.contains(l) {
                    c.log_lines.push(l.clone());
                }
            }
            c
        })
        .collect()
}

/// A robustness cell from its bare worker (pure).
pub fn decide_robustness_cell(p: &CellPlan, end: &ChildEnd) -> ConformanceCell {
    let mut cell = blank(p);
    let out = match end {
        ChildEnd::Exited(o) => o,
        ChildEnd::TimedOut(after) => {
            cell.outcome = CellOutcome::Hung;
            cell.note = format!(
                "the worker did not finish within {}s and was killed",
                after.as_secs()
            );
            return cell;
        }
        ChildEnd::NotStarted(e) => {
            cell.outcome = CellOutcome::Crashed;
            cell.note = format!("the worker could not start: {e}");
            return cell;
        }
    };
    cell.exit_code = out.code;
    cell.log_lines = hami_lines(&out.stderr);
    let run = crate::worker::parse(&out.stdout)
        .ok()
        .and_then(|(w, _)| w.robustness.ok_or(w.error).ok());
    match run {
        Some(run) => {
            let (o, why) = crate::robustness::decide(&run, &cell.log_lines);
            cell.outcome = o;
            cell.note = why;
            cell.refusal = run.result.map(|e| format!("{} ({})", e.name, e.code));
        }
        None => {
            let how = out.code.map_or_else(
                || "was killed by a signal".to_owned(),
                |c| format!("exited {c}"),
            );
            let tail: Vec<&str> = out.stderr.lines().rev().take(3).collect();
            cell.outcome = CellOutcome::Crashed;
            cell.note = format!(
                "the worker {how} without a result during the call; stderr: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
    }
    cell
}

/// A compute cell from the child's `compute` report (pure).
pub fn decide_compute_cell(
    p: &CellPlan,
    end: &ChildEnd,
    report_file: Option<&str>,
) -> ConformanceCell {
    let mut cell = blank(p);
    if let ChildEnd::Exited(out) = end {
        cell.exit_code = out.code;
        cell.log_lines = hami_lines(&out.stderr);
    }
    let r = match child_report(end, report_file) {
        Ok(r) => r,
        Err((o, why)) => {
            cell.outcome = o;
            cell.note = why;
            return cell;
        }
    };
    if let Some((o, why)) = worker_failure(&r) {
        cell.outcome = o;
        cell.note = why;
        return cell;
    }
    let Some(c) = r.compute.as_ref().and_then(|c| c.comparison.clone()) else {
        cell.outcome = CellOutcome::Crashed;
        cell.note = r.checks.iter().find(|c| c.id == "compute").map_or_else(
            || "the child measured no throughput".into(),
            |c| c.reason.clone(),
        );
        return cell;
    };
    let band = c.band_percentage_points / 100.0;
    cell.outcome = if c.within_band {
        CellOutcome::Capped
    } else if c.ratio > c.expected_ratio + band {
        CellOutcome::Escaped
    } else {
        CellOutcome::Throttled
    };
    cell.note = format!(
        "{:.0}% of the baseline ({:.0} against {:.0} busy kernels/s); the band is {:.0}% ± {:.0} points",
        c.ratio * 100.0,
        c.limited_kernels_per_second,
        c.baseline_kernels_per_second,
        c.expected_ratio * 100.0,
        c.band_percentage_points
    );
    cell.compute = Some(c);
    cell
}

/// The cells a plan would have given, marked not run (the baseline gives none).
fn not_run(p: &CellPlan, why: &str) -> Vec<ConformanceCell> {
    let mut cells = match p.kind {
        CellKind::Baseline => Vec::new(),
        CellKind::Audit => audit_cells(p, &ChildEnd::NotStarted(String::new()), None),
        CellKind::Bypass => bypass_cells(p, &ChildEnd::NotStarted(String::new()), None),
        _ => vec![blank(p)],
    };
    for c in &mut cells {
        c.outcome = CellOutcome::NotApplicable;
        c.note = why.to_owned();
        c.exit_code = None;
        c.log_lines.clear();
    }
    cells
}

/// The check of one cell: failed when its outcome fails the claim, or when a spelling is read
/// other than the probe predicts; none for cells that are not applicable.
pub fn cell_check(c: &ConformanceCell) -> Option<Check> {
    if c.outcome == CellOutcome::NotApplicable {
        return None;
    }
    let mispredicted = c.group == CellGroup::Spellings
        && matches!((c.predicted_limit_bytes, c.enforced_limit_bytes), (Some(p), Some(e)) if p != e);
    let failed = c.outcome.is_failure() || mispredicted;
    Some(Check {
        id: format!("conformance.{}", c.id),
        claim: c.claim.clone(),
        status: if failed {
            CheckStatus::Failed
        } else {
            CheckStatus::Passed
        },
        reason: format!("{}: {}", c.outcome.word(), c.note),
        environment: false,
    })
}

/// Runs one child with the cell's environment: the parent's, less every HAMi-core variable,
/// plus the injection and the cell's own.
struct Child<'a> {
    runner: &'a dyn Runner,
    base_env: Vec<(String, String)>,
}

impl Child<'_> {
    fn cmd(
        &self,
        exe: &Path,
        args: &[String],
        extra: &[(String, String)],
        timeout: Duration,
    ) -> Cmd {
        let mut cmd = Cmd::new(exe.display().to_string())
            .args(args.iter().cloned())
            .timeout(timeout)
            .clear_env();
        for (k, v) in self.base_env.iter().chain(extra) {
            cmd = cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, cmd: &Cmd) -> ChildEnd {
        // A cell's progress is the matrix's; the child's own events are not its log.
        match crate::probe::run_relaying(
            self.runner,
            cmd,
            &lab_runner::progress::Progress::hidden(),
        ) {
            Ok(out) => ChildEnd::Exited(out),
            Err(RunError::TimedOut { after, .. }) => ChildEnd::TimedOut(after),
            Err(e) => ChildEnd::NotStarted(e.to_string()),
        }
    }
}

/// HAMi mounts the host's `/tmp/vgpulock` into every pod; HAMi-core before 7970f7f takes its
/// start-up lock there (`/tmp/vgpulock/lock`, created with O_EXCL) and, when it cannot, retries
/// 20 times for 1–5 s each: a host without the folder makes every process of those revisions wait
/// about a minute.
pub const VGPU_LOCK_DIR: &str = "/tmp/vgpulock";

/// Makes `dir` exist (mode 0777, as HAMi's mount), and says what was found or done.
pub fn ensure_lock_dir(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    if dir.is_dir() {
        return format!("{} present, as HAMi mounts it", dir.display());
    }
    let made = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)));
    match made {
        Ok(()) => format!(
            "{} created (mode 0777), as HAMi mounts it into pods; older HAMi-core waits about a minute at start without it",
            dir.display()
        ),
        Err(e) => format!(
            "{} is missing and could not be created ({e}): HAMi-core before 7970f7f waits about a minute at every start without it",
            dir.display()
        ),
    }
}

/// Whether an environment variable belongs to HAMi-core (never inherited by a cell).
fn is_hami_var(k: &str) -> bool {
    k.starts_with(limits::LIMIT_VAR)
        || k.starts_with("CUDA_DEVICE_SM_LIMIT")
        || matches!(
            k,
            "CUDA_DEVICE_MEMORY_SHARED_CACHE"
                | "GPU_CORE_UTILIZATION_POLICY"
                | "LD_PRELOAD"
                | "CUDA_REDIRECT"
                | "LIBCUDA_LOG_LEVEL"
                | "CUDA_TASK_PRIORITY"
        )
}

/// The card as this (not injected) process sees it: the seam the tests replace.
pub trait Card {
    fn devices(&self) -> Vec<ConformanceDevice>;
    /// Physical used memory per device.
    fn used(&self) -> Option<Vec<u64>>;
    fn free_mib(&self, device: u32) -> Option<u64>;
    fn driver_version(&self) -> Option<String>;
}

/// The real card, through NVML.
#[derive(Debug)]
pub struct NvmlCard(pub Option<Nvml>);

impl Card for NvmlCard {
    fn devices(&self) -> Vec<ConformanceDevice> {
        let Some(n) = &self.0 else {
            return Vec::new();
        };
        (0..n.device_count().unwrap_or(0))
            .map(|i| {
                let h = n.handle_by_index(i).ok();
                ConformanceDevice {
                    index: i,
                    name: h.and_then(|h| n.name(h).ok()),
                    uuid: h.and_then(|h| n.uuid(h).ok()),
                    total_bytes: h.and_then(|h| n.memory(h).ok()).map(|m| m.total),
                }
            })
            .collect()
    }
    fn used(&self) -> Option<Vec<u64>> {
        let n = self.0.as_ref()?;
        Some(
            (0..n.device_count().unwrap_or(0))
                .map(|i| {
                    n.handle_by_index(i)
                        .and_then(|h| n.memory(h))
                        .map_or(0, |m| m.used)
                })
                .collect(),
        )
    }
    fn free_mib(&self, device: u32) -> Option<u64> {
        let n = self.0.as_ref()?;
        n.handle_by_index(device)
            .and_then(|h| n.memory(h))
            .ok()
            .map(|m| m.free / MIB)
    }
    fn driver_version(&self) -> Option<String> {
        self.0.as_ref()?.driver_version().ok()
    }
}

/// Memory is back when every device's used memory is within 64 MiB of the start (waits up to
/// `settle` for the driver to release a dead child's memory).
fn freed(card: &dyn Card, start: &[u64], settle: Duration) -> Option<bool> {
    card.used()?;
    let deadline = Instant::now() + settle;
    loop {
        let now = card.used().unwrap_or_default();
        let ok = now
            .iter()
            .zip(start)
            .all(|(n, s)| n.saturating_sub(*s) <= 64 * MIB);
        if ok || Instant::now() >= deadline {
            return Some(ok);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sha256_file(path: &str) -> Option<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).ok()?;
    Some(
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Runs the matrix on the real card and returns the report (command `conformance`).
pub fn run(o: &ConformanceOptions, env: &BTreeMap<String, String>, runner: &dyn Runner) -> Report {
    run_on(o, env, runner, &NvmlCard(Nvml::init().ok()))
}

/// Runs the matrix against `card`.
pub fn run_on(
    o: &ConformanceOptions,
    env: &BTreeMap<String, String>,
    runner: &dyn Runner,
    card: &dyn Card,
) -> Report {
    let started = Instant::now();
    if !Path::new(&o.lib).is_file() {
        let check = Check {
            id: "conformance".into(),
            claim: format!("{} can be measured", o.lib),
            status: CheckStatus::Failed,
            reason: format!(
                "{} does not exist: name a libvgpu.so (on a HAMi node /usr/local/vgpu/libvgpu.so; or build one with `cargo xtask hami-core --src DIR`)",
                o.lib
            ),
            environment: true,
        };
        return Report::new("conformance", vec![check]);
    }
    let devices = card.devices();
    if devices.is_empty() {
        let check = Check {
            id: "conformance".into(),
            claim: format!("{} can be measured", o.lib),
            status: CheckStatus::Failed,
            reason: "NVML sees no GPU here: conformance needs the card the library will run on"
                .into(),
            environment: true,
        };
        return Report::new("conformance", vec![check]);
    }
    let lock_dir = ensure_lock_dir(&o.lock_dir);
    let base_env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !is_hami_var(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain([
            ("LD_PRELOAD".to_owned(), o.lib.clone()),
            ("CUDA_REDIRECT".to_owned(), o.lib.clone()),
            ("LIBCUDA_LOG_LEVEL".to_owned(), "1".to_owned()),
        ])
        .collect();
    let child = Child { runner, base_env };
    let root = std::env::temp_dir().join(format!("gpu-probe-conformance-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&root);
    let start_used = card.used().unwrap_or_default();
    let physical_free = card.free_mib(0);
    let plans = plan(&devices, o);
    let mut cells = Vec::new();
    let mut baseline: Option<f64> = None;
    let task = o
        .progress
        .task("conformance", Some(plans.len() as u64), "cells");
    for (i, p) in plans.iter().enumerate() {
        task.update(i as u64, &format!("{} ...", p.id));
        // Each cell gets its bound, cut to what is left of the matrix's budget.
        let left = o.budget.saturating_sub(started.elapsed());
        if left < Duration::from_secs(10) && !matches!(p.kind, CellKind::NeedsDevices(_)) {
            let why = format!(
                "not run: the matrix's time budget of {}s ran out (earlier cells hung or were slow)",
                o.budget.as_secs()
            );
            cells.extend(not_run(p, &why));
            task.update(i as u64 + 1, &format!("{}: not run (budget)", p.id));
            continue;
        }
        let cell_timeout = o.cell_timeout.min(left);
        let deadline_secs = cell_timeout.as_secs().saturating_sub(5).max(5);
        // The audit runs three children one after another: its in-process paths get a third.
        let time_bound = match p.kind {
            CellKind::Audit => (deadline_secs / 3).max(3),
            // Seven children one after another, each normally done in a second or two.
            CellKind::Bypass => (deadline_secs / 4).max(3),
            _ => deadline_secs,
        };
        let dir = root.join(format!("cell-{i}"));
        let _ = std::fs::create_dir_all(&dir);
        let region = dir.join("region.cache").display().to_string();
        let report_path = dir.join("report.json");
        let mut extra = p.env.clone();
        extra.push(("CUDA_DEVICE_MEMORY_SHARED_CACHE".into(), region.clone()));
        let common = |cmd: &str| -> Vec<String> {
            vec![
                cmd.to_owned(),
                "--output".into(),
                "json".into(),
                "--report-file".into(),
                report_path.display().to_string(),
                "--deadline-secs".into(),
                deadline_secs.to_string(),
                "--time-bound-secs".into(),
                time_bound.to_string(),
                "--progress-events".into(),
            ]
        };
        let t = Instant::now();
        let read_report = || std::fs::read_to_string(&report_path).ok();
        let mut produced: Vec<ConformanceCell> = match &p.kind {
            CellKind::NeedsDevices(n) => {
                let mut c = blank(p);
                c.note = format!(
                    "needs {n} visible devices; this machine shows {}",
                    devices.len()
                );
                vec![c]
            }
            CellKind::All { expect_mib } => {
                let mut args = common("all");
                if let Some(e) = expect_mib {
                    args.extend(["--expect-mib".into(), e.to_string()]);
                }
                let end = child.run(&child.cmd(&o.probe_exe, &args, &extra, cell_timeout));
                vec![decide_cap_cell(p, &end, read_report().as_deref())]
            }
            CellKind::Audit => {
                let mut args = common("audit");
                args.extend(["--rows".into(), "allocation".into()]);
                if let Some(f) = physical_free {
                    args.extend(["--physical-free-mib".into(), f.to_string()]);
                }
                let end = child.run(&child.cmd(&o.probe_exe, &args, &extra, cell_timeout));
                audit_cells(p, &end, read_report().as_deref())
            }
            CellKind::Bypass => {
                let mut args = common("audit");
                args.extend(["--rows".into(), "bypass".into()]);
                if let Some(prog) = &o.static_cudart {
                    args.extend(["--static-cudart".into(), prog.display().to_string()]);
                }
                let end = child.run(&child.cmd(&o.probe_exe, &args, &extra, cell_timeout));
                bypass_cells(p, &end, read_report().as_deref())
            }
            CellKind::Robustness(probe) => {
                let spec = crate::worker::WorkerSpec {
                    expected: Vec::new(),
                    run_cap: false,
                    ceiling_bytes: None,
                    resolution_bytes: 2 * MIB,
                    initial_step_bytes: 1024 * MIB,
                    time_bound_ms: 1000,
                    libraries: Vec::new(),
                    region_path: region.clone(),
                    audit: None,
                    overhead: false,
                    compute: None,
                    unlimited_ceiling_bytes: None,
                    robustness: Some(probe.clone()),
                    alarm_secs: Some(deadline_secs + 2),
                };
                let args = vec![
                    "__worker".to_owned(),
                    serde_json::to_string(&spec).unwrap_or_default(),
                ];
                let end = child.run(&child.cmd(&o.probe_exe, &args, &extra, cell_timeout));
                vec![decide_robustness_cell(p, &end)]
            }
            CellKind::Baseline => {
                let mut opts =
                    crate::probe::Options::new(crate::probe::Command::Compute, o.probe_exe.clone());
                opts.compute_seconds = o.compute_seconds;
                opts.deadline = Some(Instant::now() + Duration::from_secs(deadline_secs));
                let env_map: BTreeMap<String, String> =
                    child.base_env.iter().chain(&extra).cloned().collect();
                baseline = crate::probe::compute_baseline(&opts, &env_map, runner)
                    .ok()
                    .map(|(k, _)| k);
                Vec::new()
            }
            CellKind::Compute(_) => {
                let mut args = common("compute");
                args.extend(["--seconds".into(), o.compute_seconds.to_string()]);
                args.extend(["--sm-band-pct".into(), o.sm_band_pct.to_string()]);
                if let Some(b) = baseline {
                    args.extend(["--baseline-kps".into(), format!("{b:.3}")]);
                }
                let timeout = cell_timeout + Duration::from_secs_f64(o.compute_seconds * 2.0);
                let end = child.run(&child.cmd(&o.probe_exe, &args, &extra, timeout));
                vec![decide_compute_cell(p, &end, read_report().as_deref())]
            }
        };
        let seconds = t.elapsed().as_secs_f64();
        let back = if matches!(p.kind, CellKind::NeedsDevices(_)) {
            None
        } else {
            freed(card, &start_used, o.settle)
        };
        for c in &mut produced {
            c.seconds = seconds;
            c.freed = back;
            if back == Some(false) {
                c.note.push_str(&format!(
                    "; the card's memory was NOT back within {:.1} s of the child's end",
                    o.settle.as_secs_f64()
                ));
            }
        }
        let outcomes: Vec<&str> = produced.iter().map(|c| c.outcome.word()).collect();
        let outcome = if outcomes.is_empty() {
            "measured".to_owned()
        } else {
            outcomes.join(", ")
        };
        task.update(
            i as u64 + 1,
            &format!("{}: {outcome} in {seconds:.1} s", p.id),
        );
        cells.extend(produced);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&root);
    let checks: Vec<Check> = cells.iter().filter_map(cell_check).collect();
    let failed = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Failed)
        .count();
    task.finish(&format!(
        "{} cells, {failed} failed, {:.1} s",
        cells.len(),
        started.elapsed().as_secs_f64()
    ));
    let all_freed = cells.iter().all(|c| c.freed != Some(false));
    let mut report = Report::new("conformance", checks);
    report.verdict.summary = format!(
        "{} — {} ({})",
        report.verdict.summary,
        o.lib,
        o.revision.as_deref().unwrap_or("revision not given")
    );
    report.conformance = Some(ConformanceSection {
        library: o.lib.clone(),
        library_sha256: sha256_file(&o.lib),
        revision: o.revision.clone(),
        injection: format!(
            "LD_PRELOAD and CUDA_REDIRECT naming the library (as /etc/ld.so.preload does in a HAMi pod; a child with a cleared environment keeps them), LIBCUDA_LOG_LEVEL=1, a fresh CUDA_DEVICE_MEMORY_SHARED_CACHE per cell; {lock_dir}"
        ),
        devices,
        cells,
        seconds: started.elapsed().as_secs_f64(),
        all_freed,
    });
    report.driver.driver_version = card.driver_version();
    report
}

/// The verdict of a conformance report in one word per cell group, for people.
pub fn human(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let Some(c) = &r.conformance else {
        return crate::human::render(r);
    };
    let _ = writeln!(
        s,
        "gpu-probe {} — conformance of {} ({})",
        r.tool_version,
        c.library,
        c.revision.as_deref().unwrap_or("revision not given")
    );
    let _ = writeln!(
        s,
        "  driver {}; {} device(s): {}; {:.1}s",
        r.driver.driver_version.as_deref().unwrap_or("unknown"),
        c.devices.len(),
        c.devices
            .iter()
            .map(|d| format!(
                "{} {}",
                d.name.as_deref().unwrap_or("?"),
                d.total_bytes.map_or_else(|| "?".into(), m)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        c.seconds
    );
    let _ = writeln!(s, "  injection: {}\n", c.injection);
    let _ = writeln!(
        s,
        "{:<40} {:<10} {:>9} {:>9}  note",
        "cell", "outcome", "held", "slice"
    );
    let mut group = None;
    for cell in &c.cells {
        if group != Some(cell.group) {
            let _ = writeln!(s, "-- {}", cell.group.label());
            group = Some(cell.group);
        }
        let _ = writeln!(
            s,
            "{:<40} {:<10} {:>9} {:>9}  {}",
            cell.id,
            cell.outcome.word(),
            cell.held_bytes
                .map_or_else(|| "-".into(), |b| format!("{:.0}", mib(b))),
            cell.slice_bytes
                .map_or_else(|| "-".into(), |b| format!("{:.0}", mib(b))),
            cell.note
        );
        for l in cell.log_lines.iter().take(2) {
            let _ = writeln!(s, "{:<40} log: {l}", "");
        }
    }
    let _ = writeln!(s, "\n{}", r.verdict.summary);
    let _ = writeln!(
        s,
        "memory back after every cell: {}",
        if c.all_freed { "yes" } else { "NO" }
    );
    let _ = writeln!(s, "note: {}", r.scope_note);
    s
}

/// The README's per-revision matrix: one row per cell, one column per report (pure; the README
/// block between the markers is this text, checked by a test).
pub fn markdown_matrix(reports: &[(String, &ConformanceSection)]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = write!(s, "| cell |");
    for (name, _) in reports {
        let _ = write!(s, " {name} |");
    }
    let _ = write!(s, "\n|---|");
    for _ in reports {
        let _ = write!(s, "---|");
    }
    s.push('\n');
    let mut ids: Vec<(CellGroup, String, String)> = Vec::new();
    for (_, c) in reports {
        for cell in &c.cells {
            if !ids.iter().any(|(_, id, _)| *id == cell.id) {
                ids.push((cell.group, cell.id.clone(), cell.title.clone()));
            }
        }
    }
    for (_, id, title) in &ids {
        let _ = write!(s, "| `{id}` {} |", title.replace('|', "\\|"));
        for (_, c) in reports {
            let entry = c.cells.iter().find(|x| x.id == *id).map_or_else(
                || "—".to_owned(),
                |x| {
                    let numbers = match (&x.compute, x.held_bytes, x.slice_bytes) {
                        _ if x.outcome == CellOutcome::NotApplicable => String::new(),
                        (Some(cmp), _, _) => format!(" {:.0}%", cmp.ratio * 100.0),
                        (None, Some(h), Some(sl)) => format!(" {:.0}/{:.0}", mib(h), mib(sl)),
                        (None, Some(h), None) => format!(" {:.0} MiB", mib(h)),
                        _ => String::new(),
                    };
                    let word = match x.outcome {
                        CellOutcome::NotApplicable if x.note.starts_with("not run") => "not run",
                        // Reports made before a killed bypass child counted as hung say so only
                        // in the note.
                        CellOutcome::NotApplicable if x.note.contains("did not finish within") => {
                            "n/a (its child was killed at its bound)"
                        }
                        o => o.word(),
                    };
                    format!("{word}{numbers}")
                },
            );
            let _ = write!(s, " {entry} |");
        }
        s.push('\n');
    }
    s
}

/// Whether the library passed the matrix (for callers that only want the word).
pub fn passed(r: &Report) -> bool {
    r.verdict.outcome == Outcome::Verified
}

#[cfg(test)]
mod tests;
