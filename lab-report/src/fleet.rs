//! `fleet.json`: what `cluster-ctl fleet --out DIR` writes and evidence-pack reads (schema
//! `hami-isolation-lab/fleet` v1): every card HAMi registered, per node, with the slice its probe
//! pod was given and what the probe showed, and the judgement of each card from its probe report.
//!
//! A card is [`CardOutcome::Verified`] only when its probe report (a file beside `fleet.json`)
//! shows it held to the slice — [`judge_card`] decides, cluster-ctl and evidence-pack both call it
//! — [`CardOutcome::Failed`] when the report shows otherwise, and [`CardOutcome::NotChecked`] with
//! a typed reason when no probe could run (never a pass by default).

use serde::{Deserialize, Serialize};

use crate::MIB;
use crate::judge;
use crate::probe::Report;

/// Identifies the document type.
pub const SCHEMA: &str = "hami-isolation-lab/fleet";
/// Bumped on any incompatible change to [`FleetReport`].
pub const SCHEMA_VERSION: u32 = 1;

/// The slice a card's probe pod asks for unless `--slice-mib` says otherwise: the smaller of
/// 1000 MiB and 10 % of the card, so the probe fits beside tenants on a busy card.
pub fn default_slice_mib(card_mib: u64) -> u64 {
    (card_mib / 10).min(1000)
}

/// The whole fleet run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetReport {
    pub schema: String,
    pub schema_version: u32,
    /// `cluster-ctl` version that wrote it.
    #[serde(default)]
    pub tool_version: String,
    /// Unix seconds when the run started.
    pub started_unix: u64,
    /// Wall seconds of the whole run.
    pub duration_s: f64,
    /// The API server's address and version, as cluster-ctl saw them.
    #[serde(default)]
    pub server: String,
    #[serde(default)]
    pub server_version: String,
    pub parameters: FleetParameters,
    pub nodes: Vec<FleetNode>,
    /// Counted from `nodes` by [`FleetReport::totals`]; kept for readers without this crate.
    pub totals: FleetTotals,
}

/// What the run was asked to do.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetParameters {
    /// `--slice-mib`; absent: [`default_slice_mib`] per card.
    #[serde(default)]
    pub slice_mib: Option<u64>,
    pub parallel: u32,
    #[serde(default)]
    pub node_selector: Option<String>,
    /// `--nodes`: only these (empty: every node HAMi registered).
    #[serde(default)]
    pub nodes: Vec<String>,
    pub card_deadline_s: u64,
    pub total_deadline_s: u64,
    #[serde(default)]
    pub allow_unchecked: bool,
    /// The probe pods' image.
    #[serde(default)]
    pub image: String,
    pub namespace: String,
}

/// One node of the cluster that HAMi registered (or that `--nodes` named).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetNode {
    pub name: String,
    /// The node's Ready condition was True at discovery.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    #[serde(default)]
    pub cordoned: bool,
    /// HAMi's version as the node shows it (the device plugin's image tag or a node label).
    #[serde(default)]
    pub hami_version: Option<String>,
    /// Which format `hami.io/node-nvidia-register` was written in (`json`, `legacy`).
    #[serde(default)]
    pub register_format: Option<String>,
    /// Why the registration could not be read (the node's cards are then unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_error: Option<String>,
    pub cards: Vec<FleetCard>,
}

/// One card and what its probe showed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetCard {
    pub uuid: String,
    /// The card's index among the node's registered cards.
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub model: String,
    /// The card's memory as HAMi registered it.
    pub memory_mib: u64,
    /// The slice the probe pod asked for.
    pub slice_mib: u64,
    pub outcome: CardOutcome,
    /// Set when `outcome` is `not-checked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_checked: Option<NotChecked>,
    /// For people: the judge's sentence, or what kept the card from being checked.
    pub reason: String,
    /// The probe pod's name.
    #[serde(default)]
    pub pod: Option<String>,
    /// The probe's JSON report, relative to the folder of `fleet.json`.
    #[serde(default)]
    pub probe_report: Option<String>,
    /// The cap boundary the probe measured (the most it held before a refusal).
    #[serde(default)]
    pub cap_mib: Option<u64>,
    /// The probe's own verdict word (`verified`, `not-verified`, …).
    #[serde(default)]
    pub probe_verdict: Option<String>,
    /// Seconds from pod creation to the probe's report.
    #[serde(default)]
    pub duration_s: f64,
}

