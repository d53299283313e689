//! The optional part of the CUDA driver API: the other allocation paths the audit tries, streams,
//! memory pools, VMM, arrays, modules and kernel launches, copies. Each entry point is optional:
//! a driver without it makes that path "not applicable", never a failure to start.

use std::ffi::{c_char, c_int, c_uint, c_void};

use libloading::Library;

pub type CuResult = c_int;
pub type CuStream = *mut c_void;
pub type CuPool = *mut c_void;
pub type CuArray = *mut c_void;
pub type CuModule = *mut c_void;
pub type CuFunction = *mut c_void;

/// `CUDA_ARRAY_DESCRIPTOR`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ArrayDescriptor {
    pub width: usize,
    pub height: usize,
    pub format: c_int,
    pub num_channels: c_uint,
}

/// Room for `CUmemAllocationProp` / `CUmemPoolProps` (32 and 88 bytes in CUDA 12/13): the fields the
/// probe sets come first, the rest stays zero as the headers require.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub struct PropsBuf(pub [u8; 128]);

impl PropsBuf {
    /// Pinned device memory on device `ordinal`: `type`/`allocType` = 1 (PINNED),
    /// handle types = 0, `location` = { DEVICE (1), ordinal }.
    pub fn pinned_on_device(ordinal: i32) -> Self {
        Self::located(1, ordinal)
    }

    /// Pinned memory at location `kind` (`CUmemLocationType`: 1 device, 2 host, 3 host NUMA
    /// node) with id `id`.
    pub fn located(kind: i32, id: i32) -> Self {
        let mut b = [0u8; 128];
        b[0..4].copy_from_slice(&1i32.to_le_bytes());
        b[8..12].copy_from_slice(&kind.to_le_bytes());
        b[12..16].copy_from_slice(&id.to_le_bytes());
        Self(b)
    }
}

macro_rules! ext_fns {
    ($($field:ident : $name:literal => fn($($arg:ty),*);)*) => {
        /// Optional driver entry points (None when this driver lacks them).
        #[derive(Debug, Default, Clone, Copy)]
        pub struct Ext {
            $(pub $field: Option<unsafe extern "C" fn($($arg),*) -> CuResult>,)*
        }

        impl Ext {
            pub fn load(lib: &Library) -> Self {
                Self {
                    $(
                        // SAFETY: the driver's C signature for this name matches the field's type;
                        // the library outlives the pointer (both live in `Cuda`).
                        $field: unsafe { lib.get(concat!($name, "\0").as_bytes()) }.ok().map(|s| *s),
                    )*
                }
            }
        }
    };
}

ext_fns! {
    mem_alloc_pitch: "cuMemAllocPitch_v2" => fn(*mut u64, *mut usize, usize, usize, c_uint);
    mem_alloc_managed: "cuMemAllocManaged" => fn(*mut u64, usize, c_uint);
    stream_create: "cuStreamCreate" => fn(*mut CuStream, c_uint);
    stream_destroy: "cuStreamDestroy_v2" => fn(CuStream);
    stream_synchronize: "cuStreamSynchronize" => fn(CuStream);
    mem_alloc_async: "cuMemAllocAsync" => fn(*mut u64, usize, CuStream);
    mem_free_async: "cuMemFreeAsync" => fn(u64, CuStream);
    mem_pool_create: "cuMemPoolCreate" => fn(*mut CuPool, *const PropsBuf);
    mem_pool_destroy: "cuMemPoolDestroy" => fn(CuPool);
    mem_alloc_from_pool_async: "cuMemAllocFromPoolAsync" => fn(*mut u64, usize, CuPool, CuStream);
    mem_get_allocation_granularity: "cuMemGetAllocationGranularity" => fn(*mut usize, *const PropsBuf, c_int);
    mem_create: "cuMemCreate" => fn(*mut u64, usize, *const PropsBuf, u64);
    mem_release: "cuMemRelease" => fn(u64);
    array_create: "cuArrayCreate_v2" => fn(*mut CuArray, *const ArrayDescriptor);
    array_destroy: "cuArrayDestroy" => fn(CuArray);
    module_load_data: "cuModuleLoadData" => fn(*mut CuModule, *const c_void);
    module_unload: "cuModuleUnload" => fn(CuModule);
    module_get_function: "cuModuleGetFunction" => fn(*mut CuFunction, CuModule, *const c_char);
    launch_kernel: "cuLaunchKernel" => fn(CuFunction, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, CuStream, *mut *mut c_void, *mut *mut c_void);
    ctx_synchronize: "cuCtxSynchronize" => fn();
    mem_alloc_host: "cuMemAllocHost_v2" => fn(*mut *mut c_void, usize);
    mem_free_host: "cuMemFreeHost" => fn(*mut c_void);
    memcpy_htod: "cuMemcpyHtoD_v2" => fn(u64, *const c_void, usize);
    memcpy_dtoh: "cuMemcpyDtoH_v2" => fn(*mut c_void, u64, usize);
    device_get_attribute: "cuDeviceGetAttribute" => fn(*mut c_int, c_int, c_int);
}
