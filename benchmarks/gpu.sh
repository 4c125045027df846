#!/usr/bin/env bash
# The GPU benchmark for one H200 with no network; prints a table last. Budgeted for about 6-8 minutes (an
# estimate: it has not run on a GPU yet; compile time per run is the unknown).
#   DATA=dir-with-train.txt-and-valid.txt WHEELS=.whl bash benchmarks/gpu.sh
# Installs nothing from the network: `datasets` (absent from the GPU image) comes from the wheels that
# benchmarks/fetch_wheels.sh downloads beforehand. Results land in ${OUT:-benchmarks/results}/gpu-*.
# DEVICE=cpu QUICK=1 runs the same script on a CPU (a smoke test of the script itself).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
data="${DATA:-../shared/data/tinystories}"
out="${OUT:-benchmarks/results}"
device="${DEVICE:-cuda}"
mkdir -p "$out"

if ! python3 -c "import datasets" 2>/dev/null; then
  wheels="${WHEELS:-.whl}"
  ls "$wheels"/datasets-*.whl >/dev/null || { echo "no datasets wheel in $wheels: run benchmarks/fetch_wheels.sh first"; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/tinypretrain-site "$wheels"/*.whl
  export PYTHONPATH="/tmp/tinypretrain-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
python3 -c "import torch, transformers, datasets; print('torch', torch.__version__, '| transformers', transformers.__version__, '| datasets', datasets.__version__, '| cuda', torch.cuda.is_available())"

# The seed needs ~120 s for one epoch of the sample on an H200 (11k tok/s); ours gets 30 s to match its loss.
if [ "${QUICK:-0}" = 1 ]; then steps=2; budget=10; seed_budget=10; big=4; else steps=100; budget=30; seed_budget=125; big=128; fi
# 1. Throughput: the seed recipe vs pretrain()'s default, plus the levers, each measured in this one process.
python3 benchmarks/throughput.py --data "$data" --device "$device" --steps "$steps" --plain \
  --variant "bs${big}x512:per_device_train_batch_size=$big,max_length=512" \
  --variant "bs${big}x512-chunked-ce:per_device_train_batch_size=$big,max_length=512,loss_chunk_size=8192" \
  --json "$out/gpu-throughput.json" 2>&1 | grep -v "it/s\]\|s/it\]\|examples/s\]" > "$out/gpu-throughput.log"
# 2. Time to quality: the seed recipe for ~one epoch of the sample vs the default path for a fraction of that.
python3 benchmarks/time_to_quality.py --data "$data" --budget "$budget" --seed_budget "$seed_budget" --eval_every 20 --eval_stories 300 \
  --variant "kaiming:init=kaiming" \
  --json "$out/gpu-ttq.json" --plot "$out/gpu-ttq.png" 2>&1 | grep -v "it/s\]\|s/it\]\|examples/s\]" > "$out/gpu-ttq.log"
tail -n 12 "$out/gpu-ttq.log"
echo
tail -n 14 "$out/gpu-throughput.log"
