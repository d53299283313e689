//! A fleet run as metrics: [`openmetrics`] renders a [`FleetReport`] in the OpenMetrics 1.0 text
//! exposition (for node-exporter's textfile collector and anything that scrapes OpenMetrics), and
//! [`prometheus_text`] renders the same samples in the Prometheus text format 0.0.4, the text
//! format the Pushgateway parses.
//!
//! Both come from one list of metric families ([`families`]), so the two can never disagree. Per
//! card (labels `node`, `uuid`, `model`, `index`):
//!
//! - `hami_isolation_verified`: 1 when the card's probe report showed it held to its slice, else 0;
//! - `hami_isolation_checked`: 1 when a probe report was judged (verified or failed), 0 when the
//!   card was not checked — so `verified == 0 and checked == 1` is a failed card and
//!   `checked == 0` one nobody looked at (a separate gauge rather than an `outcome` label, so a
//!   card keeps one series whatever happens to it and an alert on `verified == 0` stays simple);
//! - `hami_isolation_slice_bytes`: the slice the probe pod asked for;
//! - `hami_isolation_cap_bytes`: the cap boundary the probe measured (absent when none was
//!   measured: no number is better than a made-up one).
//!
//! Per run: `hami_isolation_fleet_cards{outcome="verified|failed|not-checked"}`,
//! `hami_isolation_fleet_last_run_timestamp_seconds` (when the run ended: its start plus its
//! duration) and `hami_isolation_fleet_duration_seconds`.
//!
//! No sample carries a timestamp: the Pushgateway refuses pushed timestamps, and a textfile
//! collector stamps samples itself.

use crate::MIB;
use crate::fleet::{CardOutcome, FleetReport};

/// The `Content-Type` of [`openmetrics`]'s text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of [`prometheus_text`]'s text (what a push to the Pushgateway sends).
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Per-card metric names.
pub const VERIFIED: &str = "hami_isolation_verified";
pub const CHECKED: &str = "hami_isolation_checked";
pub const SLICE_BYTES: &str = "hami_isolation_slice_bytes";
pub const CAP_BYTES: &str = "hami_isolation_cap_bytes";
/// Per-run metric names.
pub const FLEET_CARDS: &str = "hami_isolation_fleet_cards";
pub const LAST_RUN_TIMESTAMP: &str = "hami_isolation_fleet_last_run_timestamp_seconds";
pub const DURATION: &str = "hami_isolation_fleet_duration_seconds";

/// One metric family: every family here is a gauge.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    /// OpenMetrics `# UNIT` (the name then ends in `_<unit>`).
    pub unit: Option<&'static str>,
    pub samples: Vec<Sample>,
}

