//! The CUDA driver API, the part the probe needs, loaded at run time.

use std::ffi::{c_char, c_int, c_uint, c_void};

use libloading::Library;

use super::{LoadError, c_buf_to_string};
use crate::report::{CudaErrorInfo, MemInfo};

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;
type CuDevicePtr = u64;

pub const CUDA_SUCCESS: i64 = 0;
pub const CUDA_ERROR_OUT_OF_MEMORY: i64 = 2;

/// A failed driver call: which call, its code and the driver's name for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call} failed: {name} ({code})")]
pub struct CuError {
    pub call: &'static str,
    pub code: i64,
    pub name: String,
}

impl CuError {
    pub fn info(&self) -> CudaErrorInfo {
        CudaErrorInfo {
            code: self.code,
            name: self.name.clone(),
        }
    }
}

/// An opened libcuda with the entry points the probe uses.
#[derive(Debug)]
pub struct Cuda {
    init: unsafe extern "C" fn(c_uint) -> CuResult,
    driver_get_version: unsafe extern "C" fn(*mut c_int) -> CuResult,
    device_get_count: unsafe extern "C" fn(*mut c_int) -> CuResult,
    device_get: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult,
    device_get_name: unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult,
    device_get_uuid: unsafe extern "C" fn(*mut [u8; 16], CuDevice) -> CuResult,
    device_total_mem: unsafe extern "C" fn(*mut usize, CuDevice) -> CuResult,
    primary_ctx_retain: unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult,
    primary_ctx_release: unsafe extern "C" fn(CuDevice) -> CuResult,
    ctx_set_current: unsafe extern "C" fn(CuContext) -> CuResult,
    mem_get_info: unsafe extern "C" fn(*mut usize, *mut usize) -> CuResult,
    mem_alloc: unsafe extern "C" fn(*mut CuDevicePtr, usize) -> CuResult,
    mem_free: unsafe extern "C" fn(CuDevicePtr) -> CuResult,
    get_error_name: Option<unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult>,
    /// The optional entry points (other allocation paths, streams, kernels, copies).
    pub ext: super::cuda_ext::Ext,
    // Keeps the function pointers above valid; dropped last.
    _lib: Library,
}

macro_rules! sym {
    ($lib:expr, $name:literal) => {{
        // SAFETY: the symbol is a CUDA driver entry point whose C signature matches the field it
        // is stored in; the library outlives the pointer because both live in `Cuda`.
        let s = unsafe { $lib.get(concat!($name, "\0").as_bytes()) }.map_err(|e| LoadError {
            library: "libcuda.so.1".into(),
            reason: format!("symbol {} missing: {e}", $name),
            hint: "the driver is too old or not an NVIDIA driver".into(),
        })?;
        *s
    }};
}

impl Cuda {
    /// Opens `libcuda.so.1` (then `libcuda.so`).
    pub fn load() -> Result<Self, LoadError> {
        let mut reasons = Vec::new();
        for name in ["libcuda.so.1", "libcuda.so"] {
            // SAFETY: loading the NVIDIA driver library runs its initialisers, which is what any
            // CUDA program does; nothing else is assumed about the process.
            match unsafe { Library::new(name) } {
                Ok(lib) => return Self::from_library(lib),
                Err(e) => reasons.push(e.to_string()),
            }
        }
        Err(LoadError {
            library: "libcuda.so.1".into(),
            reason: reasons.join("; "),
            hint: "no NVIDIA driver is visible here: on a host install the driver; in a pod, the \
                   container must run with the nvidia runtime (make it containerd's default \
                   runtime, or set runtimeClassName: nvidia)"
                .into(),
        })
    }

