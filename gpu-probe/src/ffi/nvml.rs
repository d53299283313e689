//! NVML, the part the probe needs: nvml-wrapper-sys's generated declarations (types, structs and
//! each entry point's signature), resolved here by name with libloading so that only the dozen
//! entry points the probe calls are looked up, and each one's presence is checked before it is
//! called (the generated methods would panic on a missing one).

use std::ffi::{c_char, c_uint};

use libloading::Library;
use nvml_wrapper_sys::bindings as sys;

use super::{LoadError, c_buf_to_string, loader_error};
use crate::report::MemInfo;

type NvmlReturn = sys::nvmlReturn_t;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call} failed: {message} ({code})")]
pub struct NvmlError {
    pub call: &'static str,
    pub code: i32,
    pub message: String,
}

/// What a call reports when this driver's NVML lacks its entry point (not an NVML code).
const ENTRY_POINT_MISSING: i32 = -2;

/// Declares the NVML entry points the probe calls: each is resolved by its exact name, and its
/// signature is checked at compile time against nvml-wrapper-sys's generated one.
macro_rules! nvml_entry_points {
    (
        required { $( $req:ident ( $($rarg:ty),* ) -> $rret:ty; )* }
        optional { $( $opt:ident ( $($oarg:ty),* ) -> $oret:ty; )* }
    ) => {
        /// NVML's entry points (`None`: this NVML lacks it).
        #[allow(non_snake_case)]
        #[derive(Debug, Default, Clone, Copy)]
        struct Api {
            $( $req: Option<unsafe extern "C" fn($($rarg),*) -> $rret>, )*
            $( $opt: Option<unsafe extern "C" fn($($oarg),*) -> $oret>, )*
        }

        impl Api {
            fn resolve(lib: &Library) -> Self {
                Self {
                    $(
                        // SAFETY: the field's type is nvml-wrapper-sys's signature of this symbol
                        // (checked below); the library lives as long as the table (both in Nvml).
                        $req: unsafe { lib.get(stringify!($req)) }.ok().map(|s| *s),
                    )*
                    $(
                        // SAFETY: as above.
                        $opt: unsafe { lib.get(stringify!($opt)) }.ok().map(|s| *s),
                    )*
                }
            }

            /// The first required entry point this NVML lacks.
            fn first_missing(&self) -> Option<&'static str> {
                $( if self.$req.is_none() { return Some(stringify!($req)); } )*
                None
            }
        }

        // The signatures are nvml-wrapper-sys's: a mismatch is a type error here. Never called,
        // so none of the generated loader is linked.
        #[allow(dead_code, non_snake_case)]
        fn signatures_are_nvml_wrapper_sys(lib: &sys::NvmlLib) {
            $( let _: &Result<unsafe extern "C" fn($($rarg),*) -> $rret, _> = &lib.$req; )*
            $( let _: &Result<unsafe extern "C" fn($($oarg),*) -> $oret, _> = &lib.$opt; )*
        }
    };
}

nvml_entry_points! {
    required {
        nvmlInit_v2() -> NvmlReturn;
        nvmlShutdown() -> NvmlReturn;
        nvmlErrorString(NvmlReturn) -> *const c_char;
        nvmlSystemGetDriverVersion(*mut c_char, c_uint) -> NvmlReturn;
        nvmlDeviceGetCount_v2(*mut c_uint) -> NvmlReturn;
        nvmlDeviceGetHandleByIndex_v2(c_uint, *mut sys::nvmlDevice_t) -> NvmlReturn;
        nvmlDeviceGetHandleByUUID(*const c_char, *mut sys::nvmlDevice_t) -> NvmlReturn;
        nvmlDeviceGetName(sys::nvmlDevice_t, *mut c_char, c_uint) -> NvmlReturn;
        nvmlDeviceGetUUID(sys::nvmlDevice_t, *mut c_char, c_uint) -> NvmlReturn;
        nvmlDeviceGetMemoryInfo(sys::nvmlDevice_t, *mut sys::nvmlMemory_t) -> NvmlReturn;
    }
    optional {
        nvmlDeviceGetComputeRunningProcesses_v3(sys::nvmlDevice_t, *mut c_uint, *mut sys::nvmlProcessInfo_t) -> NvmlReturn;
        nvmlDeviceGetMPSComputeRunningProcesses_v3(sys::nvmlDevice_t, *mut c_uint, *mut sys::nvmlProcessInfo_t) -> NvmlReturn;
        nvmlDeviceGetMigMode(sys::nvmlDevice_t, *mut c_uint, *mut c_uint) -> NvmlReturn;
    }
}

