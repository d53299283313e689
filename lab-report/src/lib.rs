//! lab-report: the contracts between the lab's tools, and the judgement of each claim from its
//! evidence.
//!
//! - [`probe`]: gpu-probe's JSON report (re-exported by gpu-probe as `gpu_probe::report`);
//! - [`report_conformance`]: the probe report's sharing method, conformance matrix and compute
//!   comparison;
//! - [`run`]: `run.json`, what `cluster-ctl run --out DIR` writes (typed exercise ids and results);
//! - [`fleet`]: `fleet.json`, what `cluster-ctl fleet --out DIR` writes (every card, its slice,
//!   its probe report and the judgement of it);
//! - [`metrics`]: a fleet run as OpenMetrics text (and the Prometheus text the Pushgateway
//!   parses): per card verified, checked, slice and cap; per run timestamp and duration;
//! - [`summary`]: evidence-pack's `summary.json`;
//! - [`check`]: the ids of gpu-probe's checks (`view.device0`, `audit.<path>`) and of local claims;
//! - [`k8s`]: the few facts the judge reads from Kubernetes Pod and Event objects (serde only);
//! - [`judge`]: pure functions from evidence files to "the evidence shows it" or "UNSUPPORTED,
//!   because this file says…": cluster-ctl decides with them, evidence-pack re-runs them.
//! - [`schema`]: the JSON Schema of each document, generated from the types (`schemas/`).
//!
//! Invariant: this crate does no file or network I/O and depends on no Kubernetes, CUDA or async
//! crate, so every tool can use it and every judgement is testable on recorded files.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod check;
pub mod fleet;
pub mod judge;
pub mod k8s;
pub mod metrics;
pub mod probe;
pub mod report_conformance;
pub mod run;
pub mod schema;
pub mod summary;

/// One MiB in bytes.
pub const MIB: u64 = 1024 * 1024;
