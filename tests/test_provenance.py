"""Settings provenance: a value given always wins, on every path, even when it equals a default; every field says
where its value came from; --print_config shows it and writes nothing."""

import dataclasses
import json
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinypretrain as tp
import tinypretrain.train.run as train_module
from tinypretrain.cli import main
from tinypretrain.config.argv import train_config
from tinypretrain.config.settings import resolve_settings

# Fields that a recipe, the budget or the device also set, each with its library default and another value.
CANDIDATES = {
    "learning_rate": (2e-3, 7e-4),
    "lr_scheduler_type": ("constant_with_warmup", "cosine"),
    "decay_fraction": (0.2, 0.5),
    "warmup_steps": (0.05, 0.1),
    "weight_decay": (0.1, 0.0),
    "adam_beta2": (0.95, 0.99),
    "per_device_train_batch_size": (8, 4),
    "max_length": (256, 128),
    "packing": ("pack", "truncate"),
    "preset": ("cpu-2m", "paper-h64-l1"),
    "eval_steps": (0.2, 0.5),
    "num_train_epochs": (1.0, 2.0),
    "bf16": (False, False),
    "torch_compile": (False, False),
}


def _flag(value):
    return str(value).lower() if isinstance(value, bool) else str(value)


def _via_pretrain(fields, tmp_path, monkeypatch):
    captured = {}

    def capture(cfg, *rest):
        captured["cfg"] = cfg
        raise InterruptedError

    monkeypatch.setattr(train_module, "run", capture)
    base = tp.PretrainConfig(**{k: v for k, v in fields.items() if k in ("recipe", "max_time")})
    with pytest.raises(InterruptedError):
        tp.pretrain(base, output_dir=str(tmp_path / "run"), **fields)
    return captured["cfg"]


def _via_yaml(fields, tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(fields))
    return tp.PretrainConfig.from_file(path)


PATHS = {
    "constructor": lambda f, tmp, mp: tp.PretrainConfig(**f),
    "from_dict": lambda f, tmp, mp: tp.PretrainConfig.from_dict(f),
    "yaml file": lambda f, tmp, mp: _via_yaml(f, tmp),
    "cli flags": lambda f, tmp, mp: train_config([w for k, v in f.items() for w in (f"--{k}", _flag(v))]),
    "cli file + flag": lambda f, tmp, mp: train_config([str(_write(tmp, f)), "--seed", "5"]),
    "updated": lambda f, tmp, mp: tp.PretrainConfig(max_steps=3).updated(**f),
    "dataclasses.replace": lambda f, tmp, mp: dataclasses.replace(tp.PretrainConfig(**_context(f)), **f),
    "pretrain(**overrides)": _via_pretrain,
}


def _write(tmp, fields):
    path = tmp / "file.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


def _context(fields):
    return {k: v for k, v in fields.items() if k in ("recipe", "max_time")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(sorted(CANDIDATES)),
    equal_to_default=st.booleans(),
    recipe=st.sampled_from([None, "fast", "seed"]),
    max_time=st.sampled_from([None, "30"]),
    path=st.sampled_from(sorted(PATHS)),
)
def test_a_given_value_is_the_value_that_trains(tmp_path_factory, monkeypatch, name, equal_to_default, recipe,
                                                 max_time, path):
    value = CANDIDATES[name][0 if equal_to_default else 1]
    fields = {name: value, **({"recipe": recipe} if recipe else {}), **({"max_time": max_time} if max_time else {})}
    cfg = PATHS[path](fields, tmp_path_factory.mktemp("p"), monkeypatch)
    trained = resolve_settings(cfg)
    assert trained.to_fields()[name] == value, (path, fields)
    if path != "dataclasses.replace":  # a full copy gives every field; elsewhere only what was given is explicit
        assert trained.sources[name] == "explicit"
        assert trained.sources["seed"] == ("explicit" if path == "cli file + flag" else "default")  # no recipe sets it