impl FleetCard {
    /// Takes what `report` (this card's probe report) shows: the outcome and reason from
    /// [`judge_card_of`], the cap boundary and the probe's own verdict word; no longer not checked.
    pub fn judge(&mut self, report: &Report) {
        self.cap_mib = cap_mib(report);
        self.probe_verdict = serde_json::to_value(report.verdict.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        (self.outcome, self.reason) = match judge_card_of(report, &self.uuid, self.slice_mib) {
            Ok(why) => (CardOutcome::Verified, why),
            Err(why) => (CardOutcome::Failed, why),
        };
        self.not_checked = None;
    }
}

/// `verified` | `failed` | `not-checked`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CardOutcome {
    /// The probe report shows the card held to its slice.
    Verified,
    /// The probe report shows it was not (view larger than the slice, held more, no HAMi-core).
    Failed,
    /// No probe result to judge; [`NotChecked`] says why.
    #[default]
    NotChecked,
}

/// Why a card was not checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum NotChecked {
    /// The node's Ready condition is not True.
    NodeNotReady,
    /// The node is cordoned (`spec.unschedulable`).
    NodeCordoned,
    /// The node's `hami.io/node-nvidia-register` annotation could not be read.
    AnnotationUnreadable,
    /// Less free on the card than the slice (what HAMi's annotations show booked).
    CardBusy { free_mib: u64 },
    /// The scheduler left the pod Pending; `event` is its FailedScheduling message.
    Unschedulable { event: String },
    /// The probe did not report within the per-card deadline.
    ProbeTimedOut { after_s: u64 },
    /// The pod failed before the probe reported (image pull, crash), with what Kubernetes said.
    PodFailed { message: String },
    /// The probe ran but gave no report that could be read.
    NoReport { message: String },
    /// The node disappeared during the run.
    NodeGone,
    /// The total deadline passed, or the run was interrupted, before this card's turn ended.
    RunStopped { why: String },
}

impl NotChecked {
    /// A short phrase for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NodeNotReady => "node not ready",
            Self::NodeCordoned => "node cordoned",
            Self::AnnotationUnreadable => "registration unreadable",
            Self::CardBusy { .. } => "card busy",
            Self::Unschedulable { .. } => "unschedulable",
            Self::ProbeTimedOut { .. } => "probe timed out",
            Self::PodFailed { .. } => "pod failed",
            Self::NoReport { .. } => "no report",
            Self::NodeGone => "node gone",
            Self::RunStopped { .. } => "run stopped",
        }
    }
}

/// How many cards ended each way.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct FleetTotals {
    pub nodes: u32,
    pub cards: u32,
    pub verified: u32,
    pub failed: u32,
    pub not_checked: u32,
}

impl FleetReport {
    /// The counts, from the cards themselves.
    pub fn totals(&self) -> FleetTotals {
        let mut t = FleetTotals {
            nodes: u32::try_from(self.nodes.len()).unwrap_or(u32::MAX),
            ..FleetTotals::default()
        };
        for card in self.nodes.iter().flat_map(|n| &n.cards) {
            t.cards += 1;
            match card.outcome {
                CardOutcome::Verified => t.verified += 1,
                CardOutcome::Failed => t.failed += 1,
                CardOutcome::NotChecked => t.not_checked += 1,
            }
        }
        t
    }

    /// The exit code the run ends with: 0 when every card was verified (cards not checked are
    /// tolerated only with `--allow-unchecked`), 1 otherwise. A fleet with no card at all is not
    /// verified either: nothing was shown.
    pub fn exit_code(&self) -> u8 {
        let t = self.totals();
        let unchecked_ok = self.parameters.allow_unchecked || t.not_checked == 0;
        if t.cards == 0 || t.failed > 0 || !unchecked_ok || t.verified == 0 {
            1
        } else {
            0
        }
    }
}

