"""How much each run has memorised: its model's bits/byte on stories it trained on against stories held out of its
training, and the gap between them, grouped by the settings you name (mean ± 95% CI over the runs of a group, Welch's
p of each group's gap against the first group's).

The held-out stories are the run's dataset's ``validation.txt`` (the selection stories ``benchmarks/budget.py``
writes beside its train split); the trained-on ones are the first ``--stories`` of its ``train.txt``. A run that
passes over its data many times learns its training stories better than new ones: the gap says how much.

    python benchmarks/memorisation.py /tmp/budget-run-* --group_by residual_dropout max_time \
        --json benchmarks/results/memorisation.json

Not timed: any machine load will do.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _common import print_table, stories_in, write_json

import tinypretrain as tp
from tinypretrain.model.build import load_model
from tinypretrain.runs.compare import summarize

MEASURES = ("trained_on", "held_out", "gap")  # bits/byte on stories trained on, on held-out ones, and their gap


def score_run(run: Path, count: int, group_by: list[str]) -> dict[str, Any]:
    """One run folder's row: its settings named in ``group_by`` and its bits/byte on trained-on and held-out stories."""
    config = json.loads((run / "run.json").read_text())["config"]
    data = Path(config["dataset"])
    if not (data / "validation.txt").exists():
        raise SystemExit(f"{run}: its dataset {data} has no validation.txt to hold out; use budget.py's run folders.")
    model, tokenizer = load_model(run)
    trained = tp.evaluate(model, tokenizer, stories_in(data / "train.txt")[:count])["bits_per_byte"]
    held_out = tp.evaluate(model, tokenizer, stories_in(data / "validation.txt")[:count])["bits_per_byte"]
    return {"run": str(run), **{name: config.get(name) for name in group_by}, "seed": config["seed"],
            "trained_on": trained, "held_out": held_out, "gap": held_out - trained}


def summarise(rows: list[dict[str, Any]], group_by: list[str]) -> list[dict[str, Any]]:
    """Per group of ``group_by`` values: n, and each measure's mean ± CI with Welch's p against the first group."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[name] for name in group_by), []).append(row)
    first = next(iter(groups.values()))
    return [{**dict(zip(group_by, key)), **summarize(members, first, MEASURES)} for key, members in groups.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="Run folders (each with run.json and its model).")
    parser.add_argument("--group_by", nargs="+", default=["max_time"], help="Settings in run.json's config.")
    parser.add_argument("--stories", type=int, default=500, help="Stories scored from each side.")
    parser.add_argument("--json", help="Write the rows and the summary here.")
    args = parser.parse_args()
    rows = sorted((score_run(run, args.stories, args.group_by) for run in args.runs),
                  key=lambda r: ([str(r[name]) for name in args.group_by], r["seed"]))
    print_table(rows, [*args.group_by, "seed", "trained_on", "held_out", "gap"])
    summary = summarise(rows, args.group_by)
    print_table(summary, [*args.group_by, "n", *MEASURES, "gap p"])
    write_json(args.json, {"stories": args.stories, "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
