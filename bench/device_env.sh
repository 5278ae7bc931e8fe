# Sourced by the bench/server_*.sh scripts on the GPU host (the `device` tool): its Python lacks what svdtool needs,
# so wheels travel in .whl/ and a stripped OpenVINO site in .ovsite/ (openvino with the CPU plugin and IR/PyTorch
# frontends only, nncf, optimum(-intel), transformers 5.5 and tokenizers 0.22, which optimum-intel 2.2 pins; built by
# bench/make_ovsite.sh), and install into bench/.cache/site/ once per machine. WHEELS names another wheel folder (.whl-core: .whl without scikit-image, which
# the host has, to leave room in a call's 64 MiB); .rayw/ (Ray 2.60 without its jars/RLlib/Tune/Train/dashboard client,
# and jsonschema, which the host lacks) and .servew/ (Ray Serve's web stack: fastapi, starlette, uvicorn, pydantic,
# python-multipart, opentelemetry-api, grpcio-reflection) are added when carried.
# The svdtool/<stage> links below are ignored by .gitignore, so a job left running across calls (setsid nohup) keeps
# them when the next call copies the tree again (before they were ignored, that copy removed them and the job failed).
SITE=bench/.cache/site  # ignored by .gitignore, so it stays on a warm machine between calls
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/$SITE:$PWD"
if [ ! -f $SITE/.wheels ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE ${WHEELS:-.whl}/*.whl
  touch $SITE/.wheels
fi
if [ -d .ovsite ] && [ ! -d $SITE/openvino ]; then  # a call may carry the wheels first and the OpenVINO site later
  tar -C $SITE -xJf .ovsite/ov-site.tar.xz
fi
if [ -d .rayw ] && [ ! -d $SITE/ray ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE .rayw/*.whl
  tar -C $SITE -xJf .rayw/ray-site.tar.xz
fi
if [ -d .servew ] && [ ! -d $SITE/fastapi ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE .servew/*.whl
fi
for part in convert quantize runtime validate models batch serve; do ln -sfn "../$part" "svdtool/$part"; done  # pyproject's package-dir
[ ! -d $SITE/openvino ] || python3 -c "import openvino, nncf, optimum.intel.openvino.modeling_diffusion; print('openvino', openvino.__version__, 'nncf', nncf.__version__)"
lscpu | grep -E "Model name|^CPU\(s\)"
