//! `run.json`: what `cluster-ctl run --out DIR` writes and evidence-pack reads (schema
//! `hami-isolation-lab/cluster-run` v1), with typed exercise ids and results, and the paths of
//! the evidence files cluster-ctl writes beside it.
//!
//! Missing fields read as their defaults (`#[serde(default)]`), so files written by older
//! cluster-ctl builds stay readable; unknown fields are ignored.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::judge::{Judgement, Support};

/// Identifies the document type.
pub const SCHEMA: &str = "hami-isolation-lab/cluster-run";
/// Bumped on any incompatible change to [`RunReport`].
pub const SCHEMA_VERSION: u32 = 1;

/// Which exercise: the five of every run, the `--audit` ones, and any later id kept as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExerciseId {
    /// Co-residency: two share pods on one node and one GPU, placed by hami-scheduler.
    E1,
    /// Share pod A is held to its slice.
    E2,
    /// Share pod B is held to its slice.
    E3,
    /// The oversubscribe pod stays Pending, refused for card memory.
    E4,
    /// The isolation comes from HAMi-core inside both containers.
    E5,
    /// `--audit`: no allocation path of share pod A escapes the slice.
    A1,
    /// `--audit --max-overhead-pct N`: HAMi-core's latency overhead stays within N %.
    A2,
    /// Bypass: no GPU request, `NVIDIA_VISIBLE_DEVICES=all` (see [`BYPASSES`]).
    B1,
    /// Bypass: a slice, `CUDA_DISABLE_CONTROL=true`.
    B2,
    /// Bypass: a slice, its own larger `CUDA_DEVICE_MEMORY_LIMIT_0`.
    B3,
    /// Bypass: a slice, `NVIDIA_VISIBLE_DEVICES=all`.
    B4,
    /// Bypass: a slice pod that writes its own HAMi-core shared region.
    B5,
    /// Bypass: privileged, no GPU request.
    B6,
    /// An id this version does not know (later exercises, e.g. `fleet`).
    Other(String),
}

impl ExerciseId {
    pub fn parse(id: &str) -> Self {
        match id {
            "E1" => Self::E1,
            "E2" => Self::E2,
            "E3" => Self::E3,
            "E4" => Self::E4,
            "E5" => Self::E5,
            "A1" => Self::A1,
            "A2" => Self::A2,
            "B1" => Self::B1,
            "B2" => Self::B2,
            "B3" => Self::B3,
            "B4" => Self::B4,
            "B5" => Self::B5,
            "B6" => Self::B6,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::E1 => "E1",
            Self::E2 => "E2",
            Self::E3 => "E3",
            Self::E4 => "E4",
            Self::E5 => "E5",
            Self::A1 => "A1",
            Self::A2 => "A2",
            Self::B1 => "B1",
            Self::B2 => "B2",
            Self::B3 => "B3",
            Self::B4 => "B4",
            Self::B5 => "B5",
            Self::B6 => "B6",
            Self::Other(id) => id,
        }
    }
}

impl fmt::Display for ExerciseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ExerciseId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ExerciseId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(Self::parse(&text))
    }
}

impl JsonSchema for ExerciseId {
    fn schema_name() -> Cow<'static, str> {
        "ExerciseId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "E1–E5 (every run), A1 and A2 (--audit), B1–B6 (bypass exercises); later ids are kept as written",
            "examples": ["E1", "E2", "E3", "E4", "E5", "A1", "A2", "B1", "B2", "B3", "B4", "B5", "B6"]
        })
    }
}

/// `pass` | `fail` | `not-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExerciseResult {
    Pass,
    Fail,
    #[serde(alias = "not run", alias = "skipped")]
    NotRun,
    /// A word this version does not know: counted as a failure.
    #[serde(other)]
    Unknown,
}

