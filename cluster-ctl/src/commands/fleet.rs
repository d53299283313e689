//! `cluster-ctl fleet`: every card HAMi registered, each checked by a short-lived probe pod pinned
//! to its node and card, at most `--parallel` at a time, each under `--card-timeout` and all
//! under `--timeout`. Discovery and every decision are `crate::fleet`'s (pure); a card is verified
//! only by lab-report's `judge_card` over its probe report. Every probe pod carries the run's
//! label and is deleted after its card, and the run's pods are swept by that label at the end —
//! also after Ctrl-C, SIGTERM (a CronJob's deadline), the total deadline or an error.
//! `--emit-cronjob` prints continuous verification instead (`crate::fleet::cronjob`).
//!
//! Progress: one counter of the cards (done out of those to probe, in flight, not verified, the
//! time left) on the cluster's progress: a bar on a terminal, a line every 5 % and at the end
//! otherwise; each card that is not verified is a log line. The cards' own waits are not shown
//! (hundreds in flight): their cluster reports to `Progress::without_tasks`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use lab_report::fleet::{
    CardOutcome, FleetCard, FleetParameters, FleetReport, NotChecked, SCHEMA, SCHEMA_VERSION,
};
use serde_json::json;
use tokio::time::Instant;

use lab_runner::progress::Task;

use super::{Ctx, Failure, Outcome, default_probe_bin, exit};
use crate::api::{ApiError, Cluster, PROBE_DIR, PROBE_NAME, probe_tar};
use crate::fleet::cronjob::{self, CronSpec};
use crate::fleet::pod::{self, ProbePod};
use crate::fleet::{
    ANY_RUN_SELECTOR, CardTask, ProbePodState, discover, judge_output, not_checked,
    probe_pod_state, run_selector,
};
use crate::manifests::DEFAULT_IMAGE;
use crate::report::OutDir;

/// How long the sweep of a run's pods may take at the end.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one probe pod's deletion is waited for before its slot is freed (the sweep at the
/// end deletes whatever is left).
const DELETE_TIMEOUT: Duration = Duration::from_secs(60);

/// `fleet`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Slice of every probe pod in MiB (default: the smaller of 1000 MiB and 10 % of each card).
    #[arg(long)]
    pub slice_mib: Option<u64>,
    /// Probe pods in flight at most.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub parallel: u32,
    /// Only nodes matching this label selector (e.g. `gpu=on,pool=a100`).
    #[arg(long)]
    pub node_selector: Option<String>,
    /// Only these nodes (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Seconds one card may take: pod start (image pull included), copy, probe.
    #[arg(long, default_value_t = 600)]
    pub card_timeout: u64,
    /// Seconds the whole run may take; cards not done by then are "not checked".
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// Exit 0 even when some cards were not checked (never when one failed).
    #[arg(long)]
    pub allow_unchecked: bool,
    /// Image of the probe pods (a small CUDA base image).
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// gpu-probe binary to copy into each probe pod (default: next to cluster-ctl).
    #[arg(long, conflicts_with = "probe_in_image")]
    pub probe_bin: Option<PathBuf>,
    /// gpu-probe is part of --image at this path: nothing is copied.
    #[arg(long, value_name = "PATH")]
    pub probe_in_image: Option<String>,
    /// Folder for fleet.json and probe/<node>-<card>.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the results as OpenMetrics to this file (for node-exporter's textfile
    /// collector), atomically.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Also push the results as OpenMetrics to this Prometheus Pushgateway (http://host:9091).
    #[arg(long, value_name = "URL")]
    pub pushgateway: Option<String>,
    /// Print a CronJob (with its ServiceAccount and RBAC) that runs fleet on --schedule, instead
    /// of running it. No cluster needed.
    #[arg(long, requires = "schedule")]
    pub emit_cronjob: bool,
    /// Cron schedule of the CronJob (e.g. "17 */6 * * *").
    #[arg(long, requires = "emit_cronjob")]
    pub schedule: Option<String>,
    /// Image of the CronJob's pod: cluster-ctl and gpu-probe side by side on its PATH.
    #[arg(long, requires = "emit_cronjob")]
    pub cronjob_image: Option<String>,
}

/// How the probe gets into a pod.
enum ProbeSource {
    /// Copied over exec: the tar archive, built once.
    Copy(Arc<Vec<u8>>),
    /// Already in the image at this path.
    InImage(String),
}

