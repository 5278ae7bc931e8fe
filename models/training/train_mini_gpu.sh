#!/usr/bin/env bash
# Train svd-mini on a GPU host (the `device` tool's H100/H200), in calls of at most 10 minutes each; everything
# lives under bench/.cache/ (ignored by .gitignore, so it stays on a warm machine between calls; the device tool
# drops paths that only .git/info/exclude ignores between calls; .gitignore also keeps device_env.sh's package-dir
# links, so a run left going across calls finds them):
#   models/training/train_mini_gpu.sh vae OUT [M] [C...]       new VAEs of latent widths C (8 16), side by side on the one GPU for
#                                                    M (8) min, checked on the held-out photos (models/training/mini_vae_check.py);
#                                                    the pick (the fewest channels reaching 26 dB, else the best) -> v2;
#                                                    again on a warm machine: they train on from their state.
#                                                    VAE_CHANNELS (e.g. 96,192,192,192) widens new ones, VAE_POOL as below
#   models/training/train_mini_gpu.sh resume OUT VAE_M UNET_M  candidate NAME (v2): its VAE for VAE_M min (VAE_PART: all, encoder
#                                                    or decoder, as train_mini's --vae-part), then its UNet for UNET_M
#                                                    min, from its state (a warm machine) or from a carried .mini/INIT
#                                                    (INIT: v2; a fresh one); the VAE checked again. VAE_LR (4e-4),
#                                                    VAE_POOL (0), VAE_LAYERS (deepen INIT's VAE), VAE_MSE (0), VAE_CHROMA (0),
#                                                    VAE_MOSAICS, VAE_LEAVES, VAE_CHANNELS (widen INIT's VAE) and VAE_ANNEAL (set: on) are train_mini's
#                                                    --vae-lr, --vae-pool, --vae-layers, --vae-mse, --vae-chroma, --vae-mosaics,
#                                                    --vae-leaves, --vae-channels, --vae-anneal; UNET_FROM (e.g. .mini/v2) is
#                                                    --unet-from: a new VAE's first UNet run starts from v2's UNet;
#                                                    VAE_CROP (64: tiles; 128: whole frames) and COMPILE (unset: eager;
#                                                    default or reduce-overhead) are --vae-crop and --compile
#   models/training/train_mini_gpu.sh split OUT VAE_M M        new latents, then their UNet without waiting for the decoder: NAME's
#                                                    VAE (all of it) for VAE_M min, then side by side for M min each its
#                                                    decoder alone (NAME-d: VAE_LR 2e-4, annealed) and its UNet (UNET_FROM
#                                                    as in resume), joined by models/training/mini_merge.py as NAME-m; VAE_POOL as above
#   models/training/train_mini_gpu.sh fit OUT FIT_M M          .mini/INIT's encoder onto latents fitted through its frozen decoder
#                                                    (svdtool.models.fit_encoder: FIT_M min fitting rendered frames, M
#                                                    min training the encoder) -> .mini/NAME, checked beside INIT; its
#                                                    latents are new: then `NAME=X INIT=X resume OUT 0 M` trains its UNet
#   models/training/train_mini_gpu.sh check OUT                NAME's fp16 check (models/training/mini_fp16_check.py) and its CUDA
#                                                    references, fp32 and fp16, made as `mini` of models/mini (the
#                                                    candidate is copied there) from examples/ -> OUT/references_NAME.tar
#   models/training/train_mini_gpu.sh distill OUT M            .mini/INIT (v7: svd-mini) distilled for M min into a 4-step consistency
#                                                    student (svdtool.models.distill_mini; resumes on a warm machine), its
#                                                    unet/, training.json and loss.json packed as `pack` does; UNET_BATCH
#                                                    (64: 128 is 256 clips in the teacher's guided step and stops with a CUDA
#                                                    invalid-argument error), LR (1e-4) and UNET_ANNEAL (set: on) as below,
#                                                    POOL (8192) its --pool-clips; mini-lcm: NAME=lcm INIT=v7-enc (svd-mini
#                                                    without its VAE decoder, under the carry limit) UNET_BATCH=64
#                                                    UNET_ANNEAL=1 POOL=16384 distill OUT 8, 1,376 steps on an H100
#   models/training/train_mini_gpu.sh tiny OUT M               .mini/INIT's VAE decoder (v7-vae: model_index.json and vae/ of svd-mini,
#                                                    48 MB, the only part it reads) distilled for M min into a tiny per-frame
#                                                    decoder (svdtool.models.tiny_decoder; resumes on a warm machine), packed
#                                                    as `pack` does; TINY_BATCH (256 frames), POOL (4096 clips) and
#                                                    TEMPORAL, EDGES its --batch, --pool-clips, --temporal, --edges, TINY_INIT (a carried
#                                                    .mini/ tiny decoder), LR (1e-3), TINY_CHANNELS and TINY_CONTEXT its --init, --lr,
#                                                    --channels and --context, TINY_MOSAICS and TINY_LEAVES the pool's
#                                                    --mosaics and --leaves shares, TINY_LAPLACIAN its --laplacian; svd-mini's (bench/results/tiny_decoder_mini.md):
#                                                    NAME=taesd-gpu INIT=v7-vae POOL=1024 WORKERS=2 tiny OUT 14 under
#                                                    taskset -c 0-1 beside the Xeon ladder, 12,890 steps on an H100
#                                                    (1,024 clips pooled in 15 s: a larger POOL costs little)
#   models/training/train_mini_gpu.sh speed OUT                each stage's training steps/s, eager against torch.compile (models/training/train_speed.py)
#   models/training/train_mini_gpu.sh pack OUT                 NAME as 15 MB parts of a tar (the transfer takes files of at
#                                                    most 16 MiB; one 47 MB model fills most of a call's 64 MiB)
# A pipeline over a call's 64 MiB (a widened VAE's: 80 MB) travels in two calls: one carries .mini/NAME/vae, the next
# the rest of .mini/NAME, path by path (.mini/ is in .gitignore, so a warm machine keeps what the first call brought).
# Back, a UNet run's result is unet/, image_encoder/ (it trains too: v3 lost its own by bringing back unet/ alone),
# training.json and loss.json; its VAE is the one carried there.
# Carry .whl-core (diffusers and importlib_metadata for the host's Python 3.12; bench/device_env.sh): training, the
# checks and `svdtool reference` need no OpenVINO. A dry run first (`resume OUT 0.1 0.1` on a fresh machine, about a
# minute) catches what would otherwise end a long run without a model. To train while the call returns (the device
# tool ends a call's other processes when it returns; this one runs on), start it in its own process session, a
# few cores per run when two share the host:
#   NAME=a WORKERS=7 setsid nohup taskset -c 0-7 models/training/train_mini_gpu.sh resume bench/.cache/out 7 10 > /dev/null 2>&1 &
# A later call waits for a file the run leaves, never for `pgrep -f train_mini_gpu.sh`: the waiting call's own command
# line holds that text, so the loop never ends (it cost a session its checks); `pkill -f drv.sh` likewise kills its own
# call (write `pkill -f "[d]rv.sh"`). Training, checks and packing chained:
#   o=bench/.cache/out; mkdir -p $o; (NAME=c32-m2 INIT=c32-m2 setsid nohup bash -c "models/training/train_mini_gpu.sh resume $o 0 17
#     && models/training/train_mini_gpu.sh check $o && models/training/train_mini_gpu.sh pack $o; touch $o/done" > $o/driver.log 2>&1 < /dev/null &)
#   and in later calls: until [ -e $o/done ]; do sleep 5; done; cp $o/* $OUT/
# UNET_BATCH (64) and VAE_BATCH (16) are --unet-batch and --vae-batch (bench/results/mini_train_batch_h200.json). A
# UNet step does not wait on the GPU: on 4 cores 64 and 128 clips a step both ran 2.7 steps/s (170 vs 350 clips/s), and
# 256 stops with a CUDA invalid-argument error in attention: UNET_BATCH=128 doubled what a minute trained. A VAE step
# does: 16 and 32 clips ran 4.2 and 2.2 steps/s (67 vs 70 clips/s), so only time buys the VAE more samples.
# COMPILE=default buys both more (`speed`, bench/results/mini_train_speed_h200.json, with the fused AdamW and foreach EMA
# that every run now uses): the VAE 4.18 -> 6.53 steps/s, the UNet at 128 clips 3.04 -> 4.91 (eager at 64: 3.68, so
# 128 clips now train 1.65x the clips of 64, not 2x). Its price is each call's first step (VAE 103 s, UNet 251 s), so
# it pays in runs of several minutes. `speed` itself runs about 13 minutes, mostly compiling: start it as a job, as
# the training (a call that ran it in the foreground ended before it did and returned nothing).
# CASTS is --colour-casts (both stages). MOTION (zoom), LR (4e-4) and UNET_ANNEAL (set: on) are the UNet stage's
# --motion, --lr and --unet-anneal: svd-mini v2's UNet run 10,475 -> 13,356 steps was `resume` with the first two
# from the random-motion model, as `train_mini --init` of a carried folder; c32k's (bench/results/mini_research.md) was NAME=c32jd INIT=c32jd COMPILE=default
# UNET_BATCH=128 UNET_ANNEAL=1 resume OUT 0 18, one background job; v3's UNet NAME=c32kw2 INIT=c32kw2 and the same
# settings, resume OUT 0 19; v4's NAME=v3 INIT=v3 (v3 copied to .mini/v3), resume OUT 0 18: the job packed unet/,
# image_encoder/, training.json and loss.json as 15 MB parts and ran `check` after it, 22 device minutes in all; v5's
# NAME=v5c INIT=v4 CASTS=0.75 and the same settings, resume OUT 0 19, then the same packing and `check`: 24 minutes.
# v6's decoder: NAME=v6a INIT=v5 VAE_PART=decoder VAE_LR=2e-4 VAE_ANNEAL=1 VAE_POOL=4096 CASTS=0.75 COMPILE=default
# WORKERS=7 resume OUT 15 0 under `taskset -c 0-7`, beside NAME=v6b (the same with VAE_CHROMA=3) on cores 8-15, one
# background job; then `check` of the one that kept colour best at >= 26 dB, and its vae/ packed: 19 minutes.
# v7's UNet (zoom clips labelled by the flow their video shows): NAME=v7 INIT=v6a and v5's settings, resume OUT 0 15,
# one background job that packed unet/, image_encoder/, training.json and loss.json; then `check` in a call of its
# own, as it rewrites models/mini, which each call's copy of the tree replaces: 20 minutes in all.
set -euo pipefail
stage=$1 out=$2
cache=bench/.cache workers=${WORKERS:-14}  # WORKERS: fewer rendering processes when the CPUs are shared
WHEELS=.whl-core source bench/device_env.sh
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
train="python3 -m svdtool.models.train_mini"
check="python3 models/training/mini_vae_check.py"
name=${NAME:-v2}

