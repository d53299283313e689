//! The bypass rows measured on the H200 (`tests/data/bypass`, see its README): every row is in
//! every revision's audit, its outcome follows from its own numbers, the region tamper wrote and
//! restored what it says, the conformance reports of the same revisions agree with the audits, the
//! bare card escapes everywhere, and lab-report's judge reaches the same verdict per row.

use std::path::PathBuf;

use gpu_probe::bypass::{self, ROWS};
use gpu_probe::report::{AuditGroup, AuditOutcome, AuditPath, MIB, Report};
use gpu_probe::report_conformance::CellOutcome;

const REVISIONS: [&str; 4] = ["8f3a89c", "5091a2f", "ecbf908", "c0f9da6"];
const SLICE: u64 = 8000 * MIB;

fn load(rel: &str) -> Report {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e})", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn row<'a>(paths: &'a [AuditPath], key: &str) -> &'a AuditPath {
    paths
        .iter()
        .find(|p| p.bypass.as_ref().is_some_and(|d| d.row == key))
        .unwrap_or_else(|| panic!("row {key} missing"))
}

/// A child killed at its bound (the cleared-environment child of the two older revisions, see
/// the README): recorded without an outcome.
fn killed(p: &AuditPath) -> bool {
    p.outcome == AuditOutcome::NotApplicable && p.note.contains("did not finish within")
}

#[test]
fn every_revision_has_every_row_and_each_outcome_follows_from_its_numbers() {
    for rev in REVISIONS {
        let r = load(&format!("bypass/{rev}-audit-8000.json"));
        let a = r.audit.as_ref().expect("audit");
        assert_eq!(a.slice_bytes, Some(SLICE), "{rev}");
        for def in ROWS {
            let p = row(&a.paths, def.key);
            assert_eq!(p.path, def.path);
            assert_eq!(p.group, AuditGroup::Bypass);
            let d = p.bypass.as_ref().expect("detail");
            assert_ne!(d.freed, Some(false), "{rev} {}: memory not back", def.key);
            match p.outcome {
                AuditOutcome::Escaped => {
                    assert!(p.held_bytes > SLICE, "{rev} {}", def.key);
                    assert_eq!(p.past_slice_bytes, p.held_bytes - SLICE);
                }
                AuditOutcome::Capped => {
                    assert!(p.held_bytes <= SLICE, "{rev} {}", def.key);
                    assert!(p.refusal.is_some(), "{rev} {}", def.key);
                }
                AuditOutcome::NotApplicable => {
                    assert!(killed(p), "{rev} {}: {}", def.key, p.note);
                }
                o => panic!("{rev} {}: {o:?} {}", def.key, p.note),
            }
            // The judge reads the same from the numbers.
            let judged = lab_report::judge::audit_row(p, SLICE);
            assert_eq!(
                matches!(judged, lab_report::judge::Row::Escaped { .. }),
                p.outcome == AuditOutcome::Escaped,
                "{rev} {}",
                def.key
            );
        }
    }
}

#[test]
fn the_region_tamper_raised_the_limit_was_granted_more_and_restored_it() {
    for rev in REVISIONS {
        let r = load(&format!("bypass/{rev}-audit-8000.json"));
        let a = r.audit.as_ref().expect("audit");
        let p = row(&a.paths, bypass::REGION_TAMPER);
        let d = p.bypass.as_ref().expect("detail");
        assert_eq!(p.outcome, AuditOutcome::Escaped, "{rev}");
        let before = d.held_before_bytes.expect("held before");
        assert!(before <= SLICE, "{rev}: refused at the slice first");
        assert!(d.refused_before.is_some(), "{rev}");
        assert_eq!(d.region_limit_before_bytes, Some(SLICE));
        let written = d.region_limit_written_bytes.expect("written");
        assert_eq!(written, 32_000 * MIB);
        assert_eq!(
            d.mem_info_after.map(|m| m.total),
            Some(written),
            "{rev}: cuMemGetInfo_v2 reports the written limit"
        );
        assert!(p.held_bytes > before, "{rev}: granted more after the write");
        assert_eq!(d.region_restored, Some(true), "{rev}");
        assert!(
            d.log_lines.iter().any(|l| l.contains("OOM")),
            "{rev}: HAMi-core's refusal before the write"
        );
    }
}

