//! The CUDA driver API, the part the probe needs: cudarc's declarations, the driver opened at run
//! time (`libcuda.so.1`, else cudarc's loader), each entry point looked up (and its presence
//! checked) before it is called.

use std::ffi::{c_char, c_int, c_uint};
use std::sync::OnceLock;

use cudarc::driver::sys;
use libloading::Library;

use super::{LoadError, c_buf_to_string, loader_error};
use crate::report::{CudaErrorInfo, MemInfo};

/// A driver call's result as the C `int` the driver returns. cudarc's `CUresult` is a Rust enum,
/// which cannot hold the codes an interposer invents (HAMi-core's -1).
pub type RawResult = c_int;

pub const CUDA_SUCCESS: i64 = sys::CUresult::CUDA_SUCCESS as i64;
pub const CUDA_ERROR_OUT_OF_MEMORY: i64 = sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY as i64;
/// What a call reports when this driver lacks its entry point (not a CUDA code).
pub const ENTRY_POINT_MISSING: i64 = -2;

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

    /// The error of a call whose entry point this driver lacks.
    pub fn missing(call: &'static str) -> Self {
        Self {
            call,
            code: ENTRY_POINT_MISSING,
            name: "entry point missing in this driver".into(),
        }
    }
}

/// Looks `symbol` up in `lib`: `None` when the library lacks it.
///
/// # Safety
/// `F` must be the C signature of `symbol`, and `lib` must stay loaded while the pointer is used.
pub(crate) unsafe fn lookup<F: Copy>(lib: &Library, symbol: &str) -> Option<F> {
    // SAFETY: the caller guarantees the signature; looking a symbol up calls nothing.
    unsafe { lib.get::<F>(symbol) }.ok().map(|s| *s)
}

entry_points! {
    /// The entry points without which the probe cannot start: checked when libcuda is loaded.
    pub struct Core {
        init: cuInit(c_uint);
        driver_get_version: cuDriverGetVersion(*mut c_int);
        device_get_count: cuDeviceGetCount(*mut c_int);
        device_get: cuDeviceGet(*mut sys::CUdevice, c_int);
        device_get_name: cuDeviceGetName(*mut c_char, c_int, sys::CUdevice);
        device_total_mem: cuDeviceTotalMem_v2(*mut usize, sys::CUdevice);
        primary_ctx_retain: cuDevicePrimaryCtxRetain(*mut sys::CUcontext, sys::CUdevice);
        primary_ctx_release: cuDevicePrimaryCtxRelease_v2(sys::CUdevice);
        ctx_set_current: cuCtxSetCurrent(sys::CUcontext);
        mem_get_info: cuMemGetInfo_v2(*mut usize, *mut usize);
        mem_alloc: cuMemAlloc_v2(*mut sys::CUdeviceptr, usize);
        mem_free: cuMemFree_v2(sys::CUdeviceptr);
    }
}

/// `cuDeviceGetUuid_v2` is preferred; drivers before CUDA 11.4 only have `cuDeviceGetUuid`, which
/// is looked up only then (the same entry points as any CUDA program of that driver).
type GetUuid = unsafe extern "C" fn(*mut sys::CUuuid, sys::CUdevice) -> RawResult;
const _: unsafe fn(*mut sys::CUuuid, sys::CUdevice) -> sys::CUresult = sys::cuDeviceGetUuid_v2;
const _: unsafe fn(*mut sys::CUuuid, sys::CUdevice) -> sys::CUresult = sys::cuDeviceGetUuid;

/// `cuGetErrorName(CUresult, const char**)`, with the code passed as the C int it is, so that a
/// code no CUDA release defines can be asked about too (the driver then answers
/// CUDA_ERROR_INVALID_VALUE).
type GetErrorName = unsafe extern "C" fn(RawResult, *mut *const c_char) -> RawResult;
const _: unsafe fn(sys::CUresult, *mut *const c_char) -> sys::CUresult = sys::cuGetErrorName;

