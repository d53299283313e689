//! `cluster-ctl`: installs HAMi, runs the lab's five GPU isolation exercises and diagnoses the known
//! failures, over the Kubernetes API. Thin `main`: parse flags, build the client the way kubectl
//! finds its cluster, call `cluster_ctl::commands`, print human or JSON, exit 0/1/2/3.
//!
//! Installed as `kubectl-hami_probe` (a copy or link), it behaves as `cluster-ctl probe`, so
//! `kubectl hami-probe POD [-c CONTAINER]` works as a kubectl plugin.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use cluster_ctl::api::Cluster;
use cluster_ctl::commands::{self, Ctx, Failure, Outcome, RunArgs, exit};
use cluster_ctl::helm::{self, HelmTarget, InstallOptions};
use cluster_ctl::helmchart::InstallerChoice;
use cluster_ctl::kubeconfig::{self, Environment, K3S_KUBECONFIG, Source};
use cluster_ctl::manifests::DEFAULT_IMAGE;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use lab_runner::progress::{Progress, Style};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Human,
    Json,
}

/// Install HAMi, run the GPU isolation exercises, diagnose failures (Kubernetes API + helm).
#[derive(Debug, Parser)]
#[command(
    name = "cluster-ctl",
    version,
    after_help = "Exit codes: 0 ok/verified, 1 a checked claim failed, 2 usage, 3 environment (cluster unreachable, helm or gpu-probe missing, HAMi not ready).\nAs `kubectl-hami_probe` (copy or symlink on PATH) it runs `probe`: kubectl hami-probe POD -c CONTAINER."
)]
struct Cli {
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the in-cluster service account).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace of the lab pods (and of `probe`'s pod).
    #[arg(long, short = 'n', global = true, default_value = "default")]
    namespace: String,
    /// Namespace HAMi is installed in.
    #[arg(long, global = true, default_value = "kube-system")]
    hami_namespace: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "human")]
    output: OutputFormat,
    /// Print the plan (and rendered manifests) instead of changing anything.
    #[arg(long, global = true)]
    dry_run: bool,
    /// Seconds allowed to reach the API server.
    #[arg(long, global = true, default_value_t = 30)]
    api_timeout: u64,
    /// How install-hami installs the chart: auto (k3s's HelmChart on k3s, helm elsewhere), helm,
    /// or helm-chart (a helm.cattle.io/v1 HelmChart; no helm binary).
    #[arg(long, global = true, value_enum, default_value_t = InstallerChoice::Auto)]
    installer: InstallerChoice,
    /// Log every helm command line before it runs.
    #[arg(long, short = 'v', global = true)]
    verbose: bool,
    /// No progress bars: waits, pulls and exercises as plain lines on stderr (as with `-o json`
    /// or when stderr is not a terminal).
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the cluster before installing: server version, gpu=on nodes, coexisting NVIDIA
    /// device plugin / GPU Operator / GFD (refused), existing HAMi release.
    Preflight,
    /// Install HAMi (pinned chart) into the HAMi namespace — on k3s through a HelmChart that k3s's
    /// helm controller installs, elsewhere with helm upgrade --install — then verify it by watches.
    InstallHami {
        /// Chart version.
        #[arg(long, default_value = helm::DEFAULT_CHART_VERSION)]
        chart_version: String,
        /// Registry of the kube-scheduler sidecar image.
        #[arg(long, default_value = helm::DEFAULT_SCHEDULER_REGISTRY)]
        scheduler_registry: String,
        /// Repository of the kube-scheduler sidecar image.
        #[arg(long, default_value = helm::DEFAULT_SCHEDULER_REPOSITORY)]
        scheduler_repository: String,
        /// Set the kube-scheduler tag explicitly (default: the chart derives it from the server version).
        #[arg(long)]
        scheduler_tag: Option<String>,
        /// Extra chart value, repeatable (e.g. devicePlugin.runtimeClassName=nvidia).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Seconds to wait for HAMi to become ready after helm.
        #[arg(long, default_value_t = 300)]
        wait_timeout: u64,
    },
    /// Run the five exercises and write the results into --out DIR.
    Run {
        /// Size for a card of this many MiB instead of the registered one (with --dry-run: no cluster needed).
        #[arg(long)]
        card_mib: Option<u64>,
        /// Slice of each share pod in MiB (default 8000, smaller on small cards).
        #[arg(long)]
        slice_mib: Option<u64>,
        /// Memory of the oversubscribe pod in MiB (default: card − slice, rounded down to 1000).
        #[arg(long)]
        oversubscribe_mib: Option<u64>,
        /// Image of the lab pods (a small CUDA base image).
        #[arg(long, default_value = DEFAULT_IMAGE)]
        image: String,
        /// Folder for run.json, probe reports, captured objects and manifests.
        #[arg(long, default_value = "lab-out")]
        out: PathBuf,
        /// gpu-probe binary to copy into the pods (default: next to cluster-ctl).
        #[arg(long)]
        probe_bin: Option<PathBuf>,
        /// Node to size for (default: the first node HAMi registered).
        #[arg(long)]
        node: Option<String>,
        /// Seconds to wait for the share pods to be Ready (image pulls included).
        #[arg(long, default_value_t = 600)]
        pod_timeout: u64,
        /// Seconds to wait for hami-scheduler's FilteringFailed event.
        #[arg(long, default_value_t = 120)]
        event_timeout: u64,
        /// Seconds allowed for copying and running gpu-probe in one pod.
        #[arg(long, default_value_t = 300)]
        probe_timeout: u64,
        /// Also run gpu-probe audit, overhead and compute in share pod A (exercise A1; files
        /// probe/hami-share-a-{audit,overhead,compute}.json).
        #[arg(long)]
        audit: bool,
        /// With --audit: the most HAMi-core may add to the median latency of cuMemAlloc_v2,
        /// cuMemFree_v2 and a kernel launch, in percent of the baseline pod's (exercise A2).
        /// Without it the overhead is reported as a measurement, never as a pass.
        #[arg(long, requires = "audit", value_parser = parse_pct)]
        max_overhead_pct: Option<f64>,
        /// Also run the bypass exercises B1–B6: one misbehaving pod each (manifests/bypass/),
        /// refused at admission, or probed from inside and deleted; contained or escaped.
        #[arg(long)]
        bypass: bool,
        /// Where --audit's baseline pod (CUDA_DISABLE_CONTROL=true) runs; with the GPU tenant
        /// policy bound, an exempt namespace such as hami-isolation-lab-baseline (default: -n).
        #[arg(long, value_name = "NS")]
        baseline_namespace: Option<String>,
    },
    /// Detect and explain the known failures of a HAMi install, each with its fix.
    Doctor {
        /// Output folder of an earlier `run`, whose probe reports and logs are also checked.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Explain text instead of the cluster: files or folders of describe/get/log/nvidia-smi
        /// output or gpu-probe reports, `-` for stdin. No cluster needed.
        #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with = "from")]
        explain: Vec<PathBuf>,
        /// Also write the JSON answer to this file.
        #[arg(long, value_name = "FILE")]
        save: Option<PathBuf>,
    },
    /// Copy gpu-probe into an existing pod (over exec, like kubectl cp) and run it.
    Probe {
        /// Pod name (in --namespace).
        pod: String,
        /// Container (default: the first).
        #[arg(long, short = 'c')]
        container: Option<String>,
        /// Slice to expect in MiB (default: the container's nvidia.com/gpumem limit).
        #[arg(long)]
        expect_mib: Option<u64>,
        /// gpu-probe binary (default: next to this executable).
        #[arg(long)]
        probe_bin: Option<PathBuf>,
        /// Also write probe/<pod>.json and .stderr under this folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seconds allowed for copy and run.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Apply the GPU tenant policy (manifests/policy.yaml: a ValidatingAdmissionPolicy and its
    /// binding), which refuses pods that step around HAMi; needs Kubernetes >= 1.30.
    Harden {
        /// Another namespace whose pods the policy does not check (repeatable); kube-system,
        /// hami-isolation-lab-baseline and --hami-namespace always are.
        #[arg(long, value_name = "NS")]
        exempt_namespace: Vec<String>,
    },
    /// Check every card HAMi registered: one short-lived probe pod per card, pinned to its node and
    /// card, running `gpu-probe all`; writes fleet.json with --out. --emit-cronjob prints the
    /// CronJob that does it on a schedule.
    Fleet(commands::FleetArgs),
    /// Delete the lab pods (and HAMi with --uninstall-hami).
    Cleanup {
        /// Also uninstall HAMi (deletes the HelmChart on k3s, else `helm uninstall`).
        #[arg(long)]
        uninstall_hami: bool,
        /// Seconds to wait for the pods to be gone.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

/// Arguments with `probe` inserted when invoked as the kubectl plugin `kubectl-hami_probe`.
fn args_with_plugin_alias() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as_plugin = args
        .first()
        .and_then(|a| {
            PathBuf::from(a)
                .file_name()
                .map(|n| n.to_string_lossy().starts_with("kubectl-hami_probe"))
        })
        .unwrap_or(false);
    if invoked_as_plugin {
        args.insert(1, "probe".into());
    }
    args
}

/// Reading a kubeconfig can run an exec credential plugin: it gets `--api-timeout` too.
async fn bounded<E: std::fmt::Display>(
    timeout: Duration,
    read: impl std::future::Future<Output = Result<Config, E>>,
) -> Result<Config, Failure> {
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(config)) => Ok(config),
        Ok(Err(e)) => Err(Failure::env(anyhow::anyhow!(
            "no usable kubeconfig ({e}); {}",
            Source::FIX
        ))),
        Err(_) => Err(Failure::env(anyhow::anyhow!(
            "reading the kubeconfig took longer than --api-timeout ({} s)",
            timeout.as_secs()
        ))),
    }
}

