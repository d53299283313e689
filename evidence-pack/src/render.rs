//! Renders [`Summary`] into `report.md`, `report.html` (with an inline SVG chart of each cap search)
//! and `junit.xml`.
//!
//! Invariant: each renderer is a pure function of the summary alone, with no clock and no
//! environment, so `verify` can render again and compare byte for byte.

use std::fmt::Write as _;

use serde_json::Value;

use crate::model::{CapSearch, Claim, ClaimVerdict, Step, Summary};

const UNKNOWN: &str = "not known";

/// A short id of this renderer: the SHA-256 of its source (this file and the summary model), so
/// any change to how reports are rendered changes the id without anyone having to remember to
/// bump it. A bundle made by another renderer is still checksummed by `verify`, but its reports
/// are not re-rendered (they would differ for reasons other than tampering).
pub fn renderer_id() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(include_str!("render.rs"));
    h.update(include_str!("model.rs"));
    h.update(include_str!("matrix.rs"));
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn mib_text(bytes: u64) -> String {
    let m = bytes as f64 / (1024.0 * 1024.0);
    if (m - m.round()).abs() < 0.005 {
        format!("{m:.0} MiB")
    } else {
        format!("{m:.2} MiB")
    }
}

fn opt(v: Option<&String>) -> String {
    v.cloned().unwrap_or_else(|| UNKNOWN.to_owned())
}

/// The environment table as (label, value) rows, shared by the Markdown and HTML reports.
pub fn environment_rows(s: &Summary) -> Vec<(&'static str, String)> {
    let e = &s.environment;
    let mut rows = Vec::new();
    if e.gpus.is_empty() {
        rows.push(("GPU", UNKNOWN.to_owned()));
    }
    for g in &e.gpus {
        let mem = g.memory_mib.map_or_else(
            || g.memory_source.clone(),
            |m| format!("{m} MiB ({})", g.memory_source),
        );
        rows.push((
            "GPU",
            format!(
                "{} ({}), {}",
                opt(g.model.as_ref()),
                opt(g.uuid.as_ref()),
                mem
            ),
        ));
    }
    rows.push(("NVIDIA driver", opt(e.driver_version.as_ref())));
    rows.push(("CUDA (driver API)", opt(e.cuda_driver.as_ref())));
    rows.push(("Kubernetes", opt(e.kubernetes.as_ref())));
    rows.push(("k3s", opt(e.k3s.as_ref())));
    rows.push(("containerd", opt(e.containerd.as_ref())));
    rows.push(("Kernel", opt(e.kernel.as_ref())));
    rows.push(("OS", opt(e.os.as_ref())));
    rows.push(("Node", opt(e.node.as_ref())));
    rows.push(("HAMi chart", opt(e.hami_chart.as_ref())));
    rows.push((
        "HAMi images",
        if e.hami_images.is_empty() {
            UNKNOWN.to_owned()
        } else {
            e.hami_images.join(", ")
        },
    ));
    rows.push(("Scheduler image", opt(e.scheduler_image.as_ref())));
    rows.push((
        "Slice per pod",
        e.slice_mib
            .map_or_else(|| UNKNOWN.to_owned(), |m| format!("{m} MiB")),
    ));
    rows.push((
        "Over-subscription request",
        e.oversubscribe_mib
            .map_or_else(|| UNKNOWN.to_owned(), |m| format!("{m} MiB")),
    ));
    rows.push(("gpu-probe", opt(e.gpu_probe_version.as_ref())));
    rows
}

/// `key=value` pairs of a claim's numbers, in key order.
pub fn numbers_text(c: &Claim) -> String {
    c.numbers
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn verdict_word(v: ClaimVerdict) -> &'static str {
    match v {
        ClaimVerdict::Pass => "PASS",
        ClaimVerdict::Fail => "FAIL",
        ClaimVerdict::NotRun => "NOT RUN",
    }
}

