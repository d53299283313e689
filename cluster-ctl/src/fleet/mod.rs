//! Fleet mode, the pure half: which cards HAMi registered and which of them can be probed
//! ([`discover`]), the probe pod of one card ([`pod`]), what a probe pod's state means
//! ([`probe_pod_state`], the wait predicate), the judgement of a card from its probe's output
//! ([`judge_output`]) and the CronJob of continuous verification ([`cronjob`]).
//! `commands::fleet` runs it against the cluster through `crate::api`.
//!
//! A card is verified only by `lab_report::fleet::judge_card_of` over its probe report (which must
//! also be that card's: its device 0 shows the card's UUID); every other
//! way a card's turn can end is a typed `NotChecked` reason, never a pass.

pub mod cronjob;
pub mod discover;
pub mod pod;

use k8s_openapi::api::core::v1::Pod;
use lab_report::fleet::{CardOutcome, FleetCard, NotChecked};
use lab_report::probe::Report;

pub use discover::{CardTask, Discovery, discover};

/// Label of every fleet probe pod (beside the lab's `app.kubernetes.io/part-of`).
pub const ROLE_LABEL: &str = "hami-isolation-lab/role";
pub const ROLE_VALUE: &str = "fleet-probe";
/// Label with the run's id: the sweep at the end deletes every pod of its run by it.
pub const RUN_LABEL: &str = "hami-isolation-lab/fleet-run";
/// Selector of every fleet probe pod of any run (the sweep of leftovers at the start).
pub const ANY_RUN_SELECTOR: &str = "hami-isolation-lab/role=fleet-probe";

/// Selector of the probe pods of run `run`.
pub fn run_selector(run: &str) -> String {
    format!("{ANY_RUN_SELECTOR},{RUN_LABEL}={run}")
}

/// Where a probe pod is, as far as fleet cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbePodState {
    /// Still being scheduled, pulled or started.
    Starting,
    /// Running and Ready: the probe can run.
    Ready,
    /// The scheduler left it Pending (`PodScheduled=False`, `Unschedulable`), with its message.
    Unschedulable { message: String },
    /// It cannot start or ended before the probe ran (image pull back-off, crash, Failed).
    Failed { message: String },
    /// Deleted or being deleted (by someone else: the node went, an eviction).
    Gone,
}

/// Waiting reasons that do not go away by waiting.
const STUCK: [&str; 6] = [
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The state of a probe pod (pure; `None`: the pod does not exist).
pub fn probe_pod_state(pod: Option<&Pod>) -> ProbePodState {
    let Some(pod) = pod else {
        return ProbePodState::Gone;
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return ProbePodState::Gone;
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if matches!(phase, "Failed" | "Succeeded") {
        let why = status
            .and_then(|s| s.message.clone().or_else(|| s.reason.clone()))
            .unwrap_or_else(|| "its container ended".to_owned());
        return ProbePodState::Failed {
            message: format!("the probe pod is {phase} before the probe ran: {why}"),
        };
    }
    for (container, reason) in crate::decide::waiting_reasons(pod) {
        if STUCK.contains(&reason.as_str()) {
            return ProbePodState::Failed {
                message: format!("container {container} is waiting: {reason}"),
            };
        }
    }
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    if let Some(c) = conditions.iter().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    }) {
        return ProbePodState::Unschedulable {
            message: c.message.clone().unwrap_or_default(),
        };
    }
    if crate::decide::pod_ready(pod) {
        ProbePodState::Ready
    } else {
        ProbePodState::Starting
    }
}

/// The wait predicate: the pod's turn can go on (it is Ready) or has ended.
pub fn settled(pod: Option<&Pod>) -> bool {
    probe_pod_state(pod) != ProbePodState::Starting
}

/// A card that was not checked, with its reason.
pub fn not_checked(mut card: FleetCard, why: NotChecked, reason: String) -> FleetCard {
    card.outcome = CardOutcome::NotChecked;
    card.not_checked = Some(why);
    card.reason = reason;
    card
}

