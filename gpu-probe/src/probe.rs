//! Orchestration: gathers the facts (NVML here, CUDA in the worker child, nvidia-smi, the
//! mechanism files), decides each check, and assembles the report. The decisions themselves live
//! in `view`, `cap` and `mechanism`; this module only wires them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use lab_runner::progress::{self, Progress, Task};
use lab_runner::{Cmd, Runner};

use crate::ffi::nvml::Nvml;
use crate::hamicore;
use crate::limits::{self, SliceRequest};
use crate::mechanism;
use crate::report::{
    CapDevice, CapOutcome, CapSection, Check, CheckStatus, ComputeSection, DriverInfo,
    ExpectedSlice, HostInfo, MIB, MechanismOutcome, MechanismSection, MemInfo, Report, ViewDevice,
    ViewOutcome, ViewSection, mib,
};
use crate::report_conformance::{ComputeComparison, MethodSection, MpsFacts, SharingMethod};
use crate::smi;
use crate::view;
use crate::worker::{self, WorkerOutput, WorkerSpec};

/// HAMi-core indexes at most 16 devices.
const MAX_DEVICES: u32 = 16;
/// nvidia-smi and the MPS control answer within seconds; past this they are hung.
const SMI_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    All,
    View,
    Cap,
    Mechanism,
    Audit,
    Overhead,
    Compute,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::View => "view",
            Self::Cap => "cap",
            Self::Mechanism => "mechanism",
            Self::Audit => "audit",
            Self::Overhead => "overhead",
            Self::Compute => "compute",
        }
    }
    fn view(self) -> bool {
        matches!(self, Self::All | Self::View)
    }
    fn cap(self) -> bool {
        matches!(self, Self::All | Self::Cap)
    }
    fn mechanism(self) -> bool {
        matches!(self, Self::All | Self::Mechanism)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub command: Command,
    pub slice: SliceRequest,
    pub ceiling_mib: Option<u64>,
    pub resolution_mib: u64,
    pub step_mib: u64,
    pub time_bound: Duration,
    pub nvidia_smi: bool,
    /// The executable started as the worker (normally this very binary).
    pub worker_exe: PathBuf,
    /// `compute`: how long to run the busy kernel.
    pub compute_seconds: f64,
    /// `audit`: which device.
    pub audit_device: u32,
    /// When everything this probe starts must have ended (a conformance cell gives its
    /// deadline): the children share it, so a slow one leaves the rest less, and the probe
    /// still reports in time. `None`: each child has its own bound.
    pub deadline: Option<std::time::Instant>,
    /// `compute`: the band around the expected throughput ratio, in percentage points.
    pub sm_band_pct: f64,
    /// `compute`: a baseline (busy kernels/s) the caller measured in the same run; skips the
    /// baseline child.
    pub baseline_kps: Option<f64>,
    /// `audit`: the card's physical free memory in MiB, when the caller knows it and NVML here
    /// is virtualized (lets the managed-memory path be tried safely).
    pub physical_free_mib: Option<u64>,
    /// Where the long work shows how far it got (the cap search's steps, the audit's paths).
    pub progress: Progress,
    /// `audit`: which rows run, and the static-cudart program of its bypass row.
    pub bypass: crate::bypass::BypassOptions,
}

impl Options {
    /// The default options of a command (as the CLI gives them).
    pub fn new(command: Command, worker_exe: PathBuf) -> Self {
        Self {
            command,
            slice: SliceRequest::FromEnv,
            ceiling_mib: None,
            resolution_mib: 2,
            step_mib: 1024,
            time_bound: Duration::from_secs(120),
            nvidia_smi: true,
            worker_exe,
            compute_seconds: 5.0,
            audit_device: 0,
            deadline: None,
            sm_band_pct: DEFAULT_SM_BAND_PCT,
            baseline_kps: None,
            physical_free_mib: None,
            progress: Progress::hidden(),
            bypass: crate::bypass::BypassOptions::default(),
        }
    }

    /// A child's timeout: its own `limit`, cut to what is left until the deadline (at least a
    /// second, so the child can still say why it failed).
    pub fn bound(&self, limit: Duration) -> Duration {
        self.deadline.map_or(limit, |d| {
            d.saturating_duration_since(std::time::Instant::now())
                .max(Duration::from_secs(1))
                .min(limit)
        })
    }

    /// Seconds a worker may live before it ends itself (`alarm`), when a deadline is set.
    fn worker_alarm(&self) -> Option<u64> {
        self.deadline
            .map(|_| self.bound(Duration::from_secs(3600)).as_secs() + 2)
    }
}

/// The default band of the SM-limit check: ±10 percentage points around the expected ratio.
pub const DEFAULT_SM_BAND_PCT: f64 = 10.0;

/// What the worker run gave back, with its stderr split.
#[derive(Debug, Default)]
struct WorkerRun {
    output: Option<WorkerOutput>,
    failure: Option<String>,
    ooms: Vec<crate::report::OomLine>,
    other_stderr: Vec<String>,
}