fn cap_line(c: &CapSearch) -> String {
    let slice = c.slice_bytes.map_or_else(
        || "no slice expected".to_owned(),
        |b| format!("slice {}", mib_text(b)),
    );
    let card = c.card_bytes.map_or_else(
        || format!("card size {}", c.card_source),
        |b| format!("card {} ({})", mib_text(b), c.card_source),
    );
    let refused = c.steps.iter().filter(|s| !s.ok).count();
    format!(
        "{} device {}: held at most {} ({slice}; {card}) in {} allocation calls, {refused} refused; outcome {}",
        c.source,
        c.device,
        mib_text(c.held_bytes),
        c.steps.len(),
        c.outcome
    )
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// `report.md`.
pub fn markdown(s: &Summary) -> String {
    let mut o = String::new();
    let t = &s.totals;
    let _ = writeln!(o, "# HAMi isolation evidence: {}\n", s.bundle);
    let _ = writeln!(
        o,
        "Time of the run: {} · mode: {} · made by evidence-pack {}\n",
        s.timestamp,
        s.mode.as_str(),
        s.tool_version
    );
    let _ = writeln!(
        o,
        "**Result: {}** — {} pass, {} fail, {} not run.\n",
        s.outcome.as_str(),
        t.pass,
        t.fail,
        t.not_run
    );
    o.push_str("## Claims and evidence\n\n| Id | Claim | Verdict | Numbers | Evidence |\n|---|---|---|---|---|\n");
    for c in &s.claims {
        let ev = c
            .evidence
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join("<br>");
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            md_cell(&c.id),
            md_cell(&c.claim),
            verdict_word(c.verdict),
            md_cell(&numbers_text(c)),
            if ev.is_empty() { "none".to_owned() } else { ev }
        );
    }
    if s.claims.is_empty() {
        o.push_str("| — | no claims in the inputs | NOT RUN | | |\n");
    }
    o.push_str("\n### Why each verdict\n\n");
    for c in &s.claims {
        let _ = writeln!(
            o,
            "- **{}** ({}): {}",
            c.id,
            verdict_word(c.verdict),
            md_cell(&c.reason)
        );
    }
    if !s.cap_searches.is_empty() {
        o.push_str("\n## Cap search\n\nThe chart of each search is in report.html.\n\n");
        for c in &s.cap_searches {
            let _ = writeln!(o, "- {}", cap_line(c));
        }
    }
    o.push_str(&crate::matrix::markdown(&s.conformance));
    o.push_str("\n## Environment\n\n| Item | Value |\n|---|---|\n");
    for (k, v) in environment_rows(s) {
        let _ = writeln!(o, "| {k} | {} |", md_cell(&v));
    }
    o.push_str("\n## Scope and limits\n\n");
    let _ = writeln!(o, "{}\n", s.scope.statement);
    for note in &s.scope.probe_notes {
        let _ = writeln!(o, "> gpu-probe: {note}\n");
    }
    o.push_str("Not measured:\n\n");
    for n in &s.scope.not_measured {
        let _ = writeln!(o, "- {n}");
    }
    o.push_str("\n## Redactions\n\n");
    if s.redactions.is_empty() {
        o.push_str("Nothing was redacted.\n");
    } else {
        o.push_str("Secrets were replaced by `[REDACTED:<kind>]` before packing.\n\n| File | Kind | Count |\n|---|---|---|\n");
        for r in &s.redactions {
            let _ = writeln!(o, "| `raw/{}` | {} | {} |", r.file, r.kind, r.count);
        }
    }
    if !s.warnings.is_empty() {
        o.push_str("\n## Warnings\n\n");
        for w in &s.warnings {
            let _ = writeln!(o, "- {}", md_cell(w));
        }
    }
    o.push_str("\n## Checking this bundle\n\n`evidence-pack verify <bundle>.tgz` checks every file against `SHA256SUMS`, the summary's schema and that these reports match `summary.json`; `sha256sum -c SHA256SUMS` inside the unpacked folder checks the files alone.\n");
    o
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = "body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;vertical-align:top;text-align:left;overflow-wrap:break-word}\
table.claims{table-layout:fixed;width:100%}table.claims col.id{width:14%}table.claims col.claim{width:18%}table.claims col.verdict{width:7%}\
table.claims col.why{width:25%}table.claims col.numbers{width:21%}table.claims col.evidence{width:15%}\
th{background:#eee}.pass{background:#d9f2d9;font-weight:bold}.fail{background:#f7d4d4;font-weight:bold}\
.not-run{background:#f2ecd0;font-weight:bold}code{font-size:90%}.result{font-size:120%;padding:6px;border:2px solid #888;display:inline-block}\
figure{margin:1em 0}figcaption{font-size:90%;color:#444}";

/// `report.html`: the same content as the Markdown, plus the cap-search charts, with no script.
pub fn html(s: &Summary) -> String {
    let mut o = String::new();
    let t = &s.totals;
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>HAMi isolation evidence: {b}</title><style>{CSS}</style></head><body>\n<h1>HAMi isolation evidence: {b}</h1>\n<p>Time of the run: {ts} · mode: {mode} · made by evidence-pack {ver}</p>\n",
        b = esc(&s.bundle),
        ts = esc(&s.timestamp),
        mode = s.mode.as_str(),
        ver = esc(&s.tool_version)
    );
    let _ = writeln!(
        o,
        "<p class=\"result\">Result: <b>{}</b> — {} pass, {} fail, {} not run.</p>",
        esc(s.outcome.as_str()),
        t.pass,
        t.fail,
        t.not_run
    );
    o.push_str("<h2>Claims and evidence</h2>\n<table class=\"claims\"><colgroup><col class=\"id\"><col class=\"claim\"><col class=\"verdict\"><col class=\"why\"><col class=\"numbers\"><col class=\"evidence\"></colgroup><tr><th>Id</th><th>Claim</th><th>Verdict</th><th>Why</th><th>Numbers</th><th>Evidence</th></tr>\n");
    for c in &s.claims {
        let class = match c.verdict {
            ClaimVerdict::Pass => "pass",
            ClaimVerdict::Fail => "fail",
            ClaimVerdict::NotRun => "not-run",
        };
        let ev = c
            .evidence
            .iter()
            .map(|e| format!("<code>{}</code>", esc(e)))
            .collect::<Vec<_>>()
            .join("<br>");
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.id),
            esc(&c.claim),
            verdict_word(c.verdict),
            esc(&c.reason),
            esc(&numbers_text(c)),
            if ev.is_empty() { "none".to_owned() } else { ev }
        );
    }
    o.push_str("</table>\n");
    if !s.cap_searches.is_empty() {
        o.push_str("<h2>Cap search</h2>\n");
        for c in &s.cap_searches {
            let _ = writeln!(
                o,
                "<figure>{}<figcaption>{}</figcaption></figure>",
                svg_chart(c),
                esc(&cap_line(c))
            );
        }
    }
    o.push_str(&crate::matrix::html(&s.conformance));
    o.push_str("<h2>Environment</h2>\n<table><tr><th>Item</th><th>Value</th></tr>\n");
    for (k, v) in environment_rows(s) {
        let _ = writeln!(o, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(&v));
    }
    o.push_str("</table>\n");
    let _ = writeln!(
        o,
        "<h2>Scope and limits</h2>\n<p>{}</p>",
        esc(&s.scope.statement)
    );
    for note in &s.scope.probe_notes {
        let _ = writeln!(o, "<blockquote>gpu-probe: {}</blockquote>", esc(note));
    }
    o.push_str("<p>Not measured:</p><ul>\n");
    for n in &s.scope.not_measured {
        let _ = writeln!(o, "<li>{}</li>", esc(n));
    }
    o.push_str("</ul>\n<h2>Redactions</h2>\n");
    if s.redactions.is_empty() {
        o.push_str("<p>Nothing was redacted.</p>\n");
    } else {
        o.push_str("<table><tr><th>File</th><th>Kind</th><th>Count</th></tr>\n");
        for r in &s.redactions {
            let _ = writeln!(
                o,
                "<tr><td><code>raw/{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&r.file),
                esc(&r.kind),
                r.count
            );
        }
        o.push_str("</table>\n");
    }
    if !s.warnings.is_empty() {
        o.push_str("<h2>Warnings</h2><ul>\n");
        for w in &s.warnings {
            let _ = writeln!(o, "<li>{}</li>", esc(w));
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</body></html>\n");
    o
}

/// A "nice" tick step (1, 2 or 5 × 10^k) giving at most 8 ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = (max / 8.0).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// One refused or granted allocation call, as drawn: held before, the total it asked for, the step.
struct Point<'a> {
    before: u64,
    attempt: u64,
    step: &'a Step,
}

