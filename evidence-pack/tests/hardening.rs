//! The bundle against hostile or careless hands: `pack` never writes over an input or a file
//! that is not a bundle (and over an earlier bundle only with `--force`); `verify` refuses a
//! small archive that inflates to 1 GiB without inflating it (under a 400 MB address-space
//! limit), entries named `../x`, `/x` or `top/a/../../x`, more than the limits allow, and data
//! hidden after the archive's end; `pack` refuses inputs over the same limits.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;

use common::{cli, copy_tree, data, pack};

/// A tar header for `name` (written byte by byte, so names the `tar` crate would refuse can be
/// made), `size` bytes of data announced.
fn raw_header(name: &[u8], size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    out
}

/// A tar stream holding `entries` as they are, ended by two zero blocks.
fn raw_tar(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, body) in entries {
        out.extend_from_slice(&raw_header(name, body.len() as u64));
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    g.write_all(bytes).unwrap();
    g.finish().unwrap()
}

fn verify_exit(path: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["verify", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, out, err) = cli(&args);
    (code, format!("{out}{err}"))
}

#[test]
fn unsafe_entry_paths_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "../x",
        "/x",
        "/etc/passwd",
        "hami-evidence-1/../x",
        "hami-evidence-1/raw/../../x",
        "hami-evidence-1/raw/./x",
        "hami-evidence-1//x",
        "x",
    ] {
        let tar = raw_tar(&[
            (b"hami-evidence-1/SHA256SUMS", b""),
            (name.as_bytes(), b"pwned\n"),
        ]);
        let path = dir.path().join("bad.tgz");
        std::fs::write(&path, gz(&tar)).unwrap();
        let (code, text) = verify_exit(&path, &[]);
        assert_eq!(code, 3, "{name}: {text}");
        assert!(
            text.contains(&format!("damaged: {name} ")),
            "{name} not named: {text}"
        );
        let why_ok = text.contains("absolute path")
            || text.contains("`..` component")
            || text.contains("empty or `.` component")
            || text.contains("outside the bundle's top directory");
        assert!(why_ok, "{name}: {text}");
    }
}

/// The decompressed bytes of the bomb: a tar header announcing 1 GiB of zeros, the zeros, and
/// the end of the archive. Written as 1 + 1024 gzip members (each 1 MiB of zeros compresses to
/// ~1 KiB), the file is about 1 MB: a gzip stream is allowed to be several members, and gzip, GNU
/// tar and `verify` all read every one.
fn write_bomb(path: &Path) {
    const MIB: usize = 1024 * 1024;
    let zeros = vec![0u8; MIB];
    let zero_member = gz(&zeros);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut head = raw_header(b"hami-evidence-1/raw/bomb.log", 1024 * MIB as u64).to_vec();
    head.extend_from_slice(&zeros[..512]);
    file.write_all(&gz(&head)).unwrap();
    for _ in 0..1024 {
        file.write_all(&zero_member).unwrap();
    }
    file.flush().unwrap();
}

#[test]
// std's Command, not lab_runner, for `sh` alone: it sets `ulimit -v` for the child.
#[allow(clippy::disallowed_methods)]
fn a_small_archive_holding_a_1_gib_entry_is_refused_without_inflating_it() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.tgz");
    write_bomb(&bomb);
    let size = std::fs::metadata(&bomb).unwrap().len();
    assert!(size < 2_000_000, "the bomb is {size} bytes");
    // It really is 1 GiB inside: GNU tar lists it so (through the runner: the tier log counts it).
    use lab_runner::Runner as _;
    let runner = lab_runner::SystemRunner::new(false);
    if runner.exists("tar") {
        let listing = runner
            .run_checked(&lab_runner::Cmd::new("tar").args(["-tvzf", bomb.to_str().unwrap()]))
            .unwrap()
            .stdout;
        assert!(listing.contains("1073741824"), "{listing}");
    } else {
        lab_runner::tier::skipped(
            "tar/sha256sum",
            "GNU tar is not installed (Debian: apt-get install -y tar); the bomb's size was not listed",
        );
    }
    // Under a 400 MB address-space limit: allocating the entry would abort the process
    // (not exit 3 with this message).
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 400000 && exec '{}' verify '{}'",
            env!("CARGO_BIN_EXE_evidence-pack"),
            bomb.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("damaged: hami-evidence-1/raw/bomb.log is 1024.0 MiB")
            || text.contains("damaged: hami-evidence-1/raw/bomb.log is 1024 MiB"),
        "{text}"
    );
    assert!(
        text.contains("more than the 64 MiB allowed for one file"),
        "{text}"
    );
}

