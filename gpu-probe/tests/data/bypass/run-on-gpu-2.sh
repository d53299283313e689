#!/usr/bin/env bash
# The second call on the GPU machine (after run-on-gpu.sh), with the fixes its results asked for:
# - a child without CUDA_DEVICE_MEMORY_SHARED_CACHE joins HAMi-core's default region
#   /tmp/cudevshr.cache. In a pod that file is in the container's own /tmp; on one host it is
#   shared by every revision measured, and in the first call the cleared-environment children of
#   ecbf908 and c0f9da6 hung in a default region made by 8f3a89c and 5091a2f (version 1.2 against
#   their 1.1). Here each revision starts with no default region, as each container does, and
#   the end shows the hang itself (an ecbf908 child in a region an 8f3a89c child made);
# - the MPS daemon check that also accepts a live socket of another type.
# Same layout as run-on-gpu.sh ($B, $LIBS, $SRC4, $CUDA12, $R, $OUT, $BUDGET).
set -u
B=${B:-.gpu/bypass}
LIBS=${LIBS:-.gpu/lib}
R=${R:-/tmp/results}
OUT=${OUT:-/tmp/out}
SRC4=${SRC4:-.hami-core/c0f9da6}
CUDA12=${CUDA12:-.cuda12}
BUDGET=${BUDGET:-120}
T0=$(date +%s)
mkdir -p "$R"/bypass "$R"/conformance "$R"/mps "$R"/logs "$R"/captures "$OUT" /tmp/libs
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
export PATH=$PATH:/usr/local/cuda/bin
pack() { tar czf "$OUT/results.tgz" -C "$R" . 2>/dev/null; }
cleanup() {
  rm -f /etc/ld.so.preload
  if [ -S "$CUDA_MPS_PIPE_DIRECTORY/control" ]; then echo quit | timeout 5 nvidia-cuda-mps-control > /dev/null 2>&1; fi
  nvidia-smi --query-gpu=memory.used --format=csv > "$R/captures/memory-used-at-end.csv" 2>&1
  echo "total $(( $(date +%s) - T0 )) s" >> "$R/logs/timings.txt"
  pack
}
trap cleanup EXIT
P="$PWD/$B/gpu-probe"
chmod +x "$B"/gpu-probe "$B"/gpu-test "$B"/xtask
t() { local s=$(date +%s.%N); "$@"; local rc=$?; echo "$(date +%s.%N) $s $rc $*" >> "$R/logs/timings.txt"; return $rc; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
skip() { echo "SKIPPED at $(( $(date +%s) - T0 )) s (budget): $*" >> "$R/logs/timings.txt"; }
ls -la /tmp/cudevshr.cache > "$R/captures/default-region-at-start.txt" 2>&1

# 1. Builds (a fresh machine): the static-cudart program and HAMi-core c0f9da6.
t timeout 60 nvcc -cudart static -o /tmp/static_cudart "$B/static_cudart.cu" > "$R/logs/nvcc.log" 2>&1
cp "$LIBS"/libvgpu-*.so /tmp/libs/
t timeout 60 "$B/xtask" hami-core --src "$SRC4" --fcommon --cuda-home "$PWD/$CUDA12" --jobs 16 \
  --out /tmp/libs/libvgpu-c0f9da6.so > "$R/logs/xtask-hami-core-c0f9da6.log" 2>&1
sha256sum /tmp/libs/*.so /tmp/static_cudart "$P" > "$R/captures/sha256.txt" 2>&1

# 2. CUDA MPS with the fixed daemon check: a client's own limit, the daemon's default limit, the
#    bare card after the daemon quit.
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
nvidia-cuda-mps-control -d; sleep 1
CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=8000M t timeout 30 "$P" all --output json \
  --report-file "$R/mps/mps-env-limit-8000.json" > /dev/null 2> "$R/logs/mps-env.err"
GPU_PROBE_TEST_MPS=1 GPU_PROBE_BIN="$P" t timeout 30 "$B/gpu-test" --test-threads=1 mps_client \
  > "$R/logs/gpu-test-mps.txt" 2>&1
echo quit | timeout 10 nvidia-cuda-mps-control; sleep 1
nvidia-cuda-mps-control -d; sleep 1
echo "set_default_device_pinned_mem_limit 0 6000M" | timeout 10 nvidia-cuda-mps-control > "$R/mps/control-set.txt" 2>&1
echo "get_default_device_pinned_mem_limit 0" | timeout 10 nvidia-cuda-mps-control > "$R/mps/control-get.txt" 2>&1
t timeout 30 "$P" all --output json --report-file "$R/mps/mps-daemon-limit-6000.json" > /dev/null 2> "$R/logs/mps-daemon.err"
echo quit | timeout 10 nvidia-cuda-mps-control; sleep 1
ls -la "$CUDA_MPS_PIPE_DIRECTORY" > "$R/mps/pipe-directory-after-quit.txt" 2>&1
t timeout 30 "$P" all --expect-mib 8000 --output json --report-file "$R/mps/bare-after-mps-expect-8000.json" \
  > /dev/null 2> "$R/logs/bare-after-mps.err"
cp -r "$CUDA_MPS_LOG_DIRECTORY" "$R/mps/daemon-log" 2>/dev/null
pack

# 3. ecbf908 and c0f9da6, each with no default region left by another revision: conformance,
#    the audit injected as a pod is, the GPU tests.
for rev in ecbf908 c0f9da6; do
  lib=/tmp/libs/libvgpu-$rev.so
  [ -f "$lib" ] || { skip "$rev: no library"; continue; }
  [ "$(left)" -gt 45 ] || { skip "conformance $rev"; continue; }
  rm -f /tmp/cudevshr.cache
  t timeout 45 "$P" conformance --lib "$lib" --revision "$rev" --cell-timeout-secs 30 --budget-secs 40 \
    --static-cudart /tmp/static_cudart --output json --report-file "$R/conformance/$rev-1gpu.json" \
    > /dev/null 2> "$R/logs/conformance-$rev.err"
  pack
  rm -f /tmp/cudevshr.cache
  mkdir -p -m 0777 /tmp/vgpulock
  cp "$lib" /tmp/libvgpu.so
  echo /tmp/libvgpu.so > /etc/ld.so.preload
  CUDA_REDIRECT=/tmp/libvgpu.so CUDA_DEVICE_MEMORY_LIMIT_0=8000m LIBCUDA_LOG_LEVEL=1 \
    CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/bypass-$rev.cache \
    t timeout 30 "$P" audit --time-bound-secs 10 --static-cudart /tmp/static_cudart --output json \
    --report-file "$R/bypass/$rev-audit-8000.json" > /dev/null 2> "$R/logs/audit-$rev.err"
  rm -f /etc/ld.so.preload
  pack
done
for rev in ecbf908 c0f9da6; do
  lib=/tmp/libs/libvgpu-$rev.so
  [ -f "$lib" ] || continue
  [ "$(left)" -gt 20 ] || { skip "gpu-test $rev"; continue; }
  rm -f /tmp/cudevshr.cache
  HAMI_CORE_LIB="$lib" HAMI_CORE_REVISION=$rev GPU_PROBE_BYPASS_DATA="$R/bypass" \
    GPU_PROBE_STATIC_CUDART=/tmp/static_cudart GPU_PROBE_BIN="$P" \
    t timeout 30 "$B/gpu-test" --test-threads=1 --nocapture real_library_bypass real_library_e \
    > "$R/logs/gpu-test-$rev.txt" 2>&1
  pack
done

# 4. The hang itself: a child of ecbf908 without the region variable, in a default region a
#    child of 8f3a89c made (as in the first call), bounded at 12 s, its stderr kept.
if [ "$(left)" -gt 16 ]; then
  rm -f /tmp/cudevshr.cache
  W='{"expected":[],"run_cap":false,"ceiling_bytes":null,"resolution_bytes":67108864,"initial_step_bytes":1073741824,"time_bound_ms":1000,"libraries":[],"region_path":"","alarm_secs":14}'
  env -i PATH="$PATH" LD_PRELOAD=/tmp/libs/libvgpu-8f3a89c.so CUDA_REDIRECT=/tmp/libs/libvgpu-8f3a89c.so \
    LIBCUDA_LOG_LEVEL=3 timeout 10 "$P" __worker "$W" > /dev/null 2> "$R/logs/default-region-8f3a89c.err"
  env -i PATH="$PATH" LD_PRELOAD=/tmp/libs/libvgpu-ecbf908.so CUDA_REDIRECT=/tmp/libs/libvgpu-ecbf908.so \
    LIBCUDA_LOG_LEVEL=3 timeout 12 "$P" __worker "$W" > /dev/null 2> "$R/logs/default-region-ecbf908-after-8f3a89c.err"
  rm -f /tmp/cudevshr.cache
else
  skip "default-region hang"
fi
