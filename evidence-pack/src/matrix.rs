//! The conformance matrix: what a HAMi-core library caps, one row per cell of a
//! `gpu-probe conformance` report, rendered into report.md and report.html.
//!
//! [`from_probes`] takes the rows from the reports (pure, no judgement: each row carries the
//! probe's outcome and whether it failed the cell's claim — the claim itself is the report's
//! `conformance.<cell>` check, which becomes a claim like any other check, so an escaped path is
//! a failed claim of the bundle). [`markdown`] and [`html`] are pure functions of those rows.

use std::fmt::Write as _;

use lab_report::probe::{CheckStatus, Report, mib};

pub use crate::model::{Matrix, Row};

/// The matrices of every conformance report among `probes` (path → report, in path order).
/// `many` is whether claim ids carry the report's name (local mode with several reports).
pub fn from_probes(probes: &[(String, Report)]) -> Vec<Matrix> {
    let many = probes.len() > 1;
    probes
        .iter()
        .filter_map(|(path, r)| {
            let c = r.conformance.as_ref()?;
            let stem = path.trim_end_matches(".json");
            let rows = c
                .cells
                .iter()
                .map(|cell| {
                    let check_id = format!("conformance.{}", cell.id);
                    let check = r.checks.iter().find(|k| k.id == check_id);
                    let numbers = match (&cell.compute, cell.held_bytes, cell.slice_bytes) {
                        (Some(cmp), _, _) => format!(
                            "{:.0}% of the baseline (band {:.0}% ± {:.0})",
                            cmp.ratio * 100.0,
                            cmp.expected_ratio * 100.0,
                            cmp.band_percentage_points
                        ),
                        (None, Some(h), Some(s)) => {
                            format!("{:.0} / {:.0} MiB", mib(h), mib(s))
                        }
                        (None, Some(h), None) => format!("{:.0} MiB", mib(h)),
                        _ => String::new(),
                    };
                    Row {
                        group: cell.group.label().to_owned(),
                        cell: cell.id.clone(),
                        title: cell.title.clone(),
                        outcome: serde_json::to_value(cell.outcome)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        claim: check.map(|_| {
                            if many {
                                format!("{stem}:{check_id}")
                            } else {
                                check_id.clone()
                            }
                        }),
                        failed: check.is_some_and(|k| k.status == CheckStatus::Failed),
                        numbers,
                        note: cell.note.clone(),
                    }
                })
                .collect();
            Some(Matrix {
                source: crate::claims::raw_path(path),
                library: c.library.clone(),
                revision: c.revision.clone(),
                library_sha256: c.library_sha256.clone(),
                devices: c
                    .devices
                    .iter()
                    .map(|d| {
                        format!(
                            "{} {}",
                            d.name.as_deref().unwrap_or("unknown GPU"),
                            d.total_bytes
                                .map_or_else(|| "?".to_owned(), |b| format!("{:.0} MiB", mib(b)))
                        )
                    })
                    .collect(),
                driver_version: r.driver.driver_version.clone(),
                seconds: c.seconds,
                all_freed: c.all_freed,
                rows,
            })
        })
        .collect()
}

fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn title(m: &Matrix) -> String {
    format!(
        "{} ({})",
        m.revision.as_deref().unwrap_or("revision not given"),
        m.library
    )
}

fn header(m: &Matrix) -> String {
    format!(
        "{} · driver {} · {:.1} s · memory back after every cell: {} · sha256 {}",
        m.devices.join(", "),
        m.driver_version.as_deref().unwrap_or("unknown"),
        m.seconds,
        if m.all_freed { "yes" } else { "NO" },
        m.library_sha256.as_deref().unwrap_or("unknown")
    )
}

/// The Markdown section (empty without conformance reports).
pub fn markdown(ms: &[Matrix]) -> String {
    if ms.is_empty() {
        return String::new();
    }
    let mut o = String::from(
        "\n## Conformance matrix\n\nEach row is one child probe under the library; a failed row is a failed claim above.\n",
    );
    for m in ms {
        let failed = m.rows.iter().filter(|r| r.failed).count();
        let _ = writeln!(
            o,
            "\n### {}\n\n{} · `{}` · {} of {} cells failed\n\n| Group | Cell | Outcome | Numbers | Claim | Why |\n|---|---|---|---|---|---|",
            md(&title(m)),
            md(&header(m)),
            m.source,
            failed,
            m.rows.len()
        );
        for r in &m.rows {
            let _ = writeln!(
                o,
                "| {} | `{}` {} | {}{} | {} | {} | {} |",
                md(&r.group),
                md(&r.cell),
                md(&r.title),
                if r.failed { "**FAIL** " } else { "" },
                md(&r.outcome),
                md(&r.numbers),
                r.claim
                    .as_deref()
                    .map_or_else(|| "—".to_owned(), |c| format!("`{}`", md(c))),
                md(&r.note)
            );
        }
    }
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

/// The HTML section (empty without conformance reports); classes `pass`/`fail`/`not-run` as in
/// the claims table.
pub fn html(ms: &[Matrix]) -> String {
    if ms.is_empty() {
        return String::new();
    }
    let mut o = String::from(
        "<h2>Conformance matrix</h2>\n<p>Each row is one child probe under the library; a failed row is a failed claim above.</p>\n",
    );
    for m in ms {
        let _ = writeln!(
            o,
            "<h3>{}</h3>\n<p>{} · <code>{}</code></p>\n<table class=\"matrix\"><tr><th>Group</th><th>Cell</th><th>Outcome</th><th>Numbers</th><th>Claim</th><th>Why</th></tr>",
            esc(&title(m)),
            esc(&header(m)),
            esc(&m.source)
        );
        for r in &m.rows {
            let class = if r.failed {
                "fail"
            } else if r.claim.is_some() {
                "pass"
            } else {
                "not-run"
            };
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td><code>{}</code> {}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.group),
                esc(&r.cell),
                esc(&r.title),
                esc(&r.outcome),
                esc(&r.numbers),
                r.claim
                    .as_deref()
                    .map_or_else(|| "—".to_owned(), |c| format!("<code>{}</code>", esc(c))),
                esc(&r.note)
            );
        }
        o.push_str("</table>\n");
    }
    o
}
