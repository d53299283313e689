//! `gpu-probe`: thin CLI over the library. Exit codes: 0 verified, 1 a checked claim failed (or
//! could not be shown), 2 usage, 3 environment (no driver, no GPU).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use gpu_probe::limits::SliceRequest;
use gpu_probe::probe::{self, Command, Options};
use gpu_probe::{human, worker};
use lab_runner::SystemRunner;
use lab_runner::progress::{Progress, Style};

/// Proves this process's GPU memory slice from the inside: the virtualized view, the memory cap,
/// the HAMi-core mechanism, and one verdict. Runs in any x86_64 image with glibc ≥ 2.28; needs only
/// the driver libraries the NVIDIA runtime mounts.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Exit codes: 0 verified, 1 a claim failed or was not shown, 2 usage, 3 environment (no driver/GPU)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Human, global = true)]
    output: Output,
    /// No progress bars: the long work (cap search, audit, conformance) is logged as plain lines
    /// on stderr instead (as with `--output json`, or when stderr is not a terminal).
    #[arg(short = 'q', long, global = true)]
    quiet: bool,
    /// Progress as event lines on stderr, for the gpu-probe that started this one (it shows them).
    #[arg(long, global = true, hide = true)]
    progress_events: bool,
    /// The slice each device should show, in MiB (default: from CUDA_DEVICE_MEMORY_LIMIT_<i> / CUDA_DEVICE_MEMORY_LIMIT).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    expect_mib: Option<u64>,
    /// Never hold more than this many MiB in the cap search (default: slice × 1.25, else the card's memory).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    ceiling_mib: Option<u64>,
    /// Resolution of the cap search, in MiB.
    #[arg(long, global = true, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1024))]
    resolution_mib: u64,
    /// First (largest) step of the cap search, in MiB.
    #[arg(long, global = true, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    step_mib: u64,
    /// Time bound of the cap search per device, in seconds.
    #[arg(long, global = true, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    time_bound_secs: u64,
    /// Do not run nvidia-smi.
    #[arg(long, global = true)]
    no_nvidia_smi: bool,
    /// Also write the JSON report to this file.
    #[arg(long, global = true)]
    report_file: Option<PathBuf>,
    /// Bound every child this probe starts to this many seconds (conformance gives its cells'
    /// children their deadline this way).
    #[arg(long, global = true, hide = true, value_parser = clap::value_parser!(u64).range(1..=3600))]
    deadline_secs: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Everything below, and one summary verdict (the default).
    All,
    /// Per device: memory as NVML, CUDA and nvidia-smi report it, against the expected slice.
    View,
    /// The most device memory this process can hold with cuMemAlloc_v2, found by halving search.
    Cap,
    /// The HAMi-core mechanism: environment, /etc/ld.so.preload, the library's hooks, the shared region.
    Mechanism,
    /// Every allocation path, and every way around HAMi-core, against the slice: capped /
    /// escaped / not applicable.
    Audit {
        /// Which device to audit.
        #[arg(long, default_value_t = 0)]
        device: u32,
        /// The card's physical free memory in MiB, when known outside this (virtualized)
        /// process: lets the managed-memory path be tried safely.
        #[arg(long, hide = true)]
        physical_free_mib: Option<u64>,
        /// Which rows: the allocation paths, the bypasses, or both.
        #[arg(long, value_enum, default_value_t = Rows::All)]
        rows: Rows,
        /// A program built from gpu-probe/tests/bypass/static_cudart.cu with `nvcc -cudart
        /// static`, for the static-cudart bypass row.
        #[arg(long)]
        static_cudart: Option<PathBuf>,
    },
    /// Latency percentiles of cuMemAlloc/cuMemFree and kernel launches; copy bandwidth.
    Overhead,
    /// Achieved throughput of a busy kernel over time, against CUDA_DEVICE_SM_LIMIT.
    Compute {
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// The band around the expected throughput, in percentage points of the baseline.
        #[arg(long, default_value_t = gpu_probe::probe::DEFAULT_SM_BAND_PCT)]
        sm_band_pct: f64,
        /// A baseline (busy kernels/s) measured by the caller in the same run, instead of a
        /// baseline child.
        #[arg(long, hide = true)]
        baseline_kps: Option<f64>,
    },
    /// Measure a HAMi-core library against this driver and card: a matrix of limits, spellings,
    /// allocation paths, processes, devices and the SM limit, each in its own bounded child.
    Conformance {
        /// The library (e.g. /usr/local/vgpu/libvgpu.so, or one `cargo xtask hami-core` built).
        #[arg(long)]
        lib: String,
        /// The upstream revision it was built from, recorded in the report.
        #[arg(long)]
        revision: Option<String>,
        /// Each cell's bound in seconds; past it the cell is `hung`.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(10..=600))]
        cell_timeout_secs: u64,
        /// Seconds of busy kernels per SM-limit measurement.
        #[arg(long, default_value_t = 2.0)]
        compute_seconds: f64,
        /// The band around each SM limit, in percentage points of the baseline.
        #[arg(long, default_value_t = gpu_probe::probe::DEFAULT_SM_BAND_PCT)]
        sm_band_pct: f64,
        /// The SM limits to measure (percent), comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [25u64, 50, 100])]
        sm_limits: Vec<u64>,
        /// The whole matrix's bound in seconds: cells that would start later are not run.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(30..=3600))]
        budget_secs: u64,
        /// A program built with `nvcc -cudart static` for the static-cudart bypass cell.
        #[arg(long)]
        static_cudart: Option<PathBuf>,
    },
    /// Check a HAMi-core library against this driver without Kubernetes.
    Selftest {
        /// The library (on a HAMi node: /usr/local/vgpu/libvgpu.so).
        #[arg(long)]
        lib: String,
        /// The slice to inject, in MiB.
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(64..))]
        limit_mib: u64,
    },
    /// Internal: holds memory for the two-process checks.
    #[command(name = "__hold", hide = true)]
    Hold {
        device: u32,
        bytes: u64,
        ready: PathBuf,
        release: PathBuf,
        timeout_ms: u64,
    },
    /// Internal: CUDA + NVML initialisation alone, for the benchmark's baseline.
    #[command(name = "__init-only", hide = true)]
    InitOnly,
    /// Internal: the CUDA worker (run by gpu-probe itself).
    #[command(name = "__worker", hide = true)]
    Worker { spec: String },
    /// Internal: one bypass row of the audit (run by gpu-probe itself).
    #[command(name = "__bypass", hide = true)]
    Bypass { spec: String },
}

