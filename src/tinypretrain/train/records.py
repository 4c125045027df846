"""What a finished run leaves for people: the final model folder, samples, the loss plot and run.json."""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, Trainer

from ..config.pretrain import PretrainConfig
from ..config.settings import NOT_REPRODUCED
from ..config.sft import SFTConfig
from ..data.pack import token_fingerprint
from ..data.prepare import RunTexts
from ..data.stream import BlockStream
from ..model.build import count_parameters, load_model
from ..model.evaluate import STORY_METRICS
from ..model.generate import generate
from ..model.instructions import instruction_score
from ..utils.cpu import cpu_features
from ..utils.figures import new_axes, save_figure
from ..utils.io import atomic_write_json, atomic_write_text, open_file_mode
from ..version import __version__

# The layout of run.json; a folder whose record has another is refused with one message (train/card.py: read_run).
RECORD_FORMAT = 1
SAMPLE_PROMPTS = ("", "Once upon a time", "One day, a little girl named Lily", "Tom and his dog")


def save_final(trainer: Trainer, tokenizer: Any, out: Path) -> None:
    """Save the model and tokenizer into ``out`` so that every file there is always whole."""
    # Save into a scratch folder, then move each file into place. Every rank calls save_model (FSDP gathers the
    # weights collectively); only the main process writes.
    scratch = out / ".final"
    trainer.save_model(str(scratch))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(scratch)
        mode = open_file_mode(out)
        for item in scratch.iterdir():
            if item.name != "training_args.bin":
                if item.is_file():
                    os.chmod(item, mode)  # safetensors writes the weights 0600
                os.replace(item, out / item.name)
        shutil.rmtree(scratch)
    trainer.accelerator.wait_for_everyone()


def run_metrics(trainer: Trainer, final: dict[str, float], process_train_loss: float, peak_memory_mb: float
                ) -> dict[str, Any]:
    """The run's metrics, over every process that trained it (a resumed run counts what earlier ones did), from a
    finished ``PretrainTrainer`` and its ``final`` evaluation."""
    args, clock = trainer.args, trainer.clock
    tokens = int(trainer.state.num_input_tokens_seen)
    train_seconds = clock.seconds()
    wall = clock.wall_seconds()
    return {
        "eval_loss": final["eval_loss"],
        "eval_perplexity": final["eval_perplexity"],
        "eval_bits_per_byte": final["eval_bits_per_byte"],
        "train_loss": run_train_loss(trainer.state.log_history, process_train_loss),
        "train_steps": trainer.state.global_step,
        "world_size": args.world_size,
        "global_batch_size": args.global_batch_size,
        "tokens_seen": tokens,
        "train_tokens_per_s": tokens / train_seconds if train_seconds else 0.0,
        "train_seconds": train_seconds,
        "wall_time_s": wall,
        "outside_training_s": max(0.0, wall - train_seconds),
        "peak_memory_mb": peak_memory_mb,
        "parameters": count_parameters(trainer.model).total,
        **{name: value for name, value in final.items() if name.removeprefix("eval_") in STORY_METRICS},
    }


def run_train_loss(history: list[dict[str, Any]], fallback: float) -> float:
    """The training loss of the whole run, weighted by tokens: each logged loss (a mean over its logging window)
    counts by the tokens of its window. Every checkpoint and the last step log one, so the windows cover every step
    of every process. ``fallback`` (Trainer's own, this process only) when nothing was logged."""
    weighted = tokens = previous = 0
    for log in history:
        if "loss" in log and "num_input_tokens_seen" in log:
            window = log["num_input_tokens_seen"] - previous
            weighted, tokens, previous = weighted + log["loss"] * window, tokens + window, log["num_input_tokens_seen"]
    return weighted / tokens if tokens else fallback


def write_samples(
    model: PreTrainedModel, tokenizer: Any, count: int, max_new_tokens: int, seed: int, path: Path,
    prompts: Sequence[str] = SAMPLE_PROMPTS,
) -> list[dict[str, str]]:
    """``count`` seeded stories from ``prompts`` (in turn), written as markdown and returned as ``{prompt, story}``."""
    prompts = [prompts[i % len(prompts)] for i in range(count)]
    stories = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
    body = "\n\n".join(f"## Prompt: {p!r}\n\n{s}" for p, s in zip(prompts, stories))
    atomic_write_text(path, f"# Samples\n\n{body}\n")
    return [{"prompt": p, "story": s} for p, s in zip(prompts, stories)]








