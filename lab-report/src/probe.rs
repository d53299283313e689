//! The versioned JSON report of gpu-probe (`gpu_probe::report` re-exports this module): the
//! contract between gpu-probe and its consumers (cluster-ctl, evidence-pack). Field meanings are
//! documented in `gpu-probe/README.md`; any change that removes or renames a field bumps
//! [`SCHEMA_VERSION`], and `schemas/gpu-probe-report.schema.json` is generated from these types.
//!
//! Every check is reported youki-style as passed / failed (why) / skipped (why), and the summary
//! verdict is derived from the checks by [`Verdict::from_checks`], never set by hand.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Identifies the document type, so a consumer can refuse a file that is not a probe report.
pub const SCHEMA: &str = "hami-isolation-lab/gpu-probe-report";
/// Bumped on any incompatible change to the report.
pub const SCHEMA_VERSION: u32 = 1;

pub const MIB: u64 = 1024 * 1024;

/// Bytes → MiB as a float with two decimals of meaning, for human output and numbers in JSON.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Report {
    pub schema: String,
    pub schema_version: u32,
    /// gpu-probe's own version.
    pub tool_version: String,
    /// Which subcommand produced it: `all`, `view`, `cap` or `mechanism`.
    pub command: String,
    /// Seconds since the Unix epoch when the probe started.
    pub started_at_unix: u64,
    pub host: HostInfo,
    /// Driver versions, when the driver could be loaded.
    pub driver: DriverInfo,
    /// The slice the probe expects per device, and where that number came from.
    pub expected: Vec<ExpectedSlice>,
    pub view: Option<ViewSection>,
    pub cap: Option<CapSection>,
    pub mechanism: Option<MechanismSection>,
    /// `gpu-probe audit`: every allocation path against the slice.
    #[serde(default)]
    pub audit: Option<AuditSection>,
    /// `gpu-probe overhead`: latencies and bandwidth.
    #[serde(default)]
    pub overhead: Option<OverheadSection>,
    /// `gpu-probe compute`: throughput over time against the SM limit.
    #[serde(default)]
    pub compute: Option<ComputeSection>,
    /// `gpu-probe selftest`: a HAMi-core library checked against this driver without Kubernetes.
    #[serde(default)]
    pub selftest: Option<SelftestSection>,
    /// The sharing method the probe found (HAMi-core, CUDA MPS, MIG, none) and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<crate::report_conformance::MethodSection>,
    /// `gpu-probe conformance`: the matrix of what one HAMi-core library caps here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conformance: Option<crate::report_conformance::ConformanceSection>,
    /// Every check, flat, in the order they ran.
    pub checks: Vec<Check>,
    pub verdict: Verdict,
    /// What this report does not show (always present; consumers copy it into their reports).
    pub scope_note: String,
}

impl Report {
    /// A report of `command` holding only `checks` (every section empty), its verdict derived
    /// from them; callers fill in the sections they ran.
    pub fn new(command: &str, checks: Vec<Check>) -> Self {
        Self {
            schema: SCHEMA.into(),
            schema_version: SCHEMA_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            command: command.into(),
            started_at_unix: now_unix(),
            host: HostInfo {
                pid: std::process::id(),
                ..HostInfo::default()
            },
            driver: DriverInfo::default(),
            expected: Vec::new(),
            view: None,
            cap: None,
            mechanism: None,
            audit: None,
            overhead: None,
            compute: None,
            selftest: None,
            method: None,
            conformance: None,
            verdict: Verdict::from_checks(&checks),
            checks,
            scope_note: SCOPE_NOTE.into(),
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, JsonSchema)]
pub struct HostInfo {
    pub hostname: Option<String>,
    pub pid: u32,
    pub kernel: Option<String>,
    /// Whether this looks like a container (`/.dockerenv`, `/run/.containerenv`, or a container
    /// cgroup path), as a hint only.
    pub in_container: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, JsonSchema)]
pub struct DriverInfo {
    /// From NVML, e.g. `580.159.04`.
    pub driver_version: Option<String>,
    /// From `cuDriverGetVersion`, e.g. `13000` for CUDA 13.0.
    pub cuda_driver_version: Option<i32>,
    /// Why NVML could not be used, when it could not.
    pub nvml_error: Option<String>,
    /// Why the CUDA driver could not be used, when it could not.
    pub cuda_error: Option<String>,
}