/// `audit --rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Rows {
    All,
    Allocation,
    Bypass,
}

impl From<Rows> for gpu_probe::bypass::AuditRows {
    fn from(r: Rows) -> Self {
        match r {
            Rows::All => Self::All,
            Rows::Allocation => Self::Allocation,
            Rows::Bypass => Self::Bypass,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Progress goes to stderr only: stdout carries the report (JSON with `--output json`).
    let progress = Progress::new(if cli.progress_events {
        Style::Events
    } else {
        Style::for_stderr(cli.output == Output::Json || cli.quiet)
    });
    if let Some(secs) = cli.deadline_secs {
        // The backstop: a probe given a deadline ends itself shortly after it, whatever its
        // children (or the library) are doing.
        worker::end_after(secs + 3);
    }
    let mut compute_seconds = 5.0;
    let mut audit_device = 0;
    let mut selftest = None;
    let mut physical_free = None;
    let mut band = gpu_probe::probe::DEFAULT_SM_BAND_PCT;
    let mut baseline = None;
    let mut bypass = gpu_probe::bypass::BypassOptions::default();
    let command = match cli.command {
        // The worker's stderr always goes to the gpu-probe that started it.
        Some(Cmd::Worker { spec }) => return run_worker(&spec, &Progress::new(Style::Events)),
        Some(Cmd::Bypass { spec }) => return run_bypass(&spec),
        Some(Cmd::InitOnly) => return init_only(),
        Some(Cmd::Hold {
            device,
            bytes,
            ready,
            release,
            timeout_ms,
        }) => {
            worker::end_after(timeout_ms / 1000 + 5);
            return match worker::hold(
                device,
                bytes,
                &ready,
                &release,
                Duration::from_millis(timeout_ms),
            ) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gpu-probe __hold: {e}");
                    ExitCode::from(3)
                }
            };
        }
        None | Some(Cmd::All) => Command::All,
        Some(Cmd::View) => Command::View,
        Some(Cmd::Cap) => Command::Cap,
        Some(Cmd::Mechanism) => Command::Mechanism,
        Some(Cmd::Audit {
            device,
            physical_free_mib,
            rows,
            static_cudart,
        }) => {
            audit_device = device;
            physical_free = physical_free_mib;
            bypass.rows = rows.into();
            bypass.static_cudart = static_cudart;
            Command::Audit
        }
        Some(Cmd::Overhead) => Command::Overhead,
        Some(Cmd::Compute {
            seconds,
            sm_band_pct,
            baseline_kps,
        }) => {
            if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
                eprintln!("gpu-probe: --seconds must be between 0 and 3600");
                return ExitCode::from(2);
            }
            if !(sm_band_pct.is_finite() && (0.0..=100.0).contains(&sm_band_pct)) {
                eprintln!("gpu-probe: --sm-band-pct must be between 0 and 100");
                return ExitCode::from(2);
            }
            compute_seconds = seconds;
            band = sm_band_pct;
            baseline = baseline_kps.filter(|k| k.is_finite() && *k > 0.0);
            Command::Compute
        }
        Some(Cmd::Conformance {
            lib,
            revision,
            cell_timeout_secs,
            compute_seconds,
            sm_band_pct,
            sm_limits,
            budget_secs,
            static_cudart,
        }) => {
            let seconds_ok =
                compute_seconds.is_finite() && compute_seconds > 0.0 && compute_seconds <= 60.0;
            let band_ok = sm_band_pct.is_finite() && (0.0..=100.0).contains(&sm_band_pct);
            if !(seconds_ok && band_ok) || sm_limits.iter().any(|&l| l == 0 || l > 100) {
                eprintln!(
                    "gpu-probe conformance: --compute-seconds must be in (0, 60], --sm-band-pct in [0, 100], --sm-limits in 1..=100"
                );
                return ExitCode::from(2);
            }
            let Ok(exe) = std::env::current_exe() else {
                eprintln!("gpu-probe: cannot find its own executable to start the cells");
                return ExitCode::from(3);
            };
            let mut o = gpu_probe::conformance::ConformanceOptions::new(&lib, exe);
            o.revision = revision;
            o.cell_timeout = Duration::from_secs(cell_timeout_secs);
            o.compute_seconds = compute_seconds;
            o.sm_band_pct = sm_band_pct;
            o.sm_limits = sm_limits;
            o.budget = Duration::from_secs(budget_secs);
            o.progress = progress;
            o.static_cudart = static_cudart;
            return conformance(&o, cli.output, cli.report_file.as_deref());
        }
        Some(Cmd::Selftest { lib, limit_mib }) => {
            selftest = Some((lib, limit_mib));
            Command::All
        }
    };
    let worker_exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gpu-probe: cannot find its own executable to start the CUDA worker: {e}");
            return ExitCode::from(3);
        }
    };
    let opts = Options {
        command,
        slice: cli
            .expect_mib
            .map_or(SliceRequest::FromEnv, SliceRequest::Mib),
        ceiling_mib: cli.ceiling_mib,
        resolution_mib: cli.resolution_mib,
        step_mib: cli.step_mib,
        time_bound: Duration::from_secs(cli.time_bound_secs),
        nvidia_smi: !cli.no_nvidia_smi,
        worker_exe,
        compute_seconds,
        audit_device,
        deadline: cli
            .deadline_secs
            .map(|s| std::time::Instant::now() + Duration::from_secs(s)),
        sm_band_pct: band,
        baseline_kps: baseline,
        physical_free_mib: physical_free,
        progress,
        bypass,
    };
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let runner = SystemRunner::new(false);
    let report = match selftest {
        Some((lib, limit_mib)) => selftest_report(&opts, &lib, limit_mib, &runner),
        None => probe::run(&opts, &env, &runner),
    };
    emit(
        &report,
        cli.output,
        cli.report_file.as_deref(),
        human::render,
    )
}

