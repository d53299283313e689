//! Benchmark of `cluster-ctl fleet` (not a timed test): the real binary against the mock API
//! server over TCP, in real time, with simulated pod start and probe times. Measures the wall
//! time of 500 nodes × 8 cards at `--parallel 64` against ceil(cards / 64) × the time one card
//! takes alone on the same mock, the API requests per card (counted by the mock), and the peak
//! resident memory of the cluster-ctl process (its `VmHWM`, read from /proc while it runs).
//!
//! `cargo bench -p cluster-ctl --bench fleet` (env `FLEET_BENCH_NODES`, `FLEET_BENCH_CARDS`,
//! `FLEET_BENCH_PARALLEL` change the size). Prints the numbers cluster-ctl/README.md records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // the benchmark runs the real binary as a child process

#[path = "../tests/mockapi/mod.rs"]
#[allow(unused_imports)]
mod mockapi;

use std::time::{Duration, Instant};

use mockapi::exec::Reply;
use mockapi::fixtures::h200;
use mockapi::gpu_cluster::{GpuNode, gpu_cluster};

const PULL: Duration = Duration::from_millis(500);
const PROBE: Duration = Duration::from_millis(1000);
const KUBELET_STOP: Duration = Duration::from_millis(200);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Measured {
    wall: Duration,
    requests: usize,
    peak_rss_kib: u64,
    exit: Option<i32>,
    verified: u64,
    cards: u64,
    /// The longest card's own turn (pod created → deleted and gone), from fleet.json.
    card_s: f64,
}

/// Runs the real binary against a fresh mock of `nodes` × `cards`.
async fn measure(nodes: usize, cards: usize, parallel: usize) -> Measured {
    let ns: Vec<GpuNode> = (0..nodes).map(|n| GpuNode::new(n, cards)).collect();
    let m = gpu_cluster(&ns, PULL);
    m.settings(|s| {
        s.kubelet_stop = KUBELET_STOP;
        s.keep_exec_stdin = false;
    });
    m.probe_reply(
        "*",
        "all",
        Reply {
            takes: PROBE,
            ..Reply::new(&h200("h1-8000.json"), &h200("h1-8000.err"), 0)
        },
    );
    let addr = m.serve_tcp().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: mock\n  context:\n    cluster: mock\n    user: u\ncurrent-context: mock\nusers:\n- name: u\n  user:\n    token: {}\n",
            mockapi::TOKEN
        ),
    )
    .unwrap();
    // A probe binary of gpu-probe's release size (its bytes are copied, never run).
    let bin = dir.path().join("gpu-probe");
    std::fs::write(&bin, vec![0x7fu8; 1_800_000]).unwrap();
    let out = dir.path().join("out");
    let args: Vec<String> = [
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "-n",
        mockapi::SA_NAMESPACE,
        "fleet",
        "--slice-mib",
        "8000",
        "--parallel",
        &parallel.to_string(),
        "--probe-bin",
        bin.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-o",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let before = m.seen().len();
    let started = Instant::now();
    let (exit, peak) = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cluster-ctl"))
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let status_file = format!("/proc/{}/status", child.id());
        let mut peak = 0u64;
        loop {
            if let Ok(s) = std::fs::read_to_string(&status_file)
                && let Some(kib) = s
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code(), peak);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    let wall = started.elapsed();
    let report: lab_report::fleet::FleetReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("fleet.json")).unwrap()).unwrap();
    Measured {
        wall,
        requests: m.seen().len() - before,
        peak_rss_kib: peak,
        exit,
        verified: u64::from(report.totals.verified),
        card_s: report
            .nodes
            .iter()
            .flat_map(|n| &n.cards)
            .map(|c| c.duration_s)
            .fold(0.0, f64::max),
        cards: u64::from(report.totals.cards),
    }
}

fn main() {
    let nodes = env_or("FLEET_BENCH_NODES", 500);
    let cards = env_or("FLEET_BENCH_CARDS", 8);
    let parallel = env_or("FLEET_BENCH_PARALLEL", 64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let one = measure(1, 1, 1).await;
        println!(
            "one card alone: its turn {:.2} s (the whole process {:.2} s), {} API requests, peak RSS {} KiB, exit {:?}",
            one.card_s,
            one.wall.as_secs_f64(),
            one.requests,
            one.peak_rss_kib,
            one.exit
        );
        let all = measure(nodes, cards, parallel).await;
        let total = nodes * cards;
        let rounds = total.div_ceil(parallel);
        // Per-card time: one card's own turn, alone (start-up and discovery are not in it, so
        // they count against the ratio).
        let ideal = one.card_s * rounds as f64;
        println!(
            "{nodes} nodes × {cards} cards = {total} at --parallel {parallel}: {:.1} s wall; ceil({total}/{parallel}) × per-card = {rounds} × {:.2} s = {ideal:.1} s; ratio {:.3} (target ≤ 1.2)",
            all.wall.as_secs_f64(),
            one.card_s,
            all.wall.as_secs_f64() / ideal
        );
        println!(
            "API requests: {} for {} cards = {:.2} per card (the whole run, discovery and sweep included)",
            all.requests,
            all.cards,
            all.requests as f64 / all.cards.max(1) as f64
        );
        println!(
            "cluster-ctl peak RSS: {:.1} MiB (target < 200 MiB); {} of {} cards verified; exit {:?}",
            all.peak_rss_kib as f64 / 1024.0,
            all.verified,
            all.cards,
            all.exit
        );
    });
}