def test_each_layer_is_named_in_order():
    cfg = resolve_settings(tp.PretrainConfig(recipe="fast", max_time="5m", weight_decay=0.1))
    assert (cfg.learning_rate, cfg.sources["learning_rate"]) == (2e-3, "recipe:fast")  # recipe > budget
    assert (cfg.decay_fraction, cfg.sources["decay_fraction"]) == (0.4, "budget")  # the recipe does not set it
    assert (cfg.weight_decay, cfg.sources["weight_decay"]) == (0.1, "explicit")  # equal to the recipe's and default
    assert cfg.sources["per_device_train_batch_size"] == "device" and cfg.per_device_train_batch_size == 8
    assert cfg.sources["adam_epsilon"] == "default"
    plain = resolve_settings(tp.PretrainConfig(max_time="30"))
    assert (plain.learning_rate, plain.sources["learning_rate"]) == (4e-3, "budget")  # CPU budget rate, not given


def test_preset_loses_to_a_given_shape_even_one_equal_to_the_seeds():
    assert tp.make_llama_config(preset="cpu-2m", hidden_size=256).hidden_size == 256  # 256 is the seed default
    assert tp.make_llama_config(preset="cpu-2m").hidden_size == 128
    assert tp.make_llama_config(preset="cpu-2m", num_attention_heads=16, num_key_value_heads=8).num_key_value_heads == 8
    assert tp.make_llama_config().hidden_size == 256 and tp.make_llama_config().vocab_size == 32000


def test_print_config_names_each_source_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--recipe", "fast", "--max_time", "5m", "--output_dir", "out", "--print_config"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines["learning_rate"][1:] == ["0.002", "recipe:fast"]
    assert lines["decay_fraction"][1:] == ["0.4", "budget"]
    assert lines["max_time"][1:] == ['"5m"', "explicit"] and lines["bf16"][-1] == "device"
    assert os.listdir(tmp_path) == []  # no folder made, nothing touched
    assert main(["train", "--learning_rate", "2e-3", "--max_time", "30", "--print_config"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines["learning_rate"][1:] == ["0.002", "explicit"] and os.listdir(tmp_path) == []


def test_an_abbreviated_or_unknown_flag_is_refused_with_a_hint(capsys):
    assert main(["train", "--recip", "seed", "--print_config"]) == 2
    err = capsys.readouterr().err
    assert "--recip (did you mean --recipe?)" in err and len(err.strip().splitlines()) == 2


def test_the_config_file_may_stand_anywhere(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 0.001\nmax_length: 64\n")
    cfg = train_config(["--max_length", "128", str(path), "--seed", "1"])
    assert (cfg.learning_rate, cfg.max_length, cfg.seed) == (0.001, 128, 1)


@pytest.mark.slow
def test_a_given_rate_trains_under_a_budget_and_a_given_shape_beats_the_preset(tmp_path, capsys):
    out = tmp_path / "run"
    overrides = json.dumps({"hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2})
    # 5 s: the rate holds its peak until 3 s (a 40% decay), past a first step slowed by a busy machine.
    assert main(["train", "--learning_rate", "2e-3", "--max_time", "5", "--preset", "cpu-2m", "--model_overrides",
                 overrides, "--output_dir", str(out), "--builtin_stories", "300", "--max_length", "32",
                 "--vocab_size", "300", "--max_eval_samples", "4", "--eval_size", "4", "--num_samples", "0",
                 "--story_samples", "2", "--logging_steps", "1"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["learning_rate"] == 0.002 and record["sources"]["learning_rate"] == "explicit"
    assert record["config"]["lr_scheduler_type"] == "warmup_stable_decay" and record["sources"]["decay_fraction"] == "budget"
    rates = [h["learning_rate"] for h in map(json.loads, (out / "metrics.jsonl").open()) if "learning_rate" in h]
    assert max(rates) == pytest.approx(0.002)
    assert record["config"]["model_config"]["hidden_size"] == 256  # equal to the seed's default, still wins
    assert record["config"]["max_steps"] == -1 and record["config"]["eval_strategy"] == "steps"  # no fake settings
    assert "--learning_rate 0.002" in record["run"]["command"] and "--max_time 5" in record["run"]["command"]
