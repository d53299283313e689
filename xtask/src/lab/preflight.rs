//! The lab's preflight: every prerequisite of every phase the run will reach, checked before
//! anything on the host changes, each problem with the fix that works on the distribution found.
//!
//! [`observe`] reads the machine (read-only: `/proc`, `/etc/os-release`, `statvfs`, a few
//! `--version` calls and two HTTPS probes, all through `lab_runner` or plain reads) into [`Facts`];
//! [`preflight`] is a pure function of the facts, the arguments and the phases that will run, so
//! every case is a unit test. What each phase needs:
//!
//! | phase | needs |
//! |---|---|
//! | all | Linux; an NVIDIA driver that reaches a non-MIG GPU |
//! | build | Rust ≥ the workspace's `rust-version`; a C linker (`cc`); `objdump`; zig + cargo-zigbuild, or Python 3 with venv to install them; disk for `target/` |
//! | host | root; apt; `curl` and `gpg`; disk for k3s and the images; k3s's ports free; NVIDIA's toolkit apt source and the k3s installer reachable (unless installed); the `nvidia` and `nvidia_uvm` modules |
//! | install-hami | helm, when it will be used (not on the k3s the host phase makes: k3s's HelmChart path needs none); with `--skip-host` a kubeconfig |
//! | exercises | the `nvidia` and `nvidia_uvm` modules |

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lab_runner::{Cmd, Runner};

use super::{Installer, LabArgs, Phase};
use crate::dist::zigbuild::{self, ZigFacts, ZigTools};

/// The workspace's minimum Rust (root `Cargo.toml`, `rust-version`, inherited by xtask).
pub const MIN_RUST: &str = env!("CARGO_PKG_RUST_VERSION");
/// Free space the build phase needs on the filesystem of `target/`: in a fresh Debian 12 root
/// the release tools, the portable gpu-probe, the zig environment and xtask took 1.3 GiB (plus
/// the crate downloads in ~/.cargo); with room for a rebuild.
pub const BUILD_BYTES: u64 = 4 << 30;
/// Free space k3s and the images need under /var/lib/rancher (k3s's own images, HAMi's, the CUDA
/// base image of the lab pods), as host-setup says too.
pub const K3S_BYTES: u64 = 10 << 30;
/// Where k3s keeps its data and images.
pub const K3S_DATA: &str = "/var/lib/rancher";
/// TCP ports a single-node k3s server listens on: 6443 API (supervisor), 6444 kube-apiserver
/// behind it, 10250 kubelet, 10248 kubelet health, 10249/10256 kube-proxy, 10257
/// controller-manager, 10259 scheduler, 10010 containerd's stream server.
pub const K3S_TCP_PORTS: [u16; 9] = [6443, 6444, 10250, 10248, 10249, 10256, 10257, 10259, 10010];
/// UDP: flannel's VXLAN.
pub const K3S_UDP_PORTS: [u16; 1] = [8472];
/// What the host phase downloads from, with the problem id when it cannot be reached. The toolkit
/// URL is host-setup's `TOOLKIT_KEY_URL` and the installer its `K3S_INSTALLER_URL` (a test keeps
/// them equal).
pub const NETWORK_SOURCES: [(&str, &str, &str); 2] = [
    (
        "toolkit-source-unreachable",
        "NVIDIA Container Toolkit apt source",
        "https://nvidia.github.io/libnvidia-container/gpgkey",
    ),
    (
        "k3s-installer-unreachable",
        "k3s installer",
        "https://get.k3s.io",
    ),
];
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// A problem that stops the lab at preflight, with its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Stable id, printed in brackets (tests and the fresh-machine test match on it).
    pub id: &'static str,
    pub what: String,
    pub fix: String,
}

/// Distribution families, as far as the fixes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// Debian, Ubuntu and their derivatives (apt).
    Debian,
    Fedora,
    Arch,
    Suse,
    #[default]
    Unknown,
}

/// `/etc/os-release`, the fields that matter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Distro {
    pub id: String,
    pub id_like: Vec<String>,
    pub pretty_name: String,
}