resume() {  # VAE minutes, UNet minutes
  local from="--state $cache/train/$name"
  [ -f $cache/train/$name/state.pt ] || from="$from --init .mini/${INIT:-v2} ${VAE_CHANNELS:+--vae-channels $VAE_CHANNELS}"  # a fresh machine: the carried pipeline
  mkdir -p $cache/mini
  $train --out $cache/mini/$name $from --vae-minutes "$1" --unet-minutes "$2" --unet-batch "${UNET_BATCH:-64}" --workers $workers \
    --vae-batch "${VAE_BATCH:-16}" --vae-part "${VAE_PART:-all}" --motion "${MOTION:-zoom}" --lr "${LR:-4e-4}" --vae-lr "${VAE_LR:-4e-4}" \
    --vae-pool "${VAE_POOL:-0}" ${VAE_LAYERS:+--vae-layers $VAE_LAYERS} --vae-mse "${VAE_MSE:-0}" --vae-chroma "${VAE_CHROMA:-0}" \
    ${VAE_MOSAICS:+--vae-mosaics $VAE_MOSAICS} ${VAE_LEAVES:+--vae-leaves $VAE_LEAVES} ${VAE_ANNEAL:+--vae-anneal} ${UNET_ANNEAL:+--unet-anneal} \
    ${UNET_FROM:+--unet-from $UNET_FROM} ${VAE_CROP:+--vae-crop $VAE_CROP} ${COMPILE:+--compile $COMPILE} \
    ${CASTS:+--colour-casts $CASTS} >> "$out/train_$name.log" 2>&1
  $check $cache/mini/$name --json "$out/vae_check_$name.json" 2>> "$out/train_$name.log"
}