type ProcessQuery =
    unsafe extern "C" fn(sys::nvmlDevice_t, *mut c_uint, *mut sys::nvmlProcessInfo_t) -> NvmlReturn;

/// An initialised NVML; shut down on drop.
#[derive(Debug)]
pub struct Nvml {
    api: Api,
    // Keeps the function pointers above valid; dropped last.
    _lib: Library,
}

/// An NVML device handle.
#[derive(Debug, Clone, Copy)]
pub struct NvmlDeviceHandle(sys::nvmlDevice_t);

/// A resolved entry point, or the error of a call this NVML cannot make.
fn entry<F: Copy>(f: Option<F>, call: &'static str) -> Result<F, NvmlError> {
    f.ok_or(NvmlError {
        call,
        code: ENTRY_POINT_MISSING,
        message: "not in this driver's NVML".into(),
    })
}

fn code(rc: NvmlReturn) -> i32 {
    i32::try_from(rc).unwrap_or(i32::MAX)
}

impl Nvml {
    /// Opens `libnvidia-ml.so.1` (then `libnvidia-ml.so`) and calls `nvmlInit_v2`.
    pub fn init() -> Result<Self, LoadError> {
        let mut reasons = Vec::new();
        let mut lib = None;
        for name in ["libnvidia-ml.so.1", "libnvidia-ml.so"] {
            // SAFETY: loading the NVML library runs its initialisers, as any NVML user does.
            match unsafe { Library::new(name) } {
                Ok(l) => {
                    lib = Some(l);
                    break;
                }
                Err(e) => reasons.push(loader_error(&e)),
            }
        }
        let Some(lib) = lib else {
            return Err(LoadError {
                library: "libnvidia-ml.so.1".into(),
                reason: reasons.join("; "),
                hint: "NVML comes with the NVIDIA driver; in a pod it is mounted by the nvidia runtime".into(),
            });
        };
        Self::init_from(lib)
    }

    /// Resolves the entry points in an opened `lib` and calls `nvmlInit_v2`.
    fn init_from(lib: Library) -> Result<Self, LoadError> {
        let api = Api::resolve(&lib);
        if let Some(symbol) = api.first_missing() {
            // SAFETY: only asks the loader why the symbol is absent; the pointer is not kept.
            let why = unsafe { lib.get::<*const std::ffi::c_void>(symbol) }
                .err()
                .map_or_else(|| "not found".to_owned(), |e| loader_error(&e));
            return Err(LoadError {
                library: "libnvidia-ml.so.1".into(),
                reason: format!("symbol {symbol} missing: {why}"),
                hint: "the NVML library is too old".into(),
            });
        }
        let nvml = Self { api, _lib: lib };
        let rc = match entry(nvml.api.nvmlInit_v2, "nvmlInit_v2") {
            // SAFETY: no arguments.
            Ok(init) => unsafe { init() },
            Err(e) => {
                std::mem::forget(nvml);
                return Err(LoadError {
                    library: "libnvidia-ml.so.1".into(),
                    reason: e.to_string(),
                    hint: "the NVML library is too old".into(),
                });
            }
        };
        if rc != 0 {
            let message = nvml.message(rc);
            // Drop without shutdown: init failed.
            std::mem::forget(nvml);
            return Err(LoadError {
                library: "libnvidia-ml.so.1".into(),
                reason: format!("nvmlInit_v2 failed: {message} ({rc})"),
                hint: "the driver is loaded but NVML cannot reach a GPU (no device, or a driver/library version mismatch)".into(),
            });
        }
        Ok(nvml)
    }