#[test]
fn the_env_less_first_writer_leaves_no_limit_and_the_later_process_is_told() {
    for rev in REVISIONS {
        let r = load(&format!("bypass/{rev}-audit-8000.json"));
        let p = row(
            &r.audit.as_ref().expect("audit").paths,
            bypass::ENV_LESS_FIRST_WRITER,
        );
        let d = p.bypass.as_ref().expect("detail");
        assert_eq!(p.outcome, AuditOutcome::Escaped, "{rev}");
        assert_eq!(d.region_limit_before_bytes, Some(0), "{rev}");
        assert!(
            d.log_lines
                .iter()
                .any(|l| l.starts_with("second process:") && l.contains("Limit inconsistency")),
            "{rev}: {:?}",
            d.log_lines
        );
    }
}

#[test]
fn lookups_past_the_interposer_reach_libcuda_and_cu_get_proc_address_reaches_hami_core() {
    for rev in REVISIONS {
        let r = load(&format!("bypass/{rev}-audit-8000.json"));
        let paths = &r.audit.as_ref().expect("audit").paths;
        let object = |key: &str| {
            row(paths, key)
                .bypass
                .as_ref()
                .and_then(|d| d.resolved_in.iter().find(|s| s.name == "cuMemAlloc_v2"))
                .and_then(|s| s.object.clone())
                .unwrap_or_default()
        };
        for key in [bypass::DLMOPEN, bypass::LIBC_DLSYM] {
            assert!(object(key).contains("libcuda.so"), "{rev} {key}");
            assert_eq!(
                row(paths, key).outcome,
                AuditOutcome::Escaped,
                "{rev} {key}"
            );
        }
        assert!(object(bypass::PROC_ADDRESS).contains("libvgpu"), "{rev}");
        assert_eq!(
            row(paths, bypass::PROC_ADDRESS).outcome,
            AuditOutcome::Capped,
            "{rev}"
        );
        // The dlmopen row also shows where the program's own dlsym would have sent it.
        let d = row(paths, bypass::DLMOPEN).bypass.clone().expect("detail");
        assert!(
            d.resolved_in
                .iter()
                .any(|s| s.name.contains("program's dlsym")
                    && s.object.as_deref().is_some_and(|o| o.contains("libvgpu"))),
            "{rev}: {:?}",
            d.resolved_in
        );
        let s = row(paths, bypass::STATIC_CUDART);
        assert_eq!(s.outcome, AuditOutcome::Capped, "{rev}");
        assert!(
            s.note.contains("libcudart.so not mapped"),
            "{rev}: {}",
            s.note
        );
    }
}

#[test]
fn the_conformance_reports_agree_with_the_audits_row_by_row() {
    for rev in REVISIONS {
        let audit = load(&format!("bypass/{rev}-audit-8000.json"));
        let conf = load(&format!("conformance/{rev}-1gpu.json"));
        let cells = &conf.conformance.as_ref().expect("conformance").cells;
        for def in ROWS {
            let p = row(&audit.audit.as_ref().expect("audit").paths, def.key);
            let cell = cells
                .iter()
                .find(|c| c.id == format!("bypass.{}", def.key))
                .unwrap_or_else(|| panic!("{rev}: cell bypass.{}", def.key));
            let want = match p.outcome {
                AuditOutcome::Escaped => CellOutcome::Escaped,
                AuditOutcome::Capped => CellOutcome::Capped,
                _ => CellOutcome::NotApplicable,
            };
            assert_eq!(cell.outcome, want, "{rev} {}", def.key);
        }
    }
}

#[test]
fn on_the_bare_card_every_bypass_escapes_and_the_tamper_has_no_region() {
    let r = load("bypass/bare-audit-8000.json");
    let a = r.audit.as_ref().expect("audit");
    for def in ROWS {
        let p = row(&a.paths, def.key);
        if def.key == bypass::REGION_TAMPER {
            assert_eq!(p.outcome, AuditOutcome::NotApplicable);
            assert!(p.note.contains("CUDA_DEVICE_MEMORY_SHARED_CACHE"));
        } else {
            assert_eq!(p.outcome, AuditOutcome::Escaped, "{}", def.key);
            assert_eq!(p.held_bytes, a.target_bytes, "{}", def.key);
        }
    }
}
