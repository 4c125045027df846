"""Shared benchmark plumbing: data and tokenizer discovery, step timing, machine facts, table output."""

from __future__ import annotations

import multiprocessing
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from seed_recipe import seed_model, seed_tokenize, seed_tokenizer, seed_trainer, seed_training_args
from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback

import tinypretrain as tp
from tinypretrain.data.load import read_eot_text
from tinypretrain.utils.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinystories"
CACHE = Path(os.environ.get("TINYPRETRAIN_CACHE", Path.home() / ".cache" / "tinypretrain"))


def tokenizer_for(data: Path, tokenizer: str | None, vocab_size: int = 32000) -> str:
    """A tokenizer path: the one given, else a byte-level BPE trained once on the data's train split and cached."""
    if tokenizer:
        return tokenizer
    path = CACHE / f"bpe-{vocab_size}-{data.name}"
    if not (path / "tokenizer.json").exists():
        tp.train_tokenizer(data, vocab_size=vocab_size, save_dir=path)
    return str(path)


class StepTimer(TrainerCallback):
    """Wall time and real tokens of the steps after ``warmup`` (compilation and first-batch costs excluded).

    Real tokens per step come from ``real_tokens`` (a per-step list, for padded batches) or, for packed blocks,
    from the batch shape Trainer resolved: rows per step x ``block_length``.
    """

    def __init__(self, warmup: int, real_tokens: list[int] | None = None, block_length: int | None = None) -> None:
        self.warmup, self.real_tokens, self.block_length = warmup, real_tokens, block_length
        self.rows_per_step = 0
        self.start = self.end = None
        self.steps = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        if state.global_step == self.warmup:
            self.start = now
        elif state.global_step > self.warmup:
            self.end, self.steps = now, state.global_step - self.warmup

    def tokens(self, first: int, last: int) -> int:
        """Real tokens of steps ``first+1 .. last``."""
        if self.real_tokens is not None:
            return sum(self.real_tokens[first:last])
        return (last - first) * self.rows_per_step * self.block_length

    def tokens_per_s(self) -> float:
        return self.tokens(self.warmup, self.warmup + self.steps) / (self.end - self.start)


class CountingCollator:
    """Wraps a collator and records the real (attention-mask) tokens of every batch, in order."""

    def __init__(self, collate: Any) -> None:
        self.collate, self.real, self.slots = collate, [], []

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collate(features)
        self.real.append(int(batch["attention_mask"].sum()))
        self.slots.append(batch["attention_mask"].numel())
        return batch


def seed_recipe_trainer(
    train_texts: Any, tokenizer: Any, output_dir: str, **args: Any
) -> tuple[Trainer, CountingCollator]:
    """The seed recipe's Trainer on ``train_texts``, its collator wrapped to count real tokens, evaluation and
    checkpoints off so only its training loop is measured. Add a timing callback, then ``train()``."""
    stok = seed_tokenizer(tokenizer)
    collator = CountingCollator(DataCollatorForLanguageModeling(stok, mlm=False))
    quiet = {"eval_strategy": "no", "save_strategy": "no", "logging_steps": 10**6, "dataloader_num_workers": 0}
    training_args = seed_training_args(output_dir, **{**quiet, **args})
    train = seed_tokenize(train_texts, stok, num_proc=None)
    return seed_trainer(seed_model(), stok, train, None, training_args, data_collator=collator), collator


def benchmark_config(data: Path, tokenizer: str, **fields: Any) -> tp.PretrainConfig:
    """A pretrain() config on ``data`` with the benchmark tokenizer; the model keeps the seed's 32k embeddings."""
    return tp.PretrainConfig(dataset=str(data), tokenizer=tokenizer, model_overrides={"vocab_size": 32000}, **fields)


def pretrain_training_only(cfg: tp.PretrainConfig, output_dir: str, callback: TrainerCallback) -> None:
    """pretrain() with evaluation, checkpoints and samples off, so ``callback`` sees only the training loop."""
    tp.pretrain(
        cfg,
        output_dir=output_dir,
        eval_steps=10**9,
        save_steps=10**9,
        max_eval_samples=4,
        num_samples=0,
        callbacks=[callback],
    )


def peak_memory_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def machine() -> dict[str, Any]:
    from tinypretrain.utils.cpu import cpu_features

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    cpu = cpu_features()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": gpu or f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "cpu": cpu["model"],
        "cpu_kind": cpu["kind"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def in_fresh_process(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a new Python process (spawned, not forked), so that nothing one timed run leaves behind
    in this process (dynamo's traces, allocator and thread-pool state) can speed or slow the next."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def eot_text(stories: list[str]) -> str:
    """``stories`` as a .txt corpus in TinyStories' layout (each followed by an ``<|endoftext|>`` line), as
    ``tinypretrain.data.load.read_eot_text`` reads it."""
    return "".join(f"{s}\n<|endoftext|>\n" for s in stories)


def stories_in(path: Path) -> list[str]:
    """The non-blank stories of an ``<|endoftext|>``-separated file."""
    return [row["text"] for row in read_eot_text([str(path)]) if row["text"].strip()]


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print ``rows`` as the markdown table RESULTS.md quotes (tinypretrain's one table writer)."""
    print(markdown_table(rows, columns), end="", flush=True)


def run_cli(*args: str, env: dict[str, str] | None = None) -> None:
    """``tinypretrain ARGS`` in a fresh process, quietly, as a user runs it (an error fails the benchmark)."""
    subprocess.run([sys.executable, "-m", "tinypretrain", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=env)


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        from tinypretrain.utils.io import atomic_write_json

        atomic_write_json(path, payload)
        print(f"wrote {path}")


def parse_variant(spec: str, config_class: type = tp.PretrainConfig) -> tuple[str, dict[str, Any]]:
    """``"name:field=value,field=value"`` -> (name, overrides of ``config_class``), values typed by the field."""
    from tinypretrain.config.fields import coerce

    name, _, assignments = spec.partition(":")
    overrides: dict[str, Any] = {}
    for item in filter(None, assignments.split(",")):
        key, _, value = item.partition("=")
        if key not in config_class.__dataclass_fields__:
            raise SystemExit(f"Unknown {config_class.__name__} field {key!r} in --variant {spec!r}.")
        overrides[key] = coerce(config_class, key, value)
    return name, overrides