/// The card's outcome from what `gpu-probe all -o json` printed: verified or failed by
/// lab-report's judge over the report, not checked when there is no report to judge.
pub fn judge_output(mut card: FleetCard, stdout: &str, exit_code: Option<i32>) -> FleetCard {
    let report: Report = match serde_json::from_str(stdout) {
        Ok(r) => r,
        Err(e) => {
            let first = stdout
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>();
            let message = format!(
                "gpu-probe (exit {}) printed no report that parses ({e}){}",
                exit_code.map_or("unknown".to_owned(), |c| c.to_string()),
                if first.is_empty() {
                    String::new()
                } else {
                    format!(": {first}")
                }
            );
            return not_checked(
                card,
                NotChecked::NoReport {
                    message: message.clone(),
                },
                message,
            );
        }
    };
    card.judge(&report);
    card
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::h200;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn card(slice: u64) -> FleetCard {
        FleetCard {
            // The card the real H200 report was taken on.
            uuid: "GPU-e0628ec7-253e-9593-877b-faac7911234e".into(),
            memory_mib: 81559,
            slice_mib: slice,
            ..FleetCard::default()
        }
    }

    #[test]
    fn states_of_a_probe_pod() {
        assert_eq!(probe_pod_state(None), ProbePodState::Gone);
        let starting = pod(json!({"metadata": {"name": "p"}, "status": {"phase": "Pending"}}));
        assert_eq!(probe_pod_state(Some(&starting)), ProbePodState::Starting);
        assert!(!settled(Some(&starting)));
        let ready = pod(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(probe_pod_state(Some(&ready)), ProbePodState::Ready);
        let unsched = pod(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/3 nodes are available"}]}}),
        );
        assert_eq!(
            probe_pod_state(Some(&unsched)),
            ProbePodState::Unschedulable {
                message: "0/3 nodes are available".into()
            }
        );
        let backoff = pod(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
            "containerStatuses": [{"name": "probe", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
              "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}}),
        );
        assert!(
            matches!(probe_pod_state(Some(&backoff)), ProbePodState::Failed { message } if message.contains("ImagePullBackOff"))
        );
        let deleting =
            pod(json!({"metadata": {"name": "p", "deletionTimestamp": "2026-12-01T10:00:00Z"}}));
        assert_eq!(probe_pod_state(Some(&deleting)), ProbePodState::Gone);
        let ended = pod(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Failed", "reason": "DeadlineExceeded"}}),
        );
        assert!(
            matches!(probe_pod_state(Some(&ended)), ProbePodState::Failed { message } if message.contains("DeadlineExceeded"))
        );
    }

    #[test]
    fn a_real_h200_report_under_hami_core_verifies_its_slice() {
        let c = judge_output(card(8000), &h200("h1-8000.json"), Some(0));
        assert_eq!(c.outcome, CardOutcome::Verified, "{}", c.reason);
        assert_eq!(c.probe_verdict.as_deref(), Some("verified"));
        assert!(c.cap_mib.is_some_and(|m| m <= 8000), "{:?}", c.cap_mib);
    }

    #[test]
    fn the_same_report_fails_a_card_given_another_slice() {
        let c = judge_output(card(1000), &h200("h1-8000.json"), Some(0));
        assert_eq!(c.outcome, CardOutcome::Failed);
        assert!(c.reason.contains("1000 MiB"), "{}", c.reason);
    }

    #[test]
    fn the_report_of_another_card_verifies_nothing() {
        let mut other = card(8000);
        other.uuid = "GPU-3448387e-9840-f423-9016-6f8e6b30693c".into();
        let c = judge_output(other, &h200("h1-8000.json"), Some(0));
        assert_eq!(c.outcome, CardOutcome::Failed);
        assert!(
            c.reason.contains("is the report of card GPU-e0628ec7"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn a_bare_card_fails_and_garbage_is_no_report() {
        let c = judge_output(card(8000), &h200("h2-bare.json"), Some(1));
        assert_eq!(c.outcome, CardOutcome::Failed, "{}", c.reason);
        let c = judge_output(card(8000), "exec: gpu-probe: not found", Some(127));
        assert_eq!(c.outcome, CardOutcome::NotChecked);
        assert!(matches!(c.not_checked, Some(NotChecked::NoReport { .. })));
        assert!(c.reason.contains("exit 127"), "{}", c.reason);
    }
}
