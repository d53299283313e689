//! `cluster-ctl fleet` against the mock: clusters of 1, 3 and 500 HAMi nodes with 1–8 cards of
//! mixed models; nodes NotReady and cordoned, cards full, a card the scheduler cannot place on,
//! probes that fail (a real bare-H200 report), time out or print garbage, a registration that
//! cannot be read, a node that disappears mid-run, the total deadline; HAMi's node lock (binds on
//! one node wait for each other; cards in flight are spread over the nodes); manifests/rbac.yaml
//! enforced. gpu-probe's answers are the real H200 reports of lab-report's test data.

use std::collections::BTreeMap;
use std::time::Duration;

use cluster_ctl::commands::{self, Ctx, FleetArgs};
use lab_report::fleet::{CardOutcome, FleetReport, NotChecked};

use crate::mockapi::exec::Reply;
use crate::mockapi::fixtures::h200;
use crate::mockapi::gpu_cluster::{Format, GpuNode, gpu_cluster, tenant};
use crate::mockapi::lifecycle::Step;
use crate::mockapi::store::ObjKey;
use crate::mockapi::{MockApi, SA_NAMESPACE};
use crate::support::{API_TIMEOUT, rbac_policy};

/// The real report of an 8000 MiB slice under HAMi-core: the slice the fleet gives every card.
const SLICE: u64 = 8000;

pub fn ctx() -> Ctx {
    let mut c = crate::support::ctx(false);
    c.namespace = SA_NAMESPACE.into();
    c
}

pub fn args(dir: &std::path::Path, parallel: u32) -> FleetArgs {
    let bin = dir.join("gpu-probe-bin");
    std::fs::write(&bin, b"\x7fELF gpu-probe").unwrap();
    FleetArgs {
        slice_mib: Some(SLICE),
        parallel,
        node_selector: None,
        nodes: Vec::new(),
        card_timeout: 600,
        timeout: 3600,
        allow_unchecked: false,
        image: cluster_ctl::manifests::DEFAULT_IMAGE.into(),
        probe_bin: Some(bin),
        probe_in_image: None,
        out: Some(dir.join("out")),
        metrics_file: None,
        pushgateway: None,
        emit_cronjob: false,
        schedule: None,
        cronjob_image: None,
    }
}

pub fn verified_reply() -> Reply {
    Reply::new(&h200("h1-8000.json"), &h200("h1-8000.err"), 0)
}

/// The real report of the same H200 with no HAMi-core: a card that does not hold its slice.
fn bare_reply() -> Reply {
    Reply::new(&h200("h2-bare.json"), "", 1)
}

fn outcomes(r: &FleetReport) -> BTreeMap<(String, u32), (CardOutcome, Option<NotChecked>)> {
    r.nodes
        .iter()
        .flat_map(|n| {
            n.cards.iter().map(|c| {
                (
                    (n.name.clone(), c.index),
                    (c.outcome, c.not_checked.clone()),
                )
            })
        })
        .collect()
}

fn read_report(dir: &std::path::Path) -> FleetReport {
    serde_json::from_str(&std::fs::read_to_string(dir.join("out/fleet.json")).unwrap()).unwrap()
}

fn probe_pods_left(m: &MockApi) -> Vec<String> {
    m.names("pods", SA_NAMESPACE)
}

