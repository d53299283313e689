//! Check ids: the stable names of gpu-probe's checks (`view.device0`, `cap.device0`, `mechanism`,
//! `audit.<path>`, `overhead`, `compute`, `selftest`, …), built and parsed in one place, and the
//! claim ids of evidence-pack's local mode (`<report stem>:<check id>`).

use std::fmt;

/// The id of one gpu-probe check.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckId {
    /// `view.device<N>`: device N shows the slice.
    View { device: u32 },
    /// `cap.device<N>`: device N cannot hold more than the slice.
    Cap { device: u32 },
    /// `mechanism`: HAMi-core is injected and live.
    Mechanism,
    /// `audit.<word>`: one allocation path of `gpu-probe audit` (see [`audit_check_id`]).
    Audit(String),
    /// `overhead`: latencies and bandwidth (a measurement).
    Overhead,
    /// `compute`: throughput against the SM limit (a measurement unless a band is judged).
    Compute,
    /// `selftest`: a HAMi-core library checked without Kubernetes.
    Selftest,
    /// `conformance.<cell>`: one cell of `gpu-probe conformance` (e.g. `conformance.path.cuMemAlloc_v2`).
    Conformance(String),
    /// `limits`: the memory-limit environment is well-formed (only ever failed).
    Limits,
    /// `cuda`: the CUDA driver starts and sees a GPU (only ever failed).
    Cuda,
    /// Any other id, kept as written.
    Other(String),
}

impl CheckId {
    pub fn view(device: u32) -> Self {
        Self::View { device }
    }

    pub fn cap(device: u32) -> Self {
        Self::Cap { device }
    }

    /// The check of an audit path, e.g. `cuMemAllocFromPoolAsync (explicit pool)`.
    pub fn audit_path(path: &str) -> Self {
        Self::parse(&audit_check_id(path))
    }

    /// Reads an id; never fails (unknown ids are [`CheckId::Other`]).
    pub fn parse(id: &str) -> Self {
        let device = |prefix: &str| id.strip_prefix(prefix).and_then(|n| n.parse::<u32>().ok());
        if let Some(device) = device("view.device") {
            return Self::View { device };
        }
        if let Some(device) = device("cap.device") {
            return Self::Cap { device };
        }
        match id {
            "mechanism" => Self::Mechanism,
            "overhead" => Self::Overhead,
            "compute" => Self::Compute,
            "selftest" => Self::Selftest,
            "limits" => Self::Limits,
            "cuda" => Self::Cuda,
            _ => {
                if let Some(word) = id.strip_prefix("audit.").filter(|w| !w.is_empty()) {
                    Self::Audit(word.to_owned())
                } else if let Some(cell) = id.strip_prefix("conformance.").filter(|c| !c.is_empty())
                {
                    Self::Conformance(cell.to_owned())
                } else {
                    Self::Other(id.to_owned())
                }
            }
        }
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::View { device } => write!(f, "view.device{device}"),
            Self::Cap { device } => write!(f, "cap.device{device}"),
            Self::Mechanism => f.write_str("mechanism"),
            Self::Audit(word) => write!(f, "audit.{word}"),
            Self::Overhead => f.write_str("overhead"),
            Self::Compute => f.write_str("compute"),
            Self::Selftest => f.write_str("selftest"),
            Self::Conformance(cell) => write!(f, "conformance.{cell}"),
            Self::Limits => f.write_str("limits"),
            Self::Cuda => f.write_str("cuda"),
            Self::Other(id) => f.write_str(id),
        }
    }
}

/// The check id of an audit path: `audit.` and the path's name before any ` (`, spaces as dashes
/// (`audit.cuMemAlloc_v2`, `audit.child-with-a-cleared-environment`). Reports made before this
/// rule used the path's first word; [`audit_path_matches`] accepts both.
pub fn audit_check_id(path: &str) -> String {
    format!(
        "audit.{}",
        path.split(" (").next().unwrap_or(path).replace(' ', "-")
    )
}

/// Whether the audit path `path` is the one check `id` is about (current or first-word ids).
pub fn audit_path_matches(path: &str, id: &str) -> bool {
    audit_check_id(path) == id
        || id
            .strip_prefix("audit.")
            .is_some_and(|w| path.split_whitespace().next() == Some(w))
}

/// A claim id of evidence-pack's local mode: the check id, prefixed with the report's file stem
/// when several reports were packed (`all-expect-8000:cap.device0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalClaimId {
    /// The report's path without `.json`, when the id carries it.
    pub report: Option<String>,
    pub check: CheckId,
}

impl LocalClaimId {
    /// Reads `stem:check` or `check` (check ids never hold a `:`, stems may).
    pub fn parse(id: &str) -> Self {
        match id.rsplit_once(':') {
            Some((stem, check)) => Self {
                report: Some(stem.to_owned()),
                check: CheckId::parse(check),
            },
            None => Self {
                report: None,
                check: CheckId::parse(id),
            },
        }
    }
}

impl fmt::Display for LocalClaimId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.report {
            Some(stem) => write!(f, "{stem}:{}", self.check),
            None => write!(f, "{}", self.check),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for id in [
            "view.device0",
            "cap.device12",
            "mechanism",
            "audit.cuMemAlloc_v2",
            "audit.child-with-a-cleared-environment",
            "overhead",
            "compute",
            "selftest",
            "limits",
            "cuda",
            "something-new",
        ] {
            assert_eq!(CheckId::parse(id).to_string(), id);
        }
        assert_eq!(CheckId::parse("view.device1"), CheckId::view(1));
        assert_eq!(
            CheckId::parse("view.devicex"),
            CheckId::Other("view.devicex".into())
        );
        assert_eq!(CheckId::parse("audit."), CheckId::Other("audit.".into()));
    }

    #[test]
    fn audit_ids_and_their_matching() {
        assert_eq!(audit_check_id("cuMemAlloc_v2"), "audit.cuMemAlloc_v2");
        assert_eq!(
            CheckId::audit_path("child with a cleared environment (cuMemAlloc_v2)"),
            CheckId::Audit("child-with-a-cleared-environment".into())
        );
        assert!(audit_path_matches(
            "cuMemAllocFromPoolAsync (explicit pool)",
            "audit.cuMemAllocFromPoolAsync"
        ));
        assert!(audit_path_matches(
            "second process of the same container (cuMemAlloc_v2)",
            "audit.second"
        ));
        assert!(!audit_path_matches(
            "cuMemAlloc_v2",
            "audit.cuMemAllocPitch_v2"
        ));
    }

    #[test]
    fn local_claim_ids() {
        let id = LocalClaimId::parse("h1-8000:cap.device0");
        assert_eq!(id.report.as_deref(), Some("h1-8000"));
        assert_eq!(id.check, CheckId::cap(0));
        assert_eq!(id.to_string(), "h1-8000:cap.device0");
        assert_eq!(LocalClaimId::parse("mechanism").report, None);
        assert_eq!(
            LocalClaimId::parse("a:b:view.device0").report.as_deref(),
            Some("a:b")
        );
    }
}
