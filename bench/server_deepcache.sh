#!/usr/bin/env bash
# DeepCache on a server CPU (the GPU host's 16-core Xeon), in device calls of at most 10 minutes:
#   bench/server_deepcache.sh OUT fp16      svd-xt FP16 IR, branches 0 and 1: bench/deepcache.py svd-xt
#   bench/server_deepcache.sh OUT prepare   svd-xt exported with branch 0 and quantized (a small calibration: the weights are random)
#   bench/server_deepcache.sh OUT int8      then, on the same warm machine: bench/deepcache.py svd-xt-int8
set -euo pipefail
out=$1 stage=$2
source bench/device_env.sh > "$out/lscpu.txt"
svdtool="python3 -m svdtool.cli"
work=bench/.cache/server && mkdir -p $work
export DEEPCACHE_PARTIAL="$out/deepcache.partial.jsonl"
case $stage in
  fp16) python3 bench/deepcache.py svd-xt > "$out/deepcache.log" 2>&1
        cp bench/results/deepcache_svd-xt.json bench/results/deepcache_svd-xt.md "$out/" ;;
  prepare) { time $svdtool export svd-xt -o $work/fp16 --cache-branch 0 --overwrite; } > "$out/export.log" 2>&1
           { time $svdtool quantize $work/fp16 --calib examples/calibration -o $work/int8 --samples 8 --calib-height 128 \
               --calib-width 128 --calib-frames 4 --calib-steps 2 --overwrite; } > "$out/quantize.log" 2>&1
           tail -3 "$out/export.log" "$out/quantize.log" ;;
  int8) python3 bench/deepcache.py svd-xt-int8 $work/fp16 $work/int8 > "$out/deepcache.log" 2>&1
        cp bench/results/deepcache_svd-xt-int8.json bench/results/deepcache_svd-xt-int8.md "$out/" ;;
esac
tail -12 "$out/deepcache.log" 2>/dev/null || true
