#!/usr/bin/env bash
# Train svd-mini v2 on a GPU host (the `device` tool's H100/H200), in calls of at most 10 minutes each; everything
# lives under bench/.cache/ (ignored by .gitignore, so it stays on a warm machine between calls; the device tool
# drops paths that only .git/info/exclude ignores, and the package-dir links, between calls):
#   bench/train_mini_gpu.sh vae OUT [M] [C...]       new VAEs of latent widths C (8 16), side by side on the one GPU for
#                                                    M (8) min, checked on the held-out photos (bench/mini_vae_check.py);
#                                                    the pick (the fewest channels reaching 26 dB, else the best) -> v2
#   bench/train_mini_gpu.sh resume OUT VAE_M UNET_M  v2's VAE for VAE_M min, then its UNet for UNET_M min, from its
#                                                    state (a warm machine) or from a carried .mini/v2 (a fresh one);
#                                                    the VAE checked again; v2 packed into OUT
#   bench/train_mini_gpu.sh final OUT [M]            `resume OUT 0 M` (6), then the fp16 check and the CUDA
#                                                    references (mini, tiny)
# Carry .whl-core and .ovsite (bench/device_env.sh: the checks and `svdtool reference` import svdtool.runtime, which
# needs OpenVINO). A dry run first (`resume OUT 0.1 0.1` on a fresh machine, about a minute) catches what would
# otherwise end a 10-minute call without a model. The model travels back as 15 MB parts of a tar (the transfer
# takes files of at most 16 MiB). To train while the host's CPUs measure something else, start it in its own process
# session on a few cores (the device tool ends a call's other processes when it returns; this one runs on):
#   WORKERS=3 setsid nohup taskset -c 0-3 bench/train_mini_gpu.sh resume bench/.cache/out 11 7 > bench/.cache/out/run.log 2>&1 &
# MOTION (zoom) and LR (4e-4) are the UNet stage's --motion and --lr: svd-mini v2's last run (UNet 10,475 -> 13,356
# steps) was `resume` with these from the random-motion model, as `train_mini --init` of a carried folder.
set -euo pipefail
stage=$1 out=$2
cache=bench/.cache workers=${WORKERS:-14}  # WORKERS: fewer rendering processes when the CPUs are shared
WHEELS=.whl-core source bench/device_env.sh
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
train="python3 -m svdtool.models.train_mini"
check="python3 bench/mini_vae_check.py"
pack() { tar -C $cache/mini -chf - v2 | split -b 15M - "$out/mini_v2.tar.part-"; }

resume() {  # VAE minutes, UNet minutes
  local from="--state $cache/train/v2"
  if [ ! -f $cache/train/v2/state.pt ]; then  # a fresh machine: the carried pipeline
    mkdir -p $cache/mini && rm -rf $cache/mini/v2 && cp -r .mini/v2 $cache/mini/v2 && from="$from --init .mini/v2"
  fi
  $train --out $cache/mini/v2 $from --vae-minutes "$1" --unet-minutes "$2" --unet-batch 64 --workers $workers \
    --motion "${MOTION:-zoom}" --lr "${LR:-4e-4}" >> "$out/train.log" 2>&1
  pack
  $check $cache/mini/v2 --json "$out/vae_check.json" 2>> "$out/train.log"
}

case $stage in
vae)
  minutes=${3:-8} widths="${*:4}"; widths=${widths:-8 16}
  mkdir -p $cache/mini $cache/train
  for c in $widths; do
    $train --out $cache/mini/c$c --state $cache/train/c$c --latent-channels $c --vae-minutes "$minutes" \
      --workers $(( workers / $(wc -w <<< "$widths") )) > "$out/train_c$c.log" 2>&1 &
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
final)
  resume 0 "${3:-6}"
  python3 bench/mini_fp16_check.py $cache/mini/v2 "$out/fp16_check.json" > "$out/fp16_check.log" 2>&1
  rm -rf $cache/refs && mkdir $cache/refs
  for dtype in fp32 fp16; do
    python3 -m svdtool.cli reference $cache/mini/v2 --images bench/heldout -o $cache/refs/ref-mini-$dtype --device cuda \
      --dtype $dtype --frames 8 --height 128 --width 128
    python3 -m svdtool.cli reference tiny --images examples -o $cache/refs/ref-tiny-$dtype --device cuda --dtype $dtype
  done >> "$out/fp16_check.log" 2>&1
  tar -C $cache/refs -cf "$out/references.tar" . ;;
esac
ls -la "$out"
