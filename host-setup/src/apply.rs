//! Apply a [`Plan`]: validate every rendered file first, then run the steps in order with
//! timestamped backups and atomic writes; if a restarted service does not come back in time,
//! restore every backup byte for byte and restart it again.
//!
//! Every command goes through `lab_runner::Runner`; every path through [`HostRoot`]. When the
//! root is not the running system (`--root DIR`), commands that change the running system
//! (apt, installer, systemctl) are skipped and reported, and only the files under DIR change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lab_runner::{Cmd, Runner};

use crate::containerd;
use crate::fsio::{self, Backup, Owner};
use crate::k3s;
use crate::plan::{Check, FileChange, Plan, Readiness, Step};
use crate::root::HostRoot;

/// NVIDIA's apt key and list (facts §6).
pub const TOOLKIT_KEY_URL: &str = "https://nvidia.github.io/libnvidia-container/gpgkey";
pub const TOOLKIT_LIST_URL: &str =
    "https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list";
pub const K3S_INSTALLER_URL: &str = "https://get.k3s.io";

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Run commands that change the running system (false under `--root DIR`).
    pub system: bool,
    /// How many times readiness is polled, and the pause between polls.
    pub wait_attempts: u32,
    pub poll_interval: Duration,
    /// The containerd binary that validates containerd configs (`None`: skip, and say so).
    pub containerd_bin: Option<String>,
    /// Suffix of backup files (a UTC timestamp).
    pub stamp: String,
}

/// What apply did.
#[derive(Debug, Default)]
pub struct Report {
    pub written: Vec<(String, Option<PathBuf>)>,
    pub ran: Vec<String>,
    pub skipped: Vec<String>,
    pub notes: Vec<String>,
}

/// Why apply stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the plan has blockers; nothing was changed:\n{0}")]
    Blocked(String),
    #[error("{path}: the rendered file is invalid, nothing was written: {why}")]
    Invalid { path: String, why: String },
    #[error(transparent)]
    Fs(#[from] fsio::FsError),
    #[error(transparent)]
    Run(#[from] lab_runner::RunError),
    #[error("{0}")]
    Step(String),
    #[error(
        "{unit} did not come back ready ({why}); the backups were restored byte for byte and {unit} restarted. \
         Look at `journalctl -u {unit}` for the cause"
    )]
    RolledBack { unit: String, why: String },
    #[error(
        "{unit} did not come back ready ({why}) and restoring failed: {restore}. Backups: {backups}"
    )]
    RestoreFailed {
        unit: String,
        why: String,
        restore: String,
        backups: String,
    },
}

