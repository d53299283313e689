//! The files `cluster-ctl run --out DIR` writes (the contract with evidence-pack, typed in
//! lab-report): `DIR/run.json` (schema `hami-isolation-lab/cluster-run` v1), the evidence of each
//! exercise (`DIR/pods/<pod>.json`, `DIR/events/<pod>.json`, `DIR/probe/<pod>.{json,stderr}`),
//! `DIR/cluster/*.json` and `DIR/manifests/*.yaml`. Every exercise is decided by lab-report's judge
//! over its evidence files as written ([`OutDir::judge`]). Also the scrubbing that keeps secrets out
//! of them: no Secret objects are ever read, managed fields are dropped and pod env keeps names only.

use std::path::{Path, PathBuf};

use lab_report::judge::{EvidenceFile, Judgement, RunContext, judge_exercise};
use serde::Serialize;
use serde_json::Value;

use crate::register::Gpu;

/// The run.json types, defined once in lab-report (evidence-pack reads the same structs).
pub use lab_report::run::{
    AUDIT_CLAIM, CLAIMS, ClusterInfo, Exercise, ExerciseId, ExerciseResult, GpuEntry, RunReport,
    SCHEMA, SCHEMA_VERSION,
};

impl From<&Gpu> for GpuEntry {
    fn from(g: &Gpu) -> Self {
        Self {
            uuid: g.uuid.clone(),
            gpu_type: g.gpu_type.clone(),
            devmem_mib: Some(g.devmem_mib),
            devcore: Some(u64::from(g.devcore)),
            mode: g.mode.clone(),
            health: Some(g.health),
        }
    }
}

/// RFC 3339 UTC timestamp of now.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

/// Removes what must not be captured: `metadata.managedFields`, and every container env `value` /
/// `valueFrom` (names are kept), recursively in any object or list of objects.
pub fn scrub(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(meta)) = map.get_mut("metadata") {
                meta.remove("managedFields");
                if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
                    ann.remove("kubectl.kubernetes.io/last-applied-configuration");
                }
            }
            if let Some(Value::Array(env)) = map.get_mut("env") {
                for e in env.iter_mut() {
                    if let Value::Object(e) = e {
                        e.retain(|k, _| k == "name");
                    }
                }
            }
            for (_, child) in map.iter_mut() {
                scrub(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// Writes files under DIR, creating folders; every value is serialized first, then written.
#[derive(Debug, Clone)]
pub struct OutDir {
    pub root: PathBuf,
}

impl OutDir {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// Writes `rel` (relative path) and returns it for `evidence`.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> std::io::Result<String> {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes)?;
        Ok(rel.to_owned())
    }

    /// What is at `rel` now (`None`: missing or unreadable).
    pub fn read(&self, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.join(rel)).ok()
    }

    /// Judges exercise `id` over its evidence files as written here: the same judgement
    /// evidence-pack makes again over the bundle.
    pub fn judge(&self, id: &ExerciseId, ctx: &RunContext, evidence: &[String]) -> Judgement {
        let bytes: Vec<Option<Vec<u8>>> = evidence.iter().map(|p| self.read(p)).collect();
        let files: Vec<EvidenceFile<'_>> = evidence
            .iter()
            .zip(&bytes)
            .map(|(path, b)| EvidenceFile {
                path,
                bytes: b.as_deref(),
            })
            .collect();
        judge_exercise(id, ctx, &files)
    }

    /// Serializes, scrubs and writes a JSON value.
    pub fn write_json<T: Serialize>(&self, rel: &str, value: &T) -> std::io::Result<String> {
        let mut v = serde_json::to_value(value).map_err(std::io::Error::other)?;
        scrub(&mut v);
        let text = serde_json::to_string_pretty(&v).map_err(std::io::Error::other)?;
        self.write(rel, format!("{text}\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scrub_keeps_env_names_only_and_drops_managed_fields() {
        let mut pod = json!({"metadata": {"name": "p", "managedFields": [{"manager": "x"}]},
            "spec": {"containers": [{"name": "c", "env": [{"name": "TOKEN", "value": "s3cret"},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]}]}});
        scrub(&mut pod);
        let text = pod.to_string();
        assert!(
            !text.contains("s3cret")
                && !text.contains("secretKeyRef")
                && !text.contains("managedFields"),
            "{text}"
        );
        assert!(text.contains("TOKEN") && text.contains("PW"));
        let mut list = json!([pod.clone(), {"items": [pod]}]);
        scrub(&mut list);
    }

    #[test]
    fn judgement_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutDir::new(dir.path());
        let rel = out.write("probe/hami-share-a.json", b"").unwrap();
        let ctx = RunContext {
            slice_mib: Some(8000),
            max_overhead_pct: None,
        };
        let j = out.judge(&ExerciseId::E2, &ctx, &[rel]);
        assert!(!j.is_supported());
        assert!(
            j.reason.starts_with("probe/hami-share-a.json is empty"),
            "{}",
            j.reason
        );
        let gone = out.judge(&ExerciseId::E2, &ctx, &["probe/gone.json".into()]);
        assert!(gone.reason.contains("is missing"), "{}", gone.reason);
    }
}
