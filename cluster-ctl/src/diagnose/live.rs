//! The live input: the cluster's objects (`Cluster::snapshot`) rendered into lines, plus the last
//! [`LOG_TAIL_LINES`] lines of the HAMi scheduler's and device plugins' containers (and of a
//! kube-apiserver pod where the control plane runs as pods), all fetched through `crate::api`
//! (each read under `--api-timeout`, retried as every call is) and together under one deadline;
//! what could not be fetched is a note, never a failure. Also `run`'s capture of those logs.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;

use super::evidence::{DocKind, Document, Evidence, Line, LookedAt, VersionSeen};
use super::objects;
use super::version;
use crate::api::{ApiError, Cluster};
use crate::report::OutDir;

/// Lines read from the end of each container's log.
pub const LOG_TAIL_LINES: i64 = 200;
/// Containers whose logs are read, at most (a large cluster has a device plugin per node).
const MAX_LOGS: usize = 24;
/// Log reads at once.
const PARALLEL_LOGS: usize = 6;

/// One container log to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// The previous run's log (the container restarted: its crash is there).
    pub previous: bool,
}

impl LogTarget {
    pub fn name(&self) -> String {
        format!(
            "log {}/{}/{}{}",
            self.namespace,
            self.pod,
            self.container,
            if self.previous { " (previous run)" } else { "" }
        )
    }

    /// The file name `run` keeps it under (`cluster/logs/…`).
    pub fn file_name(&self) -> String {
        format!(
            "{}_{}{}.log",
            self.pod,
            self.container,
            if self.previous { ".previous" } else { "" }
        )
    }
}

fn component(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| {
            l.get("app.kubernetes.io/component")
                .or_else(|| l.get("component"))
        })
        .map(String::as_str)
}

/// The containers whose logs say most about HAMi: its scheduler and device plugins (all their
/// containers; the previous run too where one restarted), and, with `apiserver`, kube-apiserver
/// pods (the webhook errors are there). Pure.
pub fn log_targets(pods: &[Pod], hami_namespace: &str, apiserver: bool) -> Vec<LogTarget> {
    let mut out = Vec::new();
    for p in pods {
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        let name = p.metadata.name.as_deref().unwrap_or_default();
        let hami = ns == hami_namespace
            && (matches!(component(p), Some("hami-scheduler" | "hami-device-plugin"))
                || name.starts_with("hami-scheduler-")
                || name.starts_with("hami-device-plugin-"));
        let kube_apiserver = apiserver
            && ns == "kube-system"
            && (component(p) == Some("kube-apiserver") || name.starts_with("kube-apiserver-"));
        if !hami && !kube_apiserver {
            continue;
        }
        let statuses = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref());
        for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
            let restarted = statuses
                .into_iter()
                .flatten()
                .any(|s| s.name == c.name && s.restart_count > 0);
            for previous in [false, true] {
                if previous && !restarted {
                    continue;
                }
                out.push(LogTarget {
                    namespace: ns.to_owned(),
                    pod: name.to_owned(),
                    container: c.name.clone(),
                    previous,
                });
            }
        }
    }
    out
}

/// Reads the logs of `targets` (each read bounded by the cluster's `--api-timeout`), all under
/// `deadline`; returns what was read, and notes for what was not.
pub async fn read_logs(
    cluster: &Cluster,
    targets: Vec<LogTarget>,
    deadline: Duration,
) -> (Vec<(LogTarget, String)>, Vec<String>) {
    let mut notes = Vec::new();
    let mut targets = targets;
    if targets.len() > MAX_LOGS {
        notes.push(format!(
            "{} container logs not read (more than {MAX_LOGS}); pass them with --explain",
            targets.len() - MAX_LOGS
        ));
        targets.truncate(MAX_LOGS);
    }
    let wanted: Vec<LogTarget> = targets.clone();
    let mut stream = futures::stream::iter(targets.into_iter().map(|t| async move {
        let r = cluster
            .container_log_tail(
                &t.namespace,
                &t.pod,
                &t.container,
                LOG_TAIL_LINES,
                t.previous,
            )
            .await;
        (t, r)
    }))
    .buffer_unordered(PARALLEL_LOGS);
    let until = tokio::time::Instant::now() + deadline;
    let mut got: Vec<(LogTarget, String)> = Vec::new();
    let mut done: Vec<LogTarget> = Vec::new();
    loop {
        match tokio::time::timeout_at(until, stream.next()).await {
            Ok(Some((t, Ok(text)))) => {
                done.push(t.clone());
                got.push((t, text));
            }
            Ok(Some((t, Err(e)))) => {
                notes.push(format!("{}: not read ({e})", t.name()));
                done.push(t);
            }
            Ok(None) => break,
            Err(_) => {
                for t in wanted.iter().filter(|t| !done.contains(t)) {
                    notes.push(format!(
                        "{}: not read within the {} s deadline",
                        t.name(),
                        deadline.as_secs()
                    ));
                }
                break;
            }
        }
    }
    got.sort_by_key(|(t, _)| t.name());
    (got, notes)
}

