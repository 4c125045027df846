"""tinypretrain sweep: a grid under equal budgets, its table, plot and best config, and resuming without retraining."""

import csv
import json

import pytest

import tinypretrain as tp
import tinypretrain.train.run as train_module
from tinypretrain.cli import main
from tinypretrain.runs.sweep import parse_token_budget

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
    cells = list(csv.DictReader((out / "cells.csv").open()))
    assert len(cells) == 4 and {r["budget"] for r in cells} == {"1k", "2k"}
    assert {int(r["train_steps"]) for r in cells} == {1000 // 128, 2000 // 128}  # tokens / (4 x 32) per step
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 4 and {r["n"] for r in rows} == {"1"} and all(r["eval_bits_per_byte_ci95"] == "" for r in rows)
    assert (out / "sweep.md").read_text().count("\n") == 6
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"  # compare's plot of every cell
    best = tp.PretrainConfig.from_file(out / "best-2k.yaml")
    two_k = [r for r in rows if r["budget"] == "2k"]
    winner = min(two_k, key=lambda r: float(r["eval_bits_per_byte_mean"]))
    assert best.preset == winner["preset"] and best.max_steps == 2000 // 128 and best.builtin_stories == 200
    assert best.tokenizer is None and best.vocab_size == 300

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(train_module, "pretrain", no_training)
    capsys.readouterr()
    assert main(argv) == 0  # every cell is finished: nothing retrains
    assert "4 cells" in capsys.readouterr().out
    # other shared settings: the finished cells no longer match, and the sweep says what changed instead of reusing
    assert main([*argv, "--weight_decay", "0.0"]) == 2
    err = capsys.readouterr().err
    assert "weight_decay: 0.1 -> 0.0" in err and "--overwrite_output_dir" in err


def test_a_tokenizer_with_vocab_sizes_is_refused(tmp_path, capsys):
    code = main(["sweep", "--presets", "cpu-2m", "--budgets", "1k", "--budget_kind", "tokens", "--vocab_sizes", "300",
                 "--output_dir", str(tmp_path / "s"), "--tokenizer", str(tmp_path), *BASE])
    assert code == 2 and "cannot go with --tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_cells_train_the_rates_and_seeds_they_name_under_a_time_budget(tmp_path, capsys):
    out = tmp_path / "sweep"
    # 2e-3 is also the step default and 4e-3 the budget's own rate: both must train as named
    assert main(["sweep", "--presets", "paper-h64-l1", "--budgets", "6s", "--learning_rates", "2e-3", "4e-3",
                 "--seeds", "2", "--output_dir", str(out), *BASE]) == 0
    cells = list(csv.DictReader((out / "cells.csv").open()))
    assert len(cells) == 4
    for cell in cells:
        record = json.loads((out / cell["cell"] / "run.json").read_text())
        lr, seed = record["config"]["learning_rate"], record["config"]["seed"]
        assert cell["cell"].endswith(f"lr{lr:g}-6s-s{seed}") and float(cell["learning_rate"]) == lr
        assert record["sources"]["learning_rate"] == "explicit"
        rates = [h["learning_rate"] for h in map(json.loads, (out / cell["cell"] / "metrics.jsonl").open())
                 if "learning_rate" in h]
        assert max(rates) == pytest.approx(lr)
    assert sorted((float(c["learning_rate"]), int(c["seed"])) for c in cells) == [
        (0.002, 3407), (0.002, 3408), (0.004, 3407), (0.004, 3408)]
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["n"] for r in rows] == ["2", "2"] and all(float(r["eval_bits_per_byte_ci95"]) > 0 for r in rows)
    assert rows[1]["eval_bits_per_byte_p"] != "" and rows[0]["eval_bits_per_byte_p"] == ""
    best = tp.PretrainConfig.from_file(out / "best-6s.yaml")
    means = {float(r["learning_rate"]): float(r["eval_bits_per_byte_mean"]) for r in rows}
    assert best.learning_rate == min(means, key=means.get)


def test_the_shared_tokenizer_is_keyed_to_the_data(tmp_path, monkeypatch):
    import importlib

    sweep_module = importlib.import_module("tinypretrain.runs.sweep")  # tp.sweep is the function

    trained = []
    monkeypatch.setattr(sweep_module, "train_tokenizer", lambda *a, save_dir, **k: trained.append(save_dir))
    def shared(cfg):
        return sweep_module._shared_tokenizer(cfg, 300, tmp_path, sweep_module.load_texts(cfg).train)

    base = tp.PretrainConfig(builtin_stories=100, max_length=32)
    first = shared(base)
    assert shared(base) == first  # same data and settings: same folder
    other_data = shared(base.updated(builtin_stories=120))
    other_length = shared(base.updated(max_length=64))
    assert len({first, other_data, other_length}) == 3 and trained[-2:] == [other_data, other_length]
