//! The pure planner: `Observation` + options → `Plan` (typed steps, each with why it runs).
//!
//! Why pure: every decision (toolkit before k3s, restart only when the config changed, which
//! containerd table, what to refuse) is unit-tested on fixtures without a host, and `--dry-run`
//! prints exactly what `apply` will do. A finished host gives an empty plan.

use serde::Serialize;

use crate::containerd::{self, Role};
use crate::k3s;
use crate::observe::{self, Driver, FileState, Observation};

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    /// Adds NVIDIA's apt repository (keyring + sources list).
    AddToolkitRepo { keyring: String, list: String },
    /// `apt-get install` of the toolkit packages (pinned when a version is given).
    InstallToolkit { packages: Vec<String> },
    /// Writes one file (rendered and validated before anything is written).
    WriteFile(FileChange),
    /// Runs the official k3s installer (it starts k3s).
    InstallK3s { version: Option<String> },
    /// `systemctl restart UNIT`; on a failed wait afterwards the backups are restored.
    RestartService { unit: String },
    /// Waits until k3s's node or containerd is ready.
    WaitReady { target: Readiness, timeout_s: u64 },
    /// Copies the admin kubeconfig to `~user/.kube/config` (0600, owned by the user).
    CopyKubeconfig {
        user: String,
        uid: u32,
        gid: u32,
        dest: String,
    },
}

/// What [`Step::WaitReady`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Readiness {
    K3sNode,
    Containerd,
}

/// How a written file is checked before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// k3s config.yaml: must parse as a YAML mapping.
    K3sYaml,
    /// A k3s containerd template: its TOML part must parse and redeclare no base table.
    K3sTemplate,
    /// `/etc/containerd/config.toml`: parsed, nvidia default in the right table, and loaded by
    /// the real `containerd` (`config dump`, with its drop-ins) when one is available.
    ContainerdRoot,
    /// A containerd drop-in: parsed; validated together with its root file.
    ContainerdDropIn,
    /// The NVIDIA Container Toolkit's config.toml (`harden`): parses, both settings in effect.
    ToolkitConfig,
}

/// A file write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// Host path.
    pub path: String,
    #[serde(skip)]
    pub before: Option<String>,
    #[serde(skip)]
    pub after: String,
    /// Mode for a new file (an existing file keeps its owner and mode).
    pub mode: u32,
    pub check: Check,
    /// What changes inside the file, one line each.
    pub changes: Vec<String>,
    /// Host path of the file really written when `path` is a symbolic link inside the root: the
    /// target is edited in place and the link is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// How the rendered file was checked before anything is written (filled in by
    /// [`crate::validate::validate_plan`]; `apply` refuses a file that was not validated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<crate::validate::Validation>,
}

impl FileChange {
    /// A change of `path` from `before` to `after` (mode for a new file, the check it needs).
    pub fn new(
        path: &str,
        before: Option<&FileState>,
        after: String,
        mode: u32,
        check: Check,
        changes: Vec<String>,
    ) -> Self {
        Self {
            path: path.to_owned(),
            before: before.map(|f| f.text.clone()),
            after,
            mode: before.map_or(mode, |f| f.mode),
            check,
            changes,
            link_target: before.and_then(|f| f.link_target.clone()),
            validation: None,
        }
    }
}

/// A step with the reason it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    #[serde(flatten)]
    pub step: Step,
    pub why: String,
}

/// Something that stops the plan from being applied, with its fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    pub problem: String,
    pub fix: String,
}

/// The plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub steps: Vec<PlannedStep>,
    pub warnings: Vec<String>,
    pub blockers: Vec<Blocker>,
}

impl Plan {
    fn step(&mut self, step: Step, why: impl Into<String>) {
        self.steps.push(PlannedStep {
            step,
            why: why.into(),
        });
    }

