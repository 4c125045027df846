"""sweep(): train a grid of model shapes (and optionally vocabularies and learning rates) under equal budgets, then
tabulate, plot (the TinyStories paper's Figure 4 in bits/byte) and write the best config for each budget."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config.budget import parse_duration
from ..config.pretrain import PretrainConfig
from ..config.settings import (
    NOT_REPRODUCED,
    resolve_settings,
    settings_changes,
    settings_fingerprint,
    training_settings,
)
from ..data.prepare import load_texts
from ..data.tokenizer import train_tokenizer
from ..train.checkpoint import last_complete_checkpoint
from ..train.run import pretrain
from ..utils.figures import new_axes, save_figure
from ..utils.io import atomic_write_text
from ..utils.tables import csv_table, markdown_table
from .compare import eval_curve, group_columns, plot_curves, summarize

CELL_COLUMNS = ("cell", "budget", "preset", "vocab_size", "learning_rate", "seed", "parameters", "train_steps",
                "tokens_seen", "train_seconds", "eval_loss", "eval_bits_per_byte")
SETTINGS = ("budget", "preset", "vocab_size", "learning_rate")  # what a cell varies, besides its seed


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a shape, vocabulary, peak rate, budget and seed."""

    preset: str
    vocab_size: int | None  # None: the given tokenizer's
    learning_rate: float
    budget: str  # "60s" (time) or "5M" (tokens)
    seed: int

    @property
    def name(self) -> str:
        vocab = f"-v{self.vocab_size}" if self.vocab_size is not None else ""
        return f"{self.preset}{vocab}-lr{self.learning_rate:g}-{self.budget}-s{self.seed}"


def parse_token_budget(text: str) -> int:
    """Tokens in ``text``: a number, optionally with k/M/G, as in ``"500k"``, ``"5M"``."""
    scale = {"k": 10**3, "M": 10**6, "G": 10**9}
    number, unit = (text[:-1], text[-1]) if text[-1:] in scale else (text, "")
    try:
        tokens = int(float(number) * scale.get(unit, 1))
    except (ValueError, OverflowError):  # OverflowError: "inf"
        tokens = 0
    if tokens < 1:
        raise ValueError(f"A token budget must be a positive number with an optional k/M/G, like '5M'; got {text!r}")
    return tokens


def sweep(
    base: PretrainConfig,
    output_dir: str | Path,
    presets: list[str],
    budgets: list[str],
    *,
    budget_kind: str = "time",
    vocab_sizes: list[int] | None = None,
    learning_rates: list[float] | None = None,
    seeds: int = 1,
) -> list[dict[str, Any]]:
    """Train every cell of presets x budgets (x vocab sizes x learning rates) from ``base`` in ``output_dir``/<cell>,
    each with ``seeds`` seeds (``base.seed``, ``base.seed + 1``, ...). Budgets are times (``"60s"``, ``"5m"``) or,
    with ``budget_kind="tokens"``, token counts (``"5M"``). A rerun resumes: a finished cell is reused only when its
    recorded settings fingerprint equals the planned one (otherwise an error names what changed, unless
    ``base.overwrite_output_dir``, which retrains it). Writes cells.csv (every cell, labelled from its own run.json),
    sweep.csv and sweep.md (per setting: n and mean ± 95% CI of eval bits/byte), sweep.png, curves.png and one
    best-<budget>.yaml per budget (the best mean); returns the per-cell rows."""

    if budget_kind not in ("time", "tokens"):
        raise ValueError(f"budget_kind must be 'time' or 'tokens', got {budget_kind!r}")
    if base.tokenizer is not None and vocab_sizes:
        raise ValueError("--vocab_sizes trains one tokenizer per size, so it cannot go with --tokenizer (a fixed "
                         "vocabulary); drop one of them.")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    parse = parse_duration if budget_kind == "time" else parse_token_budget
    for budget in budgets:
        parse(budget)
    out = Path(output_dir)
    vocabs = (vocab_sizes or [base.vocab_size]) if base.tokenizer is None else [None]
    cells = [
        Cell(preset, vocab, lr, budget, base.seed + k)
        for budget, preset, vocab, lr, k in itertools.product(
            budgets, presets, vocabs, learning_rates or [base.learning_rate], range(seeds)
        )
    ]
    # One tokenizer per vocabulary, trained once for the whole sweep from training texts read once.
    train_texts = functools.cache(lambda: load_texts(base).train)
    tokenizer = functools.cache(lambda vocab_size: _shared_tokenizer(base, vocab_size, out, train_texts()))
    rows = []
    for cell in cells:
        folder = out / cell.name
        fields = _cell_fields(base, cell, budget_kind, tokenizer)
        planned = base.updated(**fields, output_dir=str(folder))
        if not _reusable(folder, planned, base.overwrite_output_dir):
            resume = last_complete_checkpoint(folder) is not None and not (folder / "run.json").exists()
            pretrain(planned, overwrite_output_dir=True, resume_from_checkpoint=True if resume else None)
        rows.append(_cell_row(folder, cell))
    _write_outputs(out, rows, base, budget_kind)
    return rows


