//! Renders report.html in a real browser (Debian's `chromium`, headless): a PNG that must be a
//! real picture of a page with content (right size, far more detail than a blank page), and the
//! layout a person sees first: in a 1280×800 window, the verdict, every summary card and every
//! failed-claim line lie inside the first screen, each failed line is one line high, and the
//! detail starts below the summary. The positions are measured by chromium itself (a copy of the
//! report with a measuring script, dumped with `--dump-dom`; the report itself has no script),
//! and a copy pushed down by a spacer must fail the same check. Skips, saying so, when chromium
//! is not installed (`apt-get install -y chromium`). The PNGs are kept under the target tmp dir
//! for a person to look at.

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
        "--window-size=1280,800".to_owned(),
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
    assert_eq!((width, height), (1280, 800), "unexpected PNG size");
    bytes
}

/// Measures, in chromium, where the summary's parts lie in a 1280×800 window.
const MEASURE: &str = r#"<script>
addEventListener('load', () => {
  const r = e => { const b = e.getBoundingClientRect(); return [b.top, b.bottom, b.height]; };
  const q = s => Array.from(document.querySelectorAll(s)).map(r);
  const out = {
    viewport: innerHeight,
    verdict: q('#verdict'), summary: q('#summary'), cards: q('#summary .card'),
    failed: q('#failed li'), claims: q('#claims'),
    verdict_text: (document.querySelector('#verdict') || {}).textContent || '',
  };
  const pre = document.createElement('pre');
  pre.id = 'layout-result';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"#;

/// Positions of the summary's parts, as chromium laid them out.
fn measure(runner: &SystemRunner, html: &str, work: &Path, name: &str) -> serde_json::Value {
    measure_with(runner, html, MEASURE, work, name)
}

/// Runs `script` (which leaves its JSON in `<pre id="layout-result">`) on a copy of `html`.
fn measure_with(
    runner: &SystemRunner,
    html: &str,
    script: &str,
    work: &Path,
    name: &str,
) -> serde_json::Value {
    let page = work.join(format!("{name}-measure.html"));
    std::fs::write(
        &page,
        html.replacen("</body>", &format!("{script}</body>"), 1),
    )
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let cmd = Cmd::new("chromium")
        .args([
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
            "--window-size=1280,800".to_owned(),
            "--virtual-time-budget=5000".to_owned(),
            "--dump-dom".to_owned(),
            format!("file://{}", page.display()),
        ])
        .timeout(Duration::from_secs(120));
    let out = runner.run(&cmd).unwrap();
    let dom = out.stdout;
    let start = dom
        .find("<pre id=\"layout-result\">")
        .unwrap_or_else(|| panic!("no layout result in chromium's DOM: {}", out.stderr))
        + "<pre id=\"layout-result\">".len();
    let end = start + dom[start..].find("</pre>").unwrap();
    serde_json::from_str(&dom[start..end].replace("&amp;", "&")).unwrap()
}

/// The first-screen rules; `Err` says which part is out of place.
fn check_first_screen(m: &serde_json::Value) -> Result<(), String> {
    let viewport = m["viewport"].as_f64().ok_or("no viewport height")?;
    let rects = |k: &str| -> Vec<(f64, f64, f64)> {
        m[k].as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r[0].as_f64().unwrap(),
                            r[1].as_f64().unwrap(),
                            r[2].as_f64().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let verdict = rects("verdict");
    let summary = rects("summary");
    let (Some(v), Some(s)) = (verdict.first(), summary.first()) else {
        return Err("the report has no #verdict or #summary".into());
    };
    if v.0 > 150.0 {
        return Err(format!(
            "the verdict starts {:.0}px down, not at the top",
            v.0
        ));
    }
    if s.1 > viewport {
        return Err(format!(
            "the summary ends at {:.0}px, below the first screen ({viewport:.0}px)",
            s.1
        ));
    }
    for (i, c) in rects("cards").iter().enumerate() {
        if c.1 > viewport {
            return Err(format!(
                "summary card {i} ends at {:.0}px, off the first screen",
                c.1
            ));
        }
    }
    let failed = rects("failed");
    for (i, f) in failed.iter().enumerate() {
        if f.1 > viewport {
            return Err(format!(
                "failed-claim line {i} ends at {:.0}px, off the first screen",
                f.1
            ));
        }
        if f.2 > 30.0 {
            return Err(format!(
                "failed-claim line {i} is {:.0}px high: more than one line",
                f.2
            ));
        }
    }
    match rects("claims").first() {
        Some(d) if d.0 >= s.1 => Ok(()),
        Some(d) => Err(format!(
            "the detail starts at {:.0}px, inside the summary",
            d.0
        )),
        None => Err("no claims detail (#claims)".into()),
    }
}

fn render(fixture: &str) {
    render_dir(fixture, &data(fixture));
}

fn render_dir(fixture: &str, dir: &Path) {
    let runner = SystemRunner::new(false);
    if !runner.exists("chromium") {
        eprintln!(
            "SKIPPED: chromium is not installed (Debian: apt-get install -y chromium); report.html was not rendered"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tgz = pack(dir, work.path());
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

    let html_text = String::from_utf8(files["report.html"].clone()).unwrap();
    let summary: evidence_pack::model::Summary =
        serde_json::from_slice(&files["summary.json"]).unwrap();
    let m = measure(&runner, &html_text, work.path(), fixture);
    eprintln!("layout of {fixture}: {m}");
    if let Err(why) = check_first_screen(&m) {
        panic!("{fixture}: {why}\n(look at {})", png.display());
    }
    assert!(
        m["verdict_text"]
            .as_str()
            .unwrap()
            .starts_with(summary.outcome.as_str()),
        "{m}"
    );
    let failed_or_not_run = summary.totals.fail + summary.totals.not_run;
    let lines = m["failed"].as_array().unwrap().len();
    assert_eq!(
        lines,
        failed_or_not_run.min(9),
        "one line per failed or not-run claim (at most 8, then an `and N more` line)"
    );
    assert_eq!(
        m["cards"].as_array().unwrap().len(),
        summary.cap_searches.len().min(6),
        "one card per cap search (at most 6)"
    );
    // The check can fail: the same report pushed down by a spacer is caught.
    let pushed = html_text.replacen(
        "<section id=\"summary\">",
        "<div style=\"height:900px\"></div><section id=\"summary\">",
        1,
    );
    let m = measure(&runner, &pushed, work.path(), &format!("{fixture}-pushed"));
    assert!(
        check_first_screen(&m).is_err(),
        "a summary pushed below the first screen passed the layout check: {m}"
    );
}

/// A fleet's worth of real reports (40 copies of the bare H100 report): the summary still fits
/// one screen (6 cards, 8 failed lines, then counts).
#[test]
fn a_fleet_report_still_opens_on_a_one_screen_summary() {
    let dir = tempfile::tempdir().unwrap();
    let report = std::fs::read(data("local-h100-bare").join("gpu-probe.json")).unwrap();
    for i in 0..40 {
        std::fs::write(dir.path().join(format!("node-{i:02}.json")), &report).unwrap();
    }
    render_dir("fleet-40", dir.path());
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

/// Measures, in chromium, the fleet grid: where each card's square lies and its colour.
const MEASURE_GRID: &str = r#"<script>
addEventListener('load', () => {
  const g = document.querySelector('#fleet-grid');
  const box = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.width, b.height]; };
  const out = {
    grid: g ? box(g) : null,
    cells: Array.from(document.querySelectorAll('#fleet-grid rect.cell')).map(c => ({
      claim: c.dataset.claim, class: c.getAttribute('class'), fill: getComputedStyle(c).fill, box: box(c),
    })),
  };
  const pre = document.createElement('pre');
  pre.id = 'layout-result';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"#;

/// The grid rules: one visible square per card, coloured by its claim's verdict (three distinct
/// colours), one row per node in the fleet's order, cards left to right by index.
fn check_grid(m: &serde_json::Value, s: &evidence_pack::model::Summary) -> Result<(), String> {
    use evidence_pack::model::ClaimVerdict;
    let grid = m["grid"].as_array().ok_or("no #fleet-grid in the page")?;
    if grid[2].as_f64().unwrap_or(0.0) < 50.0 || grid[3].as_f64().unwrap_or(0.0) < 20.0 {
        return Err(format!("the grid is not visible: {grid:?}"));
    }
    let cells = m["cells"].as_array().ok_or("no cells")?;
    if cells.len() != s.fleet.len() {
        return Err(format!(
            "{} squares for {} cards",
            cells.len(),
            s.fleet.len()
        ));
    }
    let mut colour_of = std::collections::BTreeMap::new();
    let mut rows: Vec<(String, f64)> = Vec::new();
    let mut last: Option<(String, f64)> = None;
    for c in cells {
        let claim = c["claim"].as_str().ok_or("a square names no claim")?;
        let verdict = s
            .claims
            .iter()
            .find(|x| x.id == claim)
            .map(|x| x.verdict)
            .ok_or(format!("square {claim} has no claim"))?;
        let want = match verdict {
            ClaimVerdict::Pass => "pass",
            ClaimVerdict::Fail => "fail",
            ClaimVerdict::NotRun => "not-run",
        };
        let class = c["class"].as_str().unwrap_or("");
        if class != format!("cell {want}") {
            return Err(format!("square {claim} is `{class}`, its claim is {want}"));
        }
        let fill = c["fill"].as_str().unwrap_or("").to_owned();
        if let Some(other) = colour_of.insert(want, fill.clone())
            && other != fill
        {
            return Err(format!("{want} squares in two colours: {other} and {fill}"));
        }
        let b: Vec<f64> = c["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        if b[2] < 10.0 || b[3] < 10.0 {
            return Err(format!(
                "square {claim} is {}×{} px: too small to see",
                b[2], b[3]
            ));
        }
        let (node, _) = claim.rsplit_once('/').unwrap();
        match rows.iter().find(|(n, _)| n == node) {
            Some((_, top)) if (top - b[1]).abs() > 0.5 => {
                return Err(format!("square {claim} is not on its node's row"));
            }
            Some(_) => {}
            None => {
                if rows.iter().any(|(_, top)| (top - b[1]).abs() < b[3]) {
                    return Err(format!("node {node}'s row overlaps another's"));
                }
                rows.push((node.to_owned(), b[1]));
            }
        }
        if let Some((prev_node, prev_left)) = &last
            && prev_node == node
            && b[0] <= *prev_left
        {
            return Err(format!("square {claim} is not right of the card before it"));
        }
        last = Some((node.to_owned(), b[0]));
    }
    let colours: std::collections::BTreeSet<&String> = colour_of.values().collect();
    if colours.len() != colour_of.len() {
        return Err(format!("outcomes share a colour: {colour_of:?}"));
    }
    Ok(())
}

/// A fleet bundle of real H200 reports (a verified card, a card not checked, the bare card):
/// the page opens on its one-screen summary, and chromium lays out the fleet grid as one row per
/// node with one square per card in its outcome's colour. The check fails on a grid whose
/// colours are all one, and on a hidden grid.
#[test]
fn a_fleet_bundle_shows_its_grid_in_chromium() {
    let runner = SystemRunner::new(false);
    if !runner.exists("chromium") {
        lab_runner::tier::skipped(
            "chromium",
            "chromium is not installed (Debian: apt-get install -y chromium)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    common::fleet::mixed_fleet(dir.path());
    render_dir("fleet-h200", dir.path());
    let work = tempfile::tempdir().unwrap();
    let files = common::files(&pack(dir.path(), work.path()));
    let summary: evidence_pack::model::Summary =
        serde_json::from_slice(&files["summary.json"]).unwrap();
    let html = String::from_utf8(files["report.html"].clone()).unwrap();
    let grid =
        |page: &str, name: &str| measure_with(&runner, page, MEASURE_GRID, work.path(), name);
    let m = grid(&html, "fleet-grid");
    eprintln!("fleet grid: {m}");
    check_grid(&m, &summary).unwrap_or_else(|why| panic!("{why}"));
    assert_eq!(m["cells"].as_array().unwrap().len(), 3);
    // The check can fail: one colour for every outcome, and a hidden grid.
    let one_colour = html
        .replace("fill=\"#c62828\"", "fill=\"#2e7d32\"")
        .replace("fill=\"#f9a825\"", "fill=\"#2e7d32\"");
    assert!(check_grid(&grid(&one_colour, "fleet-grid-one-colour"), &summary).is_err());
    let hidden = html.replacen(
        "<svg id=\"fleet-grid\"",
        "<svg style=\"display:none\" id=\"fleet-grid\"",
        1,
    );
    assert!(check_grid(&grid(&hidden, "fleet-grid-hidden"), &summary).is_err());
}
