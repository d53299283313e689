//! Signed bundles: `keygen` (never prompts without a terminal, never replaces a key), `pack
//! --sign`, `verify --trust`, and the real `minisign` binary (Debian package `minisign`) both
//! ways: it verifies our signatures with our public key, signs with our secret keys, and we
//! verify what it signs with keys it made. A bundle changed after signing, re-packed, re-signed
//! with another key, or without its signature fails `verify --trust` with exit 3 naming the key.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{cli, copy_tree, data};
use lab_runner::{Cmd, Runner, SystemRunner};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `keygen --unencrypted -o DIR` → (secret, public, key ID).
fn keygen(dir: &Path) -> (PathBuf, PathBuf, String) {
    let (code, stdout, stderr) =
        cli(&["keygen", "-o", s(dir), "--unencrypted", "--output", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    (
        dir.join("evidence.key"),
        dir.join("evidence.pub"),
        v["key_id"].as_str().unwrap().to_owned(),
    )
}

/// `pack local-hami -o OUT/bundle.tgz --sign KEY` → the bundle's path.
fn pack_signed(out: &Path, key: &Path, extra: &[&str]) -> PathBuf {
    let bundle = out.join("bundle.tgz");
    let dir = data("local-hami");
    let mut args = vec!["pack", s(&dir), "-o", s(&bundle), "--sign", s(key)];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = cli(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    bundle
}

fn verify_trust(bundle: &Path, public: &Path) -> (i32, String) {
    let (code, stdout, stderr) = cli(&["verify", s(bundle), "--trust", s(public)]);
    (code, format!("{stdout}{stderr}"))
}

fn minisign() -> Option<SystemRunner> {
    let runner = SystemRunner::new(false);
    if runner.exists("minisign") {
        Some(runner)
    } else {
        eprintln!(
            "SKIPPED: minisign is not installed (Debian: apt-get install -y minisign); the real binary was not run"
        );
        None
    }
}

#[test]
fn keygen_writes_minisign_files_and_never_replaces_or_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    // No flag, stdin not a terminal: refuses, asks nothing, writes nothing.
    let (code, _, stderr) = cli(&["keygen", "-o", s(&dir)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("stdin is not a terminal") && stderr.contains("--password-file"),
        "{stderr}"
    );
    assert!(!dir.join("evidence.key").exists());
    let (secret, public, id) = keygen(&dir);
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "secret key mode {mode:o}");
    let pub_text = std::fs::read_to_string(&public).unwrap();
    assert!(
        pub_text.starts_with(&format!("untrusted comment: minisign public key: {id}\n")),
        "{pub_text}"
    );
    assert_eq!(id.len(), 16);
    // A second keygen into the same directory changes nothing.
    let before = std::fs::read(&secret).unwrap();
    let (code, _, stderr) = cli(&["keygen", "-o", s(&dir), "--unencrypted"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("keygen never replaces a key"), "{stderr}");
    assert_eq!(std::fs::read(&secret).unwrap(), before);
}

#[test]
fn encrypted_key_with_a_password_file_signs_and_without_one_never_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "correct horse battery\n").unwrap();
    let keys = tmp.path().join("keys");
    let (code, stdout, stderr) = cli(&["keygen", "-o", s(&keys), "--password-file", s(&pw)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("encrypted with the password"), "{stdout}");
    let key = keys.join("evidence.key");
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("encrypted secret key")
    );
    // Without the password and without a terminal: exit 2, nothing written.
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("bundle.tgz");
    let (code, _, stderr) = cli(&[
        "pack",
        s(&data("local-hami")),
        "-o",
        s(&bundle),
        "--sign",
        s(&key),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--sign-password-file"), "{stderr}");
    assert!(!bundle.exists());
    // A wrong password is refused.
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "wrong\n").unwrap();
    let (code, _, stderr) = cli(&[
        "pack",
        s(&data("local-hami")),
        "-o",
        s(&bundle),
        "--sign",
        s(&key),
        "--sign-password-file",
        s(&wrong),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(!bundle.exists());
    let bundle = pack_signed(out.path(), &key, &["--sign-password-file", s(&pw)]);
    let (code, text) = verify_trust(&bundle, &keys.join("evidence.pub"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("signed by the trusted key"), "{text}");
}

#[test]
fn signing_is_idempotent_and_a_signature_is_replaced_only_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, _, id) = keygen(&tmp.path().join("a"));
    let (other, _, _) = keygen(&tmp.path().join("b"));
    let out = tempfile::tempdir().unwrap();
    let bundle = pack_signed(out.path(), &key, &[]);
    let sig = out.path().join("bundle.tgz.minisig");
    let first = std::fs::read(&sig).unwrap();
    let (code, stdout, _) = cli(&[
        "pack",
        s(&data("local-hami")),
        "-o",
        s(&bundle),
        "--sign",
        s(&key),
    ]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("unchanged")
            && stdout.contains(&format!("already signed: {}", sig.display())),
        "{stdout}"
    );
    assert_eq!(std::fs::read(&sig).unwrap(), first, "signature rewritten");
    assert!(stdout.contains(&id));
    // Another key over the same bundle: the old signature is kept unless --force.
    let (code, _, stderr) = cli(&[
        "pack",
        s(&data("local-hami")),
        "-o",
        s(&bundle),
        "--sign",
        s(&other),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(&sig).unwrap(), first);
}

#[test]
fn changed_repacked_resigned_or_unsigned_bundles_are_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public, id) = keygen(&tmp.path().join("ours"));
    let (their_key, _, their_id) = keygen(&tmp.path().join("theirs"));
    let out = tempfile::tempdir().unwrap();
    let bundle = pack_signed(out.path(), &key, &[]);
    let (code, text) = verify_trust(&bundle, &public);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("signed by the trusted key {id}")),
        "{text}"
    );

    // Altered after pack: one byte of the archive.
    let altered = out.path().join("altered.tgz");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&altered, &bytes).unwrap();
    std::fs::copy(
        out.path().join("bundle.tgz.minisig"),
        out.path().join("altered.tgz.minisig"),
    )
    .unwrap();
    let (code, text) = verify_trust(&altered, &public);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains(&format!("the signature by key {id} does not match"))
            && text.contains("changed or re-packed after it was signed"),
        "{text}"
    );

    // Re-packed whole with a consistent SHA256SUMS (a claim rewritten): checksums alone accept
    // it, the signature does not.
    let (top, mut files) = evidence_pack::bundle::read_archive(&bundle).unwrap();
    let md = String::from_utf8(files["junit.xml"].clone())
        .unwrap()
        .replace("view.device0", "view.device9");
    files.insert("junit.xml".into(), md.into_bytes());
    let repacked = out.path().join("repacked.tgz");
    common::repack(&top, &mut files, &repacked, true);
    std::fs::copy(
        out.path().join("bundle.tgz.minisig"),
        out.path().join("repacked.tgz.minisig"),
    )
    .unwrap();
    let (code, text) = verify_trust(&repacked, &public);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("does not match"), "{text}");

    // Re-packed and re-signed with another key.
    let (code, _, stderr) = cli(&[
        "pack",
        s(&data("local-hami")),
        "-o",
        s(&bundle),
        "--sign",
        s(&their_key),
        "--force",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let (code, text) = verify_trust(&bundle, &public);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains(&format!(
            "was signed by key {their_id}, not by the trusted key {id}"
        )),
        "{text}"
    );
    let (_, stdout, _) = cli(&[
        "verify",
        s(&bundle),
        "--trust",
        s(&public),
        "--output",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["trusted"], false, "{v}");
    assert_eq!(v["exit_code"], 3, "{v}");

    // No signature at all.
    std::fs::remove_file(out.path().join("bundle.tgz.minisig")).unwrap();
    let (code, text) = verify_trust(&bundle, &public);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("has no signature"), "{text}");
    // Without --trust the same bundle is only checked for damage, and passes.
    let (code, stdout, _) = cli(&["verify", s(&bundle)]);
    assert_eq!(code, 0, "{stdout}");
}