/// The judgement of one card from its probe report: `Ok(why)` when the report expects exactly
/// `slice_mib` on device 0 and its view, cap and mechanism are held to it (the same rules as
/// E2/E3 and E5); `Err(why)` otherwise.
pub fn judge_card(report: &Report, slice_mib: u64) -> Result<String, String> {
    let slice = slice_mib * MIB;
    let slices = judge::expected_slices(report);
    match slices.as_slice() {
        [(0, bytes)] if *bytes == slice => {}
        [] => {
            return Err("the probe expected no slice: nothing to hold its numbers against".into());
        }
        other => {
            return Err(format!(
                "the probe expected {other:?} (device, bytes), not {slice_mib} MiB on device 0"
            ));
        }
    }
    let view = judge::view(report, 0, slice)?;
    let cap = judge::cap(report, 0, slice)?;
    let mechanism = judge::mechanism(report, &slices)?;
    Ok(format!("{view}; {cap}; {mechanism}"))
}

/// [`judge_card`] for the card `uuid`: the report must also be that card's (its device 0 shows
/// that UUID), so a report of another card, or one that shows none, verifies nothing.
pub fn judge_card_of(report: &Report, uuid: &str, slice_mib: u64) -> Result<String, String> {
    let seen = report
        .view
        .as_ref()
        .and_then(|v| v.devices.iter().find(|d| d.index == 0))
        .and_then(|d| d.uuid.as_deref());
    match seen {
        Some(u) if u == uuid => judge_card(report, slice_mib),
        Some(u) => Err(format!("is the report of card {u}, not of {uuid}")),
        None => Err(format!(
            "shows no GPU UUID on device 0, so it cannot be tied to card {uuid}"
        )),
    }
}

/// The cap boundary a report measured on device 0, in MiB.
pub fn cap_mib(report: &Report) -> Option<u64> {
    report
        .cap
        .as_ref()?
        .devices
        .iter()
        .find(|d| d.index == 0)
        .map(|d| d.held_bytes / MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(outcome: CardOutcome) -> FleetCard {
        FleetCard {
            outcome,
            ..FleetCard::default()
        }
    }

    fn fleet(cards: Vec<FleetCard>, allow_unchecked: bool) -> FleetReport {
        FleetReport {
            schema: SCHEMA.into(),
            schema_version: SCHEMA_VERSION,
            tool_version: String::new(),
            started_unix: 0,
            duration_s: 0.0,
            server: String::new(),
            server_version: String::new(),
            parameters: FleetParameters {
                allow_unchecked,
                ..FleetParameters::default()
            },
            nodes: vec![FleetNode {
                name: "n1".into(),
                cards,
                ..FleetNode::default()
            }],
            totals: FleetTotals::default(),
        }
    }

    #[test]
    fn the_default_slice_is_the_smaller_of_1000_mib_and_a_tenth() {
        assert_eq!(default_slice_mib(81_559), 1000);
        assert_eq!(default_slice_mib(8_000), 800);
        assert_eq!(default_slice_mib(0), 0);
    }

    #[test]
    fn exit_code_needs_every_card_verified_unless_unchecked_is_allowed() {
        use CardOutcome::*;
        assert_eq!(
            fleet(vec![card(Verified), card(Verified)], false).exit_code(),
            0
        );
        assert_eq!(
            fleet(vec![card(Verified), card(Failed)], true).exit_code(),
            1
        );
        assert_eq!(
            fleet(vec![card(Verified), card(NotChecked)], false).exit_code(),
            1
        );
        assert_eq!(
            fleet(vec![card(Verified), card(NotChecked)], true).exit_code(),
            0
        );
        // Nothing verified proves nothing, allowed or not.
        assert_eq!(fleet(vec![card(NotChecked)], true).exit_code(), 1);
        assert_eq!(fleet(vec![], true).exit_code(), 1);
        let t = fleet(vec![card(Verified), card(Failed), card(NotChecked)], false).totals();
        assert_eq!((t.cards, t.verified, t.failed, t.not_checked), (3, 1, 1, 1));
    }

    #[test]
    fn not_checked_reasons_are_tagged_in_json() {
        let v = serde_json::to_value(NotChecked::CardBusy { free_mib: 12 }).unwrap();
        assert_eq!(v, serde_json::json!({"kind": "card-busy", "free_mib": 12}));
        let back: NotChecked = serde_json::from_value(v).unwrap();
        assert_eq!(back.label(), "card busy");
    }
}