/// What every card's turn works with.
struct Env<'a> {
    /// The cluster as the cards' turns use it: their waits hidden, log lines kept.
    cluster: Cluster,
    /// The counter of the cards.
    counter: Task,
    namespace: &'a str,
    run: String,
    image: &'a str,
    probe: ProbeSource,
    card_timeout: Duration,
    out: Option<OutDir>,
    done: AtomicUsize,
    started: AtomicUsize,
    failed: AtomicUsize,
    total: usize,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A short id for the run's label and pod names (base 36 of the time and the process id).
fn run_id(now: u64) -> String {
    let mut n = now.wrapping_mul(1_000_003) ^ u64::from(std::process::id());
    let mut s = String::new();
    for _ in 0..6 {
        let d = u32::try_from(n % 36).unwrap_or(0);
        s.push(char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
    }
    s
}

/// The flags passed on to the CronJob's `cluster-ctl fleet`.
fn passed_on(args: &FleetArgs) -> Vec<String> {
    let mut a = vec!["--parallel".to_owned(), args.parallel.to_string()];
    if let Some(s) = args.slice_mib {
        a.extend(["--slice-mib".to_owned(), s.to_string()]);
    }
    if let Some(s) = &args.node_selector {
        a.extend(["--node-selector".to_owned(), s.clone()]);
    }
    if !args.nodes.is_empty() {
        a.extend(["--nodes".to_owned(), args.nodes.join(",")]);
    }
    a.extend([
        "--card-timeout".to_owned(),
        args.card_timeout.to_string(),
        "--timeout".to_owned(),
        args.timeout.to_string(),
    ]);
    if args.allow_unchecked {
        a.push("--allow-unchecked".to_owned());
    }
    if let Some(p) = &args.probe_in_image {
        a.extend(["--probe-in-image".to_owned(), p.clone()]);
    }
    a
}

/// `fleet --emit-cronjob`: the RBAC and CronJob, validated, for stdout. No cluster needed.
pub fn fleet_cronjob(args: &FleetArgs) -> Result<Outcome, Failure> {
    let image = args.cronjob_image.clone().ok_or_else(|| {
        Failure::usage(anyhow::anyhow!(
            "--emit-cronjob needs --cronjob-image IMAGE: an image with cluster-ctl and gpu-probe on its PATH (`cargo xtask dist` builds both)"
        ))
    })?;
    let spec = CronSpec {
        schedule: args.schedule.clone().unwrap_or_default(),
        image,
        probe_image: args.image.clone(),
        fleet_args: passed_on(args),
        metrics_file: args.metrics_file.as_ref().map(|p| p.display().to_string()),
        pushgateway: args.pushgateway.clone(),
        total_timeout_s: args.timeout,
    };
    let yaml = cronjob::render(&spec).map_err(Failure::usage)?;
    Ok(Outcome {
        exit: exit::OK,
        json: json!({"manifests": yaml}),
        human: yaml,
    })
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn check_args(args: &FleetArgs) -> Result<(), Failure> {
    if args.slice_mib == Some(0) {
        return Err(Failure::usage(anyhow::anyhow!(
            "--slice-mib 0 gives the probe nothing to hold: pass a slice in MiB (e.g. 1000)"
        )));
    }
    if args.card_timeout == 0 || args.timeout == 0 {
        return Err(Failure::usage(anyhow::anyhow!(
            "--card-timeout and --timeout must be at least 1 second"
        )));
    }
    Ok(())
}

/// Leftover probe pods of earlier runs that could not clean up (killed): those that have ended
/// (their activeDeadlineSeconds) or are older than a card's turn.
async fn sweep_leftovers(cluster: &Cluster, ns: &str, card_timeout: Duration) {
    let pods = match cluster.pods_labelled(ns, ANY_RUN_SELECTOR).await {
        Ok(p) => p,
        Err(e) => {
            cluster.log(&format!("could not look for leftover probe pods: {e}"));
            return;
        }
    };
    let now = jiff::Timestamp::now();
    let stale: Vec<String> = pods
        .iter()
        .filter(|p| {
            let ended = matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Failed" | "Succeeded")
            );
            let old = p.metadata.creation_timestamp.as_ref().is_some_and(|t| {
                now.duration_since(t.0).as_secs() > card_timeout.as_secs() as i64 + 60
            });
            (ended || old) && p.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    for name in stale {
        cluster.log(&format!(
            "deleting leftover probe pod {name} of an earlier run"
        ));
        if let Err(e) = cluster.delete_pod(ns, &name, DELETE_TIMEOUT).await {
            cluster.log(&format!("could not delete {name}: {e}"));
        }
    }
}

/// Runs the fleet.
pub async fn fleet(cluster: &Cluster, ctx: &Ctx, args: &FleetArgs) -> Result<Outcome, Failure> {
    check_args(args)?;
    let started_unix = unix_now();
    let wall = Instant::now();
    let total_deadline = wall + Duration::from_secs(args.timeout);
    let run = run_id(started_unix);
    let ns = ctx.namespace.as_str();
    let probe = match &args.probe_in_image {
        Some(path) => ProbeSource::InImage(path.clone()),
        None => {
            let bin = args.probe_bin.clone().unwrap_or_else(default_probe_bin);
            let bytes = std::fs::read(&bin).map_err(|e| {
                Failure::env(anyhow::anyhow!(
                    "gpu-probe binary {} not readable ({e}); pass --probe-bin PATH, or --probe-in-image PATH when --image has it",
                    bin.display()
                ))
            })?;
            ProbeSource::Copy(Arc::new(probe_tar(&bytes).map_err(Failure::env)?))
        }
    };
    // Every pod is rendered and validated the same way: a bad --image or namespace stops here.
    pod::render(&ProbePod {
        run: &run,
        namespace: ns,
        image: &args.image,
        node: "node",
        hostname: "node",
        index: 0,
        uuid: "GPU-0",
        slice_mib: args.slice_mib.unwrap_or(1000),
        lifetime_s: args.card_timeout,
    })
    .map_err(Failure::usage)?;
    let version = cluster.server_version().await?;
    let nodes = cluster.nodes(args.node_selector.as_deref()).await?;
    let pods = cluster.all_pods().await?;
    let discovery = discover(&nodes, &pods, &args.nodes, args.slice_mib).map_err(|missing| {
        Failure::usage(anyhow::anyhow!(
            "--nodes names {} which the cluster does not have{}; `kubectl get nodes` lists them",
            missing.join(", "),
            args.node_selector
                .as_ref()
                .map(|s| format!(" (among the nodes matching --node-selector {s})"))
                .unwrap_or_default()
        ))
    })?;
    drop((nodes, pods));
    let mut report = FleetReport {
        schema: SCHEMA.to_owned(),
        schema_version: SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        started_unix,
        duration_s: 0.0,
        server: String::new(),
        server_version: version.git_version.clone(),
        parameters: FleetParameters {
            slice_mib: args.slice_mib,
            parallel: args.parallel,
            node_selector: args.node_selector.clone(),
            nodes: args.nodes.clone(),
            card_deadline_s: args.card_timeout,
            total_deadline_s: args.timeout,
            allow_unchecked: args.allow_unchecked,
            image: args.image.clone(),
            namespace: ns.to_owned(),
        },
        nodes: discovery.nodes,
        totals: Default::default(),
    };
    if ctx.dry_run {
        return Ok(dry_run(report, &discovery.tasks, &run, args));
    }
    sweep_leftovers(cluster, ns, Duration::from_secs(args.card_timeout)).await;
    cluster.log(&format!(
        "fleet run {run}: {} cards on {} nodes, {} to probe, {} at a time",
        report.nodes.iter().map(|n| n.cards.len()).sum::<usize>(),
        report.nodes.len(),
        discovery.tasks.len(),
        args.parallel
    ));
    // A card whose turn never ends is "not checked" with the reason the run stopped.
    for t in &discovery.tasks {
        report.nodes[t.node_index].cards[t.card_index] = not_checked(
            t.card.clone(),
            NotChecked::RunStopped {
                why: "the run stopped before this card's turn ended".into(),
            },
            "the run stopped before this card's turn ended".into(),
        );
    }
    let to_probe = discovery.tasks.len();
    let counter = cluster.progress().counter(
        "fleet",
        u64::try_from(to_probe).unwrap_or(u64::MAX),
        "cards",
    );
    counter.update(
        0,
        &if to_probe == 0 {
            "no card to probe".to_owned()
        } else {
            format!(
                "{} at a time",
                args.parallel
                    .min(u32::try_from(to_probe).unwrap_or(u32::MAX))
            )
        },
    );
    let env = Env {
        cluster: cluster
            .clone()
            .with_progress(cluster.progress().without_tasks()),
        counter,
        namespace: ns,
        run: run.clone(),
        image: &args.image,
        probe,
        card_timeout: Duration::from_secs(args.card_timeout),
        out: args.out.as_deref().map(OutDir::new),
        done: AtomicUsize::new(0),
        started: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        total: to_probe,
    };
    let (results, stopped, fatal) =
        run_cards(&env, discovery.tasks, args.parallel, total_deadline).await;
    let done = env.done.load(Ordering::Relaxed);
    env.counter.finish_at(
        u64::try_from(done).unwrap_or(u64::MAX),
        &match &stopped {
            None => format!("{} not verified", env.failed.load(Ordering::Relaxed)),
            Some(why) => format!(
                "{} not verified; stopped: {why}",
                env.failed.load(Ordering::Relaxed)
            ),
        },
    );
    for (t, card) in results {
        report.nodes[t.0].cards[t.1] = card;
    }
    if let Some(why) = &stopped {
        for card in report.nodes.iter_mut().flat_map(|n| &mut n.cards) {
            if let Some(NotChecked::RunStopped { why: w }) = &mut card.not_checked {
                w.clone_from(why);
                card.reason = format!("not probed: {why}");
            }
        }
    }
    // Whatever happened: the run's pods go.
    match cluster
        .sweep_pods(ns, &run_selector(&run), SWEEP_TIMEOUT)
        .await
    {
        Ok((deleted, failed)) => {
            if !deleted.is_empty() {
                cluster.log(&format!(
                    "deleted {} probe pods left in flight",
                    deleted.len()
                ));
            }
            for (name, e) in failed {
                cluster.log(&format!(
                    "could not delete probe pod {ns}/{name} ({e}); delete it with `kubectl -n {ns} delete pod -l {}`",
                    run_selector(&run)
                ));
            }
        }
        Err(e) => cluster.log(&format!(
            "could not list the run's probe pods to delete them ({e}); `kubectl -n {ns} delete pod -l {}` does",
            run_selector(&run)
        )),
    }
    if let Some(e) = fatal {
        return Err(Failure::env(e));
    }
    report.duration_s = wall.elapsed().as_secs_f64();
    report.totals = report.totals();
    if let Some(dir) = &args.out {
        let text = serde_json::to_string_pretty(&report).map_err(Failure::env)?;
        write_atomic(&dir.join("fleet.json"), format!("{text}\n").as_bytes()).map_err(|e| {
            Failure::env(anyhow::anyhow!("writing {}/fleet.json: {e}", dir.display()))
        })?;
    }
    deliver_metrics(&report, args).await?;
    Ok(outcome(&report, stopped.as_deref(), args.out.as_deref()))
}

/// The Pushgateway job fleet pushes as (its group is replaced on every push).
pub const PUSH_JOB: &str = "hami-isolation-lab-fleet";
/// The bound of one push.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// `--metrics-file` (OpenMetrics, written atomically) and `--pushgateway` (pushed). Either one
/// failing is an environment error: continuous verification whose results are lost is no
/// verification (fleet.json, when asked for, is already written).
async fn deliver_metrics(report: &FleetReport, args: &FleetArgs) -> Result<(), Failure> {
    if let Some(path) = &args.metrics_file {
        write_atomic(path, lab_report::metrics::openmetrics(report).as_bytes()).map_err(|e| {
            Failure::env(anyhow::anyhow!(
                "writing the metrics file {}: {e} (its folder must exist and be writable)",
                path.display()
            ))
        })?;
    }
    if let Some(url) = &args.pushgateway {
        crate::pushgateway::push(
            url,
            PUSH_JOB,
            &lab_report::metrics::prometheus_text(report),
            PUSH_TIMEOUT,
        )
        .await
        .map_err(Failure::env)?;
    }
    Ok(())
}

type Position = (usize, usize);

/// Every card's turn, `parallel` at a time, until all are done, the total deadline, Ctrl-C or
/// SIGTERM. Returns the finished cards, why the run stopped early, and a refusal that ends it
/// (401/403: no card can be checked).
async fn run_cards(
    env: &Env<'_>,
    tasks: Vec<CardTask>,
    parallel: u32,
    total_deadline: Instant,
) -> (Vec<(Position, FleetCard)>, Option<String>, Option<ApiError>) {
    let width = usize::try_from(parallel).unwrap_or(1).max(1);
    let stream = futures::stream::iter(tasks)
        .map(|t| probe_card(env, t))
        .buffer_unordered(width);
    futures::pin_mut!(stream);
    let ctrl_c = tokio::signal::ctrl_c();
    futures::pin_mut!(ctrl_c);
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        #[cfg(unix)]
        if let Some(t) = term.as_mut() {
            t.recv().await;
            return;
        }
        futures::future::pending::<()>().await;
    };
    futures::pin_mut!(sigterm);
    let mut results = Vec::new();
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(r)) => results.push(r),
                Some(Err(e)) => return (results, Some(format!("the API server refused: {e}")), Some(e)),
                None => return (results, None, None),
            },
            () = tokio::time::sleep_until(total_deadline) => {
                env.cluster.log("the total deadline (--timeout) passed: stopping, deleting the probe pods");
                return (results, Some("the total deadline (--timeout) passed".into()), None);
            }
            _ = &mut ctrl_c => {
                env.cluster.log("interrupted: stopping, deleting the probe pods");
                return (results, Some("interrupted (Ctrl-C)".into()), None);
            }
            () = &mut sigterm => {
                env.cluster.log("terminated (SIGTERM): stopping, deleting the probe pods");
                return (results, Some("terminated (SIGTERM)".into()), None);
            }
        }
    }
}

