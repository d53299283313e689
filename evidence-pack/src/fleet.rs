//! Fleet mode: a `cluster-ctl fleet --out DIR` folder (`fleet.json` and the probe reports it
//! names) as one claim per card, judged again here from the card's own probe report, and the
//! fleet's table and grid picture for the reports.
//!
//! Invariant, as in the other modes: a card `fleet.json` calls verified passes only when its
//! probe report (a file of the bundle, not `fleet.json`'s word) is the report of that very card
//! (device 0's UUID is the card's) and [`lab_report::fleet::judge_card_of`] finds it held to the
//! slice the card's pod asked for; otherwise the claim fails as UNSUPPORTED, naming the file.
//! `verify` runs the same [`judge`] over the files inside the bundle ([`recheck`]) and checks the
//! summary's fleet table against `raw/fleet.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lab_report::fleet::{CardOutcome, FleetCard, FleetNode, FleetReport, judge_card_of};
use lab_report::judge::{self, Doc};
use serde_json::{Value, json};

use crate::claims::{Unsupported, raw_path};
use crate::model::{CapSearch, Claim, ClaimVerdict, FleetRow, Summary};

/// Where the fleet document lies in the input folder (and under `raw/` in the bundle).
pub const FLEET_JSON: &str = "fleet.json";

/// The claim id of a card: `<node>/gpu<index>` (node names hold no `/`).
pub fn card_id(node: &str, index: u32) -> String {
    format!("{node}/gpu{index}")
}

/// The claim id of a node whose registration could not be read (its cards are unknown).
pub fn registration_id(node: &str) -> String {
    format!("{node}/registration")
}

fn node_state(n: &FleetNode) -> &'static str {
    if !n.ready {
        "not ready"
    } else if n.cordoned {
        "cordoned"
    } else {
        "ready"
    }
}