    fn block(&mut self, problem: impl Into<String>, fix: impl Into<String>) {
        self.blockers.push(Blocker {
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// Whether a file of this host path is written by the plan.
    pub fn writes(&self, path: &str) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(&s.step, Step::WriteFile(f) if f.path == path))
    }
}

/// Options of `install`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    pub tls_san: Vec<String>,
    pub kubeconfig_user: Option<String>,
    /// Debian version of the toolkit packages, e.g. `1.17.8-1`.
    pub toolkit_version: Option<String>,
    /// k3s version for the installer, e.g. `v1.33.5+k3s1`; `None` = the stable channel.
    pub k3s_version: Option<String>,
    pub node_label: String,
    /// The plan acts on the running system (root `/`): root is required, services are touched.
    pub system: bool,
    pub timeout_s: u64,
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self {
            tls_san: Vec::new(),
            kubeconfig_user: None,
            toolkit_version: None,
            k3s_version: None,
            node_label: "gpu=on".to_owned(),
            system: true,
            timeout_s: 300,
        }
    }
}

/// Problems that stop `install` on this host (shared with `preflight`).
pub fn install_blockers(obs: &Observation, system: bool) -> Vec<Blocker> {
    let mut out = Vec::new();
    if system && obs.euid != Some(0) {
        out.push(Blocker {
            problem: match obs.euid {
                Some(uid) => format!("running as uid {uid}, not root"),
                None => "could not tell whether this runs as root (`id -u` failed)".to_owned(),
            },
            fix: "run it with sudo: `sudo host-setup ...`".to_owned(),
        });
    }
    if !obs.apt {
        out.push(Blocker {
            problem: format!(
                "no apt-get: this host ({}) is not apt-based, and the toolkit is installed from NVIDIA's apt repository",
                obs.os_pretty_name.as_deref().unwrap_or("unknown OS")
            ),
            fix: "use Debian or Ubuntu, or install nvidia-container-toolkit by hand and run `host-setup set-default-runtime`".to_owned(),
        });
    }
    if let Driver::Missing { why } = &obs.driver {
        out.push(Blocker {
            problem: format!("no working NVIDIA driver ({why})"),
            fix: "install the NVIDIA driver (e.g. `apt-get install nvidia-driver` or the cloud image's driver), reboot, and check `nvidia-smi`".to_owned(),
        });
    }
    out
}

/// Warnings that do not block (MIG, cgroup v1, operator traces, docker, disk).
pub fn host_warnings(obs: &Observation) -> Vec<String> {
    let mut out = Vec::new();
    if let Driver::Ok { gpus, .. } = &obs.driver {
        for g in gpus
            .iter()
            .filter(|g| g.mig_mode.eq_ignore_ascii_case("Enabled"))
        {
            out.push(format!(
                "GPU {} ({}) is in MIG mode: HAMi injects no HAMi-core into MIG slices, so its memory limits do not apply; \
                 disable MIG (`nvidia-smi -i {} -mig 0`, then reset the GPU) for the isolation tests",
                g.index, g.name, g.index
            ));
        }
    }
    if !obs.cgroup_v2 {
        out.push("cgroup v2 not detected (/sys/fs/cgroup/cgroup.controllers missing); k3s works on v1, but current distros and HAMi are tested on v2".to_owned());
    }
    out.extend(obs.gpu_operator.iter().map(|t| {
        format!("{t}; a stale copy there makes k3s use it instead of /usr/bin (k3s#4391): remove it if the GPU Operator is gone")
    }));
    if obs.docker {
        out.push("docker is installed: its containerd.io ships `disabled_plugins = [\"cri\"]`; k3s uses its own containerd and is not affected".to_owned());
    }
    if let Some(mib) = obs.free_disk_mib
        && mib < 10 * 1024
    {
        out.push(format!(
            "only {mib} MiB free under /var/lib; k3s images and GPU images need about 10 GiB"
        ));
    }
    out
}

