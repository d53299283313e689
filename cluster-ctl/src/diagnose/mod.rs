//! The diagnosis engine behind `cluster-ctl doctor`: one engine, two inputs.
//!
//! - **live** ([`live`]): the cluster's objects and events, plus the last lines of the HAMi
//!   scheduler's, device plugins' and kube-apiserver's container logs, under a deadline;
//! - **text** ([`text`]): `doctor --explain FILE…|-`: any mix of `kubectl describe` / `get -o
//!   json|yaml`, container and kube-apiserver logs, nvidia-smi output, gpu-probe reports and
//!   `run --out` folders, pasted from anywhere (truncated, GitHub-escaped, CRLF).
//!
//! Both become an [`evidence::Evidence`]: documents of lines (objects are rendered into lines as
//! kubectl shows them) and typed objects. The rules ([`rules::RULES`], data: signals → failure mode
//! → cause → fix, HAMi versions, upstream source) run over it in [`engine`] — pure — and
//! [`render`] prints the answer. `doctor`'s original checks ([`crate::doctor`]) are facts of the
//! same engine.

pub mod engine;
pub mod evidence;
pub mod facts;
pub mod live;
pub mod objects;
pub mod render;
pub mod rules;
pub mod text;
pub mod version;

use std::path::{Path, PathBuf};

pub use engine::{Diagnosis, Finding, Outcome, diagnose};

use crate::commands::{self, Ctx, Failure, exit};

/// The answer as a subcommand outcome: exit 1 when a failure was named, 0 when none matched.
pub fn outcome(d: &Diagnosis) -> commands::Outcome {
    commands::Outcome {
        exit: match d.outcome {
            Outcome::FailureNamed => exit::CLAIM_FAILED,
            Outcome::NoKnownFailure => exit::OK,
        },
        human: render::human(d),
        json: serde_json::to_value(d).unwrap_or(serde_json::Value::Null),
    }
}

/// `doctor --explain PATH…` (`-`: stdin). Unreadable input is exit 3, with the path.
pub fn explain(paths: &[PathBuf]) -> Result<commands::Outcome, Failure> {
    let ev = text::read_paths(paths, &mut std::io::stdin().lock()).map_err(Failure::env)?;
    Ok(outcome(&diagnose(&ev)))
}

/// `doctor` on the cluster (`--from DIR`: and an earlier run's probe reports and logs).
pub async fn doctor(
    cluster: &crate::api::Cluster,
    ctx: &Ctx,
    from: Option<&Path>,
) -> Result<commands::Outcome, Failure> {
    let ev = live::gather(cluster, &ctx.namespace, &ctx.hami_namespace, from).await?;
    Ok(outcome(&diagnose(&ev)))
}

/// Writes the JSON answer to `path` (atomically: a temporary file, then a rename), for `--save`.
pub fn save(path: &Path, json: &serde_json::Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(json)
        .map_err(|e| Failure::env(anyhow::anyhow!("serialising the diagnosis: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{text}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            Failure::env(anyhow::anyhow!(
                "writing {}: {e}; pass --save a path in a writable folder",
                path.display()
            ))
        })
}
