//! The bundle: a plan of files (path, bytes, why), the deterministic `.tgz` written from it, and
//! `verify`, which reads one back and checks it.
//!
//! Invariants: same inputs → same bytes (entries sorted by path; mtime = the bundle's time from
//! the inputs; uid/gid 0, no user or group names, mode 0644; gzip header mtime 0, no file name);
//! every file but `SHA256SUMS` is listed in `SHA256SUMS`; the reports are rendered from
//! `summary.json` alone, so verify renders them again and compares.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::claims;
use crate::input::{self, Inputs};
use crate::model::{ClaimVerdict, Outcome, SCHEMA, SCHEMA_VERSION, Summary, Totals};
use crate::render;
use crate::sign;
use crate::{Error, Limits, size_text};

pub const SUMS: &str = "SHA256SUMS";
const PREFIX: &str = "hami-evidence-";

/// One file of the bundle.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Path inside the bundle's top directory.
    pub path: String,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    pub size: usize,
    /// Why the file is in the bundle.
    pub why: String,
}

/// Everything `pack` will write, computed before anything is written.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// e.g. `hami-evidence-20261125T103000Z`: the top directory and the default file stem.
    pub name: String,
    pub timestamp: String,
    #[serde(skip)]
    pub mtime: u64,
    pub entries: Vec<Entry>,
    /// Earlier bundles found in DIR and left out.
    pub skipped_bundles: Vec<String>,
    #[serde(skip)]
    pub summary: Summary,
    /// The input directory, so `write` can refuse to write over an input.
    #[serde(skip)]
    pub input_dir: PathBuf,
}

impl Plan {
    pub fn file_name(&self) -> String {
        format!("{}.tgz", self.name)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses `--timestamp` or an input's time: RFC 3339 (`2026-11-25T10:30:00Z`) or Unix seconds.
pub fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return jiff::Timestamp::from_second(secs).map_err(|e| e.to_string());
    }
    text.parse::<jiff::Timestamp>().map_err(|e| e.to_string())
}

/// The bundle's time, from the inputs: run.json's `finished_at` (else `started_at`), else the
/// latest probe `started_at_unix`.
pub fn input_time(inputs: &Inputs) -> Result<jiff::Timestamp, Error> {
    if let Some(run) = &inputs.run {
        for (field, value) in [
            ("finished_at", &run.finished_at),
            ("started_at", &run.started_at),
        ] {
            if let Some(v) = value {
                return parse_time(v).map_err(|e| Error::Input {
                    what: format!("run.json {field} `{v}` is not an RFC 3339 time: {e}"),
                    fix: "fix run.json, or give the bundle's time with --timestamp 2026-11-25T10:30:00Z".into(),
                });
            }
        }
    }
    if let Some(fleet) = &inputs.fleet {
        // When the run ended: its start and its duration, to the second.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let secs = fleet
            .started_unix
            .saturating_add(fleet.duration_s.max(0.0).round() as u64);
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        return jiff::Timestamp::from_second(secs).map_err(|e| Error::Input {
            what: format!("fleet.json started_unix {secs} is out of range: {e}"),
            fix: "give the bundle's time with --timestamp 2026-11-25T10:30:00Z".into(),
        });
    }
    if let Some(secs) = inputs.probes.iter().map(|(_, r)| r.started_at_unix).max() {
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        return jiff::Timestamp::from_second(secs).map_err(|e| Error::Input {
            what: format!("probe started_at_unix {secs} is out of range: {e}"),
            fix: "give the bundle's time with --timestamp 2026-11-25T10:30:00Z".into(),
        });
    }
    Err(Error::Input {
        what: "the inputs carry no time (no run.json finished_at, no probe started_at_unix)".into(),
        fix: "give the bundle's time with --timestamp 2026-11-25T10:30:00Z".into(),
    })
}

/// Reads DIR and computes the plan within [`Limits::DEFAULT`]; writes nothing.
pub fn plan(dir: &Path, timestamp: Option<&str>) -> Result<Plan, Error> {
    plan_limited(dir, timestamp, &Limits::DEFAULT)
}

