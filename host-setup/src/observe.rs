//! Observe the host: everything the planner needs, gathered once, read-only.
//!
//! Why a separate step: the planner must be a pure function (unit-tested on fixtures without a
//! host), so all reads happen here: files through [`HostRoot`], commands through
//! `lab_runner::Runner`. Nothing here writes anything.
//!
//! Under `--root DIR` (not `/`), probe programs are looked up inside DIR (`DIR/usr/bin/nvidia-smi`,
//! `DIR/usr/local/bin/k3s`, ...) and missing ones count as absent, so a tree describes a whole
//! host; questions only the running system can answer (am I root, is a unit active, primary
//! address) are left unanswered.

use std::path::{Path, PathBuf};

use lab_runner::{Cmd, Runner};
use serde::Serialize;

use crate::containerd;
use crate::k3s;
use crate::root::{HostRoot, Unreadable};

/// Host path of plain containerd's config.
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// Where `nvidia-container-toolkit-base` puts the runtime (k3s looks here and in the operator dir).
pub const TOOLKIT_RUNTIME: &str = "/usr/bin/nvidia-container-runtime";
/// The GPU Operator's copy, which k3s prefers over /usr/bin (facts §3.1).
pub const OPERATOR_TOOLKIT_DIR: &str = "/usr/local/nvidia/toolkit";
/// NVIDIA's apt source and keyring (facts §6).
pub const TOOLKIT_LIST: &str = "/etc/apt/sources.list.d/nvidia-container-toolkit.list";
pub const TOOLKIT_KEYRING: &str = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg";

/// A file's text with its owner and mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileState {
    /// Host path (as on the host, not under the root).
    pub path: String,
    #[serde(skip)]
    pub text: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Host path of the file really read when `path` is a symbolic link (inside the root); that
    /// target is what gets edited, and the link is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

impl FileState {
    /// A file with default owner and mode (for tests and pure callers).
    pub fn new(path: &str, text: &str) -> Self {
        Self {
            path: path.to_owned(),
            text: text.to_owned(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            link_target: None,
        }
    }
}

/// One GPU as `nvidia-smi` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    pub index: String,
    pub name: String,
    pub memory_mib: Option<u64>,
    /// `Enabled`, `Disabled` or `[N/A]` (GPUs without MIG).
    pub mig_mode: String,
}

/// The NVIDIA driver as seen through `nvidia-smi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Driver {
    Ok { version: String, gpus: Vec<Gpu> },
    Missing { why: String },
}

impl Default for Driver {
    fn default() -> Self {
        Self::Missing {
            why: "not probed".to_owned(),
        }
    }
}

/// An installed k3s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct K3sInstall {
    pub version: Option<k3s::Version>,
    /// `systemctl is-active k3s`; `None` when not asked (under --root).
    pub active: Option<bool>,
}

/// An installed standalone containerd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerdInstall {
    pub major: Option<u32>,
    pub version: Option<String>,
    pub active: Option<bool>,
}

/// The NVIDIA Container Toolkit runtime binary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Toolkit {
    pub runtime_path: String,
    /// Debian version of `nvidia-container-toolkit`, e.g. `1.17.8-1`.
    pub version: Option<String>,
}

/// The user who gets a copy of the admin kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KubeconfigUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    /// Whether `~/.kube/config` already equals k3s.yaml with mode 0600 and the user's ownership.
    pub in_sync: bool,
}

