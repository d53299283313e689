//! `cluster-ctl doctor [--from DIR]`: every rule of `crate::doctor` over a fresh snapshot, and
//! with `--from` the probe verdicts of an earlier run.

use std::path::Path;

use serde_json::json;

use super::{Ctx, Failure, Outcome, exit, findings_text};
use crate::api::Cluster;
use crate::doctor::{self, Severity};
use crate::report::probe_outcome;

/// Whether a gpu-probe report's view saw the full card on some device (pure).
pub fn shows_full_card(probe_json: &str) -> bool {
    serde_json::from_str::<gpu_probe::report::Report>(probe_json).is_ok_and(|r| {
        r.view.is_some_and(|v| {
            v.devices
                .iter()
                .any(|d| d.outcome == gpu_probe::report::ViewOutcome::ShowsFullCard)
        })
    })
}

/// `(pod, outcome)` of every `probe/*.json` in a run's output folder; the outcome is
/// `shows-full-card` when the probe's view saw the whole card, else the verdict's outcome.
pub fn probe_verdicts_from(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir.join("probe")) else {
        return Vec::new();
    };
    let mut v: Vec<(String, String)> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            if path.extension()? != "json" {
                return None;
            }
            let pod = path.file_stem()?.to_str()?.to_owned();
            let text = std::fs::read_to_string(&path).ok()?;
            // The view's own word wins: a full card seen from inside is its own diagnosis.
            if shows_full_card(&text) {
                return Some((pod, "shows-full-card".to_owned()));
            }
            Some((pod, probe_outcome(&text)?))
        })
        .collect();
    v.sort();
    v
}

pub async fn doctor(cluster: &Cluster, ctx: &Ctx, from: Option<&Path>) -> Result<Outcome, Failure> {
    let mut s = cluster
        .snapshot(&ctx.namespace, &ctx.hami_namespace)
        .await?;
    if let Some(dir) = from {
        s.probe_verdicts = probe_verdicts_from(dir);
    }
    let findings = doctor::diagnose(&s);
    let problems = findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .count();
    let mut human = findings_text(&findings);
    human.push_str(&format!("doctor: {problems} problem(s)\n"));
    Ok(Outcome {
        exit: if problems == 0 {
            exit::OK
        } else {
            exit::CLAIM_FAILED
        },
        human,
        json: json!({"findings": findings}),
    })
}
