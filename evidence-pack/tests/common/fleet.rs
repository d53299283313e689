//! Fleet folders as `cluster-ctl fleet --out DIR` writes them, built from real gpu-probe reports
//! (`lab-report/tests/data/h200/README.md`): each card's outcome is what
//! `lab_report::fleet::judge_card` says of its report, never written by hand.

#[path = "../../../lab-report/tests/support/fleet_card.rs"]
mod fleet_card;

use std::path::Path;

use lab_report::fleet::{
    CardOutcome, FleetCard, FleetNode, FleetParameters, FleetReport, NotChecked, SCHEMA,
    SCHEMA_VERSION,
};
use lab_report::probe::Report;

pub fn lab(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lab-report/tests/data/h200")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn report(name: &str) -> Report {
    serde_json::from_slice(&lab(name)).unwrap()
}

/// A card judged from its real report, copied to `dir/probe/<name>`, as the fleet run does.
pub fn probed(dir: &Path, name: &str, index: u32, slice_mib: u64) -> FleetCard {
    std::fs::create_dir_all(dir.join("probe")).unwrap();
    std::fs::write(dir.join("probe").join(name), lab(name)).unwrap();
    FleetCard {
        pod: Some(format!("hami-fleet-probe-{index}")),
        duration_s: 21.5,
        ..fleet_card::judged(&report(name), name, index, slice_mib)
    }
}

pub fn node(name: &str, cards: Vec<FleetCard>) -> FleetNode {
    FleetNode {
        name: name.into(),
        ready: true,
        hami_version: Some("v2.6.1".into()),
        register_format: Some("json".into()),
        cards,
        ..FleetNode::default()
    }
}

pub fn write_fleet(dir: &Path, nodes: Vec<FleetNode>) -> FleetReport {
    let mut fleet = FleetReport {
        schema: SCHEMA.into(),
        schema_version: SCHEMA_VERSION,
        tool_version: "0.1.0".into(),
        started_unix: 1_782_950_000,
        duration_s: 64.0,
        server: "https://10.0.0.1:6443".into(),
        server_version: "v1.33.5+k3s1".into(),
        parameters: FleetParameters {
            parallel: 8,
            card_deadline_s: 300,
            total_deadline_s: 1800,
            namespace: "hami-isolation-lab".into(),
            ..FleetParameters::default()
        },
        nodes,
        totals: lab_report::fleet::FleetTotals::default(),
    };
    fleet.totals = fleet.totals();
    std::fs::write(
        dir.join("fleet.json"),
        serde_json::to_vec_pretty(&fleet).unwrap(),
    )
    .unwrap();
    fleet
}

/// Two nodes, each card verified by its real report.
pub fn verified_fleet(dir: &Path) -> FleetReport {
    let a = probed(dir, "h1-8000.json", 0, 8000);
    let b = probed(dir, "h1-1024.json", 0, 1024);
    write_fleet(dir, vec![node("h200-a", vec![a]), node("h200-b", vec![b])])
}

/// A verified card, a busy card not checked, and the bare card (failed).
pub fn mixed_fleet(dir: &Path) -> FleetReport {
    let verified = probed(dir, "h1-8000.json", 0, 8000);
    let second = report("h7-two.json").view.unwrap().devices[1].clone();
    let busy = FleetCard {
        uuid: second.uuid.unwrap(),
        index: 1,
        model: second.name.unwrap(),
        memory_mib: 143_771,
        slice_mib: 8000,
        outcome: CardOutcome::NotChecked,
        not_checked: Some(NotChecked::CardBusy { free_mib: 512 }),
        reason: "512 MiB free on the card, the slice is 8000 MiB".into(),
        ..FleetCard::default()
    };
    let bare = probed(dir, "h2-bare.json", 0, 8000);
    write_fleet(
        dir,
        vec![
            node("h200-hami", vec![verified, busy]),
            node("h200-bare", vec![bare]),
        ],
    )
}

/// Edits `fleet.json` in `dir`.
pub fn edit_fleet(dir: &Path, edit: impl FnOnce(&mut FleetReport)) {
    let path = dir.join("fleet.json");
    let mut fleet: FleetReport = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut fleet);
    std::fs::write(&path, serde_json::to_vec_pretty(&fleet).unwrap()).unwrap();
}
