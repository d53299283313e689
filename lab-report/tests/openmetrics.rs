//! `metrics::openmetrics` parsed by the reference OpenMetrics parser (Python
//! `prometheus_client.openmetrics.parser`, Debian `python3-prometheus-client`, run through
//! `lab_runner::SystemRunner` with Debian's `/usr/bin/python3`): every family, unit and sample
//! comes back as written, label escapes round-trip, and the parser's strictness is shown on
//! malformed expositions it must refuse. The same text, as a metrics file, is read by
//! node-exporter's textfile collector (Debian `prometheus-node-exporter`, started here).
//!
//! The fleet is judged from real gpu-probe reports (`tests/data/h200/README.md`): the H200 under
//! HAMi-core at 8000 MiB (verified), the same card bare (failed), the machine's second H200 not
//! checked.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/fleet_card.rs"]
mod fleet_card;

use std::time::Duration;

use lab_report::fleet::{
    CardOutcome, FleetCard, FleetNode, FleetParameters, FleetReport, FleetTotals, NotChecked,
    SCHEMA, SCHEMA_VERSION,
};
use lab_report::metrics::{openmetrics, prometheus_text};
use lab_report::probe::Report;
use lab_runner::{Cmd, Runner as _, SystemRunner, tier};
use serde_json::Value;

/// The tier CI's table shows for this parser (its Debian package).
const TIER: &str = "python3-prometheus-client";
/// Debian's interpreter: the Debian package installs the module for it, whatever else is on PATH.
const PYTHON: &str = "/usr/bin/python3";
const MIB: f64 = 1_048_576.0;

fn probe_report(name: &str) -> Report {
    let path = format!("{}/tests/data/h200/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn judged(file: &str, index: u32, slice_mib: u64) -> FleetCard {
    fleet_card::judged(&probe_report(file), file, index, slice_mib)
}

fn fleet() -> FleetReport {
    let second = probe_report("h7-two.json").view.unwrap().devices[1].clone();
    FleetReport {
        schema: SCHEMA.into(),
        schema_version: SCHEMA_VERSION,
        tool_version: String::new(),
        started_unix: 1_764_590_000,
        duration_s: 42.25,
        server: String::new(),
        server_version: String::new(),
        parameters: FleetParameters::default(),
        nodes: vec![
            FleetNode {
                name: "h200-hami".into(),
                ready: true,
                cards: vec![
                    judged("h1-8000.json", 0, 8000),
                    FleetCard {
                        uuid: second.uuid.unwrap(),
                        index: 1,
                        model: second.name.unwrap(),
                        memory_mib: 143_771,
                        slice_mib: 8000,
                        outcome: CardOutcome::NotChecked,
                        not_checked: Some(NotChecked::CardBusy { free_mib: 512 }),
                        ..FleetCard::default()
                    },
                ],
                ..FleetNode::default()
            },
            FleetNode {
                name: "h200-bare".into(),
                ready: true,
                cards: vec![judged("h2-bare.json", 0, 8000)],
                ..FleetNode::default()
            },
        ],
        totals: FleetTotals::default(),
    }
}

/// Parses `text` with the reference parser: `Ok(families)` or `Err(the parser's message)`;
/// `None` (after recording the skip) when the parser is not installed.
fn parse(text: &str) -> Option<Result<Vec<Value>, String>> {
    let runner = SystemRunner::new(false);
    let script = format!("{}/tests/openmetrics/parse.py", env!("CARGO_MANIFEST_DIR"));
    let probe = Cmd::new(PYTHON)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .timeout(Duration::from_secs(60));
    match runner.run(&probe) {
        Ok(o) if o.success() => {}
        other => {
            tier::skipped(
                TIER,
                &format!(
                    "{PYTHON} cannot import prometheus_client ({other:?}): apt-get install python3-prometheus-client"
                ),
            );
            return None;
        }
    }
    let out = runner
        .run(
            &Cmd::new(PYTHON)
                .arg(script)
                .stdin(text.as_bytes().to_vec())
                .timeout(Duration::from_secs(60)),
        )
        .unwrap();
    tier::ran(TIER);
    Some(match out.code {
        Some(0) => Ok(serde_json::from_str(&out.stdout).unwrap()),
        Some(1) => Err(out.stderr),
        _ => panic!("the parser crashed: {out:?}"),
    })
}

fn family<'a>(families: &'a [Value], name: &str) -> &'a Value {
    families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no family {name} in {families:?}"))
}

