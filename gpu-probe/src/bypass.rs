//! The bypass rows of `gpu-probe audit`: ways around HAMi-core, rather than through it, that need
//! no Kubernetes. Each is tried for real, in its own bounded child, and reported capped / escaped
//! / not applicable with its numbers, what it did step by step and HAMi-core's lines ([`ROWS`]):
//!
//! | row | what the child does |
//! |---|---|
//! | `region-tamper` | holds up to the target, is refused at the slice, writes a larger limit into its own `CUDA_DEVICE_MEMORY_SHARED_CACHE` file, holds more, writes the original bytes back ([`tamper`]) |
//! | `env-less-first-writer` | a first process without `CUDA_DEVICE_MEMORY_LIMIT*` creates a fresh region; a second one with the limit then searches in it (HAMi#2125) |
//! | `cleared-environment` | a child started with a cleared environment (the preload kept, as a pod's mount) |
//! | `dlmopen` | a second copy of libcuda in a new link-map namespace, looked up with glibc's own `dlsym` |
//! | `libc-dlsym` | libcuda's own `cuMemAlloc_v2`, looked up with glibc's `dlsym` instead of the interposer |
//! | `cuGetProcAddress` | every entry point through the driver's `cuGetProcAddress_v2`, found as the CUDA runtime finds it |
//! | `static-cudart` | a program linked with `nvcc -cudart static` (`tests/bypass/static_cudart.cu`), when `--static-cudart` names it |
//!
//! The decisions are pure ([`decide`]). The region tamper is the one exception to "the probe
//! never writes the region": confined to [`tamper`], to the file the tamper child's own
//! environment names, to one device's 8-byte limit, and restored (the child writes the original
//! back and reads it; the parent checks after the child ended and restores it if needed).

pub mod driver;
pub mod tamper;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab_runner::{Cmd, Output, RunError, Runner};
use serde::{Deserialize, Serialize};

use crate::cap::{self, SearchParams};
use crate::limits;
use crate::probe::Options;
use crate::report::{
    AuditGroup, AuditOutcome, AuditPath, BypassDetail, CudaErrorInfo, MIB, MemInfo, mib,
};
use crate::worker::{self, AuditSpec, WorkerSpec};

/// One bypass row: its key, the path name `audit` gives it (its check id is
/// `audit.<name before " (">`), and what it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub key: &'static str,
    pub path: &'static str,
    pub what: &'static str,
}

pub const REGION_TAMPER: &str = "region-tamper";
pub const ENV_LESS_FIRST_WRITER: &str = "env-less-first-writer";
pub const CLEARED_ENVIRONMENT: &str = "cleared-environment";
pub const DLMOPEN: &str = "dlmopen";
pub const LIBC_DLSYM: &str = "libc-dlsym";
pub const PROC_ADDRESS: &str = "cuGetProcAddress";
pub const STATIC_CUDART: &str = "static-cudart";

/// Every bypass row, in the order `audit` runs them.
pub const ROWS: &[Row] = &[
    Row {
        key: CLEARED_ENVIRONMENT,
        path: "child with a cleared environment (cuMemAlloc_v2)",
        what: "a child started with a cleared environment (PATH, LD_LIBRARY_PATH and the preload kept)",
    },
    Row {
        key: REGION_TAMPER,
        path: "region tamper (the process raises the limit in its own shared region file)",
        what: "a process refused at its slice writes a larger limit into its CUDA_DEVICE_MEMORY_SHARED_CACHE file",
    },
    Row {
        key: ENV_LESS_FIRST_WRITER,
        path: "env-less first writer (a process without the limit creates the shared region)",
        what: "a first process without CUDA_DEVICE_MEMORY_LIMIT* creates the region; a later one with the limit allocates (HAMi#2125)",
    },
    Row {
        key: DLMOPEN,
        path: "dlmopen (libcuda in a new link-map namespace, glibc's dlsym)",
        what: "dlmopen(LM_ID_NEWLM, \"libcuda.so.1\"), entry points looked up with glibc's own dlsym",
    },
    Row {
        key: LIBC_DLSYM,
        path: "libc-dlsym (libcuda's own cuMemAlloc_v2 through glibc's dlsym)",
        what: "dlopen(\"libcuda.so.1\") and glibc's own dlsym (found with dlvsym) instead of the program's",
    },
    Row {
        key: PROC_ADDRESS,
        path: "cuGetProcAddress (every entry point through the driver's cuGetProcAddress_v2)",
        what: "cuGetProcAddress_v2 found with the program's dlsym, as the CUDA runtime finds it; cuMemAlloc and the rest through it",
    },
    Row {
        key: STATIC_CUDART,
        path: "static-cudart (a program linked with nvcc -cudart static)",
        what: "cudaMalloc from a program built with `nvcc -cudart static` (gpu-probe/tests/bypass/static_cudart.cu)",
    },
];

