"""compare(): finished runs side by side, as a table of their key settings and final metrics, and one plot of their
eval bits/byte against tokens and against training seconds."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .artifacts import is_our_figure, new_axes, save_figure
from .card import read_run

COLUMNS = (
    "run",
    "preset",
    "parameters",
    "vocab_size",
    "max_length",
    "global_batch_size",
    "learning_rate",
    "lr_scheduler_type",
    "max_time",
    "train_steps",
    "tokens_seen",
    "train_seconds",
    "eval_loss",
    "eval_bits_per_byte",
    "eval_eos_rate",
    "eval_repeat_4gram",
    "eval_distinct_2",
    "eval_name_consistency",
    "eval_mean_words",
)


def compare(run_dirs: list[str | Path], plot: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per run folder (``COLUMNS``; a value the run did not record is None), and, with ``plot``, a PNG of
    their eval bits/byte against tokens seen and against training seconds."""
    if not run_dirs:
        raise ValueError("compare() needs at least one run folder.")
    rows = [run_row(d) for d in run_dirs]
    if plot is not None:
        plot_curves({row["run"]: eval_curve(d) for row, d in zip(rows, run_dirs)}, Path(plot))
    return rows


def run_row(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's key settings and final metrics, from its run.json."""
    record = read_run(run_dir)
    cfg, metrics = record["config"], record["metrics"]
    row = {"run": str(run_dir), "vocab_size": cfg["model_config"]["vocab_size"]}
    for column in COLUMNS:
        row.setdefault(column, metrics.get(column, cfg.get(column)))
    return row


def eval_curve(run_dir: str | Path) -> list[dict[str, float]]:
    """The run's evaluations in order: ``tokens``, ``seconds`` (training time) and ``bits_per_byte`` at each."""
    record = read_run(run_dir)
    tokens_per_step = record["metrics"]["tokens_seen"] / max(record["metrics"]["train_steps"], 1)
    return [
        {
            # Runs before tinypretrain logged tokens with evaluations: the run's average tokens per step.
            "tokens": log.get("num_input_tokens_seen", log["step"] * tokens_per_step),
            "seconds": log.get("train_seconds"),
            "bits_per_byte": log["eval_bits_per_byte"],
        }
        for log in _read_log(Path(run_dir) / "metrics.jsonl")
        if "eval_bits_per_byte" in log
    ]


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ValueError(f"{path} is missing; the plot needs every run's log (put it back, or leave that run out).")
    logs = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            logs.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number} is not valid JSON ({err}); it was changed after the run.") from None
    return logs


def plot_curves(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Overlay each run's eval bits/byte against tokens (left) and training seconds (right) in one PNG. Refuses to
    replace a file that is not a tinypretrain figure."""
    if path.suffix.lower() != ".png" or path.is_dir():
        raise ValueError(f"The plot is a PNG: pass a file path ending in .png, not {str(path)!r}.")
    if path.exists() and not is_our_figure(path):
        raise ValueError(f"{path} exists and is not a figure tinypretrain wrote; pass another --plot path.")
    fig, (by_tokens, by_seconds) = new_axes(ncols=2)
    for name, points in curves.items():
        label = Path(name).name
        by_tokens.plot([p["tokens"] for p in points], [p["bits_per_byte"] for p in points], marker=".", label=label)
        timed = [p for p in points if p["seconds"] is not None]
        by_seconds.plot([p["seconds"] for p in timed], [p["bits_per_byte"] for p in timed], marker=".", label=label)
    for ax, xlabel in ((by_tokens, "tokens seen"), (by_seconds, "training seconds")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("eval bits per byte")
        ax.grid(alpha=0.3)
    by_tokens.legend(fontsize="small")
    save_figure(fig, path)


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    """``rows`` as a markdown table of ``columns``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    """``rows`` as CSV of ``columns`` (full precision)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