/// Reads DIR and computes the plan; writes nothing. Refuses inputs that would make a bundle
/// `verify` refuses under the same `limits` (a file too large, too many files, too much in all).
pub fn plan_limited(dir: &Path, timestamp: Option<&str>, limits: &Limits) -> Result<Plan, Error> {
    let inputs = input::read_dir_limited(dir, limits)?;
    let ts = match timestamp {
        Some(t) => parse_time(t).map_err(|e| Error::Input {
            what: format!("--timestamp `{t}` is not RFC 3339 or Unix seconds: {e}"),
            fix: "write it like 2026-11-25T10:30:00Z or 1795602600".into(),
        })?,
        None => input_time(&inputs)?,
    };
    let ts = jiff::Timestamp::from_second(ts.as_second()).unwrap_or(ts);
    let rfc = ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let name = format!("{PREFIX}{}", ts.strftime("%Y%m%dT%H%M%SZ"));
    let mtime = u64::try_from(ts.as_second()).unwrap_or(0);
    let summary = claims::summarize(&inputs, &rfc, &name);
    let mut entries: Vec<Entry> = inputs
        .files
        .iter()
        .map(|(rel, bytes)| {
            let redacted = inputs.redactions.iter().any(|r| &r.file == rel);
            Entry {
                path: claims::raw_path(rel),
                size: bytes.len(),
                bytes: bytes.clone(),
                why: if redacted {
                    "raw input (secrets redacted)".into()
                } else {
                    "raw input".into()
                },
            }
        })
        .collect();
    let mut add = |path: &str, bytes: Vec<u8>, why: &str| {
        entries.push(Entry {
            path: path.into(),
            size: bytes.len(),
            bytes,
            why: why.into(),
        });
    };
    add(
        "summary.json",
        summary_bytes(&summary),
        "environment, claims, verdicts, redactions (schema hami-isolation-lab/evidence-summary v1)",
    );
    add(
        "report.md",
        render::markdown(&summary).into_bytes(),
        "validation report for people",
    );
    add(
        "report.html",
        render::html(&summary).into_bytes(),
        "the same report with the cap-search chart (inline SVG)",
    );
    add(
        "junit.xml",
        render::junit(&summary).into_bytes(),
        "one test case per claim, for CI",
    );
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let sums: String = entries
        .iter()
        .map(|e| format!("{}  {}\n", sha256_hex(&e.bytes), e.path))
        .collect();
    entries.push(Entry {
        path: SUMS.into(),
        size: sums.len(),
        bytes: sums.into_bytes(),
        why: "SHA-256 of every other file (sha256sum -c format)".into(),
    });
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    check_plan_limits(&entries, limits)?;
    Ok(Plan {
        name,
        timestamp: rfc,
        mtime,
        entries,
        skipped_bundles: inputs.skipped_bundles.clone(),
        summary,
        input_dir: dir.to_path_buf(),
    })
}

/// The bundle `pack` would write must be one `verify` accepts under the same limits.
fn check_plan_limits(entries: &[Entry], limits: &Limits) -> Result<(), Error> {
    let fix = "leave large files out of DIR, or raise the limit with --max-entry-mib / --max-total-mib (verify then needs the same option)";
    if entries.len() > limits.max_entries {
        return Err(Error::Input {
            what: format!(
                "the bundle would hold {} files, more than the {} a bundle may hold",
                entries.len(),
                limits.max_entries
            ),
            fix: "pack fewer files (split DIR)".into(),
        });
    }
    for e in entries {
        if e.bytes.len() as u64 > limits.max_entry_bytes {
            return Err(Error::Input {
                what: format!(
                    "{} would be {}, more than the {} allowed for one file",
                    e.path,
                    size_text(e.bytes.len() as u64),
                    size_text(limits.max_entry_bytes)
                ),
                fix: fix.into(),
            });
        }
    }
    let total: u64 = entries.iter().map(|e| e.bytes.len() as u64).sum();
    if total > limits.max_total_bytes {
        return Err(Error::Input {
            what: format!(
                "the bundle's files would hold {}, more than the {} allowed in all",
                size_text(total),
                size_text(limits.max_total_bytes)
            ),
            fix: fix.into(),
        });
    }
    Ok(())
}

