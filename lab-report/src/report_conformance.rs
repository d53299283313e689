//! Report types added for the sharing method, the conformance matrix and the compute comparison:
//! pure serde types, no logic beyond small helpers, kept apart from `probe` to keep that file readable.
//!
//! They are reached from [`crate::probe::Report`] (`method`, `conformance`), from
//! [`crate::probe::CapDevice`] (`sibling_usage`) and from [`crate::probe::ComputeSection`]
//! (`comparison`); every such field is optional with a serde default, so reports written before
//! these types existed still read.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How this container shares the GPU, as the probe found it.
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "kebab-case")]
pub enum SharingMethod {
    /// HAMi-core preloaded and intercepting CUDA/NVML: a software slice.
    HamiCore,
    /// A client of the CUDA Multi-Process Service, with a pinned device memory limit or without.
    CudaMps,
    /// A MIG instance: a hardware partition of the card.
    Mig,
    /// Nothing that limits memory: a bare card, or time-slicing.
    None,
}

impl SharingMethod {
    /// The name people read, e.g. in verdicts.
    pub fn label(self) -> &'static str {
        match self {
            Self::HamiCore => "HAMi-core",
            Self::CudaMps => "CUDA MPS",
            Self::Mig => "MIG",
            Self::None => "none (no memory isolation)",
        }
    }
}

/// What the probe found about the sharing method, and why it named the one it did.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct MethodSection {
    pub method: SharingMethod,
    /// Other methods also present (e.g. HAMi-core over an MPS client).
    #[serde(default)]
    pub also: Vec<SharingMethod>,
    /// The facts behind the choice, one sentence each.
    pub evidence: Vec<String>,
    #[serde(default)]
    pub mps: Option<MpsFacts>,
    #[serde(default)]
    pub mig: Option<MigFacts>,
}

/// CUDA MPS as seen from a client.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct MpsFacts {
    /// `CUDA_MPS_PIPE_DIRECTORY`, else the default `/tmp/nvidia-mps`.
    pub pipe_directory: String,
    /// The control daemon's socket (`<pipe directory>/control`) exists.
    pub control_socket: bool,
    /// This process's CUDA worker is listed by NVML as an MPS client.
    pub client_connected: Option<bool>,
    /// Processes NVML lists as MPS clients of device 0 when the worker ran.
    #[serde(default)]
    pub client_pids: Vec<u32>,
    /// The pinned device memory limit per device, and where it came from.
    pub pinned_limits: Vec<MpsLimit>,
    /// `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`, when set.
    #[serde(default)]
    pub active_thread_percentage: Option<String>,
    /// What `nvidia-cuda-mps-control` answered, raw, when it was asked.
    #[serde(default)]
    pub control_answers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct MpsLimit {
    pub device: u32,
    pub bytes: u64,
    /// `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT` or `nvidia-cuda-mps-control`.
    pub source: String,
    pub raw: String,
}

/// MIG as seen from captured `nvidia-smi -L` / NVML answers (the probe never changes MIG mode).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct MigFacts {
    /// MIG devices listed, e.g. `MIG 1g.10gb Device 0 MIG-…`.
    pub devices: Vec<String>,
    /// `nvmlDeviceGetMigMode` current mode per NVML device, when the driver answers.
    #[serde(default)]
    pub mode_enabled: Vec<Option<bool>>,
    /// CUDA device names that carry a MIG profile (`… MIG 1g.10gb`).
    #[serde(default)]
    pub cuda_names: Vec<String>,
}

/// Another process of the same container, holding part of the slice when the search started
/// (from HAMi-core's shared region): its usage is not the context's cost.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct SiblingUsage {
    pub pid: i32,
    pub hostpid: i32,
    pub bytes: u64,
}

/// Throughput under the SM limit against an unlimited baseline measured in the same run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ComputeComparison {
    /// Busy kernels per second of the baseline (no SM limit, its own fresh shared region).
    pub baseline_kernels_per_second: f64,
    /// How the baseline was measured.
    pub baseline_source: String,
    /// Busy kernels per second under the limit (this run's `kernels_per_second_mean`).
    pub limited_kernels_per_second: f64,
    /// limited / baseline.
    pub ratio: f64,
    /// The ratio expected: SM limit / 100 when HAMi-core is expected to throttle, else 1.
    pub expected_ratio: f64,
    /// The band, in percentage points around `expected_ratio`.
    pub band_percentage_points: f64,
    pub within_band: bool,
}

