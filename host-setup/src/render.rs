//! Printing plans and findings for people (`--output human`) and programs (`--output json`).
//!
//! Why here: one place decides what leaves the process, so one place redacts secrets: values of
//! keys such as `token`, `agent-token`, `datastore-endpoint`, `password` never reach a diff or JSON.

use std::fmt::Write as _;

use serde::Serialize;
use similar::TextDiff;

use crate::apply::{K3S_INSTALLER_URL, TOOLKIT_KEY_URL, TOOLKIT_LIST_URL};
use crate::checks::{Finding, Level};
use crate::observe::{Driver, Observation};
use crate::plan::{Check, Plan, Step};

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

/// The commands a step runs, as shown in plans.
pub fn step_commands(step: &Step) -> Vec<String> {
    match step {
        Step::AddToolkitRepo { keyring, list } => vec![
            format!("curl -fsSL {TOOLKIT_KEY_URL} | gpg --dearmor -o {keyring}"),
            format!("curl -fsSL {TOOLKIT_LIST_URL} (signed-by={keyring} added) > {list}"),
        ],
        Step::InstallToolkit { packages } => vec![
            "apt-get update".to_owned(),
            format!(
                "apt-get install -y --no-install-recommends {}{}",
                if packages.iter().any(|p| p.contains('=')) {
                    "--allow-downgrades "
                } else {
                    ""
                },
                packages.join(" ")
            ),
        ],
        Step::InstallK3s { version } => vec![format!(
            "curl -sfL {K3S_INSTALLER_URL} | {}sh -s - server",
            version
                .as_ref()
                .map(|v| format!("INSTALL_K3S_VERSION={v} "))
                .unwrap_or_default()
        )],
        Step::RestartService { unit } => vec![format!("systemctl restart {unit}")],
        Step::WaitReady { timeout_s, .. } => vec![format!("poll for up to {timeout_s}s")],
        Step::WriteFile(_) | Step::CopyKubeconfig { .. } => Vec::new(),
    }
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

fn check_text(check: &Check) -> &'static str {
    match check {
        Check::K3sYaml => "parses as a YAML mapping",
        Check::K3sTemplate => "TOML part parses, no table of the base template redeclared",
        Check::ContainerdRoot => {
            "parses, nvidia default in the right table, loaded by the real `containerd config dump` (with drop-ins) when installed"
        }
        Check::ContainerdDropIn => "parses; loaded with its root config",
        Check::ToolkitConfig => "parses as TOML, both settings in effect",
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

/// The plan for people: numbered steps with why, commands and diffs.
pub fn plan_human(title: &str, plan: &Plan) -> String {
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
        for c in step_commands(&ps.step) {
            let _ = writeln!(s, "   runs: {c}");
        }
        if let Step::WriteFile(f) = &ps.step {
            for c in &f.changes {
                let _ = writeln!(s, "   - {c}");
            }
            let _ = writeln!(
                s,
                "   {}; written atomically (temp file + rename); checked first: {}",
                if f.before.is_some() {
                    "old file backed up as <file>.host-setup-<UTC time>.bak, owner and mode kept"
                        .to_owned()
                } else {
                    format!("new file, mode {:o}", f.mode)
                },
                check_text(&f.check)
            );
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

/// JSON form of a plan: steps with their diffs (redacted), warnings, blockers.
pub fn plan_json(plan: &Plan) -> serde_json::Value {
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
            commands: step_commands(&ps.step),
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
