//! The text input of `doctor --explain FILE…` (or `-` for stdin): any mix of `kubectl describe`,
//! `kubectl get -o json|yaml`, container and kube-apiserver logs, nvidia-smi output, gpu-probe
//! reports and `cluster-ctl run --out` folders. Each file is read as what it is: a gpu-probe report
//! or run report by its schema, Kubernetes objects (JSON, YAML, lists, arrays) into the snapshot
//! and rendered lines, everything else — truncated JSON included — line by line. Pure apart from
//! reading the files.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::evidence::{
    DocKind, Document, Evidence, Line, LookedAt, ObjectOrigin, ProbeInput, VersionSeen,
};
use super::objects::{self, Rendered};
use super::version;

/// The schema `doctor -o json` writes; such a file is our own answer, not evidence.
pub const DIAGNOSIS_SCHEMA: &str = "hami-isolation-lab/diagnosis";

/// Files larger than this are not read (a log that size is not a paste).
const MAX_FILE_BYTES: u64 = 32 << 20;

/// Why the input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {source}; pass files or folders that exist, or `-` for stdin")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Reads every path (`-` is stdin, a folder is read recursively, sorted) into one [`Evidence`].
pub fn read_paths(
    paths: &[PathBuf],
    stdin: &mut dyn std::io::Read,
) -> Result<Evidence, InputError> {
    let mut ev = Evidence {
        snapshot: crate::doctor::Snapshot {
            hami_namespace: "kube-system".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    for p in paths {
        if p.as_os_str() == "-" {
            let mut buf = Vec::new();
            stdin
                .read_to_end(&mut buf)
                .map_err(|source| InputError::Read {
                    path: "stdin".into(),
                    source,
                })?;
            add_bytes(&mut ev, "stdin", &buf);
        } else {
            add_path(&mut ev, p, true)?;
        }
    }
    finish(&mut ev);
    Ok(ev)
}

/// Reads named texts (tests, and callers that already hold the bytes).
pub fn read_texts(texts: &[(&str, &[u8])]) -> Evidence {
    let mut ev = Evidence {
        snapshot: crate::doctor::Snapshot {
            hami_namespace: "kube-system".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    for (name, bytes) in texts {
        add_bytes(&mut ev, name, bytes);
    }
    finish(&mut ev);
    ev
}

fn add_path(ev: &mut Evidence, p: &Path, given: bool) -> Result<(), InputError> {
    let name = p.display().to_string();
    let err = |source| InputError::Read {
        path: name.clone(),
        source,
    };
    let meta = std::fs::symlink_metadata(p).map_err(err)?;
    if meta.file_type().is_symlink() && !given {
        ev.notes.push(format!(
            "{name}: a symbolic link inside a folder; not followed"
        ));
        return Ok(());
    }
    let meta = if meta.file_type().is_symlink() {
        std::fs::metadata(p).map_err(err)?
    } else {
        meta
    };
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            add_path(ev, &e, false)?;
        }
        return Ok(());
    }
    if !meta.is_file() {
        ev.notes
            .push(format!("{name}: not a regular file; skipped"));
        return Ok(());
    }
    if meta.len() > MAX_FILE_BYTES {
        ev.notes.push(format!(
            "{name}: {} bytes, more than {} MiB; skipped (pass the part that matters, e.g. `tail -n 2000`)",
            meta.len(),
            MAX_FILE_BYTES >> 20
        ));
        return Ok(());
    }
    let bytes = std::fs::read(p).map_err(err)?;
    add_bytes(ev, &name, &bytes);
    Ok(())
}

/// Adds one input, read as what it is.
pub fn add_bytes(ev: &mut Evidence, name: &str, bytes: &[u8]) {
    if bytes.iter().take(8192).any(|&b| b == 0) {
        ev.notes
            .push(format!("{name}: binary (NUL bytes); skipped"));
        return;
    }
    let text = String::from_utf8_lossy(bytes).into_owned();
    if looks_like_json(&text) {
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => {
                if add_json(ev, name, &text, &v) {
                    return;
                }
            }
            Err(e) => ev.notes.push(format!(
                "{name}: not valid JSON ({e}; a truncated paste?): read line by line"
            )),
        }
    } else if looks_like_yaml(&text) {
        let values: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .filter_map(|d| serde::Deserialize::deserialize(d).ok())
            .collect();
        let mut any = false;
        for v in &values {
            any |= add_objects(ev, name, &text, v);
        }
        if any {
            scan_versions(ev, name, &text);
            return;
        }
    }
    add_text(ev, name, &text);
}

/// `{…` or `[` then `{`, `"`, `[`, `]` or a digit: not `[HAMI-core …]` or a `[root@host]#` prompt.
fn looks_like_json(text: &str) -> bool {
    let t = text.trim_start();
    match t.strip_prefix('[') {
        Some(rest) => rest
            .trim_start()
            .starts_with(|c: char| matches!(c, '{' | '"' | '[' | ']') || c.is_ascii_digit()),
        None => t.starts_with('{'),
    }
}

fn looks_like_yaml(text: &str) -> bool {
    text.lines().any(|l| {
        l.starts_with("apiVersion:") || l.starts_with("kind:") || l.starts_with("- apiVersion:")
    })
}

fn add_text(ev: &mut Evidence, name: &str, text: &str) {
    let doc = Document::from_text(name, DocKind::Text, text);
    if ev.snapshot.server_git_version.is_empty()
        && let Some(v) = doc.lines.iter().find_map(|l| {
            l.text
                .trim()
                .strip_prefix("Server Version:")
                .map(|v| v.trim().to_owned())
        })
    {
        ev.snapshot.server_git_version = v;
    }
    scan_versions(ev, name, text);
    ev.looked_at.push(LookedAt {
        source: name.to_owned(),
        read_as: "text".into(),
        size: doc.lines.len(),
    });
    ev.documents.push(doc);
}

fn scan_versions(ev: &mut Evidence, name: &str, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let norm = super::evidence::normalize(l);
        let next = lines.get(i + 1).map(|n| super::evidence::normalize(n));
        if let Some(v) = version::in_line(&norm, next.as_deref()) {
            ev.add_version(VersionSeen {
                version: v,
                source: name.to_owned(),
                line: Some(i + 1),
                text: l.trim().chars().take(200).collect(),
            });
        }
    }
}

