"""compare(): finished runs side by side, as a table of their key settings and final metrics, and one plot of their
eval bits/byte against tokens and against training seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..train.card import read_run
from ..utils.figures import is_our_figure, new_axes, save_figure
from ..utils.stats import format_mean_ci, format_p, mean_ci, welch_p

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
    """One row per run folder (``COLUMNS``; a value the run did not record is None; a folder named twice counts
    once), and, with ``plot``, a PNG of their eval bits/byte against tokens seen and against training seconds."""
    run_dirs = distinct(run_dirs)
    if not run_dirs:
        raise ValueError("compare() needs at least one run folder.")
    rows = [run_row(d) for d in run_dirs]
    if plot is not None:
        plot_runs(run_dirs, plot)
    return rows


def distinct(run_dirs: list[str | Path]) -> list[str | Path]:
    """``run_dirs`` with each folder once (two spellings of one path count once), in order."""
    return list({Path(d).resolve(): d for d in run_dirs}.values())


def plot_runs(run_dirs: list[str | Path], path: str | Path) -> None:
    """``plot_curves`` of these runs' evaluations, each labelled by its folder."""
    plot_curves({str(d): eval_curve(d) for d in distinct(run_dirs)}, Path(path))


def run_row(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's key settings and final metrics, from its run.json; ``vocab_size`` is the tokenizer's real
    size."""
    record = read_run(run_dir)
    cfg, metrics = record["config"], record["metrics"]
    row = {"run": str(run_dir), "vocab_size": record["run"]["tokenizer"]["vocab_size"]}
    for column in COLUMNS:
        row.setdefault(column, metrics.get(column, cfg.get(column)))
    return row


GROUP_METRICS = ("eval_bits_per_byte", "eval_loss")


def group_runs(run_dirs: list[str | Path], by: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Runs grouped by the resolved settings ``by`` (run.json config fields, or ``model_config`` fields): per group,
    n, the mean ± 95% CI (Student t) of eval bits/byte and eval loss, and Welch's p against the first group. Also
    returns warnings (runs with different tokenizers: their eval_loss does not compare, their bits/byte does)."""
    run_dirs = distinct(run_dirs)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    origins = {}
    for run_dir in run_dirs:
        record = read_run(run_dir)
        cfg = record["config"]
        known = {**cfg.get("model_config", {}), **cfg}
        missing = [name for name in by if name not in known]
        if missing:
            raise ValueError(f"{run_dir} records no setting {missing[0]!r}; group by fields of its run.json config.")
        groups.setdefault(tuple(_hashable(known[name]) for name in by), []).append(record["metrics"])
        tokenizer = record["run"]["tokenizer"]
        origins[str(run_dir)] = (tokenizer["origin"], tokenizer["vocab_size"])
    warnings = []
    if len(set(origins.values())) > 1:
        listed = "; ".join(f"{run}: {origin} ({size:,} tokens)" for run, (origin, size) in origins.items())
        warnings.append(f"the runs use different tokenizers, so eval_loss does not compare across them (bits/byte "
                        f"does): {listed}")
    first = next(iter(groups.values()))
    rows = [{**dict(zip(by, key)), **summarize(members, first)} for key, members in groups.items()]
    return rows, warnings


def summarize(members: list[dict[str, Any]], reference: list[dict[str, Any]],
              metrics: tuple[str, ...] = GROUP_METRICS) -> dict[str, Any]:
    """``n`` and, per metric of these runs' metrics (``GROUP_METRICS`` unless named): the mean, the 95% CI half-width
    and Welch's p against ``reference`` (numbers, for CSV), and the same as text (``1.2345 ± 0.0100``, ``p=0.03``, for
    markdown)."""
    row: dict[str, Any] = {"n": len(members)}
    for metric in metrics:
        values = [m[metric] for m in members]
        row[f"{metric}_mean"], row[f"{metric}_ci95"] = mean_ci(values)
        p = welch_p(values, [m[metric] for m in reference]) if members is not reference else None
        row[f"{metric}_p"], row[metric], row[f"{metric} p"] = p, format_mean_ci(values), format_p(p)
    return row


def group_columns(by: list[str] | tuple[str, ...], csv: bool) -> tuple[str, ...]:
    """The columns of a grouped table: numbers for CSV, ``mean ± CI`` and ``p=`` text for markdown."""
    parts = ("_mean", "_ci95", "_p") if csv else ("", " p")
    return (*by, "n", *(metric + part for metric in GROUP_METRICS for part in parts))


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def eval_curve(run_dir: str | Path) -> list[dict[str, float]]:
    """The run's evaluations in order: ``tokens``, ``seconds`` (training time) and ``bits_per_byte`` at each."""
    read_run(run_dir)  # a run of this tinypretrain, or one clear message
    return [
        {"tokens": log["num_input_tokens_seen"], "seconds": log["train_seconds"], "bits_per_byte": log["eval_bits_per_byte"]}
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
        by_seconds.plot([p["seconds"] for p in points], [p["bits_per_byte"] for p in points], marker=".", label=label)
    for ax, xlabel in ((by_tokens, "tokens seen"), (by_seconds, "training seconds")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("eval bits per byte")
        ax.grid(alpha=0.3)
    by_tokens.legend(fontsize="small")
    save_figure(fig, path)
