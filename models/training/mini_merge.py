"""Join two svd-mini runs that started from one state: a UNet run (its UNet trained on that state's latents) and a
decoder-only run (`--vae-part decoder`: the encoder, the scaling factor and so the latents unchanged). On the GPU the
two train side by side instead of one after the other; this writes the pipeline they make together.

python models/training/mini_merge.py UNET_FOLDER DECODER_FOLDER OUT

Refuses, in one line, two runs whose encoders or scaling factors differ (the UNet would meet latents it never saw).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file

from svdtool.models.train_mini import write_training_record

WEIGHTS = "vae/diffusion_pytorch_model.safetensors"
LATENT_SIDE = ("encoder.", "quant_conv.")  # what makes the latents


def merge(unet_folder: Path, decoder_folder: Path, out: Path) -> None:
    unet_vae, decoder_vae = load_file(unet_folder / WEIGHTS), load_file(decoder_folder / WEIGHTS)
    changed = [key for key in unet_vae if key.startswith(LATENT_SIDE)
               and (key not in decoder_vae or not unet_vae[key].equal(decoder_vae[key]))]
    unet_record, decoder_record = (json.loads((folder / "training.json").read_text()) for folder in (unet_folder, decoder_folder))
    if changed or unet_record["vae_scaling_factor"] != decoder_record["vae_scaling_factor"]:
        sys.exit(f"{decoder_folder}'s latents are not {unet_folder}'s ({len(changed)} encoder tensors differ): "
                 "merge runs that started from one state, the VAE's trained with --vae-part decoder")
    shared = [run for run in unet_record["runs"] if run in decoder_record["runs"]]
    runs = (shared + [run for run in decoder_record["runs"] if run not in shared]
            + [run for run in unet_record["runs"] if run not in shared])
    unet_log, decoder_log = (json.loads((folder / "loss.json").read_text()) for folder in (unet_folder, decoder_folder))
    last_vae_step = max((row["step"] for row in unet_log if row["phase"] == "vae"), default=0)
    log = unet_log + [row for row in decoder_log if row["phase"] == "vae" and row["step"] > last_vae_step]

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(unet_folder, partial)
    shutil.copytree(decoder_folder / "vae", partial / "vae", dirs_exist_ok=True)
    (partial / "loss.json").write_text(json.dumps(log))
    steps = {"vae": decoder_record["steps"]["vae"], "unet": unet_record["steps"]["unet"]}
    write_training_record(partial, steps, unet_record["vae_scaling_factor"], unet_record["trained_on"], runs)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    print(f"{out}: UNet of {unet_folder} ({steps['unet']:,} steps), VAE of {decoder_folder} ({steps['vae']:,} steps)")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python models/training/mini_merge.py UNET_FOLDER DECODER_FOLDER OUT")
    folders = [Path(arg) for arg in sys.argv[1:]]
    for folder in folders[:2]:
        if not (folder / "training.json").is_file():
            sys.exit(f"{folder} is not a trained svd-mini (no training.json)")
    merge(*folders)