def plot_losses(history: list[dict[str, Any]], path: Path) -> None:
    """Train and eval loss against steps, as a PNG."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    fig, ax = new_axes()
    for points, label in ((train, "train loss"), (evals, "eval loss (per story)")):
        if points:
            ax.plot(*zip(*points), marker="." if label.startswith("eval") else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("nats / token")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def versions() -> dict[str, str]:
    """The versions that produced a run, for run.json and bug reports."""
    import accelerate
    import datasets
    import transformers

    return {
        "tinypretrain": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "accelerate": accelerate.__version__,
        "python": sys.version.split()[0],
    }


def write_run_record(
    out: Path, settings: dict[str, Any], metrics: dict[str, Any], history: list[dict], description: dict[str, Any]
) -> None:
    """run.json (``settings``: the resolved config, its sources, fingerprint and compute; then versions, metrics and
    the run's description), metrics.jsonl (every log line) and loss.png."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    plot_losses(history, out / "loss.png")
    record = {"format": RECORD_FORMAT, **settings, "versions": versions(), "metrics": metrics, "run": description}
    atomic_write_json(out / "run.json", record)


def describe_run(cfg: PretrainConfig, model: PreTrainedModel, tokenizer: Any, texts: RunTexts, rows: Any
                 ) -> dict[str, Any]:
    """What a model card says about a run beyond its config: the command, device, parameters, data and tokenizer."""
    params = count_parameters(model)
    tokens, fingerprint = token_fingerprint(rows) if isinstance(rows, Dataset) else (None, None)  # a stream: unknown
    cuda = torch.cuda.is_available()
    return {
        "command": reproduce_command(cfg),
        "device": f"{cfg.world_size} x {torch.cuda.get_device_name() if cuda else 'CPU'}",
        "cpu": cpu_features(),
        "precision": "bf16" if cfg.bf16 else "fp16" if cfg.fp16 else "fp32",
        "parameters": {"total": params.total, "embeddings": params.embeddings, "lm_head": params.lm_head,
                       "body": params.body},
        "data": {
            "source": cfg.dataset or "the built-in story generator (tinypretrain.generate_stories)",
            "hub": cfg.dataset is not None and not Path(cfg.dataset).expanduser().exists(),
            "train_split": cfg.train_split if cfg.dataset else f"{cfg.builtin_stories} stories, seed {cfg.seed}",
            "train_texts": len(texts.train) if isinstance(texts.train, Dataset) else None,
            "train_tokens": tokens,
            "fingerprint": fingerprint,
            "eval": texts.eval_source,
            "eval_split": texts.eval_split,
            "eval_texts": len(texts.eval),
            **({"stream": {"texts_read": rows.texts_read, "resumed_at": rows.resumed_at}}
               if isinstance(rows, BlockStream) else {}),
        },
        "tokenizer": {
            "vocab_size": len(tokenizer),
            "origin": cfg.tokenizer
            or f"byte-level BPE trained by this run on its training texts (at most {cfg.vocab_size:,} asked for)",
        },
    }


def sft_record(cfg: SFTConfig, model: PreTrainedModel, tokenizer: Any, prompts: list[str], rows: Dataset
               ) -> dict[str, Any]:
    """run.json's ``sft``: the base, the instruction score of the base and of the tuned model on the same held-out
    prompts with the same seed, each part's fraction and how many prompts ask for it, the fraction of their stories
    that ended at EOS, and how many training examples had their completion cut."""
    base, _ = load_model(cfg.base)
    before, after = (instruction_score(m.to(model.device), tokenizer, prompts, seed=cfg.seed,
                                       max_new_tokens=cfg.story_max_new_tokens) for m in (base, model))
    return {
        "base": cfg.base,
        "score_before": before["score"],
        "score_after": after["score"],
        "parts": {"before": before["parts"], "after": after["parts"]},
        "asked": after["asked"],
        "ended": {"before": before["ended"], "after": after["ended"]},
        "heldout_prompts": len(prompts),
        "truncated_examples": sum(rows["truncated"]),
    }


def reproduce_command(cfg: PretrainConfig) -> str:
    """The ``tinypretrain train`` (or ``sft``) command that builds ``cfg`` again: its recipe, every training field you gave, and
    the budget's choices (they depend on the device). Fields left to the device and the defaults stay so."""
    words = ["tinypretrain", cfg.COMMAND, *(["--recipe", cfg.recipe] if cfg.recipe else [])]
    for name, value in cfg.to_fields().items():
        if name not in NOT_REPRODUCED and cfg.sources.get(name) in ("explicit", "budget"):
            words += [f"--{name}", *_flag_text(value)]
    return shlex.join(words)


def _flag_text(value: Any) -> list[str]:
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, dict):
        return [json.dumps(value)]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
