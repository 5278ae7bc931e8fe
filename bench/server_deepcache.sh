#!/usr/bin/env bash
# DeepCache on a server CPU (the GPU host's 16-core Xeon): bench/deepcache.py svd-xt in one device call.
#   bench/server_deepcache.sh OUT
set -euo pipefail
out=$1
source bench/device_env.sh
python3 bench/deepcache.py svd-xt > "$out/deepcache.log" 2>&1
cp bench/results/deepcache_svd-xt.json bench/results/deepcache_svd-xt.md "$out/"
tail -20 "$out/deepcache.log"