/// The loaded libcuda with the entry points the probe uses.
#[derive(Debug)]
pub struct Cuda {
    core: Core,
    device_get_uuid: GetUuid,
    get_error_name: Option<GetErrorName>,
    /// The optional entry points (other allocation paths, streams, kernels, copies).
    pub ext: super::cuda_ext::Ext,
}

/// Where the NVIDIA runtime puts the driver, and how to get it there.
const NO_DRIVER_HINT: &str = "no NVIDIA driver is visible here: on a host install the driver; in \
a pod, the container must run with the nvidia runtime (make it containerd's default runtime, or \
set runtimeClassName: nvidia)";

impl Cuda {
    /// Loads the driver and resolves the entry points; a missing library or required entry
    /// point is an error with the fix, never a panic.
    pub fn load() -> Result<Self, LoadError> {
        Self::from_library(driver_library()?)
    }

    fn from_library(lib: &'static Library) -> Result<Self, LoadError> {
        let core = Core::resolve(lib);
        let missing = |symbol: &str| {
            // SAFETY: only asks the loader why the symbol is absent; the pointer is not kept.
            let why = unsafe { lib.get::<*const std::ffi::c_void>(symbol) }
                .err()
                .map_or_else(|| "not found".to_owned(), |e| loader_error(&e));
            LoadError {
                library: "libcuda.so.1".into(),
                reason: format!("symbol {symbol} missing: {why}"),
                hint: "the driver is too old or not an NVIDIA driver".into(),
            }
        };
        if let Some(first) = core.missing().first() {
            return Err(missing(first));
        }
        // SAFETY: GetUuid is the C signature of both names (checked against cudarc's above);
        // libcuda stays loaded.
        let uuid = unsafe { lookup::<GetUuid>(lib, "cuDeviceGetUuid_v2") }
            // SAFETY: as above.
            .or_else(|| unsafe { lookup::<GetUuid>(lib, "cuDeviceGetUuid") });
        let Some(device_get_uuid) = uuid else {
            return Err(missing("cuDeviceGetUuid"));
        };
        Ok(Self {
            core,
            device_get_uuid,
            // SAFETY: GetErrorName is cuGetErrorName's C signature (checked against cudarc's
            // above); libcuda stays loaded.
            get_error_name: unsafe { lookup::<GetErrorName>(lib, "cuGetErrorName") },
            ext: super::cuda_ext::Ext::resolve(lib),
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

    pub fn check(&self, call: &'static str, rc: RawResult) -> Result<(), CuError> {
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
        let f = entry(self.core.init, "cuInit")?;
        // SAFETY: cuInit(0) has no pointer arguments.
        self.check("cuInit", unsafe { f(0) })
    }

    pub fn driver_version(&self) -> Result<i32, CuError> {
        let f = entry(self.core.driver_get_version, "cuDriverGetVersion")?;
        let mut v = 0;
        // SAFETY: valid out-pointer.
        self.check("cuDriverGetVersion", unsafe { f(&raw mut v) })?;
        Ok(v)
    }

    pub fn device_count(&self) -> Result<u32, CuError> {
        let f = entry(self.core.device_get_count, "cuDeviceGetCount")?;
        let mut n = 0;
        // SAFETY: valid out-pointer.
        self.check("cuDeviceGetCount", unsafe { f(&raw mut n) })?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    pub fn device(&self, ordinal: u32) -> Result<Device, CuError> {
        let f = entry(self.core.device_get, "cuDeviceGet")?;
        let mut d = 0;
        let ordinal = c_int::try_from(ordinal).unwrap_or(c_int::MAX);
        // SAFETY: valid out-pointer; an out-of-range ordinal is reported as an error code.
        self.check("cuDeviceGet", unsafe { f(&raw mut d, ordinal) })?;
        Ok(Device(d))
    }

    pub fn name(&self, dev: Device) -> Result<String, CuError> {
        let f = entry(self.core.device_get_name, "cuDeviceGetName")?;
        let mut buf = [0 as c_char; 256];
        // SAFETY: the buffer length passed matches the buffer.
        self.check("cuDeviceGetName", unsafe {
            f(buf.as_mut_ptr(), 256, dev.0)
        })?;
        Ok(c_buf_to_string(&buf))
    }

    /// The UUID in nvidia-smi's form, `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn uuid(&self, dev: Device) -> Result<String, CuError> {
        let mut raw = sys::CUuuid { bytes: [0; 16] };
        // SAFETY: valid out-pointer to a CUuuid.
        self.check("cuDeviceGetUuid", unsafe {
            (self.device_get_uuid)(&raw mut raw, dev.0)
        })?;
        Ok(format_uuid(&raw.bytes.map(|b| b as u8)))
    }

    pub fn total_mem(&self, dev: Device) -> Result<u64, CuError> {
        let f = entry(self.core.device_total_mem, "cuDeviceTotalMem_v2")?;
        let mut bytes = 0usize;
        // SAFETY: valid out-pointer.
        self.check("cuDeviceTotalMem_v2", unsafe { f(&raw mut bytes, dev.0) })?;
        Ok(bytes as u64)
    }

    /// Retains the device's primary context and makes it current on this thread.
    pub fn enter_primary_context(&self, dev: Device) -> Result<(), CuError> {
        let retain = entry(self.core.primary_ctx_retain, "cuDevicePrimaryCtxRetain")?;
        let set = entry(self.core.ctx_set_current, "cuCtxSetCurrent")?;
        let mut ctx: sys::CUcontext = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        self.check("cuDevicePrimaryCtxRetain", unsafe {
            retain(&raw mut ctx, dev.0)
        })?;
        // SAFETY: ctx was just returned by the driver.
        self.check("cuCtxSetCurrent", unsafe { set(ctx) })
    }

    pub fn release_primary_context(&self, dev: Device) -> Result<(), CuError> {
        let f = entry(
            self.core.primary_ctx_release,
            "cuDevicePrimaryCtxRelease_v2",
        )?;
        // SAFETY: releases a context this process retained.
        self.check("cuDevicePrimaryCtxRelease_v2", unsafe { f(dev.0) })
    }

    /// `cuMemGetInfo_v2` for the current context.
    pub fn mem_info(&self) -> Result<MemInfo, CuError> {
        let f = entry(self.core.mem_get_info, "cuMemGetInfo_v2")?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: valid out-pointers.
        self.check("cuMemGetInfo_v2", unsafe {
            f(&raw mut free, &raw mut total)
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
        let f = entry(self.core.mem_alloc, "cuMemAlloc_v2")?;
        let mut ptr: sys::CUdeviceptr = 0;
        let size = usize::try_from(bytes).unwrap_or(usize::MAX);
        // SAFETY: valid out-pointer; plain device memory, never managed.
        self.check("cuMemAlloc_v2", unsafe { f(&raw mut ptr, size) })?;
        Ok(ptr)
    }

    /// `cuMemAlloc_v2` returning the raw result code (for probes that expect odd answers).
    pub fn mem_alloc_raw(&self, bytes: u64, ptr: &mut u64) -> i32 {
        let Some(f) = self.core.mem_alloc else {
            return ENTRY_POINT_MISSING as i32;
        };
        let size = usize::try_from(bytes).unwrap_or(usize::MAX);
        // SAFETY: valid out-pointer; plain device memory.
        unsafe { f(ptr, size) }
    }

    pub fn mem_free(&self, ptr: u64) -> Result<(), CuError> {
        let f = entry(self.core.mem_free, "cuMemFree_v2")?;
        // SAFETY: `ptr` came from mem_alloc and is freed once (the caller owns it).
        self.check("cuMemFree_v2", unsafe { f(ptr) })
    }
}

/// A required entry point (checked present by [`Cuda::load`], so this never fails in practice).
fn entry<F: Copy>(f: Option<F>, call: &'static str) -> Result<F, CuError> {
    f.ok_or_else(|| CuError::missing(call))
}

/// The driver library, opened once per process and never closed (a CUDA context must not outlive
/// its library).
///
/// `libcuda.so.1` first: the driver's soname, the file the NVIDIA runtime mounts and HAMi-core
/// itself opens. cudarc's loader tries `libcuda.so` first, which on a machine with the toolkit's
/// stubs on the library path is the stub (every call then answers CUDA_ERROR_STUB_LIBRARY) while
/// the driver is right there; so cudarc's loader (`sys::culib`, over its own list of names) is the
/// fallback, for a driver installed under another name only.
fn driver_library() -> Result<&'static Library, LoadError> {
    static DRIVER: OnceLock<Library> = OnceLock::new();
    if let Some(lib) = DRIVER.get() {
        return Ok(lib);
    }
    // SAFETY: loading the NVIDIA driver library runs its initialisers, which is what any CUDA
    // program does; nothing else is assumed about the process.
    let soname_error = match unsafe { Library::new("libcuda.so.1") } {
        Ok(lib) => return Ok(DRIVER.get_or_init(|| lib)),
        Err(e) => loader_error(&e),
    };
    let candidates = cudarc::get_lib_name_candidates("cuda");
    // SAFETY: as above.
    let opened = candidates
        .iter()
        .find_map(|name| unsafe { Library::new(name) }.ok());
    let Some(opened) = opened else {
        let mut tried: Vec<&str> = Vec::new();
        for name in &candidates {
            if name != "libcuda.so.1" && !tried.contains(&name.as_str()) {
                tried.push(name);
            }
        }
        return Err(LoadError {
            library: "libcuda.so.1".into(),
            reason: format!(
                "{soname_error}; nor any of the {} other names cudarc's loader tries ({} … {})",
                tried.len(),
                tried.first().copied().unwrap_or_default(),
                tried.last().copied().unwrap_or_default(),
            ),
            hint: NO_DRIVER_HINT.into(),
        });
    };
    // SAFETY: cudarc's loader opens the first of the same names that opens, and panics only
    // when none does; one just opened (and `opened` keeps it loaded until cudarc holds it), so
    // it returns that library, which it never closes.
    let lib: &'static Library = unsafe { sys::culib() };
    drop(opened);
    Ok(lib)
}

/// A CUDA device handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device(pub(crate) sys::CUdevice);

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
    fn the_entry_points_hami_core_hooks_are_resolved_by_their_exact_names() {
        for symbol in [
            "cuMemAlloc_v2",
            "cuMemFree_v2",
            "cuMemGetInfo_v2",
            "cuDeviceTotalMem_v2",
            "cuDevicePrimaryCtxRelease_v2",
        ] {
            assert!(Core::SYMBOLS.contains(&symbol), "{symbol}");
        }
        for legacy in [
            "cuMemAlloc",
            "cuMemFree",
            "cuMemGetInfo",
            "cuDeviceTotalMem",
        ] {
            assert!(!Core::SYMBOLS.contains(&legacy), "{legacy}");
        }
    }

    #[test]
    fn a_library_without_the_entry_points_is_an_error_naming_the_first_not_a_panic() {
        // libc has none of them: the same path as a driver too old to have one.
        let libc = Box::leak(Box::new(
            // SAFETY: libc is already loaded in every process.
            unsafe { Library::new("libc.so.6") }.expect("libc opens"),
        ));
        let err = Cuda::from_library(libc).expect_err("libc is no driver");
        let text = err.to_string();
        assert!(
            text.starts_with("libcuda.so.1 could not be loaded (symbol cuInit missing: "),
            "{text}"
        );
        assert!(
            text.ends_with("the driver is too old or not an NVIDIA driver"),
            "{text}"
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
