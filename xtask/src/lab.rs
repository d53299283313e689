//! `cargo xtask lab`: the whole lab as a plan of phases, each a list of commands with why they
//! run (cargo-dist style). `--dry-run` prints the plan and touches nothing; otherwise preflight
//! runs first (exit 3 with the reason and the fix where the lab cannot run), then each phase in
//! order, recording finished phases in a state file so a re-run continues where it stopped.
//! When an exercise fails, `cluster-ctl doctor --explain` names the failure from what the run
//! captured: printed before the summary, kept as `run/diagnosis.json` (so the bundle carries it).
//! What preflight checks, and why, is in [`preflight`].

pub mod preflight;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use cluster_ctl::kubeconfig::K3S_KUBECONFIG;
use lab_runner::{Cmd, Runner, SystemRunner};
use serde::{Deserialize, Serialize};

use preflight::{Facts, gpu_query};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Preflight,
    Build,
    Host,
    InstallHami,
    Exercises,
    Pack,
}

impl Phase {
    pub const ALL: [Self; 6] = [
        Self::Preflight,
        Self::Build,
        Self::Host,
        Self::InstallHami,
        Self::Exercises,
        Self::Pack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Preflight => "preflight",
            Self::Build => "build",
            Self::Host => "host",
            Self::InstallHami => "install-hami",
            Self::Exercises => "exercises",
            Self::Pack => "pack",
        }
    }
}

/// How install-hami installs the chart (`cluster-ctl install-hami --installer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Installer {
    /// On the k3s the host phase makes: k3s's HelmChart (no helm binary); with --skip-host,
    /// cluster-ctl decides (HelmChart on k3s, helm elsewhere).
    #[default]
    Auto,
    /// `helm upgrade --install` (needs helm 3 or 4).
    Helm,
    /// A helm.cattle.io/v1 HelmChart that k3s's helm controller installs.
    HelmChart,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// Print every phase's plan and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Restart at this phase (earlier phases are taken as done).
    #[arg(long, value_enum)]
    pub from: Option<Phase>,
    /// The cluster already exists: skip host-setup (no root needed; a kubeconfig is).
    #[arg(long)]
    pub skip_host: bool,
    /// Memory slice per share pod, in MiB (default: sized to the card by cluster-ctl).
    #[arg(long)]
    pub slice_mib: Option<u64>,
    /// HAMi chart version.
    #[arg(long, default_value = "2.10.0")]
    pub chart_version: String,
    /// Registry of the kube-scheduler image HAMi's scheduler runs.
    #[arg(long, default_value = "registry.k8s.io")]
    pub scheduler_registry: String,
    /// How HAMi's chart is installed: auto (k3s's HelmChart on the lab's k3s), helm or helm-chart.
    #[arg(long, value_enum, default_value_t = Installer::Auto)]
    pub installer: Installer,
    /// Kubeconfig (default: k3s's /etc/rancher/k3s/k3s.yaml after host-setup, else kubectl's rules).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Extra names/addresses for the API server certificate (host-setup --tls-san).
    #[arg(long)]
    pub tls_san: Vec<String>,
    /// Copy the kubeconfig to this user's ~/.kube/config (mode 0600).
    #[arg(long)]
    pub kubeconfig_user: Option<String>,
    /// Also run gpu-probe audit, overhead and compute in share pod A (cluster-ctl run --audit),
    /// and the bypass exercises B1–B6 (cluster-ctl run --bypass).
    #[arg(long)]
    pub audit: bool,
    /// Where results, the bundle and the state file go.
    #[arg(long, default_value = "lab-out")]
    pub out: PathBuf,
}

/// When a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    Always,
    /// Only after a step of this run exited 1 (a claim failed).
    ClaimFailed,
}