fn summary_bytes(s: &Summary) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(s).unwrap_or_default();
    v.push(b'\n');
    v
}

/// The `.tgz` bytes of a plan.
pub fn archive_bytes(plan: &Plan) -> Result<Vec<u8>, Error> {
    let io = |e: std::io::Error| Error::Io {
        what: "cannot build the archive in memory".into(),
        source: e,
    };
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    let mut tar = tar::Builder::new(gz);
    for e in &plan.entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(e.bytes.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(plan.mtime);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(
            &mut h,
            format!("{}/{}", plan.name, e.path),
            e.bytes.as_slice(),
        )
        .map_err(io)?;
    }
    let gz = tar.into_inner().map_err(io)?;
    gz.finish().map_err(io)
}

/// What `pack` did with the output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Written {
    Created,
    Replaced,
    /// The file already held exactly these bytes.
    Unchanged,
}

/// Where the bundle goes: `-o FILE`, `-o DIR` (an existing directory, or any path ending in `/`:
/// the default name inside), or the default name here.
pub fn output_path(plan: &Plan, out: Option<&Path>) -> PathBuf {
    match out {
        Some(p) if p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/') => {
            p.join(plan.file_name())
        }
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(plan.file_name()),
    }
}

/// What `write` will do with the output path, decided before anything is written. `pack`
/// never writes over one of its inputs, nor over a file that is not an evidence bundle; an
/// earlier bundle with other bytes is replaced only with `force`.
pub fn decide_output(
    plan: &Plan,
    path: &Path,
    bytes: &[u8],
    force: bool,
) -> Result<Written, Error> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Written::Created),
        Err(e) => {
            return Err(Error::Io {
                what: format!("cannot look at {}", path.display()),
                source: e,
            });
        }
    };
    let shown = path.display();
    if !meta.file_type().is_file() {
        return Err(Error::Input {
            what: format!("{shown} exists and is not a regular file; pack does not replace it"),
            fix: "write the bundle elsewhere (-o FILE, or -o DIR/)".into(),
        });
    }
    if is_input(plan, path) {
        return Err(Error::Input {
            what: format!(
                "{shown} is one of the inputs in {}; pack never writes over an input (not even with --force)",
                plan.input_dir.display()
            ),
            fix: "write the bundle elsewhere (-o FILE, or -o DIR/ outside the input directory)"
                .into(),
        });
    }
    let cannot_read = |e: std::io::Error| Error::Io {
        what: format!("cannot read {shown} (pack does not replace what it cannot read)"),
        source: e,
    };
    if meta.len() == bytes.len() as u64 && std::fs::read(path).map_err(cannot_read)? == bytes {
        return Ok(Written::Unchanged);
    }
    // Read as an archive, streaming and within the limits (the file may be anything, any size).
    let is_bundle = read_archive_limited(path, &Limits::DEFAULT)
        .is_ok_and(|(_, files)| files.contains_key(SUMS) && files.contains_key("summary.json"));
    if !is_bundle {
        return Err(Error::Input {
            what: format!("{shown} exists and is not an evidence bundle; pack does not replace it"),
            fix: "write the bundle elsewhere (-o FILE, or -o DIR/), or remove that file yourself"
                .into(),
        });
    }
    if !force {
        return Err(Error::Input {
            what: format!(
                "{shown} holds an earlier evidence bundle with other bytes; not replaced"
            ),
            fix: "pass --force to replace it, or write the bundle elsewhere (-o FILE, or -o DIR/)"
                .into(),
        });
    }
    Ok(Written::Replaced)
}

