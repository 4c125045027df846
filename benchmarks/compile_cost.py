"""What `torch.compile` costs and buys on this machine: run.json's training seconds for a short and a long
`tinypretrain train` (the defaults, no evaluations or saves), eager, compiled with an empty inductor cache (a
machine's first compiled run), and compiled with that cache warm (every later run), each in a fresh process. Per
mode: seconds per step (the slope between the two lengths), the fixed cost (the intercept: compilation and first
steps), and the steps that budgets of 60 and 300 s buy at those rates.

    python benchmarks/compile_cost.py --json benchmarks/results/compile-cost.json

Run it on an idle machine, nothing else running: it is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _common import DEFAULT_DATA, machine, print_table, run_cli, write_json
from budget import split_stories

COLUMNS = ["mode", "steps", "train_seconds", "load_1m"]
SUMMARY_COLUMNS = ["mode", "seconds_per_step", "fixed_seconds", "steps_in_60s", "steps_in_300s", "step_speedup"]


def train_seconds(data: Path, steps: int, compiled: bool, cache: Path, work: Path) -> float:
    """Training seconds of one run in a fresh process, whose inductor cache is ``cache``."""
    out = work / f"run-{steps}-{compiled}"
    run_cli("train", "--dataset", str(data), "--max_steps", str(steps), "--torch_compile", str(compiled).lower(),
            "--eval_strategy", "no", "--save_strategy", "no", "--num_samples", "0", "--story_samples", "0",
            "--report_to", "none", "--output_dir", str(out), env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)})
    seconds = json.loads((out / "run.json").read_text())["metrics"]["train_seconds"]
    shutil.rmtree(out)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--short", type=int, default=20, help="Steps of the short runs.")
    parser.add_argument("--long", type=int, default=220, help="Steps of the long runs.")
    parser.add_argument("--json")
    args = parser.parse_args()
    data, _ = split_stories(args.data, 500, "selection")
    rows = []
    with tempfile.TemporaryDirectory(prefix="compile-cost-") as work:
        work = Path(work)
        # Each cold run gets an empty cache; the warm runs reuse the short cold run's.
        plan = [("eager", False, "unused", "unused"), ("compiled, cold cache", True, "cold-a", "cold-b"),
                ("compiled, warm cache", True, "cold-a", "cold-a")]
        for mode, compiled, *caches in plan:
            for steps, cache in zip((args.short, args.long), caches):
                load = os.getloadavg()[0]
                rows.append({"mode": mode, "steps": steps, "load_1m": load,
                             "train_seconds": train_seconds(data, steps, compiled, work / cache, work)})
                print_table(rows[-1:], COLUMNS)
                write_json(args.json, {"machine": machine(), "command": sys.argv, "rows": rows})
    shutil.rmtree(data)
    summary = []
    for mode, *_ in plan:
        short, long = (next(r["train_seconds"] for r in rows if (r["mode"], r["steps"]) == (mode, n))
                       for n in (args.short, args.long))
        per_step = (long - short) / (args.long - args.short)
        fixed = short - args.short * per_step
        summary.append({"mode": mode, "seconds_per_step": round(per_step, 4), "fixed_seconds": round(fixed, 1),
                        **{f"steps_in_{b}s": max(0, round((b - fixed) / per_step)) for b in (60, 300)}})
    for s in summary:
        s["step_speedup"] = round(summary[0]["seconds_per_step"] / s["seconds_per_step"], 3)
    print()
    print_table(rows, COLUMNS)
    print()
    print_table(summary, SUMMARY_COLUMNS)
    write_json(args.json, {"machine": machine(), "command": sys.argv, "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
