//! `cluster-ctl fleet --emit-cronjob --schedule CRON`: continuous verification as Kubernetes
//! objects (pure). The ServiceAccount and RBAC fleet needs are taken from `manifests/rbac.yaml`
//! (compiled in, so what is printed is what the RBAC test enforces), followed by a CronJob that
//! runs `cluster-ctl fleet` in-cluster with that ServiceAccount. Every object is rendered, parsed
//! back into its Kubernetes type and checked before anything is printed.

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Deserialize;

/// manifests/rbac.yaml.
pub const RBAC: &str = include_str!("../../../manifests/rbac.yaml");
/// Namespace of the CronJob, its ServiceAccount and its probe pods.
pub const NAMESPACE: &str = "hami-isolation-lab";
pub const SERVICE_ACCOUNT: &str = "cluster-ctl";
pub const NAME: &str = "hami-fleet";

/// The objects of rbac.yaml that `fleet` in-cluster needs, by kind and name.
const NEEDED: [(&str, &str); 6] = [
    ("Namespace", NAMESPACE),
    ("ServiceAccount", SERVICE_ACCOUNT),
    ("ClusterRole", "hami-isolation-lab:view"),
    ("ClusterRoleBinding", "hami-isolation-lab:view"),
    ("Role", "hami-isolation-lab:fleet"),
    ("RoleBinding", "hami-isolation-lab:fleet"),
];

/// What the CronJob runs.
#[derive(Debug, Clone, PartialEq)]
pub struct CronSpec {
    pub schedule: String,
    /// Image holding `cluster-ctl` and `gpu-probe` (side by side, on PATH).
    pub image: String,
    /// Image of the probe pods (`fleet --image`).
    pub probe_image: String,
    /// `fleet`'s own flags, passed on as they are (`--slice-mib`, `--parallel`, …).
    pub fleet_args: Vec<String>,
    /// `--metrics-file`: written on the node the Job runs on, through a hostPath of its folder
    /// (node-exporter's textfile collector reads it there).
    pub metrics_file: Option<String>,
    pub pushgateway: Option<String>,
    /// `fleet --timeout`: the Job is given this plus time to clean up.
    pub total_timeout_s: u64,
}

/// Why the CronJob cannot be rendered (a usage error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "--schedule {0:?} is not a cron schedule: five fields (minute hour day-of-month month day-of-week, e.g. \"17 */6 * * *\") or a macro such as @hourly, @daily"
    )]
    Schedule(String),
    #[error(
        "--emit-cronjob needs --metrics-file PATH or --pushgateway URL: otherwise the results of each run are lost with its pod"
    )]
    NoSink,
    #[error(
        "--metrics-file {0:?} must be an absolute path (the CronJob mounts its folder from the node)"
    )]
    RelativeMetricsFile(String),
    #[error("manifests/rbac.yaml has no {0} {1}: the CronJob's permissions would be missing")]
    MissingRbac(String, String),
    #[error("the rendered {what} is not a valid Kubernetes object: {error}")]
    Invalid { what: String, error: String },
}

/// One field of a cron schedule: `*`, numbers, ranges, lists, steps, names (`jan`, `mon`).
fn cron_field(field: &str, min: u32, max: u32) -> bool {
    field.split(',').all(|part| {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        if step.is_some_and(|s| s.parse::<u32>().map_or(true, |s| s == 0)) {
            return false;
        }
        if range == "*" {
            return true;
        }
        let value = |v: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .is_some()
                || (v.len() == 3 && v.chars().all(|c| c.is_ascii_alphabetic()))
        };
        match range.split_once('-') {
            Some((a, b)) => value(a) && value(b),
            None => value(range),
        }
    })
}