/// The cluster, found as kubectl finds it (`cluster_ctl::kubeconfig`'s rules), every call
/// bounded by `--api-timeout`.
async fn make_cluster(cli: &Cli) -> Result<Cluster, Failure> {
    let timeout = Duration::from_secs(cli.api_timeout);
    let opts = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let source = kubeconfig::discover(cli.kubeconfig.as_deref(), &Environment::from_process());
    let config = match &source {
        Source::Flag(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| {
                Failure::env(anyhow::anyhow!(
                    "reading kubeconfig {}: {e}",
                    path.display()
                ))
            })?;
            bounded(timeout, Config::from_custom_kubeconfig(kc, &opts)).await?
        }
        Source::Env(_) | Source::Home(_) => {
            bounded(timeout, Config::from_kubeconfig(&opts)).await?
        }
        Source::InCluster if cli.context.is_some() => {
            return Err(Failure::env(anyhow::anyhow!(
                "--context needs a kubeconfig: pass --kubeconfig or set KUBECONFIG (k3s: {K3S_KUBECONFIG})"
            )));
        }
        Source::InCluster => bounded(timeout, async { Config::incluster() }).await?,
        Source::Nothing => {
            return Err(Failure::env(anyhow::anyhow!(
                "no kubeconfig found and not running in a cluster; {}",
                Source::FIX
            )));
        }
    };
    // Bars only on a terminal; stdout stays the result's alone either way.
    let plain = cli.output == OutputFormat::Json || cli.quiet;
    let progress = Progress::new(Style::for_stderr(plain));
    Cluster::connect(config, timeout)
        .map(|c| c.with_progress(progress))
        .map_err(Failure::from)
}

