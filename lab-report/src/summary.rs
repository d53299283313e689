//! evidence-pack's versioned `summary.json`: the one document every other file of the bundle is
//! rendered from (report.md, report.html, junit.xml), so `verify` can re-render them and prove the
//! readable reports say what the machine-readable summary says. evidence-pack re-exports these
//! types as `evidence_pack::model`; `schemas/evidence-summary.schema.json` is generated from them.
//!
//! Any change that removes or renames a field bumps [`SCHEMA_VERSION`]; readers refuse other
//! versions instead of guessing.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Identifies the document type.
pub const SCHEMA: &str = "hami-isolation-lab/evidence-summary";
/// Bumped on any incompatible change to [`Summary`].
pub const SCHEMA_VERSION: u32 = 1;

/// This file's source, so a renderer can tell (by hashing it) when the summary types changed.
pub const TYPES_SOURCE: &str = include_str!("summary.rs");

/// Where the claims came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `cluster-ctl run --out DIR`: claims are the exercises of `run.json`.
    Cluster,
    /// A directory of gpu-probe reports from a bare GPU box: claims are the probes' checks.
    Local,
    /// `cluster-ctl fleet --out DIR`: one claim per card of `fleet.json`, judged from its probe
    /// report.
    Fleet,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cluster => "cluster",
            Self::Local => "local",
            Self::Fleet => "fleet",
        }
    }
}

/// The verdict on one claim.
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ClaimVerdict {
    Pass,
    Fail,
    NotRun,
}

impl ClaimVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::NotRun => "not run",
        }
    }
}

/// The verdict on the whole bundle, derived from the claims by [`Outcome::from_claims`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every claim passed (and there is at least one).
    AllPass,
    /// At least one claim failed.
    ClaimFailed,
    /// Nothing failed, but something was not run (or there were no claims): nothing proven.
    Incomplete,
}

