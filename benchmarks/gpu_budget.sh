#!/usr/bin/env bash
# The plain `tinypretrain train --max_time 30` three times, one process at a time, with dynamo's recompiles logged:
# the epoch's last batch kept (`--dataloader_drop_last false`), the defaults, and eager (`--torch_compile false`).
# One JSON line per run; logs in ${OUT:-benchmarks/results}/gpu-train30-*.log. RESULTS.md section 34 ran it on an H200.
#   DATA=dir-with-train.txt-and-valid.txt WHEELS=.whl [BUDGET=30] bash benchmarks/gpu_budget.sh
set -uo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;; esac
cd "$(dirname "$0")/.."
data="${DATA:-../shared/data/tinystories}" out="${OUT:-benchmarks/results}"
mkdir -p "$out"
if ! python3 -c "import datasets" 2>/dev/null; then  # the GPU image lacks it: benchmarks/fetch_wheels.sh
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/tinypretrain-site "${WHEELS:-.whl}"/*.whl
  export PYTHONPATH="/tmp/tinypretrain-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TORCH_LOGS=recompiles
run() {
  local name=$1; shift; local log=$out/gpu-train30-$name.log
  timeout 130 python3 -m tinypretrain train --dataset "$data" --max_time "${BUDGET:-30}" \
    --output_dir "${TMPDIR:-/tmp}/tinypretrain-budget-$name" --overwrite_output_dir true "$@" > "$log" 2>&1
  python3 - "$name" "$?" "$log" "${TMPDIR:-/tmp}/tinypretrain-budget-$name/run.json" <<'EOF' | tee -a "$log"
import json, sys
name, rc, log, record = sys.argv[1:]
row = {"run": name, "rc": int(rc), "recompiles": sum("guard failure" in line for line in open(log, errors="replace"))}
try:
    r = json.load(open(record))
    row |= {k: r["metrics"][k] for k in ("train_steps", "tokens_seen", "train_seconds", "wall_time_s",
                                          "train_tokens_per_s", "eval_bits_per_byte")}
    row |= {k: [r["config"][k], r["sources"][k]] for k in ("dataloader_drop_last", "torch_compile", "learning_rate")}
except (OSError, KeyError, ValueError) as err:
    row["error"] = repr(err)
print(json.dumps(row))
EOF
}
run tail --dataloader_drop_last false
run dropped
run eager --torch_compile false
