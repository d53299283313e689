//! Progress of the real `cluster-ctl run` against the mock API server on 127.0.0.1 (through a
//! kubeconfig), whose kubelet takes a few seconds to pull the image, so the run lasts long enough
//! to watch:
//!
//! - on a terminal (a tmux pane, run through `lab_runner::SystemRunner` so the tier table counts
//!   it): the waits draw a bar of their seconds out of the deadline that moves, the pulls and the
//!   exercises show as their own lines, and the results follow on the same terminal; with
//!   `--quiet` the same terminal gets plain lines and no bar;
//! - without a terminal (`-o json`, stderr a pipe): the same events as plain lines on stderr,
//!   without a control character, and stdout is the JSON report alone.
//!
//! And of `cluster-ctl fleet` over a mock cluster of several GPU nodes whose probes take a
//! second each: one counter of the cards (a bar with the time left on a terminal, that moves
//! card by card; lines every 5 % without one), none of the cards' own waits.

// std's Command, not lab_runner: these tests read the built CLI's stderr as a plain pipe (tmux goes
// through SystemRunner).
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "mockapi/mod.rs"]
mod mockapi;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab_runner::{Cmd, Runner, SystemRunner};
use mockapi::MockApi;
use mockapi::exec::Reply;
use mockapi::fixtures::{H200_UUID, h200};
use mockapi::lifecycle::{Card, Placement};

/// How long the mock's kubelet takes to pull the lab image.
const PULL: Duration = Duration::from_secs(4);

/// A k3s node with HAMi 2.10 ready on the H200 of the real gpu-probe reports (captured under
/// real HAMi-core), pods placed by the HAMi model with a slow pull, gpu-probe answering with
/// those reports.
fn slow_pull_cluster() -> MockApi {
    let m = MockApi::new();
    m.add_fixture("node-hami-v2.10-h100.json")
        .add_fixture("daemonsets-hami-only.json")
        .add_fixture("deploy-hami-scheduler-tag-match.json")
        .add_fixture("endpoints-hami-scheduler-ready.json");
    m.register_h200();
    m.place_on(Placement {
        node: "gpu-vm-1".into(),
        cards: vec![Card {
            uuid: H200_UUID.into(),
            devmem_mib: 81559,
        }],
        pull: PULL,
    });
    // gpu-probe takes a second here, not the default 20 s: the pull is what this test watches.
    let mut all = Reply::new(&h200("h1-8000.json"), &h200("h1-8000.err"), 0);
    all.takes = Duration::from_secs(1);
    m.probe_reply("*", "all", all);
    m
}

/// A kubeconfig whose current context is the mock on `addr`.
fn kubeconfig(dir: &Path, addr: std::net::SocketAddr) -> PathBuf {
    let path = dir.join("config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: lab\n  context:\n    cluster: local\n    user: u\ncurrent-context: lab\nusers:\n- name: u\n  user:\n    token: {}\n",
            mockapi::TOKEN
        ),
    )
    .unwrap();
    path
}