/// Writes the report (JSON to `--report-file`, then JSON or text to stdout); the exit code.
fn emit(
    report: &gpu_probe::report::Report,
    output: Output,
    report_file: Option<&std::path::Path>,
    text: fn(&gpu_probe::report::Report) -> String,
) -> ExitCode {
    let json = match serde_json::to_string_pretty(report) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("gpu-probe: cannot serialise the report: {e}");
            return ExitCode::from(3);
        }
    };
    if let Some(path) = report_file
        && let Err(e) = std::fs::write(path, format!("{json}\n"))
    {
        eprintln!("gpu-probe: cannot write {}: {e}", path.display());
        return ExitCode::from(3);
    }
    let out = match output {
        Output::Json => format!("{json}\n"),
        Output::Human => text(report),
    };
    // A closed stdout (e.g. `| head`) must not turn into a panic.
    let _ = std::io::stdout().write_all(out.as_bytes());
    ExitCode::from(report.verdict.exit_code)
}

fn conformance(
    o: &gpu_probe::conformance::ConformanceOptions,
    output: Output,
    report_file: Option<&std::path::Path>,
) -> ExitCode {
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let report = gpu_probe::conformance::run(o, &env, &SystemRunner::new(false));
    emit(&report, output, report_file, gpu_probe::conformance::human)
}