/// The row of `key`.
pub fn row(key: &str) -> Option<&'static Row> {
    ROWS.iter().find(|r| r.key == key)
}

/// Which rows `audit` runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuditRows {
    /// Allocation paths and bypasses (the default).
    #[default]
    All,
    /// The allocation paths only (what `audit` did before the bypass rows).
    Allocation,
    /// The bypass rows only.
    Bypass,
}

impl AuditRows {
    pub fn allocation(self) -> bool {
        self != Self::Bypass
    }
    pub fn bypass(self) -> bool {
        self != Self::Allocation
    }
}

/// The audit's bypass options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BypassOptions {
    pub rows: AuditRows,
    /// A program built from `tests/bypass/static_cudart.cu` with `nvcc -cudart static`.
    pub static_cudart: Option<PathBuf>,
}

/// What the parent asks a bypass child (`gpu-probe __bypass <spec>`) to do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChildSpec {
    pub row: String,
    pub device: u32,
    pub target_bytes: u64,
    pub time_bound_ms: u64,
    pub alarm_secs: Option<u64>,
}

/// What one bypass row did, before the decision.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChildRun {
    /// Why the bypass could not be tried here.
    pub not_applicable: Option<String>,
    /// The child did not finish within its bound and was killed (why, with the bound).
    #[serde(default)]
    pub hung: Option<String>,
    /// The most held at once.
    pub held_bytes: u64,
    pub calls: u32,
    /// The refusal once the bypass applied.
    pub first_refusal: Option<CudaErrorInfo>,
    /// An error that was not a refusal.
    pub unexpected: Option<CudaErrorInfo>,
    pub detail: BypassDetail,
}

impl ChildRun {
    pub fn new(key: &str) -> Self {
        Self {
            detail: BypassDetail {
                row: key.to_owned(),
                ..BypassDetail::default()
            },
            ..Self::default()
        }
    }

    fn not_applicable(key: &str, why: impl Into<String>) -> Self {
        let mut r = Self::new(key);
        r.not_applicable = Some(why.into());
        r
    }
}

/// The free memory came back to within 64 MiB of the start.
pub fn came_back(start: Option<MemInfo>, end: Option<MemInfo>) -> bool {
    match (start, end) {
        (Some(s), Some(e)) => s.free.abs_diff(e.free) <= 64 * MIB,
        _ => false,
    }
}

fn m(b: u64) -> String {
    format!("{:.0} MiB", mib(b))
}