/// Whether `schedule` is a schedule the CronJob controller accepts (standard cron, as
/// robfig/cron parses it: five fields or a macro).
pub fn valid_schedule(schedule: &str) -> bool {
    let s = schedule.trim();
    if s.starts_with('@') {
        return matches!(
            s,
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly"
        );
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    let bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    fields.len() == 5
        && fields
            .iter()
            .zip(bounds)
            .all(|(f, (lo, hi))| *f == "?" || cron_field(f, lo, hi))
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, yaml: &str) -> Result<T, CronError> {
    serde_yaml_ng::from_str(yaml).map_err(|e| CronError::Invalid {
        what: what.to_owned(),
        error: e.to_string(),
    })
}

/// The RBAC documents fleet needs, as rbac.yaml has them (comments kept), each checked.
pub fn rbac_documents() -> Result<Vec<String>, CronError> {
    let mut docs = Vec::new();
    for (kind, name) in NEEDED {
        let found = RBAC.split("\n---").map(str::trim).find(|doc| {
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(doc).unwrap_or_default();
            v["kind"].as_str() == Some(kind) && v["metadata"]["name"].as_str() == Some(name)
        });
        let Some(doc) = found else {
            return Err(CronError::MissingRbac(kind.into(), name.into()));
        };
        let what = format!("{kind} {name}");
        match kind {
            "Namespace" => drop(parse::<Namespace>(&what, doc)?),
            "ServiceAccount" => drop(parse::<ServiceAccount>(&what, doc)?),
            "ClusterRole" => drop(parse::<ClusterRole>(&what, doc)?),
            "ClusterRoleBinding" => drop(parse::<ClusterRoleBinding>(&what, doc)?),
            "Role" => drop(parse::<Role>(&what, doc)?),
            _ => drop(parse::<RoleBinding>(&what, doc)?),
        }
        docs.push(doc.to_owned());
    }
    Ok(docs)
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// The CronJob, rendered and checked.
pub fn cronjob_yaml(spec: &CronSpec) -> Result<String, CronError> {
    if !valid_schedule(&spec.schedule) {
        return Err(CronError::Schedule(spec.schedule.clone()));
    }
    if spec.metrics_file.is_none() && spec.pushgateway.is_none() {
        return Err(CronError::NoSink);
    }
    let mut args = vec![
        "fleet".to_owned(),
        "--namespace".to_owned(),
        NAMESPACE.to_owned(),
        "--image".to_owned(),
        spec.probe_image.clone(),
    ];
    args.extend(spec.fleet_args.iter().cloned());
    let mut mounts = String::new();
    let mut volumes = String::new();
    if let Some(file) = &spec.metrics_file {
        let path = std::path::Path::new(file);
        let dir = path
            .parent()
            .filter(|_| path.is_absolute())
            .map(|d| d.display().to_string())
            .ok_or_else(|| CronError::RelativeMetricsFile(file.clone()))?;
        args.extend(["--metrics-file".to_owned(), file.clone()]);
        mounts = format!(
            "              volumeMounts:\n                - name: textfile\n                  mountPath: {}\n",
            quoted(&dir)
        );
        volumes = format!(
            "          volumes:\n            - name: textfile\n              hostPath:\n                path: {}\n                type: DirectoryOrCreate\n",
            quoted(&dir)
        );
    }
    if let Some(url) = &spec.pushgateway {
        args.extend(["--pushgateway".to_owned(), url.clone()]);
    }
    let args_yaml: String = args
        .iter()
        .map(|a| format!("                - {}\n", quoted(a)))
        .collect();
    let deadline = spec.total_timeout_s + 300;
    let yaml = format!(
        "# Continuous verification: `cluster-ctl fleet` on a schedule, in-cluster (the ServiceAccount's
# token; no kubeconfig), one probe pod per card in {NAMESPACE}. concurrencyPolicy Forbid: a run
# never overlaps the one before; activeDeadlineSeconds ends a stuck run (SIGTERM: fleet deletes
# its probe pods before it exits).
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {NAME}
  namespace: {NAMESPACE}
  labels:
    app.kubernetes.io/part-of: hami-isolation-lab
spec:
  schedule: {schedule}
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: 600
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 3
  jobTemplate:
    spec:
      backoffLimit: 0
      activeDeadlineSeconds: {deadline}
      template:
        metadata:
          labels:
            app.kubernetes.io/part-of: hami-isolation-lab
            hami-isolation-lab/role: fleet
        spec:
          serviceAccountName: {SERVICE_ACCOUNT}
          restartPolicy: Never
          terminationGracePeriodSeconds: 120
          containers:
            - name: fleet
              image: {image}
              command: [\"cluster-ctl\"]
              args:
{args_yaml}{mounts}{volumes}",
        schedule = quoted(&spec.schedule),
        image = quoted(&spec.image),
    );
    let job: CronJob = parse("CronJob", &yaml)?;
    let ok = job
        .spec
        .as_ref()
        .and_then(|s| s.job_template.spec.as_ref())
        .and_then(|j| j.template.spec.as_ref())
        .is_some_and(|p| {
            p.service_account_name.as_deref() == Some(SERVICE_ACCOUNT)
                && p.containers.first().and_then(|c| c.args.as_ref()) == Some(&args)
        });
    if !ok {
        return Err(CronError::Invalid {
            what: "CronJob".into(),
            error: "its pod does not run fleet with the ServiceAccount and the arguments asked for"
                .into(),
        });
    }
    Ok(yaml)
}

/// Everything `--emit-cronjob` prints: the RBAC documents, then the CronJob.
pub fn render(spec: &CronSpec) -> Result<String, CronError> {
    let mut docs = rbac_documents()?;
    docs.push(cronjob_yaml(spec)?.trim_end().to_owned());
    Ok(docs.join("\n---\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CronSpec {
        CronSpec {
            schedule: "17 */6 * * *".into(),
            image: "registry.example/hami-isolation-lab:0.1".into(),
            probe_image: crate::manifests::DEFAULT_IMAGE.into(),
            fleet_args: vec!["--parallel".into(), "16".into()],
            metrics_file: Some("/var/lib/node_exporter/textfile/hami-isolation.prom".into()),
            pushgateway: Some("http://pushgateway.monitoring:9091".into()),
            total_timeout_s: 3600,
        }
    }

    #[test]
    fn schedules() {
        for ok in [
            "17 */6 * * *",
            "0 3 * * mon-fri",
            "*/15 * * * *",
            "@daily",
            "0 0 1,15 * *",
        ] {
            assert!(valid_schedule(ok), "{ok}");
        }
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "*/0 * * * *",
            "@sometimes",
            "a b c d e f",
        ] {
            assert!(!valid_schedule(bad), "{bad}");
        }
    }

    #[test]
    fn the_cronjob_runs_fleet_in_cluster_with_the_rbac_of_rbac_yaml() {
        let text = render(&spec()).unwrap();
        let docs: Vec<serde_yaml_ng::Value> = text
            .split("\n---\n")
            .map(|d| serde_yaml_ng::from_str(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "CronJob"
            ]
        );
        let job: CronJob = serde_yaml_ng::from_value(docs[6].clone()).unwrap();
        let spec = job.spec.unwrap();
        assert_eq!(spec.schedule, "17 */6 * * *");
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some(SERVICE_ACCOUNT));
        let c = &pod.containers[0];
        let args = c.args.as_ref().unwrap();
        assert!(
            args.windows(2)
                .any(|w| w == ["--pushgateway", "http://pushgateway.monitoring:9091"])
        );
        assert!(args.windows(2).any(|w| w[0] == "--metrics-file"));
        assert_eq!(
            pod.volumes.unwrap()[0].host_path.as_ref().unwrap().path,
            "/var/lib/node_exporter/textfile"
        );
        assert_eq!(
            c.volume_mounts.as_ref().unwrap()[0].mount_path,
            "/var/lib/node_exporter/textfile"
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_fix() {
        let mut s = spec();
        s.schedule = "every hour".into();
        assert!(matches!(render(&s), Err(CronError::Schedule(_))));
        let mut s = spec();
        s.metrics_file = None;
        s.pushgateway = None;
        assert_eq!(render(&s), Err(CronError::NoSink));
        let mut s = spec();
        s.metrics_file = Some("metrics.prom".into());
        assert!(matches!(render(&s), Err(CronError::RelativeMetricsFile(_))));
        // Only the pushgateway: no volume.
        let mut s = spec();
        s.metrics_file = None;
        let text = render(&s).unwrap();
        assert!(!text.contains("hostPath"));
    }
}