case $stage in
vae)
  minutes=${3:-8} widths="${*:4}"; widths=${widths:-8 16}
  mkdir -p $cache/mini $cache/train
  for c in $widths; do
    shape=""; [ -f $cache/train/c$c/state.pt ] || shape="${VAE_CHANNELS:+--vae-channels $VAE_CHANNELS}"  # new ones only
    $train --out $cache/mini/c$c --state $cache/train/c$c --latent-channels $c --vae-minutes "$minutes" $shape \
      --vae-batch "${VAE_BATCH:-16}" --vae-pool "${VAE_POOL:-0}" --workers $(( workers / $(wc -w <<< "$widths") )) >> "$out/train_c$c.log" 2>&1 &
  done
  wait
  folders=$(for c in $widths; do echo $cache/mini/c$c; done)
  labels=$(for c in $widths; do echo -n "${c}ch,"; done)
  pick=$($check $folders --json "$out/vae_check.json" --grid "$out/vae_grid.png" --labels "${labels%,}" --pick 2> "$out/vae_check.log")
  [ -n "$pick" ] || { echo "the VAE check failed: $out/vae_check.log"; exit 1; }
  echo "picked $pick" | tee -a "$out/vae_check.log"
  rm -rf $cache/mini/v2 $cache/train/v2
  cp -r "$pick" $cache/mini/v2 && cp -r "${pick/mini/train}" $cache/train/v2 ;;