impl Default for LabArgs {
    /// The arguments of a plain `cargo xtask lab` (a test keeps this equal to clap's defaults).
    fn default() -> Self {
        Self {
            dry_run: false,
            from: None,
            skip_host: false,
            slice_mib: None,
            chart_version: "2.10.0".into(),
            scheduler_registry: "registry.k8s.io".into(),
            installer: Installer::Auto,
            kubeconfig: None,
            tls_san: Vec::new(),
            kubeconfig_user: None,
            audit: false,
            out: PathBuf::from("lab-out"),
        }
    }
}

/// One command of a phase, with why it runs.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub phase: Phase,
    pub why: String,
    #[serde(serialize_with = "cmd_line")]
    pub cmd: Cmd,
    pub when: When,
}

fn cmd_line<S: serde::Serializer>(cmd: &Cmd, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&cmd.to_string())
}

/// Where things are: the workspace, the binaries, the outputs.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub bin: PathBuf,
    pub probe: PathBuf,
    pub out: PathBuf,
}

impl Layout {
    pub fn new(root: &Path, out: &Path) -> Self {
        let out = if out.is_absolute() {
            out.to_path_buf()
        } else {
            root.join(out)
        };
        Self {
            root: root.to_path_buf(),
            bin: root.join("target/release"),
            probe: root.join("dist/x86_64-unknown-linux-gnu/gpu-probe"),
            out,
        }
    }
    fn tool(&self, name: &str) -> String {
        self.bin.join(name).display().to_string()
    }
    pub fn state_file(&self) -> PathBuf {
        self.out.join("lab-state.json")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.out.join("run")
    }
}