/// Whether node `name` is gone (a failed lookup is not taken as gone).
async fn node_gone(cluster: &Cluster, name: &str) -> bool {
    matches!(cluster.get_node(name).await, Ok(None))
}

fn fatal(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::Unauthorized { .. } | ApiError::Forbidden { .. }
    )
}

/// One card's turn: create its pod, wait, copy, probe, judge, delete.
async fn probe_card(env: &Env<'_>, task: CardTask) -> Result<(Position, FleetCard), ApiError> {
    env.started.fetch_add(1, Ordering::Relaxed);
    show_counter(env, env.done.load(Ordering::Relaxed), false);
    let begun = Instant::now();
    let deadline = begun + env.card_timeout;
    let position = (task.node_index, task.card_index);
    let mut card = task.card.clone();
    let rendered = match pod::render(&ProbePod {
        run: &env.run,
        namespace: env.namespace,
        image: env.image,
        node: &task.node,
        hostname: &task.hostname,
        index: card.index,
        uuid: &card.uuid,
        slice_mib: card.slice_mib,
        lifetime_s: env.card_timeout.as_secs(),
    }) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("the probe pod could not be rendered: {e}");
            return Ok((
                position,
                finish(
                    env,
                    &task,
                    not_checked(
                        card,
                        NotChecked::PodFailed {
                            message: msg.clone(),
                        },
                        msg,
                    ),
                    begun,
                ),
            ));
        }
    };
    let name = rendered.name.clone();
    card.pod = Some(name.clone());
    let turn = card_turn(env, &task, card.clone(), &rendered.pod, deadline).await;
    let card = match turn {
        Ok(c) => c,
        Err(e) if fatal(&e) => {
            let _ = env
                .cluster
                .delete_pod(env.namespace, &name, DELETE_TIMEOUT)
                .await;
            return Err(e);
        }
        Err(ApiError::WaitTimeout { .. }) => {
            let after_s = env.card_timeout.as_secs();
            not_checked(
                card,
                NotChecked::ProbeTimedOut { after_s },
                format!("no probe report within --card-timeout ({after_s} s)"),
            )
        }
        Err(e) if node_gone(&env.cluster, &task.node).await => not_checked(
            card,
            NotChecked::NodeGone,
            format!("node {} disappeared during the run ({e})", task.node),
        ),
        Err(e) => {
            let message = e.to_string();
            not_checked(
                card,
                NotChecked::NoReport {
                    message: message.clone(),
                },
                message,
            )
        }
    };
    if let Err(e) = env
        .cluster
        .delete_pod(env.namespace, &name, DELETE_TIMEOUT)
        .await
    {
        env.cluster.log(&format!(
            "could not delete probe pod {name} yet ({e}); the sweep at the end retries"
        ));
    }
    Ok((position, finish(env, &task, card, begun)))
}

