"""Instruction tuning end to end, through the real CLI: a base pretrained for a time budget on TinyStories, then
`tinypretrain sft BASE` for a time budget with N seeds per variant, each scored on held-out instructions built from a
selection split held out of train.txt (never valid.txt). Every tuned model is also scored on one yardstick for all
variants: requests built from whole selection stories (``whole_*``; a variant on openings builds its own prompts from
openings). Prints per-run rows (score before and after, each part, the fraction of stories that ended), then per
variant: n, the mean gain ± 95% CI, Welch's p against the first variant, and the gain on whole-story requests.

    python benchmarks/sft.py --base_time 120 --sft_time 120 --seeds 3 --json benchmarks/results/sft.json
    python benchmarks/sft.py --seeds 3 --variant "defaults:" --variant "lr 3e-4:learning_rate=0.0003"
    python benchmarks/sft.py --seeds 3 --variant "open3:completion_sentences=3" \
        --variant "open3 every part:completion_sentences=3,every_part=true"

Run it on an idle machine: the budgets are wall-clock training time, so a busy CPU trains fewer steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from _common import DEFAULT_DATA, eot_text, machine, parse_variant, print_table, run_cli, write_json
from budget import split_stories

import tinypretrain as tp
from tinypretrain.config.sft import SFTConfig
from tinypretrain.data.instruct import instruct_examples
from tinypretrain.model.build import load_model
from tinypretrain.model.instructions import instruction_score
from tinypretrain.utils.stats import format_mean_ci, format_p, mean_ci, welch_p

COLUMNS = ["variant", "seed", "steps", "score_before", "score_after", "gain", "words", "sentence", "dialogue",
           "ended_before", "ended_after", "whole_gain", "whole_ended_after", "eval_bits_per_byte", "load_1m"]


def whole_story_score(folder: Path, prompts: list[str]) -> dict:
    """``folder``'s instruction score (sampling seed 0) on ``prompts``: one yardstick for every variant, whatever
    prompts its own run built."""
    model, tokenizer = load_model(str(folder))
    return instruction_score(model, tokenizer, prompts, seed=0)


def run_once(base: Path, data: Path, budget: float, seed: int, overrides: dict, out: Path, whole: list[str],
             whole_before: dict) -> dict:
    flags = [f"--{k}={v}" for k, v in overrides.items()]
    run_cli("sft", str(base), "--dataset", str(data), "--max_time", str(budget), "--seed", str(seed), "--output_dir",
            str(out), *flags)
    record = json.loads((out / "run.json").read_text())
    sft, after = record["sft"], record["sft"]["parts"]["after"]
    whole_after = whole_story_score(out, whole)
    return {"seed": seed, "steps": record["metrics"]["train_steps"], "score_before": sft["score_before"],
            "score_after": sft["score_after"], "gain": sft["score_after"] - sft["score_before"],
            **{part: after.get(part) for part in ("words", "sentence", "dialogue")},
            "ended_before": sft["ended"]["before"], "ended_after": sft["ended"]["after"],
            "whole_score_before": whole_before["score"], "whole_score_after": whole_after["score"],
            "whole_gain": whole_after["score"] - whole_before["score"], "whole_parts_after": whole_after["parts"],
            "whole_ended_before": whole_before["ended"], "whole_ended_after": whole_after["ended"],
            "eval_bits_per_byte": record["metrics"]["eval_bits_per_byte"], "load_1m": os.getloadavg()[0]}


def builtin_corpus(stories: int) -> Path:
    """A folder whose train.txt holds ``stories`` built-in stories (seed 0), as the shared sample's does."""
    folder = Path(tempfile.mkdtemp(prefix="sft-builtin-"))
    (folder / "train.txt").write_text(eot_text(tp.generate_stories(stories, seed=0)))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="A folder with train.txt, or 'builtin': 12,500 stories of tinypretrain's generator.")
    parser.add_argument("--base", type=Path, help="A base run folder (default: pretrain one for --base_time).")
    parser.add_argument("--base_time", type=float, default=120.0, help="Seconds of pretraining for the base.")
    parser.add_argument("--sft_time", type=float, default=120.0, help="Seconds of instruction tuning per run.")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--selection", type=int, default=500, help="Stories held out of train.txt for the prompts.")
    parser.add_argument("--variant", action="append", help="'name:field=value,...' of SFTConfig (default: defaults).")
    parser.add_argument("--whole_prompts", type=int, default=200,
                        help="Requests built from whole selection stories, on which every tuned model is also scored.")
    parser.add_argument("--json")
    args = parser.parse_args()
    variants = [parse_variant(v, SFTConfig) for v in args.variant or ["defaults:"]]
    source = builtin_corpus(12_500) if args.data == "builtin" else Path(args.data)
    data, selection = split_stories(source, args.selection, "selection")
    # Requests built from whole held-out stories (what the defaults' prompts are), scored for every variant.
    whole = instruct_examples(selection, seed=1)["prompt"][: args.whole_prompts]
    work = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    base = args.base
    if base is None:
        base = work / "base"
        run_cli("train", "--dataset", str(data), "--max_time", str(args.base_time), "--num_samples", "0",
                "--output_dir", str(base))
    whole_before = whole_story_score(base, whole)
    rows = []
    for seed in range(args.seeds):  # seeds outer, variants inner: a slow stretch of the machine hits every variant
        for name, overrides in variants:
            rows.append({"variant": name, **run_once(base, data, args.sft_time, seed, overrides,
                                                      work / f"{name.replace(' ', '_')}-{seed}", whole, whole_before)})
            print_table(rows[-1:], COLUMNS)
            write_json(args.json, {"machine": machine(), "data": args.data, "base": str(base), "rows": rows})
    print_table(rows, COLUMNS)
    first = [r["gain"] for r in rows if r["variant"] == variants[0][0]]
    summary = []
    for name, _ in variants:
        gains = [r["gain"] for r in rows if r["variant"] == name]
        whole_gains = [r["whole_gain"] for r in rows if r["variant"] == name]
        mean, half = mean_ci(gains)
        summary.append({"variant": name, "n": len(gains), "gain": format_mean_ci(gains), "mean_gain": mean,
                        "ci95": half, "p_vs_first": welch_p(gains, first) if name != variants[0][0] else None,
                        "whole_gain": format_mean_ci(whole_gains)})
    print_table([{**s, "p_vs_first": format_p(s["p_vs_first"])} for s in summary], ["variant", "n", "gain",
                                                                                    "p_vs_first", "whole_gain"])
    base_metrics = json.loads((base / "run.json").read_text())["metrics"]
    write_json(args.json, {"machine": machine(), "data": args.data, "base": str(base), "base_time": args.base_time,
                           "base_steps": base_metrics["train_steps"],
                           "base_bits_per_byte": base_metrics["eval_bits_per_byte"], "sft_time": args.sft_time,
                           "rows": rows, "summary": summary, "command": " ".join(sys.argv)})


if __name__ == "__main__":
    main()