fn run_worker(spec: &str, progress: &Progress) -> ExitCode {
    let spec: worker::WorkerSpec = match serde_json::from_str(spec) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gpu-probe __worker: bad spec: {e}");
            return ExitCode::from(2);
        }
    };
    let out = worker::run(&spec, progress);
    let _ = std::io::stdout().write_all(worker::render(&out).as_bytes());
    ExitCode::SUCCESS
}

fn run_bypass(spec: &str) -> ExitCode {
    let spec: gpu_probe::bypass::ChildSpec = match serde_json::from_str(spec) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gpu-probe __bypass: bad spec: {e}");
            return ExitCode::from(2);
        }
    };
    let run = gpu_probe::bypass::run_child(&spec);
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(gpu_probe::bypass::render(&run).as_bytes());
    let _ = stdout.flush();
    if spec.row == gpu_probe::bypass::DLMOPEN {
        // Two copies of the driver live in this process: its report is out, so it ends without
        // running either copy's exit handlers, which may wait on each other.
        // SAFETY: _exit ends the process at once; nothing after it runs.
        unsafe { libc::_exit(0) };
    }
    ExitCode::SUCCESS
}

/// Loads and initialises CUDA (a primary context on every device) and NVML, then exits: the floor
/// under any probe's run time.
fn init_only() -> ExitCode {
    use gpu_probe::ffi::{cuda::Cuda, nvml::Nvml};
    let result = (|| -> Result<u32, String> {
        let nvml = Nvml::init().map_err(|e| e.to_string())?;
        let cuda = Cuda::load().map_err(|e| e.to_string())?;
        cuda.init().map_err(|e| e.to_string())?;
        let n = cuda.device_count().map_err(|e| e.to_string())?;
        for i in 0..n {
            let d = cuda.device(i).map_err(|e| e.to_string())?;
            cuda.enter_primary_context(d).map_err(|e| e.to_string())?;
        }
        drop(nvml);
        Ok(n)
    })();
    match result {
        Ok(n) => {
            println!("ok {n} devices");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error {e}");
            ExitCode::from(3)
        }
    }
}

/// The selftest as a report of its own: one check, the selftest section.
fn selftest_report(
    opts: &Options,
    lib: &str,
    limit_mib: u64,
    runner: &SystemRunner,
) -> gpu_probe::report::Report {
    use gpu_probe::report::{Check, CheckStatus, Outcome, Report};
    let t = gpu_probe::selftest::run(opts, lib, limit_mib, runner);
    let check = Check {
        id: "selftest".into(),
        claim: format!("{lib} enforces a {limit_mib} MiB slice with this driver"),
        status: if t.outcome == Outcome::Verified {
            CheckStatus::Passed
        } else {
            CheckStatus::Failed
        },
        reason: t.reasons.join("; "),
        environment: t.outcome == Outcome::Environment,
    };
    let mut report = Report::new("selftest", vec![check]);
    report.selftest = Some(t);
    report
}
