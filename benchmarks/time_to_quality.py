"""Per-story eval loss and bits/byte against training wall time: the seed recipe versus pretrain()'s default path.

    python benchmarks/time_to_quality.py --budget 240 --json ttq.json --plot ttq.png
    python benchmarks/time_to_quality.py --budget 150 --no-seed --variant kaiming:init=kaiming \
        --variant lr1e-3:learning_rate=1e-3

Wall time counts training only (evaluation pauses the clock). The seed runs its exact recipe (benchmarks/seed_recipe.py,
cosine over its 2 epochs); ours runs recipe "fast" (seed-20m, packed 512-token blocks) over 1 epoch of --data.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from _common import (
    DEFAULT_DATA,
    StepTimer,
    benchmark_config,
    machine,
    parse_variant,
    pretrain_training_only,
    print_table,
    seed_recipe_trainer,
    tokenizer_for,
    write_json,
)

import tinypretrain as tp


class EvalClock(StepTimer):
    """Evaluates every ``every`` steps with the clock paused; stops after ``budget`` training seconds or at
    ``stop_step``. The first step (compilation, first batch) is timed on its own as ``first_step_s``."""

    def __init__(self, tokenizer, texts, every: int, budget: float, stop_step: int | None = None, **tokens) -> None:
        super().__init__(warmup=0, **tokens)
        self.tokenizer, self.texts, self.every, self.budget, self.stop_step = tokenizer, texts, every, budget, stop_step
        self.points: list[dict] = []
        self.train_s, self.first_step_s, self.resumed = 0.0, None, None

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self.resumed = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        last = step == self.stop_step or self.train_s + time.perf_counter() - self.resumed >= self.budget
        if step > 1 and step % self.every and not last:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.train_s += time.perf_counter() - self.resumed
        if step == 1:
            self.first_step_s = self.train_s
        if step % self.every == 0 or last:
            scores = tp.evaluate(model, self.tokenizer, self.texts)
            self.points.append(
                {
                    "step": step,
                    "train_s": self.train_s,
                    "tokens": self.tokens(0, step),
                    "eval_loss": scores["loss"],
                    "bits_per_byte": scores["bits_per_byte"],
                }
            )
        control.should_training_stop = last
        self.resumed = time.perf_counter()


def run_seed(data: Path, tok, texts, budget: float, epochs: float | None, every: int, out: str) -> EvalClock:
    trainer, collator = seed_recipe_trainer(tp.load_text_dataset(data, "train"), tok, out)
    steps_per_epoch = len(trainer.train_dataset) / trainer.args.per_device_train_batch_size
    stop = math.ceil(steps_per_epoch * epochs) if epochs else None
    # The seed's steps are ~8x smaller than ours: evaluate 8x less often per step.
    clock = EvalClock(trainer.processing_class, texts, every * 8, budget, stop, real_tokens=collator.real)
    trainer.add_callback(clock)
    trainer.train()
    return clock


def run_ours(data: Path, tok_path: str, tok, texts, budget: float, every: int, out: str, **overrides) -> EvalClock:
    cfg = benchmark_config(data, tok_path, recipe="fast", train_split="train", num_train_epochs=1, **overrides)
    clock = EvalClock(tok, texts, every, budget, block_length=cfg.max_length)
    pretrain_training_only(cfg, out, clock)
    return clock


def plot(curves: dict[str, list[dict]], path: str) -> None:
    from tinypretrain.utils.figures import new_axes, save_figure

    fig, ax = new_axes()
    for name, points in curves.items():
        ax.plot([p["train_s"] for p in points], [p["eval_loss"] for p in points], marker=".", label=name)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("per-story eval loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, Path(path))
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--tokenizer", help="Default: a 32k BPE trained on --data (cached).")
    parser.add_argument("--budget", type=float, default=240, help="Training seconds per path.")
    parser.add_argument("--seed_budget", type=float, help="Training seconds for the seed recipe (default: --budget).")
    parser.add_argument("--seed_epochs", type=float, help="Stop the seed after this many epochs (or its budget).")
    parser.add_argument("--eval_every", type=int, default=10, help="Our steps between evals (the seed: 8x more).")
    parser.add_argument("--eval_stories", type=int, default=200)
    parser.add_argument("--no-seed", action="store_true", help="Skip the seed recipe (ablations only).")
    parser.add_argument("--no-default", action="store_true", help="Skip pretrain()'s default run (variants only).")
    parser.add_argument("--variant", action="append", default=[], help="name:field=value,... run of ours.")
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args()
    tok_path = tokenizer_for(args.data, args.tokenizer)
    tok = tp.load_tokenizer(tok_path)
    texts = list(tp.load_text_dataset(args.data, "validation")["text"][: args.eval_stories])

    info = machine()
    clocks: dict[str, EvalClock] = {}

    def report() -> None:  # after every path, so a run cut short still leaves its results
        rows = []
        seed = clocks.get("seed recipe")
        target = seed.points[-1]["eval_loss"] if seed else None
        for name, clock in clocks.items():
            last = clock.points[-1]
            reach = next((p["train_s"] for p in clock.points if target is not None and p["eval_loss"] <= target), None)
            rows.append(
                {
                    "path": name,
                    "train_s": last["train_s"],
                    "first_step_s": clock.first_step_s,
                    "tokens": last["tokens"],
                    "eval_loss": last["eval_loss"],
                    "bits_per_byte": last["bits_per_byte"],
                    "s_to_seed_final_loss": reach,
                    "fraction_of_seed_time": reach / seed.train_s if reach is not None else None,
                }
            )
        print(f"\nTime to quality on {info['device']}, {info['date']}; per-story eval on {len(texts)} valid stories")
        print_table(rows, list(rows[0]))
        curves = {name: clock.points for name, clock in clocks.items()}
        write_json(args.json, {"machine": info, "budget_s": args.budget, "rows": rows, "curves": curves})
        if args.plot:
            plot(curves, args.plot)

    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_seed:
            clocks["seed recipe"] = run_seed(
                args.data,
                tok,
                texts,
                args.seed_budget or (math.inf if args.seed_epochs else args.budget),
                args.seed_epochs,
                args.eval_every,
                f"{tmp}/s",
            )
            report()
        runs = [] if args.no_default else [("pretrain() default", {})]
        runs += [parse_variant(v) for v in args.variant]
        for i, (name, overrides) in enumerate(runs):
            clocks[name] = run_ours(
                args.data, tok_path, tok, texts, args.budget, args.eval_every, f"{tmp}/{i}", **overrides
            )
            report()


if __name__ == "__main__":
    main()
