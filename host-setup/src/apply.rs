//! Apply a [`Plan`]: validate every rendered file and check that no file changed since it was
//! planned, then run the steps in order with timestamped backups and atomic writes; if any step
//! fails, restore every backup byte for byte (and restart a service restarted by this run).
//!
//! Every command comes from [`crate::actions::actions`], the same function `--dry-run` prints;
//! every path goes through [`HostRoot`] (symbolic links resolved inside the root: the target is
//! edited, the link kept). When the root is not the running system (`--root DIR`), commands that
//! change the running system (apt, installer, systemctl) are skipped and reported, and only the
//! files under DIR change.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lab_runner::Runner;

use crate::actions::{self, Action};
use crate::fsio::{self, Backup, Owner};
use crate::k3s;
use crate::plan::{FileChange, Plan, Readiness, Step};
use crate::root::{HostRoot, Unreadable};
use crate::validate::{self, Validation, Validators};

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Run commands that change the running system (false under `--root DIR`).
    pub system: bool,
    /// How many times readiness is polled, and the pause between polls.
    pub wait_attempts: u32,
    pub poll_interval: Duration,
    /// What validates rendered files when the plan was not validated yet.
    pub validators: Validators,
    /// Suffix of backup files (a UTC timestamp).
    pub stamp: String,
}

/// What apply did.
#[derive(Debug, Default)]
pub struct Report {
    pub written: Vec<(String, Option<PathBuf>)>,
    pub ran: Vec<String>,
    pub skipped: Vec<String>,
    /// How each written file was validated.
    pub notes: Vec<String>,
}

/// Why apply stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the plan has blockers; nothing was changed:\n{0}")]
    Blocked(String),
    #[error("{path}: the rendered file is invalid, nothing was written: {why}")]
    Invalid { path: String, why: String },
    #[error("{0}; nothing was written")]
    Unreadable(Unreadable),
    #[error(
        "{path} changed after the plan was made ({what}); nothing was written. Fix: run host-setup again, so it plans from the file as it is now"
    )]
    ChangedSincePlan { path: String, what: String },
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
    #[error("{why}; every file this run had written was restored byte for byte ({restored})")]
    Restored { why: String, restored: String },
    #[error("{why}, and restoring failed: {restore}. Backups: {backups}")]
    RestoreFailed {
        why: String,
        restore: String,
        backups: String,
    },
}

/// What was changed so far, so a failure can undo it.
#[derive(Debug, Default)]
struct Undo {
    backups: Vec<Backup>,
    restarted: Vec<String>,
}

/// Applies the plan. `progress` receives one line per action (shown on stderr by the CLI).
pub fn apply<R: Runner + ?Sized>(
    plan: &Plan,
    runner: &R,
    root: &HostRoot,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, ApplyError> {
    // Phase 1: every rendered file validated, and no input changed since it was planned.
    let plan = validated(plan, runner, root, &opts.validators);
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
    for f in write_files(&plan) {
        match &f.validation {
            Some(Validation::Invalid { why }) => {
                return Err(ApplyError::Invalid {
                    path: f.path.clone(),
                    why: why.clone(),
                });
            }
            Some(v) => report.notes.push(format!("{}: {}", f.path, v.describe())),
            None => {}
        }
        check_unchanged(f, root)?;
    }

    // Phase 2: run the steps; any failure undoes what was done.
    let mut undo = Undo::default();
    for ps in &plan.steps {
        let done = run_step(
            &ps.step,
            &plan,
            runner,
            root,
            opts,
            &mut report,
            &mut undo,
            progress,
        );
        if let Err(e) = done {
            return Err(undo_all(e, &undo, runner, progress));
        }
    }
    Ok(report)
}

/// The plan with every file validated (validating now what was not validated yet).
fn validated<'p, R: Runner + ?Sized>(
    plan: &'p Plan,
    runner: &R,
    root: &HostRoot,
    validators: &Validators,
) -> Cow<'p, Plan> {
    if write_files(plan).all(|f| f.validation.is_some()) {
        return Cow::Borrowed(plan);
    }
    let mut plan = plan.clone();
    validate::validate_plan(&mut plan, runner, root, validators);
    Cow::Owned(plan)
}

fn write_files(plan: &Plan) -> impl Iterator<Item = &FileChange> {
    plan.steps.iter().filter_map(|s| match &s.step {
        Step::WriteFile(f) => Some(f),
        _ => None,
    })
}

