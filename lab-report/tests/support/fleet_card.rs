//! A fleet card judged from a real gpu-probe report (`lab-report/tests/data/h200`), as the fleet
//! run judges it: the card is what the report's device 0 shows (UUID, model), its outcome
//! `FleetCard::judge`'s. Shared by the fleet tests of lab-report (`openmetrics.rs`), cluster-ctl
//! (`pushgateway.rs`) and evidence-pack (`common/fleet.rs`), which include this file by path.

use lab_report::fleet::FleetCard;
use lab_report::probe::Report;

/// The H200 card of `report` (file `file`, kept as `probe/<file>`), index `index`, judged
/// against `slice_mib`.
pub fn judged(report: &Report, file: &str, index: u32, slice_mib: u64) -> FleetCard {
    let device = &report.view.as_ref().expect("a report with a view").devices[0];
    let mut card = FleetCard {
        uuid: device.uuid.clone().expect("device 0's UUID"),
        index,
        model: device.name.clone().expect("device 0's name"),
        memory_mib: 143_771,
        slice_mib,
        probe_report: Some(format!("probe/{file}")),
        ..FleetCard::default()
    };
    card.judge(report);
    card
}