/// The whole plan, pure: the same arguments give the same steps.
pub fn plan(args: &LabArgs, layout: &Layout) -> Vec<Step> {
    let step = |phase, why: &str, cmd| Step {
        phase,
        why: why.to_owned(),
        cmd,
        when: When::Always,
    };
    let mut steps = vec![step(
        Phase::Preflight,
        "check what every later phase needs (driver and GPU, Rust and the build tools, disk, k3s's ports, kernel modules, download sources, helm where used) before anything changes; each problem with its fix",
        gpu_query(),
    )];
    steps.push(step(
        Phase::Build,
        "build the host tools for this machine",
        Cmd::new("cargo").args([
            "build",
            "--release",
            "-p",
            "host-setup",
            "-p",
            "cluster-ctl",
            "-p",
            "evidence-pack",
        ]),
    ));
    steps.push(step(
        Phase::Build,
        "build the portable gpu-probe (glibc ≤ 2.28) that is copied into the pods",
        Cmd::new("cargo").args(["xtask", "dist", "--tool", "gpu-probe"]),
    ));
    // The kubeconfig cluster-ctl gets: the one asked for; after host-setup, k3s's own; with
    // --skip-host and none asked for, nothing, and cluster-ctl finds one by kubectl's rules
    // (cluster_ctl::kubeconfig, the same rules `observe` checks).
    let kubeconfig: Option<PathBuf> = args
        .kubeconfig
        .clone()
        .or_else(|| (!args.skip_host).then(|| PathBuf::from(K3S_KUBECONFIG)));
    let kube_args: Vec<String> = kubeconfig
        .iter()
        .flat_map(|k| ["--kubeconfig".to_owned(), k.display().to_string()])
        .collect();
    if !args.skip_host {
        let mut install = Cmd::new(layout.tool("host-setup")).arg("install");
        for san in &args.tls_san {
            install = install.args(["--tls-san", san]);
        }
        if let Some(user) = &args.kubeconfig_user {
            install = install.args(["--kubeconfig-user", user]);
        }
        steps.push(step(
            Phase::Host,
            "check the host before changing it",
            Cmd::new(layout.tool("host-setup")).arg("preflight"),
        ));
        steps.push(step(
            Phase::Host,
            "NVIDIA Container Toolkit, then k3s with nvidia as the default runtime and gpu=on (idempotent)",
            install,
        ));
        steps.push(step(
            Phase::Host,
            "verify the runtime, RuntimeClass and node label",
            Cmd::new(layout.tool("host-setup")).arg("verify"),
        ));
    }
    steps.push(step(
        Phase::InstallHami,
        "refuse to coexist with another NVIDIA device plugin or GPU Operator",
        Cmd::new(layout.tool("cluster-ctl"))
            .arg("preflight")
            .args(kube_args.clone()),
    ));
    let (installer, install_why) = match (args.installer, args.skip_host) {
        (Installer::Helm, _) => (
            Some("helm"),
            "install HAMi with helm (--installer helm) and verify scheduler, webhook, device plugin and node registration",
        ),
        (Installer::HelmChart, _) | (Installer::Auto, false) => (
            Some("helm-chart"),
            "install HAMi through k3s's helm controller (a helm.cattle.io/v1 HelmChart in kube-system, watched until its helm-install Job finishes; no helm binary needed), then verify scheduler, webhook, device plugin and node registration",
        ),
        (Installer::Auto, true) => (
            None,
            "install HAMi (cluster-ctl picks k3s's HelmChart on k3s, helm elsewhere, and says why) and verify scheduler, webhook, device plugin and node registration",
        ),
    };
    let mut install = Cmd::new(layout.tool("cluster-ctl"))
        .arg("install-hami")
        .args(kube_args.clone())
        .args([
            "--chart-version",
            &args.chart_version,
            "--scheduler-registry",
            &args.scheduler_registry,
        ]);
    if let Some(i) = installer {
        install = install.args(["--installer", i]);
    }
    steps.push(step(Phase::InstallHami, install_why, install));
    let mut run = Cmd::new(layout.tool("cluster-ctl"))
        .arg("run")
        .args(kube_args)
        .args(["--out", &layout.run_dir().display().to_string()])
        .args(["--probe-bin", &layout.probe.display().to_string()]);
    if let Some(mib) = args.slice_mib {
        run = run.args(["--slice-mib", &mib.to_string()]);
    }
    if args.audit {
        run = run.args(["--audit", "--bypass"]);
    }
    steps.push(step(
        Phase::Exercises,
        if args.audit {
            "the five exercises: co-residency, the view and the cap in each pod, the Pending pod, the mechanism; the audit of every allocation path (A1); the bypass pods B1–B6, each refused at admission, held, or escaped"
        } else {
            "the five exercises: co-residency, the view and the cap in each pod, the Pending pod, the mechanism"
        },
        run,
    ));
    steps.push(Step {
        when: When::ClaimFailed,
        ..step(
            Phase::Exercises,
            "only when an exercise failed: name the failure from what the run captured (objects, events, HAMi's logs, probe reports); kept as run/diagnosis.json, so the bundle carries it",
            diagnose_cmd(layout),
        )
    });
    steps.push(step(
        Phase::Pack,
        "bundle the results with summary.json, report.md/html, junit.xml and SHA256SUMS (secrets redacted)",
        Cmd::new(layout.tool("evidence-pack"))
            .arg("pack")
            .arg(layout.run_dir().display().to_string())
            .args(["-o", &layout.out.display().to_string()]),
    ));
    steps.push(step(
        Phase::Pack,
        "check the bundle (checksums, schema) and print its claims table",
        Cmd::new(layout.tool("evidence-pack"))
            .arg("verify")
            .arg(NEWEST_BUNDLE),
    ));
    steps
}

/// `cluster-ctl doctor --explain` over the run's output folder (offline: no kubeconfig needed).
fn diagnose_cmd(layout: &Layout) -> Cmd {
    let run = layout.run_dir().display().to_string();
    Cmd::new(layout.tool("cluster-ctl"))
        .args(["doctor", "--explain", &run])
        .args([
            "--save",
            &layout
                .run_dir()
                .join("diagnosis.json")
                .display()
                .to_string(),
        ])
        .timeout(std::time::Duration::from_secs(120))
}

/// Stands for the bundle `pack` just wrote; replaced at run time by [`newest_bundle`].
pub const NEWEST_BUNDLE: &str = "<newest hami-evidence-*.tgz in --out>";

/// The most recently written `hami-evidence-*.tgz` in `dir`.
pub fn newest_bundle(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("hami-evidence-")
                && e.file_name().to_string_lossy().ends_with(".tgz")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
}