impl Distro {
    /// Parses os-release text (`KEY=value`, values optionally quoted).
    pub fn parse(text: &str) -> Self {
        let mut d = Self::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').trim_matches('\'').to_owned();
            match k.trim() {
                "ID" => d.id = v.to_ascii_lowercase(),
                "ID_LIKE" => {
                    d.id_like = v.split_whitespace().map(str::to_ascii_lowercase).collect();
                }
                "PRETTY_NAME" => d.pretty_name = v,
                _ => {}
            }
        }
        d
    }

    /// This machine's (an empty one when the file cannot be read).
    pub fn read() -> Self {
        std::fs::read_to_string("/etc/os-release")
            .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
            .map(|t| Self::parse(&t))
            .unwrap_or_default()
    }

    pub fn family(&self) -> Family {
        let is = |name: &str| self.id == name || self.id_like.iter().any(|l| l == name);
        if is("debian") || is("ubuntu") {
            Family::Debian
        } else if is("fedora") || is("rhel") || is("centos") {
            Family::Fedora
        } else if is("arch") {
            Family::Arch
        } else if is("suse") || self.id.starts_with("opensuse") || self.id == "sles" {
            Family::Suse
        } else {
            Family::Unknown
        }
    }
}

/// Free space of a filesystem, found through a path on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The path asked about (the check ran on its nearest existing ancestor).
    pub path: PathBuf,
    /// Device id, so two paths on one filesystem add up their needs.
    pub dev: u64,
    pub free_bytes: u64,
}

/// The facts preflight decides on (gathered by [`observe`], fixed in tests).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub os_linux: bool,
    pub root: bool,
    pub distro: Distro,
    pub nvidia_smi: Option<Result<String, String>>,
    pub kubeconfig_found: bool,
    /// `rustc --version`, when rustc answered.
    pub rustc: Option<String>,
    pub rustup: bool,
    /// The C compiler Rust links with.
    pub cc: bool,
    pub objdump: bool,
    pub zig: ZigFacts,
    pub helm: bool,
    pub apt: bool,
    pub curl: bool,
    pub gpg: bool,
    pub build_disk: Option<Disk>,
    pub k3s_disk: Option<Disk>,
    pub tcp_listening: BTreeSet<u16>,
    pub udp_bound: BTreeSet<u16>,
    /// k3s runs: the ports it holds are its own.
    pub k3s_active: bool,
    /// Loaded kernel modules (`/proc/modules`, plus built-ins seen in `/sys/module`).
    pub modules: BTreeSet<String>,
    /// Probe results of [`NETWORK_SOURCES`] by id: only those the host phase will download from
    /// (not the toolkit's when `nvidia-ctk` is installed, not the installer's when `k3s` is).
    pub sources: Vec<(&'static str, Result<(), String>)>,
}

/// The preflight's look at the GPUs: name, memory and MIG mode, one line each.
pub fn gpu_query() -> Cmd {
    Cmd::new("nvidia-smi").args([
        "--query-gpu=name,memory.total,mig.mode.current",
        "--format=csv,noheader",
    ])
}

/// `rustc 1.89.0 (…)` / `1.89` → (1, 89, 0).
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let word = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut parts = word.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Ports in the LISTEN state (TCP, `st` 0A) or bound (UDP, `st` 07) in `/proc/net/{tcp,udp}[6]`.
pub fn bound_ports(proc_net: &str, udp: bool) -> BTreeSet<u16> {
    let state = if udp { "07" } else { "0A" };
    proc_net
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let st = f.nth(1)?;
            (st == state).then_some(())?;
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

/// Module names from `/proc/modules`.
pub fn module_names(proc_modules: &str) -> BTreeSet<String> {
    proc_modules
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Free space of the filesystem holding `path` (its nearest existing ancestor).
pub fn disk(path: &Path) -> Option<Disk> {
    use std::os::unix::fs::MetadataExt as _;
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value for statvfs(2) to overwrite.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &raw mut st) } != 0 {
        return None;
    }
    // fsblkcnt_t and c_ulong are 32 bits on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let free_bytes = u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize));
    Some(Disk {
        path: path.to_path_buf(),
        dev: std::fs::metadata(existing).ok()?.dev(),
        free_bytes,
    })
}

