//! The engine: every rule's signals over the evidence → findings, most likely first. A rule
//! matches when one of its `Alone` signals, or all of its `Together` signals, found evidence;
//! `Support` signals only add quotes. A finding whose rule explains another matched one takes that
//! one's evidence as a consequence. The advice follows the HAMi version the input shows. Pure.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

use super::evidence::{DocKind, Document, Evidence, Line, LookedAt, VersionSeen};
use super::facts;
use super::rules::{Confidence, LinePattern, Matcher, RULES, Role, Rule, Upstream};
use super::version::Version;
use crate::doctor::Severity;

/// The schema of the JSON answer.
pub const SCHEMA: &str = super::text::DIAGNOSIS_SCHEMA;
pub const SCHEMA_VERSION: u32 = 1;

/// Evidence lines quoted per signal; the rest are counted.
const MAX_LINES_PER_SIGNAL: usize = 5;

/// One quoted line of evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceLine {
    pub source: String,
    /// 1-based, when the source is a file.
    pub line: Option<usize>,
    pub text: String,
    /// The signal that matched it.
    pub signal: &'static str,
    /// The mode whose signal it is (another mode's when quoted as a consequence).
    pub mode: &'static str,
    #[serde(skip)]
    pub detector_fix: Option<String>,
}

/// What the input says about the version a fix is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionAdvice {
    pub affected: &'static str,
    pub fixed_in: Option<&'static str>,
    /// The lowest HAMi version the input shows, where it shows it.
    pub seen: Option<String>,
    pub advice: Option<String>,
}

/// One named failure.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub mode: &'static str,
    /// Same as `mode` (the rule's id; kept for scripts written against earlier `doctor -o json`).
    pub rule: &'static str,
    pub severity: Severity,
    pub confidence: Confidence,
    pub confidence_reason: String,
    pub symptom: &'static str,
    pub cause: &'static str,
    pub evidence: Vec<EvidenceLine>,
    /// Matching lines not quoted (beyond the first few per signal).
    pub evidence_not_quoted: usize,
    pub fix: Vec<String>,
    pub commands: Vec<String>,
    pub versions: VersionAdvice,
    pub upstream: &'static [Upstream],
    /// Matched modes this one explains (their evidence is quoted here).
    pub explains: Vec<&'static str>,
    #[serde(skip)]
    signals_matched: usize,
    #[serde(skip)]
    index: usize,
    #[serde(skip)]
    bindings: BTreeMap<String, Vec<String>>,
}

/// What a rule looks for, for the "nothing matched" answer.
#[derive(Debug, Clone, Serialize)]
pub struct RuleChecked {
    pub mode: &'static str,
    pub signals: Vec<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// At least one failure (severity problem) was named.
    FailureNamed,
    /// No known failure matched.
    NoKnownFailure,
}

/// The answer.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub schema: &'static str,
    pub schema_version: u32,
    pub outcome: Outcome,
    /// Most likely first; infos last.
    pub findings: Vec<Finding>,
    pub looked_at: Vec<LookedAt>,
    pub hami_versions_seen: Vec<VersionSeen>,
    pub notes: Vec<String>,
    pub rules_checked: Vec<RuleChecked>,
}

impl Diagnosis {
    /// Findings that name a failure (not infos).
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
    }
}

/// Compiled regexes of every rule, by pattern text; a pattern that does not compile matches
/// nothing (a unit test keeps them all valid).
fn compiled(p: &'static str) -> Option<&'static Regex> {
    static ALL: OnceLock<BTreeMap<&'static str, Regex>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut m = BTreeMap::new();
        for r in RULES {
            for s in r.signals {
                if let Matcher::Line(lp) = s.matcher {
                    for pat in lp.all.iter().chain(lp.none) {
                        if let Ok(re) = Regex::new(pat) {
                            m.insert(*pat, re);
                        }
                    }
                }
            }
        }
        m
    })
    .get(p)
}

/// Values for placeholders found anywhere in an evidence line.
fn extractors() -> &'static [Regex] {
    static X: OnceLock<Vec<Regex>> = OnceLock::new();
    X.get_or_init(|| {
        [
            r"hami-scheduler\.(?P<hami_ns>[a-z0-9-]+)\.svc",
            r#"pod="(?P<ns>[a-z0-9-]+)/(?P<pod>[a-z0-9.-]+)""#,
            r"on node (?P<node>[A-Za-z0-9._-]+)",
        ]
        .iter()
        .filter_map(|p| Regex::new(p).ok())
        .collect()
    })
}