/// A JSON input: a report of ours by its schema, or Kubernetes objects. `false` when it is
/// neither (then it is read line by line).
fn add_json(ev: &mut Evidence, name: &str, text: &str, v: &Value) -> bool {
    match v.get("schema").and_then(Value::as_str) {
        Some(s) if s == lab_report::probe::SCHEMA => {
            match serde_json::from_value::<lab_report::probe::Report>(v.clone()) {
                Ok(report) => add_probe(ev, name, text, report),
                Err(e) => {
                    ev.notes.push(format!(
                        "{name}: claims to be a gpu-probe report but does not parse ({e}); read line by line"
                    ));
                    return false;
                }
            }
            return true;
        }
        Some(s) if s == crate::report::SCHEMA => {
            add_run_report(ev, name, v);
            return true;
        }
        Some(DIAGNOSIS_SCHEMA) => {
            ev.notes.push(format!(
                "{name}: an earlier diagnosis; not evidence, skipped"
            ));
            return true;
        }
        _ => {}
    }
    if let Some(releases) = v.get("releases").and_then(Value::as_array) {
        for rel in releases {
            if let Some(chart) = rel.get("chart").and_then(Value::as_str)
                && let Some(ver) = version::in_line(chart, None)
            {
                ev.add_version(VersionSeen {
                    version: ver,
                    source: name.to_owned(),
                    line: None,
                    text: format!("helm release chart {chart}"),
                });
            }
        }
        ev.looked_at.push(LookedAt {
            source: name.to_owned(),
            read_as: "helm list".into(),
            size: releases.len(),
        });
        return true;
    }
    if let Some(git) = v.get("gitVersion").and_then(Value::as_str) {
        if ev.snapshot.server_git_version.is_empty() {
            ev.snapshot.server_git_version = git.to_owned();
        }
        ev.looked_at.push(LookedAt {
            source: name.to_owned(),
            read_as: "server version".into(),
            size: 1,
        });
        return true;
    }
    if add_objects(ev, name, text, v) {
        scan_versions(ev, name, text);
        return true;
    }
    false
}