/// The live state as evidence: objects (complete listing), their rendered lines, the logs.
pub fn evidence_from_live(
    snapshot: crate::doctor::Snapshot,
    logs: Vec<(LogTarget, String)>,
    notes: Vec<String>,
) -> Evidence {
    let mut ev = Evidence {
        complete: true,
        notes,
        ..Default::default()
    };
    let render = |name: &str, lines: Vec<objects::Rendered>| Document {
        source: name.to_owned(),
        kind: DocKind::Objects,
        lines: lines
            .into_iter()
            .map(|r| Line {
                text: super::evidence::normalize(&r.text),
                quote: r.text,
                number: None,
            })
            .collect(),
    };
    let pods: Vec<_> = snapshot.pods.iter().flat_map(objects::pod_lines).collect();
    let events: Vec<_> = snapshot.events.iter().map(objects::event_line).collect();
    let nodes: Vec<_> = snapshot
        .nodes
        .iter()
        .flat_map(objects::node_lines)
        .collect();
    for (name, lines, count) in [
        ("live: pods", pods, snapshot.pods.len()),
        ("live: events", events, snapshot.events.len()),
        ("live: nodes", nodes, snapshot.nodes.len()),
    ] {
        ev.looked_at.push(LookedAt {
            source: name.to_owned(),
            read_as: "Kubernetes objects".into(),
            size: count,
        });
        ev.documents.push(render(name, lines));
    }
    for (source, what) in [
        (
            "live: deployment hami-scheduler",
            snapshot.scheduler.is_some(),
        ),
        (
            "live: endpoints hami-scheduler",
            snapshot.scheduler_endpoints.is_some(),
        ),
    ] {
        ev.looked_at.push(LookedAt {
            source: source.into(),
            read_as: if what { "present" } else { "absent" }.into(),
            size: usize::from(what),
        });
    }
    ev.looked_at.push(LookedAt {
        source: "live: daemonsets".into(),
        read_as: "Kubernetes objects".into(),
        size: snapshot.daemonsets.len(),
    });
    let mut images: Vec<String> = snapshot
        .scheduler
        .as_ref()
        .map(|d| crate::decide::template_images(d.spec.as_ref().map(|s| &s.template)))
        .unwrap_or_default();
    if let Some(chart) = snapshot
        .scheduler
        .as_ref()
        .and_then(|d| d.metadata.labels.as_ref())
        .and_then(|l| l.get("helm.sh/chart"))
    {
        images.push(chart.clone());
    }
    for ds in &snapshot.daemonsets {
        images.extend(crate::decide::template_images(
            ds.spec.as_ref().map(|s| &s.template),
        ));
    }
    for i in images {
        if let Some(v) = version::in_line(&i, None) {
            ev.add_version(VersionSeen {
                version: v,
                source: "live: HAMi objects".into(),
                line: None,
                text: i,
            });
        }
    }
    for (t, text) in logs {
        let doc = Document::from_text(&t.name(), DocKind::Log, &text);
        ev.looked_at.push(LookedAt {
            source: doc.source.clone(),
            read_as: format!("container log (last {LOG_TAIL_LINES} lines)"),
            size: doc.lines.len(),
        });
        ev.documents.push(doc);
    }
    ev.snapshot = snapshot;
    ev
}

