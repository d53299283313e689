//! helm, through `lab_runner::Runner`: version check (Helm 3 and 4), release state from
//! `helm list -a -o json`, clearing a stuck release, and every helm command line cluster-ctl runs
//! (list, version, get values, upgrade --install, rollback/uninstall of a stuck release,
//! uninstall). Everything here builds `Cmd`s or reads helm's output (pure; only `helm_major` runs
//! one, `helm version`); `commands` runs them. Tests use `RecordingRunner` and assert on the
//! recorded command lines.

use lab_runner::{Cmd, Runner};
use serde::{Deserialize, Serialize};

/// Chart version installed unless `--chart-version` says otherwise (latest known).
pub const DEFAULT_CHART_VERSION: &str = "2.10.0";
pub const RELEASE: &str = "hami";
pub const REPO_URL: &str = "https://project-hami.github.io/HAMi/";
/// Chart name inside the repository.
pub const CHART: &str = "hami";
/// Registry of the kube-scheduler sidecar image (the chart's default registry is slow or
/// unreachable outside China).
pub const DEFAULT_SCHEDULER_REGISTRY: &str = "registry.k8s.io";
pub const DEFAULT_SCHEDULER_REPOSITORY: &str = "kube-scheduler";
/// Shown when helm is missing.
pub const INSTALL_HINT: &str = "helm 3 or 4 is required: install it from https://helm.sh/docs/intro/install/ (e.g. `curl -fsSL https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-3 | bash`, or your distribution's `helm` package)";

/// What went wrong with helm.
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    #[error(
        "`helm version` printed {0:?}; cluster-ctl supports Helm 3 and 4 — install one of them: https://helm.sh/docs/intro/install/"
    )]
    UnsupportedVersion(String),
    #[error("`helm list -a -o json` printed something that is not a release list: {0}")]
    BadList(String),
    #[error("chart version {0:?} is not `<major>.<minor>.<patch>` (e.g. 2.10.0)")]
    BadChartVersion(String),
    #[error(transparent)]
    Run(#[from] lab_runner::RunError),
}

/// Options that reach every helm call: which cluster and namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HelmTarget {
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub namespace: String,
}

impl HelmTarget {
    fn apply(&self, mut cmd: Cmd) -> Cmd {
        if let Some(k) = &self.kubeconfig {
            cmd = cmd.args(["--kubeconfig", k.as_str()]);
        }
        if let Some(c) = &self.context {
            cmd = cmd.args(["--kube-context", c.as_str()]);
        }
        cmd.args(["--namespace", self.namespace.as_str()])
    }
}

/// `v3.16.2+g13654a5` / `v4.0.1+g…` → 3 / 4.
pub fn parse_helm_major(version_output: &str) -> Result<u32, HelmError> {
    let v = version_output.trim();
    let major = v
        .strip_prefix('v')
        .and_then(|r| r.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m @ (3 | 4)) => Ok(m),
        _ => Err(HelmError::UnsupportedVersion(v.to_owned())),
    }
}

/// Runs `helm version --short` and returns the major version (3 or 4).
pub fn helm_major(runner: &dyn Runner) -> Result<u32, HelmError> {
    let out = runner.run_checked(&Cmd::new("helm").args(["version", "--short"]))?;
    parse_helm_major(&out.stdout)
}

/// One row of `helm list -a -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelmRelease {
    pub name: String,
    pub namespace: String,
    #[serde(deserialize_with = "string_or_number")]
    pub revision: String,
    pub status: String,
    pub chart: String,
    #[serde(default)]
    pub app_version: String,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// Parses `helm list -a -o json` (helm prints `[]` or nothing when there is no release).
pub fn parse_helm_list(text: &str) -> Result<Vec<HelmRelease>, HelmError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(text).map_err(|e| HelmError::BadList(e.to_string()))
}

/// `helm list -a -o json --filter ^hami$`.
pub fn list_cmd(target: &HelmTarget) -> Cmd {
    target.apply(Cmd::new("helm").args([
        "list",
        "-a",
        "-o",
        "json",
        "--filter",
        &format!("^{RELEASE}$"),
    ]))
}

/// What to do with the existing release before installing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ReleaseState {
    Absent,
    Deployed {
        chart: String,
        revision: String,
    },
    /// `pending-install|upgrade|rollback` or `failed`: must be cleared first.
    Stuck {
        status: String,
        revision: String,
    },
    /// Any other status (`superseded`, `uninstalling`, …): left to helm.
    Other {
        status: String,
    },
}

