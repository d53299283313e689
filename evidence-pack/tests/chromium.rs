//! Renders report.html in a real browser (Debian's `chromium`, headless) to a PNG and checks the
//! PNG is a real picture of a page with content: right size, and far more detail than a blank
//! page rendered the same way. Skips, saying so, when chromium is not installed
//! (`apt-get install -y chromium`). The PNGs are kept under the target tmp dir for a person to
//! look at.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{data, pack};
use lab_runner::{Cmd, Runner, SystemRunner};

fn screenshot(runner: &SystemRunner, html: &Path, png: &Path) -> Vec<u8> {
    let profile = tempfile::tempdir().unwrap();
    let cmd = Cmd::new("chromium").args([
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        format!("--user-data-dir={}", profile.path().display()),
        format!("--screenshot={}", png.display()),
        "--window-size=1200,1600".to_owned(),
        format!("file://{}", html.display()),
    ]);
    let cmd = cmd.timeout(Duration::from_secs(120));
    let out = runner.run(&cmd).unwrap();
    let bytes = std::fs::read(png).unwrap_or_else(|e| {
        panic!(
            "no PNG at {} ({e}); chromium exit {:?}: {}",
            png.display(),
            out.code,
            out.stderr
        )
    });
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1200, 1600), "unexpected PNG size");
    bytes
}

fn render(fixture: &str) {
    let runner = SystemRunner::new(false);
    if !runner.exists("chromium") {
        eprintln!(
            "SKIPPED: chromium is not installed (Debian: apt-get install -y chromium); report.html was not rendered"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tgz = pack(&data(fixture), work.path());
    let files = common::files(&tgz);
    let html = work.path().join("report.html");
    std::fs::write(&html, &files["report.html"]).unwrap();
    let blank = work.path().join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let png = keep.join(format!("report-{fixture}.png"));
    let _ = std::fs::remove_file(&png);
    let report = screenshot(&runner, &html, &png);
    let empty = screenshot(&runner, &blank, &work.path().join("blank.png"));
    assert!(
        report.len() > 10 * empty.len() && report.len() > 50_000,
        "the report PNG ({} bytes) is not much richer than a blank page ({} bytes)",
        report.len(),
        empty.len()
    );
    eprintln!("rendered {} ({} bytes)", png.display(), report.len());
}

#[test]
fn cluster_report_renders_in_chromium() {
    render("cluster-run");
}

#[test]
fn local_report_renders_in_chromium() {
    render("local-hami");
}

#[test]
fn real_h100_bare_card_report_renders_in_chromium() {
    render("local-h100-bare");
}

#[test]
fn several_real_reports_render_in_chromium() {
    render("local-h100-lead");
}

#[test]
fn audit_overhead_compute_reports_render_in_chromium() {
    render("local-h100-more");
}