def _reusable(folder: Path, planned: PretrainConfig, overwrite: bool) -> bool:
    """Whether ``folder`` holds a finished cell trained with exactly the planned settings."""
    record_path = folder / "run.json"
    if not record_path.exists():
        return False
    record = json.loads(record_path.read_text(encoding="utf-8"))
    settings = training_settings(resolve_settings(planned))
    if record.get("fingerprint") == settings_fingerprint(settings):
        return True
    if overwrite:
        return False
    recorded = {name: record["config"].get(name) for name in settings}
    changes = settings_changes(recorded, settings) or ["its record has no settings fingerprint"]
    raise ValueError(
        f"{folder} was trained with other settings than this sweep plans ({'; '.join(changes[:5])}). Pass "
        "--overwrite_output_dir true to retrain such cells, or use another --output_dir."
    )


def _cell_row(folder: Path, cell: Cell) -> dict[str, Any]:
    """A cell's row, labelled from what its run.json says it trained with (not from the plan)."""
    record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    config = record["config"]
    return {"cell": cell.name, "budget": cell.budget, "preset": config["preset"],
            "vocab_size": record["run"]["tokenizer"]["vocab_size"], "learning_rate": config["learning_rate"],
            "seed": config["seed"], **record["metrics"]}


def _cell_fields(base: PretrainConfig, cell: Cell, budget_kind: str, tokenizer: Callable[[int], Path]
                 ) -> dict[str, Any]:
    fields: dict[str, Any] = {"preset": cell.preset, "learning_rate": cell.learning_rate, "seed": cell.seed}
    if cell.vocab_size is not None:  # the sweep's own tokenizer of that size
        fields.update(vocab_size=cell.vocab_size, tokenizer=str(tokenizer(cell.vocab_size)))
    fields.update(budget_fields(base, cell.budget, budget_kind))
    return fields


def budget_fields(base: PretrainConfig, budget: str, budget_kind: str) -> dict[str, Any]:
    """``max_time``, or the ``max_steps`` that spend a token budget with the run's batch on this device."""
    if budget_kind == "time":
        return {"max_time": budget}
    resolved = resolve_settings(base)
    tokens_per_step = resolved.per_device_train_batch_size * base.gradient_accumulation_steps * base.max_length
    return {"max_steps": max(1, parse_token_budget(budget) // tokens_per_step)}


def _shared_tokenizer(base: PretrainConfig, vocab_size: int, out: Path, train_texts: Any) -> Path:
    """The sweep's tokenizer of ``vocab_size`` tokens trained on ``train_texts`` (``base``'s), in a folder keyed to
    those texts and the tokenizer's settings, so changed data or settings train a new one."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(json.dumps([vocab_size, base.max_length, base.text_column]).encode())
    for text in train_texts[base.text_column] if hasattr(train_texts, "column_names") else train_texts:
        digest.update(text.encode("utf-8") + b"\0")
    path = out / f"tokenizer-{vocab_size}-{digest.hexdigest()}"
    if not (path / "tokenizer.json").exists():
        train_tokenizer(train_texts, vocab_size=vocab_size, model_max_length=base.max_length,
                        text_column=base.text_column, save_dir=path)
    return path


def _write_outputs(out: Path, rows: list[dict[str, Any]], base: PretrainConfig, budget_kind: str) -> None:
    cells = [{c: row.get(c) for c in CELL_COLUMNS} for row in rows]
    atomic_write_text(out / "cells.csv", csv_table(cells, CELL_COLUMNS))
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in SETTINGS), []).append(row)
    table = []
    for key, members in groups.items():
        same_budget = next(m for k, m in groups.items() if k[0] == key[0])  # p against the budget's first setting
        table.append({**dict(zip(SETTINGS, key)), "parameters": members[0]["parameters"],
                      **summarize(members, same_budget)})
    atomic_write_text(out / "sweep.csv", csv_table(table, (*SETTINGS, "parameters", *group_columns((), csv=True))))
    atomic_write_text(out / "sweep.md", markdown_table(table, (*SETTINGS, "parameters", *group_columns((), csv=False))))
    _plot(out / "sweep.png", table)
    plot_curves({r["cell"]: eval_curve(out / r["cell"]) for r in rows}, out / "curves.png")
    given = {k: v for k, v in base.to_fields().items() if k in base.given and k not in NOT_REPRODUCED}
    for budget in dict.fromkeys(r["budget"] for r in table):
        best = min((r for r in table if r["budget"] == budget), key=lambda r: r["eval_bits_per_byte_mean"])
        config = {**given, "preset": best["preset"], "learning_rate": best["learning_rate"]}
        if base.tokenizer is None:
            config["vocab_size"] = best["vocab_size"]
        config.update(budget_fields(base, budget, budget_kind))
        label = "-".join(str(best[k]) for k in SETTINGS)
        header = (f"# Best of the sweep for budget {budget}: {label}, {best['eval_bits_per_byte']} bits/byte over "
                  f"{best['n']} seed(s)\n")
        atomic_write_text(out / f"best-{budget}.yaml", header + yaml.safe_dump(config, sort_keys=False))


def _plot(path: Path, table: list[dict[str, Any]]) -> None:
    fig, ax = new_axes()
    for budget in dict.fromkeys(r["budget"] for r in table):
        best_per_size: dict[int, float] = {}
        for r in table:
            if r["budget"] == budget:
                best_per_size[r["parameters"]] = min(best_per_size.get(r["parameters"], 1e9),
                                                     r["eval_bits_per_byte_mean"])
        sizes = sorted(best_per_size)
        ax.plot(sizes, [best_per_size[s] for s in sizes], marker="o", label=f"budget {budget}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("eval bits per byte (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
