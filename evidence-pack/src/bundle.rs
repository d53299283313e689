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

use crate::Error;
use crate::claims;
use crate::input::{self, Inputs};
use crate::model::{ClaimVerdict, Outcome, SCHEMA, SCHEMA_VERSION, Summary, Totals};
use crate::render;

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

/// Reads DIR and computes the plan; writes nothing.
pub fn plan(dir: &Path, timestamp: Option<&str>) -> Result<Plan, Error> {
    let inputs = input::read_dir(dir)?;
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
    Ok(Plan {
        name,
        timestamp: rfc,
        mtime,
        entries,
        skipped_bundles: inputs.skipped_bundles.clone(),
        summary,
    })
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

/// Writes the archive atomically (temporary file in the same directory, then rename).
pub fn write(plan: &Plan, path: &Path) -> Result<Written, Error> {
    let bytes = archive_bytes(plan)?;
    let io = |what: String| move |e: std::io::Error| Error::Io { what, source: e };
    let existed = match std::fs::read(path) {
        Ok(old) if old == bytes => return Ok(Written::Unchanged),
        Ok(_) => true,
        Err(_) => false,
    };
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
    tmp.write_all(&bytes)
        .map_err(io(format!("cannot write {}", path.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io(format!("cannot set the mode of {}", path.display())))?;
    }
    tmp.persist(path).map_err(|e| Error::Io {
        what: format!("cannot write {}", path.display()),
        source: e.error,
    })?;
    Ok(if existed {
        Written::Replaced
    } else {
        Written::Created
    })
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
}

fn damaged(file: impl Into<String>, why: impl Into<String>) -> Error {
    Error::Damaged {
        file: file.into(),
        why: why.into(),
    }
}

/// Reads a `.tgz` into (top directory, path → bytes); any read error names the entry it hit.
pub fn read_archive(path: &Path) -> Result<(String, BTreeMap<String, Vec<u8>>), Error> {
    let display = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| Error::Unreadable {
        what: format!("cannot open {display}: {e}"),
    })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut files = BTreeMap::new();
    let mut top: Option<String> = None;
    let mut last = String::from("(the archive's start)");
    let entries = tar
        .entries()
        .map_err(|e| damaged(&display, format!("not a readable tar.gz: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| damaged(&display, format!("unreadable after `{last}`: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| damaged(&display, format!("bad entry name after `{last}`: {e}")))?
            .to_string_lossy()
            .into_owned();
        last = name.clone();
        if !entry.header().entry_type().is_file() {
            return Err(damaged(
                &name,
                "is not a regular file (bundles hold only files)",
            ));
        }
        let Some((dir, rel)) = name.split_once('/') else {
            return Err(damaged(&name, "is outside the bundle's top directory"));
        };
        if rel.is_empty()
            || rel
                .split('/')
                .any(|c| c == ".." || c == "." || c.is_empty())
        {
            return Err(damaged(&name, "has an unsafe path"));
        }
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
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| damaged(&name, format!("cannot be read: {e}")))?;
        if files.insert(rel.to_owned(), bytes).is_some() {
            return Err(damaged(&name, "appears twice"));
        }
    }
    let top = top.ok_or_else(|| damaged(&display, "holds no files"))?;
    Ok((top, files))
}

/// Checks a bundle: every checksum, the summary's schema, the reports against the summary, the
/// evidence files named by the claims. All damage found is reported together.
pub fn verify(path: &Path) -> Result<Verified, Error> {
    let (name, files) = read_archive(path)?;
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
