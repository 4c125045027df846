"""Per-story eval loss and bits/byte against training wall time: the seed recipe versus pretrain()'s default path.

    python benchmarks/time_to_quality.py --budget 240 --json ttq.json --plot ttq.png
    python benchmarks/time_to_quality.py --budget 150 --no-seed --variant kaiming:init=kaiming \
        --variant lr1e-3:learning_rate=1e-3

Wall time counts training only (evaluation pauses the clock). The seed runs its exact recipe (benchmarks/seed_recipe.py,
cosine over its 2 epochs); ours runs recipe "fast" (seed-20m, packed 512-token blocks) over 1 epoch of --data.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import DEFAULT_DATA, CountingCollator, machine, parse_variant, print_table, tokenizer_for, write_json
from seed_recipe import seed_model, seed_tokenize, seed_tokenizer, seed_trainer, seed_training_args
from transformers import DataCollatorForLanguageModeling, TrainerCallback

import tinypretrain as tp


class EvalClock(TrainerCallback):
    """Evaluates every ``every`` steps with the clock paused; stops once ``budget`` training seconds have passed."""

    def __init__(self, tokenizer, texts: list[str], every: int, budget: float, tokens_per_step) -> None:
        self.tokenizer, self.texts, self.every, self.budget = tokenizer, texts, every, budget
        self.tokens_per_step = tokens_per_step
        self.points: list[dict] = []
        self.train_s, self.resumed = 0.0, None

    def _tokens(self, step: int) -> int:
        per = self.tokens_per_step
        return per * step if isinstance(per, int) else sum(per[:step])

    def on_train_begin(self, args, state, control, **kwargs):
        self.resumed = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every and self.train_s + time.perf_counter() - self.resumed < self.budget:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.train_s += time.perf_counter() - self.resumed
        scores = tp.evaluate(model, self.tokenizer, self.texts)
        self.points.append(
            {
                "step": state.global_step,
                "train_s": self.train_s,
                "tokens": self._tokens(state.global_step),
                "eval_loss": scores["loss"],
                "bits_per_byte": scores["bits_per_byte"],
            }
        )
        if self.train_s >= self.budget:
            control.should_training_stop = True
        self.resumed = time.perf_counter()


def run_seed(data: Path, tok, texts, budget: float, every: int, out: str) -> list[dict]:
    stok = seed_tokenizer(tok)
    train = seed_tokenize(tp.load_text_dataset(data, "train"), stok, num_proc=None)
    collator = CountingCollator(DataCollatorForLanguageModeling(stok, mlm=False))
    clock = EvalClock(stok, texts, every * 8, budget, collator.real)  # the seed's steps are ~8x smaller
    args = seed_training_args(
        out, eval_strategy="no", save_strategy="no", logging_steps=10**6, dataloader_num_workers=0
    )
    seed_trainer(seed_model(), stok, train, None, args, data_collator=collator, callbacks=[clock]).train()
    return clock.points


def run_ours(data: Path, tok_path: str, tok, texts, budget: float, every: int, out: str, **overrides) -> list[dict]:
    cfg = tp.PretrainConfig(
        recipe="fast",
        dataset=str(data),
        train_split="train",
        tokenizer=tok_path,
        model_overrides={"vocab_size": 32000},
        num_train_epochs=1,
        **overrides,
    )
    micro, accumulation = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    clock = EvalClock(tok, texts, every, budget, micro * accumulation * cfg.max_length)
    tp.pretrain(
        cfg, output_dir=out, eval_steps=10**9, save_steps=10**9, max_eval_samples=4, num_samples=0, callbacks=[clock]
    )
    return clock.points


def plot(curves: dict[str, list[dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in curves.items():
        ax.plot([p["train_s"] for p in points], [p["eval_loss"] for p in points], marker=".", label=name)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("per-story eval loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--tokenizer", help="Default: a 32k BPE trained on --data (cached).")
    parser.add_argument("--budget", type=float, default=240, help="Training seconds per path.")
    parser.add_argument("--seed_budget", type=float, help="Training seconds for the seed recipe (default: --budget).")
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

    curves: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_seed:
            curves["seed recipe"] = run_seed(
                args.data, tok, texts, args.seed_budget or args.budget, args.eval_every, f"{tmp}/seed"
            )
        runs = [] if args.no_default else [("pretrain() default", {})]
        runs += [parse_variant(v) for v in args.variant]
        for i, (name, overrides) in enumerate(runs):
            curves[name] = run_ours(
                args.data, tok_path, tok, texts, args.budget, args.eval_every, f"{tmp}/{i}", **overrides
            )

    rows = []
    target = curves["seed recipe"][-1]["eval_loss"] if "seed recipe" in curves else None
    for name, points in curves.items():
        last = points[-1]
        reach = next((p["train_s"] for p in points if target is not None and p["eval_loss"] <= target), None)
        rows.append(
            {
                "path": name,
                "train_s": last["train_s"],
                "tokens": last["tokens"],
                "eval_loss": last["eval_loss"],
                "bits_per_byte": last["bits_per_byte"],
                "s_to_seed_final_loss": reach,
            }
        )
    info = machine()
    print(f"\nTime to quality on {info['device']}, {info['date']}; per-story eval on {len(texts)} validation stories")
    print_table(rows, ["path", "train_s", "tokens", "eval_loss", "bits_per_byte", "s_to_seed_final_loss"])
    write_json(args.json, {"machine": info, "budget_s": args.budget, "rows": rows, "curves": curves})
    if args.plot:
        plot(curves, args.plot)


if __name__ == "__main__":
    main()
