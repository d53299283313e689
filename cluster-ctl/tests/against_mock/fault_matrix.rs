//! The fault matrix: each command × each fault, injected once on a request the command really
//! makes. Asserted per cell: the outcome (completed after retry, or a clear error naming the
//! fault, with its exit code), that no request outlived its deadline, that nothing was left open,
//! and that no lab pod is left behind (after an unfaulted `cleanup`, which a failed command may
//! need). A fault a command cannot meet (a write fault for a command that never writes, a watch
//! fault for one that never watches) is checked the other way round: the command made no such
//! request and completed.

use std::fmt::Write as _;
use std::time::Duration;

use cluster_ctl::api::wait::WATCH_TIMEOUT_SECS;

use crate::mockapi::faults::{Action, Fault, Match};
use crate::mockapi::{MockApi, Seen};
use crate::support::*;

const FAULTS: [&str; 10] = [
    "401",
    "403",
    "404",
    "409",
    "422",
    "429",
    "500",
    "drop-mid-watch",
    "stall",
    "410",
];

fn action(fault: &str) -> Action {
    match fault {
        "429" => Action::TooManyRequests {
            retry_after_secs: 2,
        },
        "drop-mid-watch" => Action::DropWatchAfter { events: 1 },
        "stall" => Action::Stall,
        "410" => Action::Gone,
        code => Action::Status(code.parse().unwrap()),
    }
}

fn is_watch_fault(fault: &str) -> bool {
    matches!(fault, "drop-mid-watch" | "410")
}

fn is_write_fault(fault: &str) -> bool {
    matches!(fault, "409" | "422")
}

/// The request of `cmd` a fault is injected on: a call for the status faults, a watch for the
/// watch faults, a write for 409/422 (`None`: the command makes no such request).
fn target(cmd: Command, fault: &str) -> Option<Match> {
    use Command::*;
    if is_watch_fault(fault) {
        return match cmd {
            Preflight | Doctor | Probe => None,
            InstallHami => Some(Match::verb("watch").resource("deployments")),
            Run | Cleanup => Some(Match::verb("watch").resource("pods")),
            RunAudit => Some(Match::verb("watch").resource("pods").name("hami-baseline")),
            RunBypass => Some(Match::verb("watch").resource("pods").name("hami-bypass-b2")),
        };
    }
    if is_write_fault(fault) {
        return match cmd {
            Preflight | InstallHami | Doctor | Probe => None,
            Run => Some(Match::verb("create").resource("pods")),
            RunAudit => Some(
                Match::verb("create")
                    .resource("pods")
                    .creating("hami-baseline"),
            ),
            RunBypass => Some(
                Match::verb("create")
                    .resource("pods")
                    .creating("hami-bypass-b2"),
            ),
            Cleanup => Some(Match::verb("delete").resource("pods")),
        };
    }
    Some(match cmd {
        Preflight => Match::verb("list").resource("pods"),
        InstallHami => Match::verb("list").resource("deployments"),
        Run => Match::verb("create").resource("pods"),
        RunAudit => Match::verb("create")
            .resource("pods")
            .creating("hami-baseline"),
        RunBypass => Match::verb("create")
            .resource("pods")
            .creating("hami-bypass-b2"),
        Doctor => Match::verb("list").resource("events"),
        Probe => Match::verb("get").resource("pods").name("hami-share-a"),
        Cleanup => Match::verb("delete").resource("pods"),
    })
}

