//! NVML, the part the probe needs, loaded at run time.

use std::ffi::{c_char, c_int, c_uint, c_void};

use libloading::Library;

use super::{LoadError, c_buf_to_string};
use crate::report::MemInfo;

type NvmlReturn = c_int;
type NvmlDevice = *mut c_void;

#[repr(C)]
#[derive(Default)]
struct NvmlMemory {
    total: u64,
    free: u64,
    used: u64,
}

/// `nvmlProcessInfo_t` (the layout the `_v3` process queries fill).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct NvmlProcessInfo {
    pid: c_uint,
    used_gpu_memory: u64,
    gpu_instance_id: c_uint,
    compute_instance_id: c_uint,
}

type ProcessQuery =
    unsafe extern "C" fn(NvmlDevice, *mut c_uint, *mut NvmlProcessInfo) -> NvmlReturn;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call} failed: {message} ({code})")]
pub struct NvmlError {
    pub call: &'static str,
    pub code: i32,
    pub message: String,
}

/// An initialised NVML; shut down on drop.
#[derive(Debug)]
pub struct Nvml {
    shutdown: unsafe extern "C" fn() -> NvmlReturn,
    error_string: unsafe extern "C" fn(NvmlReturn) -> *const c_char,
    driver_version: unsafe extern "C" fn(*mut c_char, c_uint) -> NvmlReturn,
    device_count: unsafe extern "C" fn(*mut c_uint) -> NvmlReturn,
    handle_by_index: unsafe extern "C" fn(c_uint, *mut NvmlDevice) -> NvmlReturn,
    handle_by_uuid: unsafe extern "C" fn(*const c_char, *mut NvmlDevice) -> NvmlReturn,
    device_name: unsafe extern "C" fn(NvmlDevice, *mut c_char, c_uint) -> NvmlReturn,
    device_uuid: unsafe extern "C" fn(NvmlDevice, *mut c_char, c_uint) -> NvmlReturn,
    memory_info: unsafe extern "C" fn(NvmlDevice, *mut NvmlMemory) -> NvmlReturn,
    /// Optional: older drivers lack them, and a missing one only hides a fact.
    compute_processes: Option<ProcessQuery>,
    mps_processes: Option<ProcessQuery>,
    mig_mode: Option<unsafe extern "C" fn(NvmlDevice, *mut c_uint, *mut c_uint) -> NvmlReturn>,
    _lib: Library,
}

/// An NVML device handle.
#[derive(Debug, Clone, Copy)]
pub struct NvmlDeviceHandle(NvmlDevice);

macro_rules! sym {
    ($lib:expr, $name:literal) => {{
        // SAFETY: an NVML entry point whose C signature matches the field; the library lives in
        // the same struct as the pointer.
        let s = unsafe { $lib.get(concat!($name, "\0").as_bytes()) }.map_err(|e| LoadError {
            library: "libnvidia-ml.so.1".into(),
            reason: format!("symbol {} missing: {e}", $name),
            hint: "the NVML library is too old".into(),
        })?;
        *s
    }};
}

