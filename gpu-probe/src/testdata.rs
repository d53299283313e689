//! Test helpers that load the real-format fixtures committed under `tests/data` (see its README).

use std::io::Read;
use std::path::PathBuf;

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data"))
}

/// A text fixture under `tests/data/`.
pub fn hami_fixture(rel: &str) -> String {
    let path = fixtures_dir().join(rel);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {} is missing ({e})", path.display()))
}

/// A gzip fixture under `tests/data/`, decompressed.
pub fn hami_fixture_gz(rel: &str) -> Vec<u8> {
    let path = fixtures_dir().join(rel);
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("fixture {} is missing ({e})", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// An environment map from pairs.
pub fn env(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A text file under this crate's `tests/data/`.
pub fn local(rel: &str) -> String {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).join(rel);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test data {} is missing ({e})", path.display()))
}