#[test]
fn the_real_minisign_verifies_our_signatures_and_signs_with_our_keys() {
    let Some(runner) = minisign() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (key, public, id) = keygen(&tmp.path().join("k"));
    let out = tempfile::tempdir().unwrap();
    let bundle = pack_signed(out.path(), &key, &[]);
    let ok = runner
        .run_checked(&Cmd::new("minisign").args(["-Vm", s(&bundle), "-p", s(&public)]))
        .unwrap();
    assert!(
        ok.stdout
            .contains("Signature and comment signature verified"),
        "{}",
        ok.stdout
    );
    // The bundle's time comes from its inputs (the newest report of local-hami).
    let bundle_time = evidence_pack::bundle::plan(&data("local-hami"), None)
        .unwrap()
        .mtime;
    assert!(
        ok.stdout.contains("file:bundle.tgz")
            && ok.stdout.contains(&format!("timestamp:{bundle_time}\t")),
        "the trusted comment names the bundle and its time: {}",
        ok.stdout
    );
    // minisign refuses our signature over other bytes, as we do.
    let copy = out.path().join("other.tgz");
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&copy, bytes).unwrap();
    let bad = runner
        .run(&Cmd::new("minisign").args([
            "-Vm",
            s(&copy),
            "-x",
            &format!("{}.minisig", bundle.display()),
            "-p",
            s(&public),
        ]))
        .unwrap();
    assert_ne!(bad.code, Some(0), "minisign accepted altered bytes");
    // minisign signs with OUR secret key; we verify that.
    let theirs = out.path().join("signed-by-minisign.tgz");
    std::fs::copy(&bundle, &theirs).unwrap();
    runner
        .run_checked(&Cmd::new("minisign").args(["-S", "-s", s(&key), "-m", s(&theirs)]))
        .unwrap();
    let (code, text) = verify_trust(&theirs, &public);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("signed by the trusted key {id}")),
        "{text}"
    );
}

