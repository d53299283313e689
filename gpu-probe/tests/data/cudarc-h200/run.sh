#!/usr/bin/env bash
# gpu-probe before/after cudarc+indicatif on one GPU: `all --expect-mib 8000` bare and under real
# HAMi-core (via /etc/ld.so.preload, removed on every exit), wall times, verdicts, the CUDA/NVML
# symbols each binary resolves (LD_DEBUG), then tests/gpu.rs (bare tier, HAMI_CORE_LIB tier).
# Results are re-packed into $OUT/cudarc-results.tgz after every phase.
set -u
ROOT=$PWD
C=$ROOT/.gpu/cudarc
LIB=$ROOT/.gpu/lib/libvgpu-8f3a89c.so
W=$(mktemp -d /tmp/cudarc-XXXXXX)
LIMIT=${LIMIT:-170}
START=$SECONDS
RUNS=${RUNS:-5}
left() { echo $(( LIMIT - (SECONDS - START) )); }
pack() { tar czf "$OUT/cudarc-results.tgz" -C "$W" . 2>/dev/null; }
unpreload() { rm -f /etc/ld.so.preload; }
trap 'unpreload; pack' EXIT
trap 'unpreload; pack; exit 130' INT TERM
log() { echo "[$(( SECONDS - START ))s] $*" | tee -a "$W/log.txt"; }
declare -A BIN=([before]=$ROOT/.gpu/before/gpu-probe-9ebf25e [base]=$C/gpu-probe-base [after]=$C/gpu-probe)
chmod +x "${BIN[@]}" "$C/gpu-test" 2>/dev/null
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
  uname -a; nproc; ls -la /etc/ld.so.preload 2>&1
  for k in before base after; do echo "$k $(stat -c %s "${BIN[$k]}") $(sha256sum "${BIN[$k]}" | cut -c1-16)"; done
  ls -la /usr/lib/x86_64-linux-gnu/libcuda.so* /usr/lib/x86_64-linux-gnu/libnvidia-ml.so* 2>&1
} > "$W/env.txt" 2>&1
unpreload

timed() { # mode name i
  local mode=$1 name=$2 i=$3 out=$W/runs/$1-$2-$3
  local envs=()
  if [ "$mode" = hami ]; then
    envs=(CUDA_DEVICE_MEMORY_LIMIT_0=8000m CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/cudarc-$mode-$name-$i-$$.cache)
  fi
  local t0=$EPOCHREALTIME
  env "${envs[@]}" timeout -k 2 60 "${BIN[$name]}" all --expect-mib 8000 --output json > "$out.json" 2> "$out.err"
  local rc=$?
  local t1=$EPOCHREALTIME
  echo "$mode $name $i $rc $t0 $t1" >> "$W/times.txt"
}
mkdir -p "$W/runs"
log "bare: $RUNS runs each, interleaved"
for i in $(seq 1 "$RUNS"); do for n in before base after; do timed bare $n "$i"; done; done
pack
if [ -z "${SKIP_HAMI:-}" ] && [ "$(left)" -gt 60 ]; then
  log "hami: /etc/ld.so.preload -> $LIB"
  echo "$LIB" > /etc/ld.so.preload
  for i in $(seq 1 "$RUNS"); do for n in before base after; do timed hami $n "$i"; done; done
  # The symbols each binary resolves (dlsym and the loader's own bindings), under HAMi-core.
  for n in before after; do
    mkdir -p "$W/ld-hami-$n"
    env CUDA_DEVICE_MEMORY_LIMIT_0=8000m CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/cudarc-ld-$n-$$.cache \
      LD_DEBUG=bindings,files LD_DEBUG_OUTPUT="$W/ld-hami-$n/ld" timeout -k 2 60 "${BIN[$n]}" all --expect-mib 8000 --output json > "$W/ld-hami-$n.json" 2>/dev/null
  done
  unpreload
  log "hami done; preload removed: $(ls /etc/ld.so.preload 2>&1)"
fi
for n in before after; do
  mkdir -p "$W/ld-bare-$n"
  LD_DEBUG=bindings,files LD_DEBUG_OUTPUT="$W/ld-bare-$n/ld" timeout -k 2 60 "${BIN[$n]}" all --expect-mib 8000 --output json > "$W/ld-bare-$n.json" 2>/dev/null
done
for d in "$W"/ld-*/; do
  m=$(basename "$d")
  grep -h -E "normal symbol \`(cu|nvml)[A-Za-z0-9_]*'" "$d"/ld.* 2>/dev/null \
    | sed -E "s/^ *[0-9]+: *//; s/binding file ([^ ]+) \[[0-9]+\] to ([^ ]+) \[[0-9]+\]: normal symbol \`([^']+)'.*/\3 \1 -> \2/" \
    | sort | uniq -c > "$W/symbols-$m.txt"
  grep -h -E "file=[^ ]*(libcuda|libnvidia-ml|libvgpu)[^ ]*.*(generating link map|needed by)" "$d"/ld.* 2>/dev/null \
    | sed -E 's/^ *[0-9]+: *//' | sort | uniq -c > "$W/files-$m.txt"
  rm -rf "$d"
done
pack
log "gpu tests, bare tier ($(left)s left)"
if [ "$(left)" -gt 40 ]; then
  GPU_PROBE_BIN=${BIN[after]} timeout -k 5 $(( $(left) - 30 )) "$C/gpu-test" --test-threads=1 > "$W/gpu-test-bare.txt" 2>&1
  echo "exit $?" >> "$W/gpu-test-bare.txt"
fi
pack
log "gpu tests, HAMI_CORE_LIB tier ($(left)s left)"
if [ "$(left)" -gt 20 ]; then
  HAMI_CORE_LIB=$LIB GPU_PROBE_BIN=${BIN[after]} timeout -k 5 $(( $(left) - 8 )) "$C/gpu-test" real_library --test-threads=1 > "$W/gpu-test-hami.txt" 2>&1
  echo "exit $?" >> "$W/gpu-test-hami.txt"
fi
nvidia-smi --query-gpu=memory.used --format=csv >> "$W/env.txt" 2>&1
log "end ($(left)s left)"
