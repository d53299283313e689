//! Where the cluster is: kubectl's kubeconfig discovery rules, once. `cluster-ctl` builds its client
//! from the [`Source`] they pick, and `cargo xtask lab` uses the same rules to decide whether a
//! cluster is reachable and what to pass on, so the two can never disagree.
//!
//! The rules, in order: `--kubeconfig PATH`; `$KUBECONFIG` (one or more files joined with `:`);
//! `~/.kube/config` when it exists; the in-cluster service account when running in a pod
//! (`KUBERNETES_SERVICE_HOST` set and the token file present); otherwise none.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The service account token a pod gets (what `kube::Config::incluster` reads).
pub const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Where k3s writes its kubeconfig (root-readable).
pub const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// Where the cluster's address and credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--kubeconfig PATH`.
    Flag(PathBuf),
    /// `$KUBECONFIG`, as the environment has it.
    Env(OsString),
    /// `~/.kube/config`.
    Home(PathBuf),
    /// The pod's service account.
    InCluster,
    /// Nothing: no kubeconfig and not in a pod.
    Nothing,
}

/// What discovery looks at, read once from the process ([`Environment::from_process`]) or given
/// by tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// `$KUBECONFIG` when set and not empty.
    pub kubeconfig_var: Option<OsString>,
    /// `~/.kube/config` when that file exists.
    pub home_config: Option<PathBuf>,
    /// `KUBERNETES_SERVICE_HOST` is set and the service account token exists.
    pub in_cluster: bool,
}

impl Environment {
    pub fn from_process() -> Self {
        let home_config = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".kube/config"))
            .filter(|p| p.is_file());
        Self {
            kubeconfig_var: std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()),
            home_config,
            in_cluster: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
                && Path::new(IN_CLUSTER_TOKEN).is_file(),
        }
    }
}

/// The rules (pure).
pub fn discover(flag: Option<&Path>, env: &Environment) -> Source {
    if let Some(path) = flag {
        return Source::Flag(path.to_path_buf());
    }
    if let Some(var) = &env.kubeconfig_var {
        return Source::Env(var.clone());
    }
    if let Some(home) = &env.home_config {
        return Source::Home(home.clone());
    }
    if env.in_cluster {
        return Source::InCluster;
    }
    Source::Nothing
}

impl Source {
    /// Whether a cluster can be addressed at all (a `--kubeconfig` must exist).
    pub fn usable(&self) -> bool {
        match self {
            Source::Flag(p) => p.is_file(),
            Source::Env(_) | Source::Home(_) | Source::InCluster => true,
            Source::Nothing => false,
        }
    }

    /// What to tell a user who has none.
    pub const FIX: &'static str = "pass --kubeconfig FILE, set KUBECONFIG (k3s: /etc/rancher/k3s/k3s.yaml) or create ~/.kube/config; inside a pod, run with a service account (manifests/rbac.yaml)";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: Option<&str>, home: Option<&str>, in_cluster: bool) -> Environment {
        Environment {
            kubeconfig_var: var.map(OsString::from),
            home_config: home.map(PathBuf::from),
            in_cluster,
        }
    }

    #[test]
    fn the_flag_wins_then_the_variable_then_home_then_the_pod() {
        let all = env(Some("/a:/b"), Some("/h/.kube/config"), true);
        assert_eq!(
            discover(Some(Path::new("/k")), &all),
            Source::Flag("/k".into())
        );
        assert_eq!(discover(None, &all), Source::Env("/a:/b".into()));
        assert_eq!(
            discover(None, &env(None, Some("/h/.kube/config"), true)),
            Source::Home("/h/.kube/config".into())
        );
        assert_eq!(discover(None, &env(None, None, true)), Source::InCluster);
        assert_eq!(discover(None, &env(None, None, false)), Source::Nothing);
    }

    #[test]
    fn a_flag_naming_a_missing_file_is_not_usable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        assert!(!Source::Flag(file.clone()).usable());
        std::fs::write(&file, "apiVersion: v1\n").unwrap();
        assert!(Source::Flag(file).usable());
        assert!(!Source::Nothing.usable());
        assert!(Source::InCluster.usable());
    }
}