/// Runs the probe. `env` is the process environment (passed in so tests control it).
pub fn run(opts: &Options, env: &BTreeMap<String, String>, runner: &dyn Runner) -> Report {
    let started_at_unix = crate::report::now_unix();
    let mut checks = Vec::new();
    let mut driver = DriverInfo::default();

    // Expected slices, by CUDA ordinal. A malformed limit is a failed claim with its own check.
    let mut expected: Vec<Option<ExpectedSlice>> = Vec::new();
    let mut limit_errors = Vec::new();
    for i in 0..MAX_DEVICES {
        match limits::expected_slice(i, &opts.slice, env) {
            Ok(e) => expected.push(e),
            Err(e) => {
                limit_errors.push(e.to_string());
                expected.push(None);
            }
        }
    }
    if !limit_errors.is_empty() {
        checks.push(Check {
            id: "limits".into(),
            claim: "The memory-limit environment is well-formed".into(),
            status: CheckStatus::Failed,
            reason: limit_errors.join("; "),
            environment: false,
        });
    }

    // NVML, in this process: it creates no CUDA context, so nothing is charged to the slice.
    let nvml = match Nvml::init() {
        Ok(n) => Some(n),
        Err(e) => {
            driver.nvml_error = Some(e.to_string());
            None
        }
    };
    if let Some(n) = &nvml {
        driver.driver_version = n.driver_version().ok();
    }

    // CUDA MPS: a pinned device memory limit is the slice when no HAMi-core limit is set.
    let (mut mps, mps_errors) = crate::method::mps_env(env);
    let pipe = std::path::Path::new(&mps.pipe_directory);
    let (running, answered) = crate::method::control_daemon_probe(pipe);
    mps.control_socket = running;
    if pipe.join("control").exists() {
        mps.control_answers.push(answered);
    }
    if !mps_errors.is_empty() {
        checks.push(Check {
            id: "limits".into(),
            claim: "The memory-limit environment is well-formed".into(),
            status: CheckStatus::Failed,
            reason: mps_errors.join("; "),
            environment: false,
        });
    }
    let hami_limit_env = env.keys().any(|k| k.starts_with(limits::LIMIT_VAR));
    if opts.slice == SliceRequest::FromEnv && !hami_limit_env {
        if mps.pinned_limits.is_empty() && mps.control_socket {
            let count = nvml
                .as_ref()
                .and_then(|n| n.device_count().ok())
                .unwrap_or(1);
            query_mps_control(opts, &mut mps, count, env, runner);
        }
        for l in &mps.pinned_limits {
            if let Some(slot) = expected.get_mut(l.device as usize) {
                *slot = Some(ExpectedSlice {
                    device: l.device,
                    bytes: l.bytes,
                    source: l.source.clone(),
                    raw: l.raw.clone(),
                });
            }
        }
    }
    // A device without a slice while another has one: the hole is searched only up to the
    // largest slice × 1.25, enough to show nothing holds it.
    let largest_slice = expected.iter().flatten().map(|e| e.bytes).max();
    let unlimited_ceiling = largest_slice.map(|s| s + s / 4);

    // Static mechanism facts, gathered before CUDA starts anywhere.
    let preload = mechanism::read_preload(std::path::Path::new(mechanism::PRELOAD_PATH));
    let libraries = mechanism::injected_libraries(&preload, env);
    let (region_path, region_source) = mechanism::region_path(env);

    let spec = WorkerSpec {
        expected: expected
            .iter()
            .map(|e| e.as_ref().map(|s| s.bytes))
            .collect(),
        run_cap: opts.command.cap(),
        ceiling_bytes: opts.ceiling_mib.map(|c| c * MIB),
        resolution_bytes: opts.resolution_mib * MIB,
        initial_step_bytes: opts.step_mib * MIB,
        time_bound_ms: u64::try_from(opts.time_bound.as_millis()).unwrap_or(u64::MAX),
        libraries: libraries.iter().map(|(p, _)| p.clone()).collect(),
        region_path: region_path.clone(),
        audit: (opts.command == Command::Audit).then(|| {
            let slice = expected
                .get(opts.audit_device as usize)
                .cloned()
                .flatten()
                .map(|e| e.bytes);
            worker::AuditSpec {
                device: opts.audit_device,
                slice_bytes: slice,
                target_bytes: audit_target(opts, slice),
                time_bound_ms: u64::try_from(opts.time_bound.as_millis()).unwrap_or(u64::MAX),
                physical_free_bytes: opts.physical_free_mib.map(|m| m * MIB),
                later_paths: later_audit_paths(opts),
                skip_paths: !opts.bypass.rows.allocation(),
            }
        }),
        overhead: opts.command == Command::Overhead,
        compute: (opts.command == Command::Compute).then(|| worker::ComputeSpec {
            seconds: opts.compute_seconds,
            hami_injected: !libraries.is_empty(),
            sm_limit: sm_limit(env),
            policy: env.get("GPU_CORE_UTILIZATION_POLICY").cloned(),
        }),
        unlimited_ceiling_bytes: unlimited_ceiling,
        robustness: None,
        alarm_secs: opts.worker_alarm(),
    };
    // The worker's audit events continue this task; the parent adds its own two paths.
    let audit_task = spec
        .audit
        .as_ref()
        .map(|_| opts.progress.task("audit", None, "paths"));
    let wrun = run_worker(opts, &spec, runner);
    let wout = wrun.output.clone().unwrap_or_default();
    driver.cuda_driver_version = wout.cuda_driver_version;
    let cuda_error = wrun.failure.clone().or(wout.error.clone());
    driver.cuda_error.clone_from(&cuda_error);
    if let Some(e) = &cuda_error {
        checks.push(Check {
            id: "cuda".into(),
            claim: "The CUDA driver starts and sees a GPU".into(),
            status: CheckStatus::Failed,
            reason: e.clone(),
            environment: true,
        });
    } else if wout.devices.is_empty() {
        checks.push(Check {
            id: "cuda".into(),
            claim: "The CUDA driver starts and sees a GPU".into(),
            status: CheckStatus::Failed,
            reason: "CUDA started but no device is visible (NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES)".into(),
            environment: true,
        });
    }

    let smi_out = (opts.command.view() && opts.nvidia_smi)
        .then(|| smi::query(runner, opts.bound(SMI_TIMEOUT)))
        .flatten();

    // The mechanism facts are gathered for every command: the sharing method decides how the
    // view and the cap are judged.
    let cuda_ran = wrun.output.as_ref().is_some_and(|o| o.error.is_none());
    let mut mech = MechanismSection {
        env: mechanism::hami_env(env),
        libraries: mechanism::library_checks(&libraries, &wout.mapped, cuda_ran, &wout.symbols),
        ld_so_preload: preload.clone(),
        shared_region: mechanism::check_region(&region_path, &region_source),
        outcome: MechanismOutcome::Absent,
        reasons: Vec::new(),
    };
    mech.shared_region.mapped_after_cuda_init =
        cuda_ran.then(|| wout.mapped.contains(&region_path));
    let (outcome, reasons) = mechanism::decide(&mech);
    mech.outcome = outcome;
    mech.reasons = reasons;
    mps_client(&mut mps, &wout);
    let listing = ((opts.command.view() || opts.command.mechanism()) && opts.nvidia_smi)
        .then(|| smi::list(runner, opts.bound(SMI_TIMEOUT)))
        .flatten();
    let method = crate::method::decide(&crate::method::Facts {
        hami: Some(mech.outcome),
        hami_reason: mech.reasons.first().cloned(),
        mps,
        smi_listing: listing,
        mig_mode: nvml
            .as_ref()
            .map(|n| {
                (0..n.device_count().unwrap_or(0))
                    .map(|i| n.handle_by_index(i).ok().and_then(|h| n.mig_enabled(h)))
                    .collect()
            })
            .unwrap_or_default(),
        cuda_names: wout.devices.iter().filter_map(|d| d.name.clone()).collect(),
        visible_devices: ["NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"]
            .iter()
            .filter_map(|k| env.get(*k))
            .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
            .collect(),
    });
    let sharing = method.method;
    // A device without a slice while HAMi-core limits another one is a hole, not a skip.
    let hole = |index: u32| -> Option<(u32, u64)> {
        if sharing != SharingMethod::HamiCore
            || expected.get(index as usize).is_some_and(Option::is_some)
        {
            return None;
        }
        expected
            .iter()
            .flatten()
            .find(|e| e.source.starts_with(limits::LIMIT_VAR))
            .map(|e| (e.device, e.bytes))
    };

    let view_section = opts.command.view().then(|| {
        let mut devices = view_devices(&wout, nvml.as_ref(), smi_out.as_ref(), &expected);
        if sharing == SharingMethod::CudaMps {
            for d in &mut devices {
                let (outcome, reasons) = view::decide_mps(d);
                d.outcome = outcome;
                d.reasons = reasons;
            }
        }
        for d in &devices {
            checks.push(view_check(d, sharing, hole(d.index)));
        }
        ViewSection {
            devices,
            nvidia_smi: smi_out.clone(),
        }
    });

    let cap_section = opts.command.cap().then(|| {
        let devices: Vec<CapDevice> = wout
            .caps
            .iter()
            .map(|c| {
                cap_device(
                    c,
                    expected.get(c.device as usize).cloned().flatten(),
                    &wrun,
                    sharing,
                )
            })
            .collect();
        for d in &devices {
            checks.push(cap_check(d, hole(d.index)));
        }
        CapSection { devices }
    });

    let mechanism_section = opts.command.mechanism().then(|| {
        checks.push(mechanism_check(&mech, &method));
        mech.clone()
    });

    let audit_section = (opts.command == Command::Audit && cuda_error.is_none()).then(|| {
        let a = spec.audit.clone().unwrap_or(worker::AuditSpec {
            device: 0,
            slice_bytes: None,
            target_bytes: 0,
            time_bound_ms: 0,
            physical_free_bytes: None,
            later_paths: 0,
            skip_paths: false,
        });
        let task = audit_task.clone().unwrap_or_else(Task::hidden);
        let section = audit_section(opts, &a, &wout, env, runner, &task);
        for p in &section.paths {
            checks.push(audit_check(p));
        }
        section
    });
    let overhead_section = wout.overhead.clone();
    if opts.command == Command::Overhead && cuda_error.is_none() {
        checks.push(match &overhead_section {
            Some(o) => Check {
                id: "overhead".into(),
                claim: "Allocation, launch and copy costs were measured".into(),
                status: CheckStatus::Passed,
                reason: crate::human::overhead_line(o),
                environment: false,
            },
            None => Check {
                id: "overhead".into(),
                claim: "Allocation, launch and copy costs were measured".into(),
                status: CheckStatus::Failed,
                reason: "no device could be measured".into(),
                environment: true,
            },
        });
    }
    let compute_section = match wout.compute.clone() {
        Some(Ok(mut c)) => {
            let baseline = match opts.baseline_kps {
                Some(k) => Ok((
                    k,
                    "given by the caller, measured without the limit in the same run".to_owned(),
                )),
                None => compute_baseline(opts, env, runner),
            };
            let (check, comparison) =
                compute_check(&c, baseline, opts.sm_band_pct, !libraries.is_empty());
            c.comparison = comparison;
            checks.push(check);
            Some(c)
        }
        Some(Err(e)) => {
            checks.push(Check {
                id: "compute".into(),
                claim: "Compute throughput was measured against the SM limit".into(),
                status: CheckStatus::Failed,
                reason: e,
                environment: true,
            });
            None
        }
        None => None,
    };

    let used_devices = wout.devices.len().max(
        nvml.as_ref()
            .and_then(|n| n.device_count().ok())
            .unwrap_or(0) as usize,
    );
    let mut report = Report::new(opts.command.name(), checks);
    if cuda_error.is_none() {
        report.verdict.summary = format!(
            "{} — sharing method: {}",
            report.verdict.summary,
            sharing.label()
        );
        report.scope_note = crate::method::scope_note(sharing);
    }
    report.method = Some(method);
    report.started_at_unix = started_at_unix;
    report.host = host_info();
    report.driver = driver;
    report.expected = expected
        .into_iter()
        .take(used_devices.max(1))
        .flatten()
        .collect();
    report.view = view_section;
    report.cap = cap_section;
    report.mechanism = mechanism_section;
    report.audit = audit_section;
    report.overhead = overhead_section;
    report.compute = compute_section;
    report
}

