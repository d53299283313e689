//! The soak: whole runs while the server closes every watch within a few seconds and, at random,
//! compacts its history so a resuming watch gets 410 Gone — under manifests/rbac.yaml. Each
//! seed is one run; all must pass all five exercises (and A1's steps with --audit) with every
//! request allowed, no request past its deadline, nothing left open.

use std::time::Duration;

use cluster_ctl::api::wait::WATCH_TIMEOUT_SECS;

use crate::mockapi::{Chaos, WatchStats};
use crate::support::*;

fn policy() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/rbac.yaml"
    ))
    .unwrap()
}

async fn soak(seed: u64, audit: bool) -> WatchStats {
    let m = healthy_with_probes();
    m.enforce_rbac(&policy()).settings(|s| {
        s.chaos = Some(Chaos {
            seed,
            gone: 0.35,
            close_within: Duration::from_secs(4),
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let cmd = if audit {
        Command::RunAudit
    } else {
        Command::Run
    };
    let out = invoke(cmd, &m.cluster(API_TIMEOUT), dir.path())
        .await
        .unwrap();
    assert_eq!(out.exit, cmd.healthy_exit(), "seed {seed}: {}", out.human);
    let results = results(dir.path());
    for (id, r) in &results[..5] {
        assert_eq!(r, "pass", "seed {seed}: {id} {r}: {}", out.human);
    }
    if audit {
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("out/run.json")).unwrap(),
        )
        .unwrap();
        let a1 = &report["exercises"][5];
        assert!(
            a1["reason"]
                .as_str()
                .unwrap()
                .contains("3 path(s) holding more than the 8000 MiB slice"),
            "seed {seed}: {a1}"
        );
        assert!(
            a1["numbers"]["overhead_p50_us_with_vs_without_hami"].is_object(),
            "seed {seed}: {a1}"
        );
        assert!(
            !m.has("pods", "default", "hami-baseline"),
            "seed {seed}: the baseline pod is gone"
        );
    }
    let denied: Vec<String> = m
        .denied()
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect();
    assert!(
        denied.is_empty(),
        "seed {seed}: refused by manifests/rbac.yaml: {denied:?}"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        m.open().is_empty(),
        "seed {seed}: left open: {:?}",
        m.open()
    );
    for s in m.seen() {
        let d = s.duration().unwrap();
        let bound = if s.watch {
            Duration::from_secs(u64::from(WATCH_TIMEOUT_SECS) + 5)
        } else if s.attrs.resource == "pods/exec" {
            Duration::from_secs(300)
        } else {
            API_TIMEOUT
        };
        assert!(d <= bound, "seed {seed}: {} {} took {d:?}", s.method, s.uri);
    }
    let stats = m.lock().watch_stats;
    assert!(stats.closed_by_server >= 10, "seed {seed}: {stats:?}");
    stats
}

#[tokio::test(start_paused = true)]
async fn full_runs_pass_while_watches_close_every_few_seconds_and_410s_strike_at_random() {
    let mut total = WatchStats::default();
    for seed in 1..=12 {
        let s = soak(seed, false).await;
        total.started += s.started;
        total.closed_by_server += s.closed_by_server;
        total.gone += s.gone;
    }
    println!("soak, 12 runs: {total:?}");
    assert!(total.gone >= 12, "the 410s did strike: {total:?}");
}

#[tokio::test(start_paused = true)]
async fn audit_runs_pass_their_steps_under_the_same_weather() {
    let mut gone = 0;
    for seed in 100..=105 {
        gone += soak(seed, true).await.gone;
    }
    assert!(gone >= 3, "{gone}");
}
