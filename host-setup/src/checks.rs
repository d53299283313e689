//! Read-only checks: `preflight` (is this host ready for install?) and `verify` (is nvidia the
//! default runtime, is the RuntimeClass there, is the node labelled?).
//!
//! Why together: both turn an [`Observation`] (plus, for verify, a few read-only kubectl /
//! containerd calls through the runner) into a list of [`Finding`]s with a fix each; the CLI maps
//! them to exit codes.

use serde::Serialize;

use lab_runner::{Cmd, Runner};

use crate::containerd;
use crate::k3s;
use crate::observe::{self, Driver, Observation};
use crate::plan::{self, Target};
use crate::root::HostRoot;
use crate::validate::{self, Containerd, Source};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Ok,
    Warn,
    Fail,
    /// Not checked (e.g. needs the running system, but `--root` points elsewhere).
    Skip,
}

/// One checked claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn ok(what: impl Into<String>) -> Self {
        Self {
            level: Level::Ok,
            what: what.into(),
            fix: None,
        }
    }
    fn warn(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            level: Level::Warn,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            level: Level::Fail,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
    fn skip(what: impl Into<String>) -> Self {
        Self {
            level: Level::Skip,
            what: what.into(),
            fix: None,
        }
    }
}

/// `host-setup preflight`: pure over the observation.
pub fn preflight(obs: &Observation, system: bool) -> Vec<Finding> {
    let mut out: Vec<Finding> = plan::install_blockers(obs, system)
        .into_iter()
        .map(|b| Finding::fail(b.problem, b.fix))
        .collect();
    if system && obs.euid == Some(0) {
        out.push(Finding::ok("running as root"));
    } else if !system {
        out.push(Finding::skip("root check (not the running system: --root)"));
    }
    if obs.apt {
        out.push(Finding::ok(format!(
            "apt-based: {}",
            obs.os_pretty_name.as_deref().unwrap_or("apt-get present")
        )));
    }
    if let Driver::Ok { version, gpus } = &obs.driver {
        out.push(Finding::ok(format!("NVIDIA driver {version}")));
        for g in gpus {
            out.push(Finding::ok(format!(
                "GPU {}: {}, {} MiB, MIG {}",
                g.index,
                g.name,
                g.memory_mib
                    .map_or_else(|| "?".to_owned(), |m| m.to_string()),
                g.mig_mode
            )));
        }
    }
    if obs.cgroup_v2 {
        out.push(Finding::ok("cgroup v2"));
    }
    match &obs.k3s {
        Some(k) => out.push(Finding::ok(format!(
            "k3s installed ({}{})",
            k.version
                .map_or_else(|| "version unknown".to_owned(), |v| v.to_string()),
            match k.active {
                Some(true) => ", active",
                Some(false) => ", NOT active",
                None => "",
            }
        ))),
        None => out.push(Finding::ok("k3s not installed yet (install will add it)")),
    }
    if let Some(c) = &obs.containerd {
        out.push(Finding::ok(format!(
            "standalone containerd {} present",
            c.version.as_deref().unwrap_or("(version unknown)")
        )));
    }
    match &obs.toolkit {
        Some(t) => out.push(Finding::ok(format!(
            "NVIDIA Container Toolkit: {}{}",
            t.runtime_path,
            t.version
                .as_deref()
                .map(|v| format!(" ({v})"))
                .unwrap_or_default()
        ))),
        None => out.push(Finding::ok(
            "NVIDIA Container Toolkit not installed yet (install will add it before k3s)",
        )),
    }
    if let Some(mib) = obs.free_disk_mib {
        out.push(Finding::ok(format!("{mib} MiB free under /var/lib")));
    }
    for u in &obs.unreadable {
        out.push(Finding::fail(u.reason(), u.fix()));
    }
    for n in &obs.notes {
        out.push(Finding::warn(
            format!("could not look at: {n}"),
            "check the path and its permissions",
        ));
    }
    for w in plan::host_warnings(obs) {
        let (what, fix) = w
            .split_once("; ")
            .map_or((w.clone(), "see the message".to_owned()), |(a, b)| {
                (a.to_owned(), b.to_owned())
            });
        out.push(Finding::warn(what, fix));
    }
    out
}