fn to_mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// The plot area of one panel, in SVG units, and the MiB value at its top.
struct Panel {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    top: f64,
}

impl Panel {
    fn x(&self, i: usize, n: usize) -> f64 {
        self.x0 + (self.x1 - self.x0) * (i as f64 + 0.5) / n.max(1) as f64
    }
    fn y(&self, mib: f64) -> f64 {
        self.y1 - (self.y1 - self.y0) * (mib / self.top).min(1.02)
    }
}

/// Draws one panel: grid, axes, slice and card lines (when inside its range), refused requests
/// and the held line.
fn panel(o: &mut String, p: &Panel, title: &str, c: &CapSearch, points: &[Point<'_>]) {
    let n = points.len();
    let step = tick_step(p.top);
    let _ = write!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
        p.x0,
        p.y0 - 8.0,
        esc(title)
    );
    let mut v = 0.0;
    while v <= p.top + 0.5 {
        let yy = p.y(v);
        let _ = write!(
            o,
            "<line x1=\"{:.1}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#e3e3e3\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>",
            p.x0,
            p.x1,
            p.x0 - 6.0,
            yy + 4.0
        );
        v += step;
    }
    let _ = write!(
        o,
        "<line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x0:.1}\" y2=\"{y1:.1}\" stroke=\"#333\"/><line x1=\"{x0:.1}\" y1=\"{y1:.1}\" x2=\"{x1:.1}\" y2=\"{y1:.1}\" stroke=\"#333\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">allocation call (1 … {n})</text>",
        (p.x0 + p.x1) / 2.0,
        p.y1 + 20.0,
        x0 = p.x0,
        x1 = p.x1,
        y0 = p.y0,
        y1 = p.y1,
    );
    for (bytes, color, name) in [
        (c.slice_bytes, "#e07b00", "slice"),
        (c.card_bytes, "#555555", "card"),
    ] {
        if let Some(b) = bytes
            && to_mib(b) <= p.top
        {
            let yy = p.y(to_mib(b));
            let _ = write!(
                o,
                "<line x1=\"{:.1}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"8 5\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\" font-weight=\"bold\">{name} {}</text>",
                p.x0,
                p.x1,
                p.x0 + 6.0,
                yy - 5.0,
                esc(&mib_text(b))
            );
        }
    }
    for (i, pt) in points.iter().enumerate() {
        if pt.step.ok {
            continue;
        }
        let (xx, ya, yb) = (p.x(i, n), p.y(to_mib(pt.before)), p.y(to_mib(pt.attempt)));
        let _ = write!(
            o,
            "<line x1=\"{xx:.1}\" y1=\"{ya:.1}\" x2=\"{xx:.1}\" y2=\"{yb:.1}\" stroke=\"#c62828\" stroke-dasharray=\"2 3\"/><path d=\"M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}\" stroke=\"#c62828\" stroke-width=\"2\"/>",
            xx - 4.0,
            yb - 4.0,
            xx + 4.0,
            yb + 4.0,
            xx - 4.0,
            yb + 4.0,
            xx + 4.0,
            yb - 4.0
        );
    }
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, pt)| {
            format!(
                "{:.1},{:.1}",
                p.x(i, n),
                p.y(to_mib(pt.step.held_after_bytes))
            )
        })
        .collect();
    if !line.is_empty() {
        let _ = write!(
            o,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#1565c0\" stroke-width=\"2\"/>",
            line.join(" ")
        );
    }
    for (i, pt) in points.iter().enumerate() {
        let _ = write!(
            o,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1565c0\"/>",
            p.x(i, n),
            p.y(to_mib(pt.step.held_after_bytes))
        );
    }
    if points.is_empty() {
        let _ = write!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no allocation calls</text>",
            (p.x0 + p.x1) / 2.0,
            (p.y0 + p.y1) / 2.0
        );
    }
}

