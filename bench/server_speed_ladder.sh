#!/usr/bin/env bash
# The speed ladder's true-size half, and a few-step student against its teacher, on the GPU host's 16-core Xeon (the
# `device` tool; carry .whl-core and .ovsite: bench/device_env.sh). The work runs in its own session, so a call that
# ends first leaves it running:
#   bench/server_speed_ladder.sh start OUT     export svd-xt (random weights) exact and with ToDo x2,
#                                              quantize both (INT8, small calibration: the weights are random),
#                                              then the per-call costs at 576x1024x25 and x14 (bench/speed_ladder.py speed)
#   bench/server_speed_ladder.sh student OUT   teacher and student measured in one run: svd-xt exported as the Euler
#                                              teacher (FP16 IR), the consistency student built (bench/fewstep.py build:
#                                              FP16 export, INT8 on its 4-step schedule, small calibration), then per
#                                              frame count bench/fewstep.py speed: the teacher's 2-step video, the
#                                              student's whole video; TEACHER_FROM_STUDENT=1 skips the teacher's export and
#                                              takes its costs from the student's FP16 export (the same graph; about 3
#                                              minutes less); MEMORY ("standard") lists generate's --memory modes
#                                              to time both in, e.g. "standard low" (low: the guidance halves in turn,
#                                              the decoder 2 frames a chunk; named xeonF-low); TARGETS ("any") the
#                                              students' `--target-cpu` recipes, e.g. "vnni" alone or "any vnni"
#                                              (named xeonF-vnni; the first one's run measures the teacher)
#   bench/server_speed_ladder.sh collect OUT   wait up to 9 minutes for what was started, then copy what is done to OUT
# FRAMES ("25 14") picks the frame counts measured; CPUS (e.g. 2-15) pins the work with taskset, leaving the other cores
# to a GPU job that shares the call (the result files record the cores used). FRAMES=25 took the ladder about 23
# minutes on 14 cores (2026-12-07). Hosts differ: on one, the student's build (export and the default quantize) took
# 5 minutes and 14 frames 5 more; on a slower one the build took 10, `--target-cpu vnni` 5 more, and one 25-frame
# stage over 6 (2026-12-07): one recipe and one frame count is what a session's device time surely holds.
# Then here: python bench/speed_ladder.py table WORK --speed xeon25 --speed xeon14 (WORK holding OUT's speed_*.json),
# or, for the student, OUT's fewstep_*.json copied into WORK and python bench/fewstep.py table WORK xeon25 xeon14.
set -euo pipefail
stage=$1 out=$2
WHEELS=.whl-core source bench/device_env.sh > "$out/lscpu.txt"
pin=${CPUS:+taskset -c $CPUS}
already_started() { [ -f "$1/started" ] || { mkdir -p "$1" && touch "$1/started" && return 1; }; }
if [ "$stage" = start ] && ! already_started bench/.cache/speed_ladder; then
  work=bench/.cache/speed_ladder
  speeds=$(for f in ${FRAMES:-25 14}; do echo -n "&& $pin python3 bench/speed_ladder.py speed $work xeon$f --frames $f > $work/speed$f.log 2>&1 "; done)
  setsid nohup bash -c "$pin python3 bench/speed_ladder.py build $work svd-xt --calib-small > $work/build.log 2>&1 $speeds; touch $work/done" \
    > /dev/null 2>&1 &
  exit 0
fi
if [ "$stage" = student ] && ! already_started bench/.cache/fewstep; then
  work=bench/.cache/fewstep
  teacher="$work/teacher-fp16" export_teacher="$pin python3 -m svdtool.cli export svd-xt -o $work/teacher-fp16 > $work/teacher.log 2>&1 &&"
  [ -n "${TEACHER_FROM_STUDENT:-}" ] && teacher="$work/student-fp16 --teacher-steps 25" export_teacher=""
  # TARGETS ("any"): the students' `svdtool quantize --target-cpu` recipes (vnni: for CPUs with VNNI or AMX), each
  # built and timed; the first one's run measures the teacher, the others reuse its figures
  targets=(${TARGETS:-any}) builds="" speeds=""
  student_name() { [ "$2" = any ] && echo "$1" || echo "$1-$2"; }
  for t in "${targets[@]}"; do
    builds+="${builds:+ && }$pin python3 bench/fewstep.py build $work svd-xt --calib-small --target-cpu $t > $work/build-$t.log 2>&1"
  done
  for f in ${FRAMES:-25 14}; do for m in ${MEMORY:-standard}; do suffix=${m#standard} name=xeon$f${suffix:+-$suffix}
    first=$(student_name $name ${targets[0]})
    for t in "${targets[@]}"; do student=$(student_name student-int8 $t) run=$(student_name $name $t)
      reuse=$([ $run = $first ] || echo "--teacher-run $first")
      speeds+=" && $pin python3 bench/fewstep.py speed $work $teacher $run --frames $f --memory $m --student $student $reuse"
      speeds+=" > $work/speed_$run.log 2>&1"
    done; done; done
  setsid nohup bash -c "$export_teacher $builds $speeds; touch $work/done" > /dev/null 2>&1 &
  exit 0
fi
for work in bench/.cache/speed_ladder bench/.cache/fewstep; do
  [ -f $work/started ] || continue
  for _ in $(seq 108); do [ -f $work/done ] && break; sleep 5; done
  cp $work/*.log $work/speed_*.json $work/fewstep_*.json "$out/" 2>/dev/null || true
  ls $work; tail -n 4 $work/*.log || true
done