fn card_value(families: &[Value], metric: &str, node: &str, card: &FleetCard) -> Option<f64> {
    let samples = family(families, metric)["samples"].as_array().unwrap();
    let found: Vec<f64> = samples
        .iter()
        .filter(|s| {
            let l = &s["labels"];
            l["node"] == node
                && l["uuid"] == card.uuid.as_str()
                && l["model"] == card.model.as_str()
                && l["index"] == card.index.to_string().as_str()
        })
        .map(|s| s["value"].as_f64().unwrap())
        .collect();
    assert!(found.len() <= 1, "{metric}: {found:?}");
    found.first().copied()
}

#[test]
fn the_reference_parser_reads_every_card_back() {
    let report = fleet();
    let Some(parsed) = parse(&openmetrics(&report)) else {
        return;
    };
    let families = parsed.unwrap();
    for (name, unit) in [
        ("hami_isolation_verified", ""),
        ("hami_isolation_checked", ""),
        ("hami_isolation_slice_bytes", "bytes"),
        ("hami_isolation_cap_bytes", "bytes"),
        ("hami_isolation_fleet_cards", ""),
        ("hami_isolation_fleet_last_run_timestamp_seconds", "seconds"),
        ("hami_isolation_fleet_duration_seconds", "seconds"),
    ] {
        let f = family(&families, name);
        assert_eq!(f["type"], "gauge", "{f}");
        assert_eq!(f["unit"], unit, "{f}");
        assert!(!f["help"].as_str().unwrap().is_empty(), "{f}");
    }
    let mut seen = Vec::new();
    for node in &report.nodes {
        for card in &node.cards {
            let v = |m| card_value(&families, m, &node.name, card);
            let want = match card.outcome {
                CardOutcome::Verified => (Some(1.0), Some(1.0)),
                CardOutcome::Failed => (Some(0.0), Some(1.0)),
                CardOutcome::NotChecked => (Some(0.0), Some(0.0)),
            };
            assert_eq!(
                (v("hami_isolation_verified"), v("hami_isolation_checked")),
                want
            );
            assert_eq!(v("hami_isolation_slice_bytes"), Some(8000.0 * MIB));
            #[allow(clippy::cast_precision_loss)]
            let cap = card.cap_mib.map(|c| c as f64 * MIB);
            assert_eq!(v("hami_isolation_cap_bytes"), cap);
            seen.push(card.outcome);
        }
    }
    // What the real reports judge to, as their README says.
    assert_eq!(
        seen,
        [
            CardOutcome::Verified,
            CardOutcome::NotChecked,
            CardOutcome::Failed
        ]
    );
    let run = |m| {
        family(&families, m)["samples"][0]["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        run("hami_isolation_fleet_last_run_timestamp_seconds"),
        1_764_590_042.25
    );
    assert_eq!(run("hami_isolation_fleet_duration_seconds"), 42.25);
}

#[test]
fn label_values_with_quotes_backslashes_and_newlines_round_trip() {
    let mut report = fleet();
    let odd = "H200 \"SXM\" \\ 141GB\nrev\u{e9}";
    report.nodes[0].cards[0].model = odd.into();
    let Some(parsed) = parse(&openmetrics(&report)) else {
        return;
    };
    let families = parsed.unwrap();
    let card = &report.nodes[0].cards[0];
    assert_eq!(
        card_value(&families, "hami_isolation_verified", "h200-hami", card),
        Some(1.0)
    );
}

#[test]
fn the_parser_is_strict_a_malformed_exposition_fails() {
    let good = openmetrics(&fleet());
    let Some(parsed) = parse(&good) else {
        return;
    };
    assert!(parsed.is_ok());
    let broken = [
        // The Prometheus text form is not OpenMetrics: no `# EOF`.
        (prometheus_text(&fleet()), "EOF"),
        // A label value's quote left unescaped.
        (
            good.replacen("node=\"h200-hami\"", "node=\"h200\"hami\"", 1),
            "Invalid",
        ),
        // A unit that does not match the metric's name.
        (
            good.replacen(
                "# UNIT hami_isolation_cap_bytes bytes",
                "# UNIT hami_isolation_cap_bytes seconds",
                1,
            ),
            "Unit",
        ),
        // Anything after `# EOF`.
        (format!("{good}hami_isolation_verified 1\n"), "after # EOF"),
    ];
    for (text, why) in broken {
        assert_ne!(text, good, "the mutation did not apply");
        let err = parse(&text).unwrap().unwrap_err();
        assert!(err.contains(why), "{why}: {err}");
    }
}

/// `GET path` on 127.0.0.1:`port` over plain HTTP/1.0, within a few seconds: the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")).then(|| body.to_owned())
}