    fn from_library(lib: Library) -> Result<Self, LoadError> {
        // cuDeviceGetUuid_v2 is preferred; older drivers only have cuDeviceGetUuid.
        // SAFETY: same signature for both names.
        let uuid = match unsafe { lib.get(b"cuDeviceGetUuid_v2\0") } {
            Ok(s) => *s,
            Err(_) => sym!(lib, "cuDeviceGetUuid"),
        };
        // SAFETY: cuGetErrorName(CUresult, const char**) -> CUresult.
        let get_error_name = unsafe { lib.get(b"cuGetErrorName\0") }.ok().map(|s| *s);
        Ok(Self {
            init: sym!(lib, "cuInit"),
            driver_get_version: sym!(lib, "cuDriverGetVersion"),
            device_get_count: sym!(lib, "cuDeviceGetCount"),
            device_get: sym!(lib, "cuDeviceGet"),
            device_get_name: sym!(lib, "cuDeviceGetName"),
            device_get_uuid: uuid,
            device_total_mem: sym!(lib, "cuDeviceTotalMem_v2"),
            primary_ctx_retain: sym!(lib, "cuDevicePrimaryCtxRetain"),
            primary_ctx_release: sym!(lib, "cuDevicePrimaryCtxRelease_v2"),
            ctx_set_current: sym!(lib, "cuCtxSetCurrent"),
            mem_get_info: sym!(lib, "cuMemGetInfo_v2"),
            mem_alloc: sym!(lib, "cuMemAlloc_v2"),
            mem_free: sym!(lib, "cuMemFree_v2"),
            get_error_name,
            ext: super::cuda_ext::Ext::load(&lib),
            _lib: lib,
        })
    }