#[test]
fn we_verify_what_minisign_signs_with_a_key_it_made() {
    let Some(runner) = minisign() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (mkey, mpub) = (tmp.path().join("m.key"), tmp.path().join("m.pub"));
    runner
        .run_checked(&Cmd::new("minisign").args(["-G", "-W", "-p", s(&mpub), "-s", s(&mkey)]))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&data("local-hami"), dir.path());
    let out = tempfile::tempdir().unwrap();
    let bundle = common::pack(dir.path(), out.path());
    runner
        .run_checked(&Cmd::new("minisign").args([
            "-S",
            "-s",
            s(&mkey),
            "-m",
            s(&bundle),
            "-t",
            "signed by the platform team",
        ]))
        .unwrap();
    let (code, text) = verify_trust(&bundle, &mpub);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("trusted comment: signed by the platform team"),
        "{text}"
    );
    // Our own key is not the one that signed it, and is named as not trusted.
    let (_, ours, our_id) = keygen(&tmp.path().join("ours"));
    let (code, text) = verify_trust(&bundle, &ours);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains(&format!("not by the trusted key {our_id}")),
        "{text}"
    );
    // minisign's keys also sign through `pack --sign`: its unencrypted one (`-W`)…
    let again = tempfile::tempdir().unwrap();
    let ours_bundle = pack_signed(again.path(), &mkey, &[]);
    let (code, text) = verify_trust(&ours_bundle, &mpub);
    assert_eq!(code, 0, "{text}");
    // … and an encrypted one, with its password from a file.
    let (ekey, epub) = (tmp.path().join("e.key"), tmp.path().join("e.pub"));
    runner
        .run_checked(
            &Cmd::new("minisign")
                .args(["-G", "-p", s(&epub), "-s", s(&ekey)])
                .stdin("pw-of-minisign\npw-of-minisign\n"),
        )
        .unwrap();
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "pw-of-minisign\n").unwrap();
    let third = tempfile::tempdir().unwrap();
    let enc_bundle = pack_signed(third.path(), &ekey, &["--sign-password-file", s(&pw)]);
    let (code, text) = verify_trust(&enc_bundle, &epub);
    assert_eq!(code, 0, "{text}");
    runner
        .run_checked(&Cmd::new("minisign").args(["-Vm", s(&enc_bundle), "-p", s(&epub)]))
        .unwrap();
}
