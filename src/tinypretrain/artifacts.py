"""What a finished run leaves for people: the final model folder, samples, the loss plot and run.json."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, Trainer

from .generate import generate
from .io import atomic_write_bytes, atomic_write_json, atomic_write_text

SAMPLE_PROMPTS = ("", "Once upon a time", "One day, a little girl named Lily", "Tom and his dog")


def save_final(trainer: Trainer, tokenizer: Any, out: Path) -> None:
    """Save the model and tokenizer into ``out`` so that every file there is always whole."""
    # Save into a scratch folder, then move each file into place. Every rank calls save_model (FSDP gathers the
    # weights collectively); only the main process writes.
    scratch = out / ".final"
    trainer.save_model(str(scratch))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(scratch)
        for item in scratch.iterdir():
            if item.name != "training_args.bin":
                os.replace(item, out / item.name)
        shutil.rmtree(scratch)
    trainer.accelerator.wait_for_everyone()


def write_samples(model: PreTrainedModel, tokenizer: Any, count: int, max_new_tokens: int, seed: int, path: Path) -> None:
    """``count`` seeded stories from fixed prompts, as markdown."""
    prompts = [SAMPLE_PROMPTS[i % len(SAMPLE_PROMPTS)] for i in range(count)]
    stories = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
    body = "\n\n".join(f"## Prompt: {p!r}\n\n{s}" for p, s in zip(prompts, stories))
    atomic_write_text(path, f"# Samples\n\n{body}\n")


def new_axes() -> tuple[Any, Any]:
    """A figure and axes drawn off-screen (no display needed), for ``save_figure``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4))


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as a PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())


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

    from . import __version__

    return {
        "tinypretrain": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "accelerate": accelerate.__version__,
        "python": sys.version.split()[0],
    }


def write_run_record(out: Path, config: dict[str, Any], metrics: dict[str, Any], history: list[dict]) -> None:
    """run.json (resolved config, versions, metrics), metrics.jsonl (every log line) and loss.png."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    plot_losses(history, out / "loss.png")
    atomic_write_json(out / "run.json", {"config": config, "versions": versions(), "metrics": metrics})
