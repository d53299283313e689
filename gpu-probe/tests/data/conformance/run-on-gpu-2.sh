#!/usr/bin/env bash
# The second call on the GPU machine (after run-on-gpu.sh): the revision whose conformance did
# not finish within its bound there (ecbf908, now with the matrix's own time budget), a fourth
# revision built with `cargo xtask hami-core`, and CUDA MPS with a fresh daemon per limit source.
set -u
B=${B:-.gpu/conformance}
LIBS=${LIBS:-.gpu/lib}
R=${R:-/tmp/results}
SRC4=${SRC4:-}
CUDA12=${CUDA12:-}
mkdir -p "$R"/conformance "$R"/mps "$R"/logs
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
cleanup() {
  rm -f /etc/ld.so.preload
  if [ -S "$CUDA_MPS_PIPE_DIRECTORY/control" ]; then echo quit | nvidia-cuda-mps-control; fi
}
trap cleanup EXIT
P="$PWD/$B/gpu-probe"
chmod +x "$B"/* 2>/dev/null
t() { local s=$(date +%s.%N); "$@"; local rc=$?; echo "$(date +%s.%N) $s $rc $*" >> "$R/logs/timings.txt"; return $rc; }

# CUDA MPS: a client's own limit under a daemon without a default, then the daemon's default.
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
nvidia-cuda-mps-control -d; sleep 1
CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=8000M t timeout 60 "$P" all --output json --report-file "$R/mps/mps-env-limit-8000.json" > /dev/null 2> "$R/logs/mps-env.err"
GPU_PROBE_TEST_MPS=1 GPU_PROBE_BIN="$P" t timeout 60 "$B/gpu-test" --test-threads=1 mps_client > "$R/logs/gpu-test-mps.txt" 2>&1
echo quit | nvidia-cuda-mps-control; sleep 1
nvidia-cuda-mps-control -d; sleep 1
echo "set_default_device_pinned_mem_limit 0 6000M" | nvidia-cuda-mps-control > "$R/mps/control-set.txt" 2>&1
echo "get_default_device_pinned_mem_limit 0" | nvidia-cuda-mps-control > "$R/mps/control-get.txt" 2>&1
t timeout 60 "$P" all --output json --report-file "$R/mps/mps-daemon-limit-6000.json" > /dev/null 2> "$R/logs/mps-daemon.err"
echo quit | nvidia-cuda-mps-control; sleep 1
ls -la "$CUDA_MPS_PIPE_DIRECTORY" > "$R/mps/pipe-directory-after-quit.txt" 2>&1
t timeout 60 "$P" all --expect-mib 8000 --output json --report-file "$R/mps/bare-after-mps-expect-8000.json" > /dev/null 2>&1
cp -r "$CUDA_MPS_LOG_DIRECTORY" "$R/mps/daemon-log" 2>/dev/null

# Pod-like injection through /etc/ld.so.preload (newest library): `all`, and `compute` under
# CUDA_DEVICE_SM_LIMIT=50 with its own unlimited baseline child.
mkdir -p "$R/compute"
cp "$LIBS/libvgpu-8f3a89c.so" /tmp/libvgpu.so
echo /tmp/libvgpu.so > /etc/ld.so.preload
CUDA_REDIRECT=/tmp/libvgpu.so CUDA_DEVICE_MEMORY_LIMIT_0=8000m CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/pod-all.cache \
  t timeout 60 "$P" all --output json --report-file "$R/compute/preload-all-8000.json" > /dev/null 2> "$R/logs/preload-all.err"
CUDA_REDIRECT=/tmp/libvgpu.so CUDA_DEVICE_MEMORY_LIMIT_0=8000m CUDA_DEVICE_SM_LIMIT=50 GPU_CORE_UTILIZATION_POLICY=force \
  CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/pod-sm50.cache \
  t timeout 60 "$P" compute --seconds 3 --output json --report-file "$R/compute/preload-compute-sm50.json" > /dev/null 2> "$R/logs/preload-compute.err"
rm -f /etc/ld.so.preload

# ecbf908 with a matrix budget, so a hang costs its cell and the budget, never the report.
t timeout 62 "$P" conformance --lib "$PWD/$LIBS/libvgpu-ecbf908.so" --revision ecbf908 --cell-timeout-secs 12 \
  --budget-secs 50 --output json --report-file "$R/conformance/ecbf908-1gpu.json" > /dev/null 2> "$R/logs/conformance-ecbf908.err"
HAMI_CORE_LIB="$PWD/$LIBS/libvgpu-ecbf908.so" GPU_PROBE_BIN="$P" t timeout 30 "$B/gpu-test" --test-threads=1 real_library_e > "$R/logs/gpu-test-ecbf908.txt" 2>&1

# A fourth revision built here.
if [ -n "$SRC4" ]; then
  rev4=$(basename "$SRC4")
  t timeout 90 "$B/xtask" hami-core --src "$SRC4" --fcommon ${CUDA12:+--cuda-home "$CUDA12"} --jobs 16 \
    --out /tmp/libvgpu-$rev4.so > "$R/logs/xtask-hami-core-$rev4.log" 2>&1
  if [ -f /tmp/libvgpu-$rev4.so ]; then
    t timeout 60 "$P" conformance --lib /tmp/libvgpu-$rev4.so --revision "$rev4" --cell-timeout-secs 12 \
      --budget-secs 40 --output json --report-file "$R/conformance/$rev4-1gpu.json" > /dev/null 2> "$R/logs/conformance-$rev4.err"
  fi
fi
nvidia-smi --query-gpu=memory.used --format=csv > "$R/logs/memory-used-at-end.csv" 2>&1