/// The slice expected on one device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct ExpectedSlice {
    /// CUDA ordinal, as HAMi-core indexes `CUDA_DEVICE_MEMORY_LIMIT_<i>`.
    pub device: u32,
    pub bytes: u64,
    /// `--expect-mib`, `CUDA_DEVICE_MEMORY_LIMIT_0`, or `CUDA_DEVICE_MEMORY_LIMIT`.
    pub source: String,
    /// The raw text, as given.
    pub raw: String,
}

/// Memory numbers reported by one source, in bytes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, JsonSchema)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub used: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct ViewSection {
    pub devices: Vec<ViewDevice>,
    /// `nvidia-smi --query-gpu=...` with its raw output, when nvidia-smi exists.
    pub nvidia_smi: Option<NvidiaSmi>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct ViewDevice {
    /// CUDA ordinal (NVML index when CUDA is unavailable).
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// `nvmlDeviceGetMemoryInfo`.
    pub nvml: Option<MemInfo>,
    /// `cuDeviceTotalMem_v2` (HAMi-core returns the limit; 0 when no limit is set).
    pub cuda_total_mem: Option<u64>,
    /// `cuMemGetInfo_v2` right after the primary context was created.
    pub cuda_mem_info: Option<MemInfo>,
    /// The nvidia-smi row of this device (matched by UUID), in MiB as nvidia-smi prints.
    pub nvidia_smi_total_mib: Option<u64>,
    /// The slice this device is expected to show, in bytes.
    pub expected_bytes: Option<u64>,
    pub outcome: ViewOutcome,
    /// One line per source explaining the outcome.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ViewOutcome {
    /// Every source reports the slice as the device's total.
    ShowsSlice,
    /// Every source reports more than the slice: the full card is visible.
    ShowsFullCard,
    /// The sources disagree (e.g. NVML virtualized, CUDA not).
    Mixed,
    /// No slice was expected, so there was nothing to compare against.
    NoSliceExpected,
    /// No source could report memory.
    NoData,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct NvidiaSmi {
    pub command: String,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub rows: Vec<SmiRow>,
    /// HAMi-core log lines found in its output (they are not CSV).
    pub hami_core_lines: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct SmiRow {
    pub name: String,
    pub uuid: String,
    pub total_mib: u64,
    pub used_mib: u64,
    pub free_mib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct CapSection {
    pub devices: Vec<CapDevice>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct CapDevice {
    pub index: u32,
    pub expected_bytes: Option<u64>,
    /// The search never holds more than this.
    pub ceiling_bytes: u64,
    pub ceiling_source: String,
    pub resolution_bytes: u64,
    /// The most this process held at once.
    pub held_bytes: u64,
    /// `cuMemGetInfo_v2` before the search: total − free is what the context costs the slice.
    pub start_mem_info: Option<MemInfo>,
    /// What the context itself costs: the start's used memory less what other processes of the
    /// container held (`sibling_usage`); absent where the total is not this process's own (MPS).
    pub context_overhead_bytes: Option<u64>,
    /// Other processes of this container holding part of the slice at the start (HAMi-core's
    /// shared region lists them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sibling_usage: Vec<crate::report_conformance::SiblingUsage>,
    /// Every allocation call of the search, in order (for the chart in the evidence report).
    pub steps: Vec<CapStep>,
    pub alloc_calls: u32,
    pub stopped_because: StopReason,
    /// The first refusal's CUDA error (code and name), if any.
    pub first_refusal: Option<CudaErrorInfo>,
    /// HAMi-core's `Device N OOM <used> / <limit>` lines seen on the search's stderr.
    pub hami_oom_lines: Vec<OomLine>,
    /// Other stderr lines of the search process (HAMi-core messages, driver warnings).
    pub other_stderr: Vec<String>,
    /// Whether every allocation was freed (`cuMemFree_v2` returned success for each).
    pub all_freed: bool,
    /// `cuMemGetInfo_v2` after everything was freed (free should be back to the start's).
    pub end_mem_info: Option<MemInfo>,
    /// What the HAMi-core shared region charged the container for this device at the peak.
    pub region_charged_at_peak_bytes: Option<u64>,
    /// NVML's memory info at the first refusal (physical unless HAMi-core virtualizes NVML).
    pub nvml_at_first_refusal: Option<MemInfo>,
    /// Seconds the search took, context creation excluded.
    pub search_seconds: f64,
    pub outcome: CapOutcome,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct CapStep {
    pub request_bytes: u64,
    pub ok: bool,
    /// The CUDA result code (0 on success; HAMi-core's async path may return -1).
    pub code: i64,
    pub held_after_bytes: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// Held exactly the ceiling.
    ReachedCeiling,
    /// The step shrank below the resolution after refusals.
    ResolutionReached,
    /// An error other than out-of-memory stopped the search.
    UnexpectedError,
    /// The search's time bound ran out.
    TimeBound,
    /// The search did not run.
    NotRun,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct CudaErrorInfo {
    pub code: i64,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct OomLine {
    pub pid: Option<u32>,
    pub device: u32,
    pub requested_total_bytes: u64,
    pub limit_bytes: u64,
    pub raw: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CapOutcome {
    /// Refused at or below the slice while the card itself had memory.
    Enforced,
    /// Held more than the slice.
    NotEnforced,
    /// Neither could be shown; the reasons say why.
    Inconclusive,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct MechanismSection {
    /// The HAMi-related variables, as set in this process (unset ones omitted).
    pub env: Vec<EnvVar>,
    /// `/etc/ld.so.preload`.
    pub ld_so_preload: PreloadFile,
    /// Each library named in `/etc/ld.so.preload` or `LD_PRELOAD`.
    pub libraries: Vec<LibraryCheck>,
    pub shared_region: SharedRegionCheck,
    /// Whether HAMi-core is active in this process, in one word.
    pub outcome: MechanismOutcome,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    /// For `CUDA_DEVICE_MEMORY_LIMIT*`: what the value means, or why it is malformed.
    pub interpretation: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, JsonSchema)]
pub struct PreloadFile {
    pub path: String,
    pub exists: bool,
    pub entries: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct LibraryCheck {
    pub path: String,
    /// `/etc/ld.so.preload` or `LD_PRELOAD`.
    pub named_in: String,
    pub exists: bool,
    /// Mapped into a process that has initialised CUDA (from its `/proc/self/maps`).
    pub mapped_after_cuda_init: Option<bool>,
    /// Entry points looked up; `exported` means the symbol resolves inside this library.
    pub symbols: Vec<SymbolCheck>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct SymbolCheck {
    pub name: String,
    pub exported: bool,
    /// The object the symbol resolved into (from `dladdr`), when it resolved.
    pub resolved_in: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, JsonSchema)]
pub struct SharedRegionCheck {
    pub path: String,
    /// `CUDA_DEVICE_MEMORY_SHARED_CACHE` or `default`.
    pub path_source: String,
    pub exists: bool,
    /// Mapped into a process that has initialised CUDA.
    pub mapped_after_cuda_init: Option<bool>,
    pub region: Option<SharedRegion>,
    pub error: Option<String>,
}

/// The parsed HAMi-core shared region (layout: shared/facts/hami.md §11).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, JsonSchema)]
pub struct SharedRegion {
    pub initialized: bool,
    pub major_version: u32,
    pub minor_version: u32,
    pub owner_pid: u64,
    pub device_num: u64,
    pub uuids: Vec<String>,
    /// Per CUDA ordinal, bytes; 0 means no limit.
    pub limits: Vec<u64>,
    /// Per CUDA ordinal, percent.
    pub sm_limits: Vec<u64>,
    pub proc_num: u32,
    pub procs: Vec<RegionProc>,
    /// Per device: Σ `used[d].total` over slots, i.e. what the container is charged.
    pub charged_bytes: Vec<u64>,
    /// Slots whose seqlock stayed odd (a writer was mid-update) on every read.
    pub torn_slots: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct RegionProc {
    pub slot: u32,
    pub pid: i32,
    pub hostpid: i32,
    pub status: i32,
    /// Per device (only devices `< device_num`).
    pub used: Vec<RegionUsage>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, JsonSchema)]
pub struct RegionUsage {
    pub context: u64,
    pub module: u64,
    pub data: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MechanismOutcome {
    /// A preloaded library that exports the CUDA/NVML hooks is mapped, and a limit is configured.
    HamiCoreActive,
    /// Parts are present but not all (e.g. preload names a missing file, no limit env).
    Partial,
    /// No interception library is injected.
    Absent,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    Passed,
    Failed,
    Skipped,
}

/// One youki-style check line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Check {
    /// Stable id, e.g. `view.device0`, `cap.device0`, `mechanism`.
    pub id: String,
    /// The claim the check tests, in one sentence.
    pub claim: String,
    pub status: CheckStatus,
    /// Why it passed, failed or was skipped.
    pub reason: String,
    /// An environment problem (no driver, no GPU) rather than a failed claim.
    #[serde(default)]
    pub environment: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every check passed (exit 0).
    Verified,
    /// A check failed (exit 1).
    NotVerified,
    /// Nothing failed, but not everything could be shown (exit 1).
    Inconclusive,
    /// The environment prevented the checks: no driver, no GPU (exit 3).
    Environment,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Verdict {
    pub outcome: Outcome,
    pub exit_code: u8,
    pub summary: String,
}

impl Verdict {
    /// The summary verdict follows from the checks alone: any environment failure → environment;
    /// else any failed claim → not verified; all passed → verified; otherwise (something skipped,
    /// or nothing checked) → inconclusive, because a skipped check proves nothing.
    pub fn from_checks(checks: &[Check]) -> Self {
        let failed: Vec<&Check> = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Failed && !c.environment)
            .collect();
        let env: Vec<&Check> = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Failed && c.environment)
            .collect();
        let skipped = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Skipped)
            .count();
        let passed = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Passed)
            .count();
        let ids = |v: &[&Check]| {
            v.iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        // An environment failure comes first: with no driver or no GPU, any other "failure" is a
        // consequence, not a finding about isolation.
        if !env.is_empty() {
            Self {
                outcome: Outcome::Environment,
                exit_code: 3,
                summary: format!("ENVIRONMENT: cannot check ({})", ids(&env)),
            }
        } else if !failed.is_empty() {
            Self {
                outcome: Outcome::NotVerified,
                exit_code: 1,
                summary: format!("NOT VERIFIED: {} failed ({})", failed.len(), ids(&failed)),
            }
        } else if passed > 0 && skipped == 0 {
            Self {
                outcome: Outcome::Verified,
                exit_code: 0,
                summary: format!("VERIFIED: all {passed} checks passed"),
            }
        } else {
            Self {
                outcome: Outcome::Inconclusive,
                exit_code: 1,
                summary: format!("INCONCLUSIVE: {passed} passed, {skipped} skipped"),
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct AuditSection {
    pub device: u32,
    pub slice_bytes: Option<u64>,
    /// Each path tries to hold up to this much.
    pub target_bytes: u64,
    pub paths: Vec<AuditPath>,
    pub seconds: f64,
    /// The audit's time bound ran out before every path was tried.
    pub time_bound_hit: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct AuditPath {
    /// The API or scenario, e.g. `cuMemAllocPitch_v2`, `child with a cleared environment`.
    pub path: String,
    pub outcome: AuditOutcome,
    pub held_bytes: u64,
    /// Bytes obtained beyond the slice (0 when capped).
    pub past_slice_bytes: u64,
    /// The first refusal: its code and name; `nonstandard` when the code is not a CUDA result.
    pub refusal: Option<CudaErrorInfo>,
    pub nonstandard_code: bool,
    pub calls: u32,
    pub note: String,
    /// `allocation` (an API of the driver) or `bypass` (a way around HAMi-core altogether).
    #[serde(default, skip_serializing_if = "AuditGroup::is_allocation")]
    pub group: AuditGroup,
    /// What a bypass row did, step by step (bypass rows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass: Option<BypassDetail>,
}

/// The two groups of `gpu-probe audit` rows.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AuditGroup {
    /// An allocation path of the driver API, called the ordinary way.
    #[default]
    Allocation,
    /// A way around HAMi-core that needs no Kubernetes (region tamper, an env-less first writer,
    /// a cleared environment, the driver reached past the `dlsym` interposer, a static runtime).
    Bypass,
}

impl AuditGroup {
    pub fn is_allocation(&self) -> bool {
        *self == Self::Allocation
    }
}

/// What one bypass row of `gpu-probe audit` did, with its numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct BypassDetail {
    /// The row's key: `region-tamper`, `env-less-first-writer`, `cleared-environment`,
    /// `dlmopen`, `libc-dlsym`, `cuGetProcAddress`, `static-cudart`.
    pub row: String,
    /// What the row did, in order, with its numbers (for people).
    pub steps: Vec<String>,
    /// Held before the bypass was applied (region tamper: before the limit was written).
    pub held_before_bytes: Option<u64>,
    /// The refusal before the bypass was applied.
    pub refused_before: Option<CudaErrorInfo>,
    /// The device's limit in the shared region before the row (tamper), or as the env-less first
    /// writer left it.
    pub region_limit_before_bytes: Option<u64>,
    /// The limit the row wrote into its own shared region (region tamper only).
    pub region_limit_written_bytes: Option<u64>,
    /// The original bytes were written back and read back equal (region tamper only).
    pub region_restored: Option<bool>,
    /// `cuMemGetInfo_v2` (or `cudaMemGetInfo`) as the process saw it once the bypass applied.
    pub mem_info_after: Option<MemInfo>,
    /// Which object answered each driver entry point the row used (`dladdr`).
    pub resolved_in: Vec<ResolvedSymbol>,
    /// HAMi-core's lines on the row's stderr (less the exit messages every process prints).
    pub log_lines: Vec<String>,
    /// Every allocation was freed and the process's free memory came back within 64 MiB.
    pub freed: Option<bool>,
    pub exit_code: Option<i32>,
    pub seconds: f64,
}

/// One entry point and the object `dladdr` places it in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct ResolvedSymbol {
    pub name: String,
    pub object: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AuditOutcome {
    /// Refused at or below the slice.
    Capped,
    /// Held more than the slice.
    Escaped,
    /// No slice is configured, so nothing can escape it.
    NoSlice,
    /// The path does not exist on this driver, is unsupported, or was not safe to try.
    NotApplicable,
    /// An error other than a refusal stopped it.
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct OverheadSection {
    pub device: u32,
    pub alloc: Vec<LatencyStats>,
    pub free: Vec<LatencyStats>,
    /// `cuLaunchKernel` of an empty kernel (enqueue only) and launch + synchronize.
    pub launch: Option<LatencyStats>,
    pub launch_sync: Option<LatencyStats>,
    /// Pinned host → device and device → host, GB/s (10⁹ bytes per second) per repetition.
    pub htod_gbps: Vec<f64>,
    pub dtoh_gbps: Vec<f64>,
    pub copy_bytes: u64,
    pub notes: Vec<String>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct LatencyStats {
    pub what: String,
    pub bytes: u64,
    pub samples: u32,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct ComputeSection {
    pub device: u32,
    pub seconds: f64,
    pub window_seconds: f64,
    /// Busy-kernel launches completed in each window.
    pub windows: Vec<u64>,
    pub kernels_per_second_mean: f64,
    /// Standard deviation over mean of the windows.
    pub spread: f64,
    pub sm_limit_percent: Option<u64>,
    pub policy: Option<String>,
    /// Whether throttling is expected here at all, and why.
    pub throttling_expected: bool,
    pub statement: String,
    /// Against an unlimited baseline measured in the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<crate::report_conformance::ComputeComparison>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct SelftestSection {
    pub library: String,
    pub limit_mib: u64,
    pub library_found: bool,
    /// The verdict of `gpu-probe all` run with the library injected.
    pub child_verdict: Option<Verdict>,
    pub view_outcome: Option<ViewOutcome>,
    pub cap_outcome: Option<CapOutcome>,
    pub cap_held_bytes: Option<u64>,
    pub mechanism_outcome: Option<MechanismOutcome>,
    /// Two processes sharing one slice: what the holder held and the prober could still take.
    pub sharing_holder_bytes: Option<u64>,
    pub sharing_prober_held_bytes: Option<u64>,
    pub sharing_capped: Option<bool>,
    pub outcome: Outcome,
    pub reasons: Vec<String>,
}

/// The sentence every report carries about what was not shown.
pub const SCOPE_NOTE: &str = "HAMi-core enforces the slice in software, by intercepting CUDA and NVML \
calls inside the process; it is not a security boundary like MIG. This report covers the \
cuMemAlloc_v2 path of this process (and its child) only; other allocation paths, other processes \
and compute limits are not measured here unless listed.";

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &str, status: CheckStatus, environment: bool) -> Check {
        Check {
            id: id.into(),
            claim: String::new(),
            status,
            reason: String::new(),
            environment,
        }
    }

    #[test]
    fn verdict_follows_the_checks() {
        use CheckStatus::{Failed, Passed, Skipped};
        let v = Verdict::from_checks(&[check("a", Passed, false), check("b", Passed, false)]);
        assert_eq!((v.outcome, v.exit_code), (Outcome::Verified, 0));
        let v = Verdict::from_checks(&[check("a", Passed, false), check("b", Failed, false)]);
        assert_eq!((v.outcome, v.exit_code), (Outcome::NotVerified, 1));
        assert!(v.summary.contains('b'));
        let v = Verdict::from_checks(&[check("a", Failed, false), check("cuda", Failed, true)]);
        assert_eq!((v.outcome, v.exit_code), (Outcome::Environment, 3));
        let v = Verdict::from_checks(&[check("a", Passed, false), check("b", Skipped, false)]);
        assert_eq!((v.outcome, v.exit_code), (Outcome::Inconclusive, 1));
        let v = Verdict::from_checks(&[]);
        assert_eq!(
            (v.outcome, v.exit_code),
            (Outcome::Inconclusive, 1),
            "nothing checked is not verified"
        );
    }
}
