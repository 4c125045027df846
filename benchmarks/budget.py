"""Quality for a time budget on this machine: bits/byte after B seconds of training for the seed recipe, llama2.c's
own train.py recipe (`llama2c_reference`: its model, init, tokenizer kind, data order and optimiser) and
pretrain(max_time=B) variants, each with --seeds seeds, one after the other and each in a fresh process (run it on an
idle machine), with the curve of bits/byte against training seconds and the seconds each path needs to reach the seed
recipe's one-epoch quality (1.383 bits/byte). The summary gives each path's mean ± 95% CI, its ratio to llama2.c's
and Welch's p, and the same against the first --variant (the one the others are measured against).

    python benchmarks/budget.py --budgets 60 300 --seeds 3 --score_on valid --json benchmarks/results/budget.json

Scores come from a selection split held out of train.txt (the last --selection stories), never from valid.txt,
unless --score_on valid is given (for the final report only). --also_valid adds each run's valid.txt score as a
column of its own (a final report beside the selection scores that decide; the curves stay on the selection).
Curves are evaluated on the first 500 scored stories (the seed recipe's on the first 100, at 6 points: its 20M model
is slow to score on CPU) with the clock paused; the final score uses all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    CACHE,
    DEFAULT_DATA,
    eot_text,
    in_fresh_process,
    machine,
    parse_variant,
    print_table,
    seed_recipe_trainer,
    stories_in,
    tokenizer_for,
    write_json,
)
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback

import tinypretrain as tp
from tinypretrain.data.load import read_eot_text
from tinypretrain.train.clock import TrainingClock

DEFAULT_VARIANTS = ["defaults:"]
SEED_ONE_EPOCH_BPB = 1.383  # the seed recipe after one epoch of train.txt, in 1,469 s (RESULTS.md, run 7)
CURVE_POINTS = 20
COLUMNS = ["budget_s", "path", "seed", "steps", "bits_per_byte", "valid_bits_per_byte", "seconds_to_seed_epoch",
           "load_1m"]
SUMMARY_COLUMNS = ["budget_s", "path", "n", "bits_per_byte", "ratio_to_llama2c", "p_vs_llama2c", "ratio_to_first",
                   "p_vs_first", "seconds_to_seed_epoch", "time_ratio_to_llama2c", "time_p_vs_first"]
REFERENCE = "llama2.c"
BASELINES = (REFERENCE, "seed recipe")


def split_stories(data: Path, selection: int, score_on: str) -> tuple[Path, list[str]]:
    """A dataset folder whose train split excludes the selection stories, and the texts to score on."""
    stories = stories_in(data / "train.txt")
    folder = Path(tempfile.mkdtemp(prefix="budget-data-"))
    (folder / "train.txt").write_text(eot_text(stories[:-selection]))
    if score_on == "valid":
        scored = stories_in(data / "valid.txt")
    else:
        scored = stories[-selection:]
    (folder / "validation.txt").write_text(eot_text(scored[:500]))
    return folder, scored


class Curve:
    """Bits/byte of the first ``stories`` scored stories at every 1/``points`` of the budget, with the clock paused."""

    def __init__(self, texts: list[str], budget_s: float, points: int, stories: int = 500) -> None:
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


def llama2c_tokenizer(train_dir: Path, vocab_size: int = 4096) -> Any:
    """llama2.c's tokenizer: a SentencePiece BPE trained on the train split with `tinystories.py train_vocab`'s
    options (byte fallback, split digits, identity normalization), cached; as a transformers LlamaTokenizer, whose
    "EOS" is BOS: llama2.c starts every story with BOS and never writes EOS, so BOS is its story boundary."""
    import hashlib

    import sentencepiece as spm
    from transformers import LlamaTokenizer

    stories = [r["text"].strip() for r in read_eot_text([str(train_dir / "train.txt")])]
    digest = hashlib.blake2b("\n".join(stories).encode(), digest_size=8).hexdigest()
    folder = CACHE / f"llama2c-sp{vocab_size}-{digest}"
    if not (folder / "tokenizer.model").exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "input.txt").write_text("".join(f"{text}\n" for text in stories))
        spm.SentencePieceTrainer.train(
            input=str(folder / "input.txt"), model_prefix=str(folder / "tokenizer"), model_type="bpe",
            vocab_size=vocab_size, self_test_sample_size=0, input_format="text", character_coverage=1.0,
            num_threads=os.cpu_count(), split_digits=True, allow_whitespace_only_pieces=True, byte_fallback=True,
            unk_surface=r" \342\201\207 ", normalization_rule_name="identity", minloglevel=2)
    tokenizer = LlamaTokenizer.from_pretrained(str(folder))
    tokenizer.eos_token = tokenizer.bos_token
    tokenizer.pad_token = tokenizer.bos_token
    return tokenizer


def llama2c_reference(train_dir: Path, curve: Curve, seed: int = 0) -> tuple:
    """karpathy/llama2.c's train.py recipe (commit 350e04fe), stopped by the clock: dim 128, 4 layers, 4 heads, 2 KV
    heads, FFN multiple_of 4 (344), tied embeddings, normal(0.02) init with w3 and wo scaled by 1/sqrt(2 layers), its
    4k SentencePiece BPE, batches of 8 non-overlapping 256-token chunks of the BOS-separated token stream in shuffled
    order (reshuffled each pass), AdamW lr 1e-3 (decay 0.01 on matrices only, betas 0.9/0.99), 20 warmup iterations,
    then cosine to 0 at the deadline, grad clip 1.0, fp32, no compile. Returns the model, tokenizer and steps."""
    torch.manual_seed(seed)
    tokenizer = llama2c_tokenizer(train_dir)
    stories = [r["text"].strip() for r in read_eot_text([str(train_dir / "train.txt")])]
    bos = tokenizer.bos_token_id
    stream = np.concatenate([np.array([bos, *ids]) for ids in
                             tokenizer(stories, add_special_tokens=False)["input_ids"]]).astype(np.int64)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                         tie_word_embeddings=True, bos_token_id=bos, eos_token_id=bos, pad_token_id=bos)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 2:
                scaled = name.endswith(("mlp.up_proj.weight", "self_attn.o_proj.weight"))  # llama2.c's w3, wo
                parameter.normal_(0.0, 0.02 / math.sqrt(2 * config.num_hidden_layers) if scaled else 0.02)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.99))
    length, batch_size, warmup = 256, 8, 20
    rng, order, steps = np.random.default_rng(seed), [], 0
    curve.clock.start()
    while not curve.tick(model, tokenizer):
        if steps < warmup:
            lr = 1e-3 * steps / warmup
        else:
            lr = 1e-3 * 0.5 * (1 + math.cos(math.pi * min(1.0, curve.clock.seconds() / curve.budget_s)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        if len(order) < batch_size:  # a new pass over the chunks, in a new order
            order += list(rng.permutation(len(stream) // length - 1))
        chunks, order = order[:batch_size], order[batch_size:]
        batch = torch.from_numpy(np.stack([stream[c * length : c * length + length + 1] for c in chunks]))
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
    return model, tokenizer, steps


@contextlib.contextmanager
def inductor_cache(kind: str):
    """With ``kind="cold"``, a run whose torch.compile starts from nothing: dynamo's traces dropped and an empty
    inductor cache (torch's private ``temporary_cache_dir``, which also clears inductor's in-memory caches)."""
    if kind == "warm":
        yield
        return
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    torch._dynamo.reset()
    with tempfile.TemporaryDirectory(prefix="inductor-") as folder, temporary_cache_dir(folder):
        yield


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


def time_ratio(reached: list[float], ref_reached: list[float], bound: bool, ref_bound: bool) -> float | str | None:
    """Mean seconds to the seed's quality against llama2.c's. A time read at a curve's first point is only an upper
    bound (the run may have got there sooner), so a ratio with one is marked as a bound, or None when both are."""
    if not (reached and ref_reached) or (bound and ref_bound):
        return None
    ratio = round(float(np.mean(reached) / np.mean(ref_reached)), 3)
    return f"≤ {ratio}" if bound else f"≥ {ratio}" if ref_bound else ratio


def summarize_paths(rows: list[dict], score: str = "bits_per_byte") -> list[dict]:
    """Per budget and path: seeds, the ``score`` column's mean ± 95% CI, its ratio to llama2.c's mean with Welch's p,
    the same against the first variant of ours (the one the others are measured against), and the mean seconds to the
    seed's one-epoch quality (with how many seeds reached it, its ratio to llama2.c's and Welch's p against the first
    variant's)."""
    from tinypretrain.utils.stats import format_mean_ci, format_p, mean_ci, welch_p

    def of(budget: float, name: str | None, column: str) -> list:
        return [r[column] for r in rows if (r["budget_s"], r["path"]) == (budget, name) and r[column] is not None]

    def at_first_point(budget: float, name: str | None) -> bool:  # a time read there is only an upper bound
        return any(curve and curve[0][1] <= SEED_ONE_EPOCH_BPB for curve in of(budget, name, "curve"))

    summary = []
    for budget, name in dict.fromkeys((r["budget_s"], r["path"]) for r in rows):
        first = next((r["path"] for r in rows if r["budget_s"] == budget and r["path"] not in BASELINES), None)
        values, ref, base = of(budget, name, score), of(budget, REFERENCE, score), of(budget, first, score)
        reached, ref_reached = of(budget, name, "seconds_to_seed_epoch"), of(budget, REFERENCE, "seconds_to_seed_epoch")
        compared = name not in BASELINES and name != first
        bound, ref_bound = at_first_point(budget, name), at_first_point(budget, REFERENCE)
        summary.append({
            "budget_s": budget, "path": name, "n": len(values), score: format_mean_ci(values),
            "ratio_to_llama2c": round(mean_ci(values)[0] / mean_ci(ref)[0], 3) if ref else None,
            "p_vs_llama2c": format_p(welch_p(values, ref)) if ref and name != REFERENCE else "",
            "ratio_to_first": round(mean_ci(values)[0] / mean_ci(base)[0], 3) if compared else None,
            "p_vs_first": format_p(welch_p(values, base)) if compared else "",
            "seconds_to_seed_epoch": f"{'≤ ' * bound}{np.mean(reached):.0f} ({len(reached)}/{len(values)})"
            if reached else "never",
            "time_ratio_to_llama2c": time_ratio(reached, ref_reached, bound, ref_bound),
            "time_p_vs_first": format_p(welch_p(reached, of(budget, first, "seconds_to_seed_epoch"))) if compared else "",
        })
    return summary


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


