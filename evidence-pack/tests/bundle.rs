//! The bundle end to end: determinism, verify's exit codes, tampering, the checksum file against
//! the real `sha256sum`, the archive against GNU `tar`, and bad input.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{cli, copy_tree, data, files, gunzip, pack, regzip};
use lab_runner::{Cmd, Runner, SystemRunner};

#[test]
fn pack_twice_gives_identical_bytes_and_name() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    // A copy elsewhere (other path, other file mtimes) must not change a byte either.
    let moved = tempfile::tempdir().unwrap();
    copy_tree(&data("cluster-run"), moved.path());
    let first = pack(&data("cluster-run"), a.path());
    let second = pack(moved.path(), b.path());
    assert_eq!(first.file_name(), second.file_name());
    assert_eq!(
        first.file_name().unwrap().to_str().unwrap(),
        "hami-evidence-20261125T101640Z.tgz",
        "the name comes from run.json finished_at"
    );
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap()
    );
}

#[test]
fn second_pack_to_the_same_file_changes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let dir = data("local-hami");
    let (code, stdout, _) = cli(&[
        "pack",
        dir.to_str().unwrap(),
        "-o",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("wrote "), "{stdout}");
    let (code, stdout, _) = cli(&[
        "pack",
        dir.to_str().unwrap(),
        "-o",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("unchanged"), "{stdout}");
    // Local mode names the bundle after the probe's started_at_unix.
    assert!(
        out.path()
            .join("hami-evidence-20261130T031236Z.tgz")
            .is_file()
    );
}

#[test]
fn timestamp_override_renames_and_dry_run_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let dir = data("local-hami");
    let (code, stdout, _) = cli(&[
        "pack",
        dir.to_str().unwrap(),
        "-o",
        out.path().to_str().unwrap(),
        "--timestamp",
        "2027-01-02T03:04:05Z",
        "--dry-run",
    ]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("hami-evidence-20270102T030405Z.tgz"),
        "{stdout}"
    );
    assert!(stdout.contains("SHA256SUMS"), "{stdout}");
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "dry run wrote a file"
    );
    let (code, stdout, _) = cli(&[
        "pack",
        dir.to_str().unwrap(),
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["would_write"], "hami-evidence-20261130T031236Z.tgz");
    let paths: Vec<&str> = v["plan"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "SHA256SUMS",
            "junit.xml",
            "raw/gpu-probe.json",
            "raw/gpu-probe.stderr",
            "report.html",
            "report.md",
            "summary.json"
        ]
    );
    let (code, _, stderr) = cli(&[
        "pack",
        dir.to_str().unwrap(),
        "--timestamp",
        "yesterday",
        "--dry-run",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("fix:"), "{stderr}");
}

