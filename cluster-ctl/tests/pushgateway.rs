//! `pushgateway::push` against the real Prometheus Pushgateway (Debian `prometheus-pushgateway`),
//! started here on 127.0.0.1 with its own storage through `lab_runner::SystemRunner`: a fleet's
//! metrics are pushed, read back over the gateway's API card by card, replaced by the next push,
//! and a malformed body is refused with the gateway's own words.
//!
//! The fleet is judged from real gpu-probe reports (`lab-report/tests/data/h200/README.md`): the
//! H200 under HAMi-core at 8000 MiB (verified), the same card bare (failed), and the second H200
//! of that machine left not checked.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../lab-report/tests/support/fleet_card.rs"]
mod fleet_card;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_ctl::pushgateway::{push, push_fleet};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lab_report::fleet::{
    CardOutcome, FleetCard, FleetNode, FleetParameters, FleetReport, FleetTotals, NotChecked,
    SCHEMA, SCHEMA_VERSION,
};
use lab_report::metrics::prometheus_text;
use lab_report::probe::Report;
use lab_runner::{Cmd, SystemRunner, tier};

const PROGRAM: &str = "prometheus-pushgateway";
const MIB: f64 = 1_048_576.0;

fn probe_report(name: &str) -> Report {
    let path = format!(
        "{}/../lab-report/tests/data/h200/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A card judged from its real probe report, as the fleet run judges it.
fn judged(file: &str, index: u32, slice_mib: u64) -> FleetCard {
    fleet_card::judged(&probe_report(file), file, index, slice_mib)
}

fn fleet() -> FleetReport {
    let second_h200 = probe_report("h7-two.json").view.unwrap().devices[1].clone();
    let busy = FleetCard {
        uuid: second_h200.uuid.unwrap(),
        index: 1,
        model: second_h200.name.unwrap(),
        memory_mib: 143_771,
        slice_mib: 8000,
        outcome: CardOutcome::NotChecked,
        not_checked: Some(NotChecked::CardBusy { free_mib: 512 }),
        reason: "512 MiB free, the slice is 8000 MiB".into(),
        ..FleetCard::default()
    };
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
                cards: vec![judged("h1-8000.json", 0, 8000), busy],
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

async fn get(url: &str) -> Result<(u16, String), String> {
    get_as(url, None).await
}

/// `GET url`, with `Authorization: <authorization>` when given.
async fn get_as(url: &str, authorization: Option<&str>) -> Result<(u16, String), String> {
    let client: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = http::Request::get(url);
    if let Some(a) = authorization {
        request = request.header(http::header::AUTHORIZATION, a);
    }
    let request = request.body(Empty::<Bytes>::new()).unwrap();
    let fut = async {
        let resp = client.request(request).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| format!("GET {url}: no answer in 5s"))?
}

/// A Pushgateway of our own: free port, storage in a temporary folder, killed on drop.
struct Gateway {
    url: String,
    _process: lab_runner::Background,
    _storage: tempfile::TempDir,
}

async fn start_gateway() -> Option<Gateway> {
    start_gateway_with(None).await
}

/// The same, with `--web.config.file` holding `web_config` when given (its readiness endpoint
/// then answers 401 to a request without credentials: it is up).
async fn start_gateway_with(web_config: Option<&str>) -> Option<Gateway> {
    if lab_runner::which(PROGRAM).is_none() {
        tier::skipped(
            PROGRAM,
            "prometheus-pushgateway is not installed (Debian: apt-get install prometheus-pushgateway)",
        );
        return None;
    }
    let storage = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut args = vec![
        format!("--web.listen-address=127.0.0.1:{port}"),
        format!(
            "--persistence.file={}",
            storage.path().join("pushgateway.data").display()
        ),
        "--log.level=warn".to_owned(),
    ];
    if let Some(config) = web_config {
        let path = storage.path().join("web-config.yml");
        std::fs::write(&path, config).unwrap();
        args.push(format!("--web.config.file={}", path.display()));
    }
    let process = SystemRunner::new(false)
        .start(&Cmd::new(PROGRAM).args(args))
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(out) = process.try_wait().unwrap() {
            panic!("{PROGRAM} exited before it was ready: {out:?}");
        }
        if matches!(get(&format!("{url}/-/ready")).await, Ok((200 | 401, _))) {
            break;
        }
        assert!(Instant::now() < deadline, "{PROGRAM} not ready in 30s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(Gateway {
        url,
        _process: process,
        _storage: storage,
    })
}

/// The group of `job` from `/api/v1/metrics`: metric name → [(labels, value)].
async fn group(
    url: &str,
    job: &str,
) -> std::collections::BTreeMap<String, Vec<(serde_json::Value, f64)>> {
    group_as(url, job, None).await
}

async fn group_as(
    url: &str,
    job: &str,
    authorization: Option<&str>,
) -> std::collections::BTreeMap<String, Vec<(serde_json::Value, f64)>> {
    let (status, body) = get_as(&format!("{url}/api/v1/metrics"), authorization)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{body}");
    let mut out = std::collections::BTreeMap::new();
    let Some(groups) = v["data"].as_array() else {
        return out;
    };
    for g in groups.iter().filter(|g| g["labels"]["job"] == job) {
        assert_eq!(g["last_push_successful"], true, "{g}");
        for (name, family) in g.as_object().unwrap() {
            let Some(metrics) = family.get("metrics").and_then(|m| m.as_array()) else {
                continue;
            };
            let samples = metrics
                .iter()
                .map(|m| {
                    (
                        m["labels"].clone(),
                        m["value"].as_str().unwrap().parse::<f64>().unwrap(),
                    )
                })
                .collect();
            out.insert(name.clone(), samples);
        }
    }
    out
}

fn value_of(
    group: &std::collections::BTreeMap<String, Vec<(serde_json::Value, f64)>>,
    metric: &str,
    node: &str,
    card: &FleetCard,
) -> Option<f64> {
    let samples = group.get(metric)?;
    let found: Vec<f64> = samples
        .iter()
        .filter(|(l, _)| {
            l["node"] == node
                && l["uuid"] == card.uuid.as_str()
                && l["model"] == card.model.as_str()
                && l["index"] == card.index.to_string().as_str()
        })
        .map(|(_, v)| *v)
        .collect();
    assert!(found.len() <= 1, "{metric} {node} {}: {found:?}", card.uuid);
    found.first().copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_pushed_to_the_real_pushgateway_reads_back_card_by_card() {
    let Some(gw) = start_gateway().await else {
        return;
    };
    let report = fleet();
    let outcomes: Vec<CardOutcome> = report
        .nodes
        .iter()
        .flat_map(|n| n.cards.iter().map(|c| c.outcome))
        .collect();
    // The real reports judge as their README says: this is what the metrics must carry.
    assert_eq!(
        outcomes,
        [
            CardOutcome::Verified,
            CardOutcome::NotChecked,
            CardOutcome::Failed
        ]
    );
    push(
        &gw.url,
        "hami-isolation-fleet",
        &prometheus_text(&report),
        Duration::from_secs(10),
    )
    .await
    .unwrap();

    let g = group(&gw.url, "hami-isolation-fleet").await;
    for node in &report.nodes {
        for card in &node.cards {
            let v = |m| value_of(&g, m, &node.name, card);
            let (verified, checked) = match card.outcome {
                CardOutcome::Verified => (1.0, 1.0),
                CardOutcome::Failed => (0.0, 1.0),
                CardOutcome::NotChecked => (0.0, 0.0),
            };
            assert_eq!(v("hami_isolation_verified"), Some(verified), "{card:?}");
            assert_eq!(v("hami_isolation_checked"), Some(checked), "{card:?}");
            assert_eq!(
                v("hami_isolation_slice_bytes"),
                Some(8000.0 * MIB),
                "{card:?}"
            );
            #[allow(clippy::cast_precision_loss)]
            let cap = card.cap_mib.map(|c| c as f64 * MIB);
            assert_eq!(v("hami_isolation_cap_bytes"), cap, "{card:?}");
        }
    }
    // The verified card's cap is the real boundary HAMi-core held (just under the slice).
    let hami = &report.nodes[0].cards[0];
    let cap = value_of(&g, "hami_isolation_cap_bytes", "h200-hami", hami).unwrap();
    assert!(cap > 7000.0 * MIB && cap <= 8000.0 * MIB, "{cap}");
    let run = |m: &str| g.get(m).map(|s| s[0].1);
    assert_eq!(
        run("hami_isolation_fleet_last_run_timestamp_seconds"),
        Some(1_764_590_042.25)
    );
    assert_eq!(run("hami_isolation_fleet_duration_seconds"), Some(42.25));
    let by_outcome: Vec<(String, f64)> = g["hami_isolation_fleet_cards"]
        .iter()
        .map(|(l, v)| (l["outcome"].as_str().unwrap().to_owned(), *v))
        .collect();
    assert_eq!(by_outcome.len(), 3, "{by_outcome:?}");
    for (outcome, n) in by_outcome {
        assert_eq!(n, 1.0, "{outcome}");
    }

    // The next run replaces the group: a card that is gone from the fleet leaves no series.
    let mut smaller = report.clone();
    smaller.nodes.truncate(1);
    push_fleet(
        &gw.url,
        "hami-isolation-fleet",
        &smaller,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let g = group(&gw.url, "hami-isolation-fleet").await;
    let bare = &report.nodes[1].cards[0];
    assert_eq!(
        value_of(&g, "hami_isolation_verified", "h200-bare", bare),
        None
    );
    assert_eq!(
        value_of(&g, "hami_isolation_verified", "h200-hami", hami),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_name_with_a_slash_and_a_space_reaches_its_own_group() {
    let Some(gw) = start_gateway().await else {
        return;
    };
    let job = "hami fleet/eu-west-1";
    push_fleet(&gw.url, job, &fleet(), Duration::from_secs(10))
        .await
        .unwrap();
    let g = group(&gw.url, job).await;
    let hami = &fleet().nodes[0].cards[0];
    assert_eq!(
        value_of(&g, "hami_isolation_verified", "h200-hami", hami),
        Some(1.0),
        "{g:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_pushgateway_refuses_a_malformed_body_and_the_error_quotes_it() {
    let Some(gw) = start_gateway().await else {
        return;
    };
    let e = push(
        &gw.url,
        "broken",
        "hami_isolation_verified{node=\"a} 1\n",
        Duration::from_secs(10),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("refused the push: HTTP 400"), "{e}");
    assert!(e.contains("Prometheus text format 0.0.4"), "{e}");
    // The gateway's own parse error is quoted.
    assert!(e.to_lowercase().contains("label"), "{e}");
    // Nothing of the broken push was stored.
    assert!(group(&gw.url, "broken").await.is_empty());
}

/// The Pushgateway's web config for the basic-auth test: user `fleet`, password
/// `fleet-test-password` (a bcrypt hash, cost 4, made for this test with Debian's python3 `crypt`).
const WEB_CONFIG: &str =
    "basic_auth_users:\n  fleet: $2b$04$d1xp4h4L0bAs5LYMY/3/e.2.t9N/x//pPMjQq.0NVrqD5p9TnRCLi\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_are_basic_auth_and_never_shown() {
    let Some(gw) = start_gateway_with(Some(WEB_CONFIG)).await else {
        return;
    };
    let with = |user_pass: &str| {
        gw.url
            .replacen("http://", &format!("http://{user_pass}@"), 1)
    };
    push_fleet(
        &with("fleet:fleet-test-password"),
        "hami-isolation-fleet",
        &fleet(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    // Read back with the same credentials: the push landed.
    let g = group_as(
        &gw.url,
        "hami-isolation-fleet",
        Some("Basic ZmxlZXQ6ZmxlZXQtdGVzdC1wYXNzd29yZA=="),
    )
    .await;
    let hami = &fleet().nodes[0].cards[0];
    assert_eq!(
        value_of(&g, "hami_isolation_verified", "h200-hami", hami),
        Some(1.0)
    );
    // No credentials, or wrong ones: refused with the fix, and the password never shown.
    for url in [gw.url.clone(), with("fleet:not-the-password-42")] {
        let e = push_fleet(
            &url,
            "hami-isolation-fleet",
            &fleet(),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("HTTP 401"), "{e}");
        assert!(e.contains("give credentials"), "{e}");
        assert!(!e.contains("not-the-password-42"), "{e}");
    }
}
