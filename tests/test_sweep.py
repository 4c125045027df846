"""tinypretrain sweep: a grid under equal budgets, its table, plot and best config, and resuming without retraining."""

import csv

import pytest

import tinypretrain as tp
import tinypretrain.train as train_module
from tinypretrain.cli import main
from tinypretrain.sweep import parse_token_budget

BASE = ["--builtin_stories", "200", "--max_length", "32", "--vocab_size", "300", "--max_eval_samples", "8",
        "--eval_size", "8", "--num_samples", "0", "--per_device_train_batch_size", "4", "--logging_steps", "1"]


def test_token_budgets():
    assert parse_token_budget("5M") == 5_000_000 and parse_token_budget("2.5k") == 2500
    assert parse_token_budget("1200") == 1200
    with pytest.raises(ValueError, match="like '5M'"):
        parse_token_budget("lots")


@pytest.mark.slow
def test_sweep_writes_table_plot_best_config_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--presets", "paper-h64-l1", "paper-h64-l2", "--budgets", "1k", "2k", "--budget_kind", "tokens",
            "--output_dir", str(out), *BASE]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 4 and {r["budget"] for r in rows} == {"1k", "2k"}
    assert {int(r["train_steps"]) for r in rows} == {1000 // 128, 2000 // 128}  # tokens / (4 x 32) per step
    assert (out / "sweep.md").read_text().count("\n") == 6
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"  # compare's plot of every cell
    best = tp.PretrainConfig.from_file(out / "best-2k.yaml")
    two_k = [r for r in rows if r["budget"] == "2k"]
    winner = min(two_k, key=lambda r: float(r["eval_bits_per_byte"]))
    assert best.preset == winner["preset"] and best.max_steps == 2000 // 128 and best.builtin_stories == 200
    assert best.tokenizer is None and best.vocab_size == 300

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(train_module, "pretrain", no_training)
    capsys.readouterr()
    assert main(argv) == 0  # every cell is finished: nothing retrains
    assert "4 cells" in capsys.readouterr().out
