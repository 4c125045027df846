"""Quality for a time budget on this machine: bits/byte after B seconds of training for the seed recipe, a plain
llama2.c-style loop of our own and pretrain(max_time=B) variants, one after the other (run it on an idle machine),
with the curve of bits/byte against training seconds and the seconds each path needs to reach the seed recipe's
one-epoch quality (1.383 bits/byte).

    python benchmarks/budget.py --budgets 60 300 --score_on valid --json benchmarks/results/budget.json

Scores come from a selection split held out of train.txt (the last --selection stories), never from valid.txt,
unless --score_on valid is given (for the final report only). Curves are evaluated on the first 500 scored stories
(the seed recipe's on the first 100, at 6 points: its 20M model is slow to score on CPU) with the clock paused; the
final score uses all of them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import (
    DEFAULT_DATA,
    eot_text,
    machine,
    parse_variant,
    print_table,
    seed_recipe_trainer,
    tokenizer_for,
    write_json,
)
from transformers import LlamaForCausalLM, TrainerCallback

import tinypretrain as tp
from tinypretrain.data.load import read_eot_text
from tinypretrain.train.budget import schedule_factor
from tinypretrain.train.clock import TrainingClock

DEFAULT_VARIANTS = ["defaults:"]
SEED_ONE_EPOCH_BPB = 1.383  # the seed recipe after one epoch of train.txt, in 1,469 s (RESULTS.md, run 7)
CURVE_POINTS = 20
COLUMNS = ["budget_s", "path", "steps", "bits_per_byte", "seconds_to_seed_epoch", "load_1m"]


def split_stories(data: Path, selection: int, score_on: str) -> tuple[Path, list[str]]:
    """A dataset folder whose train split excludes the selection stories, and the texts to score on."""
    stories = [row["text"] for row in read_eot_text([str(data / "train.txt")]) if row["text"].strip()]
    folder = Path(tempfile.mkdtemp(prefix="budget-data-"))
    (folder / "train.txt").write_text(eot_text(stories[:-selection]))
    if score_on == "valid":
        scored = [r["text"] for r in read_eot_text([str(data / "valid.txt")]) if r["text"].strip()]
    else:
        scored = stories[-selection:]
    (folder / "validation.txt").write_text(eot_text(scored[:500]))
    return folder, scored


class Curve:
    """Bits/byte of the first ``stories`` scored stories at every 1/``points`` of the budget, with the clock paused."""

    def __init__(self, texts: list[str], budget_s: float, points: int = CURVE_POINTS, stories: int = 500) -> None:
        self.texts, self.budget_s, self.points, self.every = texts[:stories], budget_s, [], budget_s / points
        self.clock, self._next = TrainingClock(), self.every

    def tick(self, model, tokenizer) -> bool:
        """Score if a curve point is due; True once the budget is spent."""
        seconds = self.clock.seconds()
        if seconds >= self._next or seconds >= self.budget_s:
            with self.clock.paused():
                self.points.append((seconds, tp.evaluate(model, tokenizer, self.texts)["bits_per_byte"]))
                model.train()
            self._next += self.every
        return seconds >= self.budget_s


class CurveCallback(TrainerCallback):
    def __init__(self, curve: Curve, tokenizer) -> None:
        self.curve, self.tokenizer = curve, tokenizer

    def on_train_begin(self, args, state, control, **kwargs):
        self.curve.clock.start()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.curve.tick(model, self.tokenizer):
            control.should_training_stop = True


def seed_recipe(train_dir: Path, tokenizer_path: str, curve: Curve) -> tuple:
    """The blog's Trainer recipe (20M model, padded batches of 4, lr 1e-4 cosine over 2 epochs), stopped by the clock."""
    from datasets import Dataset

    tokenizer = tp.load_tokenizer(tokenizer_path)
    texts = Dataset.from_dict({"text": [r["text"] for r in read_eot_text([str(train_dir / "train.txt")])]})
    trainer, _ = seed_recipe_trainer(texts, tokenizer, tempfile.mkdtemp(prefix="budget-seed-"))
    trainer.add_callback(CurveCallback(curve, tokenizer))
    trainer.train()
    return trainer.model, tokenizer, trainer.state.global_step


def reference_loop(train_dir: Path, tokenizer_path: str, curve: Curve, seed: int = 0) -> tuple:
    """A plain llama2.c-style script: packed 8x256 windows, AdamW, warmup then cosine to the deadline, tied
    embeddings, no Trainer. Returns the model, tokenizer and steps."""
    torch.manual_seed(seed)
    tokenizer = tp.load_tokenizer(tokenizer_path)
    texts = [r["text"] for r in read_eot_text([str(train_dir / "train.txt")])]
    ids = np.concatenate([np.array(x + [tokenizer.eos_token_id]) for x in tokenizer(texts)["input_ids"]])
    config = tp.make_llama_config(preset="cpu-2m", vocab_size=-(-len(tokenizer) // 64) * 64, tie_word_embeddings=True,
                                  eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    rng, steps = np.random.default_rng(seed), 0
    curve.clock.start()
    while not curve.tick(model, tokenizer):
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * schedule_factor("cosine", curve.clock.seconds() / curve.budget_s, 0.05, 0.0)
        offsets = rng.integers(0, len(ids) - 257, size=8)
        batch = torch.from_numpy(np.stack([ids[o : o + 257] for o in offsets]))
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
    return model, tokenizer, steps


def pretrain_curve(output_dir: Path) -> list[tuple[float, float]]:
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["train_seconds"], r["eval_bits_per_byte"]) for r in rows if "eval_bits_per_byte" in r]


