//! What the engine reads, whichever way it came in: documents (lines of text, each quotable with
//! its source and line number) and typed objects (a [`Snapshot`] of Kubernetes objects, gpu-probe
//! reports). Pasted text is normalised for matching — CRLF, GitHub's backslash-escaped quotes,
//! markdown autolinks, quote markers, k9s frames, HTML entities — while the quote keeps the line as
//! it was.

use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

use crate::doctor::Snapshot;

/// What kind of text a document is; decides which signals may look at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DocKind {
    /// A file or paste, read line by line.
    Text,
    /// Lines rendered from objects (pod states, events, node annotations).
    Objects,
    /// A container log read from the cluster.
    Log,
    /// gpu-probe's own stderr (`<report>.stderr`/`.err` next to its report): its cap search makes
    /// HAMi-core refuse allocations on purpose, so "out of memory" lines there are the expected result.
    ProbeOutput,
}

/// One line of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The normalised text the patterns match.
    pub text: String,
    /// The line as it was (for quoting).
    pub quote: String,
    /// 1-based line number in the source, when the source is a file.
    pub number: Option<usize>,
}

/// A named list of lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub source: String,
    pub kind: DocKind,
    pub lines: Vec<Line>,
}

impl Document {
    /// A document of a file's lines, numbered from 1.
    pub fn from_text(source: &str, kind: DocKind, text: &str) -> Self {
        let lines = text
            .split('\n')
            .enumerate()
            .map(|(i, l)| Line {
                text: normalize(l),
                quote: l.trim_end_matches('\r').to_owned(),
                number: Some(i + 1),
            })
            .collect::<Vec<_>>();
        // A final newline does not make a line.
        let mut lines = lines;
        if lines.last().is_some_and(|l| l.quote.is_empty()) {
            lines.pop();
        }
        Self {
            source: source.to_owned(),
            kind,
            lines,
        }
    }
}

/// Where a gpu-probe report came from.
#[derive(Debug, Clone)]
pub struct ProbeInput {
    pub source: String,
    /// The pod (file stem) it was taken in.
    pub pod: String,
    pub report: lab_report::probe::Report,
    /// The file's text, to find line numbers of the values quoted.
    pub text: String,
}

/// One thing looked at, for the "what was looked at" part of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LookedAt {
    pub source: String,
    /// What it was read as.
    pub read_as: String,
    /// Lines (text) or objects (structured) in it.
    pub size: usize,
}

/// A HAMi version shown by the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionSeen {
    pub version: super::version::Version,
    pub source: String,
    pub line: Option<usize>,
    pub text: String,
}

/// Where an object of the snapshot was read from, to quote it with a line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOrigin {
    /// `node`, `pod`, `daemonset`, `deployment`, `endpoints`, `event`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub source: String,
    pub line: Option<usize>,
}

/// Everything one diagnosis looks at.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub documents: Vec<Document>,
    /// Objects, from the cluster or parsed from `kubectl get -o json|yaml` and `run --out` files.
    pub snapshot: Snapshot,
    /// The snapshot is a full listing of the cluster (live): absence means absence.
    pub complete: bool,
    pub probes: Vec<ProbeInput>,
    pub origins: Vec<ObjectOrigin>,
    pub looked_at: Vec<LookedAt>,
    pub versions: Vec<VersionSeen>,
    /// What could not be looked at, and why.
    pub notes: Vec<String>,
}

impl Evidence {
    /// The source (and line) an object was read from; `live: KIND NAME` when from the cluster.
    pub fn origin_of(&self, kind: &str, name: &str) -> (String, Option<usize>) {
        self.origins
            .iter()
            .find(|o| {
                o.kind == kind && (o.name == name || format!("{}/{}", o.namespace, o.name) == name)
            })
            .map(|o| (o.source.clone(), o.line))
            .unwrap_or_else(|| (format!("live: {kind} {name}"), None))
    }

    /// The version to give advice for: the lowest HAMi version the input shows.
    pub fn lowest_version(&self) -> Option<&VersionSeen> {
        self.versions.iter().min_by_key(|v| v.version)
    }

    pub fn add_version(&mut self, v: VersionSeen) {
        if !self
            .versions
            .iter()
            .any(|s| s.version == v.version && s.source == v.source)
        {
            self.versions.push(v);
        }
    }
}

fn re(cell: &'static OnceLock<Option<Regex>>, pattern: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(pattern).ok()).as_ref()
}

/// The text the patterns see: what a person would read in the paste, whatever GitHub, a terminal
/// or a log shipper did to it. Never panics; unknown input passes through.
pub fn normalize(line: &str) -> String {
    static QUOTE_MARKERS: OnceLock<Option<Regex>> = OnceLock::new();
    static ESCAPED_QUOTES: OnceLock<Option<Regex>> = OnceLock::new();
    static AUTOLINK: OnceLock<Option<Regex>> = OnceLock::new();
    let mut s = line.trim_end_matches('\r').replace('│', " ");
    if let Some(r) = re(&QUOTE_MARKERS, r"^(\s*>)+ ?") {
        s = r.replace(&s, "").into_owned();
    }
    // `\"`, `\\\"` (a JSON string holding a klog line holding a quoted string) all read as `"`.
    if let Some(r) = re(&ESCAPED_QUOTES, r#"\\+""#) {
        s = r.replace_all(&s, "\"").into_owned();
    }
    // GitHub renders a pasted URL as `[url](url)`; the paste had the URL once.
    if let Some(r) = re(&AUTOLINK, r"\[(https?://[^\]\s]+)\]\((https?://[^)\s]+)\)") {
        s = r.replace_all(&s, "$1").into_owned();
    }
    for (entity, c) in [
        ("&quot;", "\""),
        ("&gt;", ">"),
        ("&lt;", "<"),
        ("&#39;", "'"),
        ("&amp;", "&"),
    ] {
        if s.contains(entity) {
            s = s.replace(entity, c);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_text_is_normalised_for_matching_and_quoted_as_it_was() {
        assert_eq!(
            normalize(r#"err="failed calling webhook \\\"vgpu.hami.io\\\": x""#),
            r#"err="failed calling webhook "vgpu.hami.io": x""#
        );
        assert_eq!(
            normalize(
                "Post \"[https://a.svc:443/webhook?timeout=30s](https://a.svc/webhook?timeout=30s)\": x\r"
            ),
            "Post \"https://a.svc:443/webhook?timeout=30s\": x"
        );
        assert_eq!(normalize("> > quoted &gt; line"), "quoted > line");
        assert_eq!(
            normalize("│ kube-scheduler E0417 x │"),
            "  kube-scheduler E0417 x  "
        );
        let d = Document::from_text("f", DocKind::Text, "a\r\nb\r\n");
        assert_eq!(d.lines.len(), 2);
        assert_eq!(d.lines[1].quote, "b");
        assert_eq!(d.lines[1].number, Some(2));
    }
}