/// Blockers for files that exist but could not be read: nothing is planned over them.
fn unreadable_blockers(obs: &Observation) -> Vec<Blocker> {
    obs.unreadable
        .iter()
        .map(|u| Blocker {
            problem: u.reason(),
            fix: u.fix(),
        })
        .collect()
}

/// Plans `host-setup install`.
pub fn plan_install(obs: &Observation, opts: &InstallOptions) -> Plan {
    let mut plan = Plan {
        blockers: install_blockers(obs, opts.system),
        warnings: host_warnings(obs),
        ..Plan::default()
    };
    if !obs.unreadable.is_empty() {
        // A file that could not be read is never treated as absent: plan nothing at all.
        plan.blockers.extend(unreadable_blockers(obs));
        return plan;
    }

    // 1. The toolkit goes in BEFORE k3s: k3s detects runtimes only when it starts, and with
    //    default-runtime: nvidia it refuses to start when the runtime is missing (facts §0.2).
    let toolkit_ok = match (&obs.toolkit, &opts.toolkit_version) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(t), Some(want)) => t.version.as_deref() == Some(want.as_str()),
    };
    let toolkit_installed_now = !toolkit_ok;
    if !toolkit_ok {
        if !obs.toolkit_repo {
            plan.step(
                Step::AddToolkitRepo {
                    keyring: observe::TOOLKIT_KEYRING.to_owned(),
                    list: observe::TOOLKIT_LIST.to_owned(),
                },
                format!(
                    "{} is missing: the toolkit comes from NVIDIA's apt repository",
                    observe::TOOLKIT_LIST
                ),
            );
        }
        let pin = opts.toolkit_version.as_ref();
        let packages = [
            "nvidia-container-toolkit",
            "nvidia-container-toolkit-base",
            "libnvidia-container-tools",
            "libnvidia-container1",
        ]
        .iter()
        .map(|p| pin.map_or_else(|| (*p).to_owned(), |v| format!("{p}={v}")))
        .collect();
        let why = match &obs.toolkit {
            None => format!(
                "{} is missing; it must exist before k3s starts, because k3s looks for runtimes only at start and refuses to start when default-runtime nvidia is not found",
                observe::TOOLKIT_RUNTIME
            ),
            Some(t) => format!(
                "toolkit {} is installed but {} was asked for",
                t.version.as_deref().unwrap_or("(unknown version)"),
                pin.map_or("another version", String::as_str)
            ),
        };
        plan.step(Step::InstallToolkit { packages }, why);
    }

    // 2. k3s's config.yaml, merged key by key, written before k3s (re)starts.
    let k3s_version_wanted = opts.k3s_version.as_deref().and_then(k3s::parse_version);
    let k3s_version = obs
        .k3s
        .as_ref()
        .and_then(|k| k.version)
        .or(k3s_version_wanted);
    let generated_version = obs
        .k3s_generated
        .as_ref()
        .and_then(|f| containerd::file_version(&f.text, &f.path).ok().flatten());
    if let k3s::Method::Unsupported { reason } = k3s::choose_method(k3s_version, generated_version)
    {
        plan.block(reason, k3s::UPGRADE_FIX);
    }
    let mut sans = opts.tls_san.clone();
    if sans.is_empty() {
        match &obs.primary_address {
            Some(a) => sans.push(a.clone()),
            None => plan.warnings.push(
                "no primary address found (`hostname -I`), so no tls-san is added; pass --tls-san ADDRESS to reach the API from outside".to_owned(),
            ),
        }
    }
    let wanted = k3s::Wanted {
        default_runtime: Some(containerd::NVIDIA_RUNTIME.to_owned()),
        tls_san: sans,
        node_labels: vec![opts.node_label.clone()],
    };
    let config_changed = plan_k3s_config(obs, &wanted, &mut plan);

    // 3. k3s itself: install (starts it), or restart only when its inputs changed.
    let restart_needed = config_changed || (toolkit_installed_now && obs.k3s.is_some());
    match &obs.k3s {
        None => {
            plan.step(
                Step::InstallK3s {
                    version: opts.k3s_version.clone(),
                },
                "k3s is not installed; the official installer installs and starts it, reading the config.yaml written above on its first start",
            );
            plan.step(
                Step::WaitReady {
                    target: Readiness::K3sNode,
                    timeout_s: opts.timeout_s,
                },
                "the node must be Ready before the result can be verified",
            );
        }
        Some(_) if restart_needed => {
            let why = if config_changed {
                "k3s reads config.yaml and detects runtimes only when it starts, and its installer does not restart it for a config-only change"
            } else {
                "the toolkit was just installed; k3s detects the nvidia runtime only when it starts"
            };
            plan.step(
                Step::RestartService {
                    unit: "k3s".to_owned(),
                },
                why,
            );
            plan.step(
                Step::WaitReady {
                    target: Readiness::K3sNode,
                    timeout_s: opts.timeout_s,
                },
                "if the node is not Ready in time, the backups are restored and k3s restarted",
            );
        }
        Some(_) => {
            if let Some(generated) = &obs.k3s_generated
                && let Err(e) = k3s::check_generated(&generated.text)
            {
                plan.step(
                    Step::RestartService {
                        unit: "k3s".to_owned(),
                    },
                    format!("config.yaml is already right but k3s has not applied it yet ({e})"),
                );
                plan.step(
                    Step::WaitReady {
                        target: Readiness::K3sNode,
                        timeout_s: opts.timeout_s,
                    },
                    "if the node is not Ready in time, the backups are restored and k3s restarted",
                );
            }
        }
    }

    // 4. The admin kubeconfig for a non-root user.
    if let Some(name) = &opts.kubeconfig_user {
        match &obs.kubeconfig_user {
            None => plan.block(
                format!("--kubeconfig-user {name}: no such user in /etc/passwd"),
                "create the user first (`adduser NAME`) or pass an existing one",
            ),
            Some(u) if !u.in_sync => plan.step(
                Step::CopyKubeconfig {
                    user: u.name.clone(),
                    uid: u.uid,
                    gid: u.gid,
                    dest: format!("{}/.kube/config", u.home.trim_end_matches('/')),
                },
                format!(
                    "{} stays 0600 (root only); {} gets a private copy (0600, owned by them) instead of a world-readable file",
                    k3s::KUBECONFIG, u.name
                ),
            ),
            Some(_) => {}
        }
    }
    if let Some(mode) = &obs.k3s_env_kubeconfig_mode {
        plan.warnings.push(format!(
            "{} sets K3S_KUBECONFIG_MODE={mode}, which overrides config.yaml; remove that line (and use --kubeconfig-user)",
            k3s::SERVICE_ENV
        ));
    }
    plan
}