/// Judges a card from its probe report among `files` (paths relative to the fleet folder):
/// `Ok(why)` when the report is this card's and shows it held to its slice; `Err((file, why))`.
pub fn judge(
    card: &FleetCard,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<String, (Option<String>, String)> {
    let Some(path) = card.probe_report.as_deref() else {
        return Err((None, "fleet.json names no probe report for it".into()));
    };
    let path = path.trim_start_matches("./");
    let file = Some(path.to_owned());
    let doc = judge::read_doc(path, files.get(path).map(Vec::as_slice))
        .map_err(|why| (file.clone(), format!("{path} {why}")))?;
    let Doc::Probe(report) = doc else {
        return Err((file, format!("{path} is not a gpu-probe report")));
    };
    judge_card_of(&report, &card.uuid, card.slice_mib)
        .map_err(|why| (file, format!("{path}: {why}")))
}

fn numbers(card: &FleetCard) -> BTreeMap<String, Value> {
    let mut n = BTreeMap::new();
    n.insert("slice_mib".into(), json!(card.slice_mib));
    n.insert("card_mib".into(), json!(card.memory_mib));
    if let Some(cap) = card.cap_mib {
        n.insert("cap_mib".into(), json!(cap));
    }
    n
}

/// One claim per card (and per node whose cards are unknown), and the fleet table's rows.
pub fn claims(
    fleet: &FleetReport,
    files: &BTreeMap<String, Vec<u8>>,
    warnings: &mut Vec<String>,
) -> (Vec<Claim>, Vec<FleetRow>) {
    let mut claims = Vec::new();
    let mut rows = Vec::new();
    let recounted = fleet.totals();
    if recounted != fleet.totals {
        let say = |t: &lab_report::fleet::FleetTotals| {
            format!(
                "{} nodes, {} cards: {} verified, {} failed, {} not checked",
                t.nodes, t.cards, t.verified, t.failed, t.not_checked
            )
        };
        warnings.push(format!(
            "fleet.json's totals ({}) differ from its cards ({}); the cards count",
            say(&fleet.totals),
            say(&recounted)
        ));
    }
    for node in &fleet.nodes {
        let state = node_state(node).to_owned();
        if node.cards.is_empty()
            && let Some(err) = &node.register_error
        {
            let id = registration_id(&node.name);
            claims.push(Claim {
                id: id.clone(),
                claim: format!(
                    "every card HAMi registered on node {} is checked",
                    node.name
                ),
                verdict: ClaimVerdict::NotRun,
                reason: format!("registration unreadable: {err}"),
                numbers: BTreeMap::new(),
                evidence: vec![raw_path(FLEET_JSON)],
            });
            rows.push(FleetRow {
                node: node.name.clone(),
                node_state: state.clone(),
                hami_version: node.hami_version.clone(),
                index: None,
                uuid: String::new(),
                model: String::new(),
                memory_mib: None,
                slice_mib: None,
                cap_mib: None,
                claim: id,
            });
        }
        for card in &node.cards {
            let id = card_id(&node.name, card.index);
            let mut evidence = vec![raw_path(FLEET_JSON)];
            if let Some(p) = card.probe_report.as_deref() {
                let p = p.trim_start_matches("./");
                if files.contains_key(p) {
                    evidence.push(raw_path(p));
                } else {
                    warnings.push(format!(
                        "{id}: probe report `{p}` named in fleet.json is not in the input directory"
                    ));
                }
            }
            let (verdict, reason) = match card.outcome {
                CardOutcome::Verified => match judge(card, files) {
                    Ok(why) => (ClaimVerdict::Pass, why),
                    Err((_, why)) => {
                        let why = format!("UNSUPPORTED: fleet.json says verified, but {why}");
                        warnings.push(format!("{id}: {why}"));
                        (ClaimVerdict::Fail, why)
                    }
                },
                CardOutcome::Failed => (
                    ClaimVerdict::Fail,
                    if card.reason.is_empty() {
                        "fleet.json says failed (no reason given)".to_owned()
                    } else {
                        card.reason.clone()
                    },
                ),
                CardOutcome::NotChecked => {
                    let label = card.not_checked.as_ref().map_or_else(
                        || {
                            warnings.push(format!(
                                "{id}: fleet.json says not checked but gives no kind of reason"
                            ));
                            "not checked"
                        },
                        lab_report::fleet::NotChecked::label,
                    );
                    let reason = if card.reason.is_empty() {
                        format!("not checked: {label}")
                    } else {
                        format!("not checked: {label}: {}", card.reason)
                    };
                    (ClaimVerdict::NotRun, reason)
                }
            };
            claims.push(Claim {
                id: id.clone(),
                claim: format!(
                    "card {} of node {} ({}, {}) holds its pod to the {} MiB slice",
                    card.index,
                    node.name,
                    if card.model.is_empty() {
                        "model not known"
                    } else {
                        &card.model
                    },
                    card.uuid,
                    card.slice_mib
                ),
                verdict,
                reason,
                numbers: numbers(card),
                evidence,
            });
            rows.push(FleetRow {
                node: node.name.clone(),
                node_state: state.clone(),
                hami_version: node.hami_version.clone(),
                index: Some(card.index),
                uuid: card.uuid.clone(),
                model: card.model.clone(),
                memory_mib: Some(card.memory_mib),
                slice_mib: Some(card.slice_mib),
                cap_mib: card.cap_mib,
                claim: id,
            });
        }
    }
    (claims, rows)
}

/// `verify`'s half: every passed claim is judged again from `raw` (archive paths without `raw/`)
/// with the card `raw/fleet.json` holds, and the summary's fleet table must be the one
/// `raw/fleet.json` gives.
pub fn recheck(summary: &Summary, raw: &BTreeMap<String, Vec<u8>>) -> Vec<Unsupported> {
    let fleet_file = Some(raw_path(FLEET_JSON));
    let fleet: Result<FleetReport, String> = match raw.get(FLEET_JSON) {
        None => Err("raw/fleet.json is missing".into()),
        Some(bytes) => {
            serde_json::from_slice(bytes).map_err(|e| format!("raw/fleet.json does not parse: {e}"))
        }
    };
    let fleet = match fleet {
        Ok(f) => f,
        Err(why) => {
            return summary
                .claims
                .iter()
                .filter(|c| c.verdict == ClaimVerdict::Pass)
                .map(|c| Unsupported {
                    claim: c.id.clone(),
                    file: fleet_file.clone(),
                    why: why.clone(),
                })
                .collect();
        }
    };
    let cards: BTreeMap<String, &FleetCard> = fleet
        .nodes
        .iter()
        .flat_map(|n| n.cards.iter().map(|c| (card_id(&n.name, c.index), c)))
        .collect();
    let mut out = Vec::new();
    for c in summary
        .claims
        .iter()
        .filter(|c| c.verdict == ClaimVerdict::Pass)
    {
        let Some(card) = cards.get(&c.id) else {
            out.push(Unsupported {
                claim: c.id.clone(),
                file: fleet_file.clone(),
                why: "raw/fleet.json holds no such card".into(),
            });
            continue;
        };
        if card.outcome != CardOutcome::Verified {
            out.push(Unsupported {
                claim: c.id.clone(),
                file: fleet_file.clone(),
                why: format!(
                    "raw/fleet.json does not say this card was verified ({:?})",
                    card.outcome
                ),
            });
            continue;
        }
        if let Err((file, why)) = judge(card, raw) {
            out.push(Unsupported {
                claim: c.id.clone(),
                file: file.map(|f| raw_path(&f)).or_else(|| fleet_file.clone()),
                why,
            });
        }
    }
    let (_, rows) = claims(&fleet, raw, &mut Vec::new());
    if rows != summary.fleet {
        out.push(Unsupported {
            claim: "fleet table".into(),
            file: fleet_file,
            why: "summary.json's fleet table is not the one raw/fleet.json gives".into(),
        });
    }
    out
}

/// How many cap-search charts report.html draws for a fleet: one chart is ~11 KiB, and a fleet
/// of 4,000 cards would otherwise make report.html ~53 MB, near the 64 MiB a bundle entry may hold.
pub const FLEET_CHARTS: usize = 12;

/// The cap searches report.html draws for a fleet: at most [`FLEET_CHARTS`], those not enforced
/// first, then inconclusive, then enforced, each group in the summary's order.
pub fn charted(s: &Summary) -> Vec<&CapSearch> {
    let mut all: Vec<&CapSearch> = s.cap_searches.iter().collect();
    all.sort_by_key(|c| match c.outcome.as_str() {
        "not-enforced" => 0,
        "enforced" => 2,
        _ => 1,
    });
    all.truncate(FLEET_CHARTS);
    all
}

fn verdict_of<'a>(s: &'a Summary, row: &FleetRow) -> Option<&'a Claim> {
    s.claims.iter().find(|c| c.id == row.claim)
}