def seconds_to(points: list[tuple[float, float]], target: float) -> float | None:
    """Training seconds at which the curve first reaches ``target``, interpolated between its points."""
    previous = None
    for seconds, bpb in points:
        if bpb <= target:
            if previous is None or previous[1] == bpb:
                return seconds
            (s0, b0) = previous
            return s0 + (seconds - s0) * (b0 - target) / (b0 - bpb)
        previous = (seconds, bpb)
    return None


def plot(rows: list[dict], path: Path) -> None:
    from tinypretrain.utils.figures import new_axes, save_figure

    fig, ax = new_axes()
    for r in rows:
        if r["curve"]:
            ax.plot(*zip(*r["curve"]), marker=".", label=f"{r['path']} ({r['budget_s']:.0f} s)")
    ax.axhline(SEED_ONE_EPOCH_BPB, color="grey", linestyle="--", label="seed recipe, one epoch")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("bits per byte")
    ax.set_ylim(top=2.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budgets", type=float, nargs="+", default=[60.0, 300.0])
    parser.add_argument("--variant", action="append", help="name:field=value,... (PretrainConfig fields)")
    parser.add_argument("--no_reference", action="store_true")
    parser.add_argument("--seed_recipe", action="store_true", help="Also run the seed recipe (20M model, 32k BPE).")
    parser.add_argument("--selection", type=int, default=500, help="Stories held out of train.txt for scoring.")
    parser.add_argument("--score_on", choices=["selection", "valid"], default="selection")
    parser.add_argument("--json")
    parser.add_argument("--write_split", type=Path, help="Only write the train/selection folder here (for sweeps).")
    args = parser.parse_args()
    if not (args.data / "train.txt").exists():
        raise SystemExit(f"{args.data}/train.txt not found: pass --data")
    train_dir, scored = split_stories(args.data, args.selection, args.score_on)
    if args.write_split:
        shutil.copytree(train_dir, args.write_split)
        return
    tokenizer = tokenizer_for(train_dir, None, vocab_size=4096)  # the reference loop's (llama2.c uses a 4k vocabulary)
    rows = []
    for budget in args.budgets:
        paths = [("seed recipe", "seed")] if args.seed_recipe else []
        paths += [] if args.no_reference else [("reference loop", "reference")]
        paths += [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
        for name, overrides in paths:
            load = os.getloadavg()[0]
            curve, samples = Curve(scored, budget), None
            if overrides == "seed":  # its 20M model at 2,048 tokens takes ~30 s per 500-story curve point on CPU
                curve = Curve(scored, budget, points=6, stories=100)
                model, tok, steps = seed_recipe(train_dir, tokenizer_for(train_dir, None), curve)
                points = curve.points
            elif overrides == "reference":
                model, tok, steps = reference_loop(train_dir, tokenizer, curve)
                points = curve.points
            else:
                out = Path(tempfile.mkdtemp(prefix="budget-run-"))
                # pretrain() makes its own tokenizer (its vocabulary is part of the defaults), outside the budget
                result = tp.pretrain(dataset=str(train_dir), max_time=budget, output_dir=str(out), num_samples=3,
                                     report_to="none", disable_tqdm=True, eval_steps=1 / CURVE_POINTS, **overrides)
                model, tok, steps = result.model, result.tokenizer, result.metrics["train_steps"]
                points = pretrain_curve(out)
                samples = (out / "samples.md").read_text(encoding="utf-8")
            score = tp.evaluate(model, tok, scored)
            rows.append({"budget_s": budget, "path": name, "overrides": overrides, "steps": steps,
                         "bits_per_byte": score["bits_per_byte"], "loss": score["loss"],
                         "seconds_to_seed_epoch": seconds_to(points, SEED_ONE_EPOCH_BPB), "load_1m": load,
                         "curve": points, "samples": samples})
            print_table(rows[-1:], COLUMNS)
            write_json(args.json, {"machine": machine(), "scored_on": args.score_on, "stories": len(scored),
                                   "rows": rows})
            if args.json:
                plot(rows, Path(args.json).with_suffix(".png"))
    print_table(rows, COLUMNS)
    ref = {r["budget_s"]: r["bits_per_byte"] for r in rows if r["path"] == "reference loop"}
    for r in rows:
        if r["budget_s"] in ref and r["path"] != "reference loop":
            print(f"{r['path']} at {r['budget_s']:.0f} s: {r['bits_per_byte'] / ref[r['budget_s']]:.3f}x the reference loop")
    assert all(math.isfinite(r["bits_per_byte"]) for r in rows)


if __name__ == "__main__":
    main()
