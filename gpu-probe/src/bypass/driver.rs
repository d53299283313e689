//! The child side of the bypass rows that reach the driver some other way than a program's own
//! `dlsym`: a minimal table of driver entry points (init, a primary context, `cuMemAlloc_v2`,
//! `cuMemFree_v2`, `cuMemGetInfo_v2`), filled by one of four lookups, and the cap search over it.
//!
//! - [`Lookup::Program`]: `dlopen("libcuda.so.1")` + the program's `dlsym`, which under HAMi-core
//!   is HAMi-core's interposer (it answers every `cu*` name from libvgpu, whatever the handle:
//!   shared/facts/hami.md §10). The region tamper allocates this ordinary way.
//! - [`Lookup::LibcDlsym`]: the same handle, but glibc's own `dlsym`, found with `dlvsym` (HAMi-core
//!   exports an unversioned `dlsym` and no `dlvsym`; a versioned lookup skips the unversioned one,
//!   which is how HAMi-core finds the real one itself).
//! - [`Lookup::Dlmopen`]: `dlmopen(LM_ID_NEWLM, "libcuda.so.1")`, a second copy of the driver in a
//!   new link-map namespace (no preloaded library there), looked up with glibc's own `dlsym`.
//! - [`Lookup::ProcAddress`]: only `cuGetProcAddress_v2`, found with the program's `dlsym` as the
//!   CUDA runtime finds it, and every other entry point through it (by base name and CUDA
//!   version, as the runtime asks).
//!
//! This is its own small table on purpose: `ffi::cuda` resolves through the program's `dlsym`
//! only, and the rows must control how each name is found. Nothing here writes the shared region.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};

use crate::cap::DeviceMemory;
use crate::report::{CudaErrorInfo, MemInfo, ResolvedSymbol};

type CuResult = c_int;
type InitFn = unsafe extern "C" fn(c_uint) -> CuResult;
type DeviceGetFn = unsafe extern "C" fn(*mut c_int, c_int) -> CuResult;
type RetainFn = unsafe extern "C" fn(*mut *mut c_void, c_int) -> CuResult;
type ReleaseFn = unsafe extern "C" fn(c_int) -> CuResult;
type SetCurrentFn = unsafe extern "C" fn(*mut c_void) -> CuResult;
type AllocFn = unsafe extern "C" fn(*mut u64, usize) -> CuResult;
type FreeFn = unsafe extern "C" fn(u64) -> CuResult;
type MemInfoFn = unsafe extern "C" fn(*mut usize, *mut usize) -> CuResult;
type ErrorNameFn = unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult;
type DlsymFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;
type GetProcV2 =
    unsafe extern "C" fn(*const c_char, *mut *mut c_void, c_int, u64, *mut c_int) -> CuResult;

/// The CUDA version the `cuGetProcAddress` lookups ask for (12.0: every `_v2` name exists).
const PROC_ADDRESS_VERSION: c_int = 12000;

/// How the driver's entry points are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Program,
    LibcDlsym,
    Dlmopen,
    ProcAddress,
}

/// The driver entry points a bypass row uses, and where each was found.
#[derive(Debug)]
pub struct Driver {
    init: InitFn,
    device_get: DeviceGetFn,
    retain: RetainFn,
    release: ReleaseFn,
    set_current: SetCurrentFn,
    alloc: AllocFn,
    free: FreeFn,
    mem_info: MemInfoFn,
    error_name: Option<ErrorNameFn>,
    /// The lookup function itself and each entry point, with the object `dladdr` places it in.
    pub resolved: Vec<ResolvedSymbol>,
    device: c_int,
}

/// The entry points, by exact name and by the base name `cuGetProcAddress` takes.
const NAMES: [(&str, &str); 9] = [
    ("cuInit", "cuInit"),
    ("cuDeviceGet", "cuDeviceGet"),
    ("cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRetain"),
    ("cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"),
    ("cuCtxSetCurrent", "cuCtxSetCurrent"),
    ("cuMemAlloc_v2", "cuMemAlloc"),
    ("cuMemFree_v2", "cuMemFree"),
    ("cuMemGetInfo_v2", "cuMemGetInfo"),
    ("cuGetErrorName", "cuGetErrorName"),
];

