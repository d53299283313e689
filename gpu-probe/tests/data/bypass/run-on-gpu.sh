#!/usr/bin/env bash
# The exact procedure that produced the reports in this folder, the re-run conformance reports in
# ../conformance/ and the MPS reports in ../mps/, in one call on the GPU machine. Run as root from
# the repository root with: the portable gpu-probe (`cargo xtask dist --tool gpu-probe`), the GPU
# test binary (`cargo test -p gpu-probe --test gpu --no-run`) as gpu-test, xtask and
# static_cudart.cu in $B; the HAMi-core libraries in $LIBS (libvgpu-<rev>.so); the c0f9da6 source
# in $SRC4 and CUDA 12 headers in $CUDA12. Everything goes under $R and is packed into
# $OUT/results.tgz after every step, so a run cut short still returns what it did. It removes
# /etc/ld.so.preload and stops the MPS daemon on any exit, and keeps to $BUDGET seconds.
set -u
B=${B:-.gpu/bypass}
LIBS=${LIBS:-.gpu/lib}
R=${R:-/tmp/results}
OUT=${OUT:-/tmp/out}
SRC4=${SRC4:-.hami-core/c0f9da6}
CUDA12=${CUDA12:-.cuda12}
BUDGET=${BUDGET:-520}
REVS="8f3a89c 5091a2f ecbf908 c0f9da6"
T0=$(date +%s)
mkdir -p "$R"/bypass "$R"/conformance "$R"/mps "$R"/logs "$R"/captures "$OUT" /tmp/libs
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
export PATH=$PATH:/usr/local/cuda/bin
pack() { tar czf "$OUT/results.tgz" -C "$R" . 2>/dev/null; }
cleanup() {
  rm -f /etc/ld.so.preload
  if [ -S "$CUDA_MPS_PIPE_DIRECTORY/control" ]; then echo quit | timeout 10 nvidia-cuda-mps-control; fi
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

# 0. Read-only captures: the card (MIG mode read, never changed), the driver, the lock folder.
nvidia-smi -L > "$R/captures/nvidia-smi-L.txt" 2>&1
nvidia-smi --query-gpu=name,uuid,memory.total,memory.used,mig.mode.current,driver_version --format=csv > "$R/captures/nvidia-smi-query.csv" 2>&1
uname -r > "$R/captures/kernel.txt"
ls -ld /tmp/vgpulock > "$R/captures/vgpulock-before.txt" 2>&1

# 1. Builds: the static-cudart program, and HAMi-core c0f9da6.
nvcc --version > "$R/logs/nvcc-version.txt" 2>&1
t timeout 90 nvcc -cudart static -o /tmp/static_cudart "$B/static_cudart.cu" > "$R/logs/nvcc.log" 2>&1
ldd /tmp/static_cudart > "$R/captures/static_cudart-ldd.txt" 2>&1
cp "$LIBS"/libvgpu-*.so /tmp/libs/
t timeout 120 "$B/xtask" hami-core --src "$SRC4" --fcommon --cuda-home "$PWD/$CUDA12" --jobs 16 \
  --out /tmp/libs/libvgpu-c0f9da6.so > "$R/logs/xtask-hami-core-c0f9da6.log" 2>&1
sha256sum /tmp/libs/*.so /tmp/static_cudart "$P" > "$R/captures/sha256.txt" 2>&1
pack

# 2. Conformance of every revision (LD_PRELOAD injection; the matrix makes /tmp/vgpulock itself).
for rev in $REVS; do
  lib=/tmp/libs/libvgpu-$rev.so
  [ -f "$lib" ] || { skip "conformance $rev: no library"; continue; }
  [ "$(left)" -gt 300 ] || { skip "conformance $rev"; continue; }
  t timeout 130 "$P" conformance --lib "$lib" --revision "$rev" --cell-timeout-secs 40 --budget-secs 110 \
    --static-cudart /tmp/static_cudart --output json --report-file "$R/conformance/$rev-1gpu.json" \
    > /dev/null 2> "$R/logs/conformance-$rev.err"
  pack
done
ls -ld /tmp/vgpulock > "$R/captures/vgpulock-after-conformance.txt" 2>&1

# 3. The audit of every revision, injected the way a pod is (/etc/ld.so.preload, the limit env, a
#    fresh region, /tmp/vgpulock as HAMi mounts it), and the bare card as the negative control.
mkdir -p -m 0777 /tmp/vgpulock
for rev in $REVS; do
  lib=/tmp/libs/libvgpu-$rev.so
  [ -f "$lib" ] || continue
  [ "$(left)" -gt 150 ] || { skip "audit $rev"; continue; }
  cp "$lib" /tmp/libvgpu.so
  echo /tmp/libvgpu.so > /etc/ld.so.preload
  CUDA_REDIRECT=/tmp/libvgpu.so CUDA_DEVICE_MEMORY_LIMIT_0=8000m LIBCUDA_LOG_LEVEL=1 \
    CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/bypass-$rev.cache \
    t timeout 90 "$P" audit --static-cudart /tmp/static_cudart --output json \
    --report-file "$R/bypass/$rev-audit-8000.json" > /dev/null 2> "$R/logs/audit-$rev.err"
  rm -f /etc/ld.so.preload
  pack
done
t timeout 60 "$P" audit --expect-mib 8000 --static-cudart /tmp/static_cudart --output json \
  --report-file "$R/bypass/bare-audit-8000.json" > /dev/null 2> "$R/logs/audit-bare.err"
/tmp/static_cudart 0 10485760000 67108864 20 > "$R/bypass/static-cudart-bare.txt" 2>&1
pack

# 4. The GPU tests: the bare audit, then each revision's bypass rows against its recording (and,
#    for the two revisions that never finished before, the enforced path and the audit).
GPU_PROBE_BIN="$P" t timeout 60 "$B/gpu-test" --test-threads=1 audit_on_a_bare_card \
  > "$R/logs/gpu-test-bare.txt" 2>&1
for rev in $REVS; do
  lib=/tmp/libs/libvgpu-$rev.so
  [ -f "$lib" ] || continue
  [ "$(left)" -gt 75 ] || { skip "gpu-test $rev"; continue; }
  filter=real_library_bypass
  case $rev in ecbf908|c0f9da6) filter="real_library_bypass real_library_e real_library_a" ;; esac
  HAMI_CORE_LIB="$lib" HAMI_CORE_REVISION=$rev GPU_PROBE_BYPASS_DATA="$R/bypass" \
    GPU_PROBE_STATIC_CUDART=/tmp/static_cudart GPU_PROBE_BIN="$P" \
    t timeout 100 "$B/gpu-test" --test-threads=1 --nocapture $filter > "$R/logs/gpu-test-$rev.txt" 2>&1
  pack
done

# 5. CUDA MPS, for real: a client's own limit under a fresh daemon, then the daemon's default
#    limit under a second fresh daemon, then the bare card after the daemon quit.
if [ "$(left)" -gt 40 ]; then
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d; sleep 1
  CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=8000M t timeout 40 "$P" all --output json \
    --report-file "$R/mps/mps-env-limit-8000.json" > /dev/null 2> "$R/logs/mps-env.err"
  GPU_PROBE_TEST_MPS=1 GPU_PROBE_BIN="$P" t timeout 40 "$B/gpu-test" --test-threads=1 mps_client \
    > "$R/logs/gpu-test-mps.txt" 2>&1
  echo quit | timeout 10 nvidia-cuda-mps-control; sleep 1
  nvidia-cuda-mps-control -d; sleep 1
  echo "set_default_device_pinned_mem_limit 0 6000M" | timeout 10 nvidia-cuda-mps-control > "$R/mps/control-set.txt" 2>&1
  echo "get_default_device_pinned_mem_limit 0" | timeout 10 nvidia-cuda-mps-control > "$R/mps/control-get.txt" 2>&1
  t timeout 40 "$P" all --output json --report-file "$R/mps/mps-daemon-limit-6000.json" > /dev/null 2> "$R/logs/mps-daemon.err"
  echo quit | timeout 10 nvidia-cuda-mps-control; sleep 1
  ls -la "$CUDA_MPS_PIPE_DIRECTORY" > "$R/mps/pipe-directory-after-quit.txt" 2>&1
  t timeout 40 "$P" all --expect-mib 8000 --output json --report-file "$R/mps/bare-after-mps-expect-8000.json" \
    > /dev/null 2> "$R/logs/bare-after-mps.err"
  cp -r "$CUDA_MPS_LOG_DIRECTORY" "$R/mps/daemon-log" 2>/dev/null
else
  skip "mps"
fi