async fn dispatch(cli: Cli) -> Result<Outcome, Failure> {
    let ctx = Ctx {
        namespace: cli.namespace.clone(),
        hami_namespace: cli.hami_namespace.clone(),
        dry_run: cli.dry_run,
        helm: HelmTarget {
            kubeconfig: cli.kubeconfig.as_ref().map(|p| p.display().to_string()),
            context: cli.context.clone(),
            namespace: cli.hami_namespace.clone(),
        },
        installer: cli.installer,
    };
    let runner = lab_runner::SystemRunner::new(cli.verbose).with_hint("helm", helm::INSTALL_HINT);
    if let Command::Run {
        card_mib: Some(mib),
        ..
    } = &cli.command
        && cli.dry_run
    {
        return commands::run_dry_offline(*mib, &ctx, &run_args(&cli.command));
    }
    if let Command::Doctor { explain, save, .. } = &cli.command
        && !explain.is_empty()
    {
        // Text only: no cluster, no kubeconfig.
        let outcome = cluster_ctl::diagnose::explain(explain)?;
        return saved(outcome, save.as_deref());
    }
    if let Command::Fleet(args) = &cli.command
        && args.emit_cronjob
    {
        // Printed, not applied: no cluster needed.
        return commands::fleet_cronjob(args);
    }
    let cluster = make_cluster(&cli).await?;
    match &cli.command {
        Command::Preflight => commands::preflight(&cluster, &runner, &ctx).await,
        Command::InstallHami {
            chart_version,
            scheduler_registry,
            scheduler_repository,
            scheduler_tag,
            set,
            wait_timeout,
        } => {
            let opts = InstallOptions {
                chart_version: chart_version.clone(),
                scheduler_registry: scheduler_registry.clone(),
                scheduler_repository: scheduler_repository.clone(),
                scheduler_tag: scheduler_tag.clone(),
                extra_set: set.clone(),
            };
            commands::install_hami(
                &cluster,
                &runner,
                &ctx,
                &opts,
                Duration::from_secs(*wait_timeout),
            )
            .await
        }
        Command::Run { .. } => {
            commands::run(&cluster, &runner, &ctx, &run_args(&cli.command)).await
        }
        Command::Doctor { from, save, .. } => saved(
            commands::doctor(&cluster, &ctx, from.as_deref()).await?,
            save.as_deref(),
        ),
        Command::Probe {
            pod,
            container,
            expect_mib,
            probe_bin,
            out,
            timeout,
        } => {
            let bin = probe_bin
                .clone()
                .unwrap_or_else(commands::default_probe_bin);
            commands::probe(
                &cluster,
                &ctx,
                pod,
                container.as_deref(),
                *expect_mib,
                &bin,
                out.as_deref(),
                Duration::from_secs(*timeout),
            )
            .await
        }
        Command::Harden { exempt_namespace } => {
            commands::harden(&cluster, &ctx, exempt_namespace).await
        }
        Command::Fleet(args) => commands::fleet(&cluster, &ctx, args).await,
        Command::Cleanup {
            uninstall_hami,
            timeout,
        } => {
            commands::cleanup(
                &cluster,
                &runner,
                &ctx,
                *uninstall_hami,
                Duration::from_secs(*timeout),
            )
            .await
        }
    }
}