/// Reads the machine. Read-only; the network is asked only about sources the host phase will use.
pub fn observe(runner: &dyn Runner, args: &LabArgs, root: &Path, phases: &[Phase]) -> Facts {
    let nvidia_smi = runner.exists("nvidia-smi").then(|| {
        match runner.run(&gpu_query().timeout(Duration::from_secs(60))) {
            Ok(o) if o.success() => Ok(o.stdout),
            Ok(o) => Err(format!("exit {:?}: {}", o.code, o.stderr.trim())),
            Err(e) => Err(e.to_string()),
        }
    });
    // kubectl's rules, as cluster-ctl applies them (one copy: cluster_ctl::kubeconfig).
    let kubeconfig_found = cluster_ctl::kubeconfig::discover(
        args.kubeconfig.as_deref(),
        &cluster_ctl::kubeconfig::Environment::from_process(),
    )
    .usable();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut tcp = bound_ports(&read("/proc/net/tcp"), false);
    tcp.extend(bound_ports(&read("/proc/net/tcp6"), false));
    let mut udp = bound_ports(&read("/proc/net/udp"), true);
    udp.extend(bound_ports(&read("/proc/net/udp6"), true));
    let mut modules = module_names(&read("/proc/modules"));
    for m in ["nvidia", "nvidia_uvm"] {
        if Path::new("/sys/module").join(m).exists() {
            modules.insert(m.to_owned());
        }
    }
    let k3s_installed = runner.exists("k3s");
    let toolkit_installed = runner.exists("nvidia-ctk");
    let curl = runner.exists("curl");
    let mut sources = Vec::new();
    if curl && phases.contains(&Phase::Host) && !args.skip_host {
        for (id, _, url) in NETWORK_SOURCES {
            let installed = match id {
                "toolkit-source-unreachable" => toolkit_installed,
                _ => k3s_installed,
            };
            if !installed {
                sources.push((id, probe(runner, url)));
            }
        }
    }
    Facts {
        os_linux: cfg!(target_os = "linux"),
        // SAFETY: geteuid has no preconditions.
        root: unsafe { libc::geteuid() } == 0,
        distro: Distro::read(),
        nvidia_smi,
        kubeconfig_found,
        rustc: runner
            .run(
                &Cmd::new("rustc")
                    .arg("--version")
                    .timeout(Duration::from_secs(30)),
            )
            .ok()
            .filter(lab_runner::Output::success)
            .map(|o| o.stdout.trim().to_owned()),
        rustup: runner.exists("rustup"),
        cc: runner.exists("cc"),
        objdump: runner.exists("objdump"),
        zig: zigbuild::observe(runner, root),
        helm: runner.exists("helm"),
        apt: runner.exists("apt-get"),
        curl,
        gpg: runner.exists("gpg"),
        build_disk: disk(&root.join("target")),
        k3s_disk: disk(Path::new(K3S_DATA)),
        tcp_listening: tcp,
        udp_bound: udp,
        k3s_active: runner.exists("systemctl")
            && runner
                .run(&Cmd::new("systemctl").args(["is-active", "--quiet", "k3s"]))
                .is_ok_and(|o| o.success()),
        modules,
        sources,
    }
}