/// `run`'s arguments for a run into `dir` (the probe binary's bytes are only copied).
fn run_args(dir: &Path, kubeconfig: &Path) -> Vec<String> {
    let bin = dir.join("gpu-probe-bin");
    std::fs::write(&bin, b"\x7fELF gpu-probe").unwrap();
    [
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "run",
        "--out",
        &dir.join("out").display().to_string(),
        "--probe-bin",
        &bin.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn ctl_bin() -> String {
    env!("CARGO_BIN_EXE_cluster-ctl").to_owned()
}

/// Control characters other than the newline that ends each line.
fn control_chars(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_the_run_logs_plain_lines_on_stderr_and_stdout_is_the_json() {
    let m = slow_pull_cluster();
    let addr = m.serve_tcp().await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = run_args(dir.path(), &kubeconfig(dir.path(), addr));
    args.extend(["-o".to_owned(), "json".to_owned()]);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        // std's Command, not the lab's runner: this test reads the child's stderr as a pipe.
        std::process::Command::new(ctl_bin())
            .args(&args)
            .env_remove("KUBECONFIG")
            // No helm from the host: the run must not reach a cluster through it.
            .env("PATH", "/nonexistent-path-for-tests")
            .env("HOME", "/nonexistent-home-for-tests")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // stdout is the report alone.
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout}"));
    assert_eq!(report["exercises"].as_array().unwrap().len(), 5);
    assert!(took >= PULL, "the run waited for the pull: {took:?}");
    for progress_text in ["to be Ready", "image pull for", "exercises:"] {
        assert!(
            !stdout.contains(progress_text),
            "progress on stdout: {stdout}"
        );
    }
    // The wait: its deadline, the pod's states as they changed, then Ready.
    let wait: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("pod hami-share-a to be Ready: "))
        .collect();
    assert!(
        wait.iter()
            .any(|l| l.contains("/600 s after ") && l.ends_with("cuda ContainerCreating")),
        "{stderr}"
    );
    let last = wait.last().unwrap();
    assert!(last.ends_with(": Ready (done)"), "{stderr}");
    let secs: u64 = last
        .trim_start_matches("pod hami-share-a to be Ready: ")
        .split_once("/600 s")
        .unwrap()
        .0
        .parse()
        .unwrap();
    assert!(secs >= PULL.as_secs(), "{last}");
    // The pull, Pulling to Pulled, with its time.
    let pull: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("image pull for hami-share-b after "))
        .collect();
    assert_eq!(pull.len(), 2, "{stderr}");
    assert!(
        pull[0].contains(": Pulling: Pulling image \"nvidia/cuda:"),
        "{stderr}"
    );
    assert!(
        pull[1].contains(": Pulled: Successfully pulled image") && pull[1].ends_with("(done)"),
        "{stderr}"
    );
    // The exercises, one line per step and one per exercise decided, then the summary.
    let ex: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("exercises: "))
        .collect();
    for want in [
        "exercises: 0/5 decided after ",
        "E1: waiting for the share pods to be Ready",
        "exercises: 1/5 decided",
        "E2: running gpu-probe in hami-share-a",
        "E4: creating pod hami-oversubscribe",
    ] {
        assert!(ex.iter().any(|l| l.contains(want)), "{want}: {stderr}");
    }
    assert!(
        ex.last()
            .unwrap()
            .starts_with("exercises: 5/5 decided after ")
            && ex
                .last()
                .unwrap()
                .ends_with(": 5 pass, 0 fail, 0 not run (done)"),
        "{stderr}"
    );
    // The refusal the oversubscribe pod waits for.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("events of hami-oversubscribe: ")
                && l.contains("CardInsufficientMemory")
                && l.ends_with("(done)")),
        "{stderr}"
    );
    assert_eq!(control_chars(&stderr), Vec::<char>::new(), "{stderr:?}");
}

/// A tmux server of this test's own (`-L`), run through the lab's runner, killed at the end.
struct Tmux {
    runner: SystemRunner,
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> lab_runner::Output {
        let cmd = Cmd::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args.iter().copied())
            .timeout(Duration::from_secs(10));
        self.runner.run(&cmd).expect("tmux runs")
    }

    fn capture(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "ctl"]).stdout
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.runner.run(
            &Cmd::new("tmux")
                .args(["-L", &self.socket, "kill-server"])
                .timeout(Duration::from_secs(10)),
        );
    }
}

/// The seconds a frame's bar for `task` shows: `pod hami-share-a to be Ready [==>  ] 3/600 s`.
fn bar_seconds(frame: &str, task: &str) -> Option<u64> {
    let line = frame.lines().find(|l| l.contains(task))?;
    let close = line.find(']')?;
    if !line[..close].contains('[') {
        return None;
    }
    let (pos, _) = line[close + 1..].trim_start().split_once("/600 s")?;
    pos.trim().parse().ok()
}

/// Runs `cluster-ctl run` (with `extra` flags) against a fresh slow-pull mock in a tmux pane and
/// returns every distinct frame of the pane until the run ended (the last one included); `None`
/// when tmux is not installed (the skip is recorded).
async fn frames_in_a_terminal(name: &str, extra: &[&str]) -> Option<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    frames_of(name, slow_pull_cluster(), 45, |addr| {
        let mut args = run_args(dir.path(), &kubeconfig(dir.path(), addr));
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    })
    .await
}