/// Whether `path` is a file inside the input directory that `pack` read (or could have read):
/// anything there except an earlier bundle it left out.
pub fn is_input(plan: &Plan, path: &Path) -> bool {
    let (Some(name), Ok(dir)) = (path.file_name(), std::fs::canonicalize(&plan.input_dir)) else {
        return false;
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(parent) = std::fs::canonicalize(parent) else {
        return false;
    };
    let full = parent.join(name);
    match full.strip_prefix(&dir) {
        Ok(rel) => {
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            !plan.skipped_bundles.contains(&rel)
        }
        Err(_) => false,
    }
}

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, then rename),
/// mode `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let io = |what: String| move |e: std::io::Error| Error::Io { what, source: e };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(format!(
        "cannot create the directory {}",
        parent.display()
    )))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&parent)
        .map_err(io(format!("cannot create a file in {}", parent.display())))?;
    tmp.write_all(bytes)
        .map_err(io(format!("cannot write {}", path.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io(format!("cannot set the mode of {}", path.display())))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(io(format!("cannot write {}", path.display())))?;
    tmp.persist(path).map_err(|e| Error::Io {
        what: format!("cannot write {}", path.display()),
        source: e.error,
    })?;
    Ok(())
}

/// Writes the archive atomically, after [`decide_output`] allowed it.
pub fn write(plan: &Plan, path: &Path, force: bool) -> Result<Written, Error> {
    let bytes = archive_bytes(plan)?;
    write_bytes(plan, path, &bytes, force)
}

/// [`write`] with the archive's bytes already built.
pub fn write_bytes(plan: &Plan, path: &Path, bytes: &[u8], force: bool) -> Result<Written, Error> {
    let decision = decide_output(plan, path, bytes, force)?;
    if decision != Written::Unchanged {
        write_atomic(path, bytes, 0o644)?;
    }
    Ok(decision)
}

/// A bundle that was read and checked.
#[derive(Debug)]
pub struct Verified {
    pub name: String,
    pub summary: Summary,
    pub files: usize,
    /// Recomputed from the claims (the summary's own `outcome` must agree).
    pub outcome: Outcome,
    /// Whether the reports were re-rendered and compared (only when the bundle was made by the
    /// same renderer, see [`render::renderer_id`]: another one may render differently).
    pub reports_compared: bool,
    /// Passing claims whose evidence inside the bundle does not show them ([`claims::recheck`]);
    /// any makes the outcome a failure.
    pub unsupported: Vec<claims::Unsupported>,
    /// With `--trust`: the key that signed the bundle (the trusted one, or verify failed).
    pub signed_by: Option<sign::Signer>,
}

/// `verify --trust PUB [--signature FILE]`: the bundle must carry a signature by this key.
#[derive(Debug, Clone)]
pub struct Trust {
    pub public_key: PathBuf,
    /// Default `<bundle>.minisig`.
    pub signature: Option<PathBuf>,
}

fn damaged(file: impl Into<String>, why: impl Into<String>) -> Error {
    Error::Damaged {
        file: file.into(),
        why: why.into(),
    }
}

/// The longest entry name accepted (a GNU long-name record is read into memory).
const MAX_NAME_BYTES: u64 = 4096;
/// The most zero bytes accepted after the tar stream's end (tar pads to a record; GNU tar's
/// record is 10 KiB).
const MAX_TRAILING_ZEROS: u64 = 1024 * 1024;

/// Why an entry name is refused, if it is: it must be `<top>/<relative path>` with no absolute
/// part, no `..`, `.` or empty component anywhere, no backslash and no NUL.
fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.starts_with('/') {
        return Some("has an absolute path");
    }
    if name.contains('\\') || name.contains('\0') {
        return Some("has a backslash or NUL in its path");
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.contains(&"..") {
        return Some("has a `..` component in its path");
    }
    if parts.iter().any(|c| c.is_empty() || *c == ".") {
        return Some("has an empty or `.` component in its path");
    }
    if parts.len() < 2 {
        return Some("is outside the bundle's top directory");
    }
    None
}

/// Reads a `.tgz` into (top directory, path → bytes), within [`Limits::DEFAULT`].
pub fn read_archive(path: &Path) -> Result<(String, BTreeMap<String, Vec<u8>>), Error> {
    read_archive_limited(path, &Limits::DEFAULT)
}

/// Reads a `.tgz` into (top directory, path → bytes); any read error names the entry it hit.
/// Every size is checked against `limits` from the tar header *before* the entry is read, so a
/// small archive that inflates to gigabytes is refused without inflating it.
pub fn read_archive_limited(
    path: &Path,
    limits: &Limits,
) -> Result<(String, BTreeMap<String, Vec<u8>>), Error> {
    let display = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| Error::Unreadable {
        what: format!("cannot open {display}: {e}"),
    })?;
    read_archive_from(std::io::BufReader::new(file), &display, limits)
}

