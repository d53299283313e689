//! Embedded PTX, loaded with `cuModuleLoadData` (the driver JIT-compiles it for the device), so
//! no nvcc, nvrtc or toolkit is needed in the image.

use std::ffi::{CString, c_uint, c_void};

use crate::ffi::cuda::{CuError, Cuda};
use crate::ffi::cuda_ext::{CuFunction, CuModule};

/// `empty()` does nothing; `busy(iters, out)` spins `iters` dependent FMAs per thread and stores
/// the result only when `out` is non-null (so the loop cannot be optimised away).
pub const PTX: &str = r".version 7.0
.target sm_50
.address_size 64

.visible .entry empty()
{
	ret;
}

.visible .entry busy(.param .u32 iters, .param .u64 out)
{
	.reg .pred p;
	.reg .b32 r<4>;
	.reg .b64 rd<3>;
	.reg .f32 f<2>;
	ld.param.u32 r1, [iters];
	ld.param.u64 rd1, [out];
	mov.u32 r2, 0;
	mov.f32 f1, 0f3F800000;
LOOP:
	fma.rn.f32 f1, f1, 0f3F7FFFFF, 0f3C23D70A;
	add.u32 r2, r2, 1;
	setp.lt.u32 p, r2, r1;
	@p bra LOOP;
	setp.eq.u64 p, rd1, 0;
	@p bra DONE;
	cvta.to.global.u64 rd2, rd1;
	st.global.f32 [rd2], f1;
DONE:
	ret;
}
";

/// A loaded module with its two kernels; unloaded on drop.
#[derive(Debug)]
pub struct Kernels<'a> {
    cuda: &'a Cuda,
    module: CuModule,
    pub empty: CuFunction,
    pub busy: CuFunction,
}

impl<'a> Kernels<'a> {
    pub fn load(cuda: &'a Cuda) -> Result<Self, CuError> {
        let load = cuda
            .ext
            .module_load_data
            .ok_or_else(|| CuError::missing("cuModuleLoadData"))?;
        let get = cuda
            .ext
            .module_get_function
            .ok_or_else(|| CuError::missing("cuModuleGetFunction"))?;
        let image = CString::new(PTX).map_err(|_| CuError::missing("PTX"))?;
        let mut module: CuModule = std::ptr::null_mut();
        // SAFETY: NUL-terminated PTX text and a valid out-pointer.
        cuda.check("cuModuleLoadData", unsafe {
            load(&raw mut module, image.as_ptr().cast())
        })?;
        let mut kernels = Self {
            cuda,
            module,
            empty: std::ptr::null_mut(),
            busy: std::ptr::null_mut(),
        };
        for (name, slot) in [(c"empty", &mut kernels.empty), (c"busy", &mut kernels.busy)] {
            // SAFETY: valid out-pointer, loaded module, NUL-terminated name.
            cuda.check("cuModuleGetFunction", unsafe {
                get(slot, module, name.as_ptr())
            })?;
        }
        Ok(kernels)
    }

    /// Enqueues `empty()` on the default stream.
    pub fn launch_empty(&self) -> Result<(), CuError> {
        self.launch(self.empty, 1, 32, &mut [])
    }

    /// Enqueues `busy(iters, 0)` with `grid` blocks of `block` threads on the default stream.
    pub fn launch_busy(&self, grid: u32, block: u32, iters: u32) -> Result<(), CuError> {
        let mut iters = iters;
        let mut out: u64 = 0;
        let mut params: [*mut c_void; 2] = [(&raw mut iters).cast(), (&raw mut out).cast()];
        self.launch(self.busy, grid, block, &mut params)
    }

    fn launch(
        &self,
        f: CuFunction,
        grid: u32,
        block: u32,
        params: &mut [*mut c_void],
    ) -> Result<(), CuError> {
        let launch = self
            .cuda
            .ext
            .launch_kernel
            .ok_or_else(|| CuError::missing("cuLaunchKernel"))?;
        let params_ptr = if params.is_empty() {
            std::ptr::null_mut()
        } else {
            params.as_mut_ptr()
        };
        // SAFETY: `f` is a function of this module and `params` matches its signature (both come
        // from the two typed wrappers above); the parameters outlive the call.
        let rc = unsafe {
            launch(
                f,
                grid as c_uint,
                1,
                1,
                block as c_uint,
                1,
                1,
                0,
                std::ptr::null_mut(),
                params_ptr,
                std::ptr::null_mut(),
            )
        };
        self.cuda.check("cuLaunchKernel", rc)
    }

    pub fn synchronize(&self) -> Result<(), CuError> {
        let sync = self
            .cuda
            .ext
            .ctx_synchronize
            .ok_or_else(|| CuError::missing("cuCtxSynchronize"))?;
        // SAFETY: no arguments.
        self.cuda.check("cuCtxSynchronize", unsafe { sync() })
    }
}

impl Drop for Kernels<'_> {
    fn drop(&mut self) {
        if let Some(unload) = self.cuda.ext.module_unload {
            // SAFETY: the module was loaded by `load` and is unloaded once.
            let _ = unsafe { unload(self.module) };
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ptx_declares_both_entries() {
        assert!(super::PTX.contains(".visible .entry empty()"));
        assert!(super::PTX.contains(".visible .entry busy("));
        assert!(!super::PTX.contains('\0'));
    }
}