    fn message(&self, rc: NvmlReturn) -> String {
        let Ok(f) = entry(self.api.nvmlErrorString, "nvmlErrorString") else {
            return format!("NVML error {rc}");
        };
        // SAFETY: nvmlErrorString returns a static NUL-terminated string for any code.
        let ptr = unsafe { f(rc) };
        if ptr.is_null() {
            return format!("NVML error {rc}");
        }
        // SAFETY: non-null static string from NVML.
        unsafe { std::ffi::CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    }

    fn check(&self, call: &'static str, rc: NvmlReturn) -> Result<(), NvmlError> {
        if rc == 0 {
            Ok(())
        } else {
            Err(NvmlError {
                call,
                code: code(rc),
                message: self.message(rc),
            })
        }
    }

    pub fn driver_version(&self) -> Result<String, NvmlError> {
        const CALL: &str = "nvmlSystemGetDriverVersion";
        let f = entry(self.api.nvmlSystemGetDriverVersion, CALL)?;
        let mut buf = [0 as c_char; 96];
        // SAFETY: buffer and its length match.
        self.check(CALL, unsafe { f(buf.as_mut_ptr(), 96) })?;
        Ok(c_buf_to_string(&buf))
    }

    pub fn device_count(&self) -> Result<u32, NvmlError> {
        const CALL: &str = "nvmlDeviceGetCount_v2";
        let f = entry(self.api.nvmlDeviceGetCount_v2, CALL)?;
        let mut n = 0;
        // SAFETY: valid out-pointer.
        self.check(CALL, unsafe { f(&raw mut n) })?;
        Ok(n)
    }

    pub fn handle_by_index(&self, index: u32) -> Result<NvmlDeviceHandle, NvmlError> {
        const CALL: &str = "nvmlDeviceGetHandleByIndex_v2";
        let f = entry(self.api.nvmlDeviceGetHandleByIndex_v2, CALL)?;
        let mut h: sys::nvmlDevice_t = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        self.check(CALL, unsafe { f(index, &raw mut h) })?;
        Ok(NvmlDeviceHandle(h))
    }

    pub fn handle_by_uuid(&self, uuid: &str) -> Result<NvmlDeviceHandle, NvmlError> {
        const CALL: &str = "nvmlDeviceGetHandleByUUID";
        let f = entry(self.api.nvmlDeviceGetHandleByUUID, CALL)?;
        let c = std::ffi::CString::new(uuid).map_err(|_| NvmlError {
            call: CALL,
            code: -1,
            message: "UUID contains a NUL byte".into(),
        })?;
        let mut h: sys::nvmlDevice_t = std::ptr::null_mut();
        // SAFETY: NUL-terminated string and valid out-pointer.
        self.check(CALL, unsafe { f(c.as_ptr(), &raw mut h) })?;
        Ok(NvmlDeviceHandle(h))
    }

    pub fn name(&self, d: NvmlDeviceHandle) -> Result<String, NvmlError> {
        const CALL: &str = "nvmlDeviceGetName";
        let f = entry(self.api.nvmlDeviceGetName, CALL)?;
        let mut buf = [0 as c_char; 96];
        // SAFETY: buffer and its length match; handle from NVML.
        self.check(CALL, unsafe { f(d.0, buf.as_mut_ptr(), 96) })?;
        Ok(c_buf_to_string(&buf))
    }

    pub fn uuid(&self, d: NvmlDeviceHandle) -> Result<String, NvmlError> {
        const CALL: &str = "nvmlDeviceGetUUID";
        let f = entry(self.api.nvmlDeviceGetUUID, CALL)?;
        let mut buf = [0 as c_char; 96];
        // SAFETY: buffer and its length match; handle from NVML.
        self.check(CALL, unsafe { f(d.0, buf.as_mut_ptr(), 96) })?;
        Ok(c_buf_to_string(&buf))
    }

    /// `nvmlDeviceGetMemoryInfo` (HAMi-core rewrites it to the slice when a limit is set).
    pub fn memory(&self, d: NvmlDeviceHandle) -> Result<MemInfo, NvmlError> {
        const CALL: &str = "nvmlDeviceGetMemoryInfo";
        let f = entry(self.api.nvmlDeviceGetMemoryInfo, CALL)?;
        let mut m = sys::nvmlMemory_t {
            total: 0,
            free: 0,
            used: 0,
        };
        // SAFETY: valid out-pointer to an nvmlMemory_t; handle from NVML.
        self.check(CALL, unsafe { f(d.0, &raw mut m) })?;
        Ok(MemInfo {
            total: m.total,
            free: m.free,
            used: m.used,
        })
    }

    /// A `_v3` process query: (pid, used bytes) of each process NVML lists.
    fn processes(
        &self,
        call: &'static str,
        f: Result<ProcessQuery, NvmlError>,
        d: NvmlDeviceHandle,
    ) -> Result<Vec<(u32, u64)>, NvmlError> {
        let f = f?;
        let empty = sys::nvmlProcessInfo_t {
            pid: 0,
            usedGpuMemory: 0,
            gpuInstanceId: 0,
            computeInstanceId: 0,
        };
        let mut infos = [empty; 256];
        let mut count: c_uint = 256;
        // SAFETY: `count` is the capacity of `infos`; NVML writes at most that many entries and
        // sets `count` to how many it wrote.
        self.check(call, unsafe { f(d.0, &raw mut count, infos.as_mut_ptr()) })?;
        Ok(infos
            .iter()
            .take(count.min(256) as usize)
            .map(|p| (p.pid, p.usedGpuMemory))
            .collect())
    }

    /// Processes with a compute context on the device: (pid, used bytes).
    pub fn compute_processes(&self, d: NvmlDeviceHandle) -> Result<Vec<(u32, u64)>, NvmlError> {
        const CALL: &str = "nvmlDeviceGetComputeRunningProcesses_v3";
        let f = entry(self.api.nvmlDeviceGetComputeRunningProcesses_v3, CALL);
        self.processes(CALL, f, d)
    }

    /// CUDA MPS clients on the device: (pid, used bytes).
    pub fn mps_processes(&self, d: NvmlDeviceHandle) -> Result<Vec<(u32, u64)>, NvmlError> {
        const CALL: &str = "nvmlDeviceGetMPSComputeRunningProcesses_v3";
        let f = entry(self.api.nvmlDeviceGetMPSComputeRunningProcesses_v3, CALL);
        self.processes(CALL, f, d)
    }

    /// The current MIG mode (read only): `Some(true)` enabled, `Some(false)` disabled, `None`
    /// when the device or driver cannot say (no MIG support).
    pub fn mig_enabled(&self, d: NvmlDeviceHandle) -> Option<bool> {
        let f = entry(self.api.nvmlDeviceGetMigMode, "nvmlDeviceGetMigMode").ok()?;
        let (mut current, mut pending) = (0 as c_uint, 0 as c_uint);
        // SAFETY: two valid out-pointers; handle from NVML. This only reads the mode.
        let rc = unsafe { f(d.0, &raw mut current, &raw mut pending) };
        (rc == 0).then_some(current == 1)
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        if let Ok(shutdown) = entry(self.api.nvmlShutdown, "nvmlShutdown") {
            // SAFETY: NVML was initialised by `init`; shutdown takes no arguments.
            let _ = unsafe { shutdown() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_without_nvml_is_an_error_naming_the_entry_point_not_a_panic() {
        // SAFETY: libc is already loaded in every process.
        let libc = unsafe { Library::new("libc.so.6") }.expect("libc opens");
        let text = Nvml::init_from(libc)
            .expect_err("libc is no NVML")
            .to_string();
        assert!(
            text.starts_with("libnvidia-ml.so.1 could not be loaded (symbol nvmlInit_v2 missing: "),
            "{text}"
        );
    }

    #[test]
    fn init_without_a_driver_explains() {
        match Nvml::init() {
            Ok(nvml) => assert!(nvml.device_count().is_ok()),
            Err(e) => assert!(e.to_string().contains("libnvidia-ml.so.1"), "{e}"),
        }
    }
}