/// A new log record or event starts on this line: it is not the wrapped rest of the line before.
fn starts_record(text: &str) -> bool {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    text.starts_with(char::is_whitespace)
        || R.get_or_init(|| {
            Regex::new(r"^([IWEF]\d{4} |\[HAMI-core|Warning |Normal |\d{4}-\d{2}-\d{2}|Trace\[)")
                .ok()
        })
        .as_ref()
        .is_some_and(|r| r.is_match(text))
}

type Bindings = Vec<(String, String)>;

fn captures_of(regexes: &[&Regex], text: &str) -> Bindings {
    let mut out = Vec::new();
    for re in regexes.iter().copied().chain(extractors().iter()) {
        if let Some(c) = re.captures(text) {
            for name in re.capture_names().flatten() {
                if let Some(m) = c.name(name) {
                    out.push((name.to_owned(), m.as_str().to_owned()));
                }
            }
        }
    }
    out
}

fn line_matches(all: &[&Regex], none: &[&Regex], text: &str) -> bool {
    all.iter().all(|r| r.is_match(text)) && !none.iter().any(|r| r.is_match(text))
}

/// The lines of `doc` matching `p`: one line, or a line and the next when a paste wrapped it.
fn match_document<'d>(doc: &'d Document, p: &LinePattern) -> Vec<(Vec<&'d Line>, Bindings)> {
    if doc.kind == DocKind::ProbeOutput && !p.in_probe_output {
        return Vec::new();
    }
    let all: Vec<&Regex> = p.all.iter().filter_map(|s| compiled(s)).collect();
    let none: Vec<&Regex> = p.none.iter().filter_map(|s| compiled(s)).collect();
    if all.len() != p.all.len() || all.is_empty() {
        return Vec::new();
    }
    let n = doc.lines.len();
    let start = if p.last_lines == 0 {
        0
    } else {
        doc.lines
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, l)| !l.text.trim().is_empty())
            .nth(p.last_lines - 1)
            .map_or(0, |(i, _)| i)
    };
    let mut found = Vec::new();
    let mut i = start;
    while i < n {
        let l = &doc.lines[i];
        if line_matches(&all, &none, &l.text) {
            found.push((vec![l], captures_of(&all, &l.text)));
            i += 1;
            continue;
        }
        if let Some(next) = doc.lines.get(i + 1)
            && !starts_record(&next.text)
            && !line_matches(&all, &[], &next.text)
        {
            let joined = format!("{}{}", l.text, next.text);
            if line_matches(&all, &none, &joined) {
                found.push((vec![l, next], captures_of(&all, &joined)));
                i += 2;
                continue;
            }
        }
        i += 1;
    }
    if found.len() < p.min_count {
        return Vec::new();
    }
    found
}

/// The pod a `kubectl describe pod` document is about (`Name:` / `Namespace:` at its top).
fn describe_bindings(doc: &Document) -> Bindings {
    if doc.kind != DocKind::Text || !doc.lines.iter().any(|l| l.text.starts_with("Containers:")) {
        return Vec::new();
    }
    let field = |key: &str| {
        doc.lines.iter().find_map(|l| {
            l.text
                .strip_prefix(key)
                .map(str::trim)
                .filter(|v| !v.is_empty() && !v.contains(char::is_whitespace))
                .map(str::to_owned)
        })
    };
    let mut b = Vec::new();
    if let Some(pod) = field("Name:") {
        b.push(("pod".to_owned(), pod));
    }
    if let Some(ns) = field("Namespace:") {
        b.push(("ns".to_owned(), ns));
    }
    b
}

struct SignalHits {
    id: &'static str,
    role: Role,
    lines: Vec<EvidenceLine>,
    bindings: Bindings,
    not_quoted: usize,
}

