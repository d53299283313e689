//! Which sharing method holds this container to its memory, named from facts the probe gathered:
//! HAMi-core (a preloaded library that hooks CUDA/NVML, with a limit), CUDA MPS (a client of the
//! MPS server with a pinned device memory limit), MIG (a MIG instance: a hardware partition), or
//! none (a bare card or time-slicing: no memory isolation).
//!
//! MIG is recognised from answers only (`nvidia-smi -L`, `nvmlDeviceGetMigMode`, device names and
//! `*_VISIBLE_DEVICES`): the probe never changes the MIG mode. Everything here is pure.

use std::collections::BTreeMap;

use crate::report::{MIB, MechanismOutcome};
use crate::report_conformance::{MethodSection, MigFacts, MpsFacts, MpsLimit, SharingMethod};

pub const MPS_LIMIT_VAR: &str = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT";
pub const MPS_PIPE_VAR: &str = "CUDA_MPS_PIPE_DIRECTORY";
pub const MPS_DEFAULT_PIPE: &str = "/tmp/nvidia-mps";
pub const MPS_CONTROL: &str = "nvidia-cuda-mps-control";

/// A memory size as MPS writes it: digits with an optional unit `K`, `M`, `G`, `T` (powers of
/// 1024, optionally followed by `B`), no unit meaning bytes.
pub fn parse_mps_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix(['B', 'b'])
        .filter(|r| r.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(t);
    let (digits, scale) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 1u64 << 10),
        'm' | 'M' => (&t[..t.len() - 1], 1 << 20),
        'g' | 'G' => (&t[..t.len() - 1], 1 << 30),
        't' | 'T' => (&t[..t.len() - 1], 1 << 40),
        c if c.is_ascii_digit() => (t, 1),
        _ => return None,
    };
    let digits = digits.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

/// `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`: `0=8G,1=512M` (per device) or one size for device 0.
pub fn parse_mps_env_limits(raw: &str) -> Result<Vec<MpsLimit>, String> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (device, size) = match part.split_once('=') {
            Some((d, s)) => (
                d.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("`{part}`: the device before `=` is not a number"))?,
                s,
            ),
            None => (0, part),
        };
        let bytes = parse_mps_size(size).ok_or_else(|| {
            format!("`{part}`: `{size}` is not a size (digits with K, M, G or T)")
        })?;
        out.push(MpsLimit {
            device,
            bytes,
            source: MPS_LIMIT_VAR.into(),
            raw: part.to_owned(),
        });
    }
    Ok(out)
}

/// The control daemon's answer to `get_default_device_pinned_mem_limit <dev>`, as the most the
/// limit can be. The daemon prints whole units rounded down (a limit set as `6000M` reads back
/// `5G` on driver 580), so an answer of N units means a limit below N + 1 units.
pub fn parse_control_limit(answer: &str) -> Option<u64> {
    let word = answer
        .split(|c: char| c.is_whitespace() || c == ':' || c == '=')
        .filter(|w| !w.is_empty())
        .find(|w| parse_mps_size(w).is_some_and(|b| b >= MIB))?;
    let bytes = parse_mps_size(word)?;
    let unit = match word.trim_end_matches(['B', 'b']).chars().last() {
        Some('k' | 'K') => 1u64 << 10,
        Some('m' | 'M') => 1 << 20,
        Some('g' | 'G') => 1 << 30,
        Some('t' | 'T') => 1 << 40,
        _ => 1,
    };
    bytes.checked_add(if unit > 1 { unit } else { 0 })
}