def one_run(budget: float, k: int, name: str, overrides: dict | str, train_dir: Path, scored: list[str],
            valid: list[str] | None, curve_points: int, compile_cache: str) -> dict[str, Any]:
    """One path's run for ``budget`` seconds with seed ``k``, scored: a row of the table (main runs each in a fresh
    process)."""
    load = os.getloadavg()[0]
    curve, samples = Curve(scored, budget, curve_points), None
    if overrides == "seed":  # its 20M model at 2,048 tokens takes ~30 s per 500-story curve point on CPU
        curve = Curve(scored, budget, points=6, stories=100)
        model, tok, steps = seed_recipe(train_dir, tokenizer_for(train_dir, None), curve)
        points = curve.points
    elif overrides == "reference":
        model, tok, steps = llama2c_reference(train_dir, curve, seed=k)
        points = curve.points
    else:
        out = Path(tempfile.mkdtemp(prefix="budget-run-"))
        # pretrain() makes its own tokenizer (its vocabulary is part of the defaults), outside the budget. No story
        # metrics at each curve point: nothing here reads them, and sampling, seeded in a forked RNG with the clock
        # paused, changes no training step; it only cost wall time.
        with inductor_cache(compile_cache):
            result = tp.pretrain(dataset=str(train_dir), max_time=budget, output_dir=str(out), num_samples=3,
                                 report_to="none", disable_tqdm=True, eval_steps=1 / curve_points,
                                 **{"seed": 3407 + k, "story_samples": 0, **overrides})
        model, tok, steps = result.model, result.tokenizer, result.metrics["train_steps"]
        points = pretrain_curve(out)
        samples = (out / "samples.md").read_text(encoding="utf-8")
    score = tp.evaluate(model, tok, scored)
    return {"budget_s": budget, "path": name, "seed": k, "overrides": overrides, "steps": steps,
            "bits_per_byte": score["bits_per_byte"], "loss": score["loss"],
            "valid_bits_per_byte": tp.evaluate(model, tok, valid)["bits_per_byte"] if valid else None,
            "seconds_to_seed_epoch": seconds_to(points, SEED_ONE_EPOCH_BPB), "load_1m": load, "curve": points,
            "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budgets", type=float, nargs="+", default=[60.0, 300.0])
    parser.add_argument("--variant", action="append", help="name:field=value,... (PretrainConfig fields)")
    parser.add_argument("--no_reference", action="store_true", help="Leave out llama2.c's recipe.")
    parser.add_argument("--seeds", type=int, default=1, help="Seeds per path (llama2.c: 0, 1, ...; ours: 3407, ...).")
    parser.add_argument("--first_seed", type=int, default=0,
                        help="Start at this seed index, to add seeds to an earlier run's (llama2.c: K, ...; ours: 3407+K).")
    parser.add_argument("--seed_recipe", action="store_true", help="Also run the seed recipe (20M model, 32k BPE).")
    parser.add_argument("--selection", type=int, default=500, help="Stories held out of train.txt for scoring.")
    parser.add_argument("--score_on", choices=["selection", "valid"], default="selection")
    parser.add_argument("--also_valid", action="store_true", help="Also score every run on valid.txt (final report).")
    parser.add_argument("--curve_points", type=int, default=CURVE_POINTS,
                        help="Curve points per run (each a 500-story evaluation, off the clock but not free).")
    parser.add_argument("--compile_cache", choices=["cold", "warm"], default="cold",
                        help="cold: each compiled run starts from an empty inductor cache, as a machine's first compiled "
                        "run does (its compile counts against the budget); warm: runs share torch's cache folder.")
    parser.add_argument("--json")
    parser.add_argument("--write_split", type=Path, help="Only write the train/selection folder here (for sweeps).")
    args = parser.parse_args()
    if not (args.data / "train.txt").exists():
        raise SystemExit(f"{args.data}/train.txt not found: pass --data")
    train_dir, scored = split_stories(args.data, args.selection, args.score_on)
    valid = stories_in(args.data / "valid.txt") if args.also_valid else None
    if args.write_split:
        shutil.copytree(train_dir, args.write_split)
        return
    rows = []
    about = {"scored_on": args.score_on, "stories": len(scored), "compile_cache": args.compile_cache}
    paths = [("seed recipe", "seed")] if args.seed_recipe else []
    paths += [] if args.no_reference else [(REFERENCE, "reference")]
    paths += [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for budget, k, (name, overrides) in itertools.product(args.budgets, seeds, paths):
        rows.append(in_fresh_process(one_run, budget, k, name, overrides, train_dir, scored, valid, args.curve_points,
                                     args.compile_cache))
        print_table(rows[-1:], COLUMNS)
        write_json(args.json, {"machine": machine(), **about, "rows": rows})
        if args.json:
            plot(rows, Path(args.json).with_suffix(".png"))
    print_table(rows, COLUMNS)
    summary = summarize_paths(rows)
    print_table(summary, SUMMARY_COLUMNS)
    valid_summary = summarize_paths(rows, "valid_bits_per_byte") if valid else None
    if valid_summary:
        print_table(valid_summary, [c.replace("bits_per_byte", "valid_bits_per_byte") for c in SUMMARY_COLUMNS])
    write_json(args.json, {"machine": machine(), **about, "rows": rows, "summary": summary,
                           "valid_summary": valid_summary})
    assert all(math.isfinite(r["bits_per_byte"]) for r in rows)


if __name__ == "__main__":
    main()
