/* A simulated CUDA driver for gpu-probe's tests without a GPU (constructed, not NVIDIA's).
 *
 * Built by tests/progress.rs as libcuda.so.1 (and libcuda.so) in a temporary folder put first on
 * LD_LIBRARY_PATH, so gpu-probe's real binary, its worker and its children load it the way they
 * load the driver. It exports the entry points gpu-probe needs to start and to run the cap search
 * (by the exact _v2 names), with one device that refuses allocations past a limit:
 *
 *   SIM_CUDA_TOTAL_MIB  the device's memory (default 16384)
 *   SIM_CUDA_LIMIT_MIB  the most this process may hold (default 8000); past it cuMemAlloc_v2
 *                       returns CUDA_ERROR_OUT_OF_MEMORY (2)
 *   SIM_CUDA_ALLOC_MS   how long each cuMemAlloc_v2 takes (default 0): a long search
 *
 * Compiled with -DSIM_OLD_DRIVER it lacks cuMemGetInfo_v2, as a driver too old for the probe;
 * with -DSIM_STUB it is the toolkit's stub: cuInit answers CUDA_ERROR_STUB_LIBRARY (34).
 * Everything else (streams, pools, VMM, arrays, kernels) is absent, so those audit paths are
 * "not applicable" here. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIB (1024ULL * 1024ULL)
#define MAX_ALLOCS 4096

static unsigned long long held;
static unsigned long long next_ptr = 0x700000000000ULL;
static struct { unsigned long long ptr, bytes; } allocs[MAX_ALLOCS];
static int context;

static unsigned long long env_mib(const char *name, unsigned long long dflt) {
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 10) : dflt;
}

#ifdef SIM_STUB
int cuInit(unsigned int flags) { (void)flags; return 34; }
#else
int cuInit(unsigned int flags) { (void)flags; return 0; }
#endif

int cuDriverGetVersion(int *version) { *version = 12090; return 0; }

int cuDeviceGetCount(int *count) { *count = 1; return 0; }

int cuDeviceGet(int *device, int ordinal) {
    if (ordinal != 0) return 101; /* CUDA_ERROR_INVALID_DEVICE */
    *device = 0;
    return 0;
}

int cuDeviceGetName(char *name, int len, int device) {
    (void)device;
    if (len <= 0) return 1;
    strncpy(name, "Simulated GPU (gpu-probe tests)", (size_t)len - 1);
    name[len - 1] = 0;
    return 0;
}

static int uuid(unsigned char *out, int device) {
    (void)device;
    for (int i = 0; i < 16; i++) out[i] = (unsigned char)(0x10 + i);
    return 0;
}
int cuDeviceGetUuid(unsigned char *out, int device) { return uuid(out, device); }
int cuDeviceGetUuid_v2(unsigned char *out, int device) { return uuid(out, device); }

int cuDeviceTotalMem_v2(size_t *bytes, int device) {
    (void)device;
    *bytes = (size_t)(env_mib("SIM_CUDA_TOTAL_MIB", 16384) * MIB);
    return 0;
}

int cuDevicePrimaryCtxRetain(void **ctx, int device) { (void)device; *ctx = &context; return 0; }
int cuDevicePrimaryCtxRelease_v2(int device) { (void)device; return 0; }
int cuCtxSetCurrent(void *ctx) { (void)ctx; return 0; }

#ifndef SIM_OLD_DRIVER
int cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes) {
    unsigned long long total = env_mib("SIM_CUDA_TOTAL_MIB", 16384) * MIB;
    *total_bytes = (size_t)total;
    *free_bytes = (size_t)(total > held ? total - held : 0);
    return 0;
}
#endif

int cuMemAlloc_v2(unsigned long long *ptr, size_t bytes) {
    unsigned long long ms = env_mib("SIM_CUDA_ALLOC_MS", 0);
    if (ms > 0) {
        struct timespec t = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        nanosleep(&t, NULL);
    }
    if (held + bytes > env_mib("SIM_CUDA_LIMIT_MIB", 8000) * MIB) return 2; /* OUT_OF_MEMORY */
    for (int i = 0; i < MAX_ALLOCS; i++) {
        if (allocs[i].ptr == 0) {
            allocs[i].ptr = next_ptr;
            allocs[i].bytes = bytes;
            next_ptr += bytes + MIB;
            held += bytes;
            *ptr = allocs[i].ptr;
            return 0;
        }
    }
    return 2;
}

int cuMemFree_v2(unsigned long long ptr) {
    for (int i = 0; i < MAX_ALLOCS; i++) {
        if (allocs[i].ptr == ptr && ptr != 0) {
            held -= allocs[i].bytes;
            allocs[i].ptr = 0;
            return 0;
        }
    }
    return 1; /* CUDA_ERROR_INVALID_VALUE */
}

int cuGetErrorName(int code, const char **name) {
    switch (code) {
    case 0: *name = "CUDA_SUCCESS"; return 0;
    case 1: *name = "CUDA_ERROR_INVALID_VALUE"; return 0;
    case 2: *name = "CUDA_ERROR_OUT_OF_MEMORY"; return 0;
    case 34: *name = "CUDA_ERROR_STUB_LIBRARY"; return 0;
    case 101: *name = "CUDA_ERROR_INVALID_DEVICE"; return 0;
    default: *name = NULL; return 1;
    }
}
