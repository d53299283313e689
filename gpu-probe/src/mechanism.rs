//! The HAMi-core mechanism: what is injected into this container and whether it is live.
//!
//! HAMi injects HAMi-core through a bind-mounted `/etc/ld.so.preload` (never `LD_PRELOAD`), plus
//! the limit environment and a shared region file (shared/facts/hami.md §5, §10, §11). The static
//! part (env, preload file, region file) is gathered here; whether the library is mapped after CUDA
//! init and which hooks it exports comes from the worker process.

use std::collections::BTreeMap;
use std::path::Path;

use crate::limits::{self, LIMIT_VAR};
use crate::region::{self, DEFAULT_PATH};
use crate::report::{
    EnvVar, LibraryCheck, MechanismOutcome, MechanismSection, PreloadFile, SharedRegionCheck,
};

pub const PRELOAD_PATH: &str = "/etc/ld.so.preload";
pub const SHARED_CACHE_VAR: &str = "CUDA_DEVICE_MEMORY_SHARED_CACHE";

/// Variables reported when set (plus any `CUDA_DEVICE_MEMORY_LIMIT_<i>` / `CUDA_DEVICE_SM_LIMIT_<i>`).
const ENV_NAMES: &[&str] = &[
    "CUDA_DEVICE_MEMORY_LIMIT",
    "CUDA_DEVICE_SM_LIMIT",
    SHARED_CACHE_VAR,
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_VISIBLE_DEVICES",
    "LD_PRELOAD",
    "CUDA_DISABLE_CONTROL",
    "LIBCUDA_LOG_LEVEL",
    "GPU_CORE_UTILIZATION_POLICY",
    "CUDA_TASK_PRIORITY",
    "CUDA_OVERSUBSCRIBE",
];

/// The HAMi-related variables that are set, with limit values interpreted.
pub fn hami_env(env: &BTreeMap<String, String>) -> Vec<EnvVar> {
    env.iter()
        .filter(|(name, _)| {
            ENV_NAMES.contains(&name.as_str())
                || is_indexed(name, "CUDA_DEVICE_MEMORY_LIMIT_")
                || is_indexed(name, "CUDA_DEVICE_SM_LIMIT_")
        })
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: value.clone(),
            interpretation: name
                .starts_with(LIMIT_VAR)
                .then(|| limits::interpret(name, value)),
        })
        .collect()
}

fn is_indexed(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads `/etc/ld.so.preload` (entries are separated by whitespace or `:`; `#` starts a comment).
pub fn read_preload(path: &Path) -> PreloadFile {
    let mut file = PreloadFile {
        path: path.display().to_string(),
        ..PreloadFile::default()
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            file.exists = true;
            file.entries = split_preload(&text);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            file.exists = true;
            file.error = Some(format!("cannot read {}: {e}", path.display()));
        }
    }
    file
}

fn split_preload(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ':'))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every library the dynamic loader will inject, and where it is named.
pub fn injected_libraries(
    preload: &PreloadFile,
    env: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut libs: Vec<(String, String)> = preload
        .entries
        .iter()
        .map(|e| (e.clone(), PRELOAD_PATH.to_owned()))
        .collect();
    if let Some(value) = env.get("LD_PRELOAD") {
        libs.extend(
            split_preload(value)
                .into_iter()
                .map(|e| (e, "LD_PRELOAD".to_owned())),
        );
    }
    libs
}

/// The region file path and where it came from.
pub fn region_path(env: &BTreeMap<String, String>) -> (String, String) {
    match env.get(SHARED_CACHE_VAR) {
        Some(p) if !p.is_empty() => (p.clone(), SHARED_CACHE_VAR.to_owned()),
        _ => (DEFAULT_PATH.to_owned(), "default".to_owned()),
    }
}

/// Reads the region file read-only.
pub fn check_region(path: &str, source: &str) -> SharedRegionCheck {
    let mut check = SharedRegionCheck {
        path: path.to_owned(),
        path_source: source.to_owned(),
        exists: Path::new(path).exists(),
        ..SharedRegionCheck::default()
    };
    if check.exists {
        match region::read_region(Path::new(path)) {
            Ok(r) => check.region = Some(r),
            Err(e) => check.error = Some(e.to_string()),
        }
    }
    check
}

