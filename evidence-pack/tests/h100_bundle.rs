//! A bundle packed on the real H100 machine still verifies with today's evidence-pack: intact,
//! with the bare card's failed claims; and one changed byte makes it damaged.

use std::path::PathBuf;
use std::process::Command;

fn bundle() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/h100-bundle/hami-evidence-20261125T141856Z.tgz"
    ))
}

// std's Command, not lab_runner: the built CLI under test, for its exit code and output as a shell
// sees them.
#[allow(clippy::disallowed_methods)]
fn verify(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_evidence-pack"))
        .arg("verify")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("evidence-pack could not run: {e}"));
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_h100_bundle_is_intact_and_its_bare_card_claims_fail() {
    let (code, text) = verify(&bundle());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("intact"), "{text}");
    assert!(text.contains("all-expect-8000:cap.device0"), "{text}");
    assert!(
        text.contains("audit-expect-8000:audit.cuArrayCreate_v2"),
        "{text}"
    );
}

#[test]
fn one_changed_byte_in_the_h100_bundle_is_damage() {
    let mut bytes = std::fs::read(bundle()).expect("bundle");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let dir = tempfile::tempdir().expect("tmp");
    let damaged = dir.path().join("damaged.tgz");
    std::fs::write(&damaged, bytes).expect("write");
    let (code, text) = verify(&damaged);
    assert_eq!(code, 3, "{text}");
}