/// [`read_archive_limited`] over any reader; `display` names the archive in messages.
pub fn read_archive_from(
    reader: impl Read,
    display: &str,
    limits: &Limits,
) -> Result<(String, BTreeMap<String, Vec<u8>>), Error> {
    // Every gzip member is read (as gzip and GNU tar do), so nothing can hide in a second one.
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(reader));
    let mut files = BTreeMap::new();
    let mut top: Option<String> = None;
    let mut last = String::from("(the archive's start)");
    let mut total: u64 = 0;
    let mut long_name: Option<Vec<u8>> = None;
    {
        // Raw entries: GNU long names are handled here, with a cap, instead of being read
        // into memory whatever their size.
        let entries = tar
            .entries()
            .map_err(|e| damaged(display, format!("not a readable tar.gz: {e}")))?
            .raw(true);
        for entry in entries {
            let mut entry =
                entry.map_err(|e| damaged(display, format!("unreadable after `{last}`: {e}")))?;
            let kind = entry.header().entry_type();
            let size = entry.size();
            if kind.is_gnu_longname() {
                if long_name.is_some() {
                    return Err(damaged(
                        display,
                        format!("has two long-name records in a row after `{last}`"),
                    ));
                }
                if size > MAX_NAME_BYTES {
                    return Err(damaged(
                        display,
                        format!(
                            "has an entry name of {size} bytes after `{last}` (at most {MAX_NAME_BYTES})"
                        ),
                    ));
                }
                let mut name = Vec::new();
                (&mut entry)
                    .take(size)
                    .read_to_end(&mut name)
                    .map_err(|e| damaged(display, format!("unreadable after `{last}`: {e}")))?;
                while name.last() == Some(&0) {
                    name.pop();
                }
                long_name = Some(name);
                continue;
            }
            let raw_name = long_name
                .take()
                .unwrap_or_else(|| entry.path_bytes().into_owned());
            let name = String::from_utf8(raw_name).map_err(|_| {
                damaged(
                    display,
                    format!("has an entry name after `{last}` that is not UTF-8"),
                )
            })?;
            last = name.clone();
            if let Some(why) = unsafe_name(&name) {
                return Err(damaged(&name, why));
            }
            if !kind.is_file() {
                return Err(damaged(
                    &name,
                    "is not a regular file (bundles hold only files)",
                ));
            }
            if size > limits.max_entry_bytes {
                return Err(damaged(
                    &name,
                    format!(
                        "is {}, more than the {} allowed for one file (--max-entry-mib raises it); not read",
                        size_text(size),
                        size_text(limits.max_entry_bytes)
                    ),
                ));
            }
            total = total.saturating_add(size);
            if total > limits.max_total_bytes {
                return Err(damaged(
                    &name,
                    format!(
                        "takes the bundle past the {} allowed in all (--max-total-mib raises it); not read",
                        size_text(limits.max_total_bytes)
                    ),
                ));
            }
            if files.len() >= limits.max_entries {
                return Err(damaged(
                    &name,
                    format!("is past the {} files a bundle may hold", limits.max_entries),
                ));
            }
            let Some((dir, rel)) = name.split_once('/') else {
                return Err(damaged(&name, "is outside the bundle's top directory"));
            };
            match &top {
                None => top = Some(dir.to_owned()),
                Some(t) if t != dir => {
                    return Err(damaged(
                        &name,
                        format!("is outside the top directory `{t}`"),
                    ));
                }
                Some(_) => {}
            }
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            (&mut entry)
                .take(size)
                .read_to_end(&mut bytes)
                .map_err(|e| damaged(&name, format!("cannot be read: {e}")))?;
            if bytes.len() as u64 != size {
                return Err(damaged(&name, "is cut short"));
            }
            if files.insert(rel.to_owned(), bytes).is_some() {
                return Err(damaged(&name, "appears twice"));
            }
        }
    }
    if long_name.is_some() {
        return Err(damaged(
            display,
            format!("ends in a long-name record after `{last}`"),
        ));
    }
    // After the tar end: only zero padding, then the end of the last gzip member.
    let mut rest = tar.into_inner().take(MAX_TRAILING_ZEROS + 1);
    let mut buf = [0u8; 8192];
    let mut seen: u64 = 0;
    loop {
        let n = rest
            .read(&mut buf)
            .map_err(|e| damaged(display, format!("unreadable after `{last}`: {e}")))?;
        if n == 0 {
            break;
        }
        seen += n as u64;
        if buf[..n].iter().any(|b| *b != 0) || seen > MAX_TRAILING_ZEROS {
            return Err(damaged(
                display,
                format!("has data after the archive's end (after `{last}`)"),
            ));
        }
    }
    let top = top.ok_or_else(|| damaged(display, "holds no files"))?;
    Ok((top, files))
}

