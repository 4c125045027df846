"""The seed-noise floor of a time-budgeted run, and seed-replicated comparisons: each variant trains with N seeds
through the real CLI (`tinypretrain train --max_time B`), one process at a time, scored on a selection split held
out of train.txt (never valid.txt). Prints per-run rows, then per variant: n, mean ± 95% CI and the standard
deviation of bits/byte, Welch's p against the first variant, and how far Trainer's train_runtime overran the budget.

    python benchmarks/noise.py --budget 60 --seeds 5 --json benchmarks/results/noise-60s.json
    python benchmarks/noise.py --budget 60 --seeds 3 --variant "defaults:" --variant "lr 2e-3:learning_rate=0.002"

Run it on an idle machine: the budget is wall-clock training time, so a busy CPU trains fewer steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _common import DEFAULT_DATA, machine, parse_variant, print_table, run_cli, write_json
from budget import split_stories

from tinypretrain.utils.stats import format_p, mean_ci, welch_p

COLUMNS = ["variant", "seed", "steps", "bits_per_byte", "train_seconds", "train_runtime_s", "runtime_over_budget",
           "achieved_flops_per_s", "load_1m"]


def run_once(data: Path, budget: float, seed: int, overrides: dict, work: Path) -> dict:
    out = work / f"run-{seed}"
    flags = [f"--{k}={json.dumps(v) if isinstance(v, dict) else v}" for k, v in overrides.items()]
    run_cli("train", "--dataset", str(data), "--max_time", str(budget), "--seed", str(seed), "--num_samples", "0",
            "--output_dir", str(out), *flags)
    record = json.loads((out / "run.json").read_text())
    runtime = next(json.loads(line)["train_runtime"] for line in (out / "metrics.jsonl").read_text().splitlines()
                   if "train_runtime" in line)
    shutil.rmtree(out)
    metrics = record["metrics"]
    return {"seed": seed, "steps": metrics["train_steps"], "bits_per_byte": metrics["eval_bits_per_byte"],
            "train_seconds": metrics["train_seconds"], "train_runtime_s": runtime,
            "runtime_over_budget": runtime / budget,
            "achieved_flops_per_s": record["compute"]["achieved_flops_per_s"], "load_1m": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budget", type=float, default=60.0, help="Seconds of training per run.")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first_seed", type=int, default=0)
    parser.add_argument("--selection", type=int, default=500, help="Stories held out of train.txt to score on.")
    parser.add_argument("--variant", action="append", help="'name:field=value,...' (default: the defaults alone).")
    parser.add_argument("--json")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant or ["defaults:"]]
    data, _ = split_stories(args.data, args.selection, "selection")
    rows, summary = [], []
    with tempfile.TemporaryDirectory(prefix="noise-") as work:
        for name, overrides in variants:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                row = {"variant": name, **run_once(data, args.budget, seed, overrides, Path(work))}
                rows.append(row)
                print_table([row], COLUMNS)
                write_json(args.json, {"machine": machine(), "budget_s": args.budget, "rows": rows})
    shutil.rmtree(data)
    first = [r["bits_per_byte"] for r in rows if r["variant"] == variants[0][0]]
    for name, _ in variants:
        values = [r["bits_per_byte"] for r in rows if r["variant"] == name]
        mean, half = mean_ci(values)
        overrun = max(r["runtime_over_budget"] for r in rows if r["variant"] == name)
        summary.append({"variant": name, "n": len(values), "mean": mean, "ci95": half,
                        "sd": statistics.stdev(values) if len(values) > 1 else None,
                        "p_vs_first": welch_p(values, first) if name != variants[0][0] else None,
                        "max_runtime_over_budget": overrun})
    print()
    print_table(rows, COLUMNS)
    print()
    print_table([{**s, "p_vs_first": format_p(s["p_vs_first"])} for s in summary],
                ["variant", "n", "mean", "ci95", "sd", "p_vs_first", "max_runtime_over_budget"])
    write_json(args.json, {"machine": machine(), "budget_s": args.budget, "command": sys.argv, "rows": rows,
                           "summary": summary})


if __name__ == "__main__":
    main()
