//! Run-time bindings to the NVIDIA driver libraries.
//!
//! The CUDA driver comes through cudarc (`cudarc::driver::sys`, dynamic loading: `libcuda.so.1`,
//! else whatever cudarc's loader finds, is opened when the probe runs, never linked, and no CUDA
//! is needed to build), NVML through nvml-wrapper-sys's generated declarations. So gpu-probe builds
//! and tests without CUDA and runs in any image where the NVIDIA runtime mounted the driver; the
//! driver's own version is read at run time (`cuDriverGetVersion`, NVML's driver version).
//!
//! The `_v2` entry points are resolved by their exact names on purpose: they are the ones
//! HAMi-core hooks (shared/facts/hami.md §10), and its `dlsym` interposer hands them back.
//!
//! Two rules keep a driver or interposer's answer from becoming a crash:
//! - every entry point is looked up, and its presence checked, before it is called: cudarc's own
//!   wrappers panic on a missing symbol or library, and with `panic = "abort"` an old driver would
//!   kill the probe without a word. A missing required one is a [`LoadError`] with the fix; a
//!   missing optional one makes its path "not applicable".
//! - a driver call's result is read as the C `int` it is ([`cuda::RawResult`]). cudarc types it as
//!   `CUresult`, a Rust enum, and HAMi-core answers some calls with codes no CUDA release defines
//!   (`cuMemAllocAsync` returned -1 on the H200): such a value in a Rust enum is undefined
//!   behaviour. The argument lists are cudarc's, checked at compile time ([`entry_points!`]).
//!
//! `symbols` stays on libloading and `libc`: it inspects the injected HAMi-core library itself
//! (`dlsym`, then `dladdr` to see which object answered), which no binding crate does.

#[macro_use]
mod table;
pub mod cuda;
pub mod cuda_ext;
pub mod nvml;
pub mod symbols;

/// Why a driver library could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{library} could not be loaded ({reason}); {hint}")]
pub struct LoadError {
    pub library: String,
    pub reason: String,
    pub hint: String,
}

/// A libloading error in the loader's own words (`dlerror`: which file, which symbol), which
/// libloading keeps in the error's source.
pub(crate) fn loader_error(e: &libloading::Error) -> String {
    use std::error::Error as _;
    e.source()
        .map_or_else(|| e.to_string(), ToString::to_string)
}

/// Reads a C string buffer up to its first NUL.
pub(crate) fn c_buf_to_string(buf: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