impl Outcome {
    pub fn from_claims(claims: &[Claim]) -> Self {
        if claims.iter().any(|c| c.verdict == ClaimVerdict::Fail) {
            Self::ClaimFailed
        } else if !claims.is_empty() && claims.iter().all(|c| c.verdict == ClaimVerdict::Pass) {
            Self::AllPass
        } else {
            Self::Incomplete
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllPass => "ALL CLAIMS PASS",
            Self::ClaimFailed => "A CLAIM FAILED",
            Self::Incomplete => "INCOMPLETE (a claim was not run)",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Summary {
    pub schema: String,
    pub schema_version: u32,
    /// evidence-pack's version.
    pub tool_version: String,
    /// Identifies the renderer that made report.md / report.html / junit.xml (a hash of its
    /// source, see [`crate::render::renderer_id`]); `verify` re-renders and compares only when its
    /// own renderer is the same. Missing in older bundles.
    #[serde(default)]
    pub renderer: String,
    pub mode: Mode,
    /// The bundle's time, from the inputs (not the clock), RFC 3339 UTC.
    pub timestamp: String,
    /// The bundle's name, also the top directory inside the archive.
    pub bundle: String,
    pub environment: Environment,
    pub claims: Vec<Claim>,
    pub totals: Totals,
    pub outcome: Outcome,
    pub scope: Scope,
    /// The cap searches of every probe report, for the chart.
    pub cap_searches: Vec<CapSearch>,
    /// What was redacted before packing: kind, file and count, never the value.
    pub redactions: Vec<Redaction>,
    /// Problems with the inputs that did not stop the packing.
    pub warnings: Vec<String>,
    /// The raw input files, as stored under `raw/`.
    pub raw_files: Vec<String>,
    /// The matrices of the `gpu-probe conformance` reports among the inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conformance: Vec<Matrix>,
    /// Numbers that were measured but claim nothing (overhead, compute without a band): reported,
    /// never counted as a pass. Missing in older bundles.
    #[serde(default)]
    pub measurements: Vec<Measurement>,
    /// Fleet mode: one row per card of `fleet.json` (and per node whose cards are unknown), in
    /// the document's order; each row's verdict is its claim's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fleet: Vec<FleetRow>,
}

/// One card of a fleet run, for the fleet table and grid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct FleetRow {
    pub node: String,
    /// `ready`, `not ready` or `cordoned`, at discovery.
    pub node_state: String,
    /// HAMi's version as the node shows it.
    pub hami_version: Option<String>,
    /// The card's index on its node; absent for a node whose registration could not be read.
    pub index: Option<u32>,
    pub uuid: String,
    pub model: String,
    /// The card's memory as HAMi registered it.
    pub memory_mib: Option<u64>,
    /// The slice the probe pod asked for.
    pub slice_mib: Option<u64>,
    /// The cap boundary the probe measured.
    pub cap_mib: Option<u64>,
    /// The id of this card's claim (its verdict and reason).
    pub claim: String,
}

/// A measurement: what was measured, its numbers and the files they come from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Measurement {
    pub id: String,
    /// What was measured, in one sentence.
    pub what: String,
    /// The numbers in one line, and why this is not a pass/fail claim.
    pub reason: String,
    pub numbers: BTreeMap<String, serde_json::Value>,
    /// Archive paths (under `raw/`) of the files the numbers come from.
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Environment {
    pub gpus: Vec<GpuEnv>,
    pub driver_version: Option<String>,
    /// e.g. `13.0`, from `cuDriverGetVersion`.
    pub cuda_driver: Option<String>,
    pub kubernetes: Option<String>,
    pub k3s: Option<String>,
    pub containerd: Option<String>,
    pub kernel: Option<String>,
    pub os: Option<String>,
    pub node: Option<String>,
    pub hami_chart: Option<String>,
    pub hami_images: Vec<String>,
    pub scheduler_image: Option<String>,
    pub slice_mib: Option<u64>,
    pub oversubscribe_mib: Option<u64>,
    pub gpu_probe_version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct GpuEnv {
    pub model: Option<String>,
    pub uuid: Option<String>,
    /// The card's memory, when a source that is not virtualized reported it.
    pub memory_mib: Option<u64>,
    /// Where `memory_mib` came from, or why it is unknown.
    pub memory_source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Claim {
    pub id: String,
    /// The claim, in one sentence.
    pub claim: String,
    pub verdict: ClaimVerdict,
    /// Why it passed, failed or was not run.
    pub reason: String,
    /// The numbers behind the verdict.
    pub numbers: BTreeMap<String, serde_json::Value>,
    /// Archive paths (under `raw/`) of the evidence files.
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Totals {
    pub pass: usize,
    pub fail: usize,
    pub not_run: usize,
}

impl Totals {
    pub fn of(claims: &[Claim]) -> Self {
        let count = |v| claims.iter().filter(|c| c.verdict == v).count();
        Self {
            pass: count(ClaimVerdict::Pass),
            fail: count(ClaimVerdict::Fail),
            not_run: count(ClaimVerdict::NotRun),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Scope {
    /// What kind of isolation this is (always present).
    pub statement: String,
    /// The `scope_note` of every probe report, deduplicated.
    pub probe_notes: Vec<String>,
    /// What these claims do not show.
    pub not_measured: Vec<String>,
}

/// One device's cap search from one probe report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct CapSearch {
    /// The archive path of the probe report.
    pub source: String,
    pub device: u32,
    /// The slice, when one was expected.
    pub slice_bytes: Option<u64>,
    /// The card's memory, when known from a source that is not virtualized.
    pub card_bytes: Option<u64>,
    /// Where `card_bytes` came from, or why it is unknown.
    pub card_source: String,
    pub held_bytes: u64,
    /// gpu-probe's outcome word (`enforced`, `not-enforced`, `inconclusive`).
    pub outcome: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Step {
    pub request_bytes: u64,
    pub ok: bool,
    pub code: i64,
    pub held_after_bytes: u64,
}

/// One redaction: what kind of secret, in which file, how many times.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub struct Redaction {
    pub file: String,
    pub kind: String,
    pub count: usize,
}

/// One `gpu-probe conformance` report's matrix, as kept in `summary.json` (rows built and
/// rendered by evidence-pack's `matrix` module).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Matrix {
    /// The report's archive path (under `raw/`).
    pub source: String,
    pub library: String,
    pub revision: Option<String>,
    pub library_sha256: Option<String>,
    /// The card(s), e.g. `NVIDIA H200 143771 MiB`.
    pub devices: Vec<String>,
    pub driver_version: Option<String>,
    pub seconds: f64,
    pub all_freed: bool,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Row {
    /// The group, as people read it (`allocation paths`).
    pub group: String,
    pub cell: String,
    pub title: String,
    /// gpu-probe's outcome word (`capped`, `escaped`, `crashed`, …).
    pub outcome: String,
    /// The claim this row is (`<report>:conformance.<cell>`), when the cell had one.
    pub claim: Option<String>,
    /// The claim failed.
    pub failed: bool,
    /// Held / slice, or the SM-limit ratio, as text.
    pub numbers: String,
    pub note: String,
}
