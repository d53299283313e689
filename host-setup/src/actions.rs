//! The commands each plan step runs, built in ONE place: [`actions`] is what `apply` executes and
//! what `--dry-run` prints ([`Action::describe`]), so the plan cannot drift from what runs.
//!
//! Every command has a time limit (no call without a deadline). File writes (`WriteFile`,
//! `CopyKubeconfig`) are not commands: `apply` does them itself, and the plan shows their diffs.

use std::time::Duration;

use lab_runner::Cmd;

use crate::plan::{Readiness, Step};

/// NVIDIA's apt key and list (facts §6), and the k3s installer.
pub const TOOLKIT_KEY_URL: &str = "https://nvidia.github.io/libnvidia-container/gpgkey";
pub const TOOLKIT_LIST_URL: &str =
    "https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list";
pub const K3S_INSTALLER_URL: &str = "https://get.k3s.io";

const DOWNLOAD_LIMIT: Duration = Duration::from_secs(120);
const APT_LIMIT: Duration = Duration::from_secs(1200);
const INSTALLER_LIMIT: Duration = Duration::from_secs(900);
const SYSTEMCTL_LIMIT: Duration = Duration::from_secs(300);
const PROBE_LIMIT: Duration = Duration::from_secs(30);

/// One thing a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Runs a command; a failure stops apply.
    Run(Cmd),
    /// Runs `source` and feeds its stdout to `sink`'s stdin.
    Pipe { source: Cmd, sink: Cmd },
    /// Runs `fetch`; its stdout must be an apt list, which is written to host path `list` with
    /// `signed-by=<keyring>` added to each `deb` line (atomically, after a backup).
    FetchAptList {
        fetch: Cmd,
        keyring: String,
        list: String,
    },
    /// Runs `probe` every `interval` until it says ready, for at most `timeout`.
    Poll {
        probe: Cmd,
        target: Readiness,
        timeout: Duration,
        interval: Duration,
    },
}

/// The commands of a step, in the order apply runs them. `keyring_path` turns the keyring's host
/// path into the path gpg writes (under `--root` it is inside DIR).
pub fn actions(
    step: &Step,
    interval: Duration,
    keyring_path: &dyn Fn(&str) -> String,
) -> Vec<Action> {
    match step {
        Step::AddToolkitRepo { keyring, list } => vec![
            Action::Pipe {
                source: Cmd::new("curl")
                    .args(["-fsSL", TOOLKIT_KEY_URL])
                    .timeout(DOWNLOAD_LIMIT),
                sink: Cmd::new("gpg")
                    .args(["--dearmor", "--yes", "-o", &keyring_path(keyring)])
                    .timeout(DOWNLOAD_LIMIT),
            },
            Action::FetchAptList {
                fetch: Cmd::new("curl")
                    .args(["-fsSL", TOOLKIT_LIST_URL])
                    .timeout(DOWNLOAD_LIMIT),
                keyring: keyring.clone(),
                list: list.clone(),
            },
        ],
        Step::InstallToolkit { packages } => vec![
            Action::Run(
                Cmd::new("apt-get")
                    .arg("update")
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .timeout(APT_LIMIT),
            ),
            Action::Run(
                Cmd::new("apt-get")
                    .args(["install", "-y", "--no-install-recommends"])
                    // A pinned version may be older than the installed one.
                    .args(
                        packages
                            .iter()
                            .any(|p| p.contains('='))
                            .then_some("--allow-downgrades"),
                    )
                    .args(packages.iter().cloned())
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .timeout(APT_LIMIT),
            ),
        ],
        Step::InstallK3s { version } => {
            let mut cmd = Cmd::new("sh")
                .args([
                    "-c",
                    &format!("curl -sfL {K3S_INSTALLER_URL} | sh -s - server"),
                ])
                .timeout(INSTALLER_LIMIT);
            if let Some(v) = version {
                cmd = cmd.env("INSTALL_K3S_VERSION", v);
            }
            vec![Action::Run(cmd)]
        }
        Step::RestartService { unit } => vec![Action::Run(restart_cmd(unit))],
        Step::WaitReady { target, timeout_s } => vec![Action::Poll {
            probe: readiness_probe(*target),
            target: *target,
            timeout: Duration::from_secs(*timeout_s),
            interval,
        }],
        Step::WriteFile(_) | Step::CopyKubeconfig { .. } => Vec::new(),
    }
}

