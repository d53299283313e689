//! Helpers shared by the integration tests: fixture paths, copying a fixture directory so a test
//! can change it, packing through the library, and running the real binary.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use evidence_pack::bundle;

pub mod fleet;

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Copies a directory tree (files only) into `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Packs `dir` into `out_dir` through the library and returns the archive's path.
pub fn pack(dir: &Path, out_dir: &Path) -> PathBuf {
    let plan = bundle::plan(dir, None).unwrap();
    let path = out_dir.join(plan.file_name());
    bundle::write(&plan, &path, false).unwrap();
    path
}

/// The archive's files (top directory stripped).
pub fn files(tgz: &Path) -> BTreeMap<String, Vec<u8>> {
    bundle::read_archive(tgz).unwrap().1
}

/// Runs the real `evidence-pack` binary; returns (exit code, stdout, stderr).
// std's Command, not lab_runner: the built CLI under test, for its exit code and output as a shell
// sees them.
#[allow(clippy::disallowed_methods)]
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_evidence-pack"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a `.tgz` whose tar stream is `tar` (same gzip settings as the packer).
pub fn regzip(tar: &[u8], path: &Path) {
    use std::io::Write;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(tar).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

/// The decompressed tar stream of a `.tgz`.
pub fn gunzip(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Writes `files` as a bundle under `top` to `path`; with `fix_sums`, SHA256SUMS is recomputed
/// first (what someone covering their tracks would do).
pub fn repack(top: &str, files: &mut BTreeMap<String, Vec<u8>>, path: &Path, fix_sums: bool) {
    use sha2::Digest;
    if fix_sums {
        let mut sums = String::new();
        for (name, bytes) in files.iter() {
            if name != "SHA256SUMS" {
                let hex: String = sha2::Sha256::digest(bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                sums.push_str(&format!("{hex}  {name}\n"));
            }
        }
        files.insert("SHA256SUMS".into(), sums.into_bytes());
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in files.iter() {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        builder
            .append_data(&mut h, format!("{top}/{name}"), bytes.as_slice())
            .unwrap();
    }
    regzip(&builder.into_inner().unwrap(), path);
}

/// Rewrites a bundle as someone covering their tracks would: `edit` changes the summary and the
/// files, then the reports are re-rendered from the summary and SHA256SUMS recomputed.
pub fn rewrite(
    tgz: &Path,
    to: &Path,
    edit: impl FnOnce(&mut evidence_pack::model::Summary, &mut BTreeMap<String, Vec<u8>>),
) {
    use evidence_pack::model::{Outcome, Summary, Totals};
    use evidence_pack::render;
    let mut files = files(tgz);
    let mut summary: Summary = serde_json::from_slice(&files["summary.json"]).unwrap();
    edit(&mut summary, &mut files);
    summary.totals = Totals::of(&summary.claims);
    summary.outcome = Outcome::from_claims(&summary.claims);
    let mut json = serde_json::to_string_pretty(&summary).unwrap();
    json.push('\n');
    files.insert("summary.json".into(), json.into_bytes());
    files.insert("report.md".into(), render::markdown(&summary).into_bytes());
    files.insert("report.html".into(), render::html(&summary).into_bytes());
    files.insert("junit.xml".into(), render::junit(&summary).into_bytes());
    let top = tgz.file_stem().unwrap().to_str().unwrap().to_owned();
    repack(&top, &mut files, to, true);
}
