//! Printing plans and findings for people (`--output human`) and programs (`--output json`).
//!
//! Why here: one place decides what leaves the process, so one place redacts secrets: values of
//! keys such as `token`, `agent-token`, `datastore-endpoint`, `password` never reach a diff or JSON.

use std::fmt::Write as _;

use serde::Serialize;
use similar::TextDiff;

use crate::checks::{Finding, Level};
use crate::observe::{Driver, Observation};
use crate::plan::{FileChange, Plan, Step};

/// Keys whose values are secrets (k3s flags and containerd registry auth).
const SECRET_KEYS: [&str; 12] = [
    "token",
    "agent-token",
    "server-token",
    "datastore-endpoint",
    "etcd-s3-access-key",
    "etcd-s3-secret-key",
    "etcd-s3-session-token",
    "password",
    "auth",
    "identitytoken",
    "token-file",
    "secret",
];

/// Replaces the values of secret keys (YAML `key: v` or TOML `key = v`) with `<redacted>`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let Some(pos) = trimmed.find([':', '=']) else {
            out.push_str(line);
            continue;
        };
        let key = trimmed[..pos].trim().trim_matches(['"', '\'']);
        if !SECRET_KEYS.contains(&key.to_ascii_lowercase().as_str()) {
            out.push_str(line);
            continue;
        }
        let sep = if trimmed[pos..].starts_with('=') {
            " = "
        } else {
            ": "
        };
        let indent = &line[..line.len() - trimmed.len()];
        let _ = write!(out, "{indent}{key}{sep}<redacted>");
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// A unified diff of a file change, secrets redacted.
pub fn diff(path: &str, before: Option<&str>, after: &str) -> String {
    let old = redact(before.unwrap_or(""));
    let new = redact(after);
    let old_name = if before.is_some() {
        format!("a{path}")
    } else {
        "/dev/null".to_owned()
    };
    TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&old_name, &format!("b{path}"))
        .to_string()
}

/// The commands a step runs, as shown in plans: built by [`crate::actions::actions`], the same
/// function `apply` takes its commands from. `keyring_path` maps the keyring's host path to the
/// path gpg writes; `interval` is the readiness poll interval.
pub fn step_commands(
    step: &Step,
    interval: std::time::Duration,
    keyring_path: &dyn Fn(&str) -> String,
) -> Vec<String> {
    crate::actions::actions(step, interval, keyring_path)
        .iter()
        .map(crate::actions::Action::describe)
        .collect()
}

/// One-line title of a step.
pub fn step_title(step: &Step) -> String {
    match step {
        Step::AddToolkitRepo { .. } => {
            "add NVIDIA's apt repository for the Container Toolkit".to_owned()
        }
        Step::InstallToolkit { packages } => format!(
            "install the NVIDIA Container Toolkit ({})",
            packages.first().cloned().unwrap_or_default()
        ),
        Step::WriteFile(f) => format!(
            "{} {}",
            if f.before.is_some() {
                "update"
            } else {
                "create"
            },
            f.path
        ),
        Step::InstallK3s { version } => format!(
            "install k3s {} with the official installer",
            version.as_deref().unwrap_or("(stable channel)")
        ),
        Step::RestartService { unit } => format!("restart {unit}"),
        Step::WaitReady { target, timeout_s } => format!(
            "wait up to {timeout_s}s for {}",
            match target {
                crate::plan::Readiness::K3sNode => "the node to be Ready",
                crate::plan::Readiness::Containerd => "containerd to be active",
            }
        ),
        Step::CopyKubeconfig { user, dest, .. } => {
            format!("copy the admin kubeconfig to {dest} (0600, owner {user})")
        }
    }
}

/// A short description of the observed host, printed above plans.
pub fn host_summary(obs: &Observation) -> String {
    let mut parts = vec![
        obs.os_pretty_name
            .clone()
            .unwrap_or_else(|| "unknown OS".to_owned()),
    ];
    match &obs.driver {
        Driver::Ok { version, gpus } => {
            parts.push(format!("driver {version}"));
            for g in gpus {
                parts.push(format!("GPU {} {} (MIG {})", g.index, g.name, g.mig_mode));
            }
        }
        Driver::Missing { why } => parts.push(format!("no driver ({why})")),
    }
    parts.push(match &obs.k3s {
        Some(k) => format!(
            "k3s {}",
            k.version
                .map_or_else(|| "(version unknown)".to_owned(), |v| v.to_string())
        ),
        None => "no k3s".to_owned(),
    });
    parts.push(match &obs.toolkit {
        Some(t) => format!("toolkit at {}", t.runtime_path),
        None => "no toolkit".to_owned(),
    });
    if let Some(c) = &obs.containerd {
        parts.push(format!(
            "containerd {}",
            c.version.as_deref().unwrap_or("?")
        ));
    }
    format!("Host: {}", parts.join(", "))
}