#[tokio::test(start_paused = true)]
async fn one_node_one_card_is_verified_from_its_real_report_and_leaves_nothing_behind() {
    let m = gpu_cluster(&[GpuNode::new(0, 1)], Duration::from_secs(5));
    m.enforce_rbac(&rbac_policy());
    m.probe_reply("*", "all", verified_reply());
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), 4);
    let metrics = dir.path().join("textfile/hami_isolation.prom");
    a.metrics_file = Some(metrics.clone());
    let out = commands::fleet(&m.cluster(API_TIMEOUT), &ctx(), &a)
        .await
        .unwrap();
    assert_eq!(out.exit, 0, "{}", out.human);
    assert!(m.denied().is_empty(), "{:#?}", m.denied());
    let r = read_report(dir.path());
    assert_eq!(r.totals.verified, 1);
    // The metrics file is lab-report's OpenMetrics of this very report, written whole.
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(text, lab_report::metrics::openmetrics(&r));
    assert!(
        text.contains("hami_isolation_verified{") && text.ends_with("# EOF\n"),
        "{text}"
    );
    let card = &r.nodes[0].cards[0];
    assert_eq!(card.outcome, CardOutcome::Verified, "{}", card.reason);
    assert_eq!(card.probe_verdict.as_deref(), Some("verified"));
    // The verdict rests on the file beside fleet.json, and lab-report's judge agrees again.
    let rel = card.probe_report.as_deref().unwrap();
    assert_eq!(rel, "probe/gpu-000-0.json");
    let report: lab_report::probe::Report =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out").join(rel)).unwrap())
            .unwrap();
    assert!(lab_report::fleet::judge_card(&report, SLICE).is_ok());
    // The pod was pinned to its node and card, ran `gpu-probe all --expect-mib 8000`, and is gone.
    let calls = m.exec_calls();
    let run = calls
        .iter()
        .find(|c| c.command[0] == "/tmp/gpu-probe")
        .unwrap();
    assert_eq!(
        run.command[1..],
        ["all", "--output", "json", "--expect-mib", "8000"]
    );
    assert!(probe_pods_left(&m).is_empty(), "{:?}", probe_pods_left(&m));
    let created: Vec<_> = m
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.uri.contains("/pods"))
        .collect();
    assert_eq!(created.len(), 1);
    let body = created[0].body.clone().unwrap();
    assert_eq!(
        body["metadata"]["annotations"]["nvidia.com/use-gpuuuid"],
        r.nodes[0].cards[0].uuid.as_str()
    );
    assert_eq!(
        body["spec"]["nodeSelector"]["kubernetes.io/hostname"],
        "gpu-000"
    );
    assert_eq!(
        body["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpumem"],
        "8000"
    );
    assert!(m.open().is_empty(), "no request left open");
}