/// Counts a finished card and says so when it is not verified.
fn finish(env: &Env<'_>, task: &CardTask, mut card: FleetCard, begun: Instant) -> FleetCard {
    card.duration_s = begun.elapsed().as_secs_f64();
    let done = env.done.fetch_add(1, Ordering::Relaxed) + 1;
    if card.outcome != CardOutcome::Verified {
        env.failed.fetch_add(1, Ordering::Relaxed);
        env.cluster.log(&format!(
            "{} card {} ({}): {} — {}",
            task.node,
            card.index,
            card.uuid,
            outcome_word(&card),
            card.reason
        ));
    }
    show_counter(env, done, true);
    card
}

/// The counter at `done` cards: a bar moves when a card starts or ends; a line is written when a
/// card ends, every 5 % (the last card's line is the counter's end, written when the run ends).
fn show_counter(env: &Env<'_>, done: usize, card_ended: bool) {
    let in_flight = env.started.load(Ordering::Relaxed).saturating_sub(done);
    let msg = format!(
        "{in_flight} in flight, {} not verified",
        env.failed.load(Ordering::Relaxed)
    );
    let pos = u64::try_from(done).unwrap_or(u64::MAX);
    let step = (env.total / 20).max(1);
    if card_ended && done < env.total && done.is_multiple_of(step) {
        env.counter.update(pos, &msg);
    } else {
        env.counter.show(pos, &msg);
    }
}

