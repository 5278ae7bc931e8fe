#!/usr/bin/env bash
# Build .ovsite/ov-site.tar.xz, the OpenVINO site that bench/device_env.sh unpacks on the GPU host (Python 3.12, no
# package index there): the versions installed here of openvino, nncf, optimum(-intel), transformers, tokenizers and
# huggingface_hub (optimum-intel 2.2 pins the last three below the host's), and what nncf, optimum-intel and datasets
# import that the host lacks, as cp312 wheels installed into one folder; OpenVINO's GPU and NPU plugins and its
# non-PyTorch frontend libraries are dropped (svdtool exports through the PyTorch frontend and runs on the CPU plugin).
# About 28 MB and a minute of xz; with .whl-core (diffusers, importlib_metadata) it fits one call's 64 MiB, a model
# does not: carry the site first, then the model in the next call while the machine is warm.
#   bench/make_ovsite.sh
set -euo pipefail
packages="openvino openvino-telemetry nncf optimum optimum-intel transformers tokenizers huggingface_hub pydot dill datasets multiprocess"
pins=$(for name in $packages; do echo "$name==$(python3 -m pip show "$name" | sed -n 's/^Version: //p')"; done)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms -d "$work/wheels" $pins
python3 -m pip install -q --no-deps --no-compile --no-index --only-binary=:all: --python-version 3.12 --implementation cp \
  $platforms --target "$work/site" "$work"/wheels/*.whl
rm -f "$work"/site/openvino/libs/libopenvino_intel_{gpu,npu}_plugin.so \
  "$work"/site/openvino/libs/libopenvino_{tensorflow,tensorflow_lite,paddle,onnx,jax,gguf}_frontend.so*
find "$work/site" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p .ovsite
tar -C "$work/site" -cJf .ovsite/ov-site.tar.xz.part . && mv .ovsite/ov-site.tar.xz.part .ovsite/ov-site.tar.xz
ls -la .ovsite/ov-site.tar.xz