/// Finished phases, kept in `<out>/lab-state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    pub finished: BTreeMap<String, f64>,
}

impl State {
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a lab state file; delete it to start over",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                version: 1,
                ..Self::default()
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }
    /// `--from PHASE`: forget that phase and every later one.
    pub fn restart_from(&mut self, from: Phase) {
        self.finished
            .retain(|name, _| Phase::ALL.iter().any(|p| p.name() == name && *p < from));
    }
}

pub fn render_plan(steps: &[Step]) -> String {
    let mut out = String::from("cargo xtask lab — plan (dry run: nothing is run or changed)\n");
    let mut last = None;
    for s in steps {
        if last != Some(s.phase) {
            out.push_str(&format!("\n[{}]\n", s.phase.name()));
            last = Some(s.phase);
        }
        let when = match s.when {
            When::Always => "",
            When::ClaimFailed => " (only when an exercise failed)",
        };
        out.push_str(&format!("  - {}{when}\n    why: {}\n", s.cmd, s.why));
    }
    out
}

/// Runs the lab; returns the process exit code.
pub fn run(args: &LabArgs) -> Result<u8> {
    let layout = Layout::new(&crate::workspace_root(), &args.out);
    if args.dry_run {
        let text = format!(
            "{}\nstate file: {} (finished phases are skipped on a re-run; --from PHASE restarts there)\n",
            render_plan(&plan(args, &layout)),
            layout.state_file().display()
        );
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
        return Ok(0);
    }
    // Observing is quiet: its dozen read-only calls are not the lab's commands.
    let facts = preflight::observe(
        &SystemRunner::new(false),
        args,
        &layout.root,
        &phases_to_run(&load_state(args, &layout)?),
    );
    execute(args, &layout, &SystemRunner::new(true), &facts)
}

/// The state file with `--from` applied.
fn load_state(args: &LabArgs, layout: &Layout) -> Result<State> {
    let mut state = State::load(&layout.state_file())?;
    if let Some(from) = args.from {
        state.restart_from(from);
    }
    Ok(state)
}

/// The phases this run will reach: every one not finished in an earlier run (preflight runs
/// every time and is not among them).
pub fn phases_to_run(state: &State) -> Vec<Phase> {
    Phase::ALL
        .into_iter()
        .filter(|p| *p != Phase::Preflight && !state.finished.contains_key(p.name()))
        .collect()
}