fn quote(text: &str) -> String {
    const MAX: usize = 1000;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

fn signal_hits(rule: &Rule, ev: &Evidence) -> Vec<SignalHits> {
    rule.signals
        .iter()
        .map(|s| {
            let mut lines = Vec::new();
            let mut bindings = Vec::new();
            match s.matcher {
                Matcher::Line(p) => {
                    for doc in &ev.documents {
                        let found = match_document(doc, &p);
                        if !found.is_empty() {
                            bindings.extend(describe_bindings(doc));
                        }
                        for (matched, caps) in found {
                            bindings.extend(caps);
                            for l in matched {
                                lines.push(EvidenceLine {
                                    source: doc.source.clone(),
                                    line: l.number,
                                    text: quote(&l.quote),
                                    signal: s.id,
                                    mode: rule.mode,
                                    detector_fix: None,
                                });
                            }
                        }
                    }
                }
                Matcher::Fact(f) => {
                    for h in facts::detect(f, ev) {
                        bindings.extend(h.bindings);
                        lines.push(EvidenceLine {
                            source: h.source,
                            line: h.line,
                            text: quote(&h.text),
                            signal: s.id,
                            mode: rule.mode,
                            detector_fix: h.detector_fix,
                        });
                    }
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            lines.retain(|l| seen.insert((l.source.clone(), l.line, l.text.clone())));
            let not_quoted = lines.len().saturating_sub(MAX_LINES_PER_SIGNAL);
            lines.truncate(MAX_LINES_PER_SIGNAL);
            SignalHits {
                id: s.id,
                role: s.role,
                lines,
                bindings,
                not_quoted,
            }
        })
        .collect()
}

fn version_advice(rule: &Rule, ev: &Evidence) -> (VersionAdvice, Option<Confidence>) {
    let seen = ev.lowest_version();
    let seen_text = seen.map(|s| {
        format!(
            "HAMi {} ({}{})",
            s.version,
            s.source,
            s.line.map(|l| format!(":{l}")).unwrap_or_default()
        )
    });
    let fixed = rule.versions.fixed_in.and_then(Version::parse);
    let (advice, lowered) = match (fixed, seen) {
        (Some(fixed), Some(s)) if s.version < fixed => (
            Some(format!(
                "{} is older than {fixed}, where this is fixed: upgrade to ≥ {fixed}",
                s.version
            )),
            None,
        ),
        (Some(fixed), Some(s)) => (
            Some(format!(
                "reported fixed in {fixed}, but the input shows {}: the fix may not cover this case; report it upstream with this evidence",
                s.version
            )),
            Some(Confidence::Low),
        ),
        (Some(fixed), None) => (
            Some(format!(
                "fixed in HAMi {fixed}; the input does not show the HAMi version: if it is older, upgrade to ≥ {fixed}"
            )),
            None,
        ),
        (None, _) => (None, None),
    };
    (
        VersionAdvice {
            affected: rule.versions.affected,
            fixed_in: rule.versions.fixed_in,
            seen: seen_text,
            advice,
        },
        lowered,
    )
}

/// `<key>` placeholders of a template.
fn placeholders(template: &str) -> Vec<String> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"<([a-z_]+)>").ok())
        .as_ref()
        .map(|r| {
            r.captures_iter(template)
                .filter_map(|c| c.get(1).map(|m| m.as_str().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The commands with their placeholders filled; a template over one key with several values
/// (several nodes) becomes one command per value.
fn fill(templates: &[&str], b: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for t in templates {
        let keys = placeholders(t);
        let multi: Vec<&String> = keys
            .iter()
            .filter(|k| b.get(*k).is_some_and(|v| v.len() > 1))
            .collect();
        let fill_one = |choice: Option<(&str, &str)>| {
            let mut s = (*t).to_owned();
            for k in &keys {
                let v = match choice {
                    Some((ck, cv)) if ck == k => Some(cv.to_owned()),
                    _ => b.get(k).and_then(|v| v.first()).cloned(),
                };
                if let Some(v) = v {
                    s = s.replace(&format!("<{k}>"), &v);
                }
            }
            s
        };
        match multi.as_slice() {
            [k] => {
                for v in b.get(*k).into_iter().flatten().take(5) {
                    out.push(fill_one(Some((k.as_str(), v.as_str()))));
                }
            }
            _ => out.push(fill_one(None)),
        }
    }
    out.dedup();
    out
}

fn finding(
    index: usize,
    rule: &'static Rule,
    ev: &Evidence,
    hits: Vec<SignalHits>,
) -> Option<Finding> {
    let alone = hits
        .iter()
        .any(|h| h.role == Role::Alone && !h.lines.is_empty());
    let together: Vec<&SignalHits> = hits.iter().filter(|h| h.role == Role::Together).collect();
    let together_ok = !together.is_empty() && together.iter().all(|h| !h.lines.is_empty());
    if !alone && !together_ok {
        return None;
    }
    let naming: Vec<&'static str> = hits
        .iter()
        .filter(|h| h.role != Role::Support && !h.lines.is_empty())
        .map(|h| h.id)
        .collect();
    let mut bindings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let hami_ns_known = ev.complete
        || ev.snapshot.scheduler.is_some()
        || ev.snapshot.pods.iter().any(|p| {
            p.metadata.name.as_deref().is_some_and(|n| {
                n.starts_with("hami-scheduler-") || n.starts_with("hami-device-plugin-")
            })
        });
    if hami_ns_known && !ev.snapshot.hami_namespace.is_empty() {
        bindings
            .entry("hami_ns".into())
            .or_default()
            .push(ev.snapshot.hami_namespace.clone());
    }
    if let Some(v) = ev.lowest_version() {
        bindings
            .entry("chart_version".into())
            .or_default()
            .push(v.version.to_string());
    }
    let mut evidence = Vec::new();
    let mut not_quoted = 0;
    for h in hits.into_iter().filter(|h| !h.lines.is_empty()) {
        for (k, v) in h.bindings {
            let e = bindings.entry(k).or_default();
            if !e.contains(&v) {
                e.push(v);
            }
        }
        not_quoted += h.not_quoted;
        evidence.extend(h.lines);
    }
    order_evidence(&mut evidence);
    let (versions, lowered) = version_advice(rule, ev);
    let mut confidence = rule.confidence;
    let mut reason = format!(
        "{} when it matches; matched by {}",
        rule.confidence.as_str(),
        naming.join(", ")
    );
    if let Some(low) = lowered {
        confidence = low;
        reason.push_str("; lowered: the version shown should already have the fix");
    }
    let mut fix: Vec<String> = rule.fix.steps.iter().map(|s| (*s).to_owned()).collect();
    let mut commands = fill(rule.fix.commands, &bindings);
    if let (Some(fixed), Some(seen)) = (rule.versions.fixed_in, ev.lowest_version())
        && Version::parse(fixed).is_some_and(|f| seen.version < f)
    {
        // The bug is fixed in a later release than the one shown: that is the fix.
        fix = vec![format!(
            "upgrade HAMi to ≥ {fixed} (this runs {}; the bug is fixed there)",
            seen.version
        )];
        commands = vec![format!(
            "cluster-ctl install-hami --chart-version {}",
            crate::helm::DEFAULT_CHART_VERSION
        )];
    }
    Some(Finding {
        mode: rule.mode,
        rule: rule.mode,
        severity: rule.severity,
        confidence,
        confidence_reason: reason,
        symptom: rule.symptom,
        cause: rule.cause,
        evidence,
        evidence_not_quoted: not_quoted,
        fix,
        commands,
        versions,
        upstream: rule.upstream,
        explains: Vec::new(),
        signals_matched: naming.len(),
        index,
        bindings,
    })
}

/// Evidence in reading order: by source (in the order they first appear), then line; a line
/// quoted by two signals is quoted once.
fn order_evidence(evidence: &mut Vec<EvidenceLine>) {
    let mut sources: Vec<String> = Vec::new();
    for e in evidence.iter() {
        if !sources.contains(&e.source) {
            sources.push(e.source.clone());
        }
    }
    evidence.sort_by_key(|e| (sources.iter().position(|s| *s == e.source), e.line));
    let mut seen = std::collections::BTreeSet::new();
    evidence.retain(|e| seen.insert((e.source.clone(), e.line, e.text.clone())));
}

/// Runs every rule over the evidence.
pub fn diagnose(ev: &Evidence) -> Diagnosis {
    let mut findings: Vec<Finding> = RULES
        .iter()
        .enumerate()
        .filter_map(|(i, r)| finding(i, r, ev, signal_hits(r, ev)))
        .collect();
    // Fold consequences into their cause.
    let mut i = 0;
    while i < findings.len() {
        let explains = RULES[findings[i].index].explains;
        let mut j = 0;
        while j < findings.len() {
            if j != i && explains.contains(&findings[j].mode) {
                let folded = findings.remove(j);
                if j < i {
                    i -= 1;
                }
                let cause = &mut findings[i];
                cause.explains.push(folded.mode);
                let mut theirs = folded.evidence;
                theirs.retain(|e| {
                    !cause
                        .evidence
                        .iter()
                        .any(|c| c.source == e.source && c.line == e.line && c.text == e.text)
                });
                cause.evidence.extend(theirs);
                cause.evidence_not_quoted += folded.evidence_not_quoted;
                for (k, vs) in folded.bindings {
                    let e = cause.bindings.entry(k).or_default();
                    for v in vs {
                        if !e.contains(&v) {
                            e.push(v);
                        }
                    }
                }
                continue;
            }
            j += 1;
        }
        i += 1;
    }
    findings.sort_by(|a, b| {
        (a.severity != Severity::Problem)
            .cmp(&(b.severity != Severity::Problem))
            .then(b.confidence.cmp(&a.confidence))
            .then(b.signals_matched.cmp(&a.signals_matched))
            .then(a.index.cmp(&b.index))
    });
    let outcome = if findings.iter().any(|f| f.severity == Severity::Problem) {
        Outcome::FailureNamed
    } else {
        Outcome::NoKnownFailure
    };
    Diagnosis {
        schema: SCHEMA,
        schema_version: SCHEMA_VERSION,
        outcome,
        findings,
        looked_at: ev.looked_at.clone(),
        hami_versions_seen: ev.versions.clone(),
        notes: ev.notes.clone(),
        rules_checked: RULES
            .iter()
            .map(|r| RuleChecked {
                mode: r.mode,
                signals: r.signals.iter().map(|s| s.what).collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::text::read_texts;

    fn modes(d: &Diagnosis) -> Vec<&str> {
        d.findings.iter().map(|f| f.mode).collect()
    }

    #[test]
    fn a_wrapped_paste_still_matches_and_quotes_both_lines() {
        let d = diagnose(&read_texts(&[(
            "p.txt",
            b"E1128 00:14:10.824408 1 dispatcher.go:170] failed calling webhook \"vgpu.hami.io\": Post https://hami-scheduler.kube-system.s\nvc:443/webhook?timeout=10s: dial tcp 10.111.53.147:443: connect: no route to host\n",
        )]));
        assert_eq!(modes(&d), vec!["webhook-unreachable"]);
        let lines: Vec<Option<usize>> = d.findings[0].evidence.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![Some(1), Some(2)]);
        assert!(
            d.findings[0].commands[0].contains("-n kube-system"),
            "the namespace comes from the URL: {:?}",
            d.findings[0].commands
        );
    }

    #[test]
    fn two_log_records_are_not_joined_into_one_match() {
        let d = diagnose(&read_texts(&[(
            "p.txt",
            b"E1128 00:14:10 1 x] failed calling webhook \"vgpu.hami.io\": x509-free text\nE1128 00:14:11 1 y] dial tcp: connection refused\n",
        )]));
        assert!(d.findings.is_empty(), "{:?}", modes(&d));
        assert_eq!(d.outcome, Outcome::NoKnownFailure);
    }

    #[test]
    fn the_labs_own_pending_pod_is_not_a_card_memory_failure() {
        let lab = b"Warning FilteringFailed hami-scheduler Pod default/hami-oversubscribe: 1 nodes CardInsufficientMemory(gpu-vm-1)\n";
        assert!(
            diagnose(&read_texts(&[("events", lab)]))
                .findings
                .is_empty()
        );
        let other = b"Warning FilteringFailed hami-scheduler Pod ml/train-0: 1 nodes CardInsufficientMemory(gpu-vm-1)\n";
        assert_eq!(
            modes(&diagnose(&read_texts(&[("events", other)]))),
            vec!["card-insufficient-memory"]
        );
    }

    #[test]
    fn a_version_with_the_fix_lowers_the_confidence_and_an_older_one_says_upgrade() {
        let line: &[u8] = b"E1 x] couldn't parse image name \"r/kube-scheduler:v1.31.2+k3s1\"\n";
        let old = diagnose(&read_texts(&[
            ("a", line),
            ("b", b"image: docker.io/projecthami/hami:v2.4.1\n"),
        ]));
        assert_eq!(old.findings[0].mode, "scheduler-image-tag-invalid");
        assert!(
            old.findings[0].fix[0].contains("upgrade HAMi to ≥ 2.5.0"),
            "{:?}",
            old.findings[0].fix
        );
        let new = diagnose(&read_texts(&[
            ("a", line),
            ("b", b"image: docker.io/projecthami/hami:v2.6.0\n"),
        ]));
        assert_eq!(new.findings[0].confidence, Confidence::Low);
        let unknown = diagnose(&read_texts(&[("a", line)]));
        assert!(
            unknown.findings[0]
                .commands
                .iter()
                .any(|c| c.contains("--scheduler-tag v1.31.2")),
            "{:?}",
            unknown.findings[0].commands
        );
    }
}
