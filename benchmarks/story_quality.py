"""Story-quality metrics of short runs, and what computing them costs.

    python benchmarks/story_quality.py --seconds 120 --json benchmarks/results/story_quality.json

1. The seed recipe (the blog's Trainer code, EOS-masking collator included: benchmarks/seed_recipe.py) and
   pretrain()'s defaults each train for ``--seconds`` on the TinyStories sample, then both are scored by
   ``tinypretrain.story_quality`` on the same 16 openings of valid.txt stories (seed 0, 256 new tokens).
2. Cost: the default ``tinypretrain train`` run (no arguments) twice, with the story metrics (story_samples=16) and
   without (0); the cost is the difference in evaluation time as a share of the default run's wall time.

Run it alone on an idle machine: it times things.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import DEFAULT_DATA, machine, print_table, seed_recipe_trainer, tokenizer_for, write_json
from transformers import TrainerCallback

import tinypretrain as tp
from tinypretrain.data.load import read_eot_text
from tinypretrain.model.evaluate import STORY_METRICS

COLUMNS = ["model", "train_seconds", "steps", *STORY_METRICS]


class Deadline(TrainerCallback):
    """Stops training after ``seconds`` of training steps."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, None

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = self.start or time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = time.perf_counter() - self.start >= self.seconds


def seed_recipe_model(data: Path, seconds: float) -> tuple:
    from datasets import Dataset

    tokenizer = tp.load_tokenizer(tokenizer_for(data, None))
    texts = Dataset.from_dict({"text": [r["text"] for r in read_eot_text([str(data / "train.txt")])]})
    trainer, _ = seed_recipe_trainer(texts, tokenizer, tempfile.mkdtemp(prefix="story-seed-"))
    trainer.add_callback(Deadline(seconds))
    trainer.train()
    return trainer.model, trainer.processing_class, trainer.state.global_step


def default_model(data: Path, seconds: float) -> tuple:
    result = tp.pretrain(
        dataset=str(data), max_time=seconds, output_dir=tempfile.mkdtemp(prefix="story-ours-"), story_samples=0
    )
    return result.model, result.tokenizer, result.metrics["train_steps"]


def eval_seconds(story_samples: int) -> tuple[float, float, int]:
    """The default run's summed evaluation time, its wall time and its number of evaluations."""
    out = Path(tempfile.mkdtemp(prefix=f"story-cost-{story_samples}-"))
    result = tp.pretrain(output_dir=str(out), story_samples=story_samples)
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "eval_runtime" in line]
    return sum(e["eval_runtime"] for e in evals), result.metrics["wall_time_s"], len(evals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--json")
    args = parser.parse_args()
    if not (args.data / "train.txt").exists():
        raise SystemExit(f"{args.data}/train.txt not found: pass --data with a TinyStories sample.")
    openings = [r["text"] for r in read_eot_text([str(args.data / "valid.txt")])]
    load = os.getloadavg()[0]
    rows = []
    for name, build in (("seed recipe (blog code)", seed_recipe_model), ("pretrain() defaults", default_model)):
        model, tokenizer, steps = build(args.data, args.seconds)
        scores = tp.story_quality(model, tokenizer, openings, samples=16, max_new_tokens=256, seed=0)
        rows.append({"model": name, "train_seconds": args.seconds, "steps": steps, **scores})
        print_table(rows[-1:], COLUMNS)
    with_story, wall, evals = eval_seconds(16)
    without, _, _ = eval_seconds(0)
    cost = {
        "evaluations": evals,
        "eval_s_with": with_story,
        "eval_s_without": without,
        "default_run_wall_s": wall,
        "story_share_of_wall": (with_story - without) / wall,
        "load_1m_before": load,
    }
    print_table(rows, COLUMNS)
    print_table([cost], list(cost))
    write_json(args.json, {"machine": machine(), "seconds": args.seconds, "rows": rows, "cost": cost})


if __name__ == "__main__":
    main()