/// Adds the config.yaml write (and template / drop-in checks); returns whether it changes.
fn plan_k3s_config(obs: &Observation, wanted: &k3s::Wanted, plan: &mut Plan) -> bool {
    let existing = obs.k3s_config.as_ref().map(|f| f.text.as_str());
    let mut changed = false;
    match k3s::merge_config_yaml(existing, wanted) {
        Err(e) => plan.block(e.problem(), e.fix()),
        Ok(merged) if !merged.changes.is_empty() => {
            let mut changes = merged.changes;
            if merged.reserialised {
                changes.push("the file could not be patched line by line, so it was re-serialised: its comments are dropped (a backup is kept)".to_owned());
            }
            plan.step(
                Step::WriteFile(FileChange::new(
                    k3s::CONFIG_YAML,
                    obs.k3s_config.as_ref(),
                    merged.text,
                    0o600,
                    Check::K3sYaml,
                    changes,
                )),
                "k3s settings live in config.yaml (merged key by key, never appended), so a re-run of the installer keeps them",
            );
            changed = true;
        }
        Ok(_) => {}
    }
    let dropins: Vec<(String, String)> = obs
        .k3s_config_dropins
        .iter()
        .map(|f| (f.path.clone(), f.text.clone()))
        .collect();
    for c in k3s::dropin_conflicts(&dropins, wanted) {
        plan.block(c.problem, c.fix);
    }
    for t in [&obs.k3s_template_v3, &obs.k3s_template_v2]
        .into_iter()
        .flatten()
    {
        for c in k3s::template_conflicts(&t.path, &t.text, wanted.default_runtime.is_some()) {
            plan.block(c.problem, c.fix);
        }
    }
    changed
}

