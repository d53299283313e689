#!/usr/bin/env bash
# The exact procedure that produced the reports in this folder and in ../mps/ on the GPU machine.
# Run from the repository root with the binaries in $B (from `cargo xtask gpu-bundle` and
# `cargo build --release -p xtask`), the HAMi-core libraries in $LIBS (libvgpu-<rev>.so), and,
# optionally, a HAMi-core source folder in $SRC4 (with CUDA 12 headers in $CUDA12) for a fourth
# revision. Everything it writes goes under $R; it stops the MPS daemon and removes
# /etc/ld.so.preload on any exit.
set -u
B=${B:-.gpu/conformance}
LIBS=${LIBS:-.gpu/lib}
R=${R:-/tmp/results}
SRC4=${SRC4:-}
CUDA12=${CUDA12:-}
mkdir -p "$R"/conformance "$R"/mps "$R"/logs "$R"/captures "$R"/compute
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
cleanup() {
  rm -f /etc/ld.so.preload
  if [ -S "$CUDA_MPS_PIPE_DIRECTORY/control" ]; then echo quit | nvidia-cuda-mps-control; fi
}
trap cleanup EXIT
P="$PWD/$B/gpu-probe"
chmod +x "$B"/* 2>/dev/null
t() { local s=$(date +%s.%N); "$@"; local rc=$?; echo "$(date +%s.%N) $s $rc $*" >> "$R/logs/timings.txt"; return $rc; }

# Read-only captures: the card, MIG mode (never changed), the driver.
nvidia-smi -L > "$R/captures/nvidia-smi-L.txt" 2>&1
nvidia-smi --query-gpu=name,uuid,memory.total,mig.mode.current,mig.mode.pending,driver_version --format=csv > "$R/captures/nvidia-smi-query.csv" 2>&1
uname -r > "$R/captures/kernel.txt"

# 1. Conformance of every library, one GPU.
for lib in "$LIBS"/libvgpu-*.so; do
  rev=$(basename "$lib" .so); rev=${rev#libvgpu-}
  t timeout 150 "$P" conformance --lib "$PWD/$lib" --revision "$rev" --cell-timeout-secs 25 \
    --output json --report-file "$R/conformance/$rev-1gpu.json" > /dev/null 2> "$R/logs/conformance-$rev.err"
done

# 2. CUDA MPS, for real: the daemon's default pinned limit, then a client's own limit.
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
nvidia-cuda-mps-control -d
sleep 1
echo "set_default_device_pinned_mem_limit 0 6000M" | nvidia-cuda-mps-control > "$R/mps/control-set.txt" 2>&1
echo "get_default_device_pinned_mem_limit 0" | nvidia-cuda-mps-control > "$R/mps/control-get.txt" 2>&1
t timeout 120 "$P" all --output json --report-file "$R/mps/mps-daemon-limit-6000.json" > /dev/null 2> "$R/logs/mps-daemon.err"
CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=8000M t timeout 120 "$P" all --output json --report-file "$R/mps/mps-env-limit-8000.json" > /dev/null 2> "$R/logs/mps-env.err"
GPU_PROBE_TEST_MPS=1 GPU_PROBE_BIN="$P" t timeout 120 "$B/gpu-test" --test-threads=1 mps_client > "$R/logs/gpu-test-mps.txt" 2>&1
echo quit | nvidia-cuda-mps-control
sleep 1
cp -r "$CUDA_MPS_LOG_DIRECTORY" "$R/mps/daemon-log" 2>/dev/null

# 3. The bare card (negative control) and the benchmark: `all` against CUDA + NVML init alone.
t "$P" all --expect-mib 8000 --output json --report-file "$R/captures/bare-all.json" > /dev/null 2>&1
BENCH_RUNS=5 GPU_PROBE_BIN="$P" t timeout 200 "$B/probe-bench" > "$R/logs/bench.txt" 2>&1

# 4. Pod-like injection through /etc/ld.so.preload (newest library): `all`, and `compute` under
#    CUDA_DEVICE_SM_LIMIT=50 with its own unlimited baseline child.
cp "$LIBS/libvgpu-8f3a89c.so" /tmp/libvgpu.so
echo /tmp/libvgpu.so > /etc/ld.so.preload
CUDA_REDIRECT=/tmp/libvgpu.so CUDA_DEVICE_MEMORY_LIMIT_0=8000m CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/pod-all.cache \
  t timeout 120 "$P" all --output json --report-file "$R/compute/preload-all-8000.json" > /dev/null 2> "$R/logs/preload-all.err"
for sm in 50; do
  CUDA_REDIRECT=/tmp/libvgpu.so CUDA_DEVICE_MEMORY_LIMIT_0=8000m CUDA_DEVICE_SM_LIMIT=$sm GPU_CORE_UTILIZATION_POLICY=force \
    CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/pod-sm$sm.cache \
    t timeout 120 "$P" compute --seconds 3 --output json --report-file "$R/compute/preload-compute-sm$sm.json" > /dev/null 2> "$R/logs/preload-compute.err"
done
rm -f /etc/ld.so.preload

# 5. The GPU tests: the bare tier once, the real-library tier with each library.
GPU_PROBE_BIN="$P" t timeout 200 "$B/gpu-test" --test-threads=1 > "$R/logs/gpu-test-bare.txt" 2>&1
for lib in "$LIBS"/libvgpu-*.so; do
  rev=$(basename "$lib" .so); rev=${rev#libvgpu-}
  filter=real_library_; [ "$rev" = 8f3a89c ] || filter="real_library_e real_library_a"
  HAMI_CORE_LIB="$PWD/$lib" GPU_PROBE_BIN="$P" t timeout 200 "$B/gpu-test" --test-threads=1 $filter > "$R/logs/gpu-test-$rev.txt" 2>&1
done
# 6. A fourth revision built here by `cargo xtask hami-core`, when a source folder is given.
if [ -n "$SRC4" ]; then
  rev4=$(basename "$SRC4")
  t timeout 240 "$B/xtask" hami-core --src "$SRC4" --fcommon ${CUDA12:+--cuda-home "$CUDA12"} --jobs 16 \
    --out /tmp/libvgpu-$rev4.so > "$R/logs/xtask-hami-core-$rev4.log" 2>&1
  if [ -f /tmp/libvgpu-$rev4.so ]; then
    t timeout 150 "$P" conformance --lib /tmp/libvgpu-$rev4.so --revision "$rev4" --cell-timeout-secs 25 \
      --output json --report-file "$R/conformance/$rev4-1gpu.json" > /dev/null 2> "$R/logs/conformance-$rev4.err"
  fi
fi

nvidia-smi --query-gpu=memory.used --format=csv > "$R/captures/memory-used-at-end.csv" 2>&1
