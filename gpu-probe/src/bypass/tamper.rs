//! The region tamper: the ONE place in gpu-probe that writes a HAMi-core shared region.
//!
//! Everything else in the probe reads the region read-only (`region`), and the probe never
//! registers a slot of its own. This row is the documented exception, and it is confined:
//! - it runs only in the `region-tamper` bypass child, on the file that child's own
//!   `CUDA_DEVICE_MEMORY_SHARED_CACHE` names (never a default path, never another file);
//! - it writes only the 8 bytes of one device's limit, and only when they hold the value it read
//!   (a compare before the write);
//! - it writes the original bytes back before freeing anything, and reads them back to check;
//!   the parent checks again after the child ended and writes them back if the child could not.
//!
//! What it shows: a process that was refused at its slice raises the limit HAMi-core reads on
//! every allocation (`oom_check` → `get_current_device_memory_limit`, the region's `limit[dev]`,
//! in every revision measured), and is then granted more.

use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::driver::{Driver, Lookup};
use super::{ChildRun, ChildSpec};
use crate::cap::{self, SearchParams};
use crate::report::{MIB, mib};

/// The variable that names the region (HAMi's device plugin sets it in every container).
pub const SHARED_CACHE_VAR: &str = "CUDA_DEVICE_MEMORY_SHARED_CACHE";

/// Reads device `device`'s limit straight from the file (8 bytes at its offset).
pub fn read_limit(path: &Path, device: u32) -> Result<u64, String> {
    let off = crate::region::limit_offset(device)
        .ok_or_else(|| format!("device {device} is beyond the region's 16 devices"))?;
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(u64::from_le_bytes(b))
}

/// Writes `value` as device `device`'s limit, only when the file holds `expect` there, and reads
/// it back. The only write to a region in gpu-probe (see the module's doc).
pub fn swap_limit(path: &Path, device: u32, expect: u64, value: u64) -> Result<(), String> {
    let off = crate::region::limit_offset(device)
        .ok_or_else(|| format!("device {device} is beyond the region's 16 devices"))?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {} for writing: {e}", path.display()))?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let found = u64::from_le_bytes(b);
    if found != expect {
        return Err(format!(
            "the limit there is {found}, not the {expect} read before: not written"
        ));
    }
    f.write_all_at(&value.to_le_bytes(), off)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.read_exact_at(&mut b, off)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if u64::from_le_bytes(b) == value {
        Ok(())
    } else {
        Err("the value read back differs from the value written".into())
    }
}

fn m(b: u64) -> String {
    format!("{:.0} MiB", mib(b))
}