/// Capped / escaped / not applicable, from what the row did (pure).
pub fn decide(run: &ChildRun, slice: Option<u64>) -> AuditPath {
    let key = run.detail.row.as_str();
    let path_name = row(key).map_or(key, |r| r.path);
    let refusal = run.first_refusal.clone().or(run.unexpected.clone());
    let mut p = AuditPath {
        path: path_name.to_owned(),
        outcome: AuditOutcome::NotApplicable,
        held_bytes: run.held_bytes,
        past_slice_bytes: 0,
        nonstandard_code: refusal
            .as_ref()
            .is_some_and(|r| !(0..=999).contains(&r.code)),
        refusal,
        calls: run.calls,
        note: String::new(),
        group: AuditGroup::Bypass,
        bypass: Some(run.detail.clone()),
    };
    let steps = run.detail.steps.join("; ");
    let with_steps = |lead: String| {
        if steps.is_empty() {
            lead
        } else {
            format!("{lead}: {steps}")
        }
    };
    if let Some(why) = &run.not_applicable {
        p.note = why.clone();
        return p;
    }
    if let Some(why) = &run.hung {
        p.outcome = AuditOutcome::Error;
        p.note = with_steps(why.clone());
        return p;
    }
    match slice {
        None => {
            p.outcome = AuditOutcome::NoSlice;
            p.note = with_steps(format!("no slice configured; held {}", m(run.held_bytes)));
        }
        Some(s) if run.held_bytes > s => {
            p.outcome = AuditOutcome::Escaped;
            p.past_slice_bytes = run.held_bytes - s;
            p.note = with_steps(format!(
                "held {}, {} past the {} slice",
                m(run.held_bytes),
                m(p.past_slice_bytes),
                m(s)
            ));
        }
        Some(s) => match (&run.first_refusal, &run.unexpected) {
            (Some(r), _) => {
                p.outcome = AuditOutcome::Capped;
                p.note = with_steps(format!(
                    "held {} of the {} slice, then refused with {} ({})",
                    m(run.held_bytes),
                    m(s),
                    r.name,
                    r.code
                ));
            }
            (None, Some(e)) => {
                p.outcome = AuditOutcome::Error;
                p.note = with_steps(format!(
                    "stopped by {} ({}) after {}, not a refusal",
                    e.name,
                    e.code,
                    m(run.held_bytes)
                ));
            }
            (None, None) => {
                p.outcome = AuditOutcome::Error;
                p.note = with_steps(
                    "stopped without a refusal and without passing the slice (time bound?)".into(),
                );
            }
        },
    }
    if run.detail.freed == Some(false) {
        p.note
            .push_str("; the memory did NOT all come back before the child ended");
    }
    if run.detail.region_restored == Some(false) {
        p.note
            .push_str("; the region's original limit was NOT restored by the child");
    }
    p
}

// ---------------------------------------------------------------------------------------------
// The child: `gpu-probe __bypass <spec>`

pub const BEGIN: &str = "--- gpu-probe bypass report begin ---";
pub const END: &str = "--- gpu-probe bypass report end ---";

/// Runs one bypass row in this (child) process.
pub fn run_child(spec: &ChildSpec) -> ChildRun {
    if let Some(secs) = spec.alarm_secs {
        worker::end_after(secs);
    }
    let lookup = match spec.row.as_str() {
        REGION_TAMPER => return tamper::run(spec),
        DLMOPEN => driver::Lookup::Dlmopen,
        LIBC_DLSYM => driver::Lookup::LibcDlsym,
        PROC_ADDRESS => driver::Lookup::ProcAddress,
        other => {
            return ChildRun::not_applicable(other, format!("no bypass child runs `{other}`"));
        }
    };
    resolved_row(spec, lookup)
}

/// A row that only changes how the driver is reached: the plain search over that driver.
fn resolved_row(spec: &ChildSpec, lookup: driver::Lookup) -> ChildRun {
    let started = Instant::now();
    let mut run = ChildRun::new(&spec.row);
    let d = match driver::Driver::open(lookup, spec.device) {
        Ok(d) => d,
        Err(e) => {
            run.not_applicable = Some(format!("the driver could not be reached this way: {e}"));
            return run;
        }
    };
    run.detail.resolved_in.clone_from(&d.resolved);
    run.detail.steps.push(format!(
        "cuMemAlloc_v2 resolved in {}",
        d.resolved
            .iter()
            .find(|r| r.name == "cuMemAlloc_v2")
            .and_then(|r| r.object.clone())
            .unwrap_or_else(|| "an unknown object".into())
    ));
    if let Err(e) = d.start() {
        run.not_applicable = Some(format!("CUDA did not start this way: {e}"));
        return run;
    }
    let start = d.mem_info();
    run.detail.mem_info_after = start;
    if let Some(i) = start {
        run.detail.steps.push(format!(
            "cuMemGetInfo_v2 said total {}, free {}",
            m(i.total),
            m(i.free)
        ));
    }
    let params = SearchParams {
        ceiling: spec.target_bytes,
        resolution: 64 * MIB,
        initial_step: 1024 * MIB,
        time_bound: Duration::from_millis(spec.time_bound_ms),
        any_error_is_refusal: false,
    };
    let mut mem = &d;
    let result = cap::search(&mut mem, params, |_| {});
    let freed = cap::free_all(&mut mem, &result.handles);
    let end = d.mem_info();
    d.stop();
    run.held_bytes = result.held;
    run.calls = u32::try_from(result.steps.len()).unwrap_or(u32::MAX);
    run.first_refusal = result.first_refusal;
    run.unexpected = result.unexpected;
    run.detail.freed = Some(freed && came_back(start, end));
    run.detail.seconds = started.elapsed().as_secs_f64();
    run
}