/// The chart of one cap search, two panels: memory held after each allocation call (blue), each
/// refused request drawn where it would have taken the total (red ×), the slice and the card's
/// size as dashed lines; the left panel is scaled to the card, the right one to the slice. When
/// the card's size is unknown (under HAMi NVML shows the slice) only the right panel is drawn, and
/// says so. Coordinates are printed with one decimal, so the output is deterministic.
pub fn svg_chart(c: &CapSearch) -> String {
    const W: f64 = 1000.0;
    const H: f64 = 400.0;
    let mut held_before = 0u64;
    let mut points = Vec::new();
    let mut data_max: f64 = 1.0;
    for s in &c.steps {
        let attempt = held_before.saturating_add(s.request_bytes);
        points.push(Point {
            before: held_before,
            attempt,
            step: s,
        });
        data_max = data_max
            .max(to_mib(s.held_after_bytes))
            .max(to_mib(attempt));
        held_before = s.held_after_bytes;
    }
    // A slice far above everything the search held (e.g. `--expect-mib` larger than the card)
    // would flatten the chart: it is then named above the plot instead of drawn.
    let slice_far = c
        .slice_bytes
        .is_some_and(|b| to_mib(b) > 1.5 * data_max && !c.steps.is_empty());
    let near = match c.slice_bytes {
        Some(b) if !slice_far => data_max.max(to_mib(b)),
        _ => data_max,
    };
    let near_top = {
        let st = tick_step(near * 1.08);
        (near * 1.08 / st).ceil() * st
    };
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"cap search of device {}\" font-family=\"sans-serif\" font-size=\"12\"><rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"white\"/>",
        c.device
    );
    let _ = write!(
        o,
        "<text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">Cap search of {}, device {}: MiB held after each allocation call</text><circle cx=\"16\" cy=\"38\" r=\"4\" fill=\"#1565c0\"/><text x=\"26\" y=\"42\">held after the call</text><text x=\"160\" y=\"42\" fill=\"#c62828\">× refused: the total the request asked for</text><text x=\"440\" y=\"42\" fill=\"#e07b00\">- - slice</text><text x=\"510\" y=\"42\" fill=\"#555555\">- - card</text>",
        esc(&c.source),
        c.device
    );
    let _ = write!(
        o,
        "<text x=\"14\" y=\"{y:.1}\" transform=\"rotate(-90 14 {y:.1})\" text-anchor=\"middle\">MiB</text>",
        y = H / 2.0
    );
    let (y0, y1) = (85.0, H - 40.0);
    match c.card_bytes {
        Some(card) if to_mib(card) > near_top => {
            let top = {
                let m = to_mib(card).max(data_max) * 1.05;
                let st = tick_step(m);
                (m / st).ceil() * st
            };
            panel(
                &mut o,
                &Panel {
                    x0: 75.0,
                    x1: 360.0,
                    y0,
                    y1,
                    top,
                },
                "against the card",
                c,
                &points,
            );
            panel(
                &mut o,
                &Panel {
                    x0: 450.0,
                    x1: W - 20.0,
                    y0,
                    y1,
                    top: near_top,
                },
                if c.slice_bytes.is_some() {
                    "near the slice (zoomed)"
                } else {
                    "zoomed to the search (no slice expected)"
                },
                c,
                &points,
            );
        }
        _ => {
            let top = c
                .card_bytes
                .map_or(near_top, |b| near_top.max(to_mib(b) * 1.05));
            let mut title = if c.card_bytes.is_some() {
                "against the slice and the card".to_owned()
            } else {
                format!("against the slice; card size {}", c.card_source)
            };
            if let Some(b) = c.slice_bytes.filter(|_| slice_far) {
                title = format!(
                    "{title}; the slice ({}) is far above this chart",
                    mib_text(b)
                );
            }
            panel(
                &mut o,
                &Panel {
                    x0: 75.0,
                    x1: W - 20.0,
                    y0,
                    y1,
                    top,
                },
                &title,
                c,
                &points,
            );
        }
    }
    o.push_str("</svg>");
    o
}