/// `gpu-probe conformance`: what one HAMi-core library caps on this driver and card.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ConformanceSection {
    pub library: String,
    /// SHA-256 of the library file, so a report names the exact binary.
    pub library_sha256: Option<String>,
    /// The upstream revision the user says the library was built from (`--revision`).
    pub revision: Option<String>,
    /// How each child was injected.
    pub injection: String,
    /// The visible devices, as NVML (not injected) reports them.
    pub devices: Vec<ConformanceDevice>,
    pub cells: Vec<ConformanceCell>,
    /// Wall time of the whole matrix.
    pub seconds: f64,
    /// Every cell's memory was back on the card afterwards (NVML, within the tolerance).
    pub all_freed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct ConformanceDevice {
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub total_bytes: Option<u64>,
}

/// Which part of the matrix a cell belongs to.
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "kebab-case")]
pub enum CellGroup {
    Limits,
    Spellings,
    Paths,
    Sharing,
    Devices,
    Robustness,
    Compute,
    Bypass,
}

impl CellGroup {
    pub fn label(self) -> &'static str {
        match self {
            Self::Limits => "limit sizes",
            Self::Spellings => "limit spellings",
            Self::Paths => "allocation paths",
            Self::Sharing => "processes sharing a slice",
            Self::Devices => "devices",
            Self::Robustness => "calls the tracker reports trouble with",
            Self::Compute => "SM limit",
            Self::Bypass => "bypasses (around HAMi-core, no Kubernetes)",
        }
    }
}

/// One cell's result.
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "kebab-case")]
pub enum CellOutcome {
    /// Held no more than the slice, then refused (or, for the SM limit: inside the band).
    Capped,
    /// Held more than the slice (or: more throughput than the SM band allows).
    Escaped,
    /// Slower than the SM band: throttled harder than the limit asks.
    Throttled,
    /// Not device memory, or not an allocation: the library handled the call and its accounting
    /// stayed as it was.
    Intact,
    /// The library's accounting moved (limits or charges changed, or it logged an illegal device).
    Corrupted,
    /// The child died (a signal, or no report).
    Crashed,
    /// The child did not finish within its bound and was killed.
    Hung,
    /// The path does not exist here, or the cell needs more devices.
    NotApplicable,
}

impl CellOutcome {
    pub fn word(self) -> &'static str {
        match self {
            Self::Capped => "capped",
            Self::Escaped => "ESCAPED",
            Self::Throttled => "THROTTLED",
            Self::Intact => "intact",
            Self::Corrupted => "CORRUPTED",
            Self::Crashed => "CRASHED",
            Self::Hung => "HUNG",
            Self::NotApplicable => "n/a",
        }
    }

    /// Whether this outcome fails the cell's claim.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Self::Escaped | Self::Throttled | Self::Corrupted | Self::Crashed | Self::Hung
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ConformanceCell {
    /// Stable id, e.g. `limit.below-context`, `spelling.4Gi`, `path.cuArrayCreate_v2`.
    pub id: String,
    pub group: CellGroup,
    /// What the cell tries, for people.
    pub title: String,
    /// The claim the cell tests, in one sentence.
    pub claim: String,
    /// The environment given to the child on top of the injection (limits, policies).
    pub env: Vec<(String, String)>,
    pub device: Option<u32>,
    /// The slice the cell holds the result against (what the user meant).
    pub slice_bytes: Option<u64>,
    pub outcome: CellOutcome,
    pub held_bytes: Option<u64>,
    pub past_slice_bytes: Option<u64>,
    /// The limit the library enforced, as its OOM line or shared region shows it.
    pub enforced_limit_bytes: Option<u64>,
    /// What the probe's reading of HAMi-core's parser predicts for the limit (spelling cells).
    pub predicted_limit_bytes: Option<u64>,
    /// The first refusal's code and name.
    pub refusal: Option<String>,
    /// The SM-limit comparison (compute cells).
    pub compute: Option<ComputeComparison>,
    /// Why the outcome, with the numbers.
    pub note: String,
    /// HAMi-core's own lines from the child's stderr (first ones, deduplicated).
    pub log_lines: Vec<String>,
    /// The child's exit code (None: killed by a signal or by its bound).
    pub exit_code: Option<i32>,
    pub seconds: f64,
    /// The card's memory was back afterwards (NVML used within the tolerance of the start).
    pub freed: Option<bool>,
}
