// static_cudart.cu: the program of gpu-probe audit's `static-cudart` bypass row. It is linked
// with the static CUDA runtime and holds as much device memory as cudaMalloc gives, up to a
// target, the way the audit's cap search does (1 GiB steps, halving on each refusal down to a
// resolution), frees it all, and prints one report line:
//
//   gpu-probe-static-cudart {"runtime_version":13000,...}
//
// Build (on a machine with the CUDA toolkit) and run:
//
//   nvcc -cudart static -o static_cudart gpu-probe/tests/bypass/static_cudart.cu
//   gpu-probe audit --static-cudart ./static_cudart
//   ./static_cudart DEVICE TARGET_BYTES RESOLUTION_BYTES [TIME_BOUND_SECS]
//
// Host code only: no kernel, so it builds for any GPU. Exit 0 with a report, 2 on bad usage.

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_ALLOCS 8192

static double now_secs(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

// Appends `s` to out as a JSON string body (quotes and backslashes escaped).
static void json_str(FILE* out, const char* s) {
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', out);
        if ((unsigned char)*s >= 0x20) fputc(*s, out);
    }
    fputc('"', out);
}

// Whether a mapped file's path names the shared CUDA runtime.
static int is_shared_cudart(const char* path) { return strstr(path, "libcudart.so") != NULL; }

// The preloaded libraries (LD_PRELOAD and /etc/ld.so.preload) that are mapped in this process,
// written as a JSON array; and whether the shared libcudart is mapped.
static int scan_maps(FILE* out) {
    char preload[8192] = "";
    const char* env = getenv("LD_PRELOAD");
    if (env) snprintf(preload, sizeof preload, "%s ", env);
    FILE* f = fopen("/etc/ld.so.preload", "r");
    if (f) {
        size_t len = strlen(preload);
        size_t n = fread(preload + len, 1, sizeof preload - len - 1, f);
        preload[len + n] = 0;
        fclose(f);
    }
    int shared = 0, first = 1;
    char seen[64][512];
    int nseen = 0;
    fputc('[', out);
    FILE* maps = fopen("/proc/self/maps", "r");
    char line[1024];
    while (maps && fgets(line, sizeof line, maps)) {
        char* path = strchr(line, '/');
        if (!path) continue;
        path[strcspn(path, "\n")] = 0;
        if (is_shared_cudart(path)) shared = 1;
        const char* base = strrchr(path, '/') + 1;
        if (!strstr(preload, base)) continue;
        int dup = 0;
        for (int i = 0; i < nseen; i++) dup |= strcmp(seen[i], path) == 0;
        if (dup || nseen >= 64) continue;
        snprintf(seen[nseen++], sizeof seen[0], "%s", path);
        if (!first) fputc(',', out);
        json_str(out, path);
        first = 0;
    }
    if (maps) fclose(maps);
    fputc(']', out);
    return shared;
}

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s DEVICE TARGET_BYTES RESOLUTION_BYTES [TIME_BOUND_SECS]\n", argv[0]);
        return 2;
    }
    int dev = atoi(argv[1]);
    unsigned long long target = strtoull(argv[2], NULL, 10);
    unsigned long long resolution = strtoull(argv[3], NULL, 10);
    double bound = argc > 4 ? atof(argv[4]) : 60.0;
    if (resolution == 0) resolution = 1;

    int runtime = 0, driver = 0;
    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    cudaError_t e = cudaSetDevice(dev);
    if (e == cudaSuccess) e = cudaFree(0);  // creates the context
    size_t free0 = 0, total0 = 0;
    if (e == cudaSuccess) e = cudaMemGetInfo(&free0, &total0);
    if (e != cudaSuccess) {
        printf("gpu-probe-static-cudart {\"runtime_version\":%d,\"driver_version\":%d,"
               "\"shared_cudart_mapped\":false,\"mapped_preload\":[],\"held_bytes\":0,\"calls\":0,"
               "\"first_error\":%d,\"first_error_name\":\"%s\",\"all_freed\":true,"
               "\"start_total\":0,\"start_free\":0,\"end_free\":0,\"error\":",
               runtime, driver, (int)e, cudaGetErrorName(e));
        json_str(stdout, cudaGetErrorString(e));
        printf("}\n");
        return 0;
    }

    static void* ptrs[MAX_ALLOCS];
    int n = 0, calls = 0, first_error = 0;
    const char* first_name = "";
    unsigned long long held = 0, step = 1ULL << 30;
    double start = now_secs();
    while (held < target && n < MAX_ALLOCS && now_secs() - start < bound) {
        unsigned long long req = step < target - held ? step : target - held;
        void* p = NULL;
        cudaError_t r = cudaMalloc(&p, (size_t)req);
        calls++;
        if (r == cudaSuccess) {
            ptrs[n++] = p;
            held += req;
        } else {
            cudaGetLastError();  // clears the runtime's last error
            if (!first_error) {
                first_error = (int)r;
                first_name = cudaGetErrorName(r);
            }
            step = req / 2;
            if (step < resolution) break;
        }
    }
    int all_freed = 1;
    for (int i = n - 1; i >= 0; i--) all_freed &= cudaFree(ptrs[i]) == cudaSuccess;
    size_t free1 = 0, total1 = 0;
    cudaMemGetInfo(&free1, &total1);

    printf("gpu-probe-static-cudart {\"runtime_version\":%d,\"driver_version\":%d,", runtime, driver);
    printf("\"mapped_preload\":");
    int shared = scan_maps(stdout);
    printf(",\"shared_cudart_mapped\":%s,\"held_bytes\":%llu,\"calls\":%d,\"first_error\":%d,"
           "\"first_error_name\":",
           shared ? "true" : "false", held, calls, first_error);
    json_str(stdout, first_name);
    printf(",\"all_freed\":%s,\"start_total\":%zu,\"start_free\":%zu,\"end_free\":%zu}\n",
           all_freed ? "true" : "false", total0, free0, free1);
    return 0;
}