/// Runs cluster-ctl with the arguments `args` gives for the mock's address, against `m` in a
/// tmux pane 160 columns wide and `rows` high, and returns every distinct frame of the pane until it ended (the last one
/// included); `None` when tmux is not installed (the skip is recorded).
async fn frames_of(
    name: &str,
    m: MockApi,
    rows: u16,
    args: impl FnOnce(std::net::SocketAddr) -> Vec<String>,
) -> Option<Vec<String>> {
    let runner = SystemRunner::new(false);
    if !runner.exists("tmux") {
        lab_runner::tier::skipped(
            "tmux",
            "tmux is not installed (Debian: apt-get install -y tmux); no terminal was driven",
        );
        return None;
    }
    let addr = m.serve_tcp().await;
    let args = args(addr);
    let mut line = format!(
        "env -u KUBECONFIG PATH=/nonexistent-path-for-tests HOME=/nonexistent-home-for-tests '{}'",
        ctl_bin()
    );
    for a in &args {
        line.push_str(&format!(" '{a}'"));
    }
    line.push_str("; echo CTL-EXITED $?; sleep 60");
    let tmux = Tmux {
        runner,
        socket: format!("cluster-ctl-{name}-{}", std::process::id()),
    };
    // On the test's own thread (the runtime's workers serve the mock), so the tier log names
    // the test as the one that ran tmux.
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "ctl",
        "-x",
        "160",
        "-y",
        &rows.to_string(),
        &line,
    ]);
    assert!(started.success(), "{}", started.stderr);
    let begin = Instant::now();
    let mut frames: Vec<String> = Vec::new();
    while begin.elapsed() < Duration::from_secs(90) {
        let frame = tmux.capture();
        let ended = frame.contains("CTL-EXITED");
        if frames.last() != Some(&frame) {
            frames.push(frame);
        }
        if ended {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_run_draws_bars_that_move() {
    let Some(frames) = frames_in_a_terminal("bars", &[]).await else {
        return;
    };
    let last = frames.last().unwrap();
    assert!(
        last.contains("CTL-EXITED 0"),
        "the run did not end well:\n{last}"
    );
    let mut seconds: Vec<u64> = Vec::new();
    let mut moving: Vec<&String> = Vec::new();
    for f in &frames {
        if let Some(s) = bar_seconds(f, "pod hami-share-a to be Ready")
            && seconds.last() != Some(&s)
        {
            seconds.push(s);
            moving.push(f);
        }
    }
    // The wait's bar was drawn and moved, second by second, while the image was pulled.
    assert!(
        seconds.len() >= 3,
        "bar positions {seconds:?}; last frame:\n{last}"
    );
    assert!(seconds.windows(2).all(|w| w[0] < w[1]), "{seconds:?}");
    assert!(*seconds.last().unwrap() >= PULL.as_secs(), "{seconds:?}");
    // While it moved, the pull and the exercises were on screen too.
    let during = moving
        .iter()
        .find(|f| f.contains("Pulling"))
        .unwrap_or_else(|| panic!("no frame showed the pull:\n{}", frames.join("\n-----\n")));
    assert!(
        during.contains("image pull for hami-share-a")
            && during.contains("exercises")
            && during.contains("0/5 decided"),
        "{during}"
    );
    // The results follow on the same terminal, the finished bars above them.
    assert!(last.contains("5/5 decided"), "{last}");
    assert!(last.contains("E1 pass"), "{last}");
    assert!(last.contains("results: "), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_quiet_shows_the_same_events_as_plain_lines() {
    let Some(frames) = frames_in_a_terminal("quiet", &["--quiet"]).await else {
        return;
    };
    let last = frames.last().unwrap();
    assert!(last.contains("CTL-EXITED 0"), "{last}");
    for f in &frames {
        assert!(
            bar_seconds(f, "pod hami-share-a to be Ready").is_none(),
            "a bar under --quiet:\n{f}"
        );
    }
    let all = frames.join("\n");
    assert!(
        all.lines()
            .any(|l| l.starts_with("pod hami-share-a to be Ready: 0/600 s after ")),
        "{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.starts_with("exercises: 5/5 decided after ")),
        "{all}"
    );
}

/// Nodes × cards of the fleet tests, and the probes in flight.
const FLEET_NODES: usize = 2;
const FLEET_CARDS: usize = 3;
const FLEET_PARALLEL: &str = "2";

/// A mock cluster of `FLEET_NODES` HAMi nodes with `FLEET_CARDS` cards each, whose gpu-probe
/// answers with the real H200 report (shown as the card the pod was given) after a second.
fn fleet_cluster() -> MockApi {
    use mockapi::gpu_cluster::{GpuNode, gpu_cluster};
    let nodes: Vec<GpuNode> = (0..FLEET_NODES)
        .map(|n| GpuNode::new(n, FLEET_CARDS))
        .collect();
    let m = gpu_cluster(&nodes, Duration::ZERO);
    let mut all = Reply::new(&h200("h1-8000.json"), "", 0);
    all.takes = Duration::from_secs(1);
    m.probe_reply("*", "all", all);
    m
}

/// `fleet`'s arguments against the mock on `addr`, with files in `dir`.
fn fleet_args(dir: &Path, addr: std::net::SocketAddr) -> Vec<String> {
    let bin = dir.join("gpu-probe-bin");
    std::fs::write(&bin, b"\x7fELF gpu-probe").unwrap();
    [
        "--kubeconfig",
        &kubeconfig(dir, addr).display().to_string(),
        "-n",
        mockapi::SA_NAMESPACE,
        "fleet",
        "--slice-mib",
        "8000",
        "--parallel",
        FLEET_PARALLEL,
        "--probe-bin",
        &bin.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_fleet_logs_its_counter_as_plain_lines() {
    let m = fleet_cluster();
    let addr = m.serve_tcp().await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = fleet_args(dir.path(), addr);
    args.extend(["-o".to_owned(), "json".to_owned()]);
    let out = tokio::task::spawn_blocking(move || {
        // std's Command, not the lab's runner: this test reads the child's stderr as a pipe.
        std::process::Command::new(ctl_bin())
            .args(&args)
            .env_remove("KUBECONFIG")
            .env("HOME", "/nonexistent-home-for-tests")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: lab_report::fleet::FleetReport = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not the fleet report ({e}): {stdout}"));
    let cards = FLEET_NODES * FLEET_CARDS;
    assert_eq!(report.totals.verified as usize, cards, "{stderr}");
    let counter: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("fleet: "))
        .collect();
    // The start, a line every 5 % of the cards (each card here), and the end.
    assert_eq!(counter.len(), cards + 1, "{stderr}");
    assert!(
        counter[0].starts_with(&format!("fleet: 0/{cards} cards after "))
            && counter[0].ends_with(": 2 at a time"),
        "{stderr}"
    );
    assert!(
        counter[1..cards]
            .iter()
            .all(|l| l.contains(" left: ") && l.contains(" in flight, 0 not verified")),
        "every line after the first card says the time left: {stderr}"
    );
    let positions: Vec<usize> = counter[1..cards]
        .iter()
        .map(|l| {
            l.trim_start_matches("fleet: ")
                .split_once('/')
                .unwrap()
                .0
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(positions, (1..cards).collect::<Vec<_>>(), "{stderr}");
    assert!(
        counter[cards].starts_with(&format!("fleet: {cards}/{cards} cards after "))
            && counter[cards].ends_with(": 0 not verified (done)"),
        "{stderr}"
    );
    // The cards' own waits are not shown, only the counter.
    assert!(
        !stderr.contains("to start"),
        "a probe pod's wait was shown: {stderr}"
    );
    assert!(!stdout.contains("fleet: "), "progress on stdout");
    assert_eq!(control_chars(&stderr), Vec::<char>::new(), "{stderr:?}");
}

/// The cards a frame's fleet bar shows done: `fleet [====>   ] 5/12 cards 3s, ETA 4s …`.
fn fleet_bar(frame: &str) -> Option<(u64, String)> {
    let line = frame
        .lines()
        .find(|l| l.contains("fleet") && l.contains("] "))?;
    let close = line.find(']')?;
    let rest = line[close + 1..].trim_start();
    let (pos, after) = rest.split_once('/')?;
    Some((pos.trim().parse().ok()?, after.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_fleet_draws_one_bar_of_the_cards_with_the_time_left() {
    let dir = tempfile::tempdir().unwrap();
    // Tall enough that the finished bar stays on screen above the table of the cards.
    let Some(frames) = frames_of("fleet", fleet_cluster(), 100, |addr| {
        fleet_args(dir.path(), addr)
    })
    .await
    else {
        return;
    };
    let last = frames.last().unwrap();
    let cards = FLEET_NODES * FLEET_CARDS;
    assert!(
        last.contains("CTL-EXITED 0"),
        "the fleet did not end well:\n{last}"
    );
    let mut done: Vec<u64> = Vec::new();
    for f in &frames {
        if let Some((pos, after)) = fleet_bar(f) {
            assert!(
                after.starts_with(&format!("{cards} cards")),
                "the bar counts the cards: {after}"
            );
            if pos > 0 && pos < cards as u64 {
                assert!(after.contains("ETA "), "no time left on the bar:\n{f}");
                assert!(after.contains("in flight"), "{f}");
            }
            if done.last() != Some(&pos) {
                done.push(pos);
            }
        }
        // One bar: the probe pods' waits draw none.
        assert!(
            !f.contains("to start"),
            "a probe pod's wait on screen:\n{f}"
        );
    }
    // The bar moved card by card (2 at a time, a second each) to the end.
    assert!(
        done.len() >= 4,
        "bar positions {done:?}; last frame:\n{last}"
    );
    assert!(done.windows(2).all(|w| w[0] < w[1]), "{done:?}");
    assert_eq!(done.last(), Some(&(cards as u64)), "{done:?}\n{last}");
    // The table and totals follow on the same terminal.
    assert!(
        last.contains(&format!("{cards} cards: {cards} verified, 0 failed")),
        "{last}"
    );
}
