import json
import shlex

import pytest

import tinypretrain as tp
from tinypretrain.cli import main
from tinypretrain.config.argv import train_config
from tinypretrain.train.records import reproduce_command


@pytest.mark.slow
def test_train_generate_eval_from_the_command_line(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(
        "builtin_stories: 300\nmax_length: 32\nvocab_size: 300\nmax_eval_samples: 10\nper_device_train_batch_size: 4\n"
        "model_overrides: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1}\n"
    )
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "c.yaml"), "--max_steps", "3", "--output_dir", str(out), "--num_samples", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"saved to {out}" in printed and "# Samples" in printed
    assert json.loads((out / "run.json").read_text())["config"]["builtin_stories"] == 300

    assert main(["generate", str(out), "--prompt", "Once upon", "--max_new_tokens", "5", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("Once upon")

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "valid.txt").write_text("Tom went home.\n<|endoftext|>\nLily smiled.\n<|endoftext|>\n")
    assert main(["eval", str(out), "--dataset", str(tmp_path / "data")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["stories"] == 2 and scores["loss"] > 0 and scores["bits_per_byte"] > 0

    assert main(["tokenizer", "train", "--input", str(tmp_path / "data" / "valid.txt"), "--vocab_size", "300",
                 "--output", str(tmp_path / "tok")]) == 0
    assert (tmp_path / "tok" / "tokenizer.json").exists()


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["train", "--preset", "nope", "--output_dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and "Traceback" not in err
    assert main(["generate", str(tmp_path)]) == 2
    assert "not a model folder" in capsys.readouterr().err
    with pytest.raises(ValueError):
        main(["--debug", "generate", str(tmp_path)])


def test_refuses_pickled_weights(tmp_path, capsys):
    import torch

    import tinypretrain as tp

    model = tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                num_key_value_heads=1, vocab_size=300))
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    assert main(["generate", str(tmp_path)]) == 2
    assert "safetensors" in capsys.readouterr().err


def test_damaged_weights_are_one_line(tmp_path, capsys):
    import tinypretrain as tp

    model = tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                num_key_value_heads=1, vocab_size=300))
    model.save_pretrained(tmp_path)
    tp.train_tokenizer(tp.generate_stories(50), vocab_size=300).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    for command in (["generate", str(tmp_path)], ["eval", str(tmp_path), "--dataset", str(tmp_path / "x.txt")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"The weights in {tmp_path} are damaged" in err and "Traceback" not in err


def test_fields_that_allow_none_take_it_on_the_command_line():
    cfg = train_config(["--max_eval_samples", "None", "--eval_split", "null", "--report_to", "none"])
    assert cfg.max_eval_samples is None and cfg.eval_split is None and cfg.report_to == []
    with pytest.raises(SystemExit):  # a field that does not allow None still refuses the word
        train_config(["--max_length", "None"])


@pytest.mark.parametrize("fields", [
    {},
    {"recipe": "seed", "dataset": "/data/x", "max_steps": 50},
    {"max_time": "5m", "learning_rate": 4e-3, "model_overrides": {"hidden_size": 96}, "report_to": "tensorboard",
     "bf16": False, "eval_split": None, "max_eval_samples": None},
    {"recipe": "fast", "learning_rate": 1e-3, "lr_scheduler_kwargs": {"min_lr_rate": 0.1}, "seed": 7, "muon": True},
])
def test_reproduce_command_parses_back_to_the_same_config(fields):
    cfg = tp.PretrainConfig.from_dict({"output_dir": "/tmp/o", **fields})
    argv = shlex.split(reproduce_command(cfg))
    assert argv[:2] == ["tinypretrain", "train"]
    assert train_config([*argv[2:], "--output_dir", "/tmp/o"]).to_fields() == cfg.to_fields()