/// Whether HAMi-core is live here, from the gathered section (its outcome and reasons unset).
pub fn decide(m: &MechanismSection) -> (MechanismOutcome, Vec<String>) {
    let mut reasons = Vec::new();
    let disabled = m
        .env
        .iter()
        .any(|v| v.name == "CUDA_DISABLE_CONTROL" && v.value.eq_ignore_ascii_case("true"));
    if disabled {
        reasons.push("CUDA_DISABLE_CONTROL=true: HAMi skipped mounting /etc/ld.so.preload for this container".into());
    }
    if let Some(e) = &m.ld_so_preload.error {
        reasons.push(e.clone());
    }
    if m.libraries.is_empty() {
        reasons.insert(
            0,
            format!(
                "no library is injected: {} {} and LD_PRELOAD is unset. HAMi mounts it into containers \
                 that request nvidia.com/gpu resources and were scheduled by hami-scheduler",
                PRELOAD_PATH,
                if m.ld_so_preload.exists { "names none" } else { "does not exist" }
            ),
        );
        return (MechanismOutcome::Absent, reasons);
    }
    let mut hooking = Vec::new();
    for lib in &m.libraries {
        let exported: Vec<&str> = lib
            .symbols
            .iter()
            .filter(|s| s.exported)
            .map(|s| s.name.as_str())
            .collect();
        if !lib.exists {
            reasons.push(format!(
                "{} (named in {}) does not exist: the loader ignores it and isolation is silently off",
                lib.path, lib.named_in
            ));
            continue;
        }
        match lib.mapped_after_cuda_init {
            Some(true) => {}
            Some(false) => reasons.push(format!(
                "{} exists but is not mapped into a CUDA process",
                lib.path
            )),
            None => reasons.push(format!(
                "{}: could not check whether it is mapped (CUDA did not start)",
                lib.path
            )),
        }
        if let Some(e) = &lib.error {
            reasons.push(format!("{}: {e}", lib.path));
        }
        if exported.contains(&"cuMemAlloc_v2") && lib.mapped_after_cuda_init == Some(true) {
            reasons.push(format!(
                "{} is mapped and exports {}",
                lib.path,
                exported.join(", ")
            ));
            hooking.push(lib);
        } else if lib.symbols.iter().any(|s| s.name == "cuMemAlloc_v2") {
            reasons.push(format!(
                "{} does not export cuMemAlloc_v2: it cannot cap allocations",
                lib.path
            ));
        }
    }
    let limit_set = m.env.iter().any(|v| {
        v.name.starts_with(LIMIT_VAR) && limits::parse_limit(&v.name, &v.value).is_ok_and(|b| b > 0)
    });
    let region_limit = m
        .shared_region
        .region
        .as_ref()
        .is_some_and(|r| r.limits.iter().any(|&l| l > 0));
    if !limit_set && !region_limit {
        reasons.push("no CUDA_DEVICE_MEMORY_LIMIT* is set and the shared region holds no limit: nothing is enforced".into());
    }
    match (&m.shared_region.region, &m.shared_region.error) {
        (Some(r), _) => reasons.push(format!(
            "shared region {} v{}.{}: {} process slot(s), limits {:?} bytes, charged {:?} bytes",
            m.shared_region.path,
            r.major_version,
            r.minor_version,
            r.proc_num,
            r.limits,
            r.charged_bytes
        )),
        (None, Some(e)) => reasons.push(format!("shared region: {e}")),
        (None, None) => reasons.push(format!(
            "shared region {} does not exist",
            m.shared_region.path
        )),
    }
    let outcome = if !hooking.is_empty() && (limit_set || region_limit) {
        MechanismOutcome::HamiCoreActive
    } else {
        MechanismOutcome::Partial
    };
    (outcome, reasons)
}