/// Everything observed about the host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observation {
    pub root: String,
    /// Effective uid (`id -u`); `None` when not asked.
    pub euid: Option<u32>,
    pub os_pretty_name: Option<String>,
    /// `apt-get` is present (an apt-based distro).
    pub apt: bool,
    pub driver: Driver,
    pub cgroup_v2: bool,
    pub k3s: Option<K3sInstall>,
    pub containerd: Option<ContainerdInstall>,
    pub docker: bool,
    pub toolkit: Option<Toolkit>,
    pub toolkit_repo: bool,
    /// Traces of the GPU Operator (its toolkit copy wins over /usr/bin in k3s's lookup).
    pub gpu_operator: Vec<String>,
    pub free_disk_mib: Option<u64>,
    pub primary_address: Option<String>,
    pub k3s_config: Option<FileState>,
    pub k3s_config_dropins: Vec<FileState>,
    pub k3s_generated: Option<FileState>,
    pub k3s_template_v3: Option<FileState>,
    pub k3s_template_v2: Option<FileState>,
    /// `K3S_KUBECONFIG_MODE=...` in the k3s service env, if any.
    pub k3s_env_kubeconfig_mode: Option<String>,
    pub containerd_config: Option<FileState>,
    /// Files matched by the root config's `imports`, in the order containerd reads them.
    pub containerd_imports: Vec<FileState>,
    pub kubeconfig_user: Option<KubeconfigUser>,
    /// Files that exist but could not be read or decoded: each blocks every plan, preflight and
    /// verify (a file host-setup could not read is never treated as absent).
    pub unreadable: Vec<Unreadable>,
    /// Notes about things that could not be looked at (bad glob patterns).
    pub notes: Vec<String>,
}

impl Observation {
    /// Whether the host file `path` exists but could not be read.
    pub fn is_unreadable(&self, path: &str) -> bool {
        self.unreadable.iter().any(|u| u.path == path)
    }
}

/// Reads the host through a runner and a root.
#[derive(Debug)]
pub struct Observer<'a, R: Runner + ?Sized> {
    pub runner: &'a R,
    pub root: &'a HostRoot,
    /// Look probe programs up inside the root (for `--root DIR` trees) instead of on PATH.
    pub probes_in_root: bool,
    /// Ask questions only the running system can answer (`id -u`, `systemctl`, addresses).
    pub system: bool,
}

const BIN_DIRS: [&str; 5] = ["/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin", "/sbin"];