resume)
  resume "$3" "$4" ;;
split)
  UNET_FROM= resume "$3" 0
  rm -rf $cache/train/$name-d && cp -r $cache/train/$name $cache/train/$name-d
  workers=$(( workers / 2 ))
  name=$name-d VAE_PART=decoder VAE_LR=2e-4 VAE_ANNEAL=1 UNET_FROM= resume "$4" 0 & decoder=$!
  resume 0 "$4" & unet=$!
  wait $decoder && wait $unet
  python3 models/training/mini_merge.py $cache/mini/$name $cache/mini/$name-d $cache/mini/$name-m | tee -a "$out/train_$name.log" ;;
fit)
  python3 -m svdtool.models.fit_encoder --init .mini/${INIT:-v2} --out .mini/$name --fit-minutes "$3" --minutes "$4" \
    --workers $workers >> "$out/fit_$name.log" 2>&1
  $check .mini/${INIT:-v2} .mini/$name --json "$out/vae_check_$name.json" --grid "$out/vae_grid_$name.png" \
    --labels "${INIT:-v2},$name" 2>> "$out/fit_$name.log" ;;
check)
  python3 models/training/mini_fp16_check.py $cache/mini/$name "$out/fp16_check_$name.json" > "$out/fp16_check_$name.log" 2>&1
  rm -rf models/mini $cache/refs/$name && mkdir -p $cache/refs/$name && cp -r $cache/mini/$name models/mini
  for dtype in fp32 fp16; do
    python3 -m svdtool.cli reference mini --images examples -o $cache/refs/$name/ref-mini-$dtype --device cuda --dtype $dtype
  done >> "$out/fp16_check_$name.log" 2>&1
  tar -C $cache/refs/$name -cf "$out/references_$name.tar" . ;;
distill)  # M min: .mini/INIT (v7) distilled into a 4-step consistency student (svdtool.models.distill_mini), packed as pack does
  mkdir -p $cache/mini $cache/train
  python3 -m svdtool.models.distill_mini --teacher .mini/${INIT:-v7} --out $cache/mini/$name --state $cache/train/$name \
    --minutes "$3" --batch "${UNET_BATCH:-64}" --lr "${LR:-1e-4}" --workers $workers ${UNET_ANNEAL:+--anneal} ${POOL:+--pool-clips $POOL} >> "$out/distill_$name.log" 2>&1
  tar -C $cache/mini -chf - $name | split -b 15M - "$out/mini_$name.tar.part-" ;;
tiny)  # M min: .mini/INIT's VAE decoder distilled into a tiny decoder (svdtool.models.tiny_decoder), packed as pack does
  mkdir -p $cache/mini $cache/train
  python3 -m svdtool.models.tiny_decoder --teacher .mini/${INIT:-v7-vae} --out $cache/mini/$name --state $cache/train/$name \
    --minutes "$3" --batch "${TINY_BATCH:-256}" --pool-clips "${POOL:-4096}" --workers $workers ${TEMPORAL:+--temporal $TEMPORAL} ${EDGES:+--edges $EDGES} \
    ${TINY_INIT:+--init .mini/$TINY_INIT} --lr "${LR:-1e-3}" ${TINY_CHANNELS:+--channels $TINY_CHANNELS} ${TINY_CONTEXT:+--context $TINY_CONTEXT} \
    ${TINY_MOSAICS:+--mosaics $TINY_MOSAICS} ${TINY_LEAVES:+--leaves $TINY_LEAVES} ${TINY_LAPLACIAN:+--laplacian $TINY_LAPLACIAN} \
    >> "$out/tiny_$name.log" 2>&1
  tar -C $cache/mini -chf - $name | split -b 15M - "$out/mini_$name.tar.part-" ;;
speed)
  python3 models/training/train_speed.py --json "$out/train_speed.json" > "$out/train_speed.log" 2>&1 ;;
pack)
  tar -C $cache/mini -chf - $name | split -b 15M - "$out/mini_$name.tar.part-" ;;
esac
ls -la "$out"