fn add_probe(ev: &mut Evidence, name: &str, text: &str, report: lab_report::probe::Report) {
    let pod = Path::new(name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_owned());
    let full_card = report.view.as_ref().is_some_and(|v| {
        v.devices
            .iter()
            .any(|d| d.outcome == lab_report::probe::ViewOutcome::ShowsFullCard)
    });
    let outcome = if full_card {
        "shows-full-card".to_owned()
    } else {
        serde_json::to_value(report.verdict.outcome)
            .ok()
            .and_then(|o| o.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    ev.snapshot.probe_verdicts.push((pod.clone(), outcome));
    ev.origins.push(ObjectOrigin {
        kind: "pod",
        namespace: String::new(),
        name: pod.clone(),
        source: name.to_owned(),
        line: text
            .lines()
            .position(|l| l.contains("\"outcome\": \"shows-full-card\""))
            .map(|i| i + 1),
    });
    ev.looked_at.push(LookedAt {
        source: name.to_owned(),
        read_as: format!("gpu-probe report ({})", report.command),
        size: report.checks.len(),
    });
    ev.probes.push(ProbeInput {
        source: name.to_owned(),
        pod,
        report,
        text: text.to_owned(),
    });
}

fn add_run_report(ev: &mut Evidence, name: &str, v: &Value) {
    let cluster = &v["cluster"];
    if let Some(s) = cluster["server_version"].as_str()
        && ev.snapshot.server_git_version.is_empty()
    {
        ev.snapshot.server_git_version = s.to_owned();
    }
    let mut seen: Vec<String> = cluster["hami_chart_version"]
        .as_str()
        .map(|c| format!("hami-{c}"))
        .into_iter()
        .collect();
    seen.extend(
        cluster["hami_images"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.as_str().map(str::to_owned)),
    );
    for s in seen {
        if let Some(ver) = version::in_line(&s, None) {
            ev.add_version(VersionSeen {
                version: ver,
                source: name.to_owned(),
                line: None,
                text: s,
            });
        }
    }
    ev.looked_at.push(LookedAt {
        source: name.to_owned(),
        read_as: "cluster-ctl run report".into(),
        size: v["exercises"].as_array().map_or(0, Vec::len),
    });
}

/// The Kubernetes objects in a value: one object, a `*List`, or an array of objects.
fn object_values(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.iter().flat_map(object_values).collect(),
        Value::Object(m) => {
            let kind = m.get("kind").and_then(Value::as_str).unwrap_or_default();
            if let Some(items) = m.get("items").and_then(Value::as_array) {
                let item_kind = kind.strip_suffix("List").unwrap_or_default().to_owned();
                items
                    .iter()
                    .map(|i| {
                        let mut i = i.clone();
                        if i.get("kind").is_none() && !item_kind.is_empty() {
                            i["kind"] = Value::String(item_kind.clone());
                        }
                        i
                    })
                    .collect()
            } else if !kind.is_empty() && m.contains_key("metadata") {
                vec![v.clone()]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

/// Where in the file's text a rendered line's needle is (JSON escapes the needle; YAML may not).
fn find_line(text_lines: &[&str], needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    let escaped = serde_json::to_string(needle).unwrap_or_default();
    let escaped = escaped.trim_matches('"');
    let short = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    let candidates = [short(escaped, 60), short(needle, 40)];
    candidates
        .iter()
        .filter(|c| !c.is_empty())
        .find_map(|c| text_lines.iter().position(|l| l.contains(c.as_str())))
        .map(|i| i + 1)
}

fn add_objects(ev: &mut Evidence, name: &str, text: &str, v: &Value) -> bool {
    let values = object_values(v);
    let text_lines: Vec<&str> = text.lines().collect();
    let mut rendered: Vec<Rendered> = Vec::new();
    let mut count = 0;
    let mut manifests = 0;
    for obj in values {
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let oname = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let origin_kind: &'static str = match kind.as_str() {
            "Pod" => "pod",
            "Node" => "node",
            "DaemonSet" => "daemonset",
            "Deployment" => "deployment",
            "Endpoints" => "endpoints",
            "Event" => "event",
            _ => continue,
        };
        let parsed = match kind.as_str() {
            // A pod without status is a manifest (e.g. `run`'s manifests/), not cluster state.
            "Pod" if obj.get("status").is_none() => {
                manifests += 1;
                continue;
            }
            "Pod" => serde_json::from_value(obj).map(|p: k8s_openapi::api::core::v1::Pod| {
                rendered.extend(objects::pod_lines(&p));
                if (oname.starts_with("hami-scheduler-")
                    || oname.starts_with("hami-device-plugin-"))
                    && !ns.is_empty()
                {
                    ev.snapshot.hami_namespace.clone_from(&ns);
                }
                ev.snapshot.pods.push(p);
            }),
            "Node" => serde_json::from_value(obj).map(|n: k8s_openapi::api::core::v1::Node| {
                rendered.extend(objects::node_lines(&n));
                ev.snapshot.nodes.push(n);
            }),
            "DaemonSet" => serde_json::from_value(obj)
                .map(|d: k8s_openapi::api::apps::v1::DaemonSet| ev.snapshot.daemonsets.push(d)),
            "Deployment" => {
                serde_json::from_value(obj).map(|d: k8s_openapi::api::apps::v1::Deployment| {
                    if oname == "hami-scheduler" {
                        if !ns.is_empty() {
                            ev.snapshot.hami_namespace.clone_from(&ns);
                        }
                        ev.snapshot.scheduler = Some(d);
                    }
                })
            }
            "Endpoints" => {
                serde_json::from_value(obj).map(|e: k8s_openapi::api::core::v1::Endpoints| {
                    if oname == "hami-scheduler" {
                        ev.snapshot.scheduler_endpoints = Some(e);
                    }
                })
            }
            _ => serde_json::from_value(obj).map(|e: k8s_openapi::api::core::v1::Event| {
                rendered.push(objects::event_line(&e));
                ev.snapshot.events.push(e);
            }),
        };
        match parsed {
            Ok(()) => {
                count += 1;
                ev.origins.push(ObjectOrigin {
                    kind: origin_kind,
                    namespace: ns,
                    line: find_line(&text_lines, &oname),
                    name: oname,
                    source: name.to_owned(),
                });
            }
            Err(e) => ev.notes.push(format!(
                "{name}: a {kind} {oname:?} that does not parse ({e}); skipped"
            )),
        }
    }
    if count == 0 {
        if manifests > 0 {
            ev.looked_at.push(LookedAt {
                source: name.to_owned(),
                read_as: "pod manifests (no status: not cluster state)".into(),
                size: manifests,
            });
            return true;
        }
        return false;
    }
    let lines = rendered
        .into_iter()
        .map(|r| Line {
            text: super::evidence::normalize(&r.text),
            number: find_line(&text_lines, &r.needle),
            quote: r.text,
        })
        .collect();
    ev.documents.push(Document {
        source: name.to_owned(),
        kind: DocKind::Objects,
        lines,
    });
    ev.looked_at.push(LookedAt {
        source: name.to_owned(),
        read_as: "Kubernetes objects".into(),
        size: count,
    });
    true
}

/// After all inputs: gpu-probe's stderr next to its report is the probe's own output.
fn finish(ev: &mut Evidence) {
    let stems: Vec<String> = ev
        .probes
        .iter()
        .map(|p| p.source.trim_end_matches(".json").to_owned())
        .collect();
    for d in &mut ev.documents {
        if d.kind != DocKind::Text {
            continue;
        }
        let stem = d
            .source
            .strip_suffix(".stderr")
            .or_else(|| d.source.strip_suffix(".err"));
        if stem.is_some_and(|s| stems.iter().any(|p| p == s)) {
            d.kind = DocKind::ProbeOutput;
            if let Some(l) = ev.looked_at.iter_mut().find(|l| l.source == d.source) {
                l.read_as = "gpu-probe stderr".into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_folder_gives_each_probe_report_its_verdict_and_a_full_card_view_wins() {
        // The real bare-H100 `all` report saw the full card; its audit report has no view.
        let bare = crate::testdata::h100_bare("h100-bare-all-expect-8000.json");
        let audit = crate::testdata::h100_bare("h100-bare-audit-expect-8000.json");
        let active = crate::testdata::h200("h1-8000.json");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("probe")).unwrap();
        for (file, text) in [
            ("hami-share-a.json", &bare),
            ("hami-share-a-audit.json", &audit),
            ("hami-share-b.json", &active),
        ] {
            std::fs::write(dir.path().join("probe").join(file), text).unwrap();
        }
        let ev = read_paths(&[dir.path().to_path_buf()], &mut std::io::empty()).unwrap();
        let mut verdicts = ev.snapshot.probe_verdicts.clone();
        verdicts.sort();
        assert_eq!(
            verdicts,
            vec![
                ("hami-share-a".to_owned(), "shows-full-card".to_owned()),
                ("hami-share-a-audit".to_owned(), "not-verified".to_owned()),
                ("hami-share-b".to_owned(), "verified".to_owned()),
            ]
        );
    }

    #[test]
    fn inputs_are_read_as_what_they_are() {
        let node = br#"{"apiVersion":"v1","kind":"NodeList","items":[{"metadata":{"name":"n1","labels":{"gpu":"on"},
            "annotations":{"hami.io/node-nvidia-register":"GPU-1,10,11264,100,NVIDIA-X,0,false:"}}}]}"#;
        let ev = read_texts(&[
            ("nodes.json", node),
            ("truncated.json", b"{\"kind\": \"Pod\", \"metad"),
            ("log.txt", b"a\r\nServer Version: v1.31.2+k3s1\r\n"),
        ]);
        assert_eq!(ev.snapshot.nodes.len(), 1);
        assert_eq!(ev.snapshot.server_git_version, "v1.31.2+k3s1");
        assert!(
            ev.notes.iter().any(|n| n.contains("truncated.json")),
            "{:?}",
            ev.notes
        );
        let rendered = &ev.documents[0];
        assert_eq!(rendered.kind, DocKind::Objects);
        assert!(
            rendered.lines[0]
                .text
                .contains("node n1 annotation hami.io/node-nvidia-register")
        );
        assert_eq!(rendered.lines[0].number, Some(2));
        assert_eq!(ev.documents.len(), 3, "the truncated JSON is read as text");
        let log = read_texts(&[("c.log", b"[HAMI-core Msg(1:2:x.c:3)]: Initializing.....\n")]);
        assert!(
            log.notes.is_empty(),
            "a log line in brackets is not broken JSON: {:?}",
            log.notes
        );
    }
}
