//! Reading the input directory: every regular file, redacted, then the documents evidence-pack
//! understands parsed out of the *redacted* bytes (so no secret can reach a rendered report).
//!
//! Three layouts are accepted: what `cluster-ctl run --out DIR` writes (`run.json` at the top),
//! what `cluster-ctl fleet --out DIR` writes (`fleet.json` and `probe/*.json`, fleet mode), and a
//! directory of gpu-probe JSON reports (local mode). `run.json` and the probe reports are read
//! with lab-report's types, the same ones cluster-ctl and gpu-probe write: unknown fields are
//! ignored and missing ones read as their defaults.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::model::{Mode, Redaction};
use crate::redact;
use crate::{Error, Limits};

pub use lab_report::run::{SCHEMA as RUN_SCHEMA, SCHEMA_VERSION as RUN_SCHEMA_VERSION};

/// `DIR/run.json` as cluster-ctl writes it (the one definition, in lab-report).
pub type RunDoc = lab_report::run::RunReport;

/// Everything read from DIR, redacted.
#[derive(Debug)]
pub struct Inputs {
    pub mode: Mode,
    /// Path relative to DIR (with `/`) → redacted bytes.
    pub files: BTreeMap<String, Vec<u8>>,
    pub redactions: Vec<Redaction>,
    pub run: Option<RunDoc>,
    /// `DIR/fleet.json` (fleet mode).
    pub fleet: Option<lab_report::fleet::FleetReport>,
    /// Relative path → parsed gpu-probe report, in path order.
    pub probes: Vec<(String, lab_report::probe::Report)>,
    pub warnings: Vec<String>,
    /// Earlier bundles found in DIR and left out: told to the user, not recorded in the bundle
    /// (so packing into DIR twice gives the same bytes).
    pub skipped_bundles: Vec<String>,
}

/// Reads, redacts and parses DIR within [`Limits::DEFAULT`].
pub fn read_dir(dir: &Path) -> Result<Inputs, Error> {
    read_dir_limited(dir, &Limits::DEFAULT)
}

/// Reads, redacts and parses DIR; a file larger than `limits` allows is refused before it is
/// read, and gzip files are decompressed (within the same limit) so they are scanned too.
pub fn read_dir_limited(dir: &Path, limits: &Limits) -> Result<Inputs, Error> {
    let meta = fs::metadata(dir).map_err(|e| Error::Input {
        what: format!("cannot read input directory {}: {e}", dir.display()),
        fix: "pass the directory that `cluster-ctl run --out DIR` wrote, or one holding gpu-probe JSON reports".into(),
    })?;
    if !meta.is_dir() {
        return Err(Error::Input {
            what: format!("{} is not a directory", dir.display()),
            fix: "pass a directory (to check an existing bundle, use `evidence-pack verify FILE.tgz`)".into(),
        });
    }
    let mut warnings = Vec::new();
    let mut files = BTreeMap::new();
    let mut skipped_bundles = Vec::new();
    let mut read = (limits, 0u64); // the limits, and the bytes read so far
    walk(
        dir,
        dir,
        &mut files,
        &mut warnings,
        &mut skipped_bundles,
        &mut read,
    )?;
    let redactions = redact::redact_inputs(&mut files, limits)?;
    let run = match files.get("run.json") {
        Some(bytes) => Some(parse_run(bytes)?),
        None => None,
    };
    let fleet = match files.get("fleet.json") {
        Some(bytes) if run.is_none() => Some(parse_fleet(bytes)?),
        Some(_) => {
            return Err(Error::Input {
                what: format!("{} holds both run.json and fleet.json", dir.display()),
                fix: "pack the folder of one `cluster-ctl run --out DIR` or one `cluster-ctl fleet --out DIR`, not both".into(),
            });
        }
        None => None,
    };
    // Where a probe report that is not one is worth a warning: everywhere in local mode, under
    // probe/ otherwise.
    let structured = run.is_some() || fleet.is_some();
    let mut probes = Vec::new();
    for (name, bytes) in &files {
        if !name.ends_with(".json")
            || name == "run.json"
            || (fleet.is_some() && name == "fleet.json")
        {
            continue;
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            if !structured || name.starts_with("probe/") {
                warnings.push(format!("{name} is not valid JSON; packed as it is"));
            }
            continue;
        };
        if value.get("schema").and_then(|s| s.as_str()) != Some(lab_report::probe::SCHEMA) {
            if !structured || name.starts_with("probe/") {
                warnings.push(format!("{name} is not a gpu-probe report; packed as it is"));
            }
            continue;
        }
        match serde_json::from_value::<lab_report::probe::Report>(value) {
            Ok(report) => {
                if report.schema_version != lab_report::probe::SCHEMA_VERSION {
                    warnings.push(format!(
                        "{name}: gpu-probe schema_version {} (this evidence-pack reads {}); read anyway",
                        report.schema_version,
                        lab_report::probe::SCHEMA_VERSION
                    ));
                }
                probes.push((name.clone(), report));
            }
            Err(e) => warnings.push(format!(
                "{name} claims to be a gpu-probe report but does not parse ({e}); packed as it is"
            )),
        }
    }
    let mode = if run.is_some() {
        Mode::Cluster
    } else if fleet.is_some() {
        Mode::Fleet
    } else if !probes.is_empty() {
        Mode::Local
    } else {
        return Err(Error::Input {
            what: format!(
                "{} holds neither run.json, fleet.json nor any gpu-probe JSON report",
                dir.display()
            ),
            fix: "pass the directory that `cluster-ctl run --out DIR` or `cluster-ctl fleet --out DIR` wrote, or save `gpu-probe all --output json` into a directory and pass that".into(),
        });
    };
    Ok(Inputs {
        mode,
        files,
        redactions,
        run,
        fleet,
        probes,
        warnings,
        skipped_bundles,
    })
}