/// The names whose object the row reports (the others follow them).
const REPORTED: [&str; 3] = ["cuInit", "cuMemAlloc_v2", "cuMemGetInfo_v2"];

fn dlerror_text() -> String {
    // SAFETY: dlerror returns a thread-local NUL-terminated string or NULL.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "no error text".into()
    } else {
        // SAFETY: non-null, NUL-terminated, owned by the loader.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// The file name of the object that contains `addr` (`dladdr`).
fn object_of(addr: *const c_void) -> Option<String> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: Dl_info is plain data; zeroed is a valid initial state.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address and fills `info`.
    if unsafe { libc::dladdr(addr, &raw mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
    Some(
        unsafe { CStr::from_ptr(info.dli_fname) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// glibc's own `dlsym`, past any interposer: a versioned lookup never returns an unversioned
/// definition (HAMi-core's), and HAMi-core exports no `dlvsym`.
pub fn libc_dlsym() -> Option<DlsymFn> {
    for version in [c"GLIBC_2.34", c"GLIBC_2.2.5", c"GLIBC_2.17"] {
        // SAFETY: looking up a symbol by name and version; nothing is called.
        let p = unsafe { libc::dlvsym(libc::RTLD_DEFAULT, c"dlsym".as_ptr(), version.as_ptr()) };
        if !p.is_null() {
            // SAFETY: glibc's dlsym has exactly this signature.
            return Some(unsafe { std::mem::transmute::<*mut c_void, DlsymFn>(p) });
        }
    }
    None
}

/// The program's own `dlsym` (under HAMi-core: its interposer).
fn program_dlsym(handle: *mut c_void, name: &CStr) -> *mut c_void {
    // SAFETY: a symbol lookup on a handle returned by dlopen/dlmopen; nothing is called.
    unsafe { libc::dlsym(handle, name.as_ptr()) }
}

fn open(namespace: bool) -> Result<*mut c_void, String> {
    let mut errors = Vec::new();
    for name in [c"libcuda.so.1", c"libcuda.so"] {
        let flags = libc::RTLD_NOW | libc::RTLD_LOCAL;
        let h = if namespace {
            // SAFETY: loads the driver into a new link-map namespace; its initialisers run there.
            unsafe { libc::dlmopen(libc::LM_ID_NEWLM, name.as_ptr(), flags) }
        } else {
            // SAFETY: loading the NVIDIA driver library runs its initialisers, as any CUDA
            // program does.
            unsafe { libc::dlopen(name.as_ptr(), flags) }
        };
        if !h.is_null() {
            return Ok(h);
        }
        errors.push(format!("{}: {}", name.to_string_lossy(), dlerror_text()));
    }
    Err(format!(
        "{} failed: {}",
        if namespace {
            "dlmopen(LM_ID_NEWLM)"
        } else {
            "dlopen"
        },
        errors.join("; ")
    ))
}

impl Driver {
    /// Opens the driver and resolves every entry point with `lookup`.
    pub fn open(lookup: Lookup, device: u32) -> Result<Self, String> {
        let mut resolved = Vec::new();
        let handle = open(lookup == Lookup::Dlmopen)?;
        let mut table: Vec<*mut c_void> = Vec::with_capacity(NAMES.len());
        match lookup {
            Lookup::Program => {
                let dlsym_addr = libc::dlsym as *const c_void;
                resolved.push(ResolvedSymbol {
                    name: "dlsym (the program's)".into(),
                    object: object_of(dlsym_addr),
                });
                for (exact, _) in NAMES {
                    let c = CString::new(exact).map_err(|e| e.to_string())?;
                    table.push(program_dlsym(handle, &c));
                }
            }
            Lookup::LibcDlsym | Lookup::Dlmopen => {
                let real = libc_dlsym().ok_or("glibc's dlsym could not be found with dlvsym")?;
                resolved.push(ResolvedSymbol {
                    name: "dlsym (glibc's, by dlvsym)".into(),
                    object: object_of(real as *const c_void),
                });
                if lookup == Lookup::Dlmopen {
                    // What the program's own dlsym answers on the new namespace's handle: under
                    // HAMi-core its interposer, which ignores the handle for `cu*` names.
                    resolved.push(ResolvedSymbol {
                        name: "cuMemAlloc_v2 by the program's dlsym on the dlmopen handle".into(),
                        object: object_of(program_dlsym(handle, c"cuMemAlloc_v2")),
                    });
                }
                for (exact, _) in NAMES {
                    let c = CString::new(exact).map_err(|e| e.to_string())?;
                    // SAFETY: glibc's dlsym on a handle the loader gave; nothing is called.
                    table.push(unsafe { real(handle, c.as_ptr()) });
                }
            }
            Lookup::ProcAddress => {
                let gp = program_dlsym(handle, c"cuGetProcAddress_v2");
                if gp.is_null() {
                    return Err(
                        "the driver has no cuGetProcAddress_v2 (CUDA 12 or newer needed)".into(),
                    );
                }
                resolved.push(ResolvedSymbol {
                    name: "cuGetProcAddress_v2 (by the program's dlsym)".into(),
                    object: object_of(gp),
                });
                // SAFETY: cuGetProcAddress_v2(const char*, void**, int, cuuint64_t,
                // CUdriverProcAddressQueryResult*) in CUDA 12 and 13.
                let gp: GetProcV2 = unsafe { std::mem::transmute::<*mut c_void, GetProcV2>(gp) };
                for (_, base) in NAMES {
                    let c = CString::new(base).map_err(|e| e.to_string())?;
                    let mut pfn: *mut c_void = std::ptr::null_mut();
                    let mut status: c_int = 0;
                    // SAFETY: valid out-pointers; flags 0 = CU_GET_PROC_ADDRESS_DEFAULT.
                    let rc = unsafe {
                        gp(
                            c.as_ptr(),
                            &raw mut pfn,
                            PROC_ADDRESS_VERSION,
                            0,
                            &raw mut status,
                        )
                    };
                    table.push(if rc == 0 { pfn } else { std::ptr::null_mut() });
                }
            }
        }
        for ((exact, _), p) in NAMES.iter().zip(&table) {
            if REPORTED.contains(exact) {
                resolved.push(ResolvedSymbol {
                    name: (*exact).to_owned(),
                    object: object_of(*p),
                });
            }
        }
        let missing: Vec<&str> = NAMES
            .iter()
            .zip(&table)
            .filter(|((exact, _), p)| p.is_null() && *exact != "cuGetErrorName")
            .map(|((exact, _), _)| *exact)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "entry points not found this way: {}",
                missing.join(", ")
            ));
        }
        // SAFETY: each pointer is the driver's (or its interposer's) entry point of that name,
        // with the C signature of the field it is stored in; the library stays loaded (never
        // closed) for the process's life.
        unsafe {
            Ok(Self {
                init: std::mem::transmute::<*mut c_void, InitFn>(table[0]),
                device_get: std::mem::transmute::<*mut c_void, DeviceGetFn>(table[1]),
                retain: std::mem::transmute::<*mut c_void, RetainFn>(table[2]),
                release: std::mem::transmute::<*mut c_void, ReleaseFn>(table[3]),
                set_current: std::mem::transmute::<*mut c_void, SetCurrentFn>(table[4]),
                alloc: std::mem::transmute::<*mut c_void, AllocFn>(table[5]),
                free: std::mem::transmute::<*mut c_void, FreeFn>(table[6]),
                mem_info: std::mem::transmute::<*mut c_void, MemInfoFn>(table[7]),
                error_name: (!table[8].is_null())
                    .then(|| std::mem::transmute::<*mut c_void, ErrorNameFn>(table[8])),
                resolved,
                device: c_int::try_from(device).unwrap_or(0),
            })
        }
    }

    pub fn error(&self, rc: CuResult) -> CudaErrorInfo {
        let mut name = format!("CUDA error {rc}");
        if let Some(f) = self.error_name {
            let mut p: *const c_char = std::ptr::null();
            // SAFETY: valid out-pointer; the driver returns a static string or an error.
            if unsafe { f(rc, &raw mut p) } == 0 && !p.is_null() {
                // SAFETY: a NUL-terminated static string of the driver.
                name = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
            }
        }
        CudaErrorInfo {
            code: i64::from(rc),
            name,
        }
    }

    fn check(&self, call: &str, rc: CuResult) -> Result<(), String> {
        if rc == 0 {
            Ok(())
        } else {
            let e = self.error(rc);
            Err(format!("{call} failed: {} ({})", e.name, e.code))
        }
    }

    /// `cuInit(0)`, then the device's primary context, current on this thread.
    pub fn start(&self) -> Result<(), String> {
        // SAFETY: no pointer arguments.
        self.check("cuInit", unsafe { (self.init)(0) })?;
        let mut dev: c_int = 0;
        // SAFETY: valid out-pointer.
        self.check("cuDeviceGet", unsafe {
            (self.device_get)(&raw mut dev, self.device)
        })?;
        let mut ctx: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        self.check("cuDevicePrimaryCtxRetain", unsafe {
            (self.retain)(&raw mut ctx, dev)
        })?;
        // SAFETY: the context the driver just returned.
        self.check("cuCtxSetCurrent", unsafe { (self.set_current)(ctx) })
    }

    /// Releases the primary context retained by [`Driver::start`].
    pub fn stop(&self) {
        // SAFETY: releases what this process retained.
        let _ = unsafe { (self.release)(self.device) };
    }

    pub fn mem_info(&self) -> Option<MemInfo> {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: valid out-pointers.
        let rc = unsafe { (self.mem_info)(&raw mut free, &raw mut total) };
        (rc == 0).then(|| MemInfo {
            total: total as u64,
            free: free as u64,
            used: (total as u64).saturating_sub(free as u64),
        })
    }
}

impl DeviceMemory for &Driver {
    fn alloc(&mut self, bytes: u64) -> Result<u64, (i64, String)> {
        let mut ptr = 0u64;
        let size = usize::try_from(bytes).unwrap_or(usize::MAX);
        // SAFETY: valid out-pointer; plain device memory.
        let rc = unsafe { (self.alloc)(&raw mut ptr, size) };
        if rc == 0 {
            Ok(ptr)
        } else {
            let e = self.error(rc);
            Err((e.code, e.name))
        }
    }
    fn free(&mut self, handle: u64) -> Result<(), (i64, String)> {
        // SAFETY: `handle` came from alloc above and is freed once.
        let rc = unsafe { (self.free)(handle) };
        if rc == 0 {
            Ok(())
        } else {
            let e = self.error(rc);
            Err((e.code, e.name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_s_own_dlsym_is_found_and_lives_in_libc() {
        let real = libc_dlsym().expect("glibc exports a versioned dlsym");
        let object = object_of(real as *const c_void).expect("an object");
        assert!(
            object.contains("libc.so") || object.contains("libdl.so"),
            "{object}"
        );
        // It works: it finds itself.
        // SAFETY: a lookup on the default scope, nothing called.
        let again = unsafe { real(libc::RTLD_DEFAULT, c"dlvsym".as_ptr()) };
        assert!(!again.is_null());
    }

    #[test]
    fn without_a_driver_every_lookup_says_why() {
        for lookup in [
            Lookup::Program,
            Lookup::LibcDlsym,
            Lookup::Dlmopen,
            Lookup::ProcAddress,
        ] {
            match Driver::open(lookup, 0) {
                Ok(d) => assert!(
                    d.resolved.iter().any(|r| r.name == "cuMemAlloc_v2"),
                    "{lookup:?}: {:?}",
                    d.resolved
                ),
                Err(e) => assert!(
                    e.contains("libcuda") || e.contains("entry points") || e.contains("cuGetProc"),
                    "{lookup:?}: {e}"
                ),
            }
        }
    }
}
