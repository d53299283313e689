//! Which CUDA/NVML entry points a preloaded library really provides.
//!
//! HAMi-core exports its own `dlsym`, and for `cu*`/`nvml*` names that interposer resolves in
//! libvgpu first and falls through to libcuda otherwise (shared/facts/hami.md §10). So "dlsym
//! returned something" proves nothing; the probe asks `dladdr` which object the address lies in.

use std::ffi::{CStr, CString, c_void};

use crate::report::SymbolCheck;

/// The entry points whose presence shows a memory-capping interposer.
pub const HOOK_SYMBOLS: &[&str] = &[
    "cuMemAlloc_v2",
    "cuMemGetInfo_v2",
    "cuDeviceTotalMem_v2",
    "cuGetProcAddress",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetMemoryInfo_v2",
];

/// Opens `path` (or finds it already loaded) and checks each of `names`.
pub fn check_library(path: &str, names: &[&str]) -> Result<Vec<SymbolCheck>, String> {
    let target = std::fs::canonicalize(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: opening a shared library runs its initialisers; the probe does this only in its
    // disposable worker process, where the library is normally already preloaded.
    let lib = unsafe {
        libloading::os::unix::Library::open(Some(path), libc::RTLD_LAZY | libc::RTLD_LOCAL)
    }
    .map_err(|e| format!("cannot open {path}: {}", super::loader_error(&e)))?;
    let checks = names
        .iter()
        .map(|name| {
            let resolved_in = CString::new(*name).ok().and_then(|c| {
                // SAFETY: looking up a symbol's address without calling it.
                let sym = unsafe { lib.get::<*mut c_void>(c.as_bytes_with_nul()) }.ok()?;
                object_of(*sym)
            });
            let exported = resolved_in.as_deref().is_some_and(|obj| {
                std::fs::canonicalize(obj)
                    .map(|p| p == target)
                    .unwrap_or(obj == path)
            });
            SymbolCheck {
                name: (*name).to_owned(),
                exported,
                resolved_in,
            }
        })
        .collect();
    // Keep the library loaded: unloading a preloaded interposer is never wise.
    std::mem::forget(lib);
    Ok(checks)
}

/// The file name of the object that contains `addr`, via `dladdr`.
fn object_of(addr: *mut c_void) -> Option<String> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: Dl_info is plain data; zeroed is a valid initial state.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address and fills `info`.
    if unsafe { libc::dladdr(addr.cast_const(), &raw mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
    Some(
        unsafe { CStr::from_ptr(info.dli_fname) }
            .to_string_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libc_path() -> Option<String> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        crate::maps::mapped_paths(&maps)
            .into_iter()
            .find(|p| p.contains("libc.so"))
    }

    #[test]
    fn a_symbol_of_the_library_is_exported_and_a_foreign_one_is_not() {
        let Some(libc_so) = libc_path() else {
            eprintln!("SKIPPED: libc not found in /proc/self/maps");
            return;
        };
        let checks = check_library(&libc_so, &["malloc", "cuMemAlloc_v2"]).expect("libc opens");
        assert!(checks[0].exported, "{checks:?}");
        assert!(checks[0].resolved_in.is_some());
        assert!(!checks[1].exported);
        assert_eq!(checks[1].resolved_in, None);
    }

    #[test]
    fn missing_library_is_an_error() {
        assert!(check_library("/nonexistent/libvgpu.so", HOOK_SYMBOLS).is_err());
    }
}
