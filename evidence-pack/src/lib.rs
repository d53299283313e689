//! evidence-pack: turns the lab's outputs (a `cluster-ctl run --out DIR` directory, or gpu-probe
//! reports from a bare GPU box) into a deterministic, checksummed evidence bundle with a readable
//! validation report, and verifies such a bundle.
//!
//! Pipeline: [`input`] reads and redacts every file → [`claims`] derives the [`model::Summary`] →
//! [`render`] turns the summary into report.md / report.html / junit.xml → [`bundle`] plans,
//! writes and verifies the `.tgz`.

pub mod bundle;
pub mod claims;
pub mod input;
pub mod matrix;
pub mod model;
pub mod redact;
pub mod render;

/// Errors of the library; each maps to one exit code ([`Error::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: says what is wrong and how to fix it (exit 2).
    #[error("{what}\n  fix: {fix}")]
    Input { what: String, fix: String },
    /// Reading or writing files failed (exit 3).
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The bundle cannot be opened (exit 3).
    #[error("{what}")]
    Unreadable { what: String },
    /// The bundle is damaged: `file` is the damaged file (exit 3).
    #[error("damaged: {file} {why}")]
    Damaged { file: String, why: String },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Input { .. } => 2,
            Self::Io { .. } | Self::Unreadable { .. } | Self::Damaged { .. } => 3,
        }
    }
}
