#!/usr/bin/env bash
# The speed ladder's true-size half on the GPU host's 16-core Xeon (the `device` tool; carry .whl-core and .ovsite:
# bench/device_env.sh). The work runs in its own session, so a call that ends first leaves it running:
#   bench/server_speed_ladder.sh start OUT     export svd-xt (random weights) exact and with ToDo x2,
#                                              quantize both (INT8, small calibration: the weights are random),
#                                              then the per-call costs at 576x1024x25 and x14 (bench/speed_ladder.py speed)
#   bench/server_speed_ladder.sh collect OUT   wait up to 9 minutes for it, then copy what is done to OUT
# FRAMES ("25 14") picks the frame counts measured; CPUS (e.g. 2-15) pins the work with taskset, leaving the other cores
# to a GPU job that shares the call (the result files record the cores used). STUDENT=1 then times a few-step student
# (bench/fewstep.py build + speed at the first frame count, the teacher's costs read from that count's ladder run).
# FRAMES=25 on 14 cores took about 23 minutes (2026-12-07), so STUDENT does not fit beside it in one session's 30.
# Then here: python bench/speed_ladder.py table WORK --speed xeon25 --speed xeon14 (WORK holding OUT's speed_*.json).
set -euo pipefail
stage=$1 out=$2
WHEELS=.whl-core source bench/device_env.sh > "$out/lscpu.txt"
work=bench/.cache/speed_ladder && mkdir -p $work
if [ "$stage" = start ] && [ ! -f $work/started ]; then
  touch $work/started
  pin=${CPUS:+taskset -c $CPUS}
  speeds=$(for f in ${FRAMES:-25 14}; do echo -n "&& $pin python3 bench/speed_ladder.py speed $work xeon$f --frames $f > $work/speed$f.log 2>&1 "; done)
  f=${FRAMES:-25 14} && f=${f%% *}
  student=${STUDENT:+"&& $pin python3 bench/fewstep.py build $work/fewstep svd-xt --calib-small > $work/fewstep_build.log 2>&1 \
    && $pin python3 bench/fewstep.py speed $work/fewstep $work/exact-fp16 xeon$f --frames $f --teacher-speed $work/speed_xeon$f.json \
    > $work/fewstep.log 2>&1"}
  setsid nohup bash -c "$pin python3 bench/speed_ladder.py build $work svd-xt --calib-small > $work/build.log 2>&1 $speeds $student; touch $work/done" \
    > /dev/null 2>&1 &
fi
for _ in $(seq 108); do [ -f $work/done ] && break; sleep 5; done
cp $work/*.log $work/speed_*.json $work/fewstep/fewstep_*.json "$out/" 2>/dev/null || true
ls $work; tail -5 $work/build.log; tail -4 $work/speed*.log $work/fewstep*.log 2>/dev/null || true
