#!/usr/bin/env bash
# Train svd-mini v2 on a GPU host (the `device` tool's H100), in calls of at most 10 minutes each:
#   bench/train_mini_gpu.sh vae OUT [V] [U]  a new model: the VAE for V (5.5) min on 64 px crops, bench/mini_vae_check.py
#                                            on the held-out photos, then U (1.5) min of UNet
#   bench/train_mini_gpu.sh final OUT [U]    the UNet resumes from .train/ (same warm machine) or from a carried .mini/v2
#                                            for U (6) min, then the fp16 check and the CUDA references (mini, tiny)
# Wheels the host lacks travel in .whl/ and install into .site/ once per machine; the model travels back as 15 MB parts
# of a tar (the transfer takes files of at most 16 MiB).
set -euo pipefail
stage=$1 out=$2
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/.site:$PWD"
if [ ! -d .site ]; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target .site .whl/*.whl; fi
for part in convert quantize runtime validate models; do ln -sfn "../$part" "svdtool/$part"; done  # pyproject's package-dir
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
python3 -c "import cv2" 2>/dev/null && echo "cv2 available" || echo "cv2 missing"
train="python3 -m svdtool.models.train_mini"
pack() { tar -C .mini -cf - v2 | split -b 15M - "$out/mini_v2.tar.part-"; }

case $stage in
vae)
  $train --out .mini/v2 --state .train/v2 --vae-minutes "${3:-5.5}" --workers 14 > "$out/train.log" 2>&1
  python3 bench/mini_vae_check.py .mini/v2 --json "$out/vae_check.json" --grid "$out/vae_grid.png" >> "$out/train.log" 2>&1
  $train --out .mini/v2 --state .train/v2 --unet-minutes "${4:-1.5}" --unet-batch 64 --pool-clips 8192 --workers 14 >> "$out/train.log" 2>&1
  pack ;;
final)
  resume="--state .train/v2"
  if [ ! -f .train/v2/state.pt ]; then resume="--state .train/v2 --init .mini/v2"; fi  # a fresh machine: the carried pipeline
  $train --out .mini/v2 $resume --unet-minutes "${3:-6}" --unet-batch 64 --workers 14 > "$out/train.log" 2>&1
  pack
  python3 bench/mini_fp16_check.py .mini/v2 "$out/fp16_check.json" > "$out/fp16_check.log" 2>&1
  rm -rf .refs && mkdir .refs
  for dtype in fp32 fp16; do
    python3 -m svdtool.cli reference .mini/v2 --images bench/heldout -o .refs/ref-mini-$dtype --device cuda --dtype $dtype \
      --frames 8 --height 128 --width 128
    python3 -m svdtool.cli reference tiny --images examples -o .refs/ref-tiny-$dtype --device cuda --dtype $dtype
  done >> "$out/fp16_check.log" 2>&1
  tar -C .refs -cf "$out/references.tar" . ;;
esac
ls -la "$out"