/// `doctor --save FILE`: the JSON answer is also written to FILE.
fn saved(outcome: Outcome, save: Option<&std::path::Path>) -> Result<Outcome, Failure> {
    if let Some(path) = save {
        cluster_ctl::diagnose::save(path, &outcome.json)?;
    }
    Ok(outcome)
}

fn run_args(cmd: &Command) -> RunArgs {
    match cmd {
        Command::Run {
            card_mib,
            slice_mib,
            oversubscribe_mib,
            image,
            out,
            probe_bin,
            node,
            pod_timeout,
            event_timeout,
            probe_timeout,
            audit,
            max_overhead_pct,
            bypass,
            baseline_namespace,
        } => RunArgs {
            card_mib: *card_mib,
            slice_mib: *slice_mib,
            oversubscribe_mib: *oversubscribe_mib,
            image: image.clone(),
            out: out.clone(),
            probe_bin: probe_bin.clone(),
            node: node.clone(),
            pod_timeout: Duration::from_secs(*pod_timeout),
            event_timeout: Duration::from_secs(*event_timeout),
            probe_timeout: Duration::from_secs(*probe_timeout),
            audit: *audit,
            max_overhead_pct: *max_overhead_pct,
            bypass: *bypass,
            baseline_namespace: baseline_namespace.clone(),
        },
        _ => RunArgs {
            card_mib: None,
            slice_mib: None,
            oversubscribe_mib: None,
            image: DEFAULT_IMAGE.to_owned(),
            out: PathBuf::from("lab-out"),
            probe_bin: None,
            node: None,
            pod_timeout: Duration::from_secs(600),
            event_timeout: Duration::from_secs(120),
            probe_timeout: Duration::from_secs(300),
            audit: false,
            max_overhead_pct: None,
            bypass: false,
            baseline_namespace: None,
        },
    }
}

/// A percentage: a finite number ≥ 0.
fn parse_pct(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{text}` is not a percentage ≥ 0 (e.g. 10 or 2.5)")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(args_with_plugin_alias());
    let output = cli.output;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cluster-ctl: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ENVIRONMENT);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(outcome) => {
            match output {
                OutputFormat::Human => print!("{}", outcome.human),
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&outcome.json).unwrap_or_default()
                ),
            }
            ExitCode::from(outcome.exit)
        }
        Err(f) => {
            if output == OutputFormat::Json {
                println!(
                    "{}",
                    serde_json::json!({"error": format!("{:#}", f.error), "exit_code": f.code})
                );
            }
            eprintln!("cluster-ctl: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_parse_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "cluster-ctl",
            "run",
            "--dry-run",
            "--card-mib",
            "49140",
            "-o",
            "json",
            "--context",
            "lab",
        ])
        .expect("parses");
        assert!(cli.dry_run);
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.context.as_deref(), Some("lab"));
        assert!(matches!(
            cli.command,
            Command::Run {
                card_mib: Some(49140),
                ..
            }
        ));
    }

    #[test]
    fn bad_output_is_a_usage_error() {
        let err = Cli::try_parse_from(["cluster-ctl", "--output", "yaml", "preflight"])
            .expect_err("yaml is not offered");
        assert_eq!(err.exit_code(), 2);
    }
}