fn verdict_class(v: Option<ClaimVerdict>) -> (&'static str, &'static str, &'static str) {
    match v {
        Some(ClaimVerdict::Pass) => ("pass", "VERIFIED", "#2e7d32"),
        Some(ClaimVerdict::Fail) => ("fail", "FAILED", "#c62828"),
        Some(ClaimVerdict::NotRun) | None => ("not-run", "NOT CHECKED", "#f9a825"),
    }
}

fn opt_mib(v: Option<u64>) -> String {
    v.map_or_else(|| "—".to_owned(), |m| format!("{m} MiB"))
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The Markdown "Fleet" section: one row per card (empty when the summary is not a fleet's).
pub fn markdown(s: &Summary) -> String {
    if s.fleet.is_empty() {
        return String::new();
    }
    let mut o = String::from(
        "\n## Fleet\n\nOne row per card HAMi registered; the grid picture is in report.html.\n\n| Node | Node state | HAMi | GPU | Model | UUID | Slice | Cap boundary | Verdict |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &s.fleet {
        let (_, word, _) = verdict_class(verdict_of(s, r).map(|c| c.verdict));
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {word} |",
            md_cell(&r.node),
            r.node_state,
            md_cell(r.hami_version.as_deref().unwrap_or("not known")),
            r.index.map_or_else(|| "—".to_owned(), |i| i.to_string()),
            md_cell(&r.model),
            md_cell(&r.uuid),
            opt_mib(r.slice_mib),
            opt_mib(r.cap_mib),
        );
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

/// The fleet as a picture: one row per node, one square per card (by index), coloured by its
/// verdict, with the node's name on the left; each square's tooltip names the card and says why.
pub fn grid_svg(s: &Summary) -> String {
    let mut nodes: Vec<&str> = Vec::new();
    for r in &s.fleet {
        if !nodes.contains(&r.node.as_str()) {
            nodes.push(&r.node);
        }
    }
    let columns = s
        .fleet
        .iter()
        .map(|r| r.index.map_or(1, |i| i + 1))
        .max()
        .unwrap_or(1);
    // Big enough to see and hover on a few nodes; smaller rows for hundreds.
    let cell: u32 = if nodes.len() <= 64 { 22 } else { 8 };
    let gap: u32 = 2;
    let label_w: u32 = 180;
    let top: u32 = 20;
    let rows = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
    let width = label_w + columns * (cell + gap) + 10;
    let height = top + rows * (cell + gap) + 6;
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg id=\"fleet-grid\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"fleet grid: {} nodes, one square per card\" font-family=\"sans-serif\" font-size=\"12\">",
        nodes.len()
    );
    for i in 0..columns {
        let x = label_w + i * (cell + gap) + cell / 2;
        let _ = write!(
            o,
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{i}</text>",
            top - 6
        );
    }
    for (row, node) in nodes.iter().enumerate() {
        let y = top + u32::try_from(row).unwrap_or(u32::MAX) * (cell + gap);
        if cell >= 12 {
            let _ = write!(
                o,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#222\">{}</text>",
                label_w - 6,
                y + cell - 5,
                esc(node)
            );
        }
        for r in s.fleet.iter().filter(|r| r.node == *node) {
            let claim = verdict_of(s, r);
            let (class, word, colour) = verdict_class(claim.map(|c| c.verdict));
            let col = r.index.unwrap_or(0);
            let x = label_w + col * (cell + gap);
            let why = claim.map_or("", |c| c.reason.as_str());
            let _ = write!(
                o,
                "<rect class=\"cell {class}\" data-claim=\"{}\" x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{cell}\" rx=\"2\" fill=\"{colour}\"><title>{}: {word}: {}</title></rect>",
                esc(&r.claim),
                if r.index.is_some() {
                    cell
                } else {
                    // A node whose cards are unknown: one bar across the row.
                    columns * (cell + gap) - gap
                },
                esc(&r.claim),
                esc(why)
            );
        }
    }
    o.push_str("</svg>");
    o
}

/// The HTML "Fleet" section: counts, the grid picture with its legend, and the per-card table
/// (empty when the summary is not a fleet's).
pub fn html(s: &Summary) -> String {
    if s.fleet.is_empty() {
        return String::new();
    }
    let mut counts = [0usize; 3];
    for r in &s.fleet {
        let i = match verdict_of(s, r).map(|c| c.verdict) {
            Some(ClaimVerdict::Pass) => 0,
            Some(ClaimVerdict::Fail) => 1,
            _ => 2,
        };
        counts[i] += 1;
    }
    let mut nodes: Vec<&str> = s.fleet.iter().map(|r| r.node.as_str()).collect();
    nodes.dedup();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<h2 id=\"fleet\">Fleet</h2>\n<p class=\"meta\">{} nodes · {} cards: {} verified · {} failed · {} not checked. One row per node, one square per card (its index on the node).</p>",
        nodes.len(),
        s.fleet.iter().filter(|r| r.index.is_some()).count(),
        counts[0],
        counts[1],
        counts[2]
    );
    o.push_str("<p id=\"fleet-legend\" class=\"meta\">");
    for (word, colour) in [
        ("verified", "#2e7d32"),
        ("failed", "#c62828"),
        ("not checked", "#f9a825"),
    ] {
        let _ = write!(o, "<span style=\"color:{colour}\">■</span> {word} &nbsp; ");
    }
    o.push_str("</p>\n<figure>");
    o.push_str(&grid_svg(s));
    o.push_str("</figure>\n<table id=\"fleet-table\" class=\"fleet\"><tr><th>Node</th><th>Node state</th><th>HAMi</th><th>GPU</th><th>Model</th><th>UUID</th><th>Slice</th><th>Cap boundary</th><th>Verdict</th><th>Why</th></tr>\n");
    for r in &s.fleet {
        let claim = verdict_of(s, r);
        let (class, word, _) = verdict_class(claim.map(|c| c.verdict));
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"{class}\">{word}</td><td>{}</td></tr>",
            esc(&r.node),
            r.node_state,
            esc(r.hami_version.as_deref().unwrap_or("not known")),
            r.index.map_or_else(|| "—".to_owned(), |i| i.to_string()),
            esc(&r.model),
            esc(&r.uuid),
            opt_mib(r.slice_mib),
            opt_mib(r.cap_mib),
            esc(claim.map_or("", |c| c.reason.as_str()))
        );
    }
    o.push_str("</table>\n");
    o
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn search(source: &str, outcome: &str) -> CapSearch {
        CapSearch {
            source: source.into(),
            device: 0,
            slice_bytes: None,
            card_bytes: None,
            card_source: String::new(),
            held_bytes: 0,
            outcome: outcome.into(),
            steps: Vec::new(),
        }
    }

    #[test]
    fn a_fleet_draws_a_few_charts_failures_first() {
        let mut cap_searches: Vec<CapSearch> = (0..14)
            .map(|i| search(&format!("raw/probe/{i:02}.json"), "enforced"))
            .collect();
        cap_searches.push(search("raw/probe/late-bad.json", "not-enforced"));
        cap_searches.push(search("raw/probe/late-odd.json", "inconclusive"));
        let summary: Summary = serde_json::from_value(serde_json::json!({
            "schema": "x", "schema_version": 1, "tool_version": "", "mode": "fleet",
            "timestamp": "", "bundle": "",
            "environment": crate::model::Environment::default(), "claims": [],
            "totals": {"pass": 0, "fail": 0, "not_run": 0}, "outcome": "incomplete",
            "scope": {"statement": "", "probe_notes": [], "not_measured": []},
            "cap_searches": cap_searches, "redactions": [], "warnings": [], "raw_files": [],
        }))
        .unwrap();
        let drawn: Vec<&str> = charted(&summary)
            .iter()
            .map(|c| c.source.as_str())
            .collect();
        assert_eq!(drawn.len(), FLEET_CHARTS);
        assert_eq!(
            drawn[..3],
            [
                "raw/probe/late-bad.json",
                "raw/probe/late-odd.json",
                "raw/probe/00.json"
            ]
        );
        let html = crate::render::html(&summary);
        assert_eq!(html.matches("<figure>").count(), FLEET_CHARTS);
        assert!(
            html.contains("and 4 more cap searches, not drawn here"),
            "{html}"
        );
    }
}