/// Which runtime `set-default-runtime` configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    K3s,
    Containerd,
}

/// The target when `--runtime` is not given: k3s when it is installed, else containerd.
pub fn auto_target(obs: &Observation) -> Target {
    if obs.k3s.is_some() {
        Target::K3s
    } else {
        Target::Containerd
    }
}

/// Plans `host-setup set-default-runtime`.
pub fn plan_set_default_runtime(
    obs: &Observation,
    target: Target,
    system: bool,
    timeout_s: u64,
) -> Plan {
    let mut plan = Plan::default();
    if system && obs.euid != Some(0) {
        plan.block(
            "not running as root",
            "run it with sudo: `sudo host-setup set-default-runtime ...`",
        );
    }
    if !obs.unreadable.is_empty() {
        plan.blockers.extend(unreadable_blockers(obs));
        return plan;
    }
    match target {
        Target::K3s => plan_k3s_default(obs, &mut plan, timeout_s),
        Target::Containerd => plan_containerd_default(obs, &mut plan, system, timeout_s),
    }
    plan
}

fn plan_k3s_default(obs: &Observation, plan: &mut Plan, timeout_s: u64) {
    let Some(install) = &obs.k3s else {
        plan.block(
            format!("k3s is not installed ({} not found)", k3s::BINARY),
            "run `host-setup install`, or `--runtime containerd` for a plain containerd host",
        );
        return;
    };
    if obs.toolkit.is_none() {
        plan.block(
            format!("{} is missing: with default-runtime nvidia, k3s refuses to start (`default runtime nvidia was not found`)", observe::TOOLKIT_RUNTIME),
            "install the NVIDIA Container Toolkit first (`host-setup install` does it)",
        );
    }
    let generated_version = obs
        .k3s_generated
        .as_ref()
        .and_then(|f| containerd::file_version(&f.text, &f.path).ok().flatten());
    let mut changed = false;
    match k3s::choose_method(install.version, generated_version) {
        k3s::Method::Unsupported { reason } => {
            plan.block(reason, k3s::UPGRADE_FIX);
            return;
        }
        k3s::Method::ConfigYaml => {
            let wanted = k3s::Wanted {
                default_runtime: Some(containerd::NVIDIA_RUNTIME.to_owned()),
                ..k3s::Wanted::default()
            };
            changed = plan_k3s_config(obs, &wanted, plan);
        }
        k3s::Method::TemplateV3 => {
            let already = obs
                .k3s_template_v3
                .as_ref()
                .is_some_and(|t| t.text == k3s::template_v3());
            if let Some(t) = obs.k3s_template_v3.as_ref().filter(|_| !already) {
                plan.block(
                    format!("{} exists with your own content", t.path),
                    "add `[plugins.'io.containerd.cri.v1.runtime'.containerd] default_runtime_name = \"nvidia\"` to it by hand (host-setup does not rewrite user templates)",
                );
            } else if !already {
                plan.step(
                    Step::WriteFile(FileChange::new(
                        k3s::TEMPLATE_V3,
                        None,
                        k3s::template_v3(),
                        0o644,
                        Check::K3sTemplate,
                        vec!["base template plus the CRI containerd table with default_runtime_name = \"nvidia\" (the v3 base emits that table only with --default-runtime, so nothing is redeclared)".to_owned()],
                    )),
                    "this k3s has no default-runtime option; a base-extending config-v3.toml.tmpl is the documented fallback",
                );
                changed = true;
            }
        }
    }
    let stale = obs
        .k3s_generated
        .as_ref()
        .is_some_and(|g| k3s::check_generated(&g.text).is_err());
    if changed || stale {
        plan.step(
            Step::RestartService {
                unit: "k3s".to_owned(),
            },
            if changed {
                "k3s renders its containerd config and detects runtimes only when it starts"
            } else {
                "the generated containerd config does not have nvidia as default yet; k3s re-renders it on start"
            },
        );
        plan.step(
            Step::WaitReady {
                target: Readiness::K3sNode,
                timeout_s,
            },
            "if the node is not Ready in time, the backups are restored and k3s restarted",
        );
    }
}