/// MIG devices in `nvidia-smi -L` output (`  MIG 1g.10gb     Device  0: (UUID: MIG-…)`).
pub fn mig_devices_in_listing(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("MIG ") && l.contains("UUID: MIG-"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// Whether an MPS control daemon serves `pipe`: its `control` socket accepts a connection. A
/// daemon that quit leaves the socket file behind (seen with driver 580), so existing is not
/// enough; the connection is closed at once without a word (the daemon logs it and goes on).
pub fn control_daemon_running(pipe: &std::path::Path) -> bool {
    control_daemon_probe(pipe).0
}

/// [`control_daemon_running`], with what the socket answered (for the report). A stream
/// connection is tried first; a socket bound with another type answers `EPROTOTYPE`, which only a
/// live socket can (a file left behind answers `ECONNREFUSED`), and is then tried as
/// `SOCK_SEQPACKET`.
pub fn control_daemon_probe(pipe: &std::path::Path) -> (bool, String) {
    let path = pipe.join("control");
    let shown = path.display();
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(_) => (true, format!("{shown}: a stream connection was accepted")),
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => match seqpacket_connect(&path) {
            Ok(()) => (
                true,
                format!(
                    "{shown}: not a stream socket ({e}); a SOCK_SEQPACKET connection was accepted"
                ),
            ),
            Err(e2) => (
                true,
                format!("{shown}: a live socket of another type (stream: {e}; seqpacket: {e2})"),
            ),
        },
        Err(e) => (false, format!("{shown}: no daemon answers ({e})")),
    }
}

/// Connects a `SOCK_SEQPACKET` Unix socket to `path` and closes it.
fn seqpacket_connect(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: creates a socket; the descriptor is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: a valid descriptor and a filled sockaddr_un of `len` bytes.
    let rc = unsafe { libc::connect(fd, (&raw const addr).cast::<libc::sockaddr>(), len) };
    let result = if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    };
    // SAFETY: closes the descriptor opened above, once.
    unsafe { libc::close(fd) };
    result
}

/// The facts the decision is made from.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// HAMi-core's mechanism decision (`mechanism::decide`).
    pub hami: Option<MechanismOutcome>,
    pub hami_reason: Option<String>,
    pub mps: MpsFacts,
    /// `nvidia-smi -L` output, when it ran.
    pub smi_listing: Option<String>,
    pub mig_mode: Vec<Option<bool>>,
    pub cuda_names: Vec<String>,
    pub visible_devices: Vec<String>,
}

/// The MPS part of the facts from the environment (the pipe directory's socket is checked by the
/// caller).
pub fn mps_env(env: &BTreeMap<String, String>) -> (MpsFacts, Vec<String>) {
    let mut errors = Vec::new();
    let pipe = env
        .get(MPS_PIPE_VAR)
        .filter(|p| !p.is_empty())
        .cloned()
        .unwrap_or_else(|| MPS_DEFAULT_PIPE.to_owned());
    let pinned_limits = match env.get(MPS_LIMIT_VAR) {
        Some(raw) => parse_mps_env_limits(raw).unwrap_or_else(|e| {
            errors.push(format!("{MPS_LIMIT_VAR}={raw:?} is malformed: {e}"));
            Vec::new()
        }),
        None => Vec::new(),
    };
    (
        MpsFacts {
            pipe_directory: pipe,
            pinned_limits,
            active_thread_percentage: env.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE").cloned(),
            ..MpsFacts::default()
        },
        errors,
    )
}