/// How many audit rows the parent runs after the worker: two processes sharing the slice (with the
/// allocation rows), and each bypass row (each in its own child).
fn later_audit_paths(opts: &Options) -> u64 {
    let shared = u64::from(opts.bypass.rows.allocation());
    let bypass = if opts.bypass.rows.bypass() {
        crate::bypass::ROWS.len() as u64
    } else {
        0
    };
    shared + bypass
}

/// What each audit path tries to hold: the ceiling if given, else slice × 1.25, else 4 GiB.
fn audit_target(opts: &Options, slice: Option<u64>) -> u64 {
    worker::slice_ceiling(opts.ceiling_mib.map(|c| c * MIB), slice).map_or(4096 * MIB, |(c, _)| c)
}

fn audit_section(
    opts: &Options,
    a: &worker::AuditSpec,
    wout: &WorkerOutput,
    env: &BTreeMap<String, String>,
    runner: &dyn Runner,
    task: &Task,
) -> crate::report::AuditSection {
    let started = std::time::Instant::now();
    let mut runs = Vec::new();
    let held = |r: &crate::audit::PathRun| {
        if r.not_applicable.is_some() {
            format!("{}: not applicable", r.path)
        } else {
            format!("{}: held {} MiB", r.path, r.held_bytes / MIB)
        }
    };
    if opts.bypass.rows.allocation() {
        runs.clone_from(&wout.audit_runs);
        let holder = a.slice_bytes.map_or(2048 * MIB, |s| s / 2);
        let shared = two_processes(
            opts,
            a.device,
            holder,
            a.slice_bytes,
            a.target_bytes,
            runner,
            &[],
        )
        .0;
        task.inc(&held(&shared));
        runs.push(shared);
    }
    let mut paths: Vec<_> = runs
        .iter()
        .map(|r| crate::audit::decide(r, a.slice_bytes))
        .collect();
    // The ways around HAMi-core, each in its own bounded child (the cleared-environment child
    // among them).
    if opts.bypass.rows.bypass() {
        for p in crate::bypass::run_rows(opts, a, env, runner) {
            let outcome = match p.outcome {
                crate::report::AuditOutcome::Capped => "capped".to_owned(),
                crate::report::AuditOutcome::Escaped => {
                    format!("ESCAPED, held {} MiB", p.held_bytes / MIB)
                }
                crate::report::AuditOutcome::NoSlice => "no slice".to_owned(),
                crate::report::AuditOutcome::NotApplicable => "not applicable".to_owned(),
                crate::report::AuditOutcome::Error => "error".to_owned(),
            };
            task.inc(&format!("{}: {outcome}", p.path));
            paths.push(p);
        }
    }
    let escaped = paths
        .iter()
        .filter(|p| p.outcome == crate::report::AuditOutcome::Escaped)
        .count();
    let capped = paths
        .iter()
        .filter(|p| p.outcome == crate::report::AuditOutcome::Capped)
        .count();
    task.finish(&format!("{capped} capped, {escaped} escaped"));
    crate::report::AuditSection {
        device: a.device,
        slice_bytes: a.slice_bytes,
        target_bytes: a.target_bytes,
        time_bound_hit: paths.iter().any(|p| p.note.contains("time bound ran out")),
        paths,
        seconds: started.elapsed().as_secs_f64(),
    }
}

pub(crate) fn cap_only_spec(
    device: u32,
    slice: Option<u64>,
    target: u64,
    opts: &Options,
) -> WorkerSpec {
    let mut expected = vec![None; device as usize + 1];
    expected[device as usize] = slice;
    WorkerSpec {
        expected,
        run_cap: true,
        ceiling_bytes: Some(target),
        resolution_bytes: 64 * MIB,
        initial_step_bytes: opts.step_mib * MIB,
        time_bound_ms: u64::try_from(opts.time_bound.as_millis()).unwrap_or(u64::MAX),
        libraries: Vec::new(),
        region_path: String::new(),
        audit: None,
        overhead: false,
        compute: None,
        unlimited_ceiling_bytes: None,
        robustness: None,
        alarm_secs: opts.worker_alarm(),
    }
}

fn worker_cap_run(
    name: &str,
    cmd: &Cmd,
    device: u32,
    runner: &dyn Runner,
) -> crate::audit::PathRun {
    let not_applicable = |why: String| crate::audit::PathRun::not_tried(name, why);
    let out = match runner.run(cmd) {
        Ok(o) => o,
        Err(e) => return not_applicable(format!("could not run: {e}")),
    };
    match worker::parse(&out.stdout) {
        Ok((w, _)) => match w.caps.iter().find(|c| c.device == device) {
            Some(c) => crate::audit::PathRun {
                path: name.into(),
                not_applicable: None,
                held_bytes: c.held,
                first_refusal: c.first_refusal.clone().or(c.unexpected.clone()),
                calls: u32::try_from(c.steps.len()).unwrap_or(u32::MAX),
                all_freed: c.all_freed,
            },
            None => not_applicable(
                w.error
                    .unwrap_or_else(|| "the child saw no such device".into()),
            ),
        },
        Err(e) => not_applicable(e),
    }
}

/// Two processes of the same container: a holder keeps `holder_bytes`, a prober searches.
/// Returns the prober's run (its `held_bytes` is the sum of both) and what the holder held.
pub fn two_processes(
    opts: &Options,
    device: u32,
    holder_bytes: u64,
    slice: Option<u64>,
    target: u64,
    runner: &dyn Runner,
    extra_env: &[(String, String)],
) -> (crate::audit::PathRun, u64) {
    let name = "second process of the same container (cuMemAlloc_v2)";
    let dir =
        std::env::temp_dir().join(format!("gpu-probe-share-{}-{}", std::process::id(), device));
    let _ = std::fs::create_dir_all(&dir);
    let (ready, release) = (dir.join("ready"), dir.join("release"));
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&release);
    let with_env = |mut cmd: Cmd| {
        for (k, v) in extra_env {
            cmd = cmd.env(k, v);
        }
        cmd
    };
    let holder_cmd = with_env(
        Cmd::new(opts.worker_exe.display().to_string())
            .arg("__hold")
            .args([device.to_string(), holder_bytes.to_string()])
            .args([ready.display().to_string(), release.display().to_string()])
            .arg(
                opts.bound(opts.time_bound + Duration::from_secs(60))
                    .as_millis()
                    .to_string(),
            )
            .timeout(opts.bound(opts.time_bound + Duration::from_secs(90))),
    );
    let prober_cmd = with_env(
        Cmd::new(opts.worker_exe.display().to_string())
            .arg("__worker")
            .arg(
                serde_json::to_string(&cap_only_spec(device, slice, target, opts))
                    .unwrap_or_default(),
            )
            .timeout(opts.bound(opts.time_bound + Duration::from_secs(60))),
    );
    let (run, held) = std::thread::scope(|scope| {
        let holder = scope.spawn(|| runner.run(&holder_cmd));
        let waited = std::time::Instant::now();
        while !ready.exists() && !holder.is_finished() && waited.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let held: u64 = std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let mut run = if held == 0 {
            crate::audit::PathRun::not_tried(name, "the holder process could not hold memory")
        } else {
            worker_cap_run(name, &prober_cmd, device, runner)
        };
        let _ = std::fs::write(&release, "");
        let _ = holder.join();
        if run.not_applicable.is_none() {
            run.held_bytes += held;
        }
        (run, held)
    });
    let _ = std::fs::remove_dir_all(&dir);
    (run, held)
}

fn audit_check(p: &crate::report::AuditPath) -> Check {
    use crate::report::AuditOutcome;
    let status = match p.outcome {
        AuditOutcome::Capped => CheckStatus::Passed,
        AuditOutcome::Escaped => CheckStatus::Failed,
        AuditOutcome::NoSlice | AuditOutcome::NotApplicable | AuditOutcome::Error => {
            CheckStatus::Skipped
        }
    };
    Check {
        id: crate::audit::check_id(&p.path),
        claim: format!("{} cannot hold more than the slice", p.path),
        status,
        reason: format!("{:?}: {}", p.outcome, p.note),
        environment: false,
    }
}

/// Runs a gpu-probe child (a worker, or a probe given `--progress-events`): its progress events
/// are shown as `progress`'s own while it runs, and its stderr comes back without them.
pub fn run_relaying(
    runner: &dyn Runner,
    cmd: &Cmd,
    progress: &Progress,
) -> Result<lab_runner::Output, lab_runner::RunError> {
    let mut out = runner.run_streaming(cmd, &mut |line| {
        progress.relay(line);
    })?;
    out.stderr = progress::strip_events(&out.stderr);
    Ok(out)
}