/// Adds what an earlier `run --out DIR` kept that the cluster no longer shows: gpu-probe reports
/// and their stderr, captured logs. Its object files are left out: the live objects are newer.
pub fn merge_run_dir(ev: &mut Evidence, dir: &Path) -> Result<(), super::text::InputError> {
    let from = super::text::read_paths(&[dir.to_path_buf()], &mut std::io::empty())?;
    ev.snapshot
        .probe_verdicts
        .extend(from.snapshot.probe_verdicts);
    ev.origins
        .extend(from.origins.into_iter().filter(|o| o.kind == "pod"));
    ev.probes.extend(from.probes);
    ev.documents.extend(
        from.documents
            .into_iter()
            .filter(|d| d.kind != DocKind::Objects),
    );
    ev.looked_at.extend(
        from.looked_at
            .into_iter()
            .filter(|l| l.read_as != "Kubernetes objects"),
    );
    for v in from.versions {
        ev.add_version(v);
    }
    ev.notes.extend(from.notes);
    Ok(())
}

/// `doctor` on a live cluster (and an earlier run's folder).
pub async fn gather(
    cluster: &Cluster,
    lab_namespace: &str,
    hami_namespace: &str,
    from: Option<&Path>,
) -> Result<Evidence, ApiError> {
    let snapshot = cluster.snapshot(lab_namespace, hami_namespace).await?;
    let targets = log_targets(&snapshot.pods, hami_namespace, true);
    let (logs, notes) = read_logs(cluster, targets, cluster.timeout()).await;
    let mut ev = evidence_from_live(snapshot, logs, notes);
    if let Some(dir) = from
        && let Err(e) = merge_run_dir(&mut ev, dir)
    {
        ev.notes.push(e.to_string());
    }
    Ok(ev)
}

/// `run`'s capture: the HAMi containers' logs into `cluster/logs/`, so a later
/// `doctor --explain DIR` reads them. Failures are warnings: the run's results matter more.
pub async fn capture_logs(
    cluster: &Cluster,
    hami_pods: &[Pod],
    hami_namespace: &str,
    out: &OutDir,
) {
    let targets = log_targets(hami_pods, hami_namespace, false);
    let (logs, notes) = read_logs(cluster, targets, cluster.timeout()).await;
    for (t, text) in logs {
        if let Err(e) = out.write(&format!("cluster/logs/{}", t.file_name()), text.as_bytes()) {
            eprintln!("cluster-ctl: warning: cannot keep {}: {e}", t.name());
        }
    }
    for n in notes {
        eprintln!("cluster-ctl: warning: {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, labels: serde_json::Value, restarts: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "kube-scheduler"}, {"name": "vgpu-scheduler-extender"}]},
            "status": {"containerStatuses": [{"name": "kube-scheduler", "ready": false, "restartCount": restarts,
                "image": "x", "imageID": ""}]}
        }))
        .unwrap()
    }

    #[test]
    fn logs_are_read_from_hami_and_the_api_server_and_the_previous_run_of_a_restarted_container() {
        let pods = vec![
            pod(
                "kube-system",
                "hami-scheduler-7d9c8b6f5-x2k4q",
                json!({"app.kubernetes.io/component": "hami-scheduler"}),
                3,
            ),
            pod(
                "kube-system",
                "kube-apiserver-node1",
                json!({"component": "kube-apiserver"}),
                0,
            ),
            pod("default", "hami-share-a", json!({}), 0),
        ];
        let names: Vec<String> = log_targets(&pods, "kube-system", true)
            .iter()
            .map(LogTarget::name)
            .collect();
        assert_eq!(
            names,
            vec![
                "log kube-system/hami-scheduler-7d9c8b6f5-x2k4q/kube-scheduler",
                "log kube-system/hami-scheduler-7d9c8b6f5-x2k4q/kube-scheduler (previous run)",
                "log kube-system/hami-scheduler-7d9c8b6f5-x2k4q/vgpu-scheduler-extender",
                "log kube-system/kube-apiserver-node1/kube-scheduler",
                "log kube-system/kube-apiserver-node1/vgpu-scheduler-extender",
            ]
        );
        assert_eq!(
            log_targets(&pods, "kube-system", false).len(),
            3,
            "run keeps HAMi's logs only"
        );
    }
}
