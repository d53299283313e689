//! Renders [`Summary`] into `report.md`, `report.html` (with an inline SVG chart of each cap search)
//! and `junit.xml`.
//!
//! Invariant: each renderer is a pure function of the summary alone, with no clock and no
//! environment, so `verify` can render again and compare byte for byte.

use std::fmt::Write as _;

use serde_json::Value;

use crate::model::{CapSearch, Claim, ClaimVerdict, Summary};

const UNKNOWN: &str = "not known";

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
        let mem = g
            .memory_mib
            .map_or_else(|| g.memory_source.clone(), |m| format!("{m} MiB ({})", g.memory_source));
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
        e.slice_mib.map_or_else(|| UNKNOWN.to_owned(), |m| format!("{m} MiB")),
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
    let slice = c
        .slice_bytes
        .map_or_else(|| "no slice expected".to_owned(), |b| format!("slice {}", mib_text(b)));
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
    o.push_str("## Environment\n\n| Item | Value |\n|---|---|\n");
    for (k, v) in environment_rows(s) {
        let _ = writeln!(o, "| {k} | {} |", md_cell(&v));
    }
    o.push_str("\n## Claims and evidence\n\n| Id | Claim | Verdict | Numbers | Evidence |\n|---|---|---|---|---|\n");
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
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;vertical-align:top;text-align:left}\
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
    o.push_str("<h2>Environment</h2>\n<table><tr><th>Item</th><th>Value</th></tr>\n");
    for (k, v) in environment_rows(s) {
        let _ = writeln!(o, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(&v));
    }
    o.push_str("</table>\n<h2>Claims and evidence</h2>\n<table><tr><th>Id</th><th>Claim</th><th>Verdict</th><th>Why</th><th>Numbers</th><th>Evidence</th></tr>\n");
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

/// The chart of one cap search: memory held after each allocation call (blue), each refused
/// request drawn where it would have taken the total (red ×), the slice and the card's size as
/// dashed lines. Coordinates are printed with one decimal, so the output is deterministic.
pub fn svg_chart(c: &CapSearch) -> String {
    const W: f64 = 900.0;
    const H: f64 = 380.0;
    const L: f64 = 80.0;
    const R: f64 = 190.0;
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut held_before = 0u64;
    let mut points = Vec::new();
    let mut ymax: f64 = 1.0;
    for s in &c.steps {
        let attempt = held_before.saturating_add(s.request_bytes);
        points.push((held_before, attempt, s));
        ymax = ymax.max(mib(s.held_after_bytes)).max(mib(attempt));
        held_before = s.held_after_bytes;
    }
    if let Some(b) = c.slice_bytes {
        ymax = ymax.max(mib(b));
    }
    if let Some(b) = c.card_bytes {
        ymax = ymax.max(mib(b));
    }
    let step = tick_step(ymax * 1.05);
    let top = (ymax * 1.05 / step).ceil() * step;
    let n = c.steps.len().max(1) as f64;
    let x = |i: usize| L + (W - L - R) * (i as f64 + 0.5) / n;
    let y = |m: f64| T + (H - T - B) * (1.0 - m / top);
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"cap search of device {}\" font-family=\"sans-serif\" font-size=\"12\">",
        c.device
    );
    let _ = write!(
        o,
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"white\"/><text x=\"{L}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">Cap search, device {}: memory held after each allocation call</text>",
        c.device
    );
    // Grid and y ticks.
    let mut v = 0.0;
    while v <= top + 0.5 {
        let yy = y(v);
        let _ = write!(
            o,
            "<line x1=\"{L:.1}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#e3e3e3\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>",
            W - R,
            L - 6.0,
            yy + 4.0
        );
        v += step;
    }
    let _ = write!(
        o,
        "<line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{:.1}\" stroke=\"#333\"/><line x1=\"{L}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>",
        H - B,
        H - B,
        W - R,
        H - B
    );
    let _ = write!(
        o,
        "<text x=\"18\" y=\"{:.1}\" transform=\"rotate(-90 18 {:.1})\" text-anchor=\"middle\">MiB held</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">allocation call (1 … {})</text>",
        (T + H - B) / 2.0,
        (T + H - B) / 2.0,
        (L + W - R) / 2.0,
        H - 12.0,
        c.steps.len()
    );
    // Reference lines.
    let mut label_y = T + 10.0;
    for (bytes, color, name) in [
        (c.slice_bytes, "#e07b00", "slice"),
        (c.card_bytes, "#777777", "card"),
    ] {
        if let Some(b) = bytes {
            let yy = y(mib(b));
            let _ = write!(
                o,
                "<line x1=\"{L}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"8 5\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{name} {}</text>",
                W - R,
                W - R + 6.0,
                yy + 4.0,
                esc(&mib_text(b))
            );
        }
    }
    if c.slice_bytes.is_none() {
        let _ = write!(
            o,
            "<text x=\"{:.1}\" y=\"{label_y:.1}\" fill=\"#e07b00\">no slice expected</text>",
            W - R + 6.0
        );
        label_y += 16.0;
    }
    if c.card_bytes.is_none() {
        let _ = write!(
            o,
            "<text x=\"{:.1}\" y=\"{label_y:.1}\" fill=\"#777777\">card size {}</text>",
            W - R + 6.0,
            esc(&c.card_source.replace("unknown: ", "unknown"))
        );
    }
    // Refused requests: a dotted red line from what was held to where the request would have
    // taken the total, ending in a red ×.
    for (i, (before, attempt, s)) in points.iter().enumerate() {
        if s.ok {
            continue;
        }
        let (xx, y0, y1) = (x(i), y(mib(*before)), y(mib(*attempt)));
        let _ = write!(
            o,
            "<line x1=\"{xx:.1}\" y1=\"{y0:.1}\" x2=\"{xx:.1}\" y2=\"{y1:.1}\" stroke=\"#c62828\" stroke-dasharray=\"2 3\"/><path d=\"M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}\" stroke=\"#c62828\" stroke-width=\"2\"/>",
            xx - 4.0,
            y1 - 4.0,
            xx + 4.0,
            y1 + 4.0,
            xx - 4.0,
            y1 + 4.0,
            xx + 4.0,
            y1 - 4.0
        );
    }
    // Held after each call.
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, (_, _, s))| format!("{:.1},{:.1}", x(i), y(mib(s.held_after_bytes))))
        .collect();
    if !line.is_empty() {
        let _ = write!(
            o,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#1565c0\" stroke-width=\"2\"/>",
            line.join(" ")
        );
    }
    for (i, (_, _, s)) in points.iter().enumerate() {
        let _ = write!(
            o,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1565c0\"/>",
            x(i),
            y(mib(s.held_after_bytes))
        );
    }
    // Legend.
    let ly = H - B + 30.0;
    let _ = write!(
        o,
        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#1565c0\"/><text x=\"{:.1}\" y=\"{:.1}\">held after the call</text><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c62828\">× refused request (total it asked for)</text>",
        W - R + 10.0,
        ly - 4.0,
        W - R + 18.0,
        ly,
        W - R + 10.0,
        ly + 16.0
    );
    if c.steps.is_empty() {
        let _ = write!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">the search made no allocation calls</text>",
            (L + W - R) / 2.0,
            (T + H - B) / 2.0
        );
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