impl<R: Runner + ?Sized> Observer<'_, R> {
    /// The program to run for `name`, or `None` when it is not there.
    fn probe(&self, name: &str) -> Option<String> {
        if self.probes_in_root {
            BIN_DIRS
                .iter()
                .filter_map(|d| self.root.path(&Path::new(d).join(name)).ok())
                .find(|p| is_executable(p))
                .map(|p| p.to_string_lossy().into_owned())
        } else {
            self.runner.exists(name).then(|| name.to_owned())
        }
    }

    fn run_ok(&self, cmd: &Cmd) -> Option<String> {
        self.runner
            .run(cmd)
            .ok()
            .filter(lab_runner::Output::success)
            .map(|o| o.stdout)
    }

    fn file(&self, host: &str, unreadable: &mut Vec<Unreadable>) -> Option<FileState> {
        match read_state(self.root, host) {
            Ok(state) => state,
            Err(u) => {
                if !unreadable.contains(&u) {
                    unreadable.push(u);
                }
                None
            }
        }
    }

    /// Gathers the observation. `kubeconfig_user` names the user for `--kubeconfig-user`.
    pub fn observe(&self, kubeconfig_user: Option<&str>) -> Observation {
        let mut notes = Vec::new();
        let mut unreadable = Vec::new();
        let mut obs = Observation {
            root: self.root.dir().to_string_lossy().into_owned(),
            ..Observation::default()
        };
        if self.system {
            obs.euid = self
                .run_ok(&Cmd::new("id").arg("-u"))
                .and_then(|s| s.trim().parse().ok());
        }
        obs.os_pretty_name = self
            .file("/etc/os-release", &mut unreadable)
            .or_else(|| self.file("/usr/lib/os-release", &mut unreadable))
            .and_then(|f| {
                f.text.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_owned())
                })
            });
        obs.apt =
            self.probe("apt-get").is_some() || self.root.exists(Path::new("/usr/bin/apt-get"));
        obs.driver = self.driver();
        obs.cgroup_v2 = self
            .root
            .exists(Path::new("/sys/fs/cgroup/cgroup.controllers"));

        let k3s_bin = self.probe("k3s").or_else(|| {
            self.root
                .exists(Path::new(k3s::BINARY))
                .then(|| k3s::BINARY.to_owned())
        });
        obs.k3s = k3s_bin.map(|bin| K3sInstall {
            version: self
                .run_ok(&Cmd::new(bin).arg("--version"))
                .and_then(|s| k3s::parse_version(&s)),
            active: self.unit_active("k3s"),
        });
        obs.containerd = self.probe("containerd").map(|bin| {
            let text = self.run_ok(&Cmd::new(bin).arg("--version"));
            let version = text.as_deref().and_then(containerd_version);
            ContainerdInstall {
                major: version
                    .as_deref()
                    .and_then(|v| v.split('.').next())
                    .and_then(|m| m.parse().ok()),
                version,
                active: self.unit_active("containerd"),
            }
        });
        obs.docker = self.probe("docker").is_some() || self.probe("dockerd").is_some();

        let operator_runtime = format!("{OPERATOR_TOOLKIT_DIR}/nvidia-container-runtime");
        if self.root.exists(Path::new(OPERATOR_TOOLKIT_DIR)) {
            obs.gpu_operator.push(format!(
                "{OPERATOR_TOOLKIT_DIR} exists (GPU Operator toolkit copy; k3s prefers it over /usr/bin)"
            ));
        }
        let runtime = [TOOLKIT_RUNTIME, operator_runtime.as_str()]
            .into_iter()
            .find(|p| self.root.exists(Path::new(p)));
        obs.toolkit = runtime.map(|p| Toolkit {
            runtime_path: p.to_owned(),
            version: self.toolkit_version(),
        });
        obs.toolkit_repo = self.root.exists(Path::new(TOOLKIT_LIST));
        obs.free_disk_mib = self.free_disk();
        if self.system {
            obs.primary_address = self.primary_address();
        }

        obs.k3s_config = self.file(k3s::CONFIG_YAML, &mut unreadable);
        obs.k3s_config_dropins = self.glob_files(
            &format!("{}/*.y*ml", k3s::CONFIG_YAML_D),
            &mut notes,
            &mut unreadable,
        );
        obs.k3s_generated = self.file(k3s::GENERATED_CONTAINERD, &mut unreadable);
        obs.k3s_template_v3 = self.file(k3s::TEMPLATE_V3, &mut unreadable);
        obs.k3s_template_v2 = self.file(k3s::TEMPLATE_V2, &mut unreadable);
        obs.k3s_env_kubeconfig_mode = self.file(k3s::SERVICE_ENV, &mut unreadable).and_then(|f| {
            f.text.lines().find_map(|l| {
                l.strip_prefix("K3S_KUBECONFIG_MODE=")
                    .map(|v| v.trim_matches(['"', '\'']).to_owned())
            })
        });

        obs.containerd_config = self.file(CONTAINERD_CONFIG, &mut unreadable);
        if let Some(cfg) = &obs.containerd_config {
            let patterns = containerd::imports(&cfg.text, CONTAINERD_CONFIG).unwrap_or_default();
            for pattern in patterns {
                let host = containerd::import_host_pattern(Path::new(CONTAINERD_CONFIG), &pattern);
                for f in self.glob_files(&host.to_string_lossy(), &mut notes, &mut unreadable) {
                    // A self-matching glob (nvidia-ctk's --drop-in-config="" bug) is skipped, as containerd does.
                    if f.path != CONTAINERD_CONFIG
                        && !obs.containerd_imports.iter().any(|i| i.path == f.path)
                    {
                        obs.containerd_imports.push(f);
                    }
                }
            }
        }
        obs.kubeconfig_user = kubeconfig_user.and_then(|u| self.user(u, &mut unreadable));
        obs.unreadable = unreadable;
        obs.notes = notes;
        obs
    }

    /// The IPv4 address of the interface holding the default route (no packet is sent), else
    /// the first address of `hostname -I`.
    fn primary_address(&self) -> Option<String> {
        let dev = self
            .run_ok(&Cmd::new("ip").args(["-o", "-4", "route", "show", "default"]))
            .and_then(|s| default_route_dev(&s));
        let from_dev = dev.and_then(|dev| {
            self.run_ok(&Cmd::new("ip").args(["-o", "-4", "addr", "show", "dev", &dev]))
                .and_then(|s| first_inet(&s))
        });
        from_dev.or_else(|| {
            self.run_ok(&Cmd::new("hostname").arg("-I"))
                .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        })
    }

    fn unit_active(&self, unit: &str) -> Option<bool> {
        if !self.system || !self.runner.exists("systemctl") {
            return None;
        }
        self.runner
            .run(&Cmd::new("systemctl").args(["is-active", "--quiet", unit]))
            .ok()
            .map(|o| o.success())
    }

    fn driver(&self) -> Driver {
        let Some(smi) = self.probe("nvidia-smi") else {
            return Driver::Missing {
                why: "nvidia-smi not found".to_owned(),
            };
        };
        let cmd = Cmd::new(smi).args([
            "--query-gpu=index,name,memory.total,mig.mode.current,driver_version",
            "--format=csv,noheader,nounits",
        ]);
        match self.runner.run(&cmd) {
            Ok(out) if out.success() => parse_nvidia_smi(&out.stdout),
            Ok(out) => Driver::Missing {
                why: format!(
                    "nvidia-smi failed: {}",
                    out.stdout
                        .lines()
                        .chain(out.stderr.lines())
                        .next()
                        .unwrap_or("")
                        .trim()
                ),
            },
            Err(e) => Driver::Missing { why: e.to_string() },
        }
    }

    fn toolkit_version(&self) -> Option<String> {
        let dpkg = if self.probes_in_root {
            self.runner
                .exists("dpkg-query")
                .then(|| "dpkg-query".to_owned())
        } else {
            self.probe("dpkg-query")
        }?;
        let mut cmd = Cmd::new(dpkg);
        if !self.root.is_system() {
            let admin = self.root.path(Path::new("/var/lib/dpkg")).ok()?;
            if !admin.join("status").exists() {
                return None;
            }
            cmd = cmd.arg(format!("--admindir={}", admin.display()));
        }
        let out = self.run_ok(&cmd.args(["-W", "-f=${Version}", "nvidia-container-toolkit"]))?;
        let v = out.trim();
        (!v.is_empty()).then(|| v.to_owned())
    }

    fn free_disk(&self) -> Option<u64> {
        let target = self
            .root
            .path(Path::new("/var/lib"))
            .ok()
            .filter(|p| p.exists())
            .unwrap_or_else(|| self.root.dir().to_path_buf());
        let out = self.run_ok(&Cmd::new("df").args(["-Pm", &target.to_string_lossy()]))?;
        out.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()
    }

    fn glob_files(
        &self,
        host_pattern: &str,
        notes: &mut Vec<String>,
        unreadable: &mut Vec<Unreadable>,
    ) -> Vec<FileState> {
        let Ok(rooted) = self.root.path(Path::new(host_pattern)) else {
            return Vec::new();
        };
        let Ok(paths) = glob::glob(&rooted.to_string_lossy()) else {
            notes.push(format!("bad glob pattern {host_pattern}"));
            return Vec::new();
        };
        // Every match counts, links and odd entries included: read_state says what is wrong
        // with one it cannot read (containerd and k3s would try to load it too).
        let mut files: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
        files.sort();
        files
            .iter()
            .filter_map(|p| self.root.host_path(p))
            .filter_map(|host| self.file(&host.to_string_lossy(), unreadable))
            .collect()
    }

    fn user(&self, name: &str, unreadable: &mut Vec<Unreadable>) -> Option<KubeconfigUser> {
        let passwd = self.file("/etc/passwd", unreadable)?;
        let line = passwd
            .text
            .lines()
            .find(|l| l.split(':').next() == Some(name))?;
        let f: Vec<&str> = line.split(':').collect();
        let (uid, gid, home) = (
            f.get(2)?.parse().ok()?,
            f.get(3)?.parse().ok()?,
            (*f.get(5)?).to_owned(),
        );
        let dest = format!("{}/.kube/config", home.trim_end_matches('/'));
        let source = self.root.resolve(Path::new(k3s::KUBECONFIG)).ok();
        let dest_path = self.root.resolve(Path::new(&dest)).ok();
        let in_sync = match (source, dest_path) {
            (Some(s), Some(d)) => {
                let same = matches!((std::fs::read(&s.real), std::fs::read(&d.real)), (Ok(a), Ok(b)) if a == b);
                same && crate::fsio::owner_of(&d.real)
                    .ok()
                    .flatten()
                    .is_some_and(|o| o.mode == 0o600 && o.uid == uid && o.gid == gid)
            }
            _ => false,
        };
        Some(KubeconfigUser {
            name: name.to_owned(),
            uid,
            gid,
            home,
            in_sync,
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Reads a host file with its owner and mode: `Ok(None)` when absent.
fn read_state(root: &HostRoot, host: &str) -> Result<Option<FileState>, Unreadable> {
    let Some(file) = root.read_text(Path::new(host))? else {
        return Ok(None);
    };
    let owner = crate::fsio::owner_of(&file.resolved.real)
        .map_err(|e| Unreadable {
            path: host.to_owned(),
            problem: crate::root::ReadProblem::Io {
                message: e.to_string(),
            },
        })?
        .unwrap_or(crate::fsio::Owner {
            uid: 0,
            gid: 0,
            mode: 0o644,
        });
    Ok(Some(FileState {
        path: host.to_owned(),
        text: file.text,
        mode: owner.mode,
        uid: owner.uid,
        gid: owner.gid,
        link_target: file
            .resolved
            .via_link
            .map(|p| p.to_string_lossy().into_owned()),
    }))
}

/// `default via 10.0.0.1 dev eth0 proto dhcp ...` → `eth0`.
pub fn default_route_dev(text: &str) -> Option<String> {
    let words: Vec<&str> = text.lines().next()?.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "dev")?;
    words.get(i + 1).map(|d| (*d).to_owned())
}

/// `2: eth0    inet 10.0.0.10/24 brd ...` → `10.0.0.10`.
pub fn first_inet(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "inet")?;
    words.get(i + 1)?.split('/').next().map(str::to_owned)
}

/// `containerd github.com/containerd/containerd/v2 2.1.9+unknown ` → `2.1.9`.
pub fn containerd_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .nth(2)
        .map(|v| v.trim_start_matches('v'))
        .map(|v| {
            v.chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect::<String>()
        })
        .filter(|v| !v.is_empty())
}

