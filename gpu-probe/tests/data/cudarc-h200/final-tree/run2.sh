#!/usr/bin/env bash
# The GPU tests of the final tree that run.sh left: the HAMI_CORE_LIB tier with c0f9da6 (built
# here: -fcommon, CUDA 12.2 headers), the MPS tier under a control daemon started and stopped
# here, and the fill-the-card test. Results in $OUT/results2.tgz.
set -u
ROOT=$PWD
D=$ROOT/.gpu/final19
W=/tmp/final19b
mkdir -p "$W/tests" /tmp/libs
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
export PATH=$PATH:/usr/local/cuda/bin
pack() { tar czf "$OUT/results2.tgz" -C "$W" . 2>/dev/null; }
cleanup() {
  rm -f /etc/ld.so.preload
  if [ -S "$CUDA_MPS_PIPE_DIRECTORY/control" ]; then echo quit | timeout 5 nvidia-cuda-mps-control > /dev/null 2>&1; fi
  nvidia-smi --query-gpu=memory.used --format=csv > "$W/memory-used-at-end.csv" 2>&1
  pgrep -a nvidia-cuda-mps >> "$W/memory-used-at-end.csv" 2>&1
  pack
}
trap cleanup EXIT
chmod +x "$D"/now "$D"/gpu-test "$D"/xtask
timeout 90 nvcc -cudart static -o /tmp/static_cudart "$D/static_cudart.cu" > "$W/nvcc.log" 2>&1
timeout 120 "$D/xtask" hami-core --src .hami-core/c0f9da6 --fcommon --cuda-home "$ROOT/.cuda12" --jobs 16 \
  --out /tmp/libs/libvgpu-c0f9da6.so > "$W/xtask-hami-core-c0f9da6.log" 2>&1
echo "exit $?" >> "$W/xtask-hami-core-c0f9da6.log"
sha256sum /tmp/libs/*.so >> "$W/xtask-hami-core-c0f9da6.log" 2>&1
mkdir -p -m 0777 /tmp/vgpulock
rm -f /tmp/cudevshr.cache
HAMI_CORE_LIB=/tmp/libs/libvgpu-c0f9da6.so HAMI_CORE_REVISION=c0f9da6 GPU_PROBE_STATIC_CUDART=/tmp/static_cudart \
  GPU_PROBE_BYPASS_DATA=$ROOT/gpu-probe/tests/data/bypass GPU_PROBE_BIN=$D/now \
  timeout -k 5 150 "$D/gpu-test" --test-threads=1 real_library > "$W/tests/hami-c0f9da6.txt" 2>&1
echo "exit $?" >> "$W/tests/hami-c0f9da6.txt"
pack
GPU_PROBE_TEST_FILL_CARD=1 GPU_PROBE_BIN=$D/now timeout -k 5 60 "$D/gpu-test" --test-threads=1 a_full_card > "$W/tests/fill-card.txt" 2>&1
echo "exit $?" >> "$W/tests/fill-card.txt"
pack
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
nvidia-cuda-mps-control -d; sleep 1
GPU_PROBE_TEST_MPS=1 GPU_PROBE_BIN=$D/now timeout -k 5 60 "$D/gpu-test" --test-threads=1 mps_client > "$W/tests/mps.txt" 2>&1
echo "exit $?" >> "$W/tests/mps.txt"
echo quit | timeout 10 nvidia-cuda-mps-control; sleep 1
