//! The subcommands, one module each: each gathers objects through [`crate::api::Cluster`], decides
//! with the pure modules (`decide`, `doctor`, `exercises`, `helmchart`, `sizing`), prints a plan
//! for `--dry-run`, applies it otherwise, and returns an [`Outcome`] (what to print, exit code).
//! `chart_install` is the HelmChart path that `install` and `cleanup` share.
//!
//! Exit codes: 0 ok/verified, 1 a checked claim failed, 2 usage, 3 environment (unreachable
//! cluster, credentials or permissions refused, missing helm or probe binary, HAMi not ready for
//! the exercises).

mod chart_install;
mod cleanup;
mod doctor;
mod fleet;
mod harden;
mod install;
mod preflight;
mod probe;
mod run;

use std::path::PathBuf;

use lab_runner::Runner;
use serde::Serialize;
use serde_json::Value;

use crate::api::ApiError;
use crate::doctor::{Finding, Severity};
use crate::helm::{self, HelmTarget, ReleaseState};
use crate::report::OutDir;

pub use cleanup::cleanup;
pub use doctor::doctor;
pub use fleet::{FleetArgs, fleet, fleet_cronjob, write_atomic};
pub use harden::harden;
pub use install::{Check, install_checks, install_hami, install_plan, verify_steps};
pub use preflight::{PreflightReport, preflight, preflight_report};
pub use probe::{container_gpumem, probe};
pub use run::{RunArgs, pick_node, run, run_dry_offline, run_plan};

/// Exit codes of every subcommand.
pub mod exit {
    pub const OK: u8 = 0;
    pub const CLAIM_FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const ENVIRONMENT: u8 = 3;
}

/// What a subcommand printed and how it ends.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub exit: u8,
    pub human: String,
    pub json: Value,
}

/// A subcommand that could not do its work, with the exit code that says why.
#[derive(Debug, thiserror::Error)]
#[error("{error:#}")]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn env(e: impl Into<anyhow::Error>) -> Self {
        Self {
            code: exit::ENVIRONMENT,
            error: e.into(),
        }
    }
    pub fn usage(e: impl Into<anyhow::Error>) -> Self {
        Self {
            code: exit::USAGE,
            error: e.into(),
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self::env(e)
    }
}

/// Options every subcommand shares.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Namespace of the lab pods.
    pub namespace: String,
    /// Namespace HAMi is (to be) installed in.
    pub hami_namespace: String,
    pub dry_run: bool,
    pub helm: HelmTarget,
    /// How install-hami installs the chart: helm, k3s's HelmChart, or auto.
    pub installer: crate::helmchart::InstallerChoice,
}

fn progress(line: &str) {
    crate::progress(line);
}

fn findings_text(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            let tag = match f.severity {
                Severity::Problem => "PROBLEM",
                Severity::Info => "info",
            };
            format!(
                "{tag} [{}] {}: {}\n    fix: {}\n",
                f.rule, f.subject, f.what, f.fix
            )
        })
        .collect()
}

/// The HAMi release as `helm list` shows it (`None` when helm is not installed).
fn helm_release(runner: &dyn Runner, target: &HelmTarget) -> Result<Option<ReleaseState>, Failure> {
    if !runner.exists("helm") {
        return Ok(None);
    }
    let out = runner
        .run_checked(&helm::list_cmd(target))
        .map_err(Failure::env)?;
    let list = helm::parse_helm_list(&out.stdout).map_err(Failure::env)?;
    Ok(Some(helm::release_state(&list)))
}

/// `gpu-probe` next to the running executable.
pub fn default_probe_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("gpu-probe")))
        .unwrap_or_else(|| PathBuf::from("gpu-probe"))
}

fn write_or_warn(out: &OutDir, rel: &str, bytes: &[u8]) -> Option<String> {
    match out.write(rel, bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            progress(&format!(
                "could not write {}: {e}",
                out.root.join(rel).display()
            ));
            None
        }
    }
}

fn write_json_or_warn<T: Serialize>(out: &OutDir, rel: &str, v: &T) -> Option<String> {
    match out.write_json(rel, v) {
        Ok(r) => Some(r),
        Err(e) => {
            progress(&format!(
                "could not write {}: {e}",
                out.root.join(rel).display()
            ));
            None
        }
    }
}