fn run_worker(opts: &Options, spec: &WorkerSpec, runner: &dyn Runner) -> WorkerRun {
    let spec_json = match serde_json::to_string(spec) {
        Ok(s) => s,
        Err(e) => {
            return WorkerRun {
                failure: Some(format!("internal: {e}")),
                ..WorkerRun::default()
            };
        }
    };
    let cmd = Cmd::new(opts.worker_exe.display().to_string())
        .arg("__worker")
        .arg(spec_json)
        // The search has its own bound; this one only guards against a hung driver.
        .timeout(opts.bound(opts.time_bound + Duration::from_secs(120)));
    let out = match run_relaying(runner, &cmd, &opts.progress) {
        Ok(o) => o,
        Err(e) => {
            return WorkerRun {
                failure: Some(format!("the CUDA worker could not run: {e}")),
                ..WorkerRun::default()
            };
        }
    };
    let (ooms, mut other_stderr) = hamicore::split_stderr(&out.stderr);
    match worker::parse(&out.stdout) {
        Ok((output, stray)) => {
            other_stderr.extend(stray);
            WorkerRun {
                output: Some(output),
                failure: None,
                ooms,
                other_stderr,
            }
        }
        Err(e) => {
            let tail: Vec<&str> = out.stderr.lines().rev().take(5).collect();
            let why = format!(
                "{e}; exit {:?}; stderr: {}",
                out.code,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
            WorkerRun {
                output: None,
                failure: Some(why),
                ooms,
                other_stderr,
            }
        }
    }
}

fn view_devices(
    wout: &WorkerOutput,
    nvml: Option<&Nvml>,
    smi_out: Option<&crate::report::NvidiaSmi>,
    expected: &[Option<ExpectedSlice>],
) -> Vec<ViewDevice> {
    let nvml_mem = |uuid: Option<&str>, index: u32| -> Option<MemInfo> {
        let n = nvml?;
        let h = match uuid {
            Some(u) => n.handle_by_uuid(u).ok()?,
            None => n.handle_by_index(index).ok()?,
        };
        n.memory(h).ok()
    };
    let smi_total = |uuid: Option<&str>| -> Option<u64> {
        let u = uuid?;
        smi_out?
            .rows
            .iter()
            .find(|r| r.uuid == u)
            .map(|r| r.total_mib)
    };
    let mut devices: Vec<ViewDevice> = if wout.devices.is_empty() {
        // CUDA gave nothing: show what NVML sees, by NVML index.
        let count = nvml.and_then(|n| n.device_count().ok()).unwrap_or(0);
        (0..count)
            .map(|i| {
                let h = nvml.and_then(|n| n.handle_by_index(i).ok());
                let uuid = h.and_then(|h| nvml.and_then(|n| n.uuid(h).ok()));
                ViewDevice {
                    index: i,
                    name: h.and_then(|h| nvml.and_then(|n| n.name(h).ok())),
                    nvml: nvml_mem(uuid.as_deref(), i),
                    nvidia_smi_total_mib: smi_total(uuid.as_deref()),
                    uuid,
                    cuda_total_mem: None,
                    cuda_mem_info: None,
                    expected_bytes: expected.get(i as usize).cloned().flatten().map(|e| e.bytes),
                    outcome: ViewOutcome::NoData,
                    reasons: Vec::new(),
                }
            })
            .collect()
    } else {
        wout.devices
            .iter()
            .map(|d| ViewDevice {
                index: d.ordinal,
                name: d.name.clone(),
                uuid: d.uuid.clone(),
                nvml: nvml_mem(d.uuid.as_deref(), d.ordinal),
                cuda_total_mem: d.total_mem,
                cuda_mem_info: d.mem_info,
                nvidia_smi_total_mib: smi_total(d.uuid.as_deref()),
                expected_bytes: expected
                    .get(d.ordinal as usize)
                    .cloned()
                    .flatten()
                    .map(|e| e.bytes),
                outcome: ViewOutcome::NoData,
                reasons: d.errors.clone(),
            })
            .collect()
    };
    for d in &mut devices {
        let (outcome, mut reasons) = view::decide(d);
        reasons.append(&mut d.reasons);
        d.outcome = outcome;
        d.reasons = reasons;
    }
    devices
}

fn view_check(d: &ViewDevice, sharing: SharingMethod, hole: Option<(u32, u64)>) -> Check {
    let slice = d
        .expected_bytes
        .map_or_else(String::new, |b| format!("its {:.0} MiB slice", mib(b)));
    let mps = sharing == SharingMethod::CudaMps;
    let (status, lead, environment) = match d.outcome {
        _ if hole.is_some() => {
            let (limited, bytes) = hole.unwrap_or_default();
            (
                CheckStatus::Failed,
                unlimited_device_reason(d.index, limited, bytes),
                false,
            )
        }
        ViewOutcome::ShowsSlice if mps => (
            CheckStatus::Passed,
            format!(
                "as expected for CUDA MPS: the pinned limit shows where MPS shows it ({slice})"
            ),
            false,
        ),
        ViewOutcome::ShowsFullCard if mps => (
            CheckStatus::Failed,
            "CUDA MPS is in use, but its pinned limit does not show in this process".to_owned(),
            false,
        ),
        ViewOutcome::ShowsSlice => (
            CheckStatus::Passed,
            format!("every source shows {slice}"),
            false,
        ),
        ViewOutcome::ShowsFullCard => (
            CheckStatus::Failed,
            format!(
                "the full card is visible, not {slice}: HAMi-core is not virtualizing this container's view \
                 (is nvidia the default containerd runtime, and was the pod scheduled by hami-scheduler?)"
            ),
            false,
        ),
        ViewOutcome::Mixed => (
            CheckStatus::Failed,
            "the sources disagree".to_owned(),
            false,
        ),
        ViewOutcome::NoSliceExpected => (
            CheckStatus::Skipped,
            "no slice expected: pass --expect-mib or run where CUDA_DEVICE_MEMORY_LIMIT* is set"
                .to_owned(),
            false,
        ),
        ViewOutcome::NoData => (
            CheckStatus::Failed,
            "no memory numbers could be read".to_owned(),
            true,
        ),
    };
    Check {
        id: lab_report::check::CheckId::view(d.index).to_string(),
        claim: format!("Device {} shows the slice, not the full card", d.index),
        status,
        reason: std::iter::once(lead)
            .chain(d.reasons.iter().cloned())
            .collect::<Vec<_>>()
            .join("; "),
        environment,
    }
}

fn cap_device(
    c: &worker::WorkerCap,
    expected: Option<ExpectedSlice>,
    wrun: &WorkerRun,
    sharing: SharingMethod,
) -> CapDevice {
    let result = c.search_result();
    let sibling_bytes: u64 = c.siblings_at_start.iter().map(|s| s.bytes).sum();
    // Under MPS cuMemGetInfo's total is the card's and its "used" is everyone's: not a context.
    let context = (sharing != SharingMethod::CudaMps)
        .then(|| {
            c.start_mem_info
                .map(|m| m.used.saturating_sub(sibling_bytes))
        })
        .flatten();
    let ooms: Vec<crate::report::OomLine> = wrun
        .ooms
        .iter()
        .filter(|o| o.device == c.device)
        .cloned()
        .collect();
    let ev = crate::cap::CapEvidence {
        expected: expected.as_ref().map(|e| e.bytes),
        result: &result,
        resolution: c.resolution_bytes,
        ceiling: c.ceiling_bytes,
        start: c.start_mem_info,
        oom_lines: &ooms,
        nvml_at_refusal: c.nvml_at_first_refusal,
        device: c.device,
        context,
        siblings: &c.siblings_at_start,
    };
    let (outcome, mut reasons) = crate::cap::decide(&ev);
    if !c.all_freed {
        reasons
            .push("some allocations could not be freed (the worker's exit released them)".into());
    }
    if let Some(charged) = c.region_charged_at_peak {
        reasons.push(format!(
            "HAMi-core's shared region charged the container {:.0} MiB at the peak",
            mib(charged)
        ));
    }
    CapDevice {
        index: c.device,
        expected_bytes: expected.map(|e| e.bytes),
        ceiling_bytes: c.ceiling_bytes,
        ceiling_source: c.ceiling_source.clone(),
        resolution_bytes: c.resolution_bytes,
        held_bytes: c.held,
        context_overhead_bytes: context,
        sibling_usage: c.siblings_at_start.clone(),
        start_mem_info: c.start_mem_info,
        alloc_calls: u32::try_from(c.steps.len()).unwrap_or(u32::MAX),
        steps: c.steps.clone(),
        stopped_because: c.stopped_because,
        first_refusal: c.first_refusal.clone(),
        hami_oom_lines: ooms,
        other_stderr: wrun.other_stderr.clone(),
        all_freed: c.all_freed,
        end_mem_info: c.end_mem_info,
        region_charged_at_peak_bytes: c.region_charged_at_peak,
        nvml_at_first_refusal: c.nvml_at_first_refusal,
        search_seconds: c.search_seconds,
        outcome,
        reasons,
    }
}

fn cap_check(d: &CapDevice, hole: Option<(u32, u64)>) -> Check {
    let (status, word) = match d.outcome {
        _ if hole.is_some() => (CheckStatus::Failed, "NO SLICE"),
        CapOutcome::Enforced => (CheckStatus::Passed, "ENFORCED"),
        CapOutcome::NotEnforced => (CheckStatus::Failed, "NOT ENFORCED"),
        CapOutcome::Inconclusive => (CheckStatus::Skipped, "INCONCLUSIVE"),
    };
    let mut reasons = d.reasons.clone();
    if let Some((limited, bytes)) = hole {
        reasons.insert(0, unlimited_device_reason(d.index, limited, bytes));
    }
    Check {
        id: lab_report::check::CheckId::cap(d.index).to_string(),
        claim: format!(
            "Device {}: this process cannot hold more than its slice",
            d.index
        ),
        status,
        reason: format!("{word}: {}", reasons.join("; ")),
        environment: false,
    }
}

fn unlimited_device_reason(index: u32, limited: u32, bytes: u64) -> String {
    format!(
        "device {index} has no slice while HAMi-core limits device {limited} to {:.0} MiB: this container can use all of device {index}. \
         A HAMi pod gets CUDA_DEVICE_MEMORY_LIMIT_<i> for every device it is given; set CUDA_DEVICE_MEMORY_LIMIT_{index}, or hide the device (NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES)",
        mib(bytes)
    )
}

/// The mechanism check, judged by the sharing method found.
fn mechanism_check(mech: &MechanismSection, method: &MethodSection) -> Check {
    let evidence = method.evidence.join("; ");
    let (claim, passed, reason) = match method.method {
        SharingMethod::HamiCore => (
            "HAMi-core is injected and live in this container".to_owned(),
            true,
            mech.reasons.first().cloned().unwrap_or_default(),
        ),
        SharingMethod::CudaMps => {
            let limited = method
                .mps
                .as_ref()
                .is_some_and(|m| !m.pinned_limits.is_empty());
            (
                "CUDA MPS limits this process's device memory (a pinned device memory limit)"
                    .to_owned(),
                limited,
                evidence,
            )
        }
        SharingMethod::Mig => (
            "This process runs on a MIG instance (a hardware partition of the card)".to_owned(),
            true,
            evidence,
        ),
        SharingMethod::None => (
            "HAMi-core is injected and live in this container".to_owned(),
            false,
            format!(
                "{} (no other memory isolation was found either: no MPS client, no MIG instance)",
                mech.reasons.first().cloned().unwrap_or_default()
            ),
        ),
    };
    Check {
        id: "mechanism".into(),
        claim,
        status: if passed {
            CheckStatus::Passed
        } else {
            CheckStatus::Failed
        },
        reason,
        environment: false,
    }
}

/// `CUDA_DEVICE_SM_LIMIT_0`, else `CUDA_DEVICE_SM_LIMIT` (percent).
fn sm_limit(env: &BTreeMap<String, String>) -> Option<u64> {
    env.get("CUDA_DEVICE_SM_LIMIT_0")
        .or(env.get("CUDA_DEVICE_SM_LIMIT"))
        .and_then(|v| v.trim().parse().ok())
}

/// Asks the MPS control daemon for each device's default pinned memory limit.
fn query_mps_control(
    opts: &Options,
    mps: &mut MpsFacts,
    devices: u32,
    env: &BTreeMap<String, String>,
    runner: &dyn Runner,
) {
    use crate::method::{MPS_CONTROL, MPS_PIPE_VAR, parse_control_limit};
    if !runner.exists(MPS_CONTROL) {
        mps.control_answers.push(format!(
            "{MPS_CONTROL} is not installed here; the daemon's limit is unknown"
        ));
        return;
    }
    for device in 0..devices.clamp(1, MAX_DEVICES) {
        let mut cmd = Cmd::new(MPS_CONTROL)
            .stdin(format!("get_default_device_pinned_mem_limit {device}\n"))
            .timeout(opts.bound(SMI_TIMEOUT));
        if let Some(p) = env.get(MPS_PIPE_VAR) {
            cmd = cmd.env(MPS_PIPE_VAR, p);
        }
        let answer = match runner.run(&cmd) {
            Ok(o) => format!("{}{}", o.stdout, o.stderr),
            Err(e) => e.to_string(),
        };
        let answer = answer.trim().to_owned();
        if let Some(bytes) = parse_control_limit(&answer) {
            mps.pinned_limits.push(crate::report_conformance::MpsLimit {
                device,
                bytes,
                source: format!(
                    "{MPS_CONTROL} get_default_device_pinned_mem_limit (whole units, rounded down: the limit is below this)"
                ),
                raw: answer.clone(),
            });
        }
        mps.control_answers.push(format!(
            "get_default_device_pinned_mem_limit {device}: {answer}"
        ));
    }
}

/// Whether the worker was an MPS client, from NVML's lists (pids differ inside a pid namespace,
/// so a list that names others but not the worker leaves the question open).
fn mps_client(mps: &mut MpsFacts, wout: &WorkerOutput) {
    let Some(first) = wout.processes.first() else {
        return;
    };
    let Ok(pids) = &first.mps_pids else {
        return;
    };
    mps.client_pids.clone_from(pids);
    mps.client_connected = if pids.contains(&wout.pid) {
        Some(true)
    } else if pids.is_empty() {
        Some(false)
    } else {
        None
    };
}

/// The unlimited baseline: the busy kernel in a child without the SM limit, with its own fresh
/// shared region (HAMi-core would otherwise take the limit from the container's region) and
/// HAMi-core's limiter disabled.
pub fn compute_baseline(
    opts: &Options,
    env: &BTreeMap<String, String>,
    runner: &dyn Runner,
) -> Result<(f64, String), String> {
    let dir = std::env::temp_dir().join(format!("gpu-probe-baseline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let region = dir.join("baseline.cache");
    let spec = WorkerSpec {
        expected: Vec::new(),
        run_cap: false,
        ceiling_bytes: None,
        resolution_bytes: 2 * MIB,
        initial_step_bytes: 1024 * MIB,
        time_bound_ms: 1000,
        libraries: Vec::new(),
        region_path: region.display().to_string(),
        audit: None,
        overhead: false,
        compute: Some(worker::ComputeSpec {
            seconds: opts.compute_seconds,
            hami_injected: false,
            sm_limit: None,
            policy: Some("disable".into()),
        }),
        unlimited_ceiling_bytes: None,
        robustness: None,
        alarm_secs: opts.worker_alarm(),
    };
    let mut cmd = Cmd::new(opts.worker_exe.display().to_string())
        .arg("__worker")
        .arg(serde_json::to_string(&spec).map_err(|e| e.to_string())?)
        .timeout(opts.bound(Duration::from_secs_f64(opts.compute_seconds + 60.0)))
        .clear_env();
    for (k, v) in env {
        let limiter = k.starts_with("CUDA_DEVICE_SM_LIMIT")
            || k == "GPU_CORE_UTILIZATION_POLICY"
            || k == mechanism::SHARED_CACHE_VAR;
        if !limiter {
            cmd = cmd.env(k, v);
        }
    }
    cmd = cmd
        .env("GPU_CORE_UTILIZATION_POLICY", "disable")
        .env(mechanism::SHARED_CACHE_VAR, region.display().to_string());
    let out = runner.run(&cmd).map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    let (w, _) = worker::parse(&out?.stdout)?;
    match w.compute {
        Some(Ok(c)) => Ok((
            c.kernels_per_second_mean,
            "a child without the SM limit (its own shared region, GPU_CORE_UTILIZATION_POLICY=disable), in this run".to_owned(),
        )),
        Some(Err(e)) => Err(e),
        None => Err(w.error.unwrap_or_else(|| "the baseline child measured nothing".into())),
    }
}

/// The SM-limit check: the throughput under the limit against the baseline, inside a band of
/// `band_pct` points around the limit (pure).
pub fn compute_check(
    c: &ComputeSection,
    baseline: Result<(f64, String), String>,
    band_pct: f64,
    injected: bool,
) -> (Check, Option<ComputeComparison>) {
    let limit = c.sm_limit_percent.filter(|&l| l > 0 && l < 100);
    let expected_ratio = match limit {
        Some(l) if c.throttling_expected => l as f64 / 100.0,
        _ => 1.0,
    };
    let claim = match limit {
        Some(l) => format!(
            "Compute throughput is held to the {l}% SM limit (±{band_pct:.0} points of an unlimited baseline)"
        ),
        None => format!(
            "Compute throughput is not slowed without an SM limit (±{band_pct:.0} points of an unlimited baseline)"
        ),
    };
    let check = |status, reason: String| Check {
        id: "compute".into(),
        claim: claim.clone(),
        status,
        reason,
        environment: false,
    };
    let (base, source) = match baseline {
        Ok(b) if b.0 > 0.0 => b,
        Ok(_) => {
            return (
                check(CheckStatus::Skipped, "the baseline ran no kernel".into()),
                None,
            );
        }
        Err(e) => {
            return (
                check(
                    CheckStatus::Skipped,
                    format!("the unlimited baseline could not be measured: {e}"),
                ),
                None,
            );
        }
    };
    let ratio = c.kernels_per_second_mean / base;
    let within = (ratio - expected_ratio).abs() * 100.0 <= band_pct;
    let comparison = ComputeComparison {
        baseline_kernels_per_second: base,
        baseline_source: source,
        limited_kernels_per_second: c.kernels_per_second_mean,
        ratio,
        expected_ratio,
        band_percentage_points: band_pct,
        within_band: within,
    };
    let numbers = format!(
        "{:.0} busy kernels/s against a baseline of {base:.0}: {:.0}% (expected {:.0}% ± {band_pct:.0} points)",
        c.kernels_per_second_mean,
        ratio * 100.0,
        expected_ratio * 100.0
    );
    let (status, why) = match limit {
        Some(l) if !injected => (
            CheckStatus::Failed,
            format!(
                "the {l}% SM limit is not applied (no interception library is injected): {numbers}"
            ),
        ),
        Some(_) if !c.throttling_expected => (
            CheckStatus::Skipped,
            format!(
                "{numbers}; {}: the limit cannot be shown here (GPU_CORE_UTILIZATION_POLICY=force makes HAMi-core throttle a lone process)",
                c.statement
            ),
        ),
        _ if within => (CheckStatus::Passed, format!("{numbers}; {}", c.statement)),
        _ => (
            CheckStatus::Failed,
            format!("outside the band: {numbers}; {}", c.statement),
        ),
    };
    (check(status, why), Some(comparison))
}

fn host_info() -> HostInfo {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    let cgroup = read("/proc/1/cgroup").unwrap_or_default();
    HostInfo {
        hostname: read("/proc/sys/kernel/hostname"),
        pid: std::process::id(),
        kernel: read("/proc/sys/kernel/osrelease"),
        in_container: std::path::Path::new("/.dockerenv").exists()
            || std::path::Path::new("/run/.containerenv").exists()
            || ["kubepods", "docker", "containerd"]
                .iter()
                .any(|k| cgroup.contains(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Outcome, StopReason};
    use lab_runner::RecordingRunner;

    fn opts(command: Command, slice: SliceRequest) -> Options {
        Options {
            command,
            slice,
            ceiling_mib: None,
            resolution_mib: 2,
            step_mib: 1024,
            time_bound: Duration::from_secs(60),
            nvidia_smi: true,
            worker_exe: PathBuf::from("gpu-probe-worker"),
            compute_seconds: 1.0,
            audit_device: 0,
            deadline: None,
            sm_band_pct: DEFAULT_SM_BAND_PCT,
            baseline_kps: None,
            physical_free_mib: None,
            progress: Progress::hidden(),
            bypass: crate::bypass::BypassOptions::default(),
        }
    }

    /// A worker output as the bare H100 gives it: no HAMi-core, search stopped at the ceiling.
    fn bare_h100_worker() -> String {
        let out = WorkerOutput {
            cuda_driver_version: Some(13000),
            devices: vec![worker::WorkerDevice {
                ordinal: 0,
                name: Some("NVIDIA H100 80GB HBM3".into()),
                uuid: Some("GPU-4f7efa07-0f69-f62e-5958-365ed3785eb2".into()),
                total_mem: Some(81079 * MIB),
                mem_info: Some(MemInfo {
                    total: 81079 * MIB,
                    free: 80500 * MIB,
                    used: 579 * MIB,
                }),
                errors: vec![],
                context: true,
            }],
            caps: vec![worker::WorkerCap {
                device: 0,
                ceiling_bytes: 10_000 * MIB,
                ceiling_source: "slice × 1.25".into(),
                resolution_bytes: 2 * MIB,
                start_mem_info: None,
                end_mem_info: None,
                held: 10_000 * MIB,
                steps: vec![],
                stopped_because: StopReason::ReachedCeiling,
                first_refusal: None,
                unexpected: None,
                all_freed: true,
                region_charged_at_peak: None,
                nvml_at_first_refusal: None,
                search_seconds: 0.1,
                siblings_at_start: vec![],
            }],
            ..WorkerOutput::default()
        };
        worker::render(&out)
    }

    #[test]
    fn bare_card_reports_full_view_and_not_enforced() {
        let fake = RecordingRunner::new(&["gpu-probe-worker", "nvidia-smi"]);
        fake.reply("__worker", 0, &bare_h100_worker(), "");
        fake.reply(
            "nvidia-smi",
            0,
            "name, uuid, memory.total [MiB], memory.used [MiB], memory.free [MiB]\nNVIDIA H100 80GB HBM3, GPU-4f7efa07-0f69-f62e-5958-365ed3785eb2, 81559 MiB, 0 MiB, 81079 MiB\n",
            "",
        );
        let r = run(
            &opts(Command::All, SliceRequest::Mib(8000)),
            &BTreeMap::new(),
            &fake,
        );
        let view = r.view.as_ref().expect("view ran");
        assert_eq!(view.devices[0].outcome, ViewOutcome::ShowsFullCard);
        assert_eq!(view.devices[0].nvidia_smi_total_mib, Some(81559));
        let cap = r.cap.as_ref().expect("cap ran");
        assert_eq!(cap.devices[0].outcome, CapOutcome::NotEnforced);
        assert_eq!(r.verdict.outcome, Outcome::NotVerified);
        assert_eq!(r.verdict.exit_code, 1);
        // The worker got the expected slice and the ceiling inputs.
        let calls = fake.calls();
        let spec: WorkerSpec = serde_json::from_str(&calls[0].args[1]).expect("spec json");
        assert_eq!(spec.expected[0], Some(8000 * MIB));
        assert!(spec.run_cap);
    }

    #[test]
    fn the_workers_progress_events_are_shown_and_kept_out_of_the_report() {
        let event = progress::Event {
            task: "cap device 0".into(),
            pos: 1024,
            len: Some(10000),
            unit: "MiB".into(),
            msg: "+1024 MiB held".into(),
            done: false,
        };
        let fake = RecordingRunner::new(&["gpu-probe-worker"]);
        fake.reply(
            "__worker",
            0,
            &bare_h100_worker(),
            &format!("{}\nsomething the library said\n", event.to_line()),
        );
        #[derive(Clone, Default)]
        struct Shown(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Shown {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let shown = Shown::default();
        let mut o = opts(Command::Cap, SliceRequest::Mib(8000));
        o.progress = Progress::with_writer(progress::Style::Lines, Box::new(shown.clone()));
        let r = run(&o, &BTreeMap::new(), &fake);
        let text = String::from_utf8(shown.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.starts_with("cap device 0: 1024/10000 MiB after "),
            "{text}"
        );
        let cap = &r.cap.as_ref().expect("cap ran").devices[0];
        assert_eq!(cap.other_stderr, ["something the library said"]);
    }

    #[test]
    fn hami_oom_lines_on_the_worker_stderr_make_it_enforced() {
        let slice = 8000 * MIB;
        let mut out: WorkerOutput = worker::parse(&bare_h100_worker()).expect("parse").0;
        out.caps[0].held = 7482 * MIB;
        out.caps[0].stopped_because = StopReason::ResolutionReached;
        out.caps[0].first_refusal = Some(crate::report::CudaErrorInfo {
            code: 2,
            name: "CUDA_ERROR_OUT_OF_MEMORY".into(),
        });
        let fake = RecordingRunner::new(&["gpu-probe-worker"]);
        fake.reply(
            "__worker",
            0,
            &worker::render(&out),
            &crate::testdata::hami_fixture("h100-hami-core/oom-stderr.txt"),
        );
        let env: BTreeMap<String, String> =
            [("CUDA_DEVICE_MEMORY_LIMIT_0".to_owned(), "8000m".to_owned())].into();
        let r = run(&opts(Command::Cap, SliceRequest::FromEnv), &env, &fake);
        let cap = &r.cap.expect("cap").devices[0];
        assert_eq!(cap.expected_bytes, Some(slice));
        assert_eq!(cap.hami_oom_lines.len(), 6);
        assert_eq!(cap.outcome, CapOutcome::Enforced, "{:?}", cap.reasons);
        assert_eq!(r.verdict.outcome, Outcome::Verified);
    }

    #[test]
    fn two_gpus_each_get_their_own_limit_view_and_cap_and_one_verdict() {
        // Device 0 is held to its 8000 MiB slice by HAMi-core; device 1 (limit 4000m) is not.
        let mut out: WorkerOutput = worker::parse(&bare_h100_worker()).expect("parse").0;
        let mut d1 = out.devices[0].clone();
        d1.ordinal = 1;
        d1.uuid = Some("GPU-00000000-0000-0000-0000-000000000001".into());
        out.devices[0].total_mem = Some(8000 * MIB);
        out.devices[0].mem_info = Some(MemInfo {
            total: 8000 * MIB,
            free: 7482 * MIB,
            used: 518 * MIB,
        });
        out.devices.push(d1);
        out.caps[0].held = 7482 * MIB;
        out.caps[0].stopped_because = StopReason::ResolutionReached;
        out.caps[0].first_refusal = Some(crate::report::CudaErrorInfo {
            code: 2,
            name: "CUDA_ERROR_OUT_OF_MEMORY".into(),
        });
        let mut c1 = out.caps[0].clone();
        c1.device = 1;
        c1.held = 5000 * MIB;
        c1.ceiling_bytes = 5000 * MIB;
        c1.stopped_because = StopReason::ReachedCeiling;
        c1.first_refusal = None;
        out.caps.push(c1);
        let fake = RecordingRunner::new(&["gpu-probe-worker"]);
        fake.reply(
            "__worker",
            0,
            &worker::render(&out),
            "[HAMI-core ERROR (pid:1 thread=2 allocator.c:52)]: Device 0 OOM 8596226048 / 8388608000\n",
        );
        let env: BTreeMap<String, String> = [
            ("CUDA_DEVICE_MEMORY_LIMIT_0".to_owned(), "8000m".to_owned()),
            ("CUDA_DEVICE_MEMORY_LIMIT_1".to_owned(), "4000m".to_owned()),
        ]
        .into();
        let r = run(&opts(Command::All, SliceRequest::FromEnv), &env, &fake);
        let spec: WorkerSpec = serde_json::from_str(&fake.calls()[0].args[1]).expect("spec");
        assert_eq!(&spec.expected[..2], &[Some(8000 * MIB), Some(4000 * MIB)]);
        assert_eq!(r.expected.len(), 2);
        let view = r.view.expect("view");
        assert_eq!(view.devices.len(), 2);
        assert_eq!(view.devices[1].expected_bytes, Some(4000 * MIB));
        let cap = r.cap.expect("cap");
        assert_eq!(
            cap.devices[0].outcome,
            CapOutcome::Enforced,
            "{:?}",
            cap.devices[0].reasons
        );
        assert_eq!(cap.devices[1].outcome, CapOutcome::NotEnforced);
        assert!(
            cap.devices[1].hami_oom_lines.is_empty(),
            "OOM lines are attributed by device"
        );
        assert!(
            r.checks
                .iter()
                .any(|c| c.id == "cap.device1" && c.status == CheckStatus::Failed)
        );
        assert_eq!(
            r.verdict.outcome,
            Outcome::NotVerified,
            "one device failing fails the summary"
        );
    }

    #[test]
    fn no_driver_is_an_environment_verdict() {
        let fake = RecordingRunner::new(&["gpu-probe-worker"]);
        let out = WorkerOutput {
            error: Some("libcuda.so.1 could not be loaded".into()),
            ..WorkerOutput::default()
        };
        fake.reply("__worker", 0, &worker::render(&out), "");
        let r = run(
            &opts(Command::All, SliceRequest::Mib(8000)),
            &BTreeMap::new(),
            &fake,
        );
        assert_eq!(r.verdict.outcome, Outcome::Environment);
        assert_eq!(r.verdict.exit_code, 3);
        assert!(
            r.checks
                .iter()
                .any(|c| c.id == "cuda" && c.reason.contains("libcuda"))
        );
    }

    #[test]
    fn a_crashed_worker_is_an_environment_verdict_with_its_stderr() {
        let fake = RecordingRunner::new(&["gpu-probe-worker"]);
        fake.reply("__worker", 139, "", "Segmentation fault");
        let r = run(
            &opts(Command::Cap, SliceRequest::Mib(8000)),
            &BTreeMap::new(),
            &fake,
        );
        assert_eq!(r.verdict.exit_code, 3);
        let cuda = r
            .checks
            .iter()
            .find(|c| c.id == "cuda")
            .expect("cuda check");
        assert!(
            cuda.reason.contains("Segmentation fault"),
            "{}",
            cuda.reason
        );
    }

    #[test]
    fn malformed_limit_env_fails_its_own_check() {
        let fake = RecordingRunner::new(&["gpu-probe-worker"]);
        fake.reply("__worker", 0, &bare_h100_worker(), "");
        let env: BTreeMap<String, String> =
            [("CUDA_DEVICE_MEMORY_LIMIT_0".to_owned(), "4Gi".to_owned())].into();
        let r = run(&opts(Command::View, SliceRequest::FromEnv), &env, &fake);
        let limits = r
            .checks
            .iter()
            .find(|c| c.id == "limits")
            .expect("limits check");
        assert_eq!(limits.status, CheckStatus::Failed);
        assert!(limits.reason.contains("4 bytes"));
        assert_eq!(r.verdict.exit_code, 1);
    }

    /// An MPS client with an 8000 MiB pinned limit, as on the H200: the whole card in NVML and
    /// cuDeviceTotalMem, cuMemGetInfo's free within the limit, a refusal while the card had
    /// plenty free. The method is named, every check judged by it, and no "context cost" is
    /// made of the card's total.
    #[test]
    fn an_mps_client_with_a_pinned_limit_is_verified_as_mps() {
        let pipe = tempfile::tempdir().expect("tmp");
        std::fs::write(pipe.path().join("control"), "").expect("socket stand-in");
        let mut out: WorkerOutput = worker::parse(&bare_h100_worker()).expect("parse").0;
        out.pid = 4242;
        out.devices[0].name = Some("NVIDIA H200".into());
        out.devices[0].total_mem = Some(143_162 * MIB);
        out.devices[0].mem_info = Some(MemInfo {
            total: 143_162 * MIB,
            free: 7_494 * MIB,
            used: 135_668 * MIB,
        });
        out.processes = vec![worker::DeviceProcesses {
            ordinal: 0,
            compute_pids: Ok(vec![]),
            mps_pids: Ok(vec![4242]),
        }];
        let c = &mut out.caps[0];
        c.start_mem_info = out.devices[0].mem_info;
        c.held = 7_424 * MIB;
        c.stopped_because = StopReason::ResolutionReached;
        c.first_refusal = Some(crate::report::CudaErrorInfo {
            code: 2,
            name: "CUDA_ERROR_OUT_OF_MEMORY".into(),
        });
        c.nvml_at_first_refusal = Some(MemInfo {
            total: 143_771 * MIB,
            free: 128_000 * MIB,
            used: 15_771 * MIB,
        });
        let fake = RecordingRunner::new(&["gpu-probe-worker"]);
        fake.reply("__worker", 0, &worker::render(&out), "");
        let env: BTreeMap<String, String> = [
            (
                "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT".to_owned(),
                "0=8000M".to_owned(),
            ),
            (
                "CUDA_MPS_PIPE_DIRECTORY".to_owned(),
                pipe.path().display().to_string(),
            ),
        ]
        .into();
        let r = run(&opts(Command::All, SliceRequest::FromEnv), &env, &fake);
        let method = r.method.as_ref().expect("method");
        assert_eq!(
            method.method,
            SharingMethod::CudaMps,
            "{:?}",
            method.evidence
        );
        assert_eq!(r.expected[0].source, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT");
        let status = |id: &str| {
            r.checks
                .iter()
                .find(|c| c.id == id)
                .map(|c| (c.status, c.reason.clone()))
                .unwrap_or_else(|| panic!("{id}"))
        };
        let (view, why) = status("view.device0");
        assert_eq!(view, CheckStatus::Passed, "{why}");
        assert!(why.contains("as expected for CUDA MPS"), "{why}");
        let (cap, why) = status("cap.device0");
        assert_eq!(cap, CheckStatus::Passed, "{why}");
        assert!(!why.contains("context costs"), "{why}");
        assert!(why.contains("no context cost is computed"), "{why}");
        let (mech, why) = status("mechanism");
        assert_eq!(mech, CheckStatus::Passed, "{why}");
        assert_eq!(
            r.verdict.outcome,
            Outcome::Verified,
            "{}",
            r.verdict.summary
        );
        assert!(r.verdict.summary.contains("sharing method: CUDA MPS"));
        assert!(r.scope_note.contains("MPS"));
        assert_eq!(r.cap.expect("cap").devices[0].context_overhead_bytes, None);
    }

    /// A HAMi-core worker (library preloaded, exporting the hooks, mapped) on two devices with
    /// a limit on device 0 only: device 1 is a hole, FAILED with that reason; its 0 MiB
    /// cuDeviceTotalMem_v2 is explained.
    #[test]
    fn a_device_without_a_slice_beside_a_limited_one_fails() {
        let dir = tempfile::tempdir().expect("tmp");
        let lib = dir.path().join("libvgpu.so").display().to_string();
        std::fs::write(&lib, b"lib").expect("lib");
        let mut out: WorkerOutput = worker::parse(&bare_h100_worker()).expect("parse").0;
        out.mapped = vec![lib.clone()];
        out.symbols.insert(
            lib.clone(),
            Ok(vec![crate::report::SymbolCheck {
                name: "cuMemAlloc_v2".into(),
                exported: true,
                resolved_in: Some(lib.clone()),
            }]),
        );
        let mut d1 = out.devices[0].clone();
        d1.ordinal = 1;
        d1.uuid = Some("GPU-00000000-0000-0000-0000-000000000001".into());
        d1.total_mem = Some(0);
        out.devices.push(d1);
        out.caps[0].held = 7482 * MIB;
        out.caps[0].stopped_because = StopReason::ResolutionReached;
        out.caps[0].first_refusal = Some(crate::report::CudaErrorInfo {
            code: 2,
            name: "CUDA_ERROR_OUT_OF_MEMORY".into(),
        });
        let mut c1 = out.caps[0].clone();
        c1.device = 1;
        c1.held = 10_000 * MIB;
        c1.first_refusal = None;
        c1.stopped_because = StopReason::ReachedCeiling;
        out.caps.push(c1);
        let fake = RecordingRunner::new(&["gpu-probe-worker"]);
        fake.reply(
            "__worker",
            0,
            &worker::render(&out),
            "[HAMI-core ERROR (pid:1 thread=2 allocator.c:52)]: Device 0 OOM 8596226048 / 8388608000\n",
        );
        let env: BTreeMap<String, String> = [
            ("CUDA_DEVICE_MEMORY_LIMIT_0".to_owned(), "8000m".to_owned()),
            ("LD_PRELOAD".to_owned(), lib.clone()),
        ]
        .into();
        let r = run(&opts(Command::All, SliceRequest::FromEnv), &env, &fake);
        let spec: WorkerSpec = serde_json::from_str(&fake.calls()[0].args[1]).expect("spec");
        assert_eq!(
            spec.unlimited_ceiling_bytes,
            Some(10_000 * MIB),
            "the hole is searched only up to the largest slice × 1.25"
        );
        assert_eq!(
            r.method.as_ref().map(|m| m.method),
            Some(SharingMethod::HamiCore)
        );
        for id in ["view.device1", "cap.device1"] {
            let c = r.checks.iter().find(|c| c.id == id).expect(id);
            assert_eq!(c.status, CheckStatus::Failed, "{id}: {}", c.reason);
            assert!(
                c.reason
                    .contains("device 1 has no slice while HAMi-core limits device 0"),
                "{}",
                c.reason
            );
        }
        let view1 = r
            .checks
            .iter()
            .find(|c| c.id == "view.device1")
            .expect("v1");
        assert!(
            view1.reason.contains("cuDeviceTotalMem_v2 returned 0 MiB"),
            "{}",
            view1.reason
        );
        assert_eq!(r.verdict.outcome, Outcome::NotVerified);
        assert!(r.verdict.summary.contains("HAMi-core"));
    }

    fn compute(limit: Option<u64>, expected: bool, kps: f64) -> ComputeSection {
        ComputeSection {
            device: 0,
            seconds: 2.0,
            window_seconds: 0.5,
            windows: vec![1, 2],
            kernels_per_second_mean: kps,
            spread: 0.01,
            sm_limit_percent: limit,
            policy: Some("force".into()),
            throttling_expected: expected,
            statement: "GPU_CORE_UTILIZATION_POLICY=force".into(),
            comparison: None,
        }
    }

    #[test]
    fn the_sm_limit_passes_only_inside_its_band() {
        let base = || Ok((1000.0, "test".to_owned()));
        let (c, cmp) = compute_check(&compute(Some(50), true, 540.0), base(), 10.0, true);
        assert_eq!(c.status, CheckStatus::Passed, "{}", c.reason);
        let cmp = cmp.expect("comparison");
        assert!((cmp.ratio - 0.54).abs() < 1e-9 && cmp.within_band);
        assert!((cmp.expected_ratio - 0.5).abs() < 1e-9);
        let (c, _) = compute_check(&compute(Some(50), true, 980.0), base(), 10.0, true);
        assert_eq!(c.status, CheckStatus::Failed);
        assert!(
            c.reason.contains("98%") && c.reason.contains("expected 50%"),
            "{}",
            c.reason
        );
        let (c, _) = compute_check(&compute(Some(50), true, 200.0), base(), 10.0, true);
        assert_eq!(c.status, CheckStatus::Failed, "throttled below the band");
        // No limit: not slowed.
        let (c, _) = compute_check(&compute(None, false, 950.0), base(), 10.0, true);
        assert_eq!(c.status, CheckStatus::Passed, "{}", c.reason);
        // A limit under the default policy, lone: cannot be shown.
        let (c, _) = compute_check(&compute(Some(50), false, 990.0), base(), 10.0, true);
        assert_eq!(c.status, CheckStatus::Skipped);
        // A limit without any interception library: not applied, failed.
        let (c, _) = compute_check(&compute(Some(50), false, 990.0), base(), 10.0, false);
        assert_eq!(c.status, CheckStatus::Failed);
        // No baseline: nothing shown.
        let (c, cmp) = compute_check(&compute(Some(50), true, 500.0), Err("x".into()), 10.0, true);
        assert_eq!(c.status, CheckStatus::Skipped);
        assert!(cmp.is_none());
    }

    #[test]
    fn the_baseline_child_runs_without_the_limit_in_its_own_region() {
        let fake = RecordingRunner::new(&["gpu-probe-worker"]);
        let base = WorkerOutput {
            compute: Some(Ok(compute(None, false, 1000.0))),
            ..WorkerOutput::default()
        };
        fake.reply("__worker", 0, &worker::render(&base), "");
        let env: BTreeMap<String, String> = [
            ("CUDA_DEVICE_SM_LIMIT".to_owned(), "50".to_owned()),
            ("GPU_CORE_UTILIZATION_POLICY".to_owned(), "force".to_owned()),
            (
                "CUDA_DEVICE_MEMORY_SHARED_CACHE".to_owned(),
                "/pod/a.cache".to_owned(),
            ),
            ("LD_PRELOAD".to_owned(), "/lib/libvgpu.so".to_owned()),
        ]
        .into();
        let o = opts(Command::Compute, SliceRequest::FromEnv);
        let (kps, _) = compute_baseline(&o, &env, &fake).expect("baseline");
        assert!((kps - 1000.0).abs() < 1e-9);
        let call = &fake.calls()[0];
        assert!(call.clear_env);
        let get = |k: &str| {
            call.env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("CUDA_DEVICE_SM_LIMIT"), None);
        assert_eq!(
            get("GPU_CORE_UTILIZATION_POLICY").as_deref(),
            Some("disable")
        );
        assert_ne!(
            get("CUDA_DEVICE_MEMORY_SHARED_CACHE").as_deref(),
            Some("/pod/a.cache")
        );
        assert_eq!(
            get("LD_PRELOAD").as_deref(),
            Some("/lib/libvgpu.so"),
            "still injected"
        );
    }
}