/// One HTTPS GET under a deadline; the error says what curl said.
pub fn probe(runner: &dyn Runner, url: &str) -> Result<(), String> {
    let cmd = Cmd::new("curl")
        .args(["-fsS", "-o", "/dev/null", "--max-time", "15", url])
        .timeout(PROBE_TIMEOUT);
    match runner.run(&cmd) {
        Ok(o) if o.success() => Ok(()),
        Ok(o) => Err(o.stderr.trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// The install command of the family's package manager for `pkgs` (Debian names).
fn install_fix(family: Family, debian: &str, fedora: &str, arch: &str, what: &str) -> String {
    match family {
        Family::Debian => format!("`sudo apt-get install {debian}`"),
        Family::Fedora => format!("`sudo dnf install {fedora}`"),
        Family::Arch => format!("`sudo pacman -S {arch}`"),
        Family::Suse => format!("`sudo zypper install {fedora}`"),
        Family::Unknown => format!("install {what} with your package manager"),
    }
}

/// Whether install-hami will run helm: not on the k3s the host phase makes (k3s's HelmChart
/// path), nor with `--installer helm-chart`; with `--skip-host` and `auto` it may, so helm is
/// asked for (with the k3s way out in the fix).
pub fn helm_needed(args: &LabArgs) -> bool {
    match args.installer {
        Installer::Helm => true,
        Installer::HelmChart => false,
        Installer::Auto => args.skip_host,
    }
}

/// Pure: what stops the lab, each with its fix. `phases` are the phases this run will reach.
pub fn preflight(facts: &Facts, args: &LabArgs, phases: &[Phase]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut push = |id, what: String, fix: String| problems.push(Problem { id, what, fix });
    let family = facts.distro.family();
    let will = |p: Phase| phases.contains(&p);
    let host = will(Phase::Host) && !args.skip_host;
    if !facts.os_linux {
        push(
            "not-linux",
            "this is not Linux".into(),
            "run the lab on the Linux GPU VM".into(),
        );
    }
    let driver_ok = match &facts.nvidia_smi {
        None => {
            push(
                "no-driver",
                "no NVIDIA driver: nvidia-smi is not installed".into(),
                "run the lab on a GPU VM with the NVIDIA driver installed (e.g. `apt-get install nvidia-driver-<version>` on Ubuntu, then reboot); `cargo xtask lab --dry-run` shows the plan anywhere".into(),
            );
            false
        }
        Some(Err(e)) => {
            push(
                "driver-fails",
                format!("nvidia-smi fails, so the driver cannot reach a GPU: {e}"),
                "check `nvidia-smi` by hand; reboot after a driver install, or reinstall the driver matching the kernel".into(),
            );
            false
        }
        Some(Ok(out)) if out.trim().is_empty() => {
            push(
                "no-gpu",
                "nvidia-smi lists no GPU".into(),
                "attach a GPU to the VM (or pass it through) and check `nvidia-smi -L`".into(),
            );
            false
        }
        Some(Ok(out)) => {
            if out.lines().any(|l| l.trim_end().ends_with("Enabled")) {
                push(
                    "mig",
                    "a GPU is in MIG mode: HAMi injects no HAMi-core there, so the memory slices of this lab do not apply".into(),
                    "disable MIG (`nvidia-smi -i <gpu> -mig 0`, then reset or reboot) or run the lab on a non-MIG GPU".into(),
                );
            }
            true
        }
    };
    if host && !facts.root {
        push(
            "not-root",
            "host-setup changes the host (toolkit, k3s, containerd) and needs root".into(),
            "run `sudo -E env PATH=$PATH cargo xtask lab`, or `cargo xtask lab --skip-host --kubeconfig <file>` when the cluster exists".into(),
        );
    }
    if will(Phase::Build) {
        let rustup_fix = if facts.rustup {
            "`rustup update stable`".to_owned()
        } else {
            "install Rust with rustup (the distribution's rustc is usually older): `curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh`, then open a new shell".to_owned()
        };
        match facts.rustc.as_deref().map(|v| (v, parse_version(v))) {
            None => push(
                "no-rust",
                "rustc does not answer: the build phase compiles the tools".into(),
                rustup_fix,
            ),
            Some((v, Some(have))) if parse_version(MIN_RUST).is_some_and(|min| have < min) => {
                push(
                    "rust-too-old",
                    format!("{v} is older than Rust {MIN_RUST}, the workspace's minimum"),
                    rustup_fix,
                );
            }
            Some(_) => {}
        }
        if !facts.cc {
            push(
                "no-linker",
                "no C compiler (`cc`): Rust links the tools with it".into(),
                install_fix(family, "build-essential", "gcc", "base-devel", "gcc"),
            );
        }
        if !facts.objdump {
            push(
                "no-objdump",
                "`objdump` is missing: the build checks the portable binaries' GLIBC versions with it".into(),
                install_fix(family, "binutils", "binutils", "binutils", "binutils"),
            );
        }
        if let ZigTools::Missing { python3 } = zigbuild::decide(&facts.zig) {
            let (id, what) = if python3 {
                (
                    "no-python3-venv",
                    "Python's venv module is missing (Debian/Ubuntu: package python3-venv): zig and cargo-zigbuild, which link gpu-probe against glibc 2.28, are installed into a virtual environment with it",
                )
            } else {
                (
                    "no-python3",
                    "python3 is missing: zig and cargo-zigbuild, which link gpu-probe against glibc 2.28, are installed into a virtual environment with it",
                )
            };
            push(id, what.into(), zigbuild::missing_fix(python3, family));
        }
    }
    // Disk: both needs on one filesystem add up.
    let mut needs: Vec<(&Disk, u64, &str)> = Vec::new();
    if will(Phase::Build)
        && let Some(d) = &facts.build_disk
    {
        needs.push((d, BUILD_BYTES, "the build"));
    }
    if host && let Some(d) = &facts.k3s_disk {
        needs.push((d, K3S_BYTES, "k3s and the images"));
    }
    let devs: BTreeSet<u64> = needs.iter().map(|(d, _, _)| d.dev).collect();
    for dev in devs {
        let on: Vec<&(&Disk, u64, &str)> = needs.iter().filter(|(d, _, _)| d.dev == dev).collect();
        let need: u64 = on.iter().map(|(_, n, _)| n).sum();
        let free = on[0].0.free_bytes;
        if free < need {
            let whats: Vec<String> = on
                .iter()
                .map(|(d, n, w)| format!("{w} {} ({})", gib(*n), d.path.display()))
                .collect();
            push(
                "disk",
                format!(
                    "{} free on the filesystem of {}, but {} is needed: {}",
                    gib(free),
                    on[0].0.path.display(),
                    gib(need),
                    whats.join(", ")
                ),
                "free space there or grow the disk (`df -h` shows it)".into(),
            );
        }
    }
    if host {
        if !facts.apt {
            push(
                "not-apt",
                format!(
                    "no apt-get: this host ({}) is not apt-based, and host-setup installs the NVIDIA Container Toolkit from NVIDIA's apt repository",
                    if facts.distro.pretty_name.is_empty() {
                        "unknown OS"
                    } else {
                        &facts.distro.pretty_name
                    }
                ),
                "use Debian or Ubuntu, or install nvidia-container-toolkit by hand and run `host-setup set-default-runtime`".into(),
            );
        }
        let missing: Vec<&str> = [("curl", facts.curl), ("gpg", facts.gpg)]
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            push(
                "no-download-tools",
                format!(
                    "{} missing: host-setup downloads NVIDIA's apt key and the k3s installer with curl and unpacks the key with gpg",
                    missing.join(" and ")
                ),
                install_fix(
                    family,
                    "curl ca-certificates gnupg",
                    "curl gnupg2",
                    "curl gnupg",
                    "curl and gnupg",
                ),
            );
        }
        if !facts.k3s_active {
            let busy: Vec<String> = K3S_TCP_PORTS
                .iter()
                .filter(|p| facts.tcp_listening.contains(p))
                .map(|p| format!("{p}/tcp"))
                .chain(
                    K3S_UDP_PORTS
                        .iter()
                        .filter(|p| facts.udp_bound.contains(p))
                        .map(|p| format!("{p}/udp")),
                )
                .collect();
            if !busy.is_empty() {
                push(
                    "ports-busy",
                    format!(
                        "k3s is not running, but ports it needs are taken: {}",
                        busy.join(", ")
                    ),
                    "stop what holds them (`sudo ss -ltnup` shows the programs), e.g. another Kubernetes".into(),
                );
            }
        }
        for (id, result) in &facts.sources {
            if let Err(e) = result
                && let Some((_, name, url)) = NETWORK_SOURCES.iter().find(|(i, _, _)| i == id)
            {
                push(
                    id,
                    format!("the {name} cannot be reached ({url}): {e}"),
                    format!(
                        "the host phase downloads from it: check DNS, the firewall or the proxy (`curl -fsSI {url}`; behind a proxy, export https_proxy: `sudo -E` passes it on)"
                    ),
                );
            }
        }
    }
    if (host || will(Phase::Exercises)) && driver_ok {
        for (id, m) in [
            ("module-nvidia", "nvidia"),
            ("module-nvidia-uvm", "nvidia_uvm"),
        ] {
            if !facts.modules.contains(m) {
                push(
                    id,
                    format!("kernel module {m} is not loaded: CUDA in the lab pods needs it"),
                    format!(
                        "`sudo modprobe {m}`; to load it at every boot: `echo {m} | sudo tee /etc/modules-load.d/{m}.conf`"
                    ),
                );
            }
        }
    }
    if will(Phase::InstallHami) && helm_needed(args) && !facts.helm {
        push(
            "no-helm",
            "helm is missing: install-hami installs HAMi with it on this cluster".into(),
            format!(
                "on a k3s cluster pass `--installer helm-chart` (k3s's helm controller installs the chart, no helm binary); otherwise install helm 3 or 4: https://helm.sh/docs/intro/install/{}",
                if family == Family::Debian {
                    " (Debian/Ubuntu: the `helm` apt repository on that page, or its install script)"
                } else {
                    ""
                }
            ),
        );
    }
    if args.skip_host && !facts.kubeconfig_found {
        push(
            "no-kubeconfig",
            "--skip-host needs a cluster, but no kubeconfig was found".into(),
            "pass --kubeconfig <file> or set KUBECONFIG".into(),
        );
    }
    problems
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::lab::tests::args;

    /// A GPU VM where everything is in place.
    pub(crate) fn ready_gpu_host() -> Facts {
        Facts {
            os_linux: true,
            root: true,
            distro: Distro::parse(
                "ID=ubuntu\nID_LIKE=debian\nPRETTY_NAME=\"Ubuntu 24.04.3 LTS\"\n",
            ),
            nvidia_smi: Some(Ok("NVIDIA L4, 23034 MiB, [N/A]\n".into())),
            kubeconfig_found: true,
            rustc: Some("rustc 1.90.0 (1159e78c4 2025-09-14)".into()),
            rustup: true,
            cc: true,
            objdump: true,
            zig: ZigFacts {
                python3: true,
                python_venv: true,
                ..ZigFacts::default()
            },
            helm: false,
            apt: true,
            curl: true,
            gpg: true,
            build_disk: Some(Disk {
                path: "/home/u/lab/target".into(),
                dev: 1,
                free_bytes: 100 << 30,
            }),
            k3s_disk: Some(Disk {
                path: K3S_DATA.into(),
                dev: 1,
                free_bytes: 100 << 30,
            }),
            tcp_listening: [22].into(),
            udp_bound: BTreeSet::new(),
            k3s_active: false,
            modules: ["nvidia".to_owned(), "nvidia_uvm".to_owned()].into(),
            sources: vec![
                ("toolkit-source-unreachable", Ok(())),
                ("k3s-installer-unreachable", Ok(())),
            ],
        }
    }

    fn all_phases() -> Vec<Phase> {
        Phase::ALL
            .into_iter()
            .filter(|p| *p != Phase::Preflight)
            .collect()
    }

    fn ids(facts: &Facts, extra: &[&str], phases: &[Phase]) -> Vec<&'static str> {
        preflight(facts, &args(extra), phases)
            .iter()
            .map(|p| p.id)
            .collect()
    }

    #[test]
    fn a_ready_gpu_host_passes_without_helm() {
        assert_eq!(
            ids(&ready_gpu_host(), &[], &all_phases()),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn no_driver_is_the_only_problem_of_a_fresh_machine_set_up_by_the_readme() {
        let facts = Facts {
            nvidia_smi: None,
            modules: BTreeSet::new(),
            ..ready_gpu_host()
        };
        let problems = preflight(&facts, &args(&[]), &all_phases());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].id, "no-driver");
        assert!(problems[0].fix.contains("--dry-run"));
    }

    #[test]
    fn rust_is_checked_against_the_workspace_minimum() {
        assert_eq!(parse_version(MIN_RUST), Some((1, 89, 0)));
        assert_eq!(
            parse_version("rustc 1.75.0 (82e1608df 2023-12-21) (built from a source tarball)"),
            Some((1, 75, 0))
        );
        assert_eq!(
            parse_version("rustc 1.91.0-nightly (abc 2025-08-01)"),
            Some((1, 91, 0))
        );
        assert_eq!(parse_version("garbage"), None);
        let old = Facts {
            rustc: Some("rustc 1.75.0 (82e1608df 2023-12-21) (built from a source tarball)".into()),
            rustup: false,
            ..ready_gpu_host()
        };
        let p = preflight(&old, &args(&[]), &all_phases());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].id, "rust-too-old");
        assert!(p[0].what.contains("1.89"), "{}", p[0].what);
        assert!(p[0].fix.contains("sh.rustup.rs"), "{}", p[0].fix);
        let with_rustup = Facts {
            rustup: true,
            ..old
        };
        assert!(
            preflight(&with_rustup, &args(&[]), &all_phases())[0]
                .fix
                .contains("rustup update stable")
        );
        let none = Facts {
            rustc: None,
            ..ready_gpu_host()
        };
        assert_eq!(ids(&none, &[], &all_phases()), ["no-rust"]);
        // Not building (the build phase is done): not asked.
        assert_eq!(
            ids(&none, &[], &[Phase::Host, Phase::InstallHami]),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn build_tools_name_the_package_of_the_distribution() {
        let bare = Facts {
            cc: false,
            objdump: false,
            zig: ZigFacts {
                python3: true,
                ..ZigFacts::default()
            },
            ..ready_gpu_host()
        };
        let p = preflight(&bare, &args(&[]), &all_phases());
        let by = |id: &str| {
            p.iter()
                .find(|x| x.id == id)
                .map(|x| x.fix.clone())
                .unwrap_or_default()
        };
        assert!(
            by("no-linker").contains("apt-get install build-essential"),
            "{p:?}"
        );
        assert!(
            by("no-objdump").contains("apt-get install binutils"),
            "{p:?}"
        );
        assert!(
            by("no-python3-venv").contains("sudo apt-get install python3-venv"),
            "{p:?}"
        );
        let fedora = Facts {
            distro: Distro::parse("ID=fedora\nPRETTY_NAME=\"Fedora Linux 42\"\n"),
            zig: ZigFacts::default(),
            ..bare
        };
        let p = preflight(&fedora, &args(&[]), &all_phases());
        assert!(
            p.iter()
                .any(|x| x.id == "no-linker" && x.fix.contains("dnf install gcc")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|x| x.id == "no-python3" && x.fix.contains("dnf install python3")),
            "{p:?}"
        );
        // The user's own zig and cargo-zigbuild are fine.
        let own = Facts {
            zig: ZigFacts {
                zigbuild_on_path: true,
                zig_on_path: true,
                ..ZigFacts::default()
            },
            ..ready_gpu_host()
        };
        assert!(preflight(&own, &args(&[]), &all_phases()).is_empty());
    }

    #[test]
    fn helm_is_asked_for_only_when_it_will_be_used() {
        let facts = ready_gpu_host();
        // The host phase makes a k3s: the HelmChart path.
        assert!(!ids(&facts, &[], &all_phases()).contains(&"no-helm"));
        assert!(ids(&facts, &["--installer", "helm"], &all_phases()).contains(&"no-helm"));
        let skip = ids(
            &facts,
            &["--skip-host", "--kubeconfig", "/k"],
            &all_phases(),
        );
        assert!(skip.contains(&"no-helm"), "{skip:?}");
        let p = preflight(&facts, &args(&["--skip-host"]), &all_phases());
        assert!(
            p.iter().any(|x| x.fix.contains("--installer helm-chart")),
            "{p:?}"
        );
        assert!(
            !ids(
                &facts,
                &["--skip-host", "--installer", "helm-chart"],
                &all_phases()
            )
            .contains(&"no-helm")
        );
        // install-hami already done: helm is not needed any more.
        assert!(
            !ids(
                &facts,
                &["--installer", "helm"],
                &[Phase::Exercises, Phase::Pack]
            )
            .contains(&"no-helm")
        );
        let with_helm = Facts {
            helm: true,
            ..facts
        };
        assert!(!ids(&with_helm, &["--installer", "helm"], &all_phases()).contains(&"no-helm"));
    }

    #[test]
    fn disk_needs_add_up_on_one_filesystem() {
        let tight = Facts {
            build_disk: Some(Disk {
                path: "/home/u/lab/target".into(),
                dev: 7,
                free_bytes: 12 << 30,
            }),
            k3s_disk: Some(Disk {
                path: K3S_DATA.into(),
                dev: 7,
                free_bytes: 12 << 30,
            }),
            ..ready_gpu_host()
        };
        let p = preflight(&tight, &args(&[]), &all_phases());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].id, "disk");
        assert!(p[0].what.contains("14.0 GiB is needed"), "{}", p[0].what);
        // Without the host phase only the build's need counts.
        assert!(
            preflight(
                &tight,
                &args(&["--skip-host", "--installer", "helm-chart"]),
                &all_phases()
            )
            .is_empty()
        );
        // Two filesystems: each is judged on its own.
        let split = Facts {
            k3s_disk: Some(Disk {
                path: K3S_DATA.into(),
                dev: 8,
                free_bytes: 9 << 30,
            }),
            ..tight
        };
        let p = preflight(&split, &args(&[]), &all_phases());
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].what.contains("/var/lib/rancher"), "{}", p[0].what);
    }

    #[test]
    fn busy_ports_matter_only_while_k3s_is_not_the_one_holding_them() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:192B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n   1: 0100007F:280A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1\n   2: 0100007F:C350 0100007F:192B 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n";
        let ports = bound_ports(text, false);
        assert_eq!(
            ports,
            [6443, 10250].into(),
            "two listen; the established connection does not count"
        );
        let udp = "  sl  local_address rem_address   st\n  5: 00000000:2118 00000000:0000 07 00000000:00000000\n";
        assert_eq!(bound_ports(udp, true), [8472].into());
        assert!(bound_ports("garbage\n\n 0: x y", false).is_empty());
        let busy = Facts {
            tcp_listening: [22, 6443, 10250].into(),
            udp_bound: [8472].into(),
            ..ready_gpu_host()
        };
        let p = preflight(&busy, &args(&[]), &all_phases());
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].what.contains("6443/tcp, 10250/tcp, 8472/udp"),
            "{}",
            p[0].what
        );
        let k3s = Facts {
            k3s_active: true,
            ..busy
        };
        assert!(preflight(&k3s, &args(&[]), &all_phases()).is_empty());
    }

    #[test]
    fn unreachable_sources_and_missing_download_tools() {
        let offline = Facts {
            sources: vec![
                (
                    "toolkit-source-unreachable",
                    Err("curl: (6) Could not resolve host: nvidia.github.io".into()),
                ),
                ("k3s-installer-unreachable", Ok(())),
            ],
            curl: true,
            gpg: false,
            ..ready_gpu_host()
        };
        let p = preflight(&offline, &args(&[]), &all_phases());
        assert_eq!(
            p.iter().map(|x| x.id).collect::<Vec<_>>(),
            ["no-download-tools", "toolkit-source-unreachable"]
        );
        assert!(
            p[0].fix
                .contains("apt-get install curl ca-certificates gnupg"),
            "{}",
            p[0].fix
        );
        assert!(
            p[1].what.contains("Could not resolve host"),
            "{}",
            p[1].what
        );
        assert!(p[1].what.contains(NETWORK_SOURCES[0].2));
        // --skip-host: the host phase downloads nothing.
        assert!(
            preflight(
                &offline,
                &args(&["--skip-host", "--installer", "helm-chart"]),
                &all_phases()
            )
            .is_empty()
        );
    }

    #[test]
    fn the_sources_are_the_ones_host_setup_downloads_from() {
        let apply = include_str!("../../../host-setup/src/actions.rs");
        assert!(apply.contains(&format!(
            "TOOLKIT_KEY_URL: &str = \"{}\"",
            NETWORK_SOURCES[0].2
        )));
        assert!(apply.contains(&format!(
            "K3S_INSTALLER_URL: &str = \"{}\"",
            NETWORK_SOURCES[1].2
        )));
    }

    #[test]
    fn kernel_modules_are_checked_when_a_driver_is_there() {
        assert_eq!(
            module_names(
                "nvidia_uvm 1437696 0 - Live 0x0000000000000000 (PO)\nnvidia 56008704 2 nvidia_uvm, Live 0x0 (PO)\n"
            ),
            ["nvidia".to_owned(), "nvidia_uvm".to_owned()].into()
        );
        let no_uvm = Facts {
            modules: ["nvidia".to_owned()].into(),
            ..ready_gpu_host()
        };
        let p = preflight(&no_uvm, &args(&[]), &all_phases());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].id, "module-nvidia-uvm");
        assert!(p[0].fix.contains("modprobe nvidia_uvm"));
        // Only the pack phase is left: no GPU work, no module needed.
        assert!(preflight(&no_uvm, &args(&[]), &[Phase::Pack]).is_empty());
    }

    #[test]
    fn mig_not_root_and_missing_kubeconfig_are_problems() {
        let mig = Facts {
            root: false,
            nvidia_smi: Some(Ok("NVIDIA A100-SXM4-40GB, 40960 MiB, Enabled\n".into())),
            kubeconfig_found: false,
            ..ready_gpu_host()
        };
        let p = ids(&mig, &[], &all_phases());
        assert!(p.contains(&"mig") && p.contains(&"not-root"), "{p:?}");
        let skip = ids(
            &mig,
            &["--skip-host", "--installer", "helm-chart"],
            &all_phases(),
        );
        assert!(skip.contains(&"no-kubeconfig"), "{skip:?}");
        assert!(!skip.contains(&"not-root"), "{skip:?}");
    }

    #[test]
    fn os_release_families() {
        let ubuntu = Distro::parse("NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\n");
        assert_eq!(ubuntu.family(), Family::Debian);
        assert_eq!(Distro::parse("ID=debian\n").family(), Family::Debian);
        assert_eq!(
            Distro::parse("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n").family(),
            Family::Fedora
        );
        assert_eq!(Distro::parse("ID=arch\n").family(), Family::Arch);
        assert_eq!(
            Distro::parse("ID=opensuse-tumbleweed\nID_LIKE=\"opensuse suse\"\n").family(),
            Family::Suse
        );
        assert_eq!(Distro::parse("").family(), Family::Unknown);
    }

    #[test]
    fn observing_this_machine_reads_and_changes_nothing_it_should_not() {
        // The real reads on this machine: they must not fail whatever is installed.
        let runner = lab_runner::RecordingRunner::new(&[]);
        let dir = tempfile::tempdir().expect("tmp");
        let f = observe(&runner, &args(&["--skip-host"]), dir.path(), &all_phases());
        assert!(
            f.build_disk.is_some(),
            "statvfs of the nearest existing ancestor"
        );
        assert!(f.sources.is_empty(), "--skip-host: nothing is probed");
        assert!(runner.calls().iter().all(|c| c.program != "curl"));
    }
}