fn parse_run(bytes: &[u8]) -> Result<RunDoc, Error> {
    let run: RunDoc = serde_json::from_slice(bytes).map_err(|e| Error::Input {
        what: format!("run.json does not parse: {e}"),
        fix: "run.json must be what `cluster-ctl run --out DIR` wrote; re-run it or fix the file"
            .into(),
    })?;
    if run.schema != RUN_SCHEMA {
        return Err(Error::Input {
            what: format!("run.json has schema `{}`, not `{RUN_SCHEMA}`", run.schema),
            fix: "pass a directory written by `cluster-ctl run --out DIR`".into(),
        });
    }
    if run.schema_version != RUN_SCHEMA_VERSION {
        return Err(Error::Input {
            what: format!(
                "run.json has schema_version {}, this evidence-pack reads {RUN_SCHEMA_VERSION}",
                run.schema_version
            ),
            fix: "use the evidence-pack built from the same lab checkout as cluster-ctl".into(),
        });
    }
    Ok(run)
}

fn parse_fleet(bytes: &[u8]) -> Result<lab_report::fleet::FleetReport, Error> {
    use lab_report::fleet::{SCHEMA, SCHEMA_VERSION};
    let fix =
        "fleet.json must be what `cluster-ctl fleet --out DIR` wrote; re-run it or fix the file";
    let fleet: lab_report::fleet::FleetReport =
        serde_json::from_slice(bytes).map_err(|e| Error::Input {
            what: format!("fleet.json does not parse: {e}"),
            fix: fix.into(),
        })?;
    if fleet.schema != SCHEMA {
        return Err(Error::Input {
            what: format!("fleet.json has schema `{}`, not `{SCHEMA}`", fleet.schema),
            fix: fix.into(),
        });
    }
    if fleet.schema_version != SCHEMA_VERSION {
        return Err(Error::Input {
            what: format!(
                "fleet.json has schema_version {}, this evidence-pack reads {SCHEMA_VERSION}",
                fleet.schema_version
            ),
            fix: "use the evidence-pack built from the same lab checkout as cluster-ctl".into(),
        });
    }
    Ok(fleet)
}

/// Collects regular files under `dir`, sorted by their `/`-separated relative path. Symbolic links
/// are not followed (they could point anywhere, e.g. at a kubeconfig): each one is a warning.
/// `read` is the limits and the bytes read so far: a file over the limits is refused before it
/// is read.
fn walk(
    root: &Path,
    dir: &Path,
    files: &mut BTreeMap<String, Vec<u8>>,
    warnings: &mut Vec<String>,
    skipped_bundles: &mut Vec<String>,
    read: &mut (&Limits, u64),
) -> Result<(), Error> {
    let io = |p: &Path, e: std::io::Error| Error::Io {
        what: format!("cannot read {}", p.display()),
        source: e,
    };
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| io(dir, e))?;
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        let rel = relative(root, &path);
        if meta.file_type().is_symlink() {
            warnings.push(format!(
                "{rel} is a symbolic link; not followed, not packed"
            ));
        } else if meta.is_dir() {
            walk(root, &path, files, warnings, skipped_bundles, read)?;
        } else if meta.is_file() && is_bundle(&rel) {
            skipped_bundles.push(rel);
        } else if meta.is_file() {
            read.0
                .admit_input(&rel, meta.len(), files.len(), &mut read.1)?;
            let bytes = fs::read(&path).map_err(|e| io(&path, e))?;
            files.insert(rel, bytes);
        } else {
            warnings.push(format!("{rel} is not a regular file; not packed"));
        }
    }
    Ok(())
}

/// An earlier bundle in the input directory (e.g. after `pack DIR -o DIR/`) is not packed again,
/// so packing twice gives the same bundle.
fn is_bundle(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.starts_with("hami-evidence-") && name.ends_with(".tgz")
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn run_json_is_read_tolerantly() {
        let run = parse_run(
            br#"{"schema":"hami-isolation-lab/cluster-run","schema_version":1,"future_field":{"x":1},
                "cluster":{"node":"n"},
                "exercises":[{"id":"E1","result":"pass","extra":true}]}"#,
        )
        .unwrap();
        assert_eq!(run.cluster.node, "n");
        assert!(run.cluster.gpus.is_empty() && run.finished_at.is_none());
        assert_eq!(run.exercises[0].claim, "");
        assert_eq!(run.exercises[0].id, lab_report::run::ExerciseId::E1);
        assert!(run.exercises[0].numbers.is_empty() && run.exercises[0].evidence.is_empty());
    }

    #[test]
    fn run_json_of_another_schema_or_version_is_refused_with_a_fix() {
        let e = parse_run(br#"{"schema":"hami-isolation-lab/cluster-run","schema_version":2}"#)
            .unwrap_err();
        assert!(matches!(e, Error::Input { .. }));
        assert!(e.to_string().contains("schema_version 2") && e.to_string().contains("fix:"));
        let e = parse_run(b"{not json").unwrap_err();
        assert!(e.to_string().contains("run.json does not parse"));
    }
}