/// Parses `nvidia-smi --query-gpu=index,name,memory.total,mig.mode.current,driver_version
/// --format=csv,noheader,nounits`.
pub fn parse_nvidia_smi(stdout: &str) -> Driver {
    let mut gpus = Vec::new();
    let mut version = None;
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 5 {
            return Driver::Missing {
                why: format!("unexpected nvidia-smi output: {line}"),
            };
        }
        gpus.push(Gpu {
            index: f[0].to_owned(),
            name: f[1].to_owned(),
            memory_mib: f[2].parse().ok(),
            mig_mode: f[3].to_owned(),
        });
        version = Some(f[4].to_owned());
    }
    match version {
        Some(version) => Driver::Ok { version, gpus },
        None => Driver::Missing {
            why: "nvidia-smi lists no GPU".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_address_parsing() {
        assert_eq!(
            default_route_dev(
                "default via 10.0.0.1 dev ens5 proto dhcp src 10.0.0.10 metric 100\n"
            )
            .as_deref(),
            Some("ens5")
        );
        assert_eq!(
            first_inet(
                "2: ens5    inet 10.0.0.10/24 metric 100 brd 10.0.0.255 scope global dynamic ens5\n"
            )
            .as_deref(),
            Some("10.0.0.10")
        );
        assert_eq!(default_route_dev(""), None);
    }

    #[test]
    fn parses_nvidia_smi_and_containerd_versions() {
        let d = parse_nvidia_smi("0, NVIDIA H100 80GB HBM3, 81559, Enabled, 570.133.20\n");
        let Driver::Ok { version, gpus } = d else {
            panic!("{d:?}")
        };
        assert_eq!(version, "570.133.20");
        assert_eq!(gpus[0].memory_mib, Some(81559));
        assert_eq!(gpus[0].mig_mode, "Enabled");
        assert_eq!(
            containerd_version("containerd github.com/containerd/containerd/v2 2.1.9+unknown ")
                .as_deref(),
            Some("2.1.9")
        );
        assert_eq!(
            containerd_version(
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1"
            )
            .as_deref(),
            Some("1.6.20")
        );
    }
}