/// `systemctl restart UNIT` (also used by the rollback).
pub fn restart_cmd(unit: &str) -> Cmd {
    Cmd::new("systemctl")
        .args(["restart", unit])
        .timeout(SYSTEMCTL_LIMIT)
}

/// The read-only command whose answer says whether `target` is ready.
pub fn readiness_probe(target: Readiness) -> Cmd {
    match target {
        Readiness::Containerd => Cmd::new("systemctl").args(["is-active", "containerd"]),
        Readiness::K3sNode => Cmd::new("k3s").args([
            "kubectl",
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ]),
    }
    .timeout(PROBE_LIMIT)
}

/// A command as the plan shows it: the environment with its values (host-setup never passes
/// secrets in the environment), the command line, and its time limit.
pub fn shown(cmd: &Cmd) -> String {
    let env: String = cmd.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    let bare = Cmd {
        env: Vec::new(),
        ..cmd.clone()
    };
    let limit = cmd
        .timeout
        .map(|t| format!("  [time limit {}s]", t.as_secs()))
        .unwrap_or_default();
    format!("{env}{bare}{limit}")
}

impl Action {
    /// What the plan prints for this action (`runs: …` lines).
    pub fn describe(&self) -> String {
        match self {
            Self::Run(cmd) => shown(cmd),
            Self::Pipe { source, sink } => format!("{} | {}", shown(source), shown(sink)),
            Self::FetchAptList {
                fetch,
                keyring,
                list,
            } => format!(
                "{} > {list} (checked to be an apt list; signed-by={keyring} added to each deb line; written atomically)",
                shown(fetch)
            ),
            Self::Poll {
                probe,
                timeout,
                interval,
                ..
            } => format!(
                "{} every {}s, for up to {}s",
                shown(probe),
                interval.as_secs(),
                timeout.as_secs()
            ),
        }
    }

    /// Every command the action runs (for tests and logs).
    pub fn commands(&self) -> Vec<&Cmd> {
        match self {
            Self::Run(cmd) => vec![cmd],
            Self::Pipe { source, sink } => vec![source, sink],
            Self::FetchAptList { fetch, .. } => vec![fetch],
            Self::Poll { probe, .. } => vec![probe],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(host: &str) -> String {
        format!("/tree{host}")
    }

    #[test]
    fn every_command_has_a_time_limit_and_shows_it() {
        let steps = [
            Step::AddToolkitRepo {
                keyring: "/usr/share/keyrings/k.gpg".into(),
                list: "/etc/apt/sources.list.d/n.list".into(),
            },
            Step::InstallToolkit {
                packages: vec!["nvidia-container-toolkit=1.17.8-1".into()],
            },
            Step::InstallK3s {
                version: Some("v1.33.5+k3s1".into()),
            },
            Step::RestartService { unit: "k3s".into() },
            Step::WaitReady {
                target: Readiness::K3sNode,
                timeout_s: 300,
            },
        ];
        for step in &steps {
            let acts = actions(step, Duration::from_secs(5), &keyring);
            assert!(!acts.is_empty(), "{step:?}");
            for a in &acts {
                for c in a.commands() {
                    assert!(c.timeout.is_some(), "{c} has no deadline");
                }
                assert!(a.describe().contains("[time limit"), "{}", a.describe());
            }
        }
        let k3s = actions(&steps[2], Duration::from_secs(5), &keyring);
        assert!(
            k3s[0]
                .describe()
                .starts_with("INSTALL_K3S_VERSION=v1.33.5+k3s1 sh -c 'curl -sfL https://get.k3s.io | sh -s - server'"),
            "{}",
            k3s[0].describe()
        );
        let apt = actions(&steps[1], Duration::from_secs(5), &keyring);
        assert!(
            apt[1].describe().contains("--allow-downgrades"),
            "{}",
            apt[1].describe()
        );
        let repo = actions(&steps[0], Duration::from_secs(5), &keyring);
        assert!(
            repo[0]
                .describe()
                .contains("gpg --dearmor --yes -o /tree/usr/share/keyrings/k.gpg"),
            "{}",
            repo[0].describe()
        );
    }
}
