//! `host-setup` CLI: bring a GPU VM to k3s with `nvidia` as the default containerd runtime (or
//! make `nvidia` the default of a plain containerd), idempotently, with backups.
//!
//! Thin on purpose: parse arguments, observe, plan, print or apply, map the outcome to an exit
//! code (0 ok, 1 a checked claim failed, 2 usage, 3 environment). The work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use lab_runner::{Runner, SystemRunner};

use host_setup::apply::{self, ApplyError, ApplyOptions};
use host_setup::checks;
use host_setup::k3s;
use host_setup::observe::Observer;
use host_setup::plan::{self, InstallOptions, Plan, Target};
use host_setup::render;
use host_setup::root::HostRoot;
use host_setup::validate::{self, Validation, Validators};

/// Observe → plan → apply → verify: nvidia as the default containerd runtime for HAMi.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Treat DIR as the host's `/`: every file read and write happens under it, probe programs
    /// (nvidia-smi, k3s, containerd) are looked up inside it, and commands that change the running
    /// system (apt, installer, systemctl) are skipped.
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Human)]
    output: Output,
    /// containerd binary that validates rendered configs (`containerd -c FILE config dump`);
    /// default: the first that reads the file's config version of: the tree's own (under
    /// --root DIR), `containerd` on PATH, k3s's (`<data-dir>/data/current/bin/containerd`).
    #[arg(long, global = true, value_name = "PATH")]
    containerd_bin: Option<String>,
    /// Write containerd configs that no real containerd could validate (none found that reads
    /// the file's config version). The plan then says, per file, that it was only parsed.
    #[arg(long, global = true)]
    no_validate: bool,
    /// Log every command before it runs.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the host: root, apt, driver and GPUs (MIG), cgroup v2, existing k3s/containerd/docker/
    /// toolkit/GPU Operator, free disk. Exit 0 when nothing blocks install, 3 otherwise.
    Preflight,
    /// Install the NVIDIA Container Toolkit (before k3s), write k3s's config.yaml, install or
    /// restart k3s, wait for the node, verify.
    Install {
        /// Print the plan (with file diffs) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Extra SAN for the API server certificate (repeatable); default: the primary address.
        #[arg(long, value_name = "NAME_OR_IP")]
        tls_san: Vec<String>,
        /// Copy the admin kubeconfig to this user's ~/.kube/config (0600, owned by them).
        #[arg(long, value_name = "USER")]
        kubeconfig_user: Option<String>,
        /// Pin the toolkit packages to this Debian version, e.g. 1.17.8-1.
        #[arg(long, value_name = "VERSION")]
        toolkit_version: Option<String>,
        /// k3s version for the installer, e.g. v1.33.5+k3s1 (default: the stable channel).
        #[arg(long, value_name = "VERSION")]
        k3s_version: Option<String>,
        /// Node label HAMi selects on.
        #[arg(long, default_value = "gpu=on")]
        node_label: String,
        /// Seconds to wait for the node to be Ready.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Make nvidia the default runtime of k3s (config.yaml) or of plain containerd
    /// (/etc/containerd/config.toml and its imported drop-ins).
    SetDefaultRuntime {
        /// Which runtime to configure; default: k3s when installed, else containerd.
        #[arg(long, value_enum)]
        runtime: Option<Target>,
        /// Print the plan (with file diffs) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Seconds to wait for the service to come back after the restart.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Opt-in: set the NVIDIA Container Toolkit to ignore NVIDIA_VISIBLE_DEVICES from
    /// unprivileged containers and take devices from volume mounts instead
    /// (/etc/nvidia-container-runtime/config.toml). HAMi then needs
    /// devicePlugin.deviceListStrategy=volume-mounts.
    Harden {
        /// Print the plan (with the file diff) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Read-only checks: nvidia is the default in the right table, the RuntimeClass exists, the
    /// node is labelled. Exit 0 when all pass, 1 otherwise.
    Verify {
        /// Which runtime to check; default: k3s when installed, else containerd.
        #[arg(long, value_enum)]
        runtime: Option<Target>,
    },
}

const POLL: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("host-setup: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    let root_dir = cli.root.canonicalize().with_context(|| {
        format!(
            "--root {}: cannot use it; pass an existing directory",
            cli.root.display()
        )
    })?;
    let root = HostRoot::new(root_dir);
    let system = root.is_system();
    let runner = SystemRunner::new(cli.verbose)
        .with_hint("nvidia-smi", "install the NVIDIA driver")
        .with_hint("containerd", "apt-get install containerd")
        .with_hint("k3s", "run `host-setup install`");
    let kube_user = match &cli.command {
        Command::Install {
            kubeconfig_user, ..
        } => kubeconfig_user.as_deref(),
        _ => None,
    };
    let obs = Observer {
        runner: &runner,
        root: &root,
        probes_in_root: !system,
        system,
    }
    .observe(kube_user);
    let data_dir = k3s::data_dir(obs.k3s_config.as_ref().map(|f| f.text.as_str()));
    let validators = Validators {
        containerds: validate::find_containerds(
            &runner,
            &root,
            cli.containerd_bin.as_deref(),
            &data_dir,
        ),
        waive: cli.no_validate,
        system,
    };

    match &cli.command {
        Command::Preflight => {
            let findings = checks::preflight(&obs, system);
            print_findings(cli.output, "host-setup preflight", &findings)?;
            Ok(checks::exit_code(&findings, 3))
        }
        Command::Verify { runtime } => {
            let target = runtime.unwrap_or_else(|| plan::auto_target(&obs));
            let findings = checks::verify(
                &obs,
                target,
                &runner,
                &root,
                system,
                &validators.containerds,
                false,
            );
            print_findings(
                cli.output,
                &format!("host-setup verify --runtime {}", target_name(target)),
                &findings,
            )?;
            Ok(checks::exit_code(&findings, 1))
        }
        Command::Install {
            dry_run,
            tls_san,
            kubeconfig_user,
            toolkit_version,
            k3s_version,
            node_label,
            timeout,
        } => {
            let opts = InstallOptions {
                tls_san: tls_san.clone(),
                kubeconfig_user: kubeconfig_user.clone(),
                toolkit_version: toolkit_version.clone(),
                k3s_version: k3s_version.clone(),
                node_label: node_label.clone(),
                system,
                timeout_s: *timeout,
            };
            let plan = plan::plan_install(&obs, &opts);
            let title = title_for("install", &root, &plan, &obs);
            finish(
                cli,
                &plan,
                &title,
                *dry_run,
                *timeout,
                Target::K3s,
                &runner,
                &root,
                &validators,
            )
        }
        Command::Harden { dry_run } => {
            let plan = host_setup::toolkit::plan_harden(&root);
            let title = title_for("harden", &root, &plan, &obs);
            harden(cli, &plan, &title, *dry_run, &runner, &root, &validators)
        }
        Command::SetDefaultRuntime {
            runtime,
            dry_run,
            timeout,
        } => {
            let target = runtime.unwrap_or_else(|| plan::auto_target(&obs));
            let plan = plan::plan_set_default_runtime(&obs, target, system, *timeout);
            let what = format!("set-default-runtime --runtime {}", target_name(target));
            let title = title_for(&what, &root, &plan, &obs);
            finish(
                cli,
                &plan,
                &title,
                *dry_run,
                *timeout,
                target,
                &runner,
                &root,
                &validators,
            )
        }
    }
}

