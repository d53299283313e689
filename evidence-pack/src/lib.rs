//! evidence-pack: turns the lab's outputs (a `cluster-ctl run --out DIR` directory, or gpu-probe
//! reports from a bare GPU box) into a deterministic, checksummed evidence bundle with a readable
//! validation report, and verifies such a bundle.
//!
//! Pipeline: [`input`] reads and redacts every file → [`claims`] derives the [`model::Summary`]
//! ([`fleet`] for a `cluster-ctl fleet` folder) →
//! [`render`] turns the summary into report.md / report.html / junit.xml → [`bundle`] plans,
//! writes and verifies the `.tgz`.

pub mod bundle;
pub mod claims;
pub mod fleet;
pub mod input;
pub mod matrix;
pub mod model;
pub mod redact;
pub mod render;
pub mod sign;

/// Size limits on what `pack` reads and `verify` unpacks, so neither a huge input file nor a
/// small archive that inflates to gigabytes can exhaust memory: every size is checked before
/// the bytes are read (archive entries by their tar header, inputs by their file size, gzip
/// inputs while they inflate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes one file may hold (an input, a decompressed gzip input, an archive entry).
    pub max_entry_bytes: u64,
    /// The most bytes all files together may hold.
    pub max_total_bytes: u64,
    /// The most files a bundle may hold.
    pub max_entries: usize,
}

impl Limits {
    pub const MIB: u64 = 1024 * 1024;
    /// Far above any real bundle (a gpu-probe report is ~10 KiB, a fleet of 1,000 of them packs
    /// to ~20 MiB) and far below what would strain a machine.
    pub const DEFAULT: Self = Self {
        max_entry_bytes: 64 * Self::MIB,
        max_total_bytes: 512 * Self::MIB,
        max_entries: 100_000,
    };

    /// The defaults with the two byte limits given in MiB (the `--max-entry-mib` and
    /// `--max-total-mib` options).
    pub fn from_mib(entry_mib: Option<u64>, total_mib: Option<u64>) -> Self {
        let d = Self::DEFAULT;
        Self {
            max_entry_bytes: entry_mib.map_or(d.max_entry_bytes, |m| m.saturating_mul(Self::MIB)),
            max_total_bytes: total_mib.map_or(d.max_total_bytes, |m| m.saturating_mul(Self::MIB)),
            max_entries: d.max_entries,
        }
    }
}

impl Limits {
    /// Refuses an input file of `len` bytes that would take `pack` past the limits (one file,
    /// all files so far in `total`, the count of files read so far), before it is read.
    pub fn admit_input(
        &self,
        rel: &str,
        len: u64,
        count: usize,
        total: &mut u64,
    ) -> Result<(), Error> {
        let fix = "leave it out of DIR, or raise the limit with --max-entry-mib / --max-total-mib (verify then needs the same option)";
        if len > self.max_entry_bytes {
            return Err(Error::Input {
                what: format!(
                    "{rel} is {}, more than the {} allowed for one file",
                    size_text(len),
                    size_text(self.max_entry_bytes)
                ),
                fix: fix.into(),
            });
        }
        *total = total.saturating_add(len);
        if *total > self.max_total_bytes {
            return Err(Error::Input {
                what: format!(
                    "the input files hold more than the {} allowed in all (at {rel})",
                    size_text(self.max_total_bytes)
                ),
                fix: fix.into(),
            });
        }
        if count >= self.max_entries {
            return Err(Error::Input {
                what: format!(
                    "the input directory holds more than {} files (at {rel})",
                    self.max_entries
                ),
                fix: "pack fewer files (split DIR)".into(),
            });
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `12 MiB` or `1536 bytes`: how a limit or a size is said in messages.
pub fn size_text(bytes: u64) -> String {
    if bytes >= Limits::MIB && bytes.is_multiple_of(Limits::MIB) {
        format!("{} MiB", bytes / Limits::MIB)
    } else if bytes >= Limits::MIB {
        format!(
            "{:.1} MiB ({bytes} bytes)",
            bytes as f64 / Limits::MIB as f64
        )
    } else {
        format!("{bytes} bytes")
    }
}

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
    /// `verify --trust`: the bundle's signature is missing, unreadable, made by another key, or
    /// does not match the bundle's bytes (exit 3).
    #[error("not trusted: {what}")]
    Untrusted { what: String },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Input { .. } => 2,
            Self::Io { .. }
            | Self::Unreadable { .. }
            | Self::Damaged { .. }
            | Self::Untrusted { .. } => 3,
        }
    }
}