/// `host-setup verify`: the checks alone. Commands are read-only (`kubectl get`, `config dump`).
/// A file that could not be read fails verify, and nothing is judged from the other files then.
pub fn verify<R: Runner + ?Sized>(
    obs: &Observation,
    target: Target,
    runner: &R,
    root: &HostRoot,
    system: bool,
    containerds: &[Containerd],
    k3s_did_not_run: bool,
) -> Vec<Finding> {
    if !obs.unreadable.is_empty() {
        let mut out: Vec<Finding> = obs
            .unreadable
            .iter()
            .map(|u| Finding::fail(u.reason(), u.fix()))
            .collect();
        out.push(Finding::skip(
            "the other checks (a file they depend on could not be read)",
        ));
        return out;
    }
    match target {
        Target::K3s => verify_k3s(obs, runner, root, system, containerds, k3s_did_not_run),
        Target::Containerd => verify_containerd(obs, runner, root, system, containerds),
    }
}

fn verify_k3s<R: Runner + ?Sized>(
    obs: &Observation,
    runner: &R,
    root: &HostRoot,
    system: bool,
    containerds: &[Containerd],
    k3s_did_not_run: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    match obs
        .k3s_config
        .as_ref()
        .map(|f| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&f.text))
    {
        Some(Ok(v)) if v.get("default-runtime").and_then(|r| r.as_str()) == Some("nvidia") => {
            out.push(Finding::ok(format!(
                "{}: default-runtime: nvidia",
                k3s::CONFIG_YAML
            )));
        }
        Some(Err(e)) => out.push(Finding::fail(
            format!("{} is not valid YAML: {e}", k3s::CONFIG_YAML),
            "fix it (or restore its backup)",
        )),
        _ => {
            let template_ok = obs
                .k3s_template_v3
                .as_ref()
                .is_some_and(|t| t.text.contains("default_runtime_name = \"nvidia\""));
            if !template_ok {
                out.push(Finding::fail(
                    format!("{} does not set default-runtime: nvidia", k3s::CONFIG_YAML),
                    "run `host-setup set-default-runtime --runtime k3s`",
                ));
            }
        }
    }
    match &obs.k3s_generated {
        _ if k3s_did_not_run => out.push(Finding::skip(format!(
            "{}: k3s was not (re)started here (--root), so it has not re-rendered it",
            k3s::GENERATED_CONTAINERD
        ))),
        None => out.push(Finding::fail(
            format!(
                "{} does not exist (k3s never started?)",
                k3s::GENERATED_CONTAINERD
            ),
            "start k3s: `systemctl start k3s`",
        )),
        Some(g) => match k3s::check_generated(&g.text) {
            Ok(()) => {
                let version = containerd::file_version(&g.text, &g.path)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                out.push(Finding::ok(format!(
                    "{}: default_runtime_name = \"nvidia\" in [{}] (config version {version})",
                    k3s::GENERATED_CONTAINERD,
                    containerd::default_runtime_table(version)
                )));
                out.push(load_generated(runner, root, containerds));
            }
            Err(e) => out.push(Finding::fail(
                e,
                "run `host-setup set-default-runtime --runtime k3s`",
            )),
        },
    }
    if !system {
        out.push(Finding::skip(
            "RuntimeClass and node label (need the running cluster; --root given)",
        ));
        return out;
    }
    let rc = runner.run(&Cmd::new("k3s").args([
        "kubectl",
        "get",
        "runtimeclass",
        "nvidia",
        "-o",
        "name",
    ]));
    match rc {
        Ok(o) if o.success() && o.stdout.contains("nvidia") => out.push(Finding::ok("RuntimeClass nvidia exists")),
        Ok(o) => out.push(Finding::fail(
            format!("RuntimeClass nvidia missing ({})", o.stderr.trim()),
            "do not disable `runtimes` in config.yaml; k3s ≥ v1.29 deploys it from its runtimes manifest",
        )),
        Err(e) => out.push(Finding::fail(format!("cannot ask the cluster: {e}"), "is k3s running? `systemctl status k3s`")),
    }
    let nodes = runner
        .run(&Cmd::new("k3s").args(["kubectl", "get", "nodes", "-l", "gpu=on", "-o", "name"]));
    match nodes {
        Ok(o) if o.success() && !o.stdout.trim().is_empty() => out.push(Finding::ok(format!(
            "node labelled gpu=on: {}",
            o.stdout.split_whitespace().collect::<Vec<_>>().join(", ")
        ))),
        Ok(_) => out.push(Finding::fail(
            "no node has the label gpu=on",
            "k3s applies node-label only at registration: `k3s kubectl label node $(hostname) gpu=on`",
        )),
        Err(e) => out.push(Finding::fail(format!("cannot ask the cluster: {e}"), "is k3s running?")),
    }
    out
}