/// Names the method. HAMi-core wins when it is live (it may run over an MPS client); then an
/// MPS client; then MIG; else none.
pub fn decide(f: &Facts) -> MethodSection {
    let mut evidence = Vec::new();
    let mut found = Vec::new();
    if f.hami == Some(MechanismOutcome::HamiCoreActive) {
        found.push(SharingMethod::HamiCore);
        evidence.push(
            "HAMi-core: a preloaded library exporting the CUDA allocation hooks is mapped into a CUDA process, and a limit is set".to_owned(),
        );
    } else if let Some(r) = &f.hami_reason {
        evidence.push(format!("HAMi-core: not active ({r})"));
    }
    let mps = &f.mps;
    let mps_live = mps.client_connected == Some(true)
        || (mps.client_connected.is_none() && mps.control_socket);
    if mps_live {
        found.push(SharingMethod::CudaMps);
        let limits = if mps.pinned_limits.is_empty() {
            "no pinned device memory limit is set, so MPS does not limit memory".to_owned()
        } else {
            mps.pinned_limits
                .iter()
                .map(|l| format!("device {} {} MiB ({})", l.device, l.bytes / MIB, l.source))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let how = if mps.client_connected == Some(true) {
            "NVML lists this process's CUDA worker as an MPS client"
        } else {
            "the MPS control daemon's socket exists"
        };
        evidence.push(format!(
            "CUDA MPS: {how} (pipe directory {}); pinned limit: {limits}",
            mps.pipe_directory
        ));
    } else if mps.control_socket {
        evidence.push(format!(
            "CUDA MPS: a control daemon is running ({}), but this process is not its client",
            mps.pipe_directory
        ));
    }
    let mut mig = MigFacts {
        devices: f
            .smi_listing
            .as_deref()
            .map(mig_devices_in_listing)
            .unwrap_or_default(),
        mode_enabled: f.mig_mode.clone(),
        cuda_names: f
            .cuda_names
            .iter()
            .filter(|n| n.contains(" MIG "))
            .cloned()
            .collect(),
    };
    let visible_mig = f.visible_devices.iter().any(|v| v.starts_with("MIG-"));
    let mig_live = !mig.cuda_names.is_empty()
        || visible_mig
        || (!mig.devices.is_empty() && f.mig_mode.contains(&Some(true)));
    if mig_live {
        found.push(SharingMethod::Mig);
        evidence.push(format!(
            "MIG: {}",
            [
                (!mig.cuda_names.is_empty())
                    .then(|| format!("CUDA sees MIG devices ({})", mig.cuda_names.join(", "))),
                visible_mig.then(|| "the visible devices are MIG UUIDs".to_owned()),
                (!mig.devices.is_empty())
                    .then(|| format!("nvidia-smi -L lists {}", mig.devices.join("; "))),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ")
        ));
    } else if f.mig_mode.contains(&Some(true)) {
        evidence.push("MIG: enabled on the card, but this process sees no MIG device".into());
    }
    let method = found.first().copied().unwrap_or(SharingMethod::None);
    if method == SharingMethod::None {
        evidence.push(
            "none: no HAMi-core, no MPS client and no MIG instance, so nothing limits this process's GPU memory (a bare card or time-slicing)".into(),
        );
    }
    let any_mig = !mig.devices.is_empty() || mig.mode_enabled.iter().any(Option::is_some);
    if !any_mig && mig.cuda_names.is_empty() {
        mig = MigFacts::default();
    }
    MethodSection {
        method,
        also: found.into_iter().skip(1).collect(),
        evidence,
        mps: (mps_live || mps.control_socket || !mps.pinned_limits.is_empty()).then(|| mps.clone()),
        mig: (mig != MigFacts::default()).then_some(mig),
    }
}

/// The scope sentence a report carries for `method`.
pub fn scope_note(method: SharingMethod) -> String {
    match method {
        SharingMethod::HamiCore => crate::report::SCOPE_NOTE.to_owned(),
        SharingMethod::CudaMps => "CUDA MPS limits each client's pinned device memory in the MPS server; NVML and cuDeviceTotalMem still show the whole card, and all clients share one server (a fault in one can affect the others), so it is not a security boundary like MIG. This report covers the cuMemAlloc_v2 path of this process (and its child) only.".to_owned(),
        SharingMethod::Mig => "MIG partitions the card in hardware: this process sees only its instance's memory and compute. This report covers the cuMemAlloc_v2 path of this process (and its child) only.".to_owned(),
        SharingMethod::None => "No memory isolation was found (no HAMi-core, no MPS pinned limit, no MIG instance): any process on this card can take all of its memory. This report covers the cuMemAlloc_v2 path of this process (and its child) only.".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mps_sizes_and_env() {
        assert_eq!(parse_mps_size("8G"), Some(8 << 30));
        assert_eq!(parse_mps_size("8000M"), Some(8000 * MIB));
        assert_eq!(parse_mps_size("512MB"), Some(512 * MIB));
        assert_eq!(parse_mps_size("1048576"), Some(MIB));
        assert_eq!(parse_mps_size("1.5G"), None);
        assert_eq!(parse_mps_size("G"), None);
        let l = parse_mps_env_limits("0=8000M, 1=2G").expect("parses");
        assert_eq!(
            l.iter().map(|l| (l.device, l.bytes)).collect::<Vec<_>>(),
            vec![(0, 8000 * MIB), (1, 2 << 30)]
        );
        assert_eq!(parse_mps_env_limits("4G").expect("one value")[0].device, 0);
        assert!(parse_mps_env_limits("x=4G").is_err());
        assert!(parse_mps_env_limits("0=lots").is_err());
    }

    #[test]
    fn a_socket_left_by_a_daemon_that_quit_is_not_a_daemon() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(!control_daemon_running(dir.path()));
        let path = dir.path().join("control");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        assert!(control_daemon_running(dir.path()), "a listening daemon");
        drop(listener);
        assert!(path.exists(), "the socket file stays behind");
        assert!(!control_daemon_running(dir.path()), "but nobody answers");
        assert!(
            control_daemon_probe(dir.path())
                .1
                .contains("no daemon answers")
        );
    }

    /// A daemon whose socket is not a stream socket is still a daemon: connecting with the wrong
    /// type answers EPROTOTYPE, which a file left behind never does.
    #[test]
    fn a_live_seqpacket_socket_is_a_daemon() {
        use std::os::unix::ffi::OsStrExt as _;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("control");
        // SAFETY: a plain socket, bound and listening, closed at the end of the test.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0) };
        assert!(fd >= 0);
        // SAFETY: plain data.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        // SAFETY: a valid descriptor and address.
        assert_eq!(unsafe { libc::bind(fd, (&raw const addr).cast(), len) }, 0);
        // SAFETY: a bound descriptor.
        assert_eq!(unsafe { libc::listen(fd, 4) }, 0);
        let (running, how) = control_daemon_probe(dir.path());
        assert!(running, "{how}");
        assert!(
            how.contains("SOCK_SEQPACKET connection was accepted"),
            "{how}"
        );
        // SAFETY: closes the socket opened above.
        unsafe { libc::close(fd) };
        let (running, how) = control_daemon_probe(dir.path());
        assert!(!running, "{how}");
    }

    #[test]
    fn control_answers() {
        // Whole units rounded down: "5G" (what a limit of 6000M reads back as) is below 6 GiB.
        assert_eq!(parse_control_limit("5G\n"), Some(6 << 30));
        assert_eq!(parse_control_limit("8000M\n"), Some(8001 * MIB));
        assert_eq!(
            parse_control_limit("Default pinned memory limit for device 0: 6G"),
            Some(7 << 30)
        );
        assert_eq!(parse_control_limit("8589934592"), Some(8 << 30));
        assert_eq!(parse_control_limit("0\n"), None);
        assert_eq!(parse_control_limit(""), None);
    }

    fn mps_client(limit: bool) -> Facts {
        Facts {
            hami: Some(MechanismOutcome::Absent),
            hami_reason: Some("no library is injected".into()),
            mps: MpsFacts {
                pipe_directory: "/tmp/mps".into(),
                control_socket: true,
                client_connected: Some(true),
                client_pids: vec![42],
                pinned_limits: if limit {
                    vec![MpsLimit {
                        device: 0,
                        bytes: 8000 * MIB,
                        source: MPS_LIMIT_VAR.into(),
                        raw: "0=8000M".into(),
                    }]
                } else {
                    vec![]
                },
                ..MpsFacts::default()
            },
            ..Facts::default()
        }
    }

    #[test]
    fn an_mps_client_is_named_with_its_limit() {
        let m = decide(&mps_client(true));
        assert_eq!(m.method, SharingMethod::CudaMps);
        assert!(
            m.evidence.iter().any(|e| e.contains("device 0 8000 MiB")),
            "{:?}",
            m.evidence
        );
        let m = decide(&mps_client(false));
        assert!(
            m.evidence
                .iter()
                .any(|e| e.contains("no pinned device memory limit")),
            "{:?}",
            m.evidence
        );
    }

    #[test]
    fn hami_core_wins_and_mps_is_also_named() {
        let mut f = mps_client(true);
        f.hami = Some(MechanismOutcome::HamiCoreActive);
        let m = decide(&f);
        assert_eq!(m.method, SharingMethod::HamiCore);
        assert_eq!(m.also, vec![SharingMethod::CudaMps]);
    }

    #[test]
    fn a_daemon_this_process_does_not_use_is_not_mps() {
        let mut f = mps_client(true);
        f.mps.client_connected = Some(false);
        assert_eq!(decide(&f).method, SharingMethod::None);
    }

    /// The H200's real answers (MIG disabled: no MIG line, mode off) give none; the documented
    /// listing format with MIG devices gives MIG.
    #[test]
    fn mig_from_captured_answers() {
        let bare = Facts {
            hami: Some(MechanismOutcome::Absent),
            smi_listing: Some(crate::testdata::local("mig/h200-nvidia-smi-L.txt")),
            mig_mode: vec![Some(false)],
            cuda_names: vec!["NVIDIA H200".into()],
            ..Facts::default()
        };
        let m = decide(&bare);
        assert_eq!(m.method, SharingMethod::None);
        let listing = crate::testdata::local("mig/a100-mig-nvidia-smi-L.txt");
        assert_eq!(mig_devices_in_listing(&listing).len(), 2);
        let mig = Facts {
            hami: Some(MechanismOutcome::Absent),
            smi_listing: Some(listing),
            mig_mode: vec![Some(true)],
            cuda_names: vec!["NVIDIA A100-SXM4-40GB MIG 1g.5gb".into()],
            visible_devices: vec!["MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f".into()],
            ..Facts::default()
        };
        let m = decide(&mig);
        assert_eq!(m.method, SharingMethod::Mig);
        assert_eq!(m.mig.expect("mig facts").devices.len(), 2);
    }
}