/// How commands are shown: the poll interval and where the keyring goes (see [`step_commands`]).
#[derive(Debug, Clone)]
pub struct Shown {
    pub interval: std::time::Duration,
    /// The `--root` directory the keyring path is placed under (`/` on the running system).
    pub root: std::path::PathBuf,
}

impl Shown {
    fn commands(&self, step: &Step) -> Vec<String> {
        let keyring = |host: &str| {
            self.root
                .join(host.trim_start_matches('/'))
                .to_string_lossy()
                .into_owned()
        };
        step_commands(step, self.interval, &keyring)
    }
}

/// The line that says how a file was (or will be) checked.
fn validation_text(f: &FileChange) -> String {
    f.validation.as_ref().map_or_else(
        || "not validated yet".to_owned(),
        crate::validate::Validation::describe,
    )
}

/// The plan for people: numbered steps with why, commands and diffs.
pub fn plan_human(title: &str, plan: &Plan, shown: &Shown) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{title}");
    if plan.steps.is_empty() && plan.blockers.is_empty() {
        let _ = writeln!(
            s,
            "Nothing to do: the host is already configured (no file would change)."
        );
    }
    for (i, ps) in plan.steps.iter().enumerate() {
        let _ = writeln!(s, "\n{}. {}", i + 1, step_title(&ps.step));
        let _ = writeln!(s, "   why: {}", ps.why);
        for c in shown.commands(&ps.step) {
            let _ = writeln!(s, "   runs: {c}");
        }
        if let Step::WriteFile(f) = &ps.step {
            for c in &f.changes {
                let _ = writeln!(s, "   - {c}");
            }
            if let Some(target) = &f.link_target {
                let _ = writeln!(
                    s,
                    "   {} is a symbolic link to {target}: the target is edited in place, the link is kept",
                    f.path
                );
            }
            let _ = writeln!(
                s,
                "   {}; written atomically (temp file + rename)",
                if f.before.is_some() {
                    "old file backed up as <file>.host-setup-<UTC time>.bak, owner and mode kept"
                        .to_owned()
                } else {
                    format!("new file, mode {:o}", f.mode)
                },
            );
            let _ = writeln!(s, "   {}", validation_text(f));
            for line in diff(&f.path, f.before.as_deref(), &f.after).lines() {
                let _ = writeln!(s, "   | {line}");
            }
        }
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(s, "\nWarnings:");
        for w in &plan.warnings {
            let _ = writeln!(s, "  ! {w}");
        }
    }
    if !plan.blockers.is_empty() {
        let _ = writeln!(
            s,
            "\nBlocked (nothing will be changed until these are fixed):"
        );
        for b in &plan.blockers {
            let _ = writeln!(s, "  x {}\n    fix: {}", b.problem, b.fix);
        }
    }
    s
}

/// JSON form of a plan: steps with their commands and diffs (redacted), warnings, blockers.
pub fn plan_json(plan: &Plan, shown: &Shown) -> serde_json::Value {
    #[derive(Serialize)]
    struct JsonStep<'a> {
        #[serde(flatten)]
        step: &'a crate::plan::PlannedStep,
        title: String,
        commands: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        diff: Option<String>,
    }
    let steps: Vec<JsonStep<'_>> = plan
        .steps
        .iter()
        .map(|ps| JsonStep {
            step: ps,
            title: step_title(&ps.step),
            commands: shown.commands(&ps.step),
            diff: match &ps.step {
                Step::WriteFile(f) => Some(diff(&f.path, f.before.as_deref(), &f.after)),
                _ => None,
            },
        })
        .collect();
    serde_json::json!({
        "steps": steps,
        "warnings": plan.warnings,
        "blockers": plan.blockers,
        "empty": plan.steps.is_empty(),
    })
}

/// Findings for people.
pub fn findings_human(title: &str, findings: &[Finding]) -> String {
    let mut s = format!("{title}\n");
    for f in findings {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
            Level::Skip => "skip",
        };
        let _ = writeln!(s, "  [{tag}] {}", f.what);
        if let Some(fix) = &f.fix {
            let _ = writeln!(s, "         fix: {fix}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_yaml_and_toml_secrets_but_not_other_keys() {
        let text = "token: K10abc::server:xyz\ntls-san:\n  - a\ndatastore-endpoint: \"mysql://u:p@h/db\"\n[x.auth]\n  password = \"hunter2\"\n";
        let r = redact(text);
        assert!(!r.contains("K10abc"));
        assert!(!r.contains("hunter2"));
        assert!(!r.contains("mysql://"));
        assert!(r.contains("tls-san:\n  - a\n"));
        assert!(r.contains("  password = <redacted>\n"));
    }

    #[test]
    fn diff_never_shows_a_token() {
        let d = diff(
            "/etc/rancher/k3s/config.yaml",
            Some("token: s3cret\n"),
            "token: s3cret\ndefault-runtime: nvidia\n",
        );
        assert!(d.contains("+default-runtime: nvidia"));
        assert!(!d.contains("s3cret"));
    }
}