/// [`verify_with`] within [`Limits::DEFAULT`], no signature required.
pub fn verify(path: &Path) -> Result<Verified, Error> {
    verify_with(path, &Limits::DEFAULT, None)
}

/// Checks a bundle: with `trust`, its signature first (before a byte is unpacked); then every
/// entry's name and size, every checksum, the summary's schema, the reports against the summary,
/// the evidence files named by the claims. All damage found is reported together.
pub fn verify_with(path: &Path, limits: &Limits, trust: Option<&Trust>) -> Result<Verified, Error> {
    let signed_by = match trust {
        Some(t) => {
            let sig = t
                .signature
                .clone()
                .unwrap_or_else(|| sign::signature_path(path));
            Some(sign::check(path, &sig, &t.public_key)?)
        }
        None => None,
    };
    let (name, files) = read_archive_limited(path, limits)?;
    let mut problems: Vec<(String, String)> = Vec::new();
    let Some(sums) = files.get(SUMS) else {
        return Err(damaged(SUMS, "is missing"));
    };
    let sums = String::from_utf8_lossy(sums);
    let mut listed = BTreeMap::new();
    for (i, line) in sums.lines().enumerate() {
        let parsed = line.split_once("  ").filter(|(h, p)| {
            h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) && !p.is_empty()
        });
        match parsed {
            Some((hash, file)) => {
                listed.insert(file.to_owned(), hash.to_ascii_lowercase());
            }
            None => problems.push((
                SUMS.into(),
                format!("line {} is not `<sha256>  <file>`", i + 1),
            )),
        }
    }
    for (file, hash) in &listed {
        match files.get(file) {
            None => problems.push((file.clone(), "is listed in SHA256SUMS but missing".into())),
            Some(bytes) if sha256_hex(bytes) != *hash => {
                problems.push((
                    file.clone(),
                    "does not match its SHA-256 in SHA256SUMS (altered)".into(),
                ));
            }
            Some(_) => {}
        }
    }
    for file in files.keys() {
        if file != SUMS && !listed.contains_key(file) {
            problems.push((file.clone(), "is not listed in SHA256SUMS (added)".into()));
        }
    }
    let summary = match files.get("summary.json") {
        None => {
            problems.push(("summary.json".into(), "is missing".into()));
            None
        }
        Some(bytes) => match check_summary(bytes) {
            Ok(s) => Some(s),
            Err(why) => {
                problems.push(("summary.json".into(), why));
                None
            }
        },
    };
    let same_version = summary
        .as_ref()
        .is_some_and(|s| s.renderer == render::renderer_id());
    if let Some(s) = &summary {
        for (file, render) in [
            ("report.md", render::markdown as fn(&Summary) -> String),
            ("report.html", render::html),
            ("junit.xml", render::junit),
        ] {
            match files.get(file) {
                None => problems.push((file.into(), "is missing".into())),
                Some(bytes) if same_version && bytes.as_slice() != render(s).as_bytes() => {
                    problems.push((
                        file.into(),
                        "does not match summary.json (re-rendered and compared)".into(),
                    ));
                }
                Some(_) => {}
            }
        }
        for c in &s.claims {
            for ev in &c.evidence {
                if !files.contains_key(ev) {
                    problems.push((
                        ev.clone(),
                        format!("is evidence of claim {} but missing", c.id),
                    ));
                }
            }
        }
        for raw in &s.raw_files {
            if !files.contains_key(raw) {
                problems.push((raw.clone(), "is listed in summary.json but missing".into()));
            }
        }
        for file in files.keys() {
            if file.starts_with("raw/") && !s.raw_files.contains(file) {
                problems.push((
                    file.clone(),
                    "is not listed in summary.json raw_files (added)".into(),
                ));
            }
        }
        if s.bundle != name {
            problems.push((
                "summary.json".into(),
                format!(
                    "names bundle `{}` but the archive's folder is `{name}`",
                    s.bundle
                ),
            ));
        }
    }
    if let Some((file, why)) = problems.first() {
        let mut why = why.clone();
        if problems.len() > 1 {
            let rest: Vec<String> = problems[1..]
                .iter()
                .map(|(f, w)| format!("{f} {w}"))
                .collect();
            why = format!("{why}; also: {}", rest.join("; "));
        }
        return Err(damaged(file.clone(), why));
    }
    let Some(summary) = summary else {
        return Err(damaged("summary.json", "is unreadable"));
    };
    let unsupported = claims::recheck(&summary, &files);
    Ok(Verified {
        name,
        files: files.len(),
        outcome: if unsupported.is_empty() {
            Outcome::from_claims(&summary.claims)
        } else {
            Outcome::ClaimFailed
        },
        summary,
        reports_compared: same_version,
        unsupported,
        signed_by,
    })
}