/// k3s's generated config loaded by the containerd k3s ships (the one that will read it).
fn load_generated<R: Runner + ?Sized>(
    runner: &R,
    root: &HostRoot,
    containerds: &[Containerd],
) -> Finding {
    let Some(c) = containerds.iter().find(|c| c.source == Source::K3s) else {
        return Finding::skip(format!(
            "`config dump` of {} (k3s's own containerd under <data-dir>/data/current/bin was not found)",
            k3s::GENERATED_CONTAINERD
        ));
    };
    match validate::dump_with_containerd(runner, &c.path, root, k3s::GENERATED_CONTAINERD, &[]) {
        Ok(_) => Finding::ok(format!(
            "`config dump` loads {}: default runtime nvidia (by k3s's own containerd {})",
            k3s::GENERATED_CONTAINERD,
            c.label()
        )),
        Err(e) => Finding::fail(
            e,
            "run `host-setup set-default-runtime --runtime k3s`, then look at `journalctl -u k3s`",
        ),
    }
}

fn verify_containerd<R: Runner + ?Sized>(
    obs: &Observation,
    runner: &R,
    root: &HostRoot,
    system: bool,
    containerds: &[Containerd],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(cfg) = &obs.containerd_config else {
        out.push(Finding::fail(
            format!("{} does not exist", observe::CONTAINERD_CONFIG),
            "run `host-setup set-default-runtime --runtime containerd`",
        ));
        return out;
    };
    let mut files = vec![(cfg.path.clone(), cfg.text.clone())];
    files.extend(
        obs.containerd_imports
            .iter()
            .map(|f| (f.path.clone(), f.text.clone())),
    );
    let major = obs.containerd.as_ref().and_then(|c| c.major);
    match containerd::effective_default_runtime(&files, major) {
        Ok(Some(rt)) if rt == containerd::NVIDIA_RUNTIME => out.push(Finding::ok(format!(
            "{} (+{} drop-ins): default runtime nvidia",
            cfg.path,
            obs.containerd_imports.len()
        ))),
        Ok(other) => out.push(Finding::fail(
            format!(
                "{} (+ drop-ins): default runtime is {}",
                cfg.path,
                other.unwrap_or_else(|| "runc (unset)".to_owned())
            ),
            "run `host-setup set-default-runtime --runtime containerd`",
        )),
        Err(e) => {
            // A broken file is not handed to containerd as well: one finding, with its fix.
            out.push(Finding::fail(e.problem(), e.fix()));
            return out;
        }
    }
    let file_version = containerd::file_version(&cfg.text, &cfg.path)
        .ok()
        .flatten()
        .unwrap_or(2);
    let host_own = containerds
        .iter()
        .find(|c| matches!(c.source, Source::Path | Source::Flag));
    if let Some(c) = host_own.filter(|c| system && !c.reads(file_version)) {
        out.push(Finding::fail(
            format!(
                "{} is config version {file_version}, which this host's containerd {} cannot read (it ignores the CRI settings)",
                cfg.path, c.version
            ),
            "upgrade containerd to 2.x, or rewrite the file as version 2",
        ));
        return out;
    }
    match containerds.iter().find(|c| c.reads(file_version)) {
        Some(c) => match validate::dump_with_containerd(
            runner,
            &c.path,
            root,
            observe::CONTAINERD_CONFIG,
            &[],
        ) {
            Ok(_) => out.push(Finding::ok(format!(
                "`config dump` loads it: default runtime nvidia (by the real containerd {})",
                c.label()
            ))),
            Err(e) => out.push(Finding::fail(
                e,
                "run `host-setup set-default-runtime --runtime containerd`",
            )),
        },
        None => out.push(Finding::skip(format!(
            "`containerd config dump` (no containerd that reads config version {file_version} was found{})",
            if containerds.is_empty() {
                String::new()
            } else {
                format!(
                    "; found only {}",
                    containerds
                        .iter()
                        .map(Containerd::label)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ))),
    }
    out
}

/// Exit code for a list of findings: 0 when nothing failed, else `fail_code`.
pub fn exit_code(findings: &[Finding], fail_code: u8) -> u8 {
    if findings.iter().any(|f| f.level == Level::Fail) {
        fail_code
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::FileState;
    use lab_runner::RecordingRunner;

    fn verify_files(config: Option<&str>, k3s_yaml: Option<&str>, target: Target) -> Vec<Finding> {
        let obs = Observation {
            containerd_config: config.map(|t| FileState::new(observe::CONTAINERD_CONFIG, t)),
            k3s_config: k3s_yaml.map(|t| FileState::new(k3s::CONFIG_YAML, t)),
            ..Observation::default()
        };
        verify(
            &obs,
            target,
            &RecordingRunner::new(&[]),
            &HostRoot::new("/nonexistent"),
            false,
            &[],
            true,
        )
    }

    fn failed(findings: &[Finding]) -> Vec<(&str, &str)> {
        findings
            .iter()
            .filter(|f| f.level == Level::Fail)
            .map(|f| (f.what.as_str(), f.fix.as_deref().unwrap_or("")))
            .collect()
    }

    // One case per verify failure message, each with its own fix.

    #[test]
    fn containerd_verify_failures_name_their_fix() {
        let missing = verify_files(None, None, Target::Containerd);
        assert_eq!(
            failed(&missing),
            [(
                "/etc/containerd/config.toml does not exist",
                "run `host-setup set-default-runtime --runtime containerd`"
            )]
        );
        let runc = verify_files(Some("version = 2\n"), None, Target::Containerd);
        assert!(
            failed(&runc)[0]
                .0
                .contains("default runtime is runc (unset)"),
            "{runc:?}"
        );
        let broken = verify_files(Some("version = \"2\"\n"), None, Target::Containerd);
        assert_eq!(
            failed(&broken).len(),
            1,
            "one finding for a broken file: {broken:?}"
        );
        assert_eq!(
            failed(&broken)[0].1,
            "write it as a bare integer: `version = 2` (no quotes)"
        );
        // No containerd at all: the load is skipped, and says why.
        let ok = verify_files(
            Some(
                "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"nvidia\"\n",
            ),
            None,
            Target::Containerd,
        );
        assert!(failed(&ok).is_empty(), "{ok:?}");
        assert!(
            ok.iter().any(|f| f.level == Level::Skip
                && f.what
                    .contains("no containerd that reads config version 2 was found")),
            "{ok:?}"
        );
    }

    #[test]
    fn k3s_verify_failures_name_their_fix() {
        let none = verify_files(None, Some("tls-san: [a]\n"), Target::K3s);
        assert_eq!(
            failed(&none),
            [(
                "/etc/rancher/k3s/config.yaml does not set default-runtime: nvidia",
                "run `host-setup set-default-runtime --runtime k3s`"
            )]
        );
        let bad = verify_files(None, Some("a: [b\n"), Target::K3s);
        assert!(failed(&bad)[0].0.contains("is not valid YAML"), "{bad:?}");
        assert!(failed(&bad)[0].1.contains("restore its backup"), "{bad:?}");
    }
}