/// The file on disk must still be what the plan was made from: same bytes, same link target.
fn check_unchanged(f: &FileChange, root: &HostRoot) -> Result<PathBuf, ApplyError> {
    let changed = |what: &str| ApplyError::ChangedSincePlan {
        path: f.path.clone(),
        what: what.to_owned(),
    };
    let now = root
        .read_text(Path::new(&f.path))
        .map_err(ApplyError::Unreadable)?;
    let real = root
        .resolve(Path::new(&f.path))
        .map_err(ApplyError::Unreadable)?;
    match (&f.before, &now) {
        (None, Some(_)) => return Err(changed("it did not exist then and does now")),
        (Some(_), None) => return Err(changed("it existed then and is gone now")),
        (Some(before), Some(now)) if *before != now.text => {
            return Err(changed("its content is different"));
        }
        _ => {}
    }
    let target = real.via_link.map(|p| p.to_string_lossy().into_owned());
    if f.before.is_some() && target != f.link_target {
        return Err(changed("its symbolic link leads somewhere else now"));
    }
    Ok(real.real)
}

#[allow(clippy::too_many_arguments)]
fn run_step<R: Runner + ?Sized>(
    step: &Step,
    plan: &Plan,
    runner: &R,
    root: &HostRoot,
    opts: &ApplyOptions,
    report: &mut Report,
    undo: &mut Undo,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ApplyError> {
    match step {
        Step::WriteFile(f) => write_file(f, root, opts, report, undo, progress),
        Step::CopyKubeconfig { uid, gid, dest, .. } => {
            copy_kubeconfig(root, *uid, *gid, dest, opts, report, undo, progress)
        }
        _ => {
            let keyring_path = |host: &str| {
                root.path(Path::new(host))
                    .map_or_else(|_| host.to_owned(), |p| p.to_string_lossy().into_owned())
            };
            for action in actions::actions(step, opts.poll_interval, &keyring_path) {
                if !opts.system {
                    let line = format!(
                        "skipped (--root is not the running system): {}",
                        action.describe()
                    );
                    progress(&line);
                    report.skipped.push(line);
                    continue;
                }
                run_action(&action, plan, runner, root, opts, report, undo, progress)?;
            }
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_action<R: Runner + ?Sized>(
    action: &Action,
    plan: &Plan,
    runner: &R,
    root: &HostRoot,
    opts: &ApplyOptions,
    report: &mut Report,
    undo: &mut Undo,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ApplyError> {
    let mut run = |cmd: &lab_runner::Cmd| {
        progress(&format!("running {cmd}"));
        report.ran.push(cmd.to_string());
        runner.run_checked(cmd)
    };
    match action {
        Action::Run(cmd) => {
            let restart = (cmd.program == "systemctl"
                && cmd.args.first().is_some_and(|a| a == "restart"))
            .then(|| cmd.args.get(1).cloned())
            .flatten();
            let out = run(cmd);
            if let Some(unit) = restart {
                undo.restarted.push(unit.clone());
                if let Err(e) = out {
                    return Err(ApplyError::RolledBack {
                        unit,
                        why: e.to_string(),
                    });
                }
            } else {
                out?;
            }
            Ok(())
        }
        Action::Pipe { source, sink } => {
            let out = run(source)?;
            run(&sink.clone().stdin(out.stdout))?;
            Ok(())
        }
        Action::FetchAptList {
            fetch,
            keyring,
            list,
        } => {
            let text = run(fetch)?;
            if !text.stdout.contains("deb https://") {
                return Err(ApplyError::Step(format!(
                    "{} did not return an apt list (got {} bytes); check the network and try again",
                    actions::TOOLKIT_LIST_URL,
                    text.stdout.len()
                )));
            }
            let path = root
                .resolve(Path::new(list))
                .map_err(ApplyError::Unreadable)?
                .real;
            let backup = fsio::backup(&path, &opts.stamp)?;
            let copy = backup.copy.clone();
            undo.backups.push(backup);
            fsio::write_atomic(
                &path,
                sign_list(&text.stdout, keyring).as_bytes(),
                Owner {
                    mode: 0o644,
                    ..parent_owner(&path)
                },
            )?;
            report.written.push((list.clone(), copy));
            progress(&format!("wrote {list}"));
            Ok(())
        }
        Action::Poll { probe, target, .. } => {
            if let Err(why) = wait_ready(*target, probe, runner, opts, progress) {
                let unit = match target {
                    Readiness::K3sNode => "k3s",
                    Readiness::Containerd => "containerd",
                };
                let restarted_here = plan
                    .steps
                    .iter()
                    .any(|s| matches!(&s.step, Step::RestartService { unit: u } if u == unit));
                if restarted_here {
                    return Err(ApplyError::RolledBack {
                        unit: unit.to_owned(),
                        why,
                    });
                }
                return Err(ApplyError::Step(format!(
                    "{unit} did not become ready: {why}; look at `journalctl -u {unit}`"
                )));
            }
            Ok(())
        }
    }
}

fn write_file(
    f: &FileChange,
    root: &HostRoot,
    opts: &ApplyOptions,
    report: &mut Report,
    undo: &mut Undo,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ApplyError> {
    let path = check_unchanged(f, root)?;
    let backup = fsio::backup(&path, &opts.stamp)?;
    // The bytes just backed up are the bytes the plan was made from (nothing slipped in between).
    let backed_up = backup.old.as_ref().map(|(b, _)| b.as_slice());
    if backed_up != f.before.as_deref().map(str::as_bytes) {
        return Err(ApplyError::ChangedSincePlan {
            path: f.path.clone(),
            what: "its content changed while host-setup was running".to_owned(),
        });
    }
    let owner = match &backup.old {
        Some((_, o)) => *o,
        None => Owner {
            mode: f.mode,
            ..parent_owner(&path)
        },
    };
    let copy = backup.copy.clone();
    undo.backups.push(backup);
    fsio::write_atomic(&path, f.after.as_bytes(), owner)?;
    let via = f
        .link_target
        .as_ref()
        .map(|t| format!(" (through its symbolic link: {t} edited, the link kept)"))
        .unwrap_or_default();
    progress(&format!(
        "wrote {}{via}{}",
        f.path,
        copy.as_ref()
            .map(|c| format!(" (backup: {})", c.display()))
            .unwrap_or_default()
    ));
    report.written.push((f.path.clone(), copy));
    Ok(())
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

/// Restores every backup (newest first) and restarts again what this run restarted.
fn undo_all<R: Runner + ?Sized>(
    err: ApplyError,
    undo: &Undo,
    runner: &R,
    progress: &mut dyn FnMut(&str),
) -> ApplyError {
    if undo.backups.is_empty() && undo.restarted.is_empty() {
        return err;
    }
    progress(&format!("{err}: restoring backups"));
    let mut failures = Vec::new();
    for b in undo.backups.iter().rev() {
        match fsio::restore(b) {
            Ok(()) => progress(&format!("restored {}", b.path.display())),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let mut units = undo.restarted.clone();
    units.dedup();
    for unit in &units {
        let cmd = actions::restart_cmd(unit);
        progress(&format!("running {cmd}"));
        if let Err(e) = runner.run_checked(&cmd) {
            failures.push(e.to_string());
        }
    }
    if !failures.is_empty() {
        return ApplyError::RestoreFailed {
            why: err.to_string(),
            restore: failures.join("; "),
            backups: undo
                .backups
                .iter()
                .filter_map(|b| b.copy.as_ref().map(|c| c.display().to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        };
    }
    match err {
        e @ ApplyError::RolledBack { .. } => e,
        other => ApplyError::Restored {
            why: other.to_string(),
            restored: undo
                .backups
                .iter()
                .map(|b| b.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        },
    }
}

/// Polls readiness; `Err` says what was last seen.
fn wait_ready<R: Runner + ?Sized>(
    target: Readiness,
    probe: &lab_runner::Cmd,
    runner: &R,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let mut last = String::from("not checked");
    for attempt in 1..=opts.wait_attempts.max(1) {
        match readiness_once(target, probe, runner) {
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

/// One readiness check: runs the probe (pure over its output, see [`node_ready`]).
pub fn readiness_once<R: Runner + ?Sized>(
    target: Readiness,
    probe: &lab_runner::Cmd,
    runner: &R,
) -> Result<(), String> {
    let out = runner.run(probe).map_err(|e| e.to_string())?;
    match target {
        Readiness::Containerd if out.success() => Ok(()),
        Readiness::Containerd => Err(format!("containerd is {}", out.stdout.trim())),
        Readiness::K3sNode if !out.success() => {
            Err(format!("API not answering: {}", out.stderr.trim()))
        }
        Readiness::K3sNode => node_ready(&out.stdout),
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

#[allow(clippy::too_many_arguments)]
fn copy_kubeconfig(
    root: &HostRoot,
    uid: u32,
    gid: u32,
    dest: &str,
    opts: &ApplyOptions,
    report: &mut Report,
    undo: &mut Undo,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ApplyError> {
    let source = root
        .resolve(Path::new(k3s::KUBECONFIG))
        .map_err(ApplyError::Unreadable)?
        .real;
    let bytes = std::fs::read(&source).map_err(|e| {
        ApplyError::Step(format!(
            "{} cannot be read ({e}); is k3s running? `systemctl status k3s`",
            k3s::KUBECONFIG
        ))
    })?;
    let dest_path = root
        .resolve(Path::new(dest))
        .map_err(ApplyError::Unreadable)?
        .real;
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
    let copy = backup.copy.clone();
    undo.backups.push(backup);
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
    report.written.push((dest.to_owned(), copy));
    Ok(())
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
