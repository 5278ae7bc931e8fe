# Sourced by the bench/server_*.sh scripts on the GPU host (the `device` tool): its Python lacks what svdtool needs,
# so wheels travel in .whl/ and a stripped OpenVINO site in .ovsite/ (openvino with the CPU plugin and IR/PyTorch
# frontends only, nncf, optimum(-intel), transformers 5.5 and tokenizers 0.22, which optimum-intel 2.2 pins), and
# install into .site/ once per machine.
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/.site:$PWD"
if [ ! -d .site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target .site .whl/*.whl
  tar -C .site -xJf .ovsite/ov-site.tar.xz
fi
for part in convert quantize runtime validate models; do ln -sfn "../$part" "svdtool/$part"; done  # pyproject's package-dir
python3 -c "import openvino, nncf, optimum.intel.openvino.modeling_diffusion; print('openvino', openvino.__version__, 'nncf', nncf.__version__)"
lscpu | grep -E "Model name|^CPU\(s\)"