/// One sample of a family: its labels (in order) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// The metric families of a fleet run (counts recomputed from the cards, not read from
/// `totals`).
pub fn families(report: &FleetReport) -> Vec<Family> {
    let mut verified = Vec::new();
    let mut checked = Vec::new();
    let mut slice = Vec::new();
    let mut cap = Vec::new();
    for node in &report.nodes {
        for card in &node.cards {
            let labels = vec![
                ("node", node.name.clone()),
                ("uuid", card.uuid.clone()),
                ("model", card.model.clone()),
                ("index", card.index.to_string()),
            ];
            let is_verified = card.outcome == CardOutcome::Verified;
            let is_checked = card.outcome != CardOutcome::NotChecked;
            verified.push(sample(&labels, f64::from(u8::from(is_verified))));
            checked.push(sample(&labels, f64::from(u8::from(is_checked))));
            slice.push(sample(&labels, bytes(card.slice_mib)));
            if let Some(cap_mib) = card.cap_mib {
                cap.push(sample(&labels, bytes(cap_mib)));
            }
        }
    }
    let totals = report.totals();
    let by_outcome = [
        ("verified", totals.verified),
        ("failed", totals.failed),
        ("not-checked", totals.not_checked),
    ]
    .into_iter()
    .map(|(outcome, n)| Sample {
        labels: vec![("outcome", outcome.to_owned())],
        value: f64::from(n),
    })
    .collect();
    // u64 seconds fit an f64 exactly until the year 285 million.
    #[allow(clippy::cast_precision_loss)]
    let ended = report.started_unix as f64 + report.duration_s;
    vec![
        Family {
            name: VERIFIED,
            help: "1 when the card's probe report showed it held to its memory slice, else 0.",
            unit: None,
            samples: verified,
        },
        Family {
            name: CHECKED,
            help: "1 when the card's probe report was judged (verified or failed), 0 when it was not checked.",
            unit: None,
            samples: checked,
        },
        Family {
            name: SLICE_BYTES,
            help: "The memory slice the card's probe pod asked HAMi for.",
            unit: Some("bytes"),
            samples: slice,
        },
        Family {
            name: CAP_BYTES,
            help: "The most the probe could allocate before HAMi-core refused (the cap boundary).",
            unit: Some("bytes"),
            samples: cap,
        },
        Family {
            name: FLEET_CARDS,
            help: "Cards of the last fleet run by outcome.",
            unit: None,
            samples: by_outcome,
        },
        Family {
            name: LAST_RUN_TIMESTAMP,
            help: "Unix time the last fleet run ended.",
            unit: Some("seconds"),
            samples: vec![Sample {
                labels: Vec::new(),
                value: ended,
            }],
        },
        Family {
            name: DURATION,
            help: "Wall time of the last fleet run.",
            unit: Some("seconds"),
            samples: vec![Sample {
                labels: Vec::new(),
                value: report.duration_s,
            }],
        },
    ]
}

/// The OpenMetrics 1.0 text exposition of a fleet run (`# HELP`, `# TYPE`, `# UNIT`, samples,
/// ending in `# EOF`).
pub fn openmetrics(report: &FleetReport) -> String {
    render(&families(report), Format::OpenMetrics)
}

/// The same samples in the Prometheus text format 0.0.4 (no `# UNIT`, no `# EOF`): what the
/// Pushgateway's push endpoint parses.
pub fn prometheus_text(report: &FleetReport) -> String {
    render(&families(report), Format::Prometheus)
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    OpenMetrics,
    Prometheus,
}