/// Builds the library checks from the static facts and the worker's findings.
pub fn library_checks(
    libs: &[(String, String)],
    mapped: &[String],
    cuda_ran: bool,
    symbols: &BTreeMap<String, Result<Vec<crate::report::SymbolCheck>, String>>,
) -> Vec<LibraryCheck> {
    libs.iter()
        .map(|(path, named_in)| {
            let exists = Path::new(path).exists();
            let (symbols, error) = match symbols.get(path) {
                Some(Ok(s)) => (s.clone(), None),
                Some(Err(e)) => (Vec::new(), Some(e.clone())),
                None => (Vec::new(), None),
            };
            LibraryCheck {
                path: path.clone(),
                named_in: named_in.clone(),
                exists,
                mapped_after_cuda_init: cuda_ran.then(|| mapped.iter().any(|m| m == path)),
                symbols,
                error,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::SymbolCheck;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn section(libraries: Vec<LibraryCheck>, env_vars: &[(&str, &str)]) -> MechanismSection {
        MechanismSection {
            env: hami_env(&env(env_vars)),
            ld_so_preload: PreloadFile {
                path: PRELOAD_PATH.into(),
                exists: !libraries.is_empty(),
                entries: vec![],
                error: None,
            },
            libraries,
            shared_region: SharedRegionCheck {
                path: "/usr/local/vgpu/x.cache".into(),
                ..Default::default()
            },
            outcome: MechanismOutcome::Absent,
            reasons: vec![],
        }
    }

    fn lib(exists: bool, mapped: Option<bool>, exports: bool) -> LibraryCheck {
        LibraryCheck {
            path: "/usr/local/vgpu/libvgpu.so".into(),
            named_in: PRELOAD_PATH.into(),
            exists,
            mapped_after_cuda_init: mapped,
            symbols: vec![SymbolCheck {
                name: "cuMemAlloc_v2".into(),
                exported: exports,
                resolved_in: None,
            }],
            error: None,
        }
    }

    #[test]
    fn env_filter_and_interpretation() {
        let vars = hami_env(&env(&[
            ("CUDA_DEVICE_MEMORY_LIMIT_0", "8000m"),
            ("CUDA_DEVICE_MEMORY_LIMIT_X", "1"),
            ("CUDA_DEVICE_SM_LIMIT", "0"),
            ("HOME", "/root"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ]));
        let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["CUDA_DEVICE_MEMORY_LIMIT_0", "CUDA_DEVICE_SM_LIMIT"]
        );
        assert_eq!(
            vars[0].interpretation.as_deref(),
            Some("8388608000 bytes = 8000 MiB")
        );
    }

    #[test]
    fn preload_parsing() {
        assert_eq!(
            split_preload("/usr/local/vgpu/libvgpu.so\n"),
            vec!["/usr/local/vgpu/libvgpu.so"]
        );
        assert_eq!(
            split_preload("# c\n/a.so:/b.so /c.so # x\n"),
            vec!["/a.so", "/b.so", "/c.so"]
        );
        let dir = tempfile::tempdir().expect("tmp");
        assert!(!read_preload(&dir.path().join("none")).exists);
        let p = dir.path().join("ld.so.preload");
        std::fs::write(&p, "/usr/local/vgpu/libvgpu.so\n").expect("write");
        let f = read_preload(&p);
        let libs = injected_libraries(&f, &env(&[("LD_PRELOAD", "/x.so")]));
        assert_eq!(libs.len(), 2);
        assert_eq!(libs[1], ("/x.so".to_owned(), "LD_PRELOAD".to_owned()));
    }

    #[test]
    fn nothing_injected_is_absent() {
        let (outcome, reasons) = decide(&section(vec![], &[]));
        assert_eq!(outcome, MechanismOutcome::Absent);
        assert!(reasons[0].contains("does not exist"));
    }

    #[test]
    fn mapped_hooking_library_with_a_limit_is_active() {
        let s = section(
            vec![lib(true, Some(true), true)],
            &[("CUDA_DEVICE_MEMORY_LIMIT_0", "8000m")],
        );
        assert_eq!(decide(&s).0, MechanismOutcome::HamiCoreActive);
    }

    #[test]
    fn partial_states_say_why() {
        let missing = section(
            vec![lib(false, Some(false), false)],
            &[("CUDA_DEVICE_MEMORY_LIMIT_0", "8000m")],
        );
        let (o, r) = decide(&missing);
        assert_eq!(o, MechanismOutcome::Partial);
        assert!(r.iter().any(|l| l.contains("silently off")), "{r:?}");
        let no_limit = section(vec![lib(true, Some(true), true)], &[]);
        let (o, r) = decide(&no_limit);
        assert_eq!(o, MechanismOutcome::Partial);
        assert!(r.iter().any(|l| l.contains("nothing is enforced")), "{r:?}");
        let no_hooks = section(
            vec![lib(true, Some(true), false)],
            &[("CUDA_DEVICE_MEMORY_LIMIT", "1g")],
        );
        assert_eq!(decide(&no_hooks).0, MechanismOutcome::Partial);
    }

    #[test]
    fn region_path_default_and_env() {
        assert_eq!(region_path(&env(&[])).0, DEFAULT_PATH);
        assert_eq!(
            region_path(&env(&[(SHARED_CACHE_VAR, "/usr/local/vgpu/a.cache")])).1,
            SHARED_CACHE_VAR
        );
    }
}
