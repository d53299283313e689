//! A generated block of gpu-probe's README.md, between two markers: the tests that render one
//! (`conformance_readme`, `overhead_h200`) compare it with what they generate, and rewrite it
//! when `GPU_PROBE_BLESS=1`.

use std::path::PathBuf;

/// Fails when README.md's block between `begin` and `end` is not `generated` (with the command
/// that rewrites it, `bless`); with `GPU_PROBE_BLESS=1` rewrites the block instead.
pub fn check(begin: &str, end: &str, generated: &str, what: &str, bless: &str) {
    let readme_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    let (before, rest) = readme
        .split_once(begin)
        .unwrap_or_else(|| panic!("README.md has no `{begin}` marker"));
    let (current, after) = rest
        .split_once(end)
        .unwrap_or_else(|| panic!("README.md has no `{end}` marker"));
    let want = format!("\n{generated}");
    if std::env::var_os("GPU_PROBE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&readme_path, format!("{before}{begin}{want}{end}{after}"))
            .expect("write README.md");
        return;
    }
    assert!(
        current == want,
        "README.md's {what} differs; run `{bless}`\n--- README ---\n{current}\n--- generated ---\n{want}"
    );
}
