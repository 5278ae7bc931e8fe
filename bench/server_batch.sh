#!/usr/bin/env bash
# Batch throughput on a server CPU (the GPU host's 16-core Xeon): in-process vs Ray Data with 1/2/4/8 actors, svd-mini's
# FP16 IR and its default INT8. Three device calls on one warm machine (a call carries 64 MiB at most, and svd-mini's
# weights and Ray do not travel together):
#   bench/server_batch.sh OUT copy      svd-mini's weights (models/mini, tracked) into bench/.cache, which stays
#   bench/server_batch.sh OUT prepare   svdtool export + svdtool quantize (defaults, examples/calibration)
#   bench/server_batch.sh OUT run IR    bench/batch_scaling.py --images 32 --actors 1,2,4,8 for IR fp16 or int8 (GIFs:
#                                       the host lacks imageio-ffmpeg)
set -euo pipefail
out=$1 stage=$2 ir=${3:-fp16}
work=bench/.cache/server-batch && mkdir -p $work
svdtool="python3 -m svdtool.cli"
case $stage in
  copy) rm -rf $work/mini-src && cp -r models/mini $work/mini-src && du -sh $work/mini-src ;;
  prepare) WHEELS=.whl-core source bench/device_env.sh > "$out/lscpu.txt"
           rm -rf models/mini && cp -r $work/mini-src models/mini  # the built-in model, with its own defaults
           { time $svdtool export mini -o $work/fp16 --overwrite; } > "$out/export.log" 2>&1
           { time $svdtool quantize $work/fp16 --calib examples/calibration -o $work/int8 --overwrite; } > "$out/quantize.log" 2>&1
           tail -n 4 "$out/export.log" "$out/quantize.log" ;;
  run) WHEELS=.whl-core source bench/device_env.sh > "$out/lscpu.txt"
       python3 bench/batch_scaling.py "${ir^^}=$work/$ir" --images 32 --actors 1,2,4,8 \
         --out batch_scaling_server_$ir --format gif > "$out/batch.log" 2>&1 || { tail -40 "$out/batch.log"; exit 1; }
       cp bench/results/batch_scaling_server_$ir.json bench/results/batch_scaling_server_$ir.md "$out/"
       tail -20 "$out/batch.log" ;;
esac