fn title_for(
    what: &str,
    root: &HostRoot,
    plan: &Plan,
    obs: &host_setup::observe::Observation,
) -> String {
    let mut t = format!(
        "host-setup {what}: plan for {} ({} step{})\n{}",
        root.dir().display(),
        plan.steps.len(),
        if plan.steps.len() == 1 { "" } else { "s" },
        render::host_summary(obs)
    );
    if !root.is_system() {
        t.push_str("\n--root is not the running system: files are written under it; apt, installer and systemctl steps are shown but skipped");
    }
    t
}

/// Validates, prints or applies a plan, then verifies; returns the exit code.
#[allow(clippy::too_many_arguments)]
fn finish<R: Runner>(
    cli: &Cli,
    plan: &Plan,
    title: &str,
    dry_run: bool,
    timeout: u64,
    target: Target,
    runner: &R,
    root: &HostRoot,
    validators: &Validators,
) -> anyhow::Result<u8> {
    let (plan, shown) = validated(plan, runner, root, validators);
    if let Some(code) = show_plan(cli, title, &plan, &shown, dry_run, false)? {
        return Ok(code);
    }
    let opts = ApplyOptions {
        system: root.is_system(),
        wait_attempts: u32::try_from(timeout.div_ceil(POLL.as_secs()))
            .unwrap_or(u32::MAX)
            .max(1),
        poll_interval: POLL,
        validators: validators.clone(),
        stamp: apply::default_stamp(),
    };
    let report = match apply_plan(&plan, runner, root, &opts) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    // Verify from a fresh observation (read-only).
    let fresh = Observer {
        runner,
        root,
        probes_in_root: !root.is_system(),
        system: root.is_system(),
    }
    .observe(None);
    let findings = checks::verify(
        &fresh,
        target,
        runner,
        root,
        root.is_system(),
        &validators.containerds,
        !root.is_system(),
    );
    match cli.output {
        Output::Human => print!("{}", render::findings_human("verify:", &findings)),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "plan": render::plan_json(&plan, &shown),
                "applied": {
                    "written": report.written.iter().map(|(p, b)| serde_json::json!({"path": p, "backup": b})).collect::<Vec<_>>(),
                    "ran": report.ran,
                    "skipped": report.skipped,
                    "validated": report.notes,
                },
                "verify": findings,
            }))?
        ),
    }
    Ok(checks::exit_code(&findings, 1))
}