#[test]
fn limits_are_checked_by_pack_and_verify_alike() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&data("local-hami"), dir.path());
    // 1.5 MiB of a log that compresses well: inside the defaults.
    let log: String = (0..60_000)
        .map(|i| format!("cuMemAlloc_v2 call {i:06} ok\n"))
        .collect();
    assert!(log.len() > 1024 * 1024 + 100_000);
    std::fs::write(dir.path().join("long.log"), &log).unwrap();
    let out = tempfile::tempdir().unwrap();
    let tgz = pack(dir.path(), out.path());
    let (code, text) = verify_exit(&tgz, &[]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = verify_exit(&tgz, &["--max-entry-mib", "1"]);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("raw/long.log is") && text.contains("more than the 1 MiB allowed"),
        "{text}"
    );
    let (code, text) = verify_exit(&tgz, &["--max-total-mib", "1"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("past the 1 MiB allowed in all"), "{text}");
    // pack refuses what verify would refuse, before writing anything.
    let again = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let o = again.path().to_str().unwrap();
    let (code, _, stderr) = cli(&["pack", d, "-o", o, "--max-entry-mib", "1"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("long.log is") && stderr.contains("fix:"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(again.path()).unwrap().count(), 0);
}

#[test]
fn data_after_the_archive_end_is_damage() {
    let out = tempfile::tempdir().unwrap();
    let good = pack(&data("local-hami"), out.path());
    let mut bytes = std::fs::read(&good).unwrap();
    // A second gzip member holding one more entry: GNU tar with -i would list it.
    bytes.extend_from_slice(&gz(&raw_tar(&[(
        b"hami-evidence-20261125T101207Z/raw/hidden.txt",
        b"not in SHA256SUMS\n",
    )])));
    let bad = out.path().join("appended.tgz");
    std::fs::write(&bad, bytes).unwrap();
    let (code, text) = verify_exit(&bad, &[]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("has data after the archive's end"), "{text}");
}

#[test]
fn pack_never_writes_over_an_input_not_even_with_force() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&data("cluster-run"), dir.path());
    let input = dir.path().join("probe/hami-share-a.json");
    let before = std::fs::read(&input).unwrap();
    for extra in [&[][..], &["--force"][..]] {
        let mut args = vec![
            "pack",
            dir.path().to_str().unwrap(),
            "-o",
            input.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (code, _, stderr) = cli(&args);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert!(
            stderr.contains("is one of the inputs") && stderr.contains("fix:"),
            "{stderr}"
        );
        assert_eq!(std::fs::read(&input).unwrap(), before, "the input changed");
    }
    // The same input named another way (through `..`) is still an input.
    let sneaky = dir.path().join("probe/../probe/hami-share-a.json");
    let (code, _, stderr) = cli(&[
        "pack",
        dir.path().to_str().unwrap(),
        "-o",
        sneaky.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[test]
fn pack_replaces_an_earlier_bundle_only_with_force_and_never_another_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&data("local-hami"), dir.path());
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("evidence.tgz");
    let d = dir.path().to_str().unwrap();
    let t = target.to_str().unwrap();
    let (code, stdout, _) = cli(&["pack", d, "-o", t]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("wrote "), "{stdout}");
    let first = std::fs::read(&target).unwrap();
    // The same inputs again: nothing to replace.
    let (code, stdout, _) = cli(&["pack", d, "-o", t]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("unchanged"), "{stdout}");
    // Other inputs, same output: refused, the earlier bundle kept.
    std::fs::write(dir.path().join("notes.txt"), "second run\n").unwrap();
    let (code, _, stderr) = cli(&["pack", d, "-o", t]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("holds an earlier evidence bundle with other bytes; not replaced")
            && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), first);
    // --dry-run says so too.
    let (code, _, stderr) = cli(&["pack", d, "-o", t, "--dry-run"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, stdout, _) = cli(&["pack", d, "-o", t, "--force"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("replaced "), "{stdout}");
    assert_ne!(std::fs::read(&target).unwrap(), first);
    // A file that is not a bundle is never replaced, --force or not.
    let notes = out.path().join("notes.tgz");
    std::fs::write(&notes, "my notes\n").unwrap();
    let (code, _, stderr) = cli(&["pack", d, "-o", notes.to_str().unwrap(), "--force"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is not an evidence bundle"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes\n");
}
