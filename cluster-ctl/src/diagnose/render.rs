//! The diagnosis for people (most likely failure first, quoted evidence with line numbers, cause,
//! fix, confidence; or "no known failure matched" with what was looked at and checked), and
//! README's troubleshooting table, generated from the rules. Pure.

use std::fmt::Write as _;

use super::engine::{Diagnosis, Finding, Outcome};
use super::rules::RULES;
use crate::doctor::Severity;

fn location(e: &super::engine::EvidenceLine) -> String {
    match e.line {
        Some(l) => format!("{}:{l}", e.source),
        None => e.source.clone(),
    }
}

fn finding_text(out: &mut String, n: usize, f: &Finding) {
    let _ = writeln!(
        out,
        "{n}. {} — confidence {}",
        f.mode,
        f.confidence.as_str()
    );
    let _ = writeln!(out, "   symptom: {}", f.symptom);
    let _ = writeln!(out, "   evidence:");
    for e in &f.evidence {
        let consequence = if e.mode == f.mode {
            String::new()
        } else {
            format!("   [{}, a consequence]", e.mode)
        };
        let _ = writeln!(
            out,
            "     {}  {}{consequence}",
            location(e),
            e.text.trim_end()
        );
    }
    if f.evidence_not_quoted > 0 {
        let _ = writeln!(out, "     (+{} more matching lines)", f.evidence_not_quoted);
    }
    let _ = writeln!(out, "   cause: {}", f.cause);
    let _ = writeln!(out, "   fix:");
    for s in &f.fix {
        let _ = writeln!(out, "     - {s}");
    }
    for c in &f.commands {
        let _ = writeln!(out, "     $ {c}");
    }
    if let Some(a) = &f.versions.advice {
        let _ = writeln!(
            out,
            "   version: {a}{}",
            f.versions
                .seen
                .as_ref()
                .map(|s| format!(" (seen: {s})"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "   why this confidence: {}", f.confidence_reason);
    let refs: Vec<String> = f
        .upstream
        .iter()
        .map(|u| format!("{} {}", u.what, u.url))
        .collect();
    let _ = writeln!(out, "   upstream: {}", refs.join(", "));
}

fn looked_at(out: &mut String, d: &Diagnosis) {
    let _ = writeln!(out, "looked at:");
    if d.looked_at.is_empty() {
        let _ = writeln!(out, "  nothing readable");
    }
    for l in &d.looked_at {
        let _ = writeln!(out, "  {} ({}, {})", l.source, l.read_as, l.size);
    }
    for v in &d.hami_versions_seen {
        let at = v.line.map(|l| format!(":{l}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  HAMi version seen: {} ({}{at}: {})",
            v.version, v.source, v.text
        );
    }
    for n in &d.notes {
        let _ = writeln!(out, "  note: {n}");
    }
}

/// The answer for a terminal.
pub fn human(d: &Diagnosis) -> String {
    let mut out = String::new();
    let problems: Vec<&Finding> = d.problems().collect();
    match d.outcome {
        Outcome::FailureNamed => {
            let _ = writeln!(
                out,
                "doctor: {} known failure{} named, most likely first\n",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            for (i, f) in problems.iter().enumerate() {
                finding_text(&mut out, i + 1, f);
                out.push('\n');
            }
        }
        Outcome::NoKnownFailure => {
            let _ = writeln!(out, "doctor: no known failure matched\n");
        }
    }
    for f in d.findings.iter().filter(|f| f.severity == Severity::Info) {
        let _ = writeln!(out, "info [{}] {}", f.mode, f.cause);
        for e in &f.evidence {
            let _ = writeln!(out, "     {}  {}", location(e), e.text.trim_end());
        }
    }
    looked_at(&mut out, d);
    if d.outcome == Outcome::NoKnownFailure {
        let _ = writeln!(out, "signals checked ({} rules):", d.rules_checked.len());
        for r in &d.rules_checked {
            let _ = writeln!(out, "  {}: {}", r.mode, r.signals.join("; "));
        }
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// README's troubleshooting table: one row per rule.
pub fn readme_table() -> String {
    let mut out = String::from(
        "| failure mode | symptom | cause | fix | HAMi versions | real capture | upstream |\n|---|---|---|---|---|---|---|\n",
    );
    for r in RULES {
        let mut fix = r
            .fix
            .steps
            .first()
            .map(|s| (*s).to_owned())
            .unwrap_or_default();
        if let Some(c) = r.fix.commands.first() {
            let _ = write!(fix, ": `{c}`");
        }
        let versions = match r.versions.fixed_in {
            Some(v) => format!("{}; fixed in {v}", r.versions.affected),
            None => r.versions.affected.to_owned(),
        };
        let upstream: Vec<String> = r
            .upstream
            .iter()
            .map(|u| format!("[{}]({})", u.what, u.url))
            .collect();
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} | {} |",
            r.mode,
            cell(r.symptom),
            cell(r.cause),
            cell(&fix),
            cell(&versions),
            if r.captured { "yes" } else { "no" },
            cell(&upstream.join(", "))
        );
    }
    out
}