/// Preflight, then every phase not yet finished, recording each in the state file.
pub fn execute(args: &LabArgs, layout: &Layout, runner: &dyn Runner, facts: &Facts) -> Result<u8> {
    let steps = plan(args, layout);
    let mut state = load_state(args, layout)?;
    let problems = preflight::preflight(facts, args, &phases_to_run(&state));
    if !problems.is_empty() {
        eprintln!("lab stopped at preflight:");
        for p in &problems {
            eprintln!("  - [{}] {}\n    fix: {}", p.id, p.what, p.fix);
        }
        return Ok(3);
    }
    let mut code = 0u8;
    let mut times: Vec<(Phase, f64)> = Vec::new();
    // The diagnosis of failed exercises, printed before the summary.
    let mut diagnosis: Option<String> = None;
    // Preflight ran above, every time: it is never "done" for good.
    for phase in Phase::ALL.into_iter().filter(|p| *p != Phase::Preflight) {
        if state.finished.contains_key(phase.name()) {
            eprintln!("==> {} (done in an earlier run; skipped)", phase.name());
            continue;
        }
        let started = Instant::now();
        eprintln!("==> {}", phase.name());
        for step in steps
            .iter()
            .filter(|s| s.phase == phase && s.phase != Phase::Preflight)
        {
            let mut cmd = step.cmd.clone();
            for arg in &mut cmd.args {
                if arg == NEWEST_BUNDLE {
                    *arg = newest_bundle(&layout.out)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                }
            }
            if step.when == When::ClaimFailed {
                if code != 1 {
                    continue;
                }
                eprintln!("  - {cmd}\n    why: {}", step.why);
                // 0: nothing known matched; 1: a failure named. Either way the lab goes on.
                match runner.run(&cmd.dir(&layout.root)) {
                    Ok(out) if matches!(out.code, Some(0 | 1)) => diagnosis = Some(out.stdout),
                    Ok(out) => eprintln!(
                        "    warning: the diagnosis did not run (exit {:?}): {}",
                        out.code,
                        out.stderr.trim()
                    ),
                    Err(e) => eprintln!("    warning: the diagnosis did not run: {e}"),
                }
                continue;
            }
            eprintln!("  - {cmd}\n    why: {}", step.why);
            let out = runner.run(&cmd.dir(&layout.root).streamed())?;
            match out.code {
                Some(0) => {}
                // A failed claim still gets packed and shown: the bundle is the evidence.
                Some(1) if matches!(phase, Phase::Exercises | Phase::Pack) => code = 1,
                other => {
                    let c = other.and_then(|c| u8::try_from(c).ok()).unwrap_or(1);
                    eprintln!(
                        "lab stopped in phase {} (exit {c}); fix the cause above, then re-run `cargo xtask lab` to continue",
                        phase.name()
                    );
                    return Ok(c);
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!("    {} done in {secs:.1}s", phase.name());
        times.push((phase, secs));
        state.finished.insert(phase.name().to_owned(), secs);
        state.save(&layout.state_file())?;
    }
    if let Some(text) = &diagnosis {
        eprintln!(
            "\ndiagnosis of the failed exercises (also {}):\n{text}",
            layout.run_dir().join("diagnosis.json").display()
        );
    }
    eprintln!("\ntime per phase:");
    for (p, s) in &times {
        eprintln!("  {:<13} {s:>8.1}s", p.name());
    }
    eprintln!("results: {}", layout.out.display());
    Ok(code)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        lab: LabArgs,
    }

    pub(crate) fn args(extra: &[&str]) -> LabArgs {
        T::parse_from(std::iter::once("lab").chain(extra.iter().copied())).lab
    }

    fn layout() -> Layout {
        Layout::new(Path::new("/repo"), Path::new("lab-out"))
    }

    #[test]
    fn the_plan_has_every_phase_in_order_with_reasons() {
        let steps = plan(
            &args(&["--tls-san", "gpu.example", "--slice-mib", "4000", "--audit"]),
            &layout(),
        );
        let phases: Vec<Phase> = steps.iter().map(|s| s.phase).collect();
        let mut sorted = phases.clone();
        sorted.sort();
        assert_eq!(phases, sorted, "phases run in order");
        for p in Phase::ALL {
            assert!(phases.contains(&p), "{p:?} missing");
        }
        assert!(steps.iter().all(|s| !s.why.is_empty()));
        let text = render_plan(&steps);
        assert!(
            text.contains("host-setup install --tls-san gpu.example"),
            "{text}"
        );
        assert!(text.contains("--slice-mib 4000 --audit --bypass"), "{text}");
        assert!(
            text.contains("--kubeconfig /etc/rancher/k3s/k3s.yaml"),
            "{text}"
        );
        assert!(text.contains("/repo/lab-out/run"), "{text}");
    }

    use preflight::tests::ready_gpu_host;

    #[test]
    fn default_arguments_are_claps() {
        let (a, b) = (args(&[]), LabArgs::default());
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn preflight_asks_only_about_the_phases_left_to_run() {
        let dir = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(dir.path(), Path::new("lab-out"));
        let mut state = State::load(&layout.state_file()).expect("fresh");
        state.finished.insert("build".into(), 1.0);
        state.save(&layout.state_file()).expect("save");
        let no_rust = Facts {
            rustc: None,
            ..ready_gpu_host()
        };
        let present = tools(&layout);
        let fake = lab_runner::RecordingRunner::new(
            &present.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(
            execute(&args(&[]), &layout, &fake, &no_rust).expect("runs"),
            0,
            "the build is done: rustc is not needed"
        );
        let fake = lab_runner::RecordingRunner::new(&[]);
        assert_eq!(
            execute(&args(&["--from", "build"]), &layout, &fake, &no_rust).expect("runs"),
            3,
            "--from build: it is"
        );
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn on_the_labs_k3s_the_plan_installs_hami_through_a_helmchart() {
        let text = render_plan(&plan(&args(&[]), &layout()));
        assert!(
            text.contains("install-hami --kubeconfig /etc/rancher/k3s/k3s.yaml --chart-version 2.10.0 --scheduler-registry registry.k8s.io --installer helm-chart"),
            "{text}"
        );
        assert!(text.contains("no helm binary needed"), "{text}");
        let helm = render_plan(&plan(&args(&["--installer", "helm"]), &layout()));
        assert!(helm.contains("--installer helm\n"), "{helm}");
        let skip = render_plan(&plan(
            &args(&["--skip-host", "--kubeconfig", "/k"]),
            &layout(),
        ));
        assert!(!skip.contains("--installer"), "cluster-ctl decides: {skip}");
        assert!(skip.contains("helm elsewhere"), "{skip}");
    }

    fn tools(layout: &Layout) -> Vec<String> {
        let mut v: Vec<String> = ["host-setup", "cluster-ctl", "evidence-pack"]
            .iter()
            .map(|t| layout.tool(t))
            .collect();
        v.push("cargo".into());
        v
    }

    #[test]
    fn a_full_run_records_every_phase_and_a_rerun_does_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(dir.path(), Path::new("lab-out"));
        let present = tools(&layout);
        let fake = lab_runner::RecordingRunner::new(
            &present.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let a = args(&[]);
        assert_eq!(
            execute(&a, &layout, &fake, &ready_gpu_host()).expect("runs"),
            0
        );
        let lines = fake.lines();
        assert!(lines[0].starts_with("cargo build --release"), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("cluster-ctl install-hami")));
        assert!(
            lines.last().expect("some").contains("evidence-pack verify"),
            "{lines:?}"
        );
        let state = State::load(&layout.state_file()).expect("state");
        assert_eq!(
            state.finished.len(),
            Phase::ALL.len() - 1,
            "every phase but preflight is recorded"
        );
        let again = lab_runner::RecordingRunner::new(
            &present.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(
            execute(&a, &layout, &again, &ready_gpu_host()).expect("runs"),
            0
        );
        assert!(
            again.calls().is_empty(),
            "a finished lab runs nothing: {:?}",
            again.lines()
        );
    }

    #[test]
    fn a_failed_phase_stops_and_the_rerun_continues_there() {
        let dir = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(dir.path(), Path::new("lab-out"));
        let present = tools(&layout);
        let names: Vec<&str> = present.iter().map(String::as_str).collect();
        let fake = lab_runner::RecordingRunner::new(&names);
        fake.reply("install-hami", 3, "", "helm not found");
        let a = args(&[]);
        assert_eq!(
            execute(&a, &layout, &fake, &ready_gpu_host()).expect("runs"),
            3
        );
        assert!(
            !fake.lines().iter().any(|l| l.contains("cluster-ctl run")),
            "stopped before the exercises"
        );
        let state = State::load(&layout.state_file()).expect("state");
        assert!(
            state.finished.contains_key("host") && !state.finished.contains_key("install-hami")
        );
        let rerun = lab_runner::RecordingRunner::new(&names);
        assert_eq!(
            execute(&a, &layout, &rerun, &ready_gpu_host()).expect("runs"),
            0
        );
        let lines = rerun.lines();
        assert!(
            lines[0].contains("cluster-ctl preflight"),
            "continues at install-hami: {lines:?}"
        );
        assert!(!lines.iter().any(|l| l.contains("host-setup")));
    }

    #[test]
    fn a_failed_claim_is_still_packed_and_exits_1() {
        let dir = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(dir.path(), Path::new("lab-out"));
        let present = tools(&layout);
        let fake = lab_runner::RecordingRunner::new(
            &present.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        fake.reply("cluster-ctl run", 1, "", "E2 failed");
        fake.reply(
            "cluster-ctl doctor",
            1,
            "doctor: 1 known failure named, most likely first\n",
            "",
        );
        assert_eq!(
            execute(
                &args(&["--skip-host", "--installer", "helm-chart"]),
                &layout,
                &fake,
                &ready_gpu_host()
            )
            .expect("runs"),
            1
        );
        let lines = fake.lines();
        let doctor = lines
            .iter()
            .position(|l| l.contains("cluster-ctl doctor --explain"))
            .expect("the failed run is diagnosed");
        let pack = lines
            .iter()
            .position(|l| l.contains("evidence-pack pack"))
            .expect("and still packed");
        assert!(
            doctor < pack,
            "the diagnosis is in the run folder before it is packed: {lines:?}"
        );
        assert!(
            lines[doctor].ends_with("lab-out/run/diagnosis.json"),
            "{}",
            lines[doctor]
        );
    }

    #[test]
    fn a_passing_run_is_not_diagnosed() {
        let dir = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(dir.path(), Path::new("lab-out"));
        let present = tools(&layout);
        let fake = lab_runner::RecordingRunner::new(
            &present.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(
            execute(
                &args(&["--skip-host", "--installer", "helm-chart"]),
                &layout,
                &fake,
                &ready_gpu_host()
            )
            .expect("runs"),
            0
        );
        assert!(
            !fake
                .lines()
                .iter()
                .any(|l| l.contains("cluster-ctl doctor"))
        );
        let plan = render_plan(&plan(&args(&[]), &layout));
        assert!(
            plan.contains("doctor --explain") && plan.contains("(only when an exercise failed)"),
            "{plan}"
        );
    }

    #[test]
    fn preflight_problems_run_nothing_and_exit_3() {
        let dir = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(dir.path(), Path::new("lab-out"));
        let fake = lab_runner::RecordingRunner::new(&["cargo"]);
        let no_gpu = Facts {
            nvidia_smi: None,
            ..ready_gpu_host()
        };
        assert_eq!(
            execute(&args(&[]), &layout, &fake, &no_gpu).expect("runs"),
            3
        );
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn the_newest_bundle_is_found() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(newest_bundle(dir.path()), None);
        let old = dir.path().join("hami-evidence-20261101T000000Z.tgz");
        std::fs::write(&old, "a").expect("write");
        std::fs::write(dir.path().join("other.tgz"), "b").expect("write");
        assert_eq!(newest_bundle(dir.path()), Some(old));
    }

    #[test]
    fn skip_host_drops_the_host_phase() {
        let steps = plan(&args(&["--skip-host", "--kubeconfig", "/k"]), &layout());
        assert!(!steps.iter().any(|s| s.phase == Phase::Host));
        assert!(render_plan(&steps).contains("--kubeconfig /k"));
        // No kubeconfig asked for: none is passed (cluster-ctl finds one by kubectl's rules).
        let found = plan(&args(&["--skip-host"]), &layout());
        assert!(
            !render_plan(&found).contains("--kubeconfig"),
            "{}",
            render_plan(&found)
        );
        assert!(found.iter().all(|s| !s.cmd.to_string().contains("''")));
    }

    #[test]
    fn state_resumes_and_restarts() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("lab-state.json");
        let mut s = State::load(&path).expect("fresh");
        for p in [Phase::Build, Phase::Host, Phase::InstallHami] {
            s.finished.insert(p.name().into(), 1.0);
        }
        s.save(&path).expect("save");
        let mut loaded = State::load(&path).expect("load");
        assert_eq!(loaded, s);
        loaded.restart_from(Phase::Host);
        assert_eq!(loaded.finished.keys().collect::<Vec<_>>(), vec!["build"]);
        std::fs::write(&path, "garbage").expect("write");
        assert!(
            State::load(&path)
                .expect_err("bad")
                .to_string()
                .contains("delete it")
        );
    }
}