#[test]
fn verify_exit_codes_follow_the_claims() {
    let out = tempfile::tempdir().unwrap();
    // All three local checks pass → 0.
    let ok = pack(&data("local-hami"), out.path());
    let (code, stdout, _) = cli(&["verify", ok.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("intact"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("cap.device0") && l.split_whitespace().nth(1) == Some("pass")),
        "{stdout}"
    );
    // The real H200 reports in a cluster run: E1–E5 all pass → 0.
    let all = pack(&data("cluster-run"), out.path());
    let (code, stdout, _) = cli(&["verify", all.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("ALL CLAIMS PASS: 5 pass"), "{stdout}");
    // E5 not run → 1 (nothing failed, but not everything was shown).
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&data("cluster-run"), dir.path());
    let run = dir.path().join("run.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&run).unwrap()).unwrap();
    doc["exercises"][4]["result"] = "not-run".into();
    std::fs::write(&run, doc.to_string()).unwrap();
    let incomplete_dir = tempfile::tempdir().unwrap();
    let incomplete = pack(dir.path(), incomplete_dir.path());
    let (code, stdout, _) = cli(&["verify", incomplete.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("E5  not run"), "{stdout}");
    // A failed exercise → 1, and the table says FAIL.
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&data("cluster-run"), dir.path());
    let run = dir.path().join("run.json");
    let text = std::fs::read_to_string(&run).unwrap().replacen(
        "\"result\": \"pass\"",
        "\"result\": \"fail\"",
        1,
    );
    std::fs::write(&run, text).unwrap();
    let failed_dir = tempfile::tempdir().unwrap();
    let failed = pack(dir.path(), failed_dir.path());
    let (code, stdout, _) = cli(&["verify", failed.to_str().unwrap(), "--output", "json"]);
    assert_eq!(code, 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["outcome"], "claim-failed");
    assert_eq!(v["claims"][0]["verdict"], "fail");
    // Usage errors → 2.
    let (code, _, _) = cli(&["verify"]);
    assert_eq!(code, 2);
}

/// Changes one byte inside the data of `file` in the tar stream of `tgz`, writes it to `to`.
fn tamper(tgz: &Path, file: &str, to: &Path) {
    let tar_bytes = gunzip(tgz);
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut offset = None;
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if path.ends_with(&format!("/{file}")) {
            offset = Some(entry.raw_file_position() as usize + 10);
        }
    }
    let offset = offset.unwrap_or_else(|| panic!("{file} not in the archive"));
    let mut changed = tar_bytes.clone();
    changed[offset] ^= 0x01;
    regzip(&changed, to);
}

#[test]
fn one_changed_byte_fails_verify_naming_the_file() {
    let out = tempfile::tempdir().unwrap();
    let good = pack(&data("cluster-run"), out.path());
    for file in [
        "raw/probe/hami-share-a.json",
        "report.md",
        "summary.json",
        "SHA256SUMS",
        "junit.xml",
    ] {
        let bad = out.path().join("bad.tgz");
        tamper(&good, file, &bad);
        let (code, _, stderr) = cli(&["verify", bad.to_str().unwrap()]);
        assert_eq!(code, 3, "{file}: {stderr}");
        assert!(stderr.contains("damaged"), "{file}: {stderr}");
        let named = if file == "SHA256SUMS" {
            // Changing the list makes some file disagree with it; that file (or the list) is named.
            stderr.contains("SHA256SUMS") || stderr.contains("does not match its SHA-256")
        } else {
            stderr.contains(file)
        };
        assert!(named, "{file} not named: {stderr}");
    }
}

#[test]
fn a_consistently_rewritten_report_is_caught_against_the_summary() {
    // Someone edits report.md AND fixes SHA256SUMS: the checksums agree, but the report no longer
    // renders from summary.json.
    let out = tempfile::tempdir().unwrap();
    let good = pack(&data("local-hami"), out.path());
    let (top, mut files) = evidence_pack::bundle::read_archive(&good).unwrap();
    let md = String::from_utf8(files["report.md"].clone())
        .unwrap()
        .replace("PASS", "pass");
    files.insert("report.md".into(), md.into_bytes());
    let bad = out.path().join("rewritten.tgz");
    common::repack(&top, &mut files, &bad, true);
    let (code, _, stderr) = cli(&["verify", bad.to_str().unwrap()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("report.md does not match summary.json"),
        "{stderr}"
    );
}

#[test]
fn a_corrupted_gzip_stream_or_missing_file_is_damaged_or_unreadable() {
    let out = tempfile::tempdir().unwrap();
    let good = pack(&data("local-hami"), out.path());
    let mut bytes = std::fs::read(&good).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let bad = out.path().join("flipped.tgz");
    std::fs::write(&bad, &bytes).unwrap();
    let (code, _, stderr) = cli(&["verify", bad.to_str().unwrap()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("damaged") || stderr.contains("unreadable"),
        "{stderr}"
    );
    let (code, stdout, _) = cli(&["verify", bad.to_str().unwrap(), "--output", "json"]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (v["intact"].as_bool(), v["exit_code"].as_u64()),
        (Some(false), Some(3)),
        "{v}"
    );
    let (code, _, stderr) = cli(&["verify", out.path().join("nope.tgz").to_str().unwrap()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("nope.tgz"), "{stderr}");
}

#[test]
fn real_sha256sum_and_gnu_tar_accept_the_bundle() {
    let runner = SystemRunner::new(false);
    if !runner.exists("tar") || !runner.exists("sha256sum") {
        eprintln!("SKIPPED: GNU tar or sha256sum (Debian packages tar, coreutils) not on PATH");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let tgz = pack(&data("cluster-run"), out.path());
    let listing = runner
        .run_checked(&Cmd::new("tar").args(["-tvzf", tgz.to_str().unwrap()]))
        .unwrap()
        .stdout;
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), files(&tgz).len());
    for line in &lines {
        assert!(
            line.starts_with("-rw-r--r-- 0/0"),
            "mode/owner not fixed: {line}"
        );
        assert!(
            line.contains("2026-11-25 10:16"),
            "mtime is not the run's time: {line}"
        );
    }
    let unpack = tempfile::tempdir().unwrap();
    runner
        .run_checked(&Cmd::new("tar").args([
            "-xzf",
            tgz.to_str().unwrap(),
            "-C",
            unpack.path().to_str().unwrap(),
        ]))
        .unwrap();
    let top = unpack.path().join("hami-evidence-20261125T101640Z");
    let check = runner
        .run_checked(&Cmd::new("sh").args([
            "-c",
            &format!("cd '{}' && sha256sum -c SHA256SUMS", top.display()),
        ]))
        .unwrap();
    let oks = check.stdout.lines().filter(|l| l.ends_with(": OK")).count();
    assert_eq!(oks, files(&tgz).len() - 1, "{}", check.stdout);
}

#[test]
fn bad_input_directories_exit_2_with_a_fix() {
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("notes.txt"), "hello").unwrap();
    let (code, _, stderr) = cli(&["pack", empty.path().to_str().unwrap(), "--dry-run"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("neither run.json, fleet.json nor any gpu-probe JSON report"),
        "{stderr}"
    );
    assert!(stderr.contains("fix:"), "{stderr}");
    let (code, _, stderr) = cli(&["pack", "/nonexistent/dir", "--dry-run"]);
    assert_eq!(code, 2, "{stderr}");
    let wrong = tempfile::tempdir().unwrap();
    std::fs::write(
        wrong.path().join("run.json"),
        r#"{"schema":"something-else","schema_version":1}"#,
    )
    .unwrap();
    let (code, _, stderr) = cli(&["pack", wrong.path().to_str().unwrap(), "--dry-run"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("hami-isolation-lab/cluster-run"),
        "{stderr}"
    );
}

#[test]
fn junit_is_well_formed_xml_with_one_case_per_claim() {
    let out = tempfile::tempdir().unwrap();
    let tgz = pack(&data("cluster-run"), out.path());
    let junit = files(&tgz)["junit.xml"].clone();
    let text = String::from_utf8(junit.clone()).unwrap();
    assert_eq!(text.matches("<testcase ").count(), 5);
    assert_eq!(text.matches("<skipped ").count(), 0);
    assert_eq!(text.matches("<failure ").count(), 0);
    assert!(text.contains("tests=\"5\" failures=\"0\" skipped=\"0\""));
    let runner = SystemRunner::new(false);
    if !runner.exists("xmllint") {
        eprintln!(
            "SKIPPED: xmllint (Debian package libxml2-utils) not on PATH; junit.xml not parsed"
        );
        return;
    }
    let path = out.path().join("junit.xml");
    std::fs::write(&path, &junit).unwrap();
    let count = runner
        .run_checked(&Cmd::new("xmllint").args([
            "--xpath",
            "count(/testsuites/testsuite/testcase)",
            path.to_str().unwrap(),
        ]))
        .unwrap();
    assert_eq!(count.stdout.trim(), "5");
}

#[test]
fn symbolic_links_in_the_input_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&data("local-hami"), dir.path());
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("kubeconfig");
    std::fs::write(&secret, "token: linked-secret-value-123\n").unwrap();
    std::os::unix::fs::symlink(&secret, dir.path().join("kubeconfig")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let tgz = pack(dir.path(), out.path());
    let files = files(&tgz);
    assert!(!files.contains_key("raw/kubeconfig"));
    let summary = String::from_utf8_lossy(&files["summary.json"]);
    assert!(
        summary.contains("kubeconfig is a symbolic link; not followed, not packed"),
        "{summary}"
    );
    assert!(!gunzip(&tgz).windows(18).any(|w| w == b"linked-secret-valu"));
}

#[test]
fn a_bundle_whose_evidence_file_is_missing_is_damaged() {
    // Drop an evidence file and its SHA256SUMS line: the checksums agree, the claim does not.
    let out = tempfile::tempdir().unwrap();
    let good = pack(&data("cluster-run"), out.path());
    let (top, mut files) = evidence_pack::bundle::read_archive(&good).unwrap();
    files.remove("raw/probe/hami-share-b.json");
    let sums: String = String::from_utf8(files["SHA256SUMS"].clone())
        .unwrap()
        .lines()
        .filter(|l| !l.ends_with("raw/probe/hami-share-b.json"))
        .map(|l| format!("{l}\n"))
        .collect();
    files.insert("SHA256SUMS".into(), sums.into_bytes());
    let bad = out.path().join("missing.tgz");
    common::repack(&top, &mut files, &bad, false);
    let (code, _, stderr) = cli(&["verify", bad.to_str().unwrap()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("raw/probe/hami-share-b.json is evidence of claim E3 but missing"),
        "{stderr}"
    );
}

#[test]
fn packing_into_the_input_directory_twice_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&data("local-hami"), dir.path());
    let d = dir.path().to_str().unwrap();
    let (code, first, _) = cli(&["pack", d, "-o", d]);
    assert_eq!(code, 0, "{first}");
    let (code, second, stderr) = cli(&["pack", d, "-o", d]);
    assert_eq!(code, 0);
    assert!(second.starts_with("unchanged"), "{second}");
    assert!(stderr.contains("looks like an evidence bundle"), "{stderr}");
}

#[test]
fn reports_of_another_version_are_not_re_rendered_but_still_checksummed() {
    let out = tempfile::tempdir().unwrap();
    let good = pack(&data("local-hami"), out.path());
    let (top, mut files) = evidence_pack::bundle::read_archive(&good).unwrap();
    let summary = String::from_utf8(files["summary.json"].clone())
        .unwrap()
        .replace("\"tool_version\": \"0.1.0\"", "\"tool_version\": \"0.0.9\"")
        .replace(&evidence_pack::render::renderer_id(), "0123456789abcdef");
    files.insert("summary.json".into(), summary.into_bytes());
    let older = out.path().join("older.tgz");
    common::repack(&top, &mut files, &older, true);
    let (code, stdout, stderr) = cli(&["verify", older.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("reports not re-rendered: made by another renderer (evidence-pack 0.0.9, renderer 0123456789abcdef"),
        "{stdout}"
    );
}

#[test]
fn long_file_names_pack_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&data("local-hami"), dir.path());
    let deep = dir.path().join("a".repeat(90)).join("b".repeat(90));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join(format!("{}.log", "c".repeat(120))), "long\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    let tgz = pack(dir.path(), out.path());
    let name = format!(
        "raw/{}/{}/{}.log",
        "a".repeat(90),
        "b".repeat(90),
        "c".repeat(120)
    );
    assert_eq!(files(&tgz)[&name], b"long\n");
    let (code, stdout, stderr) = cli(&["verify", tgz.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}