/// One exercise of `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Exercise {
    pub id: ExerciseId,
    #[serde(default)]
    pub claim: String,
    pub result: ExerciseResult,
    #[serde(default)]
    pub reason: String,
    /// The numbers behind the result (free-form, for people; the judgement reads the evidence).
    #[serde(default)]
    pub numbers: serde_json::Map<String, Value>,
    /// Paths relative to DIR of the files the result rests on (see [`crate::judge`] for what each
    /// exercise needs).
    #[serde(default)]
    pub evidence: Vec<String>,
}

impl Exercise {
    pub fn new(id: ExerciseId, claim: &str) -> Self {
        Self {
            id,
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

    /// Takes the judge's word: pass only when the evidence shows the claim.
    pub fn apply(&mut self, j: &Judgement) {
        let result = match j.support {
            Support::Supported => ExerciseResult::Pass,
            Support::Unsupported | Support::Measured => ExerciseResult::Fail,
        };
        self.set(result, j.reason.clone());
        for (k, v) in &j.numbers {
            self.numbers.insert(k.clone(), v.clone());
        }
    }
}

/// One GPU of `cluster.gpus` (from HAMi's node registration).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct GpuEntry {
    #[serde(default)]
    pub uuid: String,
    #[serde(default, rename = "type")]
    pub gpu_type: String,
    #[serde(default)]
    pub devmem_mib: Option<u64>,
    #[serde(default)]
    pub devcore: Option<u64>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub health: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ClusterInfo {
    #[serde(default)]
    pub server_version: String,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub gpus: Vec<GpuEntry>,
    #[serde(default)]
    pub hami_chart_version: Option<String>,
    #[serde(default)]
    pub hami_images: Vec<String>,
    #[serde(default)]
    pub scheduler_image: Option<String>,
}

/// `DIR/run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunReport {
    pub schema: String,
    pub schema_version: u32,
    /// RFC 3339 UTC.
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub cluster: ClusterInfo,
    /// The slice each share pod asked for (`nvidia.com/gpumem`, MiB).
    #[serde(default)]
    pub slice_mib: Option<u64>,
    #[serde(default)]
    pub oversubscribe_mib: Option<u64>,
    /// `--max-overhead-pct`: the bound A2 holds the overhead to (absent: overhead is a measurement).
    #[serde(default)]
    pub max_overhead_pct: Option<f64>,
    #[serde(default)]
    pub exercises: Vec<Exercise>,
}

impl RunReport {
    /// 0 when every exercise passed, 1 when one failed, 3 when none failed but one could not run.
    pub fn exit_code(&self) -> u8 {
        let any = |r: ExerciseResult| self.exercises.iter().any(|e| e.result == r);
        if any(ExerciseResult::Fail) || any(ExerciseResult::Unknown) {
            1
        } else if any(ExerciseResult::NotRun) {
            3
        } else {
            0
        }
    }

    pub fn exercise(&self, id: &ExerciseId) -> Option<&Exercise> {
        self.exercises.iter().find(|e| &e.id == id)
    }