fn plan_containerd_default(obs: &Observation, plan: &mut Plan, system: bool, timeout_s: u64) {
    if obs.k3s.is_some() {
        plan.warnings.push(format!(
            "k3s is installed: it runs its own containerd and ignores {} (use --runtime k3s)",
            observe::CONTAINERD_CONFIG
        ));
    }
    if obs.toolkit.is_none() {
        plan.warnings.push(format!(
            "{} is missing: containerd accepts the config, but pods fail until the toolkit is installed",
            observe::TOOLKIT_RUNTIME
        ));
    }
    let version_if_missing = match obs.containerd.as_ref().and_then(|c| c.major) {
        Some(m) if m >= 2 => 3,
        _ => 2,
    };
    let root_text = obs
        .containerd_config
        .as_ref()
        .map_or("", |f| f.text.as_str());
    let edited = match containerd::set_nvidia_default(
        root_text,
        observe::CONTAINERD_CONFIG,
        Role::Root { version_if_missing },
        containerd::NVIDIA_BINARY,
    ) {
        Ok(e) => e,
        Err(e) => {
            plan.block(e.problem(), e.fix());
            return;
        }
    };
    let mut changed = false;
    if edited.changed(root_text) || obs.containerd_config.is_none() {
        plan.step(
            Step::WriteFile(FileChange::new(
                observe::CONTAINERD_CONFIG,
                obs.containerd_config.as_ref(),
                edited.text,
                0o644,
                Check::ContainerdRoot,
                edited.changes,
            )),
            "containerd's CRI plugin uses default_runtime_name for every pod without runtimeClassName (all HAMi pods)",
        );
        changed = true;
    }
    for dropin in &obs.containerd_imports {
        changed |= plan_dropin(dropin, plan);
    }
    if changed && system && obs.containerd.is_none() {
        plan.warnings.push(
            "containerd is not installed: the config is written for it, and nothing is restarted"
                .to_owned(),
        );
    } else if changed {
        plan.step(
            Step::RestartService {
                unit: "containerd".to_owned(),
            },
            "containerd reads its config only when it starts",
        );
        plan.step(
            Step::WaitReady {
                target: Readiness::Containerd,
                timeout_s,
            },
            "if containerd is not active in time, the backups are restored and it is restarted",
        );
    }
}

fn plan_dropin(dropin: &FileState, plan: &mut Plan) -> bool {
    match containerd::set_nvidia_default(
        &dropin.text,
        &dropin.path,
        Role::DropIn,
        containerd::NVIDIA_BINARY,
    ) {
        Err(e) => {
            plan.block(
                e.problem(),
                format!(
                    "{} (or remove the drop-in {})",
                    e.fix().trim_end_matches(", then run again"),
                    dropin.path
                ) + ", then run again",
            );
            false
        }
        Ok(e) if e.changed(&dropin.text) => {
            plan.step(
                Step::WriteFile(FileChange::new(
                    &dropin.path,
                    Some(dropin),
                    e.text,
                    dropin.mode,
                    Check::ContainerdDropIn,
                    e.changes,
                )),
                "this imported drop-in declares the CRI plugin and is read after config.toml, so it overrides it (containerd 1.x replaces the whole section, 2.x merges and the later value wins)",
            );
            true
        }
        Ok(_) => false,
    }
}
