"""Defects found in review, each pinned by a test that failed before its fix."""

import os
import re
from pathlib import Path

import pytest
import tomllib
import torch

import tinypretrain as tp
from tinypretrain.cli import main
from tinypretrain.utils.io import atomic_dir, atomic_write_bytes, open_file_mode

REPO = Path(__file__).resolve().parents[1]


def test_atomic_writes_never_touch_the_umask(tmp_path, monkeypatch):
    def no_umask(mask):
        raise AssertionError("os.umask changes the whole process's umask: a race with other threads")

    monkeypatch.setattr(os, "umask", no_umask)
    atomic_write_bytes(tmp_path / "f.bin", b"x")
    with atomic_dir(tmp_path / "d") as folder:
        (folder / "x").write_text("x")
    mode = open_file_mode(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f.bin"]  # no probe or temp file left
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == mode
    (tmp_path / "plain").mkdir()  # what mkdir gives here
    assert (tmp_path / "d").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished one-step run on the built-in stories."""
    return tp.pretrain(output_dir=str(tmp_path_factory.mktemp("runs") / "run"), max_steps=1, builtin_stories=200,
                       max_length=32, vocab_size=300, max_eval_samples=4, eval_size=4, num_samples=0, story_samples=0,
                       per_device_train_batch_size=2,
                       model_overrides={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                        "num_key_value_heads": 1}).output_dir


def test_the_final_weights_have_the_permissions_of_any_file(tiny_run):
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (tiny_run / name).stat().st_mode & 0o777 == open_file_mode(tiny_run.parent), name


def test_pretrain_trainer_takes_the_model_positionally(tmp_path):
    from transformers import TrainingArguments

    model = tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                num_key_value_heads=1, vocab_size=64))
    trainer = tp.PretrainTrainer(model, TrainingArguments(str(tmp_path), use_cpu=True, report_to="none"),
                                 loss_chunk_size=16)
    assert trainer.compute_loss_func is not None and trainer.model is model


def test_pretrain_trainer_weighs_the_loss_only_for_rows_with_loss_weights(tmp_path):
    """Rows with a loss_weights column set up the weighted loss (by keyword or positionally); weights arriving in
    batches of a trainer whose rows had none fail loudly instead of being dropped."""
    import torch
    from datasets import Dataset
    from transformers import TrainingArguments

    model = tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                num_key_value_heads=1, vocab_size=64))
    args = TrainingArguments(str(tmp_path), use_cpu=True, report_to="none")
    weighted = Dataset.from_dict({"input_ids": [[1, 2, 3]], "loss_weights": [[0.0, 1.0, 2.0]]})
    assert tp.PretrainTrainer(model, args, train_dataset=weighted).compute_loss_func is not None
    assert tp.PretrainTrainer(model, args, None, weighted).compute_loss_func is not None
    plain = tp.PretrainTrainer(model, args, train_dataset=weighted.remove_columns("loss_weights"))
    assert plain.compute_loss_func is None
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="no 'loss_weights' column"):
        plain.compute_loss(model, {"input_ids": ids, "labels": ids, "loss_weights": torch.ones(1, 3)})


def test_version_floors_cover_what_the_code_uses():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floor = {re.split(r"[<>=]", d)[0]: re.search(r">=([\d.]+)", d).group(1) for d in deps if ">=" in d}
    assert tuple(map(int, floor["torch"].split("."))) >= (2, 9) and hasattr(torch.optim, "Muon")  # MuonWithAdamW
    assert int(floor["datasets"].split(".")[0]) >= 4  # datasets.List features
    assert "scipy" in floor  # the statistics of compare and sweep


@pytest.mark.parametrize("argv, words", [
    (["eval", "{run}", "--dataset", "{run}", "--max_samples", "0"], "--max_samples must be >= 1"),
    (["eval", "{run}", "--dataset", "{run}", "--max_samples", "-5"], "--max_samples must be >= 1"),
    (["generate", "{model_only}"], "holds no tokenizer (no tokenizer.json or tokenizer_config.json)"),
])
def test_bad_generate_and_eval_arguments_are_one_line(tmp_path, capsys, argv, words):
    model_only = tmp_path / "model_only"
    tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=1, vocab_size=64)).save_pretrained(model_only)
    argv = [a.format(run=tmp_path, model_only=model_only) for a in argv]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 2


def test_the_card_never_copies_an_invalid_license(tiny_run, tmp_path):
    import json
    import shutil

    from tinypretrain.train.card import model_card

    run = shutil.copytree(tiny_run, tmp_path / "run")
    record = json.loads((run / "run.json").read_text())
    record["config"]["license"] = "My License!"
    (run / "run.json").write_text(json.dumps(record))
    card = model_card(run)
    assert card.data.license == "other"
    assert "template stories generated by tinypretrain" in str(card) and "TinyStories was written" not in str(card)