#[tokio::test(start_paused = true)]
async fn three_nodes_every_way_a_card_can_end() {
    // gpu-000: 8 cards, Ready (JSON register): verified, bare (fails), full, timed out, garbage,
    //          one the scheduler cannot place on, two verified.
    // gpu-001: cordoned (legacy 9-field register). gpu-002: NotReady (legacy 7-field register).
    let mut a = GpuNode::new(0, 8);
    a.cards[5].schedulable = false;
    let mut b = GpuNode::new(1, 2);
    b.cordoned = true;
    b.format = Format::Legacy9;
    let mut c = GpuNode::new(2, 1);
    c.ready = false;
    c.format = Format::Legacy7;
    let m = gpu_cluster(&[a.clone(), b, c], Duration::from_secs(5));
    m.enforce_rbac(&rbac_policy());
    m.add(tenant(
        "trainer-0",
        "gpu-000",
        &a.cards[2].uuid,
        a.cards[2].mib - 4000,
    ));
    m.probe_reply("*", "all", verified_reply())
        .probe_reply(&format!("uuid:{}", a.cards[1].uuid), "all", bare_reply())
        .probe_reply(
            &format!("uuid:{}", a.cards[3].uuid),
            "all",
            Reply {
                takes: Duration::from_secs(900),
                ..verified_reply()
            },
        )
        .probe_reply(
            &format!("uuid:{}", a.cards[4].uuid),
            "all",
            Reply::new(
                "",
                "gpu-probe: error while loading shared libraries: libcuda.so.1\n",
                127,
            ),
        );
    let dir = tempfile::tempdir().unwrap();
    let out = commands::fleet(&m.cluster(API_TIMEOUT), &ctx(), &args(dir.path(), 3))
        .await
        .unwrap();
    assert_eq!(out.exit, 1, "{}", out.human);
    assert!(m.denied().is_empty(), "{:#?}", m.denied());
    let r = read_report(dir.path());
    let o = outcomes(&r);
    let n0 = |i: u32| o[&("gpu-000".to_owned(), i)].clone();
    assert_eq!(n0(0).0, CardOutcome::Verified);
    assert_eq!(n0(1).0, CardOutcome::Failed);
    assert_eq!(n0(2).1, Some(NotChecked::CardBusy { free_mib: 4000 }));
    assert_eq!(n0(3).1, Some(NotChecked::ProbeTimedOut { after_s: 600 }));
    assert!(
        matches!(n0(4).1, Some(NotChecked::NoReport { .. })),
        "{:?}",
        n0(4)
    );
    match n0(5).1 {
        Some(NotChecked::Unschedulable { event }) => {
            assert!(event.contains("CardInsufficientMemory"), "{event}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(n0(6).0, CardOutcome::Verified);
    assert_eq!(n0(7).0, CardOutcome::Verified);
    for i in 0..2 {
        assert_eq!(
            o[&("gpu-001".to_owned(), i)].1,
            Some(NotChecked::NodeCordoned)
        );
    }
    assert_eq!(
        o[&("gpu-002".to_owned(), 0)].1,
        Some(NotChecked::NodeNotReady)
    );
    assert_eq!(r.nodes[1].register_format.as_deref(), Some("legacy-9"));
    assert_eq!(r.nodes[2].register_format.as_deref(), Some("legacy-7"));
    assert_eq!(
        (
            r.totals.cards,
            r.totals.verified,
            r.totals.failed,
            r.totals.not_checked
        ),
        (11, 3, 1, 7)
    );
    let failed = &r.nodes[0].cards[1];
    // The judge's own sentence over the real bare report.
    assert!(failed.reason.contains("expected"), "{}", failed.reason);
    assert_eq!(failed.probe_verdict.as_deref(), Some("not-verified"));
    // --allow-unchecked tolerates the unchecked cards, never the failed one.
    assert_eq!(r.exit_code(), 1);
    assert!(probe_pods_left(&m).is_empty(), "{:?}", probe_pods_left(&m));
    // Mixed models are reported as HAMi registered them.
    let models: std::collections::BTreeSet<_> =
        r.nodes[0].cards.iter().map(|c| c.model.as_str()).collect();
    assert_eq!(models.len(), 4, "{models:?}");
}

#[tokio::test(start_paused = true)]
async fn a_node_that_disappears_mid_run_ends_its_cards_as_node_gone() {
    let nodes = [GpuNode::new(0, 2), GpuNode::new(1, 4)];
    let m = gpu_cluster(&nodes, Duration::from_secs(5));
    m.probe_reply("*", "all", verified_reply());
    // gpu-001 goes 10 s in: its first card's probe (20 s) is running then.
    m.start_world(crate::mockapi::lifecycle::WorldTimeline::default().at(
        Duration::from_secs(10),
        ObjKey {
            resource: "nodes".into(),
            namespace: String::new(),
            name: "gpu-001".into(),
        },
        Step::Remove,
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), 1);
    a.nodes = vec!["gpu-001".into(), "gpu-000".into()];
    let out = commands::fleet(&m.cluster(API_TIMEOUT), &ctx(), &a)
        .await
        .unwrap();
    assert_eq!(out.exit, 1, "{}", out.human);
    let r = read_report(dir.path());
    let o = outcomes(&r);
    for i in 0..4 {
        assert_eq!(
            o[&("gpu-001".to_owned(), i)].1,
            Some(NotChecked::NodeGone),
            "card {i}: {}",
            out.human
        );
    }
    // Sorted by name, gpu-000 came first and was verified before gpu-001 went.
    for i in 0..2 {
        assert_eq!(o[&("gpu-000".to_owned(), i)].0, CardOutcome::Verified);
    }
    assert!(probe_pods_left(&m).is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_registration_and_the_total_deadline_are_never_a_pass() {
    let mut broken = GpuNode::new(1, 1).object();
    broken["metadata"]["annotations"]["hami.io/node-nvidia-register"] = "GPU-1,10,81559:".into();
    let m = gpu_cluster(&[GpuNode::new(0, 4)], Duration::from_secs(5));
    m.add(broken);
    m.probe_reply("*", "all", verified_reply());
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), 1);
    a.timeout = 60; // each card takes ~26 s: two fit
    let out = commands::fleet(&m.cluster(API_TIMEOUT), &ctx(), &a)
        .await
        .unwrap();
    assert_eq!(out.exit, 1);
    let r = read_report(dir.path());
    let o = outcomes(&r);
    assert_eq!(
        o[&("gpu-001".to_owned(), 0)].1,
        Some(NotChecked::AnnotationUnreadable)
    );
    assert!(
        r.nodes[1]
            .register_error
            .as_deref()
            .unwrap()
            .contains("fields")
    );
    let stopped = o
        .values()
        .filter(
            |(_, n)| matches!(n, Some(NotChecked::RunStopped { why }) if why.contains("--timeout")),
        )
        .count();
    let verified = o
        .values()
        .filter(|(c, _)| *c == CardOutcome::Verified)
        .count();
    assert_eq!(verified + stopped, 4, "{}", out.human);
    assert!(verified >= 1 && stopped >= 1, "{}", out.human);
    // The card in flight when the deadline passed was deleted by the sweep.
    assert!(probe_pods_left(&m).is_empty(), "{:?}", probe_pods_left(&m));
    // --allow-unchecked: still exit 1, the registration and stopped cards... allowed, but a
    // fleet of only unchecked cards proves nothing.
    let mut allowed = r.clone();
    allowed.parameters.allow_unchecked = true;
    assert_eq!(allowed.exit_code(), 0);
}

#[tokio::test(start_paused = true)]
async fn five_hundred_nodes_of_one_to_eight_cards_with_rbac_enforced() {
    let nodes: Vec<GpuNode> = (0..500)
        .map(|n| {
            let mut node = GpuNode::new(n, 1 + n % 8);
            node.format = [Format::Json, Format::Legacy9, Format::Legacy7][n % 3];
            node.ready = n % 97 != 5;
            node.cordoned = n % 89 == 7;
            node
        })
        .collect();
    let m = gpu_cluster(&nodes, Duration::from_secs(5));
    m.enforce_rbac(&rbac_policy());
    m.probe_reply("*", "all", verified_reply());
    // Every 50th node's first card has no HAMi-core (the real bare-H200 report).
    for n in nodes.iter().step_by(50) {
        m.probe_reply(&format!("uuid:{}", n.cards[0].uuid), "all", bare_reply());
    }
    let dir = tempfile::tempdir().unwrap();
    let before = m.seen().len();
    let out = commands::fleet(&m.cluster(API_TIMEOUT), &ctx(), &args(dir.path(), 64))
        .await
        .unwrap();
    assert_eq!(out.exit, 1, "the bare cards fail");
    assert!(m.denied().is_empty(), "{:#?}", m.denied().first());
    let r = read_report(dir.path());
    let cards: usize = nodes.iter().map(|n| n.cards.len()).sum();
    assert_eq!(r.totals.cards as usize, cards);
    let unready: usize = nodes
        .iter()
        .filter(|n| !n.ready)
        .map(|n| n.cards.len())
        .sum();
    let cordoned: usize = nodes
        .iter()
        .filter(|n| n.ready && n.cordoned)
        .map(|n| n.cards.len())
        .sum();
    let bare = nodes
        .iter()
        .step_by(50)
        .filter(|n| n.ready && !n.cordoned)
        .count();
    assert_eq!(r.totals.failed as usize, bare);
    assert_eq!(r.totals.not_checked as usize, unready + cordoned);
    assert_eq!(
        r.totals.verified as usize,
        cards - unready - cordoned - bare
    );
    let probed = cards - unready - cordoned;
    let requests = m.seen().len() - before;
    // Bounded API requests per card: create, watch (list + watch), copy, run, delete, watch gone.
    let per_card = requests as f64 / probed as f64;
    assert!(
        per_card <= 9.0,
        "{requests} requests for {probed} cards ({per_card:.2} per card)"
    );
    assert!(probe_pods_left(&m).is_empty());
    assert!(m.open().is_empty());
}

/// The FailedScheduling events of HAMi's node lock: (pod, message).
fn lock_refusals(m: &MockApi) -> Vec<(String, String)> {
    m.lock()
        .store
        .objects
        .iter()
        .filter(|(k, v)| {
            k.resource == "events"
                && v["reason"] == "FailedScheduling"
                && v["message"]
                    .as_str()
                    .is_some_and(|s| s.contains("has been locked within"))
        })
        .map(|(_, v)| {
            (
                v["involvedObject"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                v["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn node_lock_annotation(m: &MockApi, node: &str) -> Option<String> {
    let key = ObjKey {
        resource: "nodes".into(),
        namespace: String::new(),
        name: node.into(),
    };
    m.lock().store.get(&key).and_then(|n| {
        n["metadata"]["annotations"]["hami.io/mutex.lock"]
            .as_str()
            .map(str::to_owned)
    })
}

/// Four cards of one node at once: hami-scheduler's node lock binds one pod at a time, the
/// others' binds fail ("node … has been locked within 5m0s", PodScheduled=False SchedulerError)
/// and kube-scheduler retries them after its backoff; fleet waits through it and every card is
/// verified, the lock released at the end.
#[tokio::test(start_paused = true)]
async fn one_node_many_cards_at_once_wait_for_hamis_node_lock() {
    let m = gpu_cluster(&[GpuNode::new(0, 4)], Duration::from_secs(5));
    m.enforce_rbac(&rbac_policy());
    m.probe_reply("*", "all", verified_reply());
    let dir = tempfile::tempdir().unwrap();
    let out = commands::fleet(&m.cluster(API_TIMEOUT), &ctx(), &args(dir.path(), 4))
        .await
        .unwrap();
    assert_eq!(out.exit, 0, "{}", out.human);
    let r = read_report(dir.path());
    assert_eq!(r.totals.verified, 4, "{}", out.human);
    let refused = lock_refusals(&m);
    assert!(
        refused.len() >= 3,
        "three of the four binds meet a held lock at least once: {refused:?}"
    );
    assert!(
        refused
            .iter()
            .all(|(_, msg)| msg == "node gpu-000 has been locked within 5m0s"),
        "{refused:?}"
    );
    assert_eq!(node_lock_annotation(&m, "gpu-000"), None);
    assert!(probe_pods_left(&m).is_empty());
}

/// Cards are probed in turns across the nodes: with one pod in flight per node, no bind ever
/// meets another's node lock (listed node by node, the two cards of gpu-000 would be in flight
/// together and one would).
#[tokio::test(start_paused = true)]
async fn cards_in_flight_are_spread_over_the_nodes() {
    let nodes: Vec<GpuNode> = (0..3).map(|n| GpuNode::new(n, 2)).collect();
    let m = gpu_cluster(&nodes, Duration::from_secs(5));
    m.enforce_rbac(&rbac_policy());
    m.probe_reply("*", "all", verified_reply());
    let dir = tempfile::tempdir().unwrap();
    let out = commands::fleet(&m.cluster(API_TIMEOUT), &ctx(), &args(dir.path(), 3))
        .await
        .unwrap();
    assert_eq!(out.exit, 0, "{}", out.human);
    assert_eq!(read_report(dir.path()).totals.verified, 6);
    let created: Vec<String> = m
        .seen()
        .into_iter()
        .filter(|s| {
            s.method == "POST"
                && s.uri
                    .split('?')
                    .next()
                    .is_some_and(|p| p.ends_with("/pods"))
        })
        .map(|s| {
            s.body.unwrap()["spec"]["nodeSelector"]["kubernetes.io/hostname"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        created[..3],
        ["gpu-000", "gpu-001", "gpu-002"],
        "the first three pods, one per node: {created:?}"
    );
    assert_eq!(lock_refusals(&m), Vec::<(String, String)>::new());
}
