//! Run-time bindings to the NVIDIA driver libraries.
//!
//! `libcuda.so.1` and `libnvidia-ml.so.1` are opened with libloading when the probe runs, never
//! linked, so gpu-probe builds and tests without CUDA and runs in any image where the NVIDIA
//! runtime mounted the driver. The `_v2` entry points are resolved by name on purpose: they are the
//! ones HAMi-core hooks (shared/facts/hami.md §10), and its `dlsym` interposer hands them back.

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

/// Reads a C string buffer up to its first NUL.
pub(crate) fn c_buf_to_string(buf: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