fn render(families: &[Family], format: Format) -> String {
    let mut out = String::new();
    for family in families {
        out.push_str(&format!(
            "# HELP {} {}\n",
            family.name,
            escape_help(family.help, format)
        ));
        out.push_str(&format!("# TYPE {} gauge\n", family.name));
        if let (Some(unit), Format::OpenMetrics) = (family.unit, format) {
            out.push_str(&format!("# UNIT {} {unit}\n", family.name));
        }
        for s in &family.samples {
            out.push_str(family.name);
            if !s.labels.is_empty() {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
                    .collect();
                out.push('{');
                out.push_str(&labels.join(","));
                out.push('}');
            }
            out.push(' ');
            out.push_str(&number(s.value));
            out.push('\n');
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

fn sample(labels: &[(&'static str, String)], value: f64) -> Sample {
    Sample {
        labels: labels.to_vec(),
        value,
    }
}

#[allow(clippy::cast_precision_loss)]
fn bytes(mib: u64) -> f64 {
    mib.saturating_mul(MIB) as f64
}

/// A value as both formats write numbers: integers without a fraction, `NaN`, `+Inf`, `-Inf`.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Rust's Display never uses an exponent and prints 3.0 as "3": valid in both formats.
        format!("{v}")
    }
}

/// Label values: backslash, double quote and line feed escaped (the same in both formats).
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: backslash and line feed in both formats, double quote only in OpenMetrics (the
/// Prometheus text parser refuses `\"` in HELP).
fn escape_help(v: &str, format: Format) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{FleetCard, FleetNode, FleetParameters, FleetTotals, NotChecked};

    fn report() -> FleetReport {
        let card = |uuid: &str, index, outcome, cap_mib| FleetCard {
            uuid: uuid.into(),
            index,
            model: "NVIDIA H200".into(),
            memory_mib: 143_771,
            slice_mib: 1000,
            outcome,
            not_checked: (outcome == CardOutcome::NotChecked).then_some(NotChecked::NodeNotReady),
            cap_mib,
            ..FleetCard::default()
        };
        FleetReport {
            schema: crate::fleet::SCHEMA.into(),
            schema_version: crate::fleet::SCHEMA_VERSION,
            tool_version: String::new(),
            started_unix: 1_764_590_000,
            duration_s: 12.5,
            server: String::new(),
            server_version: String::new(),
            parameters: FleetParameters::default(),
            nodes: vec![FleetNode {
                name: "gpu-\"a\"\\1\nx".into(),
                cards: vec![
                    card("GPU-1", 0, CardOutcome::Verified, Some(1000)),
                    card("GPU-2", 1, CardOutcome::Failed, Some(8000)),
                    card("GPU-3", 2, CardOutcome::NotChecked, None),
                ],
                ..FleetNode::default()
            }],
            totals: FleetTotals::default(),
        }
    }

    #[test]
    fn each_card_gets_verified_checked_slice_and_cap_with_escaped_labels() {
        let text = openmetrics(&report());
        let node = r#"node="gpu-\"a\"\\1\nx""#;
        for (line, want) in [
            (
                format!("{VERIFIED}{{{node},uuid=\"GPU-1\",model=\"NVIDIA H200\",index=\"0\"}} 1"),
                true,
            ),
            (
                format!("{VERIFIED}{{{node},uuid=\"GPU-2\",model=\"NVIDIA H200\",index=\"1\"}} 0"),
                true,
            ),
            (
                format!("{CHECKED}{{{node},uuid=\"GPU-2\",model=\"NVIDIA H200\",index=\"1\"}} 1"),
                true,
            ),
            (
                format!("{CHECKED}{{{node},uuid=\"GPU-3\",model=\"NVIDIA H200\",index=\"2\"}} 0"),
                true,
            ),
            (
                format!(
                    "{SLICE_BYTES}{{{node},uuid=\"GPU-3\",model=\"NVIDIA H200\",index=\"2\"}} 1048576000"
                ),
                true,
            ),
            (
                format!(
                    "{CAP_BYTES}{{{node},uuid=\"GPU-2\",model=\"NVIDIA H200\",index=\"1\"}} 8388608000"
                ),
                true,
            ),
            // No cap was measured on the card not checked: no sample rather than a zero.
            (format!("{CAP_BYTES}{{{node},uuid=\"GPU-3\""), false),
            (format!("{FLEET_CARDS}{{outcome=\"not-checked\"}} 1"), true),
            (format!("{LAST_RUN_TIMESTAMP} 1764590012.5"), true),
            (format!("{DURATION} 12.5"), true),
            (format!("# UNIT {CAP_BYTES} bytes"), true),
        ] {
            assert_eq!(text.contains(&line), want, "{line}\n---\n{text}");
        }
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn the_prometheus_form_has_the_same_samples_without_unit_and_eof() {
        let r = report();
        let om = openmetrics(&r);
        let prom = prometheus_text(&r);
        assert!(
            !prom.contains("# UNIT") && !prom.contains("# EOF"),
            "{prom}"
        );
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(samples(&om), samples(&prom));
        assert_eq!(samples(&om).len(), 3 * 3 + 2 + 3 + 2);
    }

    #[test]
    fn numbers_and_help_escape_as_both_formats_want() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(1e21), "1000000000000000000000");
        assert_eq!(
            escape_help("a\"b\\c\nd", Format::OpenMetrics),
            "a\\\"b\\\\c\\nd"
        );
        assert_eq!(escape_help("a\"b", Format::Prometheus), "a\"b");
    }
}
