#!/usr/bin/env bash
# The evidence behind the budget defaults (benchmarks/RESULTS.md, section 5), as run on 2026-12-01: every number
# there comes from one of these commands. Run from the repository root on an idle machine; ~1 h 15 min on 2 cores.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;; esac
cd "$(dirname "$0")"
SPLIT=${SPLIT:-/tmp/ts-select}   # train.txt minus its last 500 stories; validation = those 500 (never valid.txt)
W="lr_scheduler_type=warmup_stable_decay"
# 5a: schedule and peak rate at 60 s (the step defaults of the time: lr 2e-3 constant after 5% warmup)
python budget.py --budgets 60 --json results/budget_60s_tuning.json \
  --variant "defaults:lr_scheduler_type=constant_with_warmup,learning_rate=2e-3" \
  --variant "wsd:$W,learning_rate=2e-3,decay_fraction=0.2" \
  --variant "wsd_lr4e-3:$W,learning_rate=4e-3,decay_fraction=0.2" \
  --variant "wsd_decay0.5:$W,learning_rate=2e-3,decay_fraction=0.5" \
  --variant "cosine:lr_scheduler_type=cosine,learning_rate=2e-3"
python budget.py --budgets 60 --no_reference --json results/budget_60s_tuning2.json \
  --variant "wsd_lr4e-3:$W,learning_rate=4e-3,decay_fraction=0.2" \
  --variant "wsd_lr8e-3:$W,learning_rate=8e-3,decay_fraction=0.2" \
  --variant "wsd_lr4e-3_muon:$W,learning_rate=4e-3,decay_fraction=0.2,muon=true" \
  --variant "wsd_lr4e-3_tied:$W,learning_rate=4e-3,decay_fraction=0.2,model_overrides={\"tie_word_embeddings\":true}" \
  --variant "wsd_lr6e-3_decay0.4:$W,learning_rate=6e-3,decay_fraction=0.4" \
  --variant "wsd_lr16e-3:$W,learning_rate=1.6e-2,decay_fraction=0.2"
# 5b and 5c: shapes and vocabularies with tinypretrain sweep, on the same selection split
[ -d "$SPLIT" ] || python budget.py --write_split "$SPLIT"
COMMON=(--dataset "$SPLIT" --learning_rate 4e-3 --lr_scheduler_type warmup_stable_decay --decay_fraction 0.4
        --num_samples 0 --disable_tqdm true)
tinypretrain sweep --presets cpu-2m paper-h64-l4 paper-h128-l2 paper-h128-l4 paper-h256-l2 paper-h256-l4 \
  --vocab_sizes 2048 4096 --budgets 60s --output_dir results/sweep-60s/runs "${COMMON[@]}"
tinypretrain sweep --presets cpu-2m paper-h256-l2 --vocab_sizes 4096 --budgets 300s \
  --output_dir results/sweep-300s/runs "${COMMON[@]}"
tinypretrain sweep --presets paper-h128-l2 --vocab_sizes 2048 --budgets 300s \
  --output_dir results/sweep-300s/runs "${COMMON[@]}"
# 6: the final comparison on valid.txt
python budget.py --budgets 60 300 --seed_recipe --score_on valid --json results/budget.json
