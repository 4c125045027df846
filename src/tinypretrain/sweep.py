"""sweep(): train a grid of model shapes (and optionally vocabularies and learning rates) under equal budgets, then
tabulate, plot (the TinyStories paper's Figure 4 in bits/byte) and write the best config for each budget."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .artifacts import new_axes, save_figure
from .budget import parse_duration
from .compare import csv_table, eval_curve, markdown_table, plot_curves
from .io import atomic_write_text
from .pretrain_config import PretrainConfig
from .tokenizer import train_tokenizer

COLUMNS = ("cell", "budget", "preset", "vocab_size", "learning_rate", "parameters", "train_steps", "tokens_seen",
           "train_seconds", "eval_loss", "eval_bits_per_byte")


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a shape, vocabulary, peak rate and budget."""

    preset: str
    vocab_size: int
    learning_rate: float
    budget: str  # "60s" (time) or "5M" (tokens)

    @property
    def name(self) -> str:
        return f"{self.preset}-v{self.vocab_size}-lr{self.learning_rate:g}-{self.budget}"


def parse_token_budget(text: str) -> int:
    """Tokens in ``text``: a number, optionally with k/M/G, as in ``"500k"``, ``"5M"``."""
    scale = {"k": 10**3, "M": 10**6, "G": 10**9}
    number, unit = (text[:-1], text[-1]) if text[-1:] in scale else (text, "")
    try:
        return int(float(number) * scale.get(unit, 1))
    except ValueError:
        raise ValueError(f"A token budget must be a number with an optional k/M/G, like '5M'; got {text!r}") from None


def sweep(
    base: PretrainConfig,
    output_dir: str | Path,
    presets: list[str],
    budgets: list[str],
    *,
    budget_kind: str = "time",
    vocab_sizes: list[int] | None = None,
    learning_rates: list[float] | None = None,
) -> list[dict[str, Any]]:
    """Train every cell of presets x budgets (x vocab sizes x learning rates) from ``base`` in ``output_dir``/<cell>,
    skipping cells already finished, so an interrupted sweep resumes. Budgets are times (``"60s"``, ``"5m"``) or,
    with ``budget_kind="tokens"``, token counts (``"5M"``). Writes sweep.csv, sweep.md, sweep.png (best bits/byte
    per size), curves.png (``compare``'s plot of every cell) and one best-<budget>.yaml per budget; returns the
    table's rows."""
    from .train import pretrain

    if budget_kind not in ("time", "tokens"):
        raise ValueError(f"budget_kind must be 'time' or 'tokens', got {budget_kind!r}")
    parse = parse_duration if budget_kind == "time" else parse_token_budget
    for budget in budgets:
        parse(budget)
    out = Path(output_dir)
    cells = [
        Cell(preset, vocab, lr, budget)
        for budget, preset, vocab, lr in itertools.product(
            budgets, presets, vocab_sizes or [base.vocab_size], learning_rates or [base.learning_rate]
        )
    ]
    rows = []
    for cell in cells:
        folder = out / cell.name
        if not (folder / "run.json").exists():
            fields = _cell_fields(base, cell, budget_kind, out)
            pretrain(base, **fields, output_dir=str(folder), overwrite_output_dir=True, resume_from_checkpoint=None)
        metrics = json.loads((folder / "run.json").read_text())["metrics"]
        rows.append({"cell": cell.name, **{k: getattr(cell, k) for k in ("budget", "preset", "vocab_size",
                                                                          "learning_rate")}, **metrics})
    _write_outputs(out, rows, base, budget_kind)
    return rows


def _cell_fields(base: PretrainConfig, cell: Cell, budget_kind: str, out: Path) -> dict[str, Any]:
    fields: dict[str, Any] = {"preset": cell.preset, "learning_rate": cell.learning_rate, "vocab_size": cell.vocab_size}
    if base.tokenizer is None:  # one tokenizer per vocabulary, trained once for the whole sweep
        fields["tokenizer"] = str(_shared_tokenizer(base, cell.vocab_size, out))
    fields.update(_budget_fields(base, cell.budget, budget_kind))
    return fields


def _budget_fields(base: PretrainConfig, budget: str, budget_kind: str) -> dict[str, Any]:
    """``max_time``, or the ``max_steps`` that spend a token budget with the run's batch on this device."""
    if budget_kind == "time":
        return {"max_time": budget}
    from .train import device_training_args

    batch = device_training_args(base)["per_device_train_batch_size"]
    tokens_per_step = batch * base.gradient_accumulation_steps * base.max_length
    return {"max_steps": max(1, parse_token_budget(budget) // tokens_per_step)}


def _shared_tokenizer(base: PretrainConfig, vocab_size: int, out: Path) -> Path:
    from .run_data import load_texts

    path = out / f"tokenizer-{vocab_size}"
    if not (path / "tokenizer.json").exists():
        train_texts = load_texts(base).train
        train_tokenizer(train_texts, vocab_size=vocab_size, model_max_length=base.max_length,
                        text_column=base.text_column, save_dir=path)
    return path


def _write_outputs(out: Path, rows: list[dict[str, Any]], base: PretrainConfig, budget_kind: str) -> None:
    table = [{c: row.get(c) for c in COLUMNS} for row in rows]
    atomic_write_text(out / "sweep.csv", csv_table(table, COLUMNS))
    atomic_write_text(out / "sweep.md", markdown_table(table, COLUMNS))
    _plot(out / "sweep.png", table)
    plot_curves({r["cell"]: eval_curve(out / r["cell"]) for r in table}, out / "curves.png")
    defaults, given = PretrainConfig().to_fields(), base.to_fields()  # both normalised by TrainingArguments
    kept = {k: v for k, v in given.items() if k in PretrainConfig.__annotations__ and v != defaults[k]}
    for budget in dict.fromkeys(r["budget"] for r in table):
        best = min((r for r in table if r["budget"] == budget), key=lambda r: r["eval_bits_per_byte"])
        config = {**kept, "preset": best["preset"], "vocab_size": best["vocab_size"],
                  "learning_rate": best["learning_rate"]}
        config.pop("output_dir", None)
        config.update(_budget_fields(base, budget, budget_kind))
        header = f"# Best of the sweep for budget {budget}: {best['cell']}, {best['eval_bits_per_byte']:.4f} bits/byte\n"
        atomic_write_text(out / f"best-{budget}.yaml", header + yaml.safe_dump(config, sort_keys=False))


def _plot(path: Path, table: list[dict[str, Any]]) -> None:
    fig, ax = new_axes()
    for budget in dict.fromkeys(r["budget"] for r in table):
        best_per_size: dict[int, float] = {}
        for r in table:
            if r["budget"] == budget:
                best_per_size[r["parameters"]] = min(best_per_size.get(r["parameters"], 1e9), r["eval_bits_per_byte"])
        sizes = sorted(best_per_size)
        ax.plot(sizes, [best_per_size[s] for s in sizes], marker="o", label=f"budget {budget}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("eval bits per byte")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