    /// What the judge needs from the run besides the evidence files.
    pub fn context(&self) -> crate::judge::RunContext {
        crate::judge::RunContext {
            slice_mib: self.slice_mib,
            max_overhead_pct: self.max_overhead_pct,
        }
    }
}

/// The claims of the five exercises every run has.
pub const CLAIMS: [(ExerciseId, &str); 5] = [
    (
        ExerciseId::E1,
        "Two share pods scheduled by hami-scheduler run on the same node and the same GPU UUID.",
    ),
    (
        ExerciseId::E2,
        "Share pod A sees and can allocate only its slice of GPU memory: every source of its view shows at most the slice, and HAMi-core refused it at or below the slice.",
    ),
    (
        ExerciseId::E3,
        "Share pod B sees and can allocate only its slice of GPU memory: every source of its view shows at most the slice, and HAMi-core refused it at or below the slice.",
    ),
    (
        ExerciseId::E4,
        "A pod that fits an empty card but not beside the two slices stays Pending, refused by hami-scheduler for CardInsufficientMemory.",
    ),
    (
        ExerciseId::E5,
        "The isolation comes from HAMi-core inside the containers: both co-resident pods are capped to their slice on one GPU.",
    ),
];

/// The claim of the `--audit` exercise.
pub const AUDIT_CLAIM: &str = "In share pod A, no allocation path (pitch, managed, async, pools, VMM, arrays, a cleared-env child, a second process) holds more than the slice (gpu-probe audit).";

/// The claim of the overhead bound (`--max-overhead-pct`).
pub fn overhead_claim(max_pct: f64) -> String {
    format!(
        "HAMi-core adds at most {max_pct} % to the median latency of cuMemAlloc_v2, cuMemFree_v2 and an empty kernel launch in share pod A, against a pod without HAMi-core measured in the same run."
    )
}

/// The share pods, the oversubscribe pod and the `--audit` baseline pod.
pub const SHARE_A: &str = "hami-share-a";
pub const SHARE_B: &str = "hami-share-b";
pub const OVERSUBSCRIBE: &str = "hami-oversubscribe";
pub const BASELINE: &str = "hami-baseline";

/// What a bypass pod was given, against which what it reached is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    /// No GPU request: any GPU memory it sees or holds is more than it was given.
    Nothing,
    /// The run's slice (`slice_mib` of run.json).
    Slice,
}

/// One bypass exercise: a pod that tries to get more GPU than it was given, around HAMi rather
/// than through it. Contained when it is refused at admission, sees no GPU, or is held to what it
/// was given; escaped otherwise (with the memory it reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bypass {
    /// `B1` … `B6` (as [`ExerciseId::parse`] reads it).
    pub id: &'static str,
    /// The pod's name.
    pub pod: &'static str,
    pub given: Given,
    /// What it tries, for people.
    pub tries: &'static str,
}

impl Bypass {
    pub fn exercise_id(&self) -> ExerciseId {
        ExerciseId::parse(self.id)
    }

    /// The claim recorded in run.json: the bypass is contained.
    pub fn claim(&self) -> String {
        format!(
            "A pod that {} gets no more GPU memory than it was given ({}): it is refused at admission, sees no GPU, or is held to it.",
            self.tries,
            match self.given {
                Given::Nothing => "none",
                Given::Slice => "its slice",
            }
        )
    }
}

/// The bypass exercises, in order.
pub const BYPASSES: [Bypass; 6] = [
    Bypass {
        id: "B1",
        pod: "hami-bypass-b1",
        given: Given::Nothing,
        tries: "requests no GPU but sets NVIDIA_VISIBLE_DEVICES=all",
    },
    Bypass {
        id: "B2",
        pod: "hami-bypass-b2",
        given: Given::Slice,
        tries: "has a slice and sets CUDA_DISABLE_CONTROL=true",
    },
    Bypass {
        id: "B3",
        pod: "hami-bypass-b3",
        given: Given::Slice,
        tries: "has a slice and sets its own larger CUDA_DEVICE_MEMORY_LIMIT_0",
    },
    Bypass {
        id: "B4",
        pod: "hami-bypass-b4",
        given: Given::Slice,
        tries: "has a slice and sets NVIDIA_VISIBLE_DEVICES=all",
    },
    Bypass {
        id: "B5",
        pod: "hami-bypass-b5",
        given: Given::Slice,
        tries: "has a slice and rewrites the limit in its own HAMi-core shared region",
    },
    Bypass {
        id: "B6",
        pod: "hami-bypass-b6",
        given: Given::Nothing,
        tries: "is privileged and requests no GPU",
    },
];

/// The bypass exercise of an id, if it is one.
pub fn bypass(id: &ExerciseId) -> Option<&'static Bypass> {
    BYPASSES.iter().find(|b| b.id == id.as_str())
}

/// `admission/<pod>.json`: the API server's refusal of a pod's creation (a `Status` object),
/// written when the pod was refused; an admitted pod has `pods/<pod>.json` instead.
pub fn admission_file(pod: &str) -> String {
    format!("admission/{pod}.json")
}

