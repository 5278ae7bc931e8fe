#!/usr/bin/env bash
# The default INT8 on a server CPU (the GPU host's 16-core Xeon), whole pipeline, in one device call:
#   bench/server_int8.sh OUT
# exports svd-xt (random weights), quantizes it with `svdtool quantize` defaults (calibration: examples/calibration at
# 128x128, 4 frames, 2 steps, 8 UNet samples), then `svdtool bench` FP16 IR vs INT8 at 256x256x8, 4 steps, one run after a warm-up.
set -euo pipefail
out=$1
source bench/device_env.sh > "$out/lscpu.txt"
svdtool="python3 -m svdtool.cli"
work=/tmp/server_int8 && mkdir -p $work
{ time $svdtool export svd-xt -o $work/fp16 --overwrite; } > "$out/export.log" 2>&1
{ time $svdtool quantize $work/fp16 --calib examples/calibration -o $work/int8 --samples 8 --calib-height 128 --calib-width 128 \
    --calib-frames 4 --calib-steps 2 --overwrite; } > "$out/quantize.log" 2>&1
$svdtool bench $work/fp16 $work/int8 --height 256 --width 256 --frames 8 --steps 4 --repeat 1 -o "$out/bench_svd-xt_server.json" \
  > "$out/bench.log" 2>&1
tail -5 "$out/quantize.log"; tail -30 "$out/bench.log"