pub fn release_state(releases: &[HelmRelease]) -> ReleaseState {
    let Some(r) = releases.iter().find(|r| r.name == RELEASE) else {
        return ReleaseState::Absent;
    };
    match r.status.as_str() {
        "deployed" => ReleaseState::Deployed {
            chart: r.chart.clone(),
            revision: r.revision.clone(),
        },
        s if s.starts_with("pending-") || s == "failed" => ReleaseState::Stuck {
            status: s.to_owned(),
            revision: r.revision.clone(),
        },
        s => ReleaseState::Other {
            status: s.to_owned(),
        },
    }
}

/// The command that clears a stuck release: at revision 1 there is nothing to roll back to, so
/// uninstall; later revisions roll back to the previous one.
pub fn clear_stuck_cmd(state: &ReleaseState, target: &HelmTarget) -> Option<Cmd> {
    let ReleaseState::Stuck { revision, .. } = state else {
        return None;
    };
    let rev = revision.parse::<u64>().unwrap_or(1);
    let cmd = if rev <= 1 {
        Cmd::new("helm").args(["uninstall", RELEASE])
    } else {
        Cmd::new("helm").args(["rollback", RELEASE, &(rev - 1).to_string()])
    };
    Some(target.apply(cmd))
}

/// `helm uninstall hami` (for `cleanup --uninstall-hami`).
pub fn uninstall_cmd(target: &HelmTarget) -> Cmd {
    target.apply(Cmd::new("helm").args(["uninstall", RELEASE]))
}

/// What `install-hami` asks helm for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    pub chart_version: String,
    pub scheduler_registry: String,
    pub scheduler_repository: String,
    /// Set the kube-scheduler tag explicitly (charts ≥ 2.5 derive it from the server version).
    pub scheduler_tag: Option<String>,
    /// Extra `--set key=value` passed through, e.g. `devicePlugin.runtimeClassName=nvidia`.
    pub extra_set: Vec<String>,
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self {
            chart_version: DEFAULT_CHART_VERSION.to_owned(),
            scheduler_registry: DEFAULT_SCHEDULER_REGISTRY.to_owned(),
            scheduler_repository: DEFAULT_SCHEDULER_REPOSITORY.to_owned(),
            scheduler_tag: None,
            extra_set: Vec::new(),
        }
    }
}

fn chart_minor(version: &str) -> Result<(u64, u64), HelmError> {
    let bad = || HelmError::BadChartVersion(version.to_owned());
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let minor = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let patch_ok = parts.next().is_some_and(|p| {
        p.split(['-', '+'])
            .next()
            .is_some_and(|n| n.parse::<u64>().is_ok())
    });
    if !patch_ok {
        return Err(bad());
    }
    Ok((major, minor))
}

/// The `--set` values for the kube-scheduler image: charts ≥ 2.7 have `image.{registry,repository,tag}`;
/// older ones a single `image` string plus `imageTag`.
pub fn scheduler_image_sets(opts: &InstallOptions) -> Result<Vec<String>, HelmError> {
    let (major, minor) = chart_minor(&opts.chart_version)?;
    let mut sets = Vec::new();
    if (major, minor) >= (2, 7) {
        sets.push(format!(
            "scheduler.kubeScheduler.image.registry={}",
            opts.scheduler_registry
        ));
        sets.push(format!(
            "scheduler.kubeScheduler.image.repository={}",
            opts.scheduler_repository
        ));
        if let Some(tag) = &opts.scheduler_tag {
            sets.push(format!("scheduler.kubeScheduler.image.tag={tag}"));
        }
    } else {
        sets.push(format!(
            "scheduler.kubeScheduler.image={}/{}",
            opts.scheduler_registry, opts.scheduler_repository
        ));
        if let Some(tag) = &opts.scheduler_tag {
            sets.push(format!("scheduler.kubeScheduler.imageTag={tag}"));
        }
    }
    Ok(sets)
}

/// `helm upgrade --install hami hami --repo <HAMi repo> --version V --namespace NS --set …`.
/// `--repo` (Helm 3 and 4) leaves the user's repository list untouched. No `--wait`: readiness is
/// verified afterwards by watches with their own diagnosis.
pub fn upgrade_install_cmd(opts: &InstallOptions, target: &HelmTarget) -> Result<Cmd, HelmError> {
    let mut cmd = Cmd::new("helm").args([
        "upgrade",
        "--install",
        RELEASE,
        CHART,
        "--repo",
        REPO_URL,
        "--version",
        opts.chart_version.as_str(),
    ]);
    cmd = target.apply(cmd);
    for set in scheduler_image_sets(opts)?.iter().chain(&opts.extra_set) {
        cmd = cmd.args(["--set", set.as_str()]);
    }
    Ok(cmd)
}

