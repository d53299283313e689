//! HAMi-core's shared region file (`CUDA_DEVICE_MEMORY_SHARED_CACHE`, default
//! `/tmp/cudevshr.cache`), read read-only.
//!
//! The region is what HAMi-core charges the container: one slot per CUDA process with its
//! per-device usage. Layout (x86_64, versions 1.1 and 1.2): shared/facts/hami.md §11. The probe
//! reads the file with plain reads, never maps it writable and never registers itself as a slot
//! (which HAMi's own `shrreg-tool` does). Writers bump a per-slot seqlock to odd while updating
//! (v1.2), so a slot seen odd is re-read. The one place that writes a region is the audit's
//! region-tamper bypass row (`bypass::tamper`), confined and restored as its doc says.

use std::path::Path;

use crate::report::{RegionProc, RegionUsage, SharedRegion};

pub const DEFAULT_PATH: &str = "/tmp/cudevshr.cache";
pub const MAGIC: i32 = 19_920_718;
pub const REGION_SIZE: usize = 2_008_952;
const MAX_DEVICES: usize = 16;
const MAX_PROCS: usize = 1024;
const UUID_LEN: usize = 96;
const OFF_UUIDS: usize = 64;
const OFF_LIMIT: usize = 1600;
const OFF_SM_LIMIT: usize = 1728;
const OFF_PROCS: usize = 1856;
const SLOT_SIZE: usize = 1960;
const OFF_PROC_NUM: usize = 2_008_896;
const SLOT_USED: usize = 8;
const USED_STRIDE: usize = 64;
const SLOT_STATUS: usize = 1928;
const SLOT_SEQLOCK: usize = 1936;
const READ_ATTEMPTS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error(
        "{path} does not exist (HAMi-core creates it when the first CUDA process of the container starts)"
    )]
    Missing { path: String },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path} is truncated: {len} bytes, a HAMi-core v1 region has at least {REGION_SIZE}")]
    Truncated { path: String, len: usize },
    #[error("{path} is not a HAMi-core shared region (magic {found}, expected {MAGIC})")]
    NotARegion { path: String, found: i32 },
    #[error("{path} has region version {major}.{minor}; this probe reads version 1.x only")]
    UnsupportedVersion {
        path: String,
        major: u32,
        minor: u32,
    },
    #[error("{path} is corrupt: {what}")]
    Corrupt { path: String, what: String },
}

/// Where device `device`'s limit (`u64`, bytes) lies in the file. This module never writes; the
/// region-tamper bypass row (`bypass::tamper`), the one documented writer, uses this offset.
pub fn limit_offset(device: u32) -> Option<u64> {
    let d = device as usize;
    (d < MAX_DEVICES).then(|| (OFF_LIMIT + d * 8) as u64)
}

