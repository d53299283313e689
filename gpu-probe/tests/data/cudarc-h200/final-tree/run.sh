#!/usr/bin/env bash
# Issue 19 on one GPU, on the final tree: gpu-probe `all --expect-mib 8000` 7 times each,
# interleaved, bare and under real HAMi-core 8f3a89c (/etc/ld.so.preload, removed on every exit),
# for the last release (9ebf25e), main before the cudarc change (6422c01), the change merged
# (a214785) and the final tree (now); then tests/gpu.rs with `now`: the bare tier, and the
# HAMI_CORE_LIB tier (enforced path, audit, conformance, bypass rows against their records) for
# each of the three libraries carried. Results re-packed into $OUT/results.tgz after each phase.
set -u
ROOT=$PWD
D=$ROOT/.gpu/final19
LIBS=$ROOT/.gpu/lib
W=/tmp/final19
LIMIT=${LIMIT:-520}
RUNS=${RUNS:-7}
START=$SECONDS
mkdir -p "$W/runs" "$W/tests" "$W/bypass"
left() { echo $(( LIMIT - (SECONDS - START) )); }
pack() { tar czf "$OUT/results.tgz" -C "$W" . 2>/dev/null; }
unpreload() { rm -f /etc/ld.so.preload; }
trap 'unpreload; pack' EXIT
trap 'unpreload; pack; exit 130' INT TERM
log() { echo "[$(( SECONDS - START ))s] $*" | tee -a "$W/log.txt"; }
NAMES="before base after now"
chmod +x $D/before $D/base $D/after $D/now $D/gpu-test
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
  uname -a; nproc; ls -la /etc/ld.so.preload 2>&1
  for k in $NAMES; do echo "$k $(stat -c %s "$D/$k") $(sha256sum "$D/$k" | cut -c1-16)"; done
  sha256sum $LIBS/*.so
} > "$W/env.txt" 2>&1
unpreload
export PATH=$PATH:/usr/local/cuda/bin
timeout 90 nvcc -cudart static -o /tmp/static_cudart "$D/static_cudart.cu" > "$W/nvcc.log" 2>&1
echo "nvcc exit $?" >> "$W/nvcc.log"

timed() { # mode name i
  local mode=$1 name=$2 i=$3 out=$W/runs/$1-$2-$3
  local envs=(X=1)
  if [ "$mode" = hami ]; then
    envs=(CUDA_DEVICE_MEMORY_LIMIT_0=8000m CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/f19-$mode-$name-$i-$$.cache)
  fi
  local t0=$EPOCHREALTIME
  env "${envs[@]}" timeout -k 2 60 "$D/$name" all --expect-mib 8000 --output json > "$out.json" 2> "$out.err"
  local rc=$?
  local t1=$EPOCHREALTIME
  echo "$mode $name $i $rc $t0 $t1" >> "$W/times.txt"
}
log "bare: $RUNS runs each, interleaved"
for i in $(seq 1 "$RUNS"); do for n in $NAMES; do timed bare $n "$i"; done; done
pack
log "hami: /etc/ld.so.preload -> 8f3a89c"
echo "$LIBS/libvgpu-8f3a89c.so" > /etc/ld.so.preload
for i in $(seq 1 "$RUNS"); do for n in $NAMES; do timed hami $n "$i"; done; done
unpreload
log "hami done; preload: $(ls /etc/ld.so.preload 2>&1)"
pack

log "gpu tests, bare tier ($(left)s left)"
GPU_PROBE_BIN=$D/now timeout -k 5 150 "$D/gpu-test" --test-threads=1 > "$W/tests/bare.txt" 2>&1
echo "exit $?" >> "$W/tests/bare.txt"
pack
mkdir -p -m 0777 /tmp/vgpulock
for rev in 8f3a89c 5091a2f ecbf908; do
  lib=$LIBS/libvgpu-$rev.so
  if [ "$(left)" -lt 70 ]; then log "SKIPPED $rev tier (budget)"; continue; fi
  log "gpu tests, HAMI_CORE_LIB=$rev ($(left)s left)"
  rm -f /tmp/cudevshr.cache
  HAMI_CORE_LIB=$lib HAMI_CORE_REVISION=$rev GPU_PROBE_STATIC_CUDART=/tmp/static_cudart \
    GPU_PROBE_BYPASS_DATA=$ROOT/gpu-probe/tests/data/bypass GPU_PROBE_BIN=$D/now \
    timeout -k 5 $(( $(left) - 15 )) "$D/gpu-test" --test-threads=1 real_library > "$W/tests/hami-$rev.txt" 2>&1
  echo "exit $?" >> "$W/tests/hami-$rev.txt"
  pack
done
nvidia-smi --query-gpu=memory.used --format=csv >> "$W/env.txt" 2>&1
ls /etc/ld.so.preload >> "$W/env.txt" 2>&1
log "end ($(left)s left)"
