//! The files `cluster-ctl run --out DIR` writes (the contract with evidence-pack):
//! `DIR/run.json` (schema `hami-isolation-lab/cluster-run` v1), `DIR/probe/<pod>.{json,stderr}`,
//! `DIR/cluster/*.json` and `DIR/manifests/*.yaml`. Also the scrubbing that keeps secrets out of
//! them: no Secret objects are ever read, managed fields are dropped and pod env keeps names only.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::register::Gpu;

pub const SCHEMA: &str = "hami-isolation-lab/cluster-run";
pub const SCHEMA_VERSION: u32 = 1;

/// `pass` | `fail` | `not-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExerciseResult {
    Pass,
    Fail,
    NotRun,
}

/// One exercise of `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exercise {
    pub id: String,
    pub claim: String,
    pub result: ExerciseResult,
    pub reason: String,
    pub numbers: serde_json::Map<String, Value>,
    /// Paths relative to DIR.
    pub evidence: Vec<String>,
}

impl Exercise {
    pub fn new(id: &str, claim: &str) -> Self {
        Self {
            id: id.to_owned(),
            claim: claim.to_owned(),
            result: ExerciseResult::NotRun,
            reason: "not run".to_owned(),
            numbers: serde_json::Map::new(),
            evidence: Vec::new(),
        }
    }

    pub fn set(&mut self, result: ExerciseResult, reason: impl Into<String>) {
        self.result = result;
        self.reason = reason.into();
    }

    pub fn number(&mut self, key: &str, value: impl Into<Value>) {
        self.numbers.insert(key.to_owned(), value.into());
    }
}

/// The claims of the five exercises.
pub const CLAIMS: [(&str, &str); 5] = [
    (
        "E1",
        "Two share pods scheduled by hami-scheduler run on the same node and the same GPU UUID.",
    ),
    (
        "E2",
        "Share pod A sees and can allocate only its slice of GPU memory (gpu-probe verdict).",
    ),
    (
        "E3",
        "Share pod B sees and can allocate only its slice of GPU memory (gpu-probe verdict).",
    ),
    (
        "E4",
        "A pod that fits an empty card but not beside the two slices stays Pending, refused by hami-scheduler for CardInsufficientMemory.",
    ),
    (
        "E5",
        "The isolation comes from HAMi-core inside the containers: both co-resident pods are capped to their slice on one GPU.",
    ),
];

/// One GPU of `cluster.gpus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuEntry {
    pub uuid: String,
    #[serde(rename = "type")]
    pub gpu_type: String,
    pub devmem_mib: u64,
    pub devcore: u32,
    pub mode: Option<String>,
    pub health: bool,
}

impl From<&Gpu> for GpuEntry {
    fn from(g: &Gpu) -> Self {
        Self {
            uuid: g.uuid.clone(),
            gpu_type: g.gpu_type.clone(),
            devmem_mib: g.devmem_mib,
            devcore: g.devcore,
            mode: g.mode.clone(),
            health: g.health,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterInfo {
    pub server_version: String,
    pub node: String,
    pub gpus: Vec<GpuEntry>,
    pub hami_chart_version: Option<String>,
    pub hami_images: Vec<String>,
    pub scheduler_image: Option<String>,
}

/// `DIR/run.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub schema: &'static str,
    pub schema_version: u32,
    pub started_at: String,
    pub finished_at: String,
    pub cluster: ClusterInfo,
    pub slice_mib: u64,
    pub oversubscribe_mib: u64,
    pub exercises: Vec<Exercise>,
}

impl RunReport {
    /// 0 when every exercise passed, 1 when one failed, 3 when none failed but one could not run.
    pub fn exit_code(&self) -> u8 {
        if self
            .exercises
            .iter()
            .any(|e| e.result == ExerciseResult::Fail)
        {
            1
        } else if self
            .exercises
            .iter()
            .any(|e| e.result == ExerciseResult::NotRun)
        {
            3
        } else {
            0
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

    /// Serializes, scrubs and writes a JSON value.
    pub fn write_json<T: Serialize>(&self, rel: &str, value: &T) -> std::io::Result<String> {
        let mut v = serde_json::to_value(value).map_err(std::io::Error::other)?;
        scrub(&mut v);
        let text = serde_json::to_string_pretty(&v).map_err(std::io::Error::other)?;
        self.write(rel, format!("{text}\n").as_bytes())
    }
}

/// `verdict.outcome` of a gpu-probe JSON report (the only part cluster-ctl reads).
pub fn probe_outcome(report: &str) -> Option<String> {
    let v: Value = serde_json::from_str(report).ok()?;
    v.get("verdict")?
        .get("outcome")?
        .as_str()
        .map(str::to_owned)
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
    fn probe_outcome_reads_only_the_verdict() {
        assert_eq!(
            probe_outcome(r#"{"x":1,"verdict":{"outcome":"verified","exit_code":0}}"#).as_deref(),
            Some("verified")
        );
        assert_eq!(probe_outcome("not json"), None);
        assert_eq!(probe_outcome(r#"{"verdict":{}}"#), None);
    }

    #[test]
    fn exit_code_from_results() {
        let mut r = RunReport {
            schema: SCHEMA,
            schema_version: SCHEMA_VERSION,
            started_at: now_rfc3339(),
            finished_at: now_rfc3339(),
            cluster: ClusterInfo {
                server_version: "v1".into(),
                node: "n".into(),
                gpus: vec![],
                hami_chart_version: None,
                hami_images: vec![],
                scheduler_image: None,
            },
            slice_mib: 8000,
            oversubscribe_mib: 41000,
            exercises: CLAIMS.iter().map(|(id, c)| Exercise::new(id, c)).collect(),
        };
        assert_eq!(r.exit_code(), 3);
        for e in &mut r.exercises {
            e.set(ExerciseResult::Pass, "ok");
        }
        assert_eq!(r.exit_code(), 0);
        r.exercises[3].set(ExerciseResult::Fail, "scheduled");
        assert_eq!(r.exit_code(), 1);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["schema"], "hami-isolation-lab/cluster-run");
        assert_eq!(v["exercises"][3]["result"], "fail");
        assert_eq!(v["exercises"][0]["result"], "pass");
        assert!(v["started_at"].as_str().unwrap().ends_with('Z'));
    }
}