/// The child's output between its markers.
pub fn render(run: &ChildRun) -> String {
    let json = serde_json::to_string(run)
        .unwrap_or_else(|e| format!("{{\"not_applicable\":\"serialise: {e}\"}}"));
    format!("{BEGIN}\n{json}\n{END}\n")
}

/// Parses a bypass child's stdout.
pub fn parse(stdout: &str) -> Result<ChildRun, String> {
    let begin = stdout
        .find(BEGIN)
        .ok_or("the bypass child printed no report (it may have crashed)")?;
    let rest = &stdout[begin + BEGIN.len()..];
    let end = rest
        .find(END)
        .ok_or("the bypass child's report is cut off")?;
    serde_json::from_str(rest[..end].trim())
        .map_err(|e| format!("the bypass child's report is not valid: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The parent: every row, each in its own bounded child

/// Every bypass row on the audit's device (`a`), in [`ROWS`] order.
pub fn run_rows(
    opts: &Options,
    a: &AuditSpec,
    env: &BTreeMap<String, String>,
    runner: &dyn Runner,
) -> Vec<AuditPath> {
    ROWS.iter()
        .map(|r| {
            let t = Instant::now();
            let mut run = match r.key {
                CLEARED_ENVIRONMENT => cleared_environment(opts, a, env, runner),
                ENV_LESS_FIRST_WRITER => env_less_first_writer(opts, a, env, runner),
                STATIC_CUDART => static_cudart(opts, a, runner),
                REGION_TAMPER => region_tamper(opts, a, env, runner),
                DLMOPEN => dlmopen(opts, a, env, runner),
                _ => child(opts, a, r.key, env, runner, &[]),
            };
            if run.detail.seconds == 0.0 {
                run.detail.seconds = t.elapsed().as_secs_f64();
            }
            decide(&run, a.slice_bytes)
        })
        .collect()
}

/// Each child's bound: its search's bound and some start-up, never past the probe's deadline.
fn child_timeout(opts: &Options) -> Duration {
    opts.bound(opts.time_bound.min(Duration::from_secs(30)) + Duration::from_secs(20))
}

/// The environment as a command's: cleared, then exactly these variables.
fn with_env(mut cmd: Cmd, env: &BTreeMap<String, String>) -> Cmd {
    cmd = cmd.clear_env();
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd
}

/// A child killed past its bound, as the row says it.
fn hung(key: &str, after: Duration) -> ChildRun {
    let mut r = ChildRun::new(key);
    r.hung = Some(format!(
        "the child did not finish within {}s and was killed",
        after.as_secs()
    ));
    r
}

/// How a child ended, for the row: its exit code and HAMi-core's lines.
fn note_end(run: &mut ChildRun, out: &Output, label: Option<&str>) {
    if run.detail.exit_code.is_none() {
        run.detail.exit_code = out.code;
    }
    for l in crate::conformance::hami_lines(&out.stderr) {
        let l = label.map_or_else(|| l.clone(), |who| format!("{who}: {l}"));
        if run.detail.log_lines.len() < 16 && !run.detail.log_lines.contains(&l) {
            run.detail.log_lines.push(l);
        }
    }
}

/// Runs `gpu-probe __bypass` for `key` with `env` and `extra` on top.
fn child(
    opts: &Options,
    a: &AuditSpec,
    key: &str,
    env: &BTreeMap<String, String>,
    runner: &dyn Runner,
    extra: &[(String, String)],
) -> ChildRun {
    let timeout = child_timeout(opts);
    let spec = ChildSpec {
        row: key.to_owned(),
        device: a.device,
        target_bytes: a.target_bytes,
        time_bound_ms: u64::try_from(opts.time_bound.min(Duration::from_secs(30)).as_millis())
            .unwrap_or(u64::MAX),
        alarm_secs: Some(timeout.as_secs() + 2),
    };
    let mut all = env.clone();
    all.extend(extra.iter().cloned());
    let cmd = with_env(
        Cmd::new(opts.worker_exe.display().to_string())
            .arg("__bypass")
            .arg(serde_json::to_string(&spec).unwrap_or_default())
            .timeout(timeout),
        &all,
    );
    match runner.run(&cmd) {
        Ok(out) => {
            let mut run = parse(&out.stdout).unwrap_or_else(|e| {
                let tail: Vec<&str> = out.stderr.lines().rev().take(3).collect();
                ChildRun::not_applicable(
                    key,
                    format!(
                        "{e}; exit {:?}; stderr: {}",
                        out.code,
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                )
            });
            note_end(&mut run, &out, None);
            run
        }
        Err(RunError::TimedOut { after, .. }) => hung(key, after),
        Err(e) => ChildRun::not_applicable(key, format!("could not run: {e}")),
    }
}

/// The cap search of a plain worker (`cuMemAlloc_v2` up to the target) run with `cmd`.
fn worker_cap(
    key: &str,
    cmd: &Cmd,
    device: u32,
    runner: &dyn Runner,
    label: Option<&str>,
) -> ChildRun {
    let mut run = ChildRun::new(key);
    let out = match runner.run(cmd) {
        Ok(o) => o,
        Err(RunError::TimedOut { after, .. }) => return hung(key, after),
        Err(e) => {
            run.not_applicable = Some(format!("could not run: {e}"));
            return run;
        }
    };
    note_end(&mut run, &out, label);
    match worker::parse(&out.stdout) {
        Ok((w, _)) => match w.caps.iter().find(|c| c.device == device) {
            Some(c) => {
                run.held_bytes = c.held;
                run.calls = u32::try_from(c.steps.len()).unwrap_or(u32::MAX);
                run.first_refusal.clone_from(&c.first_refusal);
                run.unexpected.clone_from(&c.unexpected);
                run.detail.mem_info_after = c.start_mem_info;
                run.detail.freed = Some(c.all_freed && came_back(c.start_mem_info, c.end_mem_info));
            }
            None => {
                run.not_applicable = Some(
                    w.error
                        .unwrap_or_else(|| "the child saw no such device".into()),
                );
            }
        },
        Err(e) => run.not_applicable = Some(e),
    }
    run
}

fn cap_worker_cmd(opts: &Options, a: &AuditSpec, env: &BTreeMap<String, String>) -> Cmd {
    let spec = crate::probe::cap_only_spec(a.device, a.slice_bytes, a.target_bytes, opts);
    with_env(
        Cmd::new(opts.worker_exe.display().to_string())
            .arg("__worker")
            .arg(serde_json::to_string(&spec).unwrap_or_default())
            .timeout(child_timeout(opts)),
        env,
    )
}

/// (c) A child with a cleared environment: PATH and LD_LIBRARY_PATH kept so it finds the driver,
/// LD_PRELOAD and CUDA_REDIRECT kept because they stand for the `/etc/ld.so.preload` mount of a
/// pod, which no change of environment removes. HAMi-core's limit and region path come from the
/// environment (HAMi#1607), so everything else is gone.
fn cleared_environment(
    opts: &Options,
    a: &AuditSpec,
    env: &BTreeMap<String, String>,
    runner: &dyn Runner,
) -> ChildRun {
    let kept: BTreeMap<String, String> = ["PATH", "LD_LIBRARY_PATH", "LD_PRELOAD", "CUDA_REDIRECT"]
        .iter()
        .filter_map(|k| env.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    // Without the variable it joins HAMi-core's default region, which other processes of the
    // host (or, outside a pod, of other library revisions) may have made before.
    let joined = match crate::region::read_region(Path::new(crate::region::DEFAULT_PATH)) {
        Ok(r) => format!(
            "the default region {} it joins already existed (version {}.{}, {} process slot(s), limit {} on device {})",
            crate::region::DEFAULT_PATH,
            r.major_version,
            r.minor_version,
            r.proc_num,
            r.limits.get(a.device as usize).copied().unwrap_or(0),
            a.device
        ),
        Err(_) => format!(
            "no default region {} existed before it",
            crate::region::DEFAULT_PATH
        ),
    };
    let mut run = worker_cap(
        CLEARED_ENVIRONMENT,
        &cap_worker_cmd(opts, a, &kept),
        a.device,
        runner,
        None,
    );
    run.detail.steps.push(format!(
        "started with only {} of the environment; {joined}",
        kept.keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    run
}

/// (b) The env-less first writer (HAMi#2125): a fresh region file stands for a container's region
/// before its first CUDA process. A first process without any `CUDA_DEVICE_MEMORY_LIMIT*` starts
/// CUDA there and exits; then a process with the container's limit searches in the same region.
fn env_less_first_writer(
    opts: &Options,
    a: &AuditSpec,
    env: &BTreeMap<String, String>,
    runner: &dyn Runner,
) -> ChildRun {
    let key = ENV_LESS_FIRST_WRITER;
    let dir = std::env::temp_dir().join(format!("gpu-probe-envless-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return ChildRun::not_applicable(key, format!("cannot make {}: {e}", dir.display()));
    }
    let region = dir.join("region.cache");
    let region_s = region.display().to_string();
    let mut first_env: BTreeMap<String, String> = env
        .iter()
        .filter(|(k, _)| !k.starts_with(limits::LIMIT_VAR))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    first_env.insert(tamper::SHARED_CACHE_VAR.into(), region_s.clone());
    let first_spec = WorkerSpec {
        expected: Vec::new(),
        run_cap: false,
        ceiling_bytes: None,
        resolution_bytes: 64 * MIB,
        initial_step_bytes: 1024 * MIB,
        time_bound_ms: 1000,
        libraries: Vec::new(),
        region_path: region_s.clone(),
        audit: None,
        overhead: false,
        compute: None,
        unlimited_ceiling_bytes: None,
        robustness: None,
        alarm_secs: Some(child_timeout(opts).as_secs() + 2),
    };
    let first_cmd = with_env(
        Cmd::new(opts.worker_exe.display().to_string())
            .arg("__worker")
            .arg(serde_json::to_string(&first_spec).unwrap_or_default())
            .timeout(child_timeout(opts)),
        &first_env,
    );
    let mut steps = Vec::new();
    let mut first_lines = ChildRun::new(key);
    match runner.run(&first_cmd) {
        Ok(out) => {
            note_end(&mut first_lines, &out, Some("first writer"));
            let started = worker::parse(&out.stdout)
                .ok()
                .is_some_and(|(w, _)| w.error.is_none() && w.devices.iter().any(|d| d.context));
            steps.push(format!(
                "a first process without {}* {} (exit {:?})",
                limits::LIMIT_VAR,
                if started {
                    "started CUDA in a fresh region and exited"
                } else {
                    "could not start CUDA"
                },
                out.code
            ));
        }
        Err(e) => steps.push(format!("the first process could not run: {e}")),
    }
    let limit_left = match crate::region::read_region(&region) {
        Ok(r) => {
            let l = r.limits.get(a.device as usize).copied();
            steps.push(format!(
                "it left the region with limit {} for device {}",
                l.map_or_else(|| "(none)".to_owned(), |l| l.to_string()),
                a.device
            ));
            l
        }
        Err(e) => {
            steps.push(format!("it left no HAMi-core region ({e})"));
            None
        }
    };
    let mut second_env = env.clone();
    second_env.insert(tamper::SHARED_CACHE_VAR.into(), region_s);
    let mut run = worker_cap(
        key,
        &cap_worker_cmd(opts, a, &second_env),
        a.device,
        runner,
        Some("second process"),
    );
    let limit_env: Vec<String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(limits::LIMIT_VAR))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    steps.push(format!(
        "a second process with {} then held {}",
        if limit_env.is_empty() {
            "no limit variable either".to_owned()
        } else {
            limit_env.join(", ")
        },
        m(run.held_bytes)
    ));
    let mut lines = first_lines.detail.log_lines;
    lines.append(&mut run.detail.log_lines);
    run.detail.log_lines = lines;
    run.detail.region_limit_before_bytes = limit_left;
    run.detail.steps = steps;
    let _ = std::fs::remove_dir_all(&dir);
    run
}

/// glibc keeps a little static TLS for namespaces opened later; a driver that needs more is
/// refused with "cannot allocate memory in static TLS block". A tenant raises the reserve with a
/// tunable, and so does the row, once.
const STATIC_TLS_TUNABLE: &str = "glibc.rtld.optional_static_tls=65536";

/// (d) The driver in a new link-map namespace (with the static-TLS retry a tenant would make).
fn dlmopen(
    opts: &Options,
    a: &AuditSpec,
    env: &BTreeMap<String, String>,
    runner: &dyn Runner,
) -> ChildRun {
    let run = child(opts, a, DLMOPEN, env, runner, &[]);
    if !run
        .not_applicable
        .as_deref()
        .is_some_and(|w| w.contains("static TLS"))
    {
        return run;
    }
    let tunables = match env.get("GLIBC_TUNABLES") {
        Some(t) if !t.is_empty() => format!("{t}:{STATIC_TLS_TUNABLE}"),
        _ => STATIC_TLS_TUNABLE.to_owned(),
    };
    let mut again = child(
        opts,
        a,
        DLMOPEN,
        env,
        runner,
        &[("GLIBC_TUNABLES".to_owned(), tunables.clone())],
    );
    again.detail.steps.insert(
        0,
        format!(
            "the first dlmopen was refused ({}); retried with GLIBC_TUNABLES={tunables}",
            run.not_applicable.unwrap_or_default()
        ),
    );
    again
}

/// (a) The region tamper, with the parent's check: the limit is read before the child, and after
/// it ended it must be the same; a child that died before restoring it is restored here.
fn region_tamper(
    opts: &Options,
    a: &AuditSpec,
    env: &BTreeMap<String, String>,
    runner: &dyn Runner,
) -> ChildRun {
    let region = env
        .get(tamper::SHARED_CACHE_VAR)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let before = region
        .as_deref()
        .and_then(|p| tamper::read_limit(p, a.device).ok());
    let mut run = child(opts, a, REGION_TAMPER, env, runner, &[]);
    if let (Some(path), Some(before)) = (region.as_deref(), before) {
        check_restored(&mut run, path, a.device, before);
    }
    run
}

/// After the tamper child: the limit must be the one read before; otherwise it is written back.
fn check_restored(run: &mut ChildRun, path: &Path, device: u32, before: u64) {
    match tamper::read_limit(path, device) {
        Ok(now) if now == before => {}
        Ok(now) => {
            let fixed = tamper::swap_limit(path, device, now, before);
            run.detail.region_restored = Some(false);
            run.detail.steps.push(match fixed {
                Ok(()) => format!(
                    "after the child ended the limit read {now}; gpu-probe wrote the original {before} back"
                ),
                Err(e) => format!(
                    "after the child ended the limit read {now}, and the original {before} could NOT be written back: {e}"
                ),
            });
        }
        Err(e) => run
            .detail
            .steps
            .push(format!("the limit could not be read after the child: {e}")),
    }
}

/// What `static_cudart.cu` prints on its report line.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct StaticCudartLine {
    pub runtime_version: i32,
    pub driver_version: i32,
    pub shared_cudart_mapped: bool,
    pub mapped_preload: Vec<String>,
    pub held_bytes: u64,
    pub calls: u32,
    pub first_error: i32,
    pub first_error_name: String,
    pub all_freed: bool,
    pub start_total: u64,
    pub start_free: u64,
    pub end_free: u64,
    #[serde(default)]
    pub error: Option<String>,
}

/// The marker of `static_cudart.cu`'s report line.
pub const STATIC_MARKER: &str = "gpu-probe-static-cudart ";

/// Reads the static-cudart program's output into a row (pure).
pub fn static_cudart_run(out: &Output) -> ChildRun {
    let mut run = ChildRun::new(STATIC_CUDART);
    note_end(&mut run, out, None);
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(STATIC_MARKER))
        .map(serde_json::from_str::<StaticCudartLine>);
    let s = match line {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            run.not_applicable = Some(format!("the program's report line is not valid: {e}"));
            return run;
        }
        None => {
            let tail: Vec<&str> = out.stderr.lines().rev().take(3).collect();
            run.not_applicable = Some(format!(
                "the program printed no report (exit {:?}; stderr: {})",
                out.code,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
            return run;
        }
    };
    if let Some(e) = &s.error {
        run.not_applicable = Some(format!("the CUDA runtime did not start: {e}"));
        return run;
    }
    run.held_bytes = s.held_bytes;
    run.calls = s.calls;
    run.first_refusal = (s.first_error != 0).then(|| CudaErrorInfo {
        code: i64::from(s.first_error),
        name: s.first_error_name.clone(),
    });
    run.detail.mem_info_after = Some(MemInfo {
        total: s.start_total,
        free: s.start_free,
        used: s.start_total.saturating_sub(s.start_free),
    });
    run.detail.freed = Some(s.all_freed && s.start_free.abs_diff(s.end_free) <= 64 * MIB);
    run.detail.steps.push(format!(
        "CUDA runtime {} statically linked (libcudart.so {}mapped), driver {}; preloaded and mapped: {}",
        s.runtime_version,
        if s.shared_cudart_mapped { "" } else { "not " },
        s.driver_version,
        if s.mapped_preload.is_empty() {
            "nothing".to_owned()
        } else {
            s.mapped_preload.join(", ")
        }
    ));
    run.detail.steps.push(format!(
        "cudaMemGetInfo said total {}, free {}; cudaMalloc held {} in {} calls",
        m(s.start_total),
        m(s.start_free),
        m(s.held_bytes),
        s.calls
    ));
    if s.shared_cudart_mapped {
        run.not_applicable = Some(
            "the program maps the shared libcudart.so: it was not built with -cudart static".into(),
        );
    }
    run
}

/// (f) A program linked with the static CUDA runtime, run like any process of the container.
fn static_cudart(opts: &Options, a: &AuditSpec, runner: &dyn Runner) -> ChildRun {
    let Some(program) = &opts.bypass.static_cudart else {
        return ChildRun::not_applicable(
            STATIC_CUDART,
            "no program given: build gpu-probe/tests/bypass/static_cudart.cu with `nvcc -cudart static` and pass --static-cudart PATH",
        );
    };
    if !program.is_file() {
        return ChildRun::not_applicable(
            STATIC_CUDART,
            format!("{} does not exist", program.display()),
        );
    }
    let t = Instant::now();
    let cmd = Cmd::new(program.display().to_string())
        .args([
            a.device.to_string(),
            a.target_bytes.to_string(),
            (64 * MIB).to_string(),
            opts.time_bound
                .min(Duration::from_secs(30))
                .as_secs()
                .to_string(),
        ])
        .timeout(child_timeout(opts));
    let mut run = match runner.run(&cmd) {
        Ok(out) => static_cudart_run(&out),
        Err(e) => ChildRun::not_applicable(STATIC_CUDART, format!("could not run: {e}")),
    };
    run.detail.seconds = t.elapsed().as_secs_f64();
    run
}

#[cfg(test)]
mod tests;