    /// The driver's name for a result code, e.g. `CUDA_ERROR_OUT_OF_MEMORY`.
    pub fn error_name(&self, code: i64) -> String {
        let (Some(f), Ok(code32)) = (self.get_error_name, i32::try_from(code)) else {
            return format!("CUDA error {code}");
        };
        let mut ptr: *const c_char = std::ptr::null();
        // SAFETY: valid out-pointer; the driver returns a static string or an error.
        let rc = unsafe { f(code32, &raw mut ptr) };
        if rc != 0 || ptr.is_null() {
            return format!("unknown CUDA result {code} (not a CUDA error code)");
        }
        // SAFETY: the driver returned a NUL-terminated static string.
        unsafe { std::ffi::CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn check(&self, call: &'static str, rc: CuResult) -> Result<(), CuError> {
        if rc == 0 {
            Ok(())
        } else {
            Err(CuError {
                call,
                code: i64::from(rc),
                name: self.error_name(i64::from(rc)),
            })
        }
    }

    pub fn init(&self) -> Result<(), CuError> {
        // SAFETY: cuInit(0) has no pointer arguments.
        self.check("cuInit", unsafe { (self.init)(0) })
    }

    pub fn driver_version(&self) -> Result<i32, CuError> {
        let mut v = 0;
        // SAFETY: valid out-pointer.
        self.check("cuDriverGetVersion", unsafe {
            (self.driver_get_version)(&raw mut v)
        })?;
        Ok(v)
    }

    pub fn device_count(&self) -> Result<u32, CuError> {
        let mut n = 0;
        // SAFETY: valid out-pointer.
        self.check("cuDeviceGetCount", unsafe {
            (self.device_get_count)(&raw mut n)
        })?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    pub fn device(&self, ordinal: u32) -> Result<Device, CuError> {
        let mut d = 0;
        let ordinal = c_int::try_from(ordinal).unwrap_or(c_int::MAX);
        // SAFETY: valid out-pointer; an out-of-range ordinal is reported as an error code.
        self.check("cuDeviceGet", unsafe {
            (self.device_get)(&raw mut d, ordinal)
        })?;
        Ok(Device(d))
    }

    pub fn name(&self, dev: Device) -> Result<String, CuError> {
        let mut buf = [0 as c_char; 256];
        // SAFETY: the buffer length passed matches the buffer.
        self.check("cuDeviceGetName", unsafe {
            (self.device_get_name)(buf.as_mut_ptr(), 256, dev.0)
        })?;
        Ok(c_buf_to_string(&buf))
    }

    /// The UUID in nvidia-smi's form, `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn uuid(&self, dev: Device) -> Result<String, CuError> {
        let mut raw = [0u8; 16];
        // SAFETY: CUuuid is 16 bytes.
        self.check("cuDeviceGetUuid", unsafe {
            (self.device_get_uuid)(&raw mut raw, dev.0)
        })?;
        Ok(format_uuid(&raw))
    }

    pub fn total_mem(&self, dev: Device) -> Result<u64, CuError> {
        let mut bytes = 0usize;
        // SAFETY: valid out-pointer.
        self.check("cuDeviceTotalMem_v2", unsafe {
            (self.device_total_mem)(&raw mut bytes, dev.0)
        })?;
        Ok(bytes as u64)
    }

    /// Retains the device's primary context and makes it current on this thread.
    pub fn enter_primary_context(&self, dev: Device) -> Result<(), CuError> {
        let mut ctx: CuContext = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        self.check("cuDevicePrimaryCtxRetain", unsafe {
            (self.primary_ctx_retain)(&raw mut ctx, dev.0)
        })?;
        // SAFETY: ctx was just returned by the driver.
        self.check("cuCtxSetCurrent", unsafe { (self.ctx_set_current)(ctx) })
    }

    pub fn release_primary_context(&self, dev: Device) -> Result<(), CuError> {
        // SAFETY: releases a context this process retained.
        self.check("cuDevicePrimaryCtxRelease_v2", unsafe {
            (self.primary_ctx_release)(dev.0)
        })
    }

    /// `cuMemGetInfo_v2` for the current context.
    pub fn mem_info(&self) -> Result<MemInfo, CuError> {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: valid out-pointers.
        self.check("cuMemGetInfo_v2", unsafe {
            (self.mem_get_info)(&raw mut free, &raw mut total)
        })?;
        let (free, total) = (free as u64, total as u64);
        Ok(MemInfo {
            total,
            free,
            used: total.saturating_sub(free),
        })
    }

    /// `cuMemAlloc_v2`: returns the device pointer, or the raw error.
    pub fn mem_alloc(&self, bytes: u64) -> Result<u64, CuError> {
        let mut ptr: CuDevicePtr = 0;
        let size = usize::try_from(bytes).unwrap_or(usize::MAX);
        // SAFETY: valid out-pointer; plain device memory, never managed.
        self.check("cuMemAlloc_v2", unsafe {
            (self.mem_alloc)(&raw mut ptr, size)
        })?;
        Ok(ptr)
    }

    /// `cuMemAlloc_v2` returning the raw result code (for probes that expect odd answers).
    pub fn mem_alloc_raw(&self, bytes: u64, ptr: &mut u64) -> i32 {
        let size = usize::try_from(bytes).unwrap_or(usize::MAX);
        // SAFETY: valid out-pointer; plain device memory.
        unsafe { (self.mem_alloc)(ptr, size) }
    }

    pub fn mem_free(&self, ptr: u64) -> Result<(), CuError> {
        // SAFETY: `ptr` came from mem_alloc and is freed once (the caller owns it).
        self.check("cuMemFree_v2", unsafe { (self.mem_free)(ptr) })
    }
}

/// A CUDA device handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device(pub(crate) CuDevice);

pub fn format_uuid(raw: &[u8; 16]) -> String {
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_in_nvidia_smi_form() {
        let raw = [
            0x4f, 0x7e, 0xfa, 0x07, 0x0f, 0x69, 0xf6, 0x2e, 0x59, 0x58, 0x36, 0x5e, 0xd3, 0x78,
            0x5e, 0xb2,
        ];
        assert_eq!(
            format_uuid(&raw),
            "GPU-4f7efa07-0f69-f62e-5958-365ed3785eb2"
        );
    }

    #[test]
    fn loading_without_a_driver_is_an_error_with_a_fix() {
        // On machines with a driver this loads; without one it must explain, not panic.
        match Cuda::load() {
            Ok(cuda) => assert!(cuda.error_name(2).contains("OUT_OF_MEMORY")),
            Err(e) => assert!(e.to_string().contains("nvidia runtime"), "{e}"),
        }
    }
}
