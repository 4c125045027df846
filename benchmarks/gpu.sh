#!/usr/bin/env bash
# The GPU benchmark for one H200 with no network. Finishes within 6 minutes (each stage runs under a time limit
# taken from one deadline and keeps what it measured if cut short) and prints the tables and targets last.
#   DATA=dir-with-train.txt-and-valid.txt WHEELS=.whl [TOKENIZER=dir] bash benchmarks/gpu.sh
# Installs nothing from the network: `datasets` (absent from the GPU image) comes from the wheels that
# benchmarks/fetch_wheels.sh downloads beforehand. TOKENIZER skips training the 32k BPE on DATA (~20 s).
# Results land in ${OUT:-benchmarks/results}/gpu-*. DEVICE=cpu QUICK=1 smoke-tests the script on a CPU.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;; esac
deadline=$((SECONDS + ${BUDGET_S:-345}))
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
data="${DATA:-../shared/data/tinystories}"
out="${OUT:-benchmarks/results}"
device="${DEVICE:-cuda}"
tokenizer=(${TOKENIZER:+--tokenizer "$TOKENIZER"})
mkdir -p "$out"
rm -f "$out"/gpu-throughput.json "$out"/gpu-ttq.json

if ! python3 -c "import datasets" 2>/dev/null; then
  wheels="${WHEELS:-.whl}"
  ls "$wheels"/datasets-*.whl >/dev/null || { echo "no datasets wheel in $wheels: run benchmarks/fetch_wheels.sh first"; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/tinypretrain-site "$wheels"/*.whl
  export PYTHONPATH="/tmp/tinypretrain-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
python3 -c "import torch, transformers, datasets; print('torch', torch.__version__, '| transformers', transformers.__version__, '| datasets', datasets.__version__, '| cuda', torch.cuda.is_available())"

# Runs "$@" for at most $1 seconds; a stage cut short keeps the JSON it wrote after each finished path.
stage() { local limit=$1; shift; timeout --signal=INT --kill-after=10 "${limit}s" "$@" 2>&1 | grep -v "it/s\]\|s/it\]\|examples/s\]" || echo "(stopped at its ${limit}-s limit)"; }

if [ "${QUICK:-0}" = 1 ]; then steps=1; budget=8; every=2; seed_epochs=0.01; stories=20
else steps=30; budget=15; every=25; seed_epochs=1; stories=300; fi
# 1. Throughput (at most 125 s): the seed recipe vs pretrain()'s default, then one lever at a time, in one process.
stage 125 python3 benchmarks/throughput.py --data "$data" "${tokenizer[@]}" --device "$device" --steps "$steps" \
  --variant "stock Trainer host syncs:avoid_host_syncs=false" \
  --variant "CUDA graphs:torch_compile_mode=reduce-overhead" \
  --plain --json "$out/gpu-throughput.json" > "$out/gpu-throughput.log"
# 2. Time to quality (the rest): the seed recipe for one epoch of the sample (~115 s on an H200; stopped at 140 s if
#    slower), then the default path.
stage $((deadline - SECONDS - 58)) python3 benchmarks/time_to_quality.py --data "$data" "${tokenizer[@]}" \
  --seed_epochs "$seed_epochs" --seed_budget 140 --budget "$budget" --eval_every "$every" --eval_stories "$stories" \
  --json "$out/gpu-ttq.json" --plot "$out/gpu-ttq.png" > "$out/gpu-ttq.log"
# 3. FSDP2 through Trainer (at most 50 s; GPUs only: accelerate turns FSDP on only for accelerators): the widest
#    paper preset sharded over every GPU here, bf16, 20 steps, as docs/distributed.md tells users to run it.
if [ "$device" != cpu ]; then
  stage 50 python3 -m torch.distributed.run --standalone --nproc_per_node "$(nvidia-smi -L | wc -l)" -m tinypretrain \
    train --dataset "$data" "${tokenizer[@]}" --preset "${FSDP_PRESET:-paper-h1024-l12}" --fsdp full_shard \
    --max_steps 20 --logging_steps 5 --eval_strategy no --num_samples 1 \
    --output_dir "${TMPDIR:-/tmp}/tinypretrain-gpu-fsdp" --overwrite_output_dir true > "$out/gpu-fsdp.log"
  grep -h '"fsdp_version"\|"train_steps"\|tinypretrain: error' "$out/gpu-fsdp.log" \
    "${TMPDIR:-/tmp}/tinypretrain-gpu-fsdp/run.json" 2>/dev/null | head -3 || true
fi
python3 benchmarks/report.py --throughput "$out/gpu-throughput.json" --ttq "$out/gpu-ttq.json" | tee "$out/gpu-report.txt"