/// Create, wait, copy, probe and judge (the pod is deleted by the caller, whatever happened).
async fn card_turn(
    env: &Env<'_>,
    task: &CardTask,
    card: FleetCard,
    pod: &k8s_openapi::api::core::v1::Pod,
    deadline: Instant,
) -> Result<FleetCard, ApiError> {
    let ns = env.namespace;
    let name = card.pod.clone().unwrap_or_default();
    let left = || deadline.saturating_duration_since(Instant::now());
    env.cluster.create_pod(ns, pod, left()).await?;
    let settled = env.cluster.wait_probe_pod(ns, &name, deadline).await?;
    match probe_pod_state(settled.as_ref()) {
        ProbePodState::Ready => {}
        ProbePodState::Starting => {
            return Err(ApiError::WaitTimeout {
                what: format!("probe pod {name}"),
                secs: 0,
                last: String::new(),
            });
        }
        state if node_gone(&env.cluster, &task.node).await => {
            return Ok(not_checked(
                card,
                NotChecked::NodeGone,
                format!(
                    "node {} disappeared during the run (its probe pod: {state:?})",
                    task.node
                ),
            ));
        }
        ProbePodState::Unschedulable { message } => {
            let event = env
                .cluster
                .failed_scheduling(ns, &name)
                .await
                .ok()
                .flatten()
                .unwrap_or(message);
            return Ok(not_checked(
                card,
                NotChecked::Unschedulable {
                    event: event.clone(),
                },
                format!("the scheduler did not place the probe pod: {event}"),
            ));
        }
        ProbePodState::Failed { message } => {
            return Ok(not_checked(
                card,
                NotChecked::PodFailed {
                    message: message.clone(),
                },
                message,
            ));
        }
        ProbePodState::Gone => {
            let message =
                "the probe pod was deleted before the probe ran (not by fleet)".to_owned();
            return Ok(not_checked(
                card,
                NotChecked::PodFailed {
                    message: message.clone(),
                },
                message,
            ));
        }
    }
    let path = match &env.probe {
        ProbeSource::Copy(archive) => {
            env.cluster
                .copy_probe_archive(ns, &name, None, archive, left())
                .await?;
            format!("{PROBE_DIR}/{PROBE_NAME}")
        }
        ProbeSource::InImage(p) => p.clone(),
    };
    let args = [
        "all".to_owned(),
        "--output".to_owned(),
        "json".to_owned(),
        "--expect-mib".to_owned(),
        card.slice_mib.to_string(),
    ];
    let run = env
        .cluster
        .run_probe_at(ns, &name, None, &path, &args, left())
        .await?;
    if run.exit_code.is_none() && node_gone(&env.cluster, &task.node).await {
        // The exec stream ended without a status: the kubelet went with its node.
        return Ok(not_checked(
            card,
            NotChecked::NodeGone,
            format!("node {} disappeared while the probe ran", task.node),
        ));
    }
    let mut card = card;
    if let Some(out) = &env.out {
        let stem = format!("probe/{}-{}", task.node, card.index);
        match out.write(&format!("{stem}.json"), run.stdout.as_bytes()) {
            Ok(rel) => card.probe_report = Some(rel),
            Err(e) => env
                .cluster
                .log(&format!("could not write {stem}.json: {e}")),
        }
        let _ = out.write(&format!("{stem}.stderr"), run.stderr.as_bytes());
    }
    Ok(judge_output(card, &run.stdout, run.exit_code))
}