fn check_summary(bytes: &[u8]) -> Result<Summary, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("is not JSON: {e}"))?;
    if v.get("schema").and_then(|s| s.as_str()) != Some(SCHEMA) {
        return Err(format!("has no `schema: {SCHEMA}`"));
    }
    if v.get("schema_version").and_then(serde_json::Value::as_u64)
        != Some(u64::from(SCHEMA_VERSION))
    {
        return Err(format!(
            "has a schema_version other than {SCHEMA_VERSION} (use the evidence-pack that made it)"
        ));
    }
    let s: Summary =
        serde_json::from_value(v).map_err(|e| format!("does not follow the schema: {e}"))?;
    if s.totals != Totals::of(&s.claims) {
        return Err("totals disagree with the claims".into());
    }
    if s.outcome != Outcome::from_claims(&s.claims) {
        return Err("outcome disagrees with the claims".into());
    }
    Ok(s)
}

/// The claims table printed by `pack` and `verify`.
pub fn claims_table(s: &Summary) -> String {
    let mut rows = vec![("ID".to_owned(), "VERDICT".to_owned(), "CLAIM".to_owned())];
    for c in &s.claims {
        let v = match c.verdict {
            ClaimVerdict::Pass => "pass",
            ClaimVerdict::Fail => "FAIL",
            ClaimVerdict::NotRun => "not run",
        };
        rows.push((c.id.clone(), v.to_owned(), c.claim.clone()));
    }
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (a, b, c) in rows {
        out.push_str(&format!("{a:<w0$}  {b:<w1$}  {c}\n"));
    }
    let t = &s.totals;
    out.push_str(&format!(
        "{}: {} pass, {} fail, {} not run\n",
        s.outcome.as_str(),
        t.pass,
        t.fail,
        t.not_run
    ));
    out
}