/// Reads and parses the region at `path`, re-reading while a slot is mid-update.
pub fn read_region(path: &Path) -> Result<SharedRegion, RegionError> {
    let name = path.display().to_string();
    let mut last = None;
    for _ in 0..READ_ATTEMPTS {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RegionError::Missing { path: name.clone() },
            _ => RegionError::Unreadable {
                path: name.clone(),
                reason: e.to_string(),
            },
        })?;
        let region = parse_region(&name, &bytes)?;
        if region.torn_slots == 0 {
            return Ok(region);
        }
        last = Some(region);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // Still torn after every attempt: report the values with the torn count, not an error.
    last.ok_or_else(|| RegionError::Unreadable {
        path: name,
        reason: "no read succeeded".into(),
    })
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn i32_at(b: &[u8], off: usize) -> i32 {
    i32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Parses region bytes. `name` is used in errors only.
pub fn parse_region(name: &str, b: &[u8]) -> Result<SharedRegion, RegionError> {
    let path = name.to_owned();
    if b.len() < REGION_SIZE {
        return Err(RegionError::Truncated { path, len: b.len() });
    }
    let flag = i32_at(b, 0);
    if flag != MAGIC {
        return Err(RegionError::NotARegion { path, found: flag });
    }
    let (major, minor) = (u32_at(b, 4), u32_at(b, 8));
    if major != 1 {
        return Err(RegionError::UnsupportedVersion { path, major, minor });
    }
    let device_num = u64_at(b, 56);
    if device_num > MAX_DEVICES as u64 {
        return Err(RegionError::Corrupt {
            path,
            what: format!("device_num {device_num} > 16"),
        });
    }
    let proc_num = i32_at(b, OFF_PROC_NUM);
    let Ok(proc_count) = usize::try_from(proc_num) else {
        return Err(RegionError::Corrupt {
            path,
            what: format!("proc_num {proc_num} < 0"),
        });
    };
    if proc_count > MAX_PROCS {
        return Err(RegionError::Corrupt {
            path,
            what: format!("proc_num {proc_num} > 1024"),
        });
    }
    let devices = device_num as usize;
    let uuids = (0..devices)
        .map(|d| {
            let raw = &b[OFF_UUIDS + d * UUID_LEN..OFF_UUIDS + (d + 1) * UUID_LEN];
            let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        })
        .collect();
    let limits = (0..devices).map(|d| u64_at(b, OFF_LIMIT + d * 8)).collect();
    let sm_limits = (0..devices)
        .map(|d| u64_at(b, OFF_SM_LIMIT + d * 8))
        .collect();
    let has_seqlock = minor >= 2;
    let mut procs = Vec::new();
    let mut charged = vec![0u64; devices];
    let mut torn_slots = 0;
    for slot in 0..proc_count {
        let base = OFF_PROCS + slot * SLOT_SIZE;
        if has_seqlock && !u64_at(b, base + SLOT_SEQLOCK).is_multiple_of(2) {
            torn_slots += 1;
        }
        let used: Vec<RegionUsage> = (0..devices)
            .map(|d| {
                let u = base + SLOT_USED + d * USED_STRIDE;
                RegionUsage {
                    context: u64_at(b, u),
                    module: u64_at(b, u + 8),
                    data: u64_at(b, u + 16),
                    total: u64_at(b, u + 32),
                }
            })
            .collect();
        let pid = i32_at(b, base);
        if pid != 0 {
            // Dead slots (pid 0) keep their numbers but are no longer charged.
            for (sum, u) in charged.iter_mut().zip(&used) {
                *sum = sum.saturating_add(u.total);
            }
        }
        procs.push(RegionProc {
            slot: slot as u32,
            pid,
            hostpid: i32_at(b, base + 4),
            status: i32_at(b, base + SLOT_STATUS),
            used,
        });
    }
    Ok(SharedRegion {
        initialized: true,
        major_version: major,
        minor_version: minor,
        owner_pid: u64_at(b, 16),
        device_num,
        uuids,
        limits,
        sm_limits,
        proc_num: proc_count as u32,
        procs,
        charged_bytes: charged,
        torn_slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::MIB;
    use crate::testdata::hami_fixture_gz;
    use proptest::prelude::*;

    #[test]
    fn one_process_holding_5g() {
        let bytes = hami_fixture_gz("h100-hami-core/region-one-proc-5g.cache.gz");
        let r = parse_region("fx", &bytes).expect("valid");
        assert_eq!(
            (r.major_version, r.minor_version, r.device_num, r.proc_num),
            (1, 2, 1, 1)
        );
        assert_eq!(
            r.uuids,
            vec!["GPU-4f7efa07-0f69-f62e-5958-365ed3785eb2".to_owned()]
        );
        assert_eq!(r.limits, vec![8_388_608_000]);
        let p = &r.procs[0];
        assert_eq!((p.pid, p.hostpid, p.status), (422, 422, 1));
        assert_eq!(p.used[0].context, 518 * MIB);
        assert_eq!(p.used[0].data, 5120 * MIB);
        assert_eq!(p.used[0].total, 5638 * MIB);
        assert_eq!(r.charged_bytes, vec![5638 * MIB]);
        assert_eq!(r.torn_slots, 0);
    }

    #[test]
    fn exited_processes_are_not_charged() {
        let bytes = hami_fixture_gz("h100-hami-core/region-after-exit.cache.gz");
        let r = parse_region("fx", &bytes).expect("valid");
        assert_eq!(r.proc_num, 2);
        assert!(r.procs.iter().all(|p| p.pid == 0 && p.status == 0));
        assert_eq!(r.procs[1].used[0].total, 1542 * MIB, "numbers are kept");
        assert_eq!(r.charged_bytes, vec![0]);
    }

    #[test]
    fn truncated_wrong_magic_and_bad_counts_are_errors() {
        let good = hami_fixture_gz("h100-hami-core/region-one-proc-5g.cache.gz");
        assert!(matches!(
            parse_region("f", &good[..1000]),
            Err(RegionError::Truncated { len: 1000, .. })
        ));
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(
            parse_region("f", &bad),
            Err(RegionError::NotARegion { .. })
        ));
        let mut bad = good.clone();
        bad[OFF_PROC_NUM..OFF_PROC_NUM + 4].copy_from_slice(&5000i32.to_le_bytes());
        assert!(matches!(
            parse_region("f", &bad),
            Err(RegionError::Corrupt { .. })
        ));
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&2u32.to_le_bytes());
        let err = parse_region("f", &bad).expect_err("v2");
        assert!(err.to_string().contains("version 2.2"), "{err}");
    }

    #[test]
    fn odd_seqlock_counts_as_torn() {
        let mut bytes = hami_fixture_gz("h100-hami-core/region-one-proc-5g.cache.gz");
        let off = OFF_PROCS + SLOT_SEQLOCK;
        bytes[off..off + 8].copy_from_slice(&51u64.to_le_bytes());
        assert_eq!(parse_region("f", &bytes).expect("parses").torn_slots, 1);
    }

    #[test]
    fn missing_file_says_who_creates_it() {
        let err = read_region(Path::new("/nonexistent/cudevshr.cache")).expect_err("missing");
        assert!(matches!(err, RegionError::Missing { .. }));
        assert!(err.to_string().contains("first CUDA process"));
    }

    #[test]
    fn reads_a_real_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("r.cache");
        std::fs::write(
            &path,
            hami_fixture_gz("h100-hami-core/region-one-proc-5g.cache.gz"),
        )
        .expect("write");
        assert_eq!(
            read_region(&path).expect("reads").charged_bytes,
            vec![5638 * MIB]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn never_panics_on_garbage_headers(header in prop::collection::vec(any::<u8>(), 64), procs in any::<i32>()) {
            let mut bytes = vec![0u8; REGION_SIZE + 1];
            bytes[..64].copy_from_slice(&header);
            bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
            bytes[OFF_PROC_NUM..OFF_PROC_NUM + 4].copy_from_slice(&procs.to_le_bytes());
            let _ = parse_region("f", &bytes);
        }
    }
}