/// `harden`: prints or applies its plan (one file, no restart), then verifies the file.
fn harden<R: Runner>(
    cli: &Cli,
    plan: &Plan,
    title: &str,
    dry_run: bool,
    runner: &R,
    root: &HostRoot,
    validators: &Validators,
) -> anyhow::Result<u8> {
    let (plan, shown) = validated(plan, runner, root, validators);
    let plan = &plan;
    // A second run finds nothing to change: it shows the plan and stops.
    if let Some(code) = show_plan(cli, title, plan, &shown, dry_run, plan.steps.is_empty())? {
        return Ok(code);
    }
    let opts = ApplyOptions {
        system: root.is_system(),
        wait_attempts: 1,
        poll_interval: POLL,
        validators: validators.clone(),
        stamp: apply::default_stamp(),
    };
    let report = match apply_plan(plan, runner, root, &opts) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let findings = host_setup::toolkit::verify(root);
    match cli.output {
        Output::Human => print!("{}", render::findings_human("verify:", &findings)),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "plan": render::plan_json(plan, &shown),
                "applied": {
                    "written": report.written.iter().map(|(p, b)| serde_json::json!({"path": p, "backup": b})).collect::<Vec<_>>(),
                },
                "verify": findings,
            }))?
        ),
    }
    Ok(checks::exit_code(&findings, 1))
}

/// The plan with its file writes validated (when nothing blocks it), and how paths and waits
/// are shown.
fn validated<R: Runner>(
    plan: &Plan,
    runner: &R,
    root: &HostRoot,
    validators: &Validators,
) -> (Plan, render::Shown) {
    let mut plan = plan.clone();
    if plan.blockers.is_empty() {
        validate::validate_plan(&mut plan, runner, root, validators);
    }
    let shown = render::Shown {
        interval: POLL,
        root: root.dir().to_path_buf(),
    };
    (plan, shown)
}

/// Prints the plan. Returns the exit code when it is not to be applied: a blocker (3), a file
/// that fails validation (1), a dry run or `nothing_to_do` (0); `None` when apply goes on.
fn show_plan(
    cli: &Cli,
    title: &str,
    plan: &Plan,
    shown: &render::Shown,
    dry_run: bool,
    nothing_to_do: bool,
) -> anyhow::Result<Option<u8>> {
    let invalid = plan.steps.iter().any(|s| {
        matches!(&s.step, plan::Step::WriteFile(f) if matches!(f.validation, Some(Validation::Invalid { .. })))
    });
    let blocked = !plan.blockers.is_empty();
    if dry_run || blocked || invalid || nothing_to_do {
        match cli.output {
            Output::Human => print!("{}", render::plan_human(title, plan, shown)),
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(&render::plan_json(plan, shown))?
            ),
        }
        return Ok(Some(if blocked {
            3
        } else if invalid {
            1
        } else {
            0
        }));
    }
    if cli.output == Output::Human {
        print!("{}", render::plan_human(title, plan, shown));
        println!();
    }
    Ok(None)
}

/// Applies `plan`, its progress on stderr; a failure is printed and becomes the exit code (1: a
/// file failed validation, 3: the host).
fn apply_plan<R: Runner>(
    plan: &Plan,
    runner: &R,
    root: &HostRoot,
    opts: &ApplyOptions,
) -> Result<apply::Report, u8> {
    apply::apply(plan, runner, root, opts, &mut |line| {
        eprintln!("host-setup: {line}")
    })
    .map_err(|e| {
        eprintln!("host-setup: {e}");
        if matches!(e, ApplyError::Invalid { .. }) {
            1
        } else {
            3
        }
    })
}

fn print_findings(output: Output, title: &str, findings: &[checks::Finding]) -> anyhow::Result<()> {
    match output {
        Output::Human => print!("{}", render::findings_human(title, findings)),
        Output::Json => println!("{}", serde_json::to_string_pretty(findings)?),
    }
    Ok(())
}

fn target_name(target: Target) -> &'static str {
    match target {
        Target::K3s => "k3s",
        Target::Containerd => "containerd",
    }
}