/// The child: hold up to the target (refused at the slice), raise the region's limit, hold
/// more, write the limit back, free everything.
pub fn run(spec: &ChildSpec) -> ChildRun {
    let started = Instant::now();
    let mut run = ChildRun::new(&spec.row);
    let Some(path) = std::env::var_os(SHARED_CACHE_VAR) else {
        run.not_applicable = Some(format!(
            "{SHARED_CACHE_VAR} is not set: the row writes only a region its own environment names"
        ));
        return run;
    };
    let path = std::path::PathBuf::from(path);
    let driver = match Driver::open(Lookup::Program, spec.device) {
        Ok(d) => d,
        Err(e) => {
            run.not_applicable = Some(format!("the driver could not be opened: {e}"));
            return run;
        }
    };
    run.detail.resolved_in.clone_from(&driver.resolved);
    if let Err(e) = driver.start() {
        run.not_applicable = Some(format!("CUDA did not start: {e}"));
        return run;
    }
    let start = driver.mem_info();
    // HAMi-core made the region at cuInit; without one nothing intercepts here.
    let original = match crate::region::read_region(&path) {
        Ok(r) => match r.limits.get(spec.device as usize).copied() {
            Some(0) => {
                run.not_applicable = Some(format!(
                    "the region {} sets no limit on device {}: nothing to raise",
                    path.display(),
                    spec.device
                ));
                driver.stop();
                return run;
            }
            Some(l) => l,
            None => {
                run.not_applicable = Some(format!(
                    "the region {} has {} device(s), not device {}",
                    path.display(),
                    r.device_num,
                    spec.device
                ));
                driver.stop();
                return run;
            }
        },
        Err(e) => {
            run.not_applicable = Some(format!(
                "no HAMi-core region to tamper with after cuInit ({e})"
            ));
            driver.stop();
            return run;
        }
    };
    run.detail.region_limit_before_bytes = Some(original);
    let params = |ceiling: u64| SearchParams {
        ceiling,
        resolution: 64 * MIB,
        initial_step: 1024 * MIB,
        time_bound: Duration::from_millis(spec.time_bound_ms) / 2,
        any_error_is_refusal: false,
    };
    let mut mem = &driver;
    let before = cap::search(&mut mem, params(spec.target_bytes), |_| {});
    run.detail.held_before_bytes = Some(before.held);
    run.detail.refused_before.clone_from(&before.first_refusal);
    run.detail.steps.push(format!(
        "held {} with cuMemAlloc_v2 (limit {} in {}), then {}",
        m(before.held),
        m(original),
        path.display(),
        before.first_refusal.as_ref().map_or_else(
            || "was not refused".to_owned(),
            |r| format!("was refused with {} ({})", r.name, r.code)
        )
    ));
    let raised = original.saturating_mul(4).max(spec.target_bytes * 2);
    let mut after = None;
    match swap_limit(&path, spec.device, original, raised) {
        Ok(()) => {
            run.detail.region_limit_written_bytes = Some(raised);
            run.detail.steps.push(format!(
                "wrote {raised} ({}) over the device's limit in its own region file",
                m(raised)
            ));
            run.detail.mem_info_after = driver.mem_info();
            if let Some(i) = run.detail.mem_info_after {
                run.detail.steps.push(format!(
                    "cuMemGetInfo_v2 then said total {}, free {}",
                    m(i.total),
                    m(i.free)
                ));
            }
            let more = cap::search(
                &mut mem,
                params(spec.target_bytes.saturating_sub(before.held)),
                |_| {},
            );
            run.detail.steps.push(format!(
                "then held {} more ({} in all){}",
                m(more.held),
                m(before.held + more.held),
                more.first_refusal
                    .as_ref()
                    .map(|r| format!(", then refused with {} ({})", r.name, r.code))
                    .unwrap_or_default()
            ));
            // The original bytes go back before anything is freed.
            let restored = swap_limit(&path, spec.device, raised, original);
            run.detail.region_restored = Some(restored.is_ok());
            run.detail.steps.push(match &restored {
                Ok(()) => format!("wrote the original limit {original} back and read it back"),
                Err(e) => format!("could NOT write the original limit back: {e}"),
            });
            after = Some(more);
        }
        Err(e) => run
            .detail
            .steps
            .push(format!("the limit could not be written: {e}")),
    }
    let mut freed = cap::free_all(&mut mem, &before.handles);
    if let Some(more) = &after {
        freed &= cap::free_all(&mut mem, &more.handles);
    }
    let end = driver.mem_info();
    driver.stop();
    run.detail.freed = Some(freed && super::came_back(start, end));
    run.held_bytes = before.held + after.as_ref().map_or(0, |a| a.held);
    run.calls = u32::try_from(before.steps.len() + after.as_ref().map_or(0, |a| a.steps.len()))
        .unwrap_or(u32::MAX);
    // The refusal that counts is the one after the tamper (before it, the slice held).
    run.first_refusal = match &after {
        Some(a) => a.first_refusal.clone(),
        None => before.first_refusal.clone(),
    };
    run.unexpected = before
        .unexpected
        .clone()
        .or(after.and_then(|a| a.unexpected));
    run.detail.seconds = started.elapsed().as_secs_f64();
    run
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::hami_fixture_gz;

    #[test]
    fn the_limit_is_swapped_only_over_the_value_read_and_read_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("r.cache");
        let original = hami_fixture_gz("h100-hami-core/region-one-proc-5g.cache.gz");
        std::fs::write(&path, &original).expect("write");
        assert_eq!(read_limit(&path, 0), Ok(8_388_608_000));
        // A stale expectation writes nothing.
        let err = swap_limit(&path, 0, 1, 2).expect_err("stale");
        assert!(err.contains("not written"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), original);
        swap_limit(&path, 0, 8_388_608_000, 100 * 1024 * MIB).expect("swap");
        let r = crate::region::read_region(&path).expect("still a region");
        assert_eq!(r.limits, vec![100 * 1024 * MIB]);
        swap_limit(&path, 0, 100 * 1024 * MIB, 8_388_608_000).expect("restore");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            original,
            "byte for byte"
        );
        assert!(swap_limit(&path, 16, 0, 0).is_err(), "no 17th device");
        assert!(swap_limit(&dir.path().join("none"), 0, 0, 0).is_err());
    }

    #[test]
    fn without_the_variable_the_row_writes_nothing() {
        // The test process has no region variable (CI, a bare card).
        if std::env::var_os(SHARED_CACHE_VAR).is_some() {
            return;
        }
        let spec = ChildSpec {
            row: "region-tamper".into(),
            device: 0,
            target_bytes: MIB,
            time_bound_ms: 100,
            alarm_secs: None,
        };
        let r = run(&spec);
        assert!(
            r.not_applicable
                .as_deref()
                .is_some_and(|w| w.contains(SHARED_CACHE_VAR)),
            "{r:?}"
        );
        assert_eq!(r.held_bytes, 0);
    }
}
