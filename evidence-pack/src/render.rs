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
    // The summary types live in lab-report: a change there changes what is rendered.
    h.update(lab_report::summary::TYPES_SOURCE);
    h.update(include_str!("matrix.rs"));
    h.update(include_str!("fleet.rs"));
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

/// A claim's number as a person reads it: a label and a value with its unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    pub label: String,
    pub value: String,
}

/// Labels for the keys the tools write; other keys read with `_` as spaces.
const LABELS: &[(&str, &str)] = &[
    ("held_mib", "held"),
    ("held_a_mib", "held by pod A"),
    ("held_b_mib", "held by pod B"),
    ("cap_held_mib", "held"),
    ("slice_mib", "slice"),
    ("card_mib", "card"),
    ("ceiling_mib", "search ceiling"),
    ("limit_mib", "limit"),
    ("past_slice_mib", "held past the slice"),
    ("free_mib", "free on the card"),
    ("requested_mib", "requested"),
    ("context_overhead_mib", "CUDA context"),
    ("nvml_total_mib", "NVML total"),
    ("nvidia_smi_total_mib", "nvidia-smi total"),
    ("cuda_total_mem_mib", "cuDeviceTotalMem_v2"),
    ("cuda_mem_info_total_mib", "cuMemGetInfo_v2 total"),
    ("region_limits_mib", "shared-region limits"),
    ("alloc_calls", "allocation calls"),
    ("hami_oom_lines", "HAMi-core OOM lines"),
    ("first_refusal", "first refusal"),
    ("stopped_because", "stopped because"),
    ("all_freed", "all memory freed"),
    ("ld_so_preload", "/etc/ld.so.preload"),
    ("libraries_mapped", "libraries mapped"),
    ("shared_region_exists", "shared region exists"),
    ("sharing_capped", "sharing capped"),
    ("throttling_expected", "throttling expected"),
    ("htod_gbps_mean", "host→device (mean)"),
    ("dtoh_gbps_mean", "device→host (mean)"),
    ("kernels_per_second_mean", "kernels (mean)"),
    ("seconds", "duration"),
];

/// Units by the key's ending: (suffix, unit).
const UNITS: &[(&str, &str)] = &[
    ("_mib", "MiB"),
    ("_us", "µs"),
    ("_ms", "ms"),
    ("_gbps_mean", "GB/s"),
    ("_gbps", "GB/s"),
    ("_per_second_mean", "/s"),
    ("_per_second", "/s"),
    ("_pct", "%"),
];

fn number_text(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
        _ => n.to_string(),
    }
}

fn value_text(v: &Value, unit: &str) -> String {
    let with_unit = |t: String| {
        if unit.is_empty() {
            t
        } else if unit == "%" || unit == "/s" {
            format!("{t}{unit}")
        } else {
            format!("{t} {unit}")
        }
    };
    match v {
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Number(n) => with_unit(number_text(n)),
        Value::String(s) => s.clone(),
        Value::Null => UNKNOWN.into(),
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) => items
            .iter()
            .map(|i| value_text(i, unit))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(_) => v.to_string(),
    }
}

/// A claim's numbers as labelled values with units, in key order.
pub fn labelled_numbers(c: &Claim) -> Vec<Labelled> {
    labelled(&c.numbers)
}

/// Numbers (of a claim or a measurement) as labelled values with units, in key order.
fn labelled(numbers: &std::collections::BTreeMap<String, Value>) -> Vec<Labelled> {
    numbers
        .iter()
        .map(|(k, v)| {
            let (stem, unit) = UNITS
                .iter()
                .find_map(|(suffix, unit)| k.strip_suffix(suffix).map(|stem| (stem, *unit)))
                .unwrap_or((k.as_str(), ""));
            let label = LABELS.iter().find(|(key, _)| key == k).map_or_else(
                // `cuMemAlloc_v2 p50` keeps its API name; `alloc_calls` reads as words.
                || {
                    if stem.contains(' ') || stem.chars().any(|c| c.is_ascii_uppercase()) {
                        stem.to_owned()
                    } else {
                        stem.replace('_', " ")
                    }
                },
                |(_, l)| (*l).to_owned(),
            );
            let unit = if k == "seconds" { "s" } else { unit };
            Labelled {
                label,
                value: value_text(v, unit),
            }
        })
        .collect()
}

/// `label: value, …` for the Markdown report.
pub fn labelled_text(c: &Claim) -> String {
    labelled_line(&c.numbers)
}