/// `helm get values hami -o json`: the user-supplied values of the installed release.
pub fn get_values_cmd(target: &HelmTarget) -> Cmd {
    target.apply(Cmd::new("helm").args(["get", "values", RELEASE, "-o", "json"]))
}

/// The values `--set` lines describe, as helm would nest them (`a.b=c` → `{"a":{"b":"c"}}`), every
/// leaf a string. `None` when a line is not `key=value` or uses helm's list/escape syntax.
pub fn desired_values(sets: &[String]) -> Option<serde_json::Value> {
    let mut root = serde_json::Map::new();
    for set in sets {
        let (key, value) = set.split_once('=')?;
        if key.contains(['[', '\\', ',']) || value.contains(',') {
            return None;
        }
        let parts: Vec<&str> = key.split('.').collect();
        let (last, path) = parts.split_last()?;
        let mut cur = &mut root;
        for p in path {
            let entry = cur
                .entry((*p).to_owned())
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            cur = entry.as_object_mut()?;
        }
        cur.insert(
            (*last).to_owned(),
            serde_json::Value::String(value.to_owned()),
        );
    }
    Some(serde_json::Value::Object(root))
}

fn stringify_leaves(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), stringify_leaves(v)))
                .collect(),
        ),
        serde_json::Value::String(s) => serde_json::Value::String(s.clone()),
        serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
        other => serde_json::Value::String(other.to_string()),
    }
}