/// `pods/<pod>.json`: the Pod object as the decision saw it.
pub fn pod_file(pod: &str) -> String {
    format!("pods/{pod}.json")
}

/// `events/<pod>.json`: the events about a pod when its exercise was decided.
pub fn events_file(pod: &str) -> String {
    format!("events/{pod}.json")
}

/// `probe/<pod>.json` (`gpu-probe all`), or `probe/<pod>-<stem>.json` for `audit`, `overhead`, ….
pub fn probe_file(pod: &str, stem: Option<&str>) -> String {
    match stem {
        Some(s) => format!("probe/{pod}-{s}.json"),
        None => format!("probe/{pod}.json"),
    }
}

/// The stderr beside a probe report.
pub fn probe_stderr(pod: &str, stem: Option<&str>) -> String {
    probe_file(pod, stem).replace(".json", ".stderr")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_results_read_and_write_as_words() {
        let ex: Exercise =
            serde_json::from_str(r#"{"id":"E4","result":"not run","extra":1}"#).unwrap();
        assert_eq!(ex.id, ExerciseId::E4);
        assert_eq!(ex.result, ExerciseResult::NotRun);
        assert!(ex.claim.is_empty() && ex.evidence.is_empty());
        let later: Exercise =
            serde_json::from_str(r#"{"id":"fleet","result":"passed-ish"}"#).unwrap();
        assert_eq!(later.id, ExerciseId::Other("fleet".into()));
        assert_eq!(later.result, ExerciseResult::Unknown);
        let v = serde_json::to_value(Exercise::new(ExerciseId::A1, "c")).unwrap();
        assert_eq!(v["id"], "A1");
        assert_eq!(v["result"], "not-run");
    }

    #[test]
    fn exit_code_from_results() {
        let mut r = RunReport {
            schema: SCHEMA.into(),
            schema_version: SCHEMA_VERSION,
            started_at: None,
            finished_at: None,
            cluster: ClusterInfo::default(),
            slice_mib: Some(8000),
            oversubscribe_mib: None,
            max_overhead_pct: None,
            exercises: CLAIMS
                .iter()
                .map(|(id, c)| Exercise::new(id.clone(), c))
                .collect(),
        };
        assert_eq!(r.exit_code(), 3);
        for e in &mut r.exercises {
            e.set(ExerciseResult::Pass, "ok");
        }
        assert_eq!(r.exit_code(), 0);
        r.exercises[3].set(ExerciseResult::Unknown, "?");
        assert_eq!(r.exit_code(), 1);
        assert!(r.exercise(&ExerciseId::E4).is_some());
    }

    #[test]
    fn bypass_ids_read_and_write_as_words() {
        for b in &BYPASSES {
            let id = b.exercise_id();
            assert!(!matches!(id, ExerciseId::Other(_)), "{} is typed", b.id);
            assert_eq!(id.as_str(), b.id);
            assert_eq!(bypass(&id), Some(b));
            assert!(b.pod.ends_with(&b.id.to_ascii_lowercase()));
        }
        assert_eq!(bypass(&ExerciseId::E1), None);
        assert!(BYPASSES[0].claim().contains("(none)"));
        assert!(BYPASSES[1].claim().contains("(its slice)"));
        assert_eq!(
            admission_file("hami-bypass-b1"),
            "admission/hami-bypass-b1.json"
        );
    }

    #[test]
    fn evidence_paths() {
        assert_eq!(pod_file(SHARE_A), "pods/hami-share-a.json");
        assert_eq!(
            probe_file(SHARE_A, Some("audit")),
            "probe/hami-share-a-audit.json"
        );
        assert_eq!(probe_stderr(SHARE_B, None), "probe/hami-share-b.stderr");
        assert_eq!(events_file(OVERSUBSCRIBE), "events/hami-oversubscribe.json");
    }
}
