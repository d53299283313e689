#!/usr/bin/env bash
# The interception's cost: `gpu-probe overhead` on the bare card and under real HAMi-core
# (8f3a89c, 5091a2f, ecbf908 carried; c0f9da6 built here), 3 runs each, interleaved; each run
# injected as a pod is (/etc/ld.so.preload, CUDA_DEVICE_MEMORY_LIMIT_0=8000m, a fresh shared
# region file). Reports in $OUT/overhead.tgz.
set -u
ROOT=$PWD
D=$ROOT/.gpu/final19
W=/tmp/overhead
mkdir -p "$W/reports" "$W/logs" /tmp/libs
pack() { tar czf "$OUT/overhead.tgz" -C "$W" . 2>/dev/null; }
trap 'rm -f /etc/ld.so.preload; nvidia-smi --query-gpu=memory.used --format=csv > "$W/logs/memory-used-at-end.csv" 2>&1; pack' EXIT
export PATH=$PATH:/usr/local/cuda/bin
chmod +x "$D"/now "$D"/xtask
cp .gpu/lib/libvgpu-*.so /tmp/libs/
timeout 120 "$D/xtask" hami-core --src .hami-core/c0f9da6 --fcommon --cuda-home "$ROOT/.cuda12" --jobs 16 \
  --out /tmp/libs/libvgpu-c0f9da6.so > "$W/logs/xtask-hami-core-c0f9da6.log" 2>&1
mkdir -p -m 0777 /tmp/vgpulock
{ nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
  sha256sum "$D/now" /tmp/libs/*.so; } > "$W/logs/env.txt" 2>&1
for i in 1 2 3; do
  for mode in bare 8f3a89c 5091a2f ecbf908 c0f9da6; do
    rm -f /etc/ld.so.preload /tmp/cudevshr.cache
    envs=(X=1)
    if [ "$mode" != bare ]; then
      [ -f /tmp/libs/libvgpu-$mode.so ] || continue
      echo /tmp/libs/libvgpu-$mode.so > /etc/ld.so.preload
      envs=(CUDA_DEVICE_MEMORY_LIMIT_0=8000m CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/ov-$mode-$i.cache)
    fi
    t0=$EPOCHREALTIME
    env "${envs[@]}" timeout -k 2 90 "$D/now" overhead --output json --report-file "$W/reports/$mode-$i.json" \
      > /dev/null 2> "$W/logs/$mode-$i.err"
    echo "$mode $i $? $t0 $EPOCHREALTIME" >> "$W/logs/times.txt"
    rm -f /etc/ld.so.preload
  done
  pack
done