/// Applies the plan. `progress` receives one line per action (shown on stderr by the CLI).
pub fn apply<R: Runner + ?Sized>(
    plan: &Plan,
    runner: &R,
    root: &HostRoot,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, ApplyError> {
    if !plan.blockers.is_empty() {
        let text = plan
            .blockers
            .iter()
            .map(|b| format!("  - {} (fix: {})", b.problem, b.fix))
            .collect::<Vec<_>>()
            .join("\n");
        return Err(ApplyError::Blocked(text));
    }
    let mut report = Report::default();

    // Phase 1: render and validate every file before writing any.
    for ps in &plan.steps {
        if let Step::WriteFile(f) = &ps.step {
            validate(f, plan, runner, root, opts, &mut report)?;
        }
    }

    // Phase 2: run the steps.
    let mut backups: Vec<Backup> = Vec::new();
    for ps in &plan.steps {
        match &ps.step {
            Step::WriteFile(f) => {
                let path = root
                    .path(Path::new(&f.path))
                    .map_err(|e| ApplyError::Step(e.to_string()))?;
                let backup = fsio::backup(&path, &opts.stamp)?;
                let owner = match &backup.old {
                    Some((_, o)) => *o,
                    None => Owner {
                        mode: f.mode,
                        ..parent_owner(&path)
                    },
                };
                fsio::write_atomic(&path, f.after.as_bytes(), owner)?;
                progress(&format!(
                    "wrote {}{}",
                    f.path,
                    backup
                        .copy
                        .as_ref()
                        .map(|c| format!(" (backup: {})", c.display()))
                        .unwrap_or_default()
                ));
                report.written.push((f.path.clone(), backup.copy.clone()));
                backups.push(backup);
            }
            Step::AddToolkitRepo { keyring, list } => {
                if skip(opts, "add NVIDIA's apt repository", &mut report, progress) {
                    continue;
                }
                add_toolkit_repo(runner, root, keyring, list, opts, &mut report, progress)?;
            }
            Step::InstallToolkit { packages } => {
                if skip(opts, "apt-get install the toolkit", &mut report, progress) {
                    continue;
                }
                run(
                    runner,
                    &Cmd::new("apt-get")
                        .arg("update")
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                    &mut report,
                    progress,
                )?;
                run(
                    runner,
                    &Cmd::new("apt-get")
                        .args(["install", "-y", "--no-install-recommends"])
                        // A pinned version may be older than the installed one.
                        .args(
                            packages
                                .iter()
                                .any(|p| p.contains('='))
                                .then_some("--allow-downgrades"),
                        )
                        .args(packages.iter().cloned())
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                    &mut report,
                    progress,
                )?;
            }
            Step::InstallK3s { version } => {
                if skip(opts, "run the k3s installer", &mut report, progress) {
                    continue;
                }
                let mut cmd = Cmd::new("sh").args([
                    "-c",
                    &format!("curl -sfL {K3S_INSTALLER_URL} | sh -s - server"),
                ]);
                if let Some(v) = version {
                    cmd = cmd.env("INSTALL_K3S_VERSION", v);
                }
                run(runner, &cmd, &mut report, progress)?;
            }
            Step::RestartService { unit } => {
                if skip(
                    opts,
                    &format!("systemctl restart {unit}"),
                    &mut report,
                    progress,
                ) {
                    continue;
                }
                let restarted = run(runner, &restart_cmd(unit), &mut report, progress);
                if let Err(e) = restarted {
                    return Err(roll_back(unit, &e.to_string(), &backups, runner, progress));
                }
            }
            Step::WaitReady { target, .. } => {
                if skip(opts, "wait for readiness", &mut report, progress) {
                    continue;
                }
                if let Err(why) = wait_ready(*target, runner, opts, progress) {
                    let unit = match target {
                        Readiness::K3sNode => "k3s",
                        Readiness::Containerd => "containerd",
                    };
                    let restarted_here = plan
                        .steps
                        .iter()
                        .any(|s| matches!(&s.step, Step::RestartService { unit: u } if u == unit));
                    if restarted_here {
                        return Err(roll_back(unit, &why, &backups, runner, progress));
                    }
                    return Err(ApplyError::Step(format!(
                        "{unit} did not become ready: {why}; look at `journalctl -u {unit}`"
                    )));
                }
            }
            Step::CopyKubeconfig { uid, gid, dest, .. } => {
                copy_kubeconfig(root, *uid, *gid, dest, opts, &mut report, progress)?;
            }
        }
    }
    Ok(report)
}

fn skip(
    opts: &ApplyOptions,
    what: &str,
    report: &mut Report,
    progress: &mut dyn FnMut(&str),
) -> bool {
    if opts.system {
        return false;
    }
    let line = format!("skipped (--root is not the running system): {what}");
    progress(&line);
    report.skipped.push(line);
    true
}

fn run<R: Runner + ?Sized>(
    runner: &R,
    cmd: &Cmd,
    report: &mut Report,
    progress: &mut dyn FnMut(&str),
) -> Result<lab_runner::Output, lab_runner::RunError> {
    progress(&format!("running {cmd}"));
    report.ran.push(cmd.to_string());
    runner.run_checked(cmd)
}

fn restart_cmd(unit: &str) -> Cmd {
    Cmd::new("systemctl").args(["restart", unit])
}

fn parent_owner(path: &Path) -> Owner {
    // New files belong to the user running host-setup (root on a real host).
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut probe = Some(dir);
    while let Some(d) = probe {
        if let Ok(Some(o)) = fsio::owner_of(d) {
            return o;
        }
        probe = d.parent();
    }
    Owner {
        uid: 0,
        gid: 0,
        mode: 0o644,
    }
}

/// Restores every backup (newest first) and restarts the unit again.
fn roll_back<R: Runner + ?Sized>(
    unit: &str,
    why: &str,
    backups: &[Backup],
    runner: &R,
    progress: &mut dyn FnMut(&str),
) -> ApplyError {
    progress(&format!("{unit} is not ready ({why}): restoring backups"));
    let mut failures = Vec::new();
    for b in backups.iter().rev() {
        match fsio::restore(b) {
            Ok(()) => progress(&format!("restored {}", b.path.display())),
            Err(e) => failures.push(e.to_string()),
        }
    }
    progress(&format!("running {}", restart_cmd(unit)));
    let restart = runner.run_checked(&restart_cmd(unit));
    if let Err(e) = restart {
        failures.push(e.to_string());
    }
    if failures.is_empty() {
        ApplyError::RolledBack {
            unit: unit.to_owned(),
            why: why.to_owned(),
        }
    } else {
        ApplyError::RestoreFailed {
            unit: unit.to_owned(),
            why: why.to_owned(),
            restore: failures.join("; "),
            backups: backups
                .iter()
                .filter_map(|b| b.copy.as_ref().map(|c| c.display().to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// Polls readiness; `Err` says what was last seen.
fn wait_ready<R: Runner + ?Sized>(
    target: Readiness,
    runner: &R,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let mut last = String::from("not checked");
    for attempt in 1..=opts.wait_attempts.max(1) {
        match readiness_once(target, runner) {
            Ok(()) => {
                progress(&format!("{} ready", target_name(target)));
                return Ok(());
            }
            Err(e) => last = e,
        }
        progress(&format!(
            "waiting for {} ({attempt}/{}): {last}",
            target_name(target),
            opts.wait_attempts.max(1)
        ));
        if attempt < opts.wait_attempts {
            std::thread::sleep(opts.poll_interval);
        }
    }
    Err(last)
}

fn target_name(t: Readiness) -> &'static str {
    match t {
        Readiness::K3sNode => "the k3s node to be Ready",
        Readiness::Containerd => "containerd to be active",
    }
}

/// One readiness check (pure over the command output, see [`node_ready`]).
pub fn readiness_once<R: Runner + ?Sized>(target: Readiness, runner: &R) -> Result<(), String> {
    match target {
        Readiness::Containerd => {
            let out = runner
                .run(&Cmd::new("systemctl").args(["is-active", "containerd"]))
                .map_err(|e| e.to_string())?;
            if out.success() {
                Ok(())
            } else {
                Err(format!("containerd is {}", out.stdout.trim()))
            }
        }
        Readiness::K3sNode => {
            let out = runner
                .run(&Cmd::new("k3s").args([
                    "kubectl",
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
                ]))
                .map_err(|e| e.to_string())?;
            if !out.success() {
                return Err(format!("API not answering: {}", out.stderr.trim()));
            }
            node_ready(&out.stdout)
        }
    }
}

/// `name=True` lines from kubectl → ready when there is a node and all are `True`.
pub fn node_ready(stdout: &str) -> Result<(), String> {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Err("no node registered yet".to_owned());
    }
    let not_ready: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.ends_with("=True"))
        .collect();
    if not_ready.is_empty() {
        Ok(())
    } else {
        Err(format!("not Ready: {}", not_ready.join(", ")))
    }
}

/// The apt list as NVIDIA publishes it, with `signed-by` added (the sed of the install guide).
pub fn sign_list(list: &str, keyring: &str) -> String {
    list.lines()
        .map(|l| {
            l.replacen(
                "deb https://",
                &format!("deb [signed-by={keyring}] https://"),
                1,
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn add_toolkit_repo<R: Runner + ?Sized>(
    runner: &R,
    root: &HostRoot,
    keyring: &str,
    list: &str,
    opts: &ApplyOptions,
    report: &mut Report,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ApplyError> {
    let key = run(
        runner,
        &Cmd::new("curl").args(["-fsSL", TOOLKIT_KEY_URL]),
        report,
        progress,
    )?;
    let keyring_path = root
        .path(Path::new(keyring))
        .map_err(|e| ApplyError::Step(e.to_string()))?;
    run(
        runner,
        &Cmd::new("gpg")
            .args(["--dearmor", "--yes", "-o", &keyring_path.to_string_lossy()])
            .stdin(key.stdout),
        report,
        progress,
    )?;
    let text = run(
        runner,
        &Cmd::new("curl").args(["-fsSL", TOOLKIT_LIST_URL]),
        report,
        progress,
    )?;
    if !text.stdout.contains("deb https://") {
        return Err(ApplyError::Step(format!(
            "{TOOLKIT_LIST_URL} did not return an apt list (got {} bytes); check the network and try again",
            text.stdout.len()
        )));
    }
    let list_path = root
        .path(Path::new(list))
        .map_err(|e| ApplyError::Step(e.to_string()))?;
    let backup = fsio::backup(&list_path, &opts.stamp)?;
    fsio::write_atomic(
        &list_path,
        sign_list(&text.stdout, keyring).as_bytes(),
        Owner {
            mode: 0o644,
            ..parent_owner(&list_path)
        },
    )?;
    report.written.push((list.to_owned(), backup.copy));
    progress(&format!("wrote {list}"));
    Ok(())
}

fn copy_kubeconfig(
    root: &HostRoot,
    uid: u32,
    gid: u32,
    dest: &str,
    opts: &ApplyOptions,
    report: &mut Report,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ApplyError> {
    let source = root
        .path(Path::new(k3s::KUBECONFIG))
        .map_err(|e| ApplyError::Step(e.to_string()))?;
    let bytes = std::fs::read(&source).map_err(|e| {
        ApplyError::Step(format!(
            "{} cannot be read ({e}); is k3s running? `systemctl status k3s`",
            k3s::KUBECONFIG
        ))
    })?;
    let dest_path = root
        .path(Path::new(dest))
        .map_err(|e| ApplyError::Step(e.to_string()))?;
    if let Some(dir) = dest_path.parent() {
        let created = !dir.exists();
        std::fs::create_dir_all(dir)
            .map_err(|e| ApplyError::Step(format!("create {}: {e}", dir.display())))?;
        if created {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| ApplyError::Step(format!("chmod {}: {e}", dir.display())))?;
            if opts.system {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                    .map_err(|e| ApplyError::Step(format!("chown {}: {e}", dir.display())))?;
            }
        }
    }
    let backup = fsio::backup(&dest_path, &opts.stamp)?;
    // Under --root (not the running system) ownership stays with whoever runs host-setup.
    let owner = if opts.system {
        Owner {
            uid,
            gid,
            mode: 0o600,
        }
    } else {
        Owner {
            mode: 0o600,
            ..parent_owner(&dest_path)
        }
    };
    fsio::write_atomic(&dest_path, &bytes, owner)?;
    progress(&format!("copied {} to {dest} (0600)", k3s::KUBECONFIG));
    report.written.push((dest.to_owned(), backup.copy));
    Ok(())
}

/// Checks one rendered file; containerd roots are loaded by the real containerd if available.
fn validate<R: Runner + ?Sized>(
    f: &FileChange,
    plan: &Plan,
    runner: &R,
    root: &HostRoot,
    opts: &ApplyOptions,
    report: &mut Report,
) -> Result<(), ApplyError> {
    let invalid = |why: String| ApplyError::Invalid {
        path: f.path.clone(),
        why,
    };
    match f.check {
        Check::K3sYaml => {
            let v: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(&f.after).map_err(|e| invalid(e.to_string()))?;
            if !v.is_mapping() {
                return Err(invalid("not a mapping".to_owned()));
            }
        }
        Check::K3sTemplate => {
            let problems = k3s::template_conflicts(&f.path, &f.after, true);
            if !problems.is_empty() {
                return Err(invalid(problems.join("; ")));
            }
        }
        Check::ContainerdDropIn => {
            containerd::file_version(&f.after, &f.path).map_err(|e| invalid(e.to_string()))?;
        }
        Check::ToolkitConfig => crate::toolkit::check(&f.after).map_err(invalid)?,
        Check::ContainerdRoot => {
            match containerd::default_runtime(&f.after, &f.path)
                .map_err(|e| invalid(e.to_string()))?
            {
                Some(rt) if rt == containerd::NVIDIA_RUNTIME => {}
                other => {
                    return Err(invalid(format!(
                        "default_runtime_name is {other:?} after the edit"
                    )));
                }
            }
            let file_version = containerd::file_version(&f.after, &f.path)
                .map_err(|e| invalid(e.to_string()))?
                .unwrap_or(2);
            match &opts.containerd_bin {
                Some(bin)
                    if runner.exists(bin)
                        && file_version >= 3
                        && containerd_major(runner, bin).is_some_and(|m| m < 2) =>
                {
                    let why = format!(
                        "{bin} is containerd 1.x, which cannot read config version {file_version} (it would silently ignore the CRI settings)"
                    );
                    if opts.system {
                        return Err(invalid(format!(
                            "{why}; fix: upgrade containerd to 2.x, or write a version 2 config"
                        )));
                    }
                    report.notes.push(format!(
                        "{}: real-containerd check skipped: {why}; pass --containerd-bin with a containerd >= 2.0",
                        f.path
                    ));
                }
                Some(bin) if runner.exists(bin) => {
                    let overrides: Vec<(String, String)> = plan
                        .steps
                        .iter()
                        .filter_map(|s| match &s.step {
                            Step::WriteFile(w) => Some((w.path.clone(), w.after.clone())),
                            _ => None,
                        })
                        .collect();
                    let dumped = dump_with_containerd(runner, bin, root, &f.path, &overrides)
                        .map_err(invalid)?;
                    report.notes.push(format!(
                        "{bin} loaded the new {} (with its drop-ins): default runtime {dumped}",
                        f.path
                    ));
                }
                Some(bin) => report.notes.push(format!(
                    "{bin} not found: {} checked by parsing only (install containerd to have it loaded for real)",
                    f.path
                )),
                None => report
                    .notes
                    .push(format!("{} checked by parsing only", f.path)),
            }
        }
    }
    Ok(())
}

/// The major version of a containerd binary (`containerd --version`).
pub fn containerd_major<R: Runner + ?Sized>(runner: &R, bin: &str) -> Option<u32> {
    let out = runner.run(&Cmd::new(bin).arg("--version")).ok()?;
    crate::observe::containerd_version(&out.stdout)?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Loads a root containerd config (and its drop-ins, with planned contents substituted) with
/// `containerd -c FILE config dump` inside a temp mirror of the tree, and returns the default
/// runtime containerd reports. Errors when containerd refuses the file or the default is not nvidia.
pub fn dump_with_containerd<R: Runner + ?Sized>(
    runner: &R,
    bin: &str,
    root: &HostRoot,
    root_config: &str,
    overrides: &[(String, String)],
) -> Result<String, String> {
    let mirror = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let text_of = |host: &str| -> Result<Option<String>, String> {
        if let Some((_, t)) = overrides.iter().find(|(p, _)| p == host) {
            return Ok(Some(t.clone()));
        }
        root.read_optional(Path::new(host))
            .map_err(|e| e.to_string())
    };
    let root_text = text_of(root_config)?.ok_or_else(|| format!("{root_config} does not exist"))?;
    let put = |host: &str, text: &str| -> Result<PathBuf, String> {
        let p = mirror.path().join(host.trim_start_matches('/'));
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        std::fs::write(&p, text).map_err(|e| e.to_string())?;
        Ok(p)
    };
    let patterns = containerd::imports(&root_text, root_config).map_err(|e| e.to_string())?;
    for pattern in &patterns {
        let host_pattern = containerd::import_host_pattern(Path::new(root_config), pattern);
        let rooted = root
            .path(&host_pattern)
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let mut hosts: Vec<String> = glob::glob(&rooted)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .filter_map(|p| root.host_path(&p))
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        // Planned new drop-ins that match the pattern exist only in the plan so far.
        for (p, _) in overrides {
            if glob::Pattern::new(&host_pattern.to_string_lossy()).is_ok_and(|g| g.matches(p))
                && !hosts.contains(p)
            {
                hosts.push(p.clone());
            }
        }
        for host in hosts.iter().filter(|h| h.as_str() != root_config) {
            if let Some(text) = text_of(host)? {
                put(host, &text)?;
            }
        }
    }
    let rewritten = containerd::rewrite_imports_into(&root_text, root_config, mirror.path())
        .map_err(|e| e.to_string())?;
    let file = put(root_config, &rewritten)?;
    let out = runner
        .run(&Cmd::new(bin).args(["-c", &file.to_string_lossy(), "config", "dump"]))
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!(
            "`{bin} config dump` refused it: {}",
            out.stderr.lines().last().unwrap_or("").trim()
        ));
    }
    match containerd::default_runtime(&out.stdout, "containerd config dump")
        .map_err(|e| e.to_string())?
    {
        Some(rt) if rt == containerd::NVIDIA_RUNTIME => Ok(rt),
        other => Err(format!(
            "`{bin} config dump` reports default runtime {other:?} (does this containerd understand the file's config version?)"
        )),
    }
}

/// The default stamp for backups.
pub fn default_stamp() -> String {
    fsio::timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ready_parsing() {
        assert!(node_ready("gpu-vm=True\n").is_ok());
        assert!(
            node_ready("gpu-vm=False\n")
                .unwrap_err()
                .contains("gpu-vm=False")
        );
        assert!(node_ready("").is_err());
    }

    #[test]
    fn list_gets_signed_by() {
        let l = sign_list(
            "deb https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n#deb https://x /\n",
            "/usr/share/keyrings/k.gpg",
        );
        assert!(
            l.starts_with("deb [signed-by=/usr/share/keyrings/k.gpg] https://nvidia.github.io")
        );
        assert!(l.contains("#deb [signed-by=/usr/share/keyrings/k.gpg] https://x /"));
    }
}