fn labelled_line(numbers: &std::collections::BTreeMap<String, Value>) -> String {
    labelled(numbers)
        .iter()
        .map(|l| format!("{}: {}", l.label, l.value))
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
            md_cell(&labelled_text(c)),
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
    o.push_str(&crate::fleet::markdown(s));
    if !s.measurements.is_empty() {
        o.push_str("\n## Measurements\n\nMeasured and reported with their numbers; not claims, so never counted as a pass.\n\n| Id | What | Numbers | Why not a claim | Evidence |\n|---|---|---|---|---|\n");
        for m in &s.measurements {
            let ev = m
                .evidence
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                md_cell(&m.id),
                md_cell(&m.what),
                md_cell(&labelled_line(&m.numbers)),
                md_cell(&m.reason),
                if ev.is_empty() { "none".to_owned() } else { ev }
            );
        }
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
    o.push_str("\n## Checking this bundle\n\n`evidence-pack verify <bundle>.tgz` checks each entry's path and size, every file against `SHA256SUMS`, the summary's schema, totals and outcome, that these reports match `summary.json` (when made by the same renderer) and that every evidence file is there, and it judges every passed claim again from its evidence files; with `--trust <key>.pub` it first checks `<bundle>.tgz.minisig` was made by that key (`minisign -Vm <bundle>.tgz -p <key>.pub` checks the same signature). `sha256sum -c SHA256SUMS` inside the unpacked folder checks the files alone.\n");
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

const CSS: &str = "body{font-family:sans-serif;margin:1.2em 2em;max-width:1100px;color:#222}\
h1{font-size:1.4em;margin:.1em 0}h2{font-size:1.25em;margin:1.2em 0 .4em}\
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #bbb;padding:4px 8px;vertical-align:top;text-align:left;overflow-wrap:break-word}\
table.claims{table-layout:fixed;width:100%}table.claims col.id{width:11%}table.claims col.claim{width:16%}table.claims col.verdict{width:7%}\
table.claims col.why{width:27%}table.claims col.numbers{width:25%}table.claims col.evidence{width:14%}\
th{background:#eee}td.pass{background:#d9f2d9;font-weight:bold}td.fail{background:#f7d4d4;font-weight:bold}\
td.not-run{background:#f2ecd0;font-weight:bold}code{font-size:90%}\
dl.kv{display:grid;grid-template-columns:max-content auto;gap:1px 8px;margin:0}dl.kv dt{color:#555}dl.kv dd{margin:0;font-weight:bold}\
.verdict{font-size:1.6em;font-weight:bold;padding:.35em .6em;border-radius:6px;margin:.3em 0}\
.verdict .counts{font-size:.6em;font-weight:normal;margin-left:1em}\
.verdict.pass{background:#2e7d32;color:#fff}.verdict.fail{background:#c62828;color:#fff}.verdict.incomplete{background:#f9a825;color:#222}\
.meta{color:#555;margin:.2em 0 .6em;font-size:.9em}\
.cards{display:grid;grid-template-columns:repeat(3,1fr);gap:10px}\
.card{border:1px solid #ccc;border-radius:6px;padding:4px 10px 6px;border-top:5px solid #999}\
.card.enforced{border-top-color:#2e7d32}.card.not-enforced{border-top-color:#c62828}.card.inconclusive{border-top-color:#f9a825}\
.card-title{font-weight:bold;font-size:.95em}.card .src{color:#666;font-size:.8em;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}\
dl.kv4{display:grid;grid-template-columns:max-content auto max-content auto;gap:0 8px;margin:0;font-size:.9em}dl.kv4 dt{color:#555}dl.kv4 dd{margin:0;font-weight:bold;overflow-wrap:anywhere}\
.card.enforced .card-title{color:#2e7d32}.card.not-enforced .card-title{color:#c62828}.more{color:#555;font-size:.9em;margin:.3em 0}\
ul.failed{margin:.3em 0;padding-left:1.2em}ul.failed li{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:1060px}\
figure{margin:1em 0}figcaption{font-size:90%;color:#444}";

/// How many cards and failed claims the one-screen summary shows (the rest are counted and
/// are in the detail below).
const SUMMARY_CARDS: usize = 6;
const SUMMARY_FAILED: usize = 8;

/// The class and word of a cap search's outcome.
fn cap_outcome(c: &CapSearch) -> (&'static str, &'static str) {
    match c.outcome.as_str() {
        "enforced" => ("enforced", "ENFORCED"),
        "not-enforced" => ("not-enforced", "NOT ENFORCED"),
        _ => ("inconclusive", "INCONCLUSIVE"),
    }
}

/// The first refused call: (the total it asked for, what was held before it).
fn first_refusal(c: &CapSearch) -> Option<(u64, u64)> {
    let mut held = 0u64;
    for st in &c.steps {
        if !st.ok {
            return Some((held.saturating_add(st.request_bytes), held));
        }
        held = st.held_after_bytes;
    }
    None
}

/// A small bar of one card: the card's size (grey), what the search held (blue), the slice
/// (orange line) and the first refused total (red ×), to one scale.
pub fn card_bar(c: &CapSearch) -> String {
    const W: f64 = 320.0;
    const X0: f64 = 4.0;
    const X1: f64 = W - 4.0;
    let refusal = first_refusal(c);
    let top_bytes = [
        c.card_bytes.unwrap_or(0),
        c.slice_bytes.unwrap_or(0),
        c.held_bytes,
        refusal.map_or(0, |r| r.0),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
    .max(1);
    let top = if c.card_bytes.is_some() {
        to_mib(top_bytes)
    } else {
        to_mib(top_bytes) * 1.15
    };
    let x = |b: u64| X0 + (X1 - X0) * (to_mib(b) / top).min(1.0);
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"34\" viewBox=\"0 0 {W} 34\" style=\"display:block;margin:2px 0\" role=\"img\" aria-label=\"memory of device {}\" font-family=\"sans-serif\" font-size=\"10\">",
        c.device
    );
    match c.card_bytes {
        Some(card) => {
            let _ = write!(
                o,
                "<rect x=\"{X0:.1}\" y=\"6\" width=\"{:.1}\" height=\"16\" fill=\"#e6e6e6\" stroke=\"#999\"/>",
                x(card) - X0
            );
        }
        None => {
            let _ = write!(
                o,
                "<rect x=\"{X0:.1}\" y=\"6\" width=\"{:.1}\" height=\"16\" fill=\"none\" stroke=\"#bbb\" stroke-dasharray=\"3 3\"/>",
                X1 - X0
            );
        }
    }
    let _ = write!(
        o,
        "<rect x=\"{X0:.1}\" y=\"9\" width=\"{:.1}\" height=\"10\" fill=\"#1565c0\"/>",
        (x(c.held_bytes) - X0).max(1.0)
    );
    if let Some(slice) = c.slice_bytes {
        let xs = x(slice);
        let _ = write!(
            o,
            "<line x1=\"{xs:.1}\" y1=\"2\" x2=\"{xs:.1}\" y2=\"26\" stroke=\"#e07b00\" stroke-width=\"2.5\"/>"
        );
    }
    if let Some((asked, _)) = refusal {
        let xr = x(asked);
        let _ = write!(
            o,
            "<path d=\"M{:.1} 24L{:.1} 32M{:.1} 32L{:.1} 24\" stroke=\"#c62828\" stroke-width=\"2\"/>",
            xr - 4.0,
            xr + 4.0,
            xr - 4.0,
            xr + 4.0
        );
    }
    o.push_str("</svg>");
    o
}

/// One card of the summary: its outcome, its chart and its numbers, labelled, with units.
fn summary_card(o: &mut String, s: &Summary, c: &CapSearch) {
    let (class, word) = cap_outcome(c);
    let models: std::collections::BTreeSet<&str> = s
        .environment
        .gpus
        .iter()
        .filter_map(|g| g.model.as_deref())
        .collect();
    let model = match models.iter().next() {
        Some(m) if models.len() == 1 => format!("{} · ", esc(m)),
        _ => String::new(),
    };
    let _ = write!(
        o,
        "<div class=\"card {class}\"><div class=\"card-title\">{word} · device {}</div><div class=\"src\">{model}{}</div>{}<dl class=\"kv4\">",
        c.device,
        esc(c.source.trim_start_matches("raw/")),
        card_bar(c)
    );
    let slice = c
        .slice_bytes
        .map_or_else(|| "none expected".to_owned(), mib_text);
    let refused = match first_refusal(c) {
        Some((asked, _)) => format!("{} in all", mib_text(asked)),
        None => "never".to_owned(),
    };
    let card = c.card_bytes.map_or_else(|| c.card_source.clone(), mib_text);
    for (k, v, color) in [
        ("slice", slice, "#e07b00"),
        ("held", mib_text(c.held_bytes), "#1565c0"),
        ("refused at", refused, "#c62828"),
        ("card", card, "#555"),
    ] {
        let _ = write!(
            o,
            "<dt><span style=\"color:{color}\">■</span> {k}</dt><dd>{}</dd>",
            esc(&v)
        );
    }
    o.push_str("</dl></div>");
}

/// The first screen: the verdict, a card per cap search (failures first), and one line per
/// failed (then not run) claim.
fn html_summary(o: &mut String, s: &Summary) {
    let t = &s.totals;
    let class = match s.outcome {
        crate::model::Outcome::AllPass => "pass",
        crate::model::Outcome::ClaimFailed => "fail",
        crate::model::Outcome::Incomplete => "incomplete",
    };
    let _ = write!(
        o,
        "<section id=\"summary\">\n<div id=\"verdict\" class=\"verdict {class}\">{}<span class=\"counts\">{} pass · {} fail · {} not run</span></div>\n<p class=\"meta\">{} · run at {} · {} mode · evidence-pack {} · HAMi-core isolation is enforced in software, not a security boundary</p>\n",
        esc(s.outcome.as_str()),
        t.pass,
        t.fail,
        t.not_run,
        esc(&s.bundle),
        esc(&s.timestamp),
        s.mode.as_str(),
        esc(&s.tool_version)
    );
    if !s.cap_searches.is_empty() {
        let mut cards: Vec<&CapSearch> = s.cap_searches.iter().collect();
        // Stable: failures first, then in the summary's order.
        cards.sort_by_key(|c| match c.outcome.as_str() {
            "not-enforced" => 0,
            "enforced" => 2,
            _ => 1,
        });
        o.push_str("<div class=\"cards\">");
        for c in cards.iter().take(SUMMARY_CARDS) {
            summary_card(o, s, c);
        }
        o.push_str("</div>\n");
        if cards.len() > SUMMARY_CARDS {
            let rest = &cards[SUMMARY_CARDS..];
            let count = |w: &str| rest.iter().filter(|c| c.outcome == w).count();
            let _ = writeln!(
                o,
                "<p class=\"more\">and {} more cap searches ({} enforced, {} not enforced, {} inconclusive): see Cap search below.</p>",
                rest.len(),
                count("enforced"),
                count("not-enforced"),
                rest.len() - count("enforced") - count("not-enforced")
            );
        }
    }
    let failed: Vec<&Claim> = s
        .claims
        .iter()
        .filter(|c| c.verdict == ClaimVerdict::Fail)
        .chain(
            s.claims
                .iter()
                .filter(|c| c.verdict == ClaimVerdict::NotRun),
        )
        .collect();
    if failed.is_empty() {
        o.push_str("<p id=\"failed\">No claim failed, and every claim was run.</p>\n");
    } else {
        let _ = writeln!(
            o,
            "<h2>Failed or not run ({} of {})</h2><ul id=\"failed\" class=\"failed\">",
            failed.len(),
            s.claims.len()
        );
        for c in failed.iter().take(SUMMARY_FAILED) {
            let _ = writeln!(
                o,
                "<li title=\"{}\"><b>{}</b> {}: {}</li>",
                esc(&c.reason),
                esc(&c.id),
                verdict_word(c.verdict),
                esc(&c.reason)
            );
        }
        if failed.len() > SUMMARY_FAILED {
            let _ = writeln!(
                o,
                "<li class=\"more\">and {} more: see the claims below</li>",
                failed.len() - SUMMARY_FAILED
            );
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</section>\n");
}

/// `report.html`: a one-screen summary first (the verdict, each card's slice, cap and size as a
/// small chart, the failed claims one line each), then the same detail as the Markdown with the
/// numbers as labelled values and the cap-search charts; no script, no external resource.
pub fn html(s: &Summary) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>HAMi isolation evidence: {b}</title><style>{CSS}</style></head><body>\n<h1>HAMi isolation evidence</h1>\n",
        b = esc(&s.bundle),
    );
    html_summary(&mut o, s);
    o.push_str(&crate::fleet::html(s));
    o.push_str("<h2 id=\"claims\">Claims and evidence</h2>\n<table class=\"claims\"><colgroup><col class=\"id\"><col class=\"claim\"><col class=\"verdict\"><col class=\"why\"><col class=\"numbers\"><col class=\"evidence\"></colgroup><tr><th>Id</th><th>Claim</th><th>Verdict</th><th>Why</th><th>Numbers</th><th>Evidence</th></tr>\n");
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
        let numbers: String = labelled_numbers(c)
            .iter()
            .map(|l| format!("<dt>{}</dt><dd>{}</dd>", esc(&l.label), esc(&l.value)))
            .collect();
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.id),
            esc(&c.claim),
            verdict_word(c.verdict),
            esc(&c.reason),
            if numbers.is_empty() {
                "none".to_owned()
            } else {
                format!("<dl class=\"kv\">{numbers}</dl>")
            },
            if ev.is_empty() { "none".to_owned() } else { ev }
        );
    }
    o.push_str("</table>\n");
    if !s.measurements.is_empty() {
        o.push_str("<h2 id=\"measurements\">Measurements</h2>\n<p>Measured and reported with their numbers; not claims, so never counted as a pass.</p>\n<table><tr><th>Id</th><th>What</th><th>Numbers</th><th>Why not a claim</th><th>Evidence</th></tr>\n");
        for m in &s.measurements {
            let numbers: String = labelled(&m.numbers)
                .iter()
                .map(|l| format!("<dt>{}</dt><dd>{}</dd>", esc(&l.label), esc(&l.value)))
                .collect();
            let ev = m
                .evidence
                .iter()
                .map(|e| format!("<code>{}</code>", esc(e)))
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&m.id),
                esc(&m.what),
                if numbers.is_empty() {
                    "none".to_owned()
                } else {
                    format!("<dl class=\"kv\">{numbers}</dl>")
                },
                esc(&m.reason),
                if ev.is_empty() { "none".to_owned() } else { ev }
            );
        }
        o.push_str("</table>\n");
    }
    if !s.cap_searches.is_empty() {
        o.push_str("<h2>Cap search</h2>\n");
        // A fleet has a cap search per card: only some are drawn (see `fleet::charted`).
        let drawn = if s.mode == crate::model::Mode::Fleet {
            crate::fleet::charted(s)
        } else {
            s.cap_searches.iter().collect()
        };
        for c in &drawn {
            let _ = writeln!(
                o,
                "<figure>{}<figcaption>{}</figcaption></figure>",
                svg_chart(c),
                esc(&cap_line(c))
            );
        }
        if drawn.len() < s.cap_searches.len() {
            let _ = writeln!(
                o,
                "<p class=\"more\">and {} more cap searches, not drawn here: each one's line is in report.md, its steps in summary.json.</p>",
                s.cap_searches.len() - drawn.len()
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
    fn numbers_read_as_labelled_values_with_units() {
        let claim = Claim {
            id: "x".into(),
            claim: String::new(),
            verdict: ClaimVerdict::Pass,
            reason: String::new(),
            numbers: [
                ("held_mib", serde_json::json!(7482.0)),
                ("alloc_calls", serde_json::json!(21)),
                ("all_freed", serde_json::json!(true)),
                ("cuMemAlloc_v2 p50_us", serde_json::json!(125.208)),
                ("htod_gbps_mean", serde_json::json!(53.99)),
                ("region_limits_mib", serde_json::json!([8000.0, 1024.0])),
                ("stopped_because", serde_json::json!("resolution-reached")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            evidence: vec![],
        };
        let got: Vec<(String, String)> = labelled_numbers(&claim)
            .into_iter()
            .map(|l| (l.label, l.value))
            .collect();
        let want = [
            ("all memory freed", "yes"),
            ("allocation calls", "21"),
            ("cuMemAlloc_v2 p50", "125.208 µs"),
            ("held", "7482 MiB"),
            ("host→device (mean)", "53.99 GB/s"),
            ("shared-region limits", "8000 MiB, 1024 MiB"),
            ("stopped because", "resolution-reached"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_card_bar_draws_card_held_slice_and_refusal_to_one_scale() {
        let mut c = search(&[(4096, true), (4096, false), (2048, true)], Some(81559));
        c.held_bytes = 6144 * 1024 * 1024;
        let bar = card_bar(&c);
        // Card 81559 MiB spans the bar (4 → 316); held 6144 MiB is ~7.5 % of it.
        assert!(bar.contains("width=\"312.0\" height=\"16\""), "{bar}");
        assert!(bar.contains("width=\"23.5\" height=\"10\""), "{bar}");
        assert_eq!(bar.matches("stroke=\"#c62828\"").count(), 1, "one refusal");
        assert_eq!(
            first_refusal(&c),
            Some((8192 * 1024 * 1024, 4096 * 1024 * 1024))
        );
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