fn xml_attr(s: &str) -> String {
    esc(s).replace('\n', "&#10;")
}

/// `junit.xml`: one test case per claim (failure for fail, skipped for not run).
pub fn junit(s: &Summary) -> String {
    let t = &s.totals;
    let suite = format!("hami-isolation-lab.{}", s.mode.as_str());
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        o,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\">",
        xml_attr(&s.bundle),
        s.claims.len(),
        t.fail,
        t.not_run
    );
    let _ = writeln!(
        o,
        "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\">",
        s.claims.len(),
        t.fail,
        t.not_run
    );
    for c in &s.claims {
        let _ = writeln!(
            o,
            "    <testcase classname=\"{suite}\" name=\"{}: {}\">",
            xml_attr(&c.id),
            xml_attr(&c.claim)
        );
        match c.verdict {
            ClaimVerdict::Pass => {}
            ClaimVerdict::Fail => {
                let _ = writeln!(
                    o,
                    "      <failure message=\"{}\" type=\"claim-failed\"/>",
                    xml_attr(&c.reason)
                );
            }
            ClaimVerdict::NotRun => {
                let _ = writeln!(o, "      <skipped message=\"{}\"/>", xml_attr(&c.reason));
            }
        }
        let _ = writeln!(
            o,
            "      <system-out>reason: {}\nnumbers: {}\nevidence: {}</system-out>",
            esc(&c.reason),
            esc(&numbers_text(c)),
            esc(&c.evidence.join(" "))
        );
        o.push_str("    </testcase>\n");
    }
    o.push_str("  </testsuite>\n</testsuites>\n");
    o
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn search(steps: &[(u64, bool)], card: Option<u64>) -> CapSearch {
        let mib = 1024 * 1024;
        let mut held = 0;
        CapSearch {
            source: "raw/p.json".into(),
            device: 0,
            slice_bytes: Some(8000 * mib),
            card_bytes: card.map(|c| c * mib),
            card_source: "unknown: NVML shows the slice under HAMi".into(),
            held_bytes: 0,
            outcome: "enforced".into(),
            steps: steps
                .iter()
                .map(|(req, ok)| {
                    if *ok {
                        held += req * mib;
                    }
                    Step {
                        request_bytes: req * mib,
                        ok: *ok,
                        code: if *ok { 0 } else { 2 },
                        held_after_bytes: held,
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn chart_has_one_point_per_call_a_cross_per_refusal_and_the_lines() {
        let c = search(&[(4096, true), (4096, false), (2048, true)], Some(81559));
        let svg = svg_chart(&c);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        // Two panels (card known and far above the slice): each draws every point.
        assert_eq!(
            svg.matches("<circle").count(),
            2 * 3 + 1,
            "points + legend dot"
        );
        assert_eq!(
            svg.matches("stroke=\"#c62828\" stroke-width=\"2\"").count(),
            2
        );
        assert!(svg.contains("slice 8000 MiB") && svg.contains("card 81559 MiB"));
        assert_eq!(svg, svg_chart(&c), "deterministic");
    }

    #[test]
    fn chart_without_card_says_why_and_draws_one_panel() {
        let svg = svg_chart(&search(&[(1024, true)], None));
        assert!(
            svg.contains("card size unknown: NVML shows the slice under HAMi"),
            "{svg}"
        );
        assert!(!svg.contains("card 8"), "no card line");
        assert_eq!(svg.matches("<circle").count(), 2);
        let empty = svg_chart(&search(&[], None));
        assert!(empty.contains("no allocation calls"));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(100_000.0), 20_000.0);
        assert_eq!(tick_step(8_800.0), 2_000.0);
        assert_eq!(tick_step(3.0), 1.0);
    }

    #[test]
    fn markdown_and_xml_escape_user_text() {
        assert_eq!(md_cell("a|b\nc"), "a\\|b c");
        assert_eq!(
            xml_attr("<a href=\"x\">&'\n"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&#10;"
        );
        assert_eq!(mib_text(8000 * 1024 * 1024), "8000 MiB");
        assert_eq!(mib_text(1024 * 1024 + 512 * 1024), "1.50 MiB");
    }
}
