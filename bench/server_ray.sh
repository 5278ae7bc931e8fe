#!/usr/bin/env bash
# svdtool on Ray on the GPU host (the `device` tool: a 16-core Xeon and one GPU). Device calls on one warm machine (a call
# carries 64 MiB at most, and svd-mini's weights and Ray do not travel together; .site/ and bench/.cache stay):
#   bench/server_ray.sh OUT copy         svd-mini's weights (models/mini, tracked) into bench/.cache
#   bench/server_ray.sh OUT prepare      svdtool export + svdtool quantize (defaults, examples/calibration)
#   bench/server_ray.sh OUT run IR       bench/batch_scaling.py --images 32 --actors 1,2,4,8 for IR fp16 or int8 (GIFs:
#                                        the host lacks imageio-ffmpeg)
#   bench/server_ray.sh OUT validate M   the GPU reference on Ray GPU actors and the IR on CPU actors, on a one-node
#                                        cluster started with `ray start --num-gpus 1`, vs the same validate in-process;
#                                        then `svdtool reference --device cuda` on Ray. M: tiny (exported here, small
#                                        video) or int8 (svd-mini's default INT8 vs its fp32 GPU reference, 5 photos)
#   bench/server_ray.sh OUT serve        bench/serve_load.py on svd-mini's INT8 with 1/2/4/8 replicas
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
  validate) WHEELS=.whl-core source bench/device_env.sh > "$out/lscpu.txt"
       if [ "$ir" = tiny ]; then
         $svdtool export tiny -o $work/tiny --overwrite > "$out/export-tiny.log" 2>&1
         model=$work/tiny source=tiny size="--frames 4 --steps 3 --height 64 --width 64" images=examples/calibration
       else
         rm -rf models/mini && cp -r $work/mini-src models/mini
         model=$work/int8 source=mini size="" images=bench/heldout
       fi
       export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(python3 -c "import secrets; print(secrets.token_hex(32))") RAY_USAGE_STATS_ENABLED=0
       python3 -m ray.scripts.scripts start --head --port 6379 --num-gpus 1 --include-dashboard false > "$out/ray-start.log" 2>&1
       trap 'python3 -m ray.scripts.scripts stop --force > /dev/null 2>&1' EXIT
       for run in ray:--ray-address=127.0.0.1:6379 in-process:; do
         name=${run%%:*} flag=${run#*:}
         start=$(date +%s.%N)
         $svdtool validate $model --reference gpu --reference-dtype fp32 --images $images -o "$out/validate-$ir-$name" \
           $size $flag > "$out/validate-$ir-$name.log" 2>&1 && rc=0 || rc=$?
         echo "validate $ir $name: exit $rc, $(python3 -c "import time; print(round(time.time() - $start, 1))") s" | tee -a "$out/summary.txt"
       done
       $svdtool reference $source --images $images -o "$out/reference-$ir-ray" --device cuda --dtype fp32 $size \
         --ray-address 127.0.0.1:6379 > "$out/reference-$ir-ray.log" 2>&1 && rc=0 || rc=$?
       echo "reference $source cuda on Ray: exit $rc" | tee -a "$out/summary.txt"
       tail -n 15 "$out"/validate-$ir-*.log "$out/reference-$ir-ray.log" ;;
  serve) WHEELS=.whl-core source bench/device_env.sh > "$out/lscpu.txt"
       rm -rf models/mini && cp -r $work/mini-src models/mini
       python3 bench/serve_load.py $work/int8 --replicas 1,2,4,8 --clients 2 --requests 6 --per-replica --format gif \
         --out serve_load_server > "$out/serve.log" 2>&1 || { tail -40 "$out/serve.log"; exit 1; }
       cp bench/results/serve_load_server.json bench/results/serve_load_server.md "$out/"
       tail -20 "$out/serve.log" ;;
esac