/// The value of the sample `name{labels}` (labels as node-exporter writes them: sorted, escaped).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// The metrics file as node-exporter's textfile collector (Debian `prometheus-node-exporter`,
/// started here through `SystemRunner` on 127.0.0.1 with only that collector) reads it: every
/// card's samples come back from its `/metrics`, with no scrape error; a malformed file is
/// flagged (`node_textfile_scrape_error 1`) and its samples dropped.
#[test]
fn node_exporters_textfile_collector_reads_the_metrics_file() {
    const PROGRAM: &str = "prometheus-node-exporter";
    if lab_runner::which(PROGRAM).is_none() {
        tier::skipped(
            PROGRAM,
            "prometheus-node-exporter is not installed (Debian: apt-get install prometheus-node-exporter)",
        );
        return;
    }
    let report = fleet();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hami-isolation-fleet.prom");
    std::fs::write(&file, openmetrics(&report)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let exporter = SystemRunner::new(false)
        .start(&Cmd::new(PROGRAM).args([
            "--collector.disable-defaults".to_owned(),
            "--collector.textfile".to_owned(),
            format!("--collector.textfile.directory={}", dir.path().display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ]))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let scrape = || loop {
        if let Some(out) = exporter.try_wait().unwrap() {
            panic!("{PROGRAM} exited: {out:?}");
        }
        if let Some(body) = http_get(port, "/metrics") {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{PROGRAM} did not answer in 30s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = scrape();
    assert_eq!(
        sample(&text, "node_textfile_scrape_error"),
        Some(0.0),
        "{text}"
    );
    for node in &report.nodes {
        for card in &node.cards {
            let labels = format!(
                "{{index=\"{}\",model=\"{}\",node=\"{}\",uuid=\"{}\"}}",
                card.index, card.model, node.name, card.uuid
            );
            let verified = f64::from(u8::from(card.outcome == CardOutcome::Verified));
            let checked = f64::from(u8::from(card.outcome != CardOutcome::NotChecked));
            let v = |m: &str| sample(&text, &format!("{m}{labels}"));
            assert_eq!(
                v("hami_isolation_verified"),
                Some(verified),
                "{labels}\n{text}"
            );
            assert_eq!(v("hami_isolation_checked"), Some(checked), "{labels}");
            assert_eq!(
                v("hami_isolation_slice_bytes"),
                Some(8000.0 * MIB),
                "{labels}"
            );
            #[allow(clippy::cast_precision_loss)]
            let cap = card.cap_mib.map(|c| c as f64 * MIB);
            assert_eq!(v("hami_isolation_cap_bytes"), cap, "{labels}");
        }
    }
    assert_eq!(
        sample(&text, "hami_isolation_fleet_duration_seconds"),
        Some(42.25)
    );
    // The check can fail: a malformed file is an error there, and nothing of it is exported.
    std::fs::write(&file, "hami_isolation_verified{node=\"a} 1\n").unwrap();
    let text = scrape();
    assert_eq!(
        sample(&text, "node_textfile_scrape_error"),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("hami_isolation_verified"), "{text}");
}