impl Nvml {
    /// Opens `libnvidia-ml.so.1` and calls `nvmlInit_v2`.
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
                Err(e) => reasons.push(e.to_string()),
            }
        }
        let Some(lib) = lib else {
            return Err(LoadError {
                library: "libnvidia-ml.so.1".into(),
                reason: reasons.join("; "),
                hint: "NVML comes with the NVIDIA driver; in a pod it is mounted by the nvidia runtime".into(),
            });
        };
        let init: unsafe extern "C" fn() -> NvmlReturn = sym!(lib, "nvmlInit_v2");
        let nvml = Self {
            shutdown: sym!(lib, "nvmlShutdown"),
            error_string: sym!(lib, "nvmlErrorString"),
            driver_version: sym!(lib, "nvmlSystemGetDriverVersion"),
            device_count: sym!(lib, "nvmlDeviceGetCount_v2"),
            handle_by_index: sym!(lib, "nvmlDeviceGetHandleByIndex_v2"),
            handle_by_uuid: sym!(lib, "nvmlDeviceGetHandleByUUID"),
            device_name: sym!(lib, "nvmlDeviceGetName"),
            device_uuid: sym!(lib, "nvmlDeviceGetUUID"),
            memory_info: sym!(lib, "nvmlDeviceGetMemoryInfo"),
            // SAFETY: NVML entry points whose C signatures match the field types; the library
            // lives in the same struct as the pointers.
            compute_processes: unsafe { lib.get(b"nvmlDeviceGetComputeRunningProcesses_v3\0") }
                .ok()
                .map(|s| *s),
            // SAFETY: as above.
            mps_processes: unsafe { lib.get(b"nvmlDeviceGetMPSComputeRunningProcesses_v3\0") }
                .ok()
                .map(|s| *s),
            // SAFETY: as above.
            mig_mode: unsafe { lib.get(b"nvmlDeviceGetMigMode\0") }
                .ok()
                .map(|s| *s),
            _lib: lib,
        };
        // SAFETY: no arguments.
        let rc = unsafe { init() };
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
        // SAFETY: nvmlErrorString returns a static NUL-terminated string for any code.
        let ptr = unsafe { (self.error_string)(rc) };
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
                code: rc,
                message: self.message(rc),
            })
        }
    }

    pub fn driver_version(&self) -> Result<String, NvmlError> {
        let mut buf = [0 as c_char; 96];
        // SAFETY: buffer and its length match.
        self.check("nvmlSystemGetDriverVersion", unsafe {
            (self.driver_version)(buf.as_mut_ptr(), 96)
        })?;
        Ok(c_buf_to_string(&buf))
    }

    pub fn device_count(&self) -> Result<u32, NvmlError> {
        let mut n = 0;
        // SAFETY: valid out-pointer.
        self.check("nvmlDeviceGetCount_v2", unsafe {
            (self.device_count)(&raw mut n)
        })?;
        Ok(n)
    }

    pub fn handle_by_index(&self, index: u32) -> Result<NvmlDeviceHandle, NvmlError> {
        let mut h: NvmlDevice = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        self.check("nvmlDeviceGetHandleByIndex_v2", unsafe {
            (self.handle_by_index)(index, &raw mut h)
        })?;
        Ok(NvmlDeviceHandle(h))
    }

    pub fn handle_by_uuid(&self, uuid: &str) -> Result<NvmlDeviceHandle, NvmlError> {
        let c = std::ffi::CString::new(uuid).map_err(|_| NvmlError {
            call: "nvmlDeviceGetHandleByUUID",
            code: -1,
            message: "UUID contains a NUL byte".into(),
        })?;
        let mut h: NvmlDevice = std::ptr::null_mut();
        // SAFETY: NUL-terminated string and valid out-pointer.
        self.check("nvmlDeviceGetHandleByUUID", unsafe {
            (self.handle_by_uuid)(c.as_ptr(), &raw mut h)
        })?;
        Ok(NvmlDeviceHandle(h))
    }

    pub fn name(&self, d: NvmlDeviceHandle) -> Result<String, NvmlError> {
        let mut buf = [0 as c_char; 96];
        // SAFETY: buffer and its length match; handle from NVML.
        self.check("nvmlDeviceGetName", unsafe {
            (self.device_name)(d.0, buf.as_mut_ptr(), 96)
        })?;
        Ok(c_buf_to_string(&buf))
    }

    pub fn uuid(&self, d: NvmlDeviceHandle) -> Result<String, NvmlError> {
        let mut buf = [0 as c_char; 96];
        // SAFETY: buffer and its length match; handle from NVML.
        self.check("nvmlDeviceGetUUID", unsafe {
            (self.device_uuid)(d.0, buf.as_mut_ptr(), 96)
        })?;
        Ok(c_buf_to_string(&buf))
    }

    /// `nvmlDeviceGetMemoryInfo` (HAMi-core rewrites it to the slice when a limit is set).
    pub fn memory(&self, d: NvmlDeviceHandle) -> Result<MemInfo, NvmlError> {
        let mut m = NvmlMemory::default();
        // SAFETY: nvmlMemory_t is three u64 in this order; handle from NVML.
        self.check("nvmlDeviceGetMemoryInfo", unsafe {
            (self.memory_info)(d.0, &raw mut m)
        })?;
        Ok(MemInfo {
            total: m.total,
            free: m.free,
            used: m.used,
        })
    }
}

impl Nvml {
    fn processes(
        &self,
        call: &'static str,
        f: Option<ProcessQuery>,
        d: NvmlDeviceHandle,
    ) -> Result<Vec<(u32, u64)>, NvmlError> {
        let f = f.ok_or(NvmlError {
            call,
            code: -2,
            message: "not in this driver's NVML".into(),
        })?;
        let mut infos = [NvmlProcessInfo::default(); 256];
        let mut count: c_uint = 256;
        // SAFETY: `count` is the capacity of `infos`; NVML writes at most that many entries and
        // sets `count` to how many it wrote.
        self.check(call, unsafe { f(d.0, &raw mut count, infos.as_mut_ptr()) })?;
        Ok(infos
            .iter()
            .take(count.min(256) as usize)
            .map(|p| (p.pid, p.used_gpu_memory))
            .collect())
    }

    /// Processes with a compute context on the device: (pid, used bytes).
    pub fn compute_processes(&self, d: NvmlDeviceHandle) -> Result<Vec<(u32, u64)>, NvmlError> {
        self.processes(
            "nvmlDeviceGetComputeRunningProcesses_v3",
            self.compute_processes,
            d,
        )
    }

    /// CUDA MPS clients on the device: (pid, used bytes).
    pub fn mps_processes(&self, d: NvmlDeviceHandle) -> Result<Vec<(u32, u64)>, NvmlError> {
        self.processes(
            "nvmlDeviceGetMPSComputeRunningProcesses_v3",
            self.mps_processes,
            d,
        )
    }

    /// The current MIG mode (read only): `Some(true)` enabled, `Some(false)` disabled, `None`
    /// when the device or driver cannot say (no MIG support).
    pub fn mig_enabled(&self, d: NvmlDeviceHandle) -> Option<bool> {
        let f = self.mig_mode?;
        let (mut current, mut pending) = (0 as c_uint, 0 as c_uint);
        // SAFETY: two valid out-pointers; handle from NVML. This only reads the mode.
        let rc = unsafe { f(d.0, &raw mut current, &raw mut pending) };
        (rc == 0).then_some(current == 1)
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: NVML was initialised by `init`; shutdown takes no arguments.
        let _ = unsafe { (self.shutdown)() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_without_a_driver_explains() {
        match Nvml::init() {
            Ok(nvml) => assert!(nvml.device_count().is_ok()),
            Err(e) => assert!(e.to_string().contains("libnvidia-ml.so.1"), "{e}"),
        }
    }
}
