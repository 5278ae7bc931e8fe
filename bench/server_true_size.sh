#!/usr/bin/env bash
# svd-xt at its true size on the GPU host's 16-core Xeon (the `device` tool), in two calls on one warm machine
# (carry .whl-core and .ovsite: bench/device_env.sh):
#   bench/server_true_size.sh prepare OUT   export svd-xt (random weights) with SVD's cross-attention folded and in full;
#                                           profile one FP16 UNet call of each at 576x1024x14; quantize both (INT8
#                                           defaults, calibration at 128x128x4, 2 steps, 8 samples) in the background
#   bench/server_true_size.sh measure OUT   profile the two INT8 UNets; whole videos (576x1024, 25 frames, 2 steps) of
#                                           the folded INT8 and FP16 IRs, --memory low and standard (in the background:
#                                           a call returns after 9 minutes with what is done; call again to collect)
# Results: OUT/profile_unet_xeon_*.{json,md} (bench/profile_unet.py), OUT/generate_memory_xeon_*.{json,md}
# (bench/generate_memory.py); logs in OUT.
set -euo pipefail
stage=$1 out=$2
WHEELS=.whl-core source bench/device_env.sh > "$out/lscpu.txt"
svdtool="python3 -m svdtool.cli"
work=bench/.cache/true_size && mkdir -p $work
case $stage in
  prepare)
    { time $svdtool export svd-xt -o $work/fp16 --overwrite; } > "$out/export_folded.log" 2>&1
    { time $svdtool export svd-xt -o $work/fp16-full --cross-attention full --overwrite; } > "$out/export_full.log" 2>&1
    python3 bench/profile_unet.py xeon_fp16 $work/fp16-full $work/fp16 --height 576 --width 1024 --frames 14 > "$out/profile_fp16.log" 2>&1
    cp bench/results/profile_unet_xeon_fp16.* "$out/"
    setsid nohup bash -c "for ir in fp16 fp16-full; do $svdtool quantize $work/\$ir --calib examples/calibration \
      -o $work/\${ir/fp16/int8} --samples 8 --calib-height 128 --calib-width 128 --calib-frames 4 --calib-steps 2 \
      --overwrite > $work/quantize_\$ir.log 2>&1; done; touch $work/quantized" > /dev/null 2>&1 &
    tail -3 "$out/export_folded.log"; cat "$out/profile_fp16.log" | tail -8 ;;
  measure)  # the work runs in its own session, so a call that ends first leaves it running: call again to collect
    [ -f $work/measure.started ] || { touch $work/measure.started; setsid nohup bash -c "
      while [ ! -f $work/quantized ]; do sleep 5; done
      python3 bench/profile_unet.py xeon_int8 $work/int8-full $work/int8 --height 576 --width 1024 --frames 14 > $work/profile_int8.log 2>&1
      python3 bench/generate_memory.py $work/int8 $work/fp16 --frames 25 --steps 2 --variants low,release --name xeon_svd-xt \
        > $work/generate_memory.log 2>&1; touch $work/measured" > /dev/null 2>&1 & }
    for _ in $(seq 108); do [ -f $work/measured ] && break; sleep 5; done
    cp $work/quantize_*.log $work/*.log bench/results/profile_unet_xeon_int8.* bench/results/generate_memory_xeon_svd-xt.* "$out/" 2>/dev/null || true
    tail -8 $work/profile_int8.log 2>/dev/null; tail -8 $work/generate_memory.log 2>/dev/null ;;
esac