/// What the cell must show.
#[derive(Debug)]
enum Expect {
    /// The command did its work (the fault was retried or recovered from).
    Completes,
    /// It stopped with this exit code, and its output or error names the fault with these words.
    Fails { exit: u8, names: Vec<&'static str> },
    /// The command makes no request this fault could hit.
    NotApplicable,
}

fn expect(cmd: Command, fault: &str) -> Expect {
    use Command::*;
    use Expect::*;
    if target(cmd, fault).is_none() {
        return NotApplicable;
    }
    match (cmd, fault) {
        (_, "429" | "500" | "stall" | "drop-mid-watch" | "410") => Completes,
        // A create meeting 409 finds no pod: it was deleted in between, so it creates again.
        (Run | RunAudit | RunBypass, "409") => Completes,
        // Credentials refused: the run stops there, the exercises left are not run, run.json
        // says why.
        (RunBypass, "401") => Fails {
            exit: 1,
            names: vec!["the run stopped", "401 Unauthorized", "hami-bypass-b2"],
        },
        // One bypass pod not created: that exercise is not run, with why; the others go on.
        (RunBypass, "403") => Fails {
            exit: 1,
            names: vec!["creating pod hami-bypass-b2 failed", "403 Forbidden"],
        },
        (RunBypass, "404") => Fails {
            exit: 1,
            names: vec!["creating pod hami-bypass-b2 failed", "not found (404)"],
        },
        (RunBypass, "422") => Fails {
            exit: 1,
            names: vec!["creating pod hami-bypass-b2 failed", "422 Invalid"],
        },
        // A delete meeting 404: the pod is already gone.
        (Cleanup, "404") => Completes,
        // The baseline pod is best effort: A1 keeps its verdict (a fail, on the real audit) and
        // records why the with/without-HAMi numbers are missing.
        (RunAudit, "401") => Fails {
            exit: 1,
            names: vec![
                "overhead_baseline",
                "not run",
                "401 Unauthorized",
                "create pods hami-baseline",
            ],
        },
        (RunAudit, "403") => Fails {
            exit: 1,
            names: vec![
                "overhead_baseline",
                "403 Forbidden",
                "create pods hami-baseline",
                "verbs: [\\\"create\\\"]",
            ],
        },
        (RunAudit, "404") => Fails {
            exit: 1,
            names: vec!["overhead_baseline", "not found (404)"],
        },
        (RunAudit, "422") => Fails {
            exit: 1,
            names: vec!["overhead_baseline", "422 Invalid"],
        },
        (_, "401") => Fails {
            exit: 3,
            names: vec!["401 Unauthorized", "rejected the credentials"],
        },
        (_, "403") => Fails {
            exit: 3,
            names: vec![
                "403 Forbidden",
                "needs the RBAC rule",
                "manifests/rbac.yaml",
            ],
        },
        (_, "404") => Fails {
            exit: 3,
            names: vec!["not found (404)"],
        },
        (_, "409") => Fails {
            exit: 3,
            names: vec!["409 Conflict"],
        },
        (_, "422") => Fails {
            exit: 3,
            names: vec!["422 Invalid"],
        },
        other => panic!("no expectation for {other:?}"),
    }
}

/// Every request ended within its bound: a call within --api-timeout, a watch within its
/// timeoutSeconds plus kube-runtime's 5 s margin, an exec within --probe-timeout.
fn outlived(seen: &[Seen]) -> Vec<String> {
    let slack = Duration::from_millis(1);
    seen.iter()
        .filter_map(|s| {
            let d = s.duration()?;
            let bound = if s.watch {
                Duration::from_secs(u64::from(WATCH_TIMEOUT_SECS) + 5)
            } else if s.attrs.resource == "pods/exec" {
                Duration::from_secs(300)
            } else {
                API_TIMEOUT
            };
            (d > bound + slack).then(|| format!("{} {} took {d:?} > {bound:?}", s.method, s.uri))
        })
        .collect()
}

async fn cell(cmd: Command, fault: &str) -> Result<String, String> {
    let m: MockApi = match cmd {
        Command::InstallHami => hami_coming_up(),
        _ => healthy_with_probes(),
    };
    prepare(cmd, &m);
    let target = target(cmd, fault);
    if let Some(t) = target.clone() {
        m.fault(Fault::once(t, action(fault)));
    }
    let dir = tempfile::tempdir().unwrap();
    let result = invoke(cmd, &m.cluster(API_TIMEOUT), dir.path()).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let seen = m.seen();
    let mut problems = Vec::new();
    let (code, text) = match &result {
        Ok(out) => (out.exit, format!("{}\n{}", out.human, out.json)),
        Err(f) => (f.code, f.to_string()),
    };
    let fired = m.fired();
    let verdict = match expect(cmd, fault) {
        Expect::Completes => {
            if code != cmd.healthy_exit() {
                problems.push(format!(
                    "exit {code}, expected {}: {text}",
                    cmd.healthy_exit()
                ));
            }
            if fired.is_empty() {
                problems.push("the fault never fired".into());
            }
            "completed after retry".to_owned()
        }
        Expect::Fails { exit, names } => {
            if code != exit {
                problems.push(format!("exit {code}, expected {exit}: {text}"));
            }
            for n in &names {
                if !text.contains(n) {
                    problems.push(format!("output does not name {n:?}: {text}"));
                }
            }
            if fired.is_empty() {
                problems.push("the fault never fired".into());
            }
            format!("exit {exit}, names the fault")
        }
        Expect::NotApplicable => {
            let hit = seen.iter().any(|s| {
                if is_watch_fault(fault) {
                    s.watch
                } else {
                    matches!(s.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
                }
            });
            if hit {
                problems.push("the command made a request of this kind after all".into());
            }
            if code != cmd.healthy_exit() {
                problems.push(format!("exit {code}: {text}"));
            }
            "n/a (no such request)".to_owned()
        }
    };
    problems.extend(outlived(&seen));
    let open = m.open();
    if !open.is_empty() {
        problems.push(format!(
            "requests left open: {:?}",
            open.iter().map(|s| &s.uri).collect::<Vec<_>>()
        ));
    }
    // No lab pod left behind: a clean-up (unfaulted; the fault fired once) removes every one.
    let after = invoke(Command::Cleanup, &m.cluster(API_TIMEOUT), dir.path()).await;
    if let Err(e) = &after {
        problems.push(format!("cleanup after: {e}"));
    }
    if !m.lab_pods().is_empty() {
        problems.push(format!("lab pods left: {:?}", m.lab_pods()));
    }
    if problems.is_empty() {
        Ok(verdict)
    } else {
        Err(problems.join("; "))
    }
}

async fn row(cmd: Command) {
    let mut table = String::new();
    let mut failed = Vec::new();
    for fault in FAULTS {
        match cell(cmd, fault).await {
            Ok(v) => writeln!(table, "{cmd:?} × {fault}: {v}").unwrap(),
            Err(e) => {
                writeln!(table, "{cmd:?} × {fault}: FAILED").unwrap();
                failed.push(format!("{cmd:?} × {fault}: {e}"));
            }
        }
    }
    println!("{table}");
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[tokio::test(start_paused = true)]
async fn preflight_under_every_fault() {
    row(Command::Preflight).await;
}

#[tokio::test(start_paused = true)]
async fn install_hami_under_every_fault() {
    row(Command::InstallHami).await;
}

#[tokio::test(start_paused = true)]
async fn run_under_every_fault() {
    row(Command::Run).await;
}

#[tokio::test(start_paused = true)]
async fn run_audit_under_every_fault() {
    row(Command::RunAudit).await;
}

#[tokio::test(start_paused = true)]
async fn run_bypass_under_every_fault() {
    row(Command::RunBypass).await;
}

#[tokio::test(start_paused = true)]
async fn doctor_under_every_fault() {
    row(Command::Doctor).await;
}

#[tokio::test(start_paused = true)]
async fn probe_under_every_fault() {
    row(Command::Probe).await;
}

#[tokio::test(start_paused = true)]
async fn cleanup_under_every_fault() {
    row(Command::Cleanup).await;
}