/// Whether the installed release already has exactly the values `install-hami` would set
/// (`helm get values -o json` prints `null` when there are none).
pub fn values_match(installed_json: &str, opts: &InstallOptions) -> bool {
    let Ok(installed) = serde_json::from_str::<serde_json::Value>(installed_json.trim()) else {
        return false;
    };
    let Ok(mut sets) = scheduler_image_sets(opts) else {
        return false;
    };
    sets.extend(opts.extra_set.iter().cloned());
    desired_values(&sets).is_some_and(|d| stringify_leaves(&installed) == d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::fixture_text;

    fn target() -> HelmTarget {
        HelmTarget {
            kubeconfig: None,
            context: Some("lab".into()),
            namespace: "kube-system".into(),
        }
    }

    #[test]
    fn uninstall_reaches_the_same_cluster_as_install() {
        let t = HelmTarget {
            kubeconfig: Some("/etc/rancher/k3s/k3s.yaml".into()),
            ..target()
        };
        assert_eq!(
            uninstall_cmd(&t).to_string(),
            "helm uninstall hami --kubeconfig /etc/rancher/k3s/k3s.yaml --kube-context lab --namespace kube-system"
        );
    }

    #[test]
    fn helm_versions() {
        assert_eq!(parse_helm_major("v3.16.2+g13654a5\n").unwrap(), 3);
        assert_eq!(parse_helm_major("v4.0.1+g12345").unwrap(), 4);
        assert!(parse_helm_major("v2.17.0+ga690bad").is_err());
        assert!(parse_helm_major("garbage").is_err());
    }

    #[test]
    fn release_states_from_fixtures() {
        let deployed = parse_helm_list(&fixture_text("helm-list-deployed.json")).unwrap();
        assert_eq!(
            release_state(&deployed),
            ReleaseState::Deployed {
                chart: "hami-2.10.0".into(),
                revision: "1".into()
            }
        );
        assert_eq!(clear_stuck_cmd(&release_state(&deployed), &target()), None);
        let stuck = parse_helm_list(&fixture_text("helm-list-pending-install.json")).unwrap();
        let state = release_state(&stuck);
        assert_eq!(
            state,
            ReleaseState::Stuck {
                status: "pending-install".into(),
                revision: "1".into()
            }
        );
        assert_eq!(
            clear_stuck_cmd(&state, &target()).unwrap().to_string(),
            "helm uninstall hami --kube-context lab --namespace kube-system"
        );
        let upgrade = ReleaseState::Stuck {
            status: "pending-upgrade".into(),
            revision: "3".into(),
        };
        assert_eq!(
            clear_stuck_cmd(&upgrade, &target()).unwrap().to_string(),
            "helm rollback hami 2 --kube-context lab --namespace kube-system"
        );
        assert_eq!(
            release_state(&parse_helm_list("[]").unwrap()),
            ReleaseState::Absent
        );
        assert_eq!(
            release_state(&parse_helm_list("").unwrap()),
            ReleaseState::Absent
        );
        assert!(parse_helm_list("{").is_err());
    }

    #[test]
    fn numeric_revision_is_accepted() {
        let l = parse_helm_list(r#"[{"name":"hami","namespace":"kube-system","revision":2,"status":"failed","chart":"hami-2.9.0"}]"#).unwrap();
        assert_eq!(
            release_state(&l),
            ReleaseState::Stuck {
                status: "failed".into(),
                revision: "2".into()
            }
        );
    }

    #[test]
    fn default_install_overrides_registry_but_not_tag() {
        let cmd = upgrade_install_cmd(&InstallOptions::default(), &target()).unwrap();
        let line = cmd.to_string();
        assert_eq!(
            line,
            "helm upgrade --install hami hami --repo https://project-hami.github.io/HAMi/ --version 2.10.0 --kube-context lab --namespace kube-system --set scheduler.kubeScheduler.image.registry=registry.k8s.io --set scheduler.kubeScheduler.image.repository=kube-scheduler"
        );
        assert!(!line.contains(".tag="));
        assert!(!line.contains("--wait"));
    }

    #[test]
    fn tag_only_when_asked_and_old_charts_use_old_keys() {
        let opts = InstallOptions {
            scheduler_tag: Some("v1.31.4".into()),
            extra_set: vec!["devicePlugin.runtimeClassName=nvidia".into()],
            ..InstallOptions::default()
        };
        let line = upgrade_install_cmd(&opts, &target()).unwrap().to_string();
        assert!(
            line.contains("--set scheduler.kubeScheduler.image.tag=v1.31.4"),
            "{line}"
        );
        assert!(
            line.ends_with("--set devicePlugin.runtimeClassName=nvidia"),
            "{line}"
        );
        let old = InstallOptions {
            chart_version: "2.6.1".into(),
            ..opts
        };
        let sets = scheduler_image_sets(&old).unwrap();
        assert_eq!(
            sets,
            vec![
                "scheduler.kubeScheduler.image=registry.k8s.io/kube-scheduler".to_owned(),
                "scheduler.kubeScheduler.imageTag=v1.31.4".to_owned()
            ]
        );
        let bad = InstallOptions {
            chart_version: "latest".into(),
            ..InstallOptions::default()
        };
        assert!(matches!(
            scheduler_image_sets(&bad),
            Err(HelmError::BadChartVersion(_))
        ));
    }

    #[test]
    fn installed_values_are_compared_as_helm_nests_them() {
        let opts = InstallOptions {
            extra_set: vec![
                "devicePlugin.runtimeClassName=nvidia".into(),
                "scheduler.leaderElect=false".into(),
            ],
            ..InstallOptions::default()
        };
        let same = r#"{"devicePlugin":{"runtimeClassName":"nvidia"},"scheduler":{"leaderElect":false,"kubeScheduler":{"image":{"registry":"registry.k8s.io","repository":"kube-scheduler"}}}}"#;
        assert!(values_match(same, &opts));
        let other_registry = same.replace("registry.k8s.io", "docker.io");
        assert!(!values_match(&other_registry, &opts));
        assert!(!values_match("null", &opts));
        // Defaults always set the registry and repository, so an install without values differs.
        assert!(!values_match("null", &InstallOptions::default()));
        assert!(!values_match("not json", &opts));
        assert_eq!(
            desired_values(&["a.b=c".into(), "a.d=e".into()]),
            Some(serde_json::json!({"a": {"b": "c", "d": "e"}}))
        );
        assert_eq!(desired_values(&["list[0]=x".into()]), None);
        assert_eq!(desired_values(&["novalue".into()]), None);
    }

    proptest::proptest! {
        #[test]
        fn helm_output_parsers_never_panic(s in ".{0,200}") {
            let _ = parse_helm_major(&s);
            let _ = parse_helm_list(&s);
            let _ = desired_values(std::slice::from_ref(&s));
            let _ = values_match(&s, &InstallOptions::default());
        }
    }

    #[test]
    fn version_goes_through_the_runner() {
        let fake = lab_runner::RecordingRunner::new(&["helm"]);
        fake.reply("helm version", 0, "v4.0.1+gabc\n", "");
        assert_eq!(helm_major(&fake).unwrap(), 4);
        assert_eq!(fake.lines(), vec!["helm version --short".to_owned()]);
        let missing = lab_runner::RecordingRunner::new(&[]);
        assert!(matches!(
            helm_major(&missing),
            Err(HelmError::Run(lab_runner::RunError::NotFound { .. }))
        ));
    }
}
