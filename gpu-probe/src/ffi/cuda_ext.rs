//! The optional part of the CUDA driver API: the other allocation paths the audit tries, streams,
//! memory pools, VMM, arrays, modules and kernel launches, copies. Each entry point is optional:
//! a driver without it makes that path "not applicable", never a failure to start. Types and
//! argument lists are cudarc's (`cudarc::driver::sys`).

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void};

use cudarc::driver::sys;

pub type CuStream = sys::CUstream;
pub type CuPool = sys::CUmemoryPool;
pub type CuArray = sys::CUarray;
pub type CuModule = sys::CUmodule;
pub type CuFunction = sys::CUfunction;
/// `CUDA_ARRAY_DESCRIPTOR`.
pub type ArrayDescriptor = sys::CUDA_ARRAY_DESCRIPTOR;

/// Where a VMM allocation or a pool's memory lives (`CUmemLocationType`).
pub use sys::CUmemLocationType as Location;

fn location(kind: Location, id: i32) -> sys::CUmemLocation {
    sys::CUmemLocation { type_: kind, id }
}

/// `CUmemAllocationProp` for pinned memory at `kind`/`id` (a device ordinal, or a host NUMA
/// node), no shareable handle, the rest zero as the headers require.
pub fn allocation_prop(kind: Location, id: i32) -> sys::CUmemAllocationProp {
    sys::CUmemAllocationProp {
        type_: sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
        requestedHandleTypes: sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE,
        location: location(kind, id),
        win32HandleMetaData: std::ptr::null_mut(),
        allocFlags: sys::CUmemAllocationProp_st__bindgen_ty_1 {
            compressionType: 0,
            gpuDirectRDMACapable: 0,
            usage: 0,
            reserved: [0; 4],
        },
    }
}

/// `CUmemAllocationProp` for pinned memory on device `ordinal`.
pub fn allocation_prop_on_device(ordinal: i32) -> sys::CUmemAllocationProp {
    allocation_prop(Location::CU_MEM_LOCATION_TYPE_DEVICE, ordinal)
}

/// `CUmemPoolProps` of an explicit pool of pinned memory on device `ordinal` (no size limit).
pub fn pool_props_on_device(ordinal: i32) -> sys::CUmemPoolProps {
    sys::CUmemPoolProps {
        allocType: sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
        handleTypes: sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE,
        location: location(Location::CU_MEM_LOCATION_TYPE_DEVICE, ordinal),
        win32SecurityAttributes: std::ptr::null_mut(),
        maxSize: 0,
        usage: 0,
        reserved: [0; 54],
    }
}

/// `CU_MEM_ALLOC_GRANULARITY_MINIMUM`.
pub const GRANULARITY_MINIMUM: sys::CUmemAllocationGranularity_flags =
    sys::CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_MINIMUM;
/// `CU_MEM_ATTACH_GLOBAL`.
pub const ATTACH_GLOBAL: c_uint = sys::CUmemAttach_flags::CU_MEM_ATTACH_GLOBAL as c_uint;

entry_points! {
    /// Optional driver entry points (None when this driver lacks them).
    pub struct Ext {
        mem_alloc_pitch: cuMemAllocPitch_v2(*mut sys::CUdeviceptr, *mut usize, usize, usize, c_uint);
        mem_alloc_managed: cuMemAllocManaged(*mut sys::CUdeviceptr, usize, c_uint);
        stream_create: cuStreamCreate(*mut sys::CUstream, c_uint);
        stream_destroy: cuStreamDestroy_v2(sys::CUstream);
        stream_synchronize: cuStreamSynchronize(sys::CUstream);
        mem_alloc_async: cuMemAllocAsync(*mut sys::CUdeviceptr, usize, sys::CUstream);
        mem_free_async: cuMemFreeAsync(sys::CUdeviceptr, sys::CUstream);
        mem_pool_create: cuMemPoolCreate(*mut sys::CUmemoryPool, *const sys::CUmemPoolProps);
        mem_pool_destroy: cuMemPoolDestroy(sys::CUmemoryPool);
        mem_alloc_from_pool_async: cuMemAllocFromPoolAsync(*mut sys::CUdeviceptr, usize, sys::CUmemoryPool, sys::CUstream);
        mem_get_allocation_granularity: cuMemGetAllocationGranularity(*mut usize, *const sys::CUmemAllocationProp, sys::CUmemAllocationGranularity_flags);
        mem_create: cuMemCreate(*mut sys::CUmemGenericAllocationHandle, usize, *const sys::CUmemAllocationProp, c_ulonglong);
        mem_release: cuMemRelease(sys::CUmemGenericAllocationHandle);
        array_create: cuArrayCreate_v2(*mut sys::CUarray, *const sys::CUDA_ARRAY_DESCRIPTOR);
        array_destroy: cuArrayDestroy(sys::CUarray);
        module_load_data: cuModuleLoadData(*mut sys::CUmodule, *const c_void);
        module_unload: cuModuleUnload(sys::CUmodule);
        module_get_function: cuModuleGetFunction(*mut sys::CUfunction, sys::CUmodule, *const c_char);
        launch_kernel: cuLaunchKernel(sys::CUfunction, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, sys::CUstream, *mut *mut c_void, *mut *mut c_void);
        ctx_synchronize: cuCtxSynchronize();
        mem_alloc_host: cuMemAllocHost_v2(*mut *mut c_void, usize);
        mem_free_host: cuMemFreeHost(*mut c_void);
        memcpy_htod: cuMemcpyHtoD_v2(sys::CUdeviceptr, *const c_void, usize);
        memcpy_dtoh: cuMemcpyDtoH_v2(*mut c_void, sys::CUdeviceptr, usize);
        device_get_attribute: cuDeviceGetAttribute(*mut c_int, sys::CUdevice_attribute, sys::CUdevice);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structs_have_the_sizes_of_the_cuda_headers() {
        // CUDA 12/13 cuda.h: CUmemAllocationProp 32 bytes, CUmemPoolProps 88,
        // CUDA_ARRAY_DESCRIPTOR 24; the driver reads them at these sizes whatever its version.
        assert_eq!(std::mem::size_of::<sys::CUmemAllocationProp>(), 32);
        assert_eq!(std::mem::size_of::<sys::CUmemPoolProps>(), 88);
        assert_eq!(std::mem::size_of::<ArrayDescriptor>(), 24);
        let p = allocation_prop_on_device(3);
        assert_eq!(p.location.id, 3);
        assert_eq!(
            p.type_,
            sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED
        );
    }

    #[test]
    fn the_optional_paths_are_the_entry_points_hami_core_hooks_or_passes() {
        for symbol in [
            "cuMemAllocPitch_v2",
            "cuMemAllocManaged",
            "cuMemAllocAsync",
            "cuMemAllocFromPoolAsync",
            "cuMemCreate",
            "cuArrayCreate_v2",
            "cuMemAllocHost_v2",
            "cuMemcpyHtoD_v2",
            "cuMemcpyDtoH_v2",
            "cuStreamDestroy_v2",
        ] {
            assert!(Ext::SYMBOLS.contains(&symbol), "{symbol}");
        }
        let none = Ext::default();
        assert_eq!(none.missing().len(), Ext::SYMBOLS.len());
    }
}