fn outcome_word(card: &FleetCard) -> String {
    match card.outcome {
        CardOutcome::Verified => "verified".to_owned(),
        CardOutcome::Failed => "FAILED".to_owned(),
        CardOutcome::NotChecked => format!(
            "not checked ({})",
            card.not_checked.as_ref().map_or("?", NotChecked::label)
        ),
    }
}

fn table(report: &FleetReport) -> String {
    let mut s = format!(
        "{:<24} {:>4} {:<22} {:<42} {:>7} {:>7}  {}\n",
        "NODE", "CARD", "MODEL", "UUID", "SLICE", "CAP", "RESULT"
    );
    for node in &report.nodes {
        for c in &node.cards {
            s.push_str(&format!(
                "{:<24} {:>4} {:<22} {:<42} {:>7} {:>7}  {}\n    {}\n",
                node.name,
                c.index,
                c.model,
                c.uuid,
                c.slice_mib,
                c.cap_mib.map_or("-".to_owned(), |m| m.to_string()),
                outcome_word(c),
                c.reason
            ));
        }
    }
    s
}

fn outcome(report: &FleetReport, stopped: Option<&str>, out: Option<&Path>) -> Outcome {
    let t = report.totals;
    let mut human = table(report);
    let mut by_reason: BTreeMap<&str, u32> = BTreeMap::new();
    for c in report.nodes.iter().flat_map(|n| &n.cards) {
        if let Some(r) = &c.not_checked {
            *by_reason.entry(r.label()).or_insert(0) += 1;
        }
    }
    human.push_str(&format!(
        "{} nodes, {} cards: {} verified, {} failed, {} not checked{}\n",
        t.nodes,
        t.cards,
        t.verified,
        t.failed,
        t.not_checked,
        if by_reason.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                by_reason
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    if let Some(why) = stopped {
        human.push_str(&format!("the run stopped early: {why}\n"));
    }
    if let Some(dir) = out {
        human.push_str(&format!("results: {}/fleet.json\n", dir.display()));
    }
    Outcome {
        exit: report.exit_code(),
        human,
        json: serde_json::to_value(report).unwrap_or_default(),
    }
}

/// `fleet --dry-run`: the cards, which would be probed, and the first probe pod.
fn dry_run(report: FleetReport, tasks: &[CardTask], run: &str, args: &FleetArgs) -> Outcome {
    let mut human = String::new();
    if let Some(t) = tasks.first()
        && let Ok(r) = pod::render(&ProbePod {
            run,
            namespace: &report.parameters.namespace,
            image: &args.image,
            node: &t.node,
            hostname: &t.hostname,
            index: t.card.index,
            uuid: &t.card.uuid,
            slice_mib: t.card.slice_mib,
            lifetime_s: args.card_timeout,
        })
    {
        human.push_str(&format!(
            "# the probe pod of the first card\n{}---\n",
            r.yaml
        ));
    }
    for node in &report.nodes {
        for c in &node.cards {
            let what = if tasks
                .iter()
                .any(|t| t.node == node.name && t.card.uuid == c.uuid)
            {
                format!(
                    "would probe with a {} MiB slice: gpu-probe all --expect-mib {}",
                    c.slice_mib, c.slice_mib
                )
            } else {
                format!("{} — {}", outcome_word(c), c.reason)
            };
            human.push_str(&format!(
                "{} card {} ({}, {}): {what}\n",
                node.name, c.index, c.model, c.uuid
            ));
        }
    }
    human.push_str(&format!(
        "{} cards to probe, {} at a time; nothing was created (--dry-run)\n",
        tasks.len(),
        args.parallel
    ));
    Outcome {
        exit: exit::OK,
        human,
        json: json!({"fleet": report, "to_probe": tasks.len()}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.prom");
        write_atomic(&path, b"a 1\n").unwrap();
        write_atomic(&path, b"a 2\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
        // A folder that cannot be written: an error, the old file intact.
        let missing = dir.path().join("m.prom/inner");
        assert!(write_atomic(&missing, b"x").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"a 2\n");
    }

    #[test]
    fn run_ids_are_label_values() {
        let id = run_id(1_764_000_000);
        assert_eq!(id.len(), 6);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
