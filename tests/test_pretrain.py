import dataclasses
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import tinypretrain as tp
from tinypretrain.config.pretrain import PretrainConfig
from tinypretrain.data.prepare import load_texts
from tinypretrain.train.checkpoint import last_complete_checkpoint

TINY = {
    "builtin_stories": 800,
    "max_eval_samples": 40,
    "eval_size": 40,
    "vocab_size": 400,
    "max_length": 64,
    "per_device_train_batch_size": 8,
    "model_overrides": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
    "logging_steps": 4,
    "eval_steps": 8,
    "save_steps": 8,
    "save_total_limit": None,
    "num_samples": 2,
}

RELOAD = """
import sys, json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tok = AutoTokenizer.from_pretrained(sys.argv[1])
ids = tok("Once upon a time, Lily went to the park.", add_special_tokens=False, return_tensors="pt").input_ids
with torch.no_grad():
    logits = model(ids).logits
assert "tinypretrain" not in sys.modules
print(json.dumps({"ids": ids.tolist(), "logits": logits[0, -1, :8].tolist()}))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    return tp.pretrain(output_dir=str(out), max_steps=24, **TINY)


@pytest.mark.slow
def test_loss_decreases_and_files_exist(run):
    history = [json.loads(line) for line in (run.output_dir / "metrics.jsonl").read_text().splitlines()]
    train = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert len(train) >= 5 and train[-1] < train[0] - 0.5
    assert len(evals) >= 3 and evals[-1] < evals[0]
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "run.json",
                 "metrics.jsonl", "loss.png", "samples.md", "checkpoint-24", "checkpoint-8"):
        assert (run.output_dir / name).exists(), name
    assert not (run.output_dir / ".final").exists()
    assert (run.output_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Prompt: 'Once upon a time'" in (run.output_dir / "samples.md").read_text()
    info = json.loads((run.output_dir / "run.json").read_text())
    assert info["config"]["max_steps"] == 24 and info["versions"]["transformers"].startswith("5.")
    m = run.metrics
    assert m["train_steps"] == 24 and m["tokens_seen"] == 24 * 8 * 64
    assert m["train_tokens_per_s"] > 0 and m["peak_memory_mb"] > 0 and m["parameters"] > 0
    assert m["eval_perplexity"] == pytest.approx(torch.tensor(m["eval_loss"]).exp().item(), rel=1e-6)


@pytest.mark.slow
def test_saved_model_loads_without_tinypretrain(run):
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(run.output_dir)], capture_output=True, text=True, check=True)
    reloaded = json.loads(proc.stdout.strip().splitlines()[-1])
    with torch.no_grad():
        logits = run.model(torch.tensor(reloaded["ids"])).logits
    assert torch.allclose(logits[0, -1, :8], torch.tensor(reloaded["logits"]), atol=1e-5)
    assert reloaded["ids"] == [run.tokenizer("Once upon a time, Lily went to the park.", add_special_tokens=False)["input_ids"]]


@pytest.mark.slow
def test_run_json_metrics_match_fresh_evaluate(run):
    info = json.loads((run.output_dir / "run.json").read_text())
    cfg = PretrainConfig.from_dict({k: v for k, v in info["config"].items() if k != "model_config"})
    eval_texts = load_texts(cfg).eval
    fresh = tp.evaluate(run.model, run.tokenizer, eval_texts)
    assert info["metrics"]["eval_loss"] == pytest.approx(fresh["loss"], rel=1e-6)
    assert info["metrics"]["eval_bits_per_byte"] == pytest.approx(fresh["bits_per_byte"], rel=1e-6)


@pytest.mark.slow
def test_resume_reaches_the_same_step_and_weights(run, tmp_path):
    """Simulate a crash after checkpoint-8: drop everything later, resume, and compare with the full run."""
    crashed = tmp_path / "crashed"
    shutil.copytree(run.output_dir / "checkpoint-8", crashed / "checkpoint-8")
    resumed = tp.pretrain(output_dir=str(crashed), max_steps=24, resume_from_checkpoint="true", **TINY)
    assert resumed.metrics["train_steps"] == 24
    full, again = load_file(run.output_dir / "model.safetensors"), load_file(crashed / "model.safetensors")
    assert max((full[k] - again[k]).abs().max().item() for k in full) < 1e-5


def test_refuses_to_clobber_or_resume_from_nothing(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("someone's run")
    with pytest.raises(ValueError, match="already holds files"):
        tp.pretrain(output_dir=str(tmp_path / "other"), max_steps=1, **TINY)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is an existing file"):
        tp.pretrain(output_dir=str(tmp_path / "file"), max_steps=1, **TINY)
    with pytest.raises(ValueError, match="has no complete checkpoint"):
        tp.pretrain(output_dir=str(tmp_path / "empty"), max_steps=1, resume_from_checkpoint="true", **TINY)
    half = tmp_path / "half" / "checkpoint-8"
    half.mkdir(parents=True)
    with pytest.raises(ValueError, match="not a usable checkpoint: trainer_state.json is missing"):
        tp.pretrain(output_dir=str(tmp_path / "half"), max_steps=1, resume_from_checkpoint=str(half), **TINY)
    assert last_complete_checkpoint(tmp_path / "half") is None


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"packing": "zip"}, "packing must be one of 'pack', 'pack_documents', 'truncate'"),
        ({"learning_rate": -1.0}, "learning_rate must be >= 0"),
        ({"learning_rate": "fast"}, "learning_rate must be float, got 'fast'"),
        ({"max_steps": "ten"}, "max_steps must be int, got 'ten'"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be >= 1"),
        ({"eval_steps": -1}, "eval_steps must be >= 0"),
        ({"max_eval_samples": -3}, "max_eval_samples must be >= 1"),
        ({"preset": "gpt-9"}, "unknown preset"),
        ({"max_length": 1}, "max_length must be >= 2"),
        ({"license": ""}, "license must be a hub license id"),
        ({"license": "Apache 2.0"}, "license must be a hub license id"),
        ({"story_samples": -1}, "story_samples must be >= 0"),
        ({"story_max_new_tokens": 0}, "story_max_new_tokens must be >= 1"),
        ({"init": "xavier"}, "init must be one of 'kaiming', 'normal'"),
        ({"recipe": "slow"}, "Unknown recipe 'slow'"),
        ({"model_overrides": "{not json"}, "model_overrides must be a dict or a JSON"),
        ({"bogus": 1}, r"Unknown PretrainConfig key\(s\) \['bogus'\]"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        PretrainConfig.from_dict(overrides)


def test_every_training_argument_is_a_field_with_its_own_name():
    """No copy by hand: the config is a TrainingArguments, so every Trainer option is reachable by name."""
    from transformers import TrainingArguments

    assert issubclass(PretrainConfig, TrainingArguments)
    cfg = PretrainConfig.from_dict({"optim": "adafactor", "save_only_model": "true", "push_to_hub": False,
                                    "hub_model_id": "me/tiny", "torch_empty_cache_steps": 5})
    assert (cfg.optim, cfg.save_only_model, cfg.hub_model_id, cfg.torch_empty_cache_steps) == (
        "adafactor", True, "me/tiny", 5)


def test_yaml_numbers_are_typed(tmp_path):
    (tmp_path / "c.yaml").write_text("learning_rate: 1e-3\nmax_steps: '12'\nbf16: 'false'\n")
    cfg = PretrainConfig.from_file(tmp_path / "c.yaml")
    assert (cfg.learning_rate, cfg.max_steps, cfg.bf16) == (1e-3, 12, False)
    (tmp_path / "c.json").write_text('{"learning_rate": 1e-3, "max_steps": 12}')
    assert PretrainConfig.from_file(tmp_path / "c.json").learning_rate == 1e-3


def test_yaml_config_rejects_unknown_keys(tmp_path):
    (tmp_path / "c.yaml").write_text("max_steps: 3\npresett: seed-20m\n")
    with pytest.raises(ValueError, match=r"\['presett'\] in .*c.yaml"):
        PretrainConfig.from_file(tmp_path / "c.yaml")
    (tmp_path / "ok.yaml").write_text("max_steps: 3\nmodel_overrides: {hidden_size: 64}\n")
    cfg = PretrainConfig.from_file(tmp_path / "ok.yaml", seed=1)
    assert (cfg.max_steps, cfg.model_overrides, cfg.seed) == (3, {"hidden_size": 64}, 1)


def test_vocab_larger_than_model(tmp_path):
    with pytest.raises(ValueError, match="tokenizer has .* tokens but the model's vocab_size is 300"):
        tp.pretrain(output_dir=str(tmp_path / "o"), max_steps=1, **{**TINY, "model_overrides": {"vocab_size": 300}})


@pytest.mark.slow
def test_streaming_run(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text("".join(f"{s}\n<|endoftext|>\n" for s in tp.generate_stories(300, seed=5)))
    result = tp.pretrain(dataset=str(data), streaming=True, output_dir=str(tmp_path / "out"), max_steps=6,
                         **{**TINY, "eval_size": 20})
    assert result.metrics["train_steps"] == 6 and result.metrics["tokens_seen"] == 6 * 8 * 64
    assert (tmp_path / "out" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="streaming needs a dataset, max_steps > 0"):
        tp.PretrainConfig(dataset=str(data), streaming=True)


def test_device_rules(monkeypatch):
    from tinypretrain.config.settings import device_training_args as _device_defaults

    cpu = _device_defaults(PretrainConfig())
    assert (cpu["bf16"], cpu["fp16"], cpu["torch_compile"], cpu["per_device_train_batch_size"]) == (False, False, False, 8)
    assert PretrainConfig().use_cpu and not cpu["accelerator_config"]["non_blocking"]
    assert cpu["include_num_input_tokens_seen"] == "no"  # counted by us, without a per-step sync
    assert _device_defaults(PretrainConfig(torch_compile=True, bf16=True))["torch_compile"] is True
    # CPU steps: the chunked loss while eager, transformers' inside a graph compiled before the first step; fp32
    # attention under bf16 autocast.
    assert (cpu["loss_chunk_size"], cpu["attn_implementation"]) == (512, None)
    compiled_bf16 = _device_defaults(PretrainConfig(torch_compile=True, bf16=True))
    assert (compiled_bf16["loss_chunk_size"], compiled_bf16["attn_implementation"]) == (0, "sdpa_fp32")
    assert _device_defaults(PretrainConfig(torch_compile_after=30))["loss_chunk_size"] == 512  # eager at first
    assert _device_defaults(PretrainConfig(torch_compile_mode="reduce-overhead"))["torch_compile"] is True
    assert _device_defaults(PretrainConfig(torch_compile_after=30))["torch_compile"] is True  # asks for compiling
    assert _device_defaults(PretrainConfig(torch_compile_after=None))["torch_compile"] is False  # None: unset
    assert _device_defaults(PretrainConfig(avoid_host_syncs=False))["include_num_input_tokens_seen"] == "non_padding"
    with pytest.raises(ValueError, match="torch_compile_mode needs torch_compile"):
        PretrainConfig(torch_compile=False, torch_compile_mode="reduce-overhead")
    configs = {name: PretrainConfig(**fields) for name, fields in {
        "default": {}, "512": {"max_length": 512}, "8192": {"max_length": 8192}, "batch3": {"per_device_train_batch_size": 3},
        "syncs": {"avoid_host_syncs": False}, "eager": {"torch_compile": False}}.items()}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    gpu = _device_defaults(configs["default"])
    assert (gpu["bf16"], gpu["fp16"], gpu["torch_compile"]) == (True, False, True)
    assert gpu["torch_compile_after"] is None  # compiled before the first step
    assert (gpu["loss_chunk_size"], gpu["attn_implementation"]) == (0, None)  # transformers' loss and attention
    assert gpu["per_device_train_batch_size"] == 128  # 32k tokens of 256
    assert _device_defaults(configs["512"])["per_device_train_batch_size"] == 64
    assert _device_defaults(configs["8192"])["per_device_train_batch_size"] == 8
    assert _device_defaults(configs["batch3"])["per_device_train_batch_size"] == 3
    assert gpu["accelerator_config"]["non_blocking"]
    assert not _device_defaults(configs["syncs"])["accelerator_config"]["non_blocking"]
    assert _device_defaults(configs["eager"])["torch_compile"] is False
    # A compiled run drops each epoch's smaller last batch (it would recompile the model); eager runs keep it.
    assert gpu["dataloader_drop_last"] is True and _device_defaults(configs["eager"])["dataloader_drop_last"] is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert _device_defaults(configs["default"])["fp16"] is True
    assert configs["default"].loss_chunk_size is None  # unset: the device's to choose


@pytest.mark.parametrize("kind", ["amx_bf16", "avx512_bf16"])
def test_device_rules_on_a_cpu_with_bf16_matmul(monkeypatch, kind):
    """AMX or AVX-512 BF16: bf16 on, compiled from a 300-s budget on; a value you give wins; sft keeps fp32 and eager
    (it was measured so); run.json's sources say "device" and "sft"."""
    from tinypretrain.config.argv import sft_config
    from tinypretrain.config.settings import device_training_args, resolve_settings

    monkeypatch.setenv("TINYPRETRAIN_CPU_KIND", kind)

    def chosen(**fields):
        args = device_training_args(PretrainConfig(**fields))
        return args["bf16"], args["torch_compile"]

    assert chosen() == (True, False)  # no budget: bf16 only
    assert chosen(max_time="60s") == (True, False) and chosen(max_time="299") == (True, False)
    assert chosen(max_time="5m") == (True, True) and chosen(max_time="1h") == (True, True)
    assert chosen(max_time="5m", bf16=False) == (False, False)  # compiling pays in bf16 only
    assert chosen(max_time="5m", torch_compile=False) == (True, False) and chosen(bf16=False) == (False, False)
    resolved = resolve_settings(PretrainConfig(max_time="5m"))
    assert (resolved.bf16, resolved.torch_compile, resolved.dataloader_drop_last) == (True, True, True)
    assert resolved.sources["dataloader_drop_last"] == "device"
    # Its first minute trains eagerly; a value you give wins, 0 (compile before the first step) included.
    assert (resolved.torch_compile_after, resolved.sources["torch_compile_after"]) == (60.0, "device")
    given = resolve_settings(PretrainConfig(max_time="5m", torch_compile_after=0))
    assert (given.torch_compile_after, given.sources["torch_compile_after"]) == (0, "explicit")
    assert (resolved.loss_chunk_size, resolved.attn_implementation) == (512, "sdpa_fp32")  # eager first minute
    assert resolved.sources["loss_chunk_size"] == resolved.sources["attn_implementation"] == "device"
    assert given.loss_chunk_size == 0  # compiled before its first step: transformers' loss in the graph
    plain = resolve_settings(PretrainConfig(max_time="5m", loss_chunk_size=0, attn_implementation="sdpa"))
    assert (plain.loss_chunk_size, plain.attn_implementation, plain.sources["loss_chunk_size"]) == (0, "sdpa", "explicit")
    for uncompiled in (PretrainConfig(max_time="60s"), PretrainConfig(max_time="5m", torch_compile=False)):
        assert device_training_args(uncompiled)["torch_compile_after"] is None
    kept = resolve_settings(PretrainConfig(max_time="5m", dataloader_drop_last=False))  # a value you give wins
    assert kept.dataloader_drop_last is False and kept.sources["dataloader_drop_last"] == "explicit"
    assert resolve_settings(PretrainConfig(max_time="60s")).dataloader_drop_last is False  # eager: every batch
    unset = resolve_settings(PretrainConfig(max_time="5m", torch_compile=None, dataloader_drop_last=None))  # None: unset
    assert (unset.torch_compile, unset.dataloader_drop_last, unset.sources["torch_compile"]) == (True, True, "device")
    assert resolved.sources["bf16"] == resolved.sources["torch_compile"] == "device"
    sft = resolve_settings(sft_config(["base", "--max_time", "5m"]))
    assert (sft.bf16, sft.torch_compile, sft.sources["bf16"]) == (False, False, "sft")
    assert resolve_settings(sft_config(["base", "--bf16", "true"])).bf16 is True
    five_minutes = PretrainConfig(max_time="5m")  # built before CUDA is faked: TrainingArguments would pick a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    on_cuda = device_training_args(five_minutes)
    assert (on_cuda["bf16"], on_cuda["fp16"], on_cuda["torch_compile"]) == (False, True, True)  # the CPU's kind: moot


@pytest.mark.slow
@pytest.mark.parametrize("packing", ["pack", "truncate"])
def test_sync_free_token_count_equals_trainers(tmp_path, packing):
    """Our count (shapes on the host, masks on the device, read when logging) matches Trainer's per-step count."""
    runs = {
        avoid: tp.pretrain(output_dir=str(tmp_path / str(avoid)), packing=packing, max_steps=5, avoid_host_syncs=avoid,
                           **{**TINY, "logging_steps": 2, "save_steps": 3})
        for avoid in (True, False)
    }
    ours, trainers = runs[True], runs[False]
    assert ours.metrics["tokens_seen"] == trainers.metrics["tokens_seen"] > 0
    if packing == "pack":
        assert ours.metrics["tokens_seen"] == 5 * 8 * 64

    def logged(result):
        history = map(json.loads, (result.output_dir / "metrics.jsonl").read_text().splitlines())
        return [h["num_input_tokens_seen"] for h in history if "loss" in h]

    def saved(result):
        return json.loads((result.output_dir / "checkpoint-3" / "trainer_state.json").read_text())["num_input_tokens_seen"]

    assert logged(ours) == logged(trainers) and len(logged(ours)) >= 2  # every logging_steps, each save, the end
    assert saved(ours) == saved(trainers) > 0


@pytest.mark.slow
def test_pack_documents_run(tmp_path):
    result = tp.pretrain(output_dir=str(tmp_path / "docs"), packing="pack_documents", max_steps=4, **TINY)
    assert result.metrics["train_steps"] == 4 and math.isfinite(result.metrics["eval_loss"])


SEED_VALUES = {"learning_rate": 1e-4, "preset": "seed-20m", "packing": "truncate", "per_device_train_batch_size": 4,
               "lr_scheduler_type": "cosine", "max_length": 2048}


def _applies_seed(cfg, **kept):
    assert cfg.recipe == "seed"
    for name, value in {**SEED_VALUES, **kept}.items():
        assert getattr(cfg, name) == value, name


def test_recipe_applies_on_every_construction_path(tmp_path, monkeypatch):
    plain = PretrainConfig(max_steps=5)
    _applies_seed(PretrainConfig(recipe="seed", max_steps=5), max_steps=5)
    _applies_seed(PretrainConfig.from_dict({"recipe": "seed", "max_steps": 5}), max_steps=5)
    _applies_seed(plain.updated(recipe="seed"), max_steps=5)
    # a full copy (dataclasses.replace, every field in a dict) gives every value, so the recipe fills nothing
    copied = dataclasses.replace(plain, recipe="seed")
    assert copied.recipe == "seed" and copied.learning_rate == plain.learning_rate
    assert set(copied.sources.values()) == {"explicit"}
    (tmp_path / "c.yaml").write_text("recipe: seed\nmax_steps: 5\n")
    _applies_seed(PretrainConfig.from_file(tmp_path / "c.yaml"), max_steps=5)
    # a resolved recipe config survives a round trip, with the fields you changed
    seed = PretrainConfig(recipe="seed", learning_rate=3e-4)
    again = PretrainConfig.from_dict({**seed.to_fields(), "max_steps": 5})
    assert (again.learning_rate, again.packing, again.max_steps) == (3e-4, "truncate", 5)

    captured = {}

    def capture(cfg, *rest):
        captured["cfg"] = cfg
        raise InterruptedError

    monkeypatch.setattr(tp.train.run, "run", capture)
    with pytest.raises(InterruptedError):
        tp.pretrain(plain, recipe="seed")
    _applies_seed(captured["cfg"], max_steps=5)


def test_recipe_through_the_cli(tmp_path, monkeypatch):
    import tinypretrain.cli as cli

    captured = {}

    def fake_pretrain(cfg):
        captured["cfg"] = cfg
        raise ValueError("stop here")

    monkeypatch.setattr(tp.train.run, "pretrain", fake_pretrain)
    (tmp_path / "c.yaml").write_text("recipe: fast\nlearning_rate: 0.001\nmax_length: 256\n")
    assert cli.main(["train", str(tmp_path / "c.yaml"), "--max_length", "128", "--train_split", "train"]) == 2
    cfg = captured.pop("cfg")
    assert (cfg.recipe, cfg.learning_rate, cfg.max_length, cfg.train_split, cfg.preset) == ("fast", 0.001, 128, "train", "seed-20m")
    assert cli.main(["train", "--recipe", "seed", "--learning_rate", "0.003"]) == 2
    _applies_seed(captured.pop("cfg"), learning_rate=0.003)
    # a flag wins even when it sets the library default (a merge of what was given, not a comparison of values)
    assert cli.main(["train", "--recipe", "seed", "--learning_rate", "0.002", "--train_split", "train"]) == 2
    _applies_seed(captured.pop("cfg"), learning_rate=0.002, train_split="train")
    # and the resolved config keeps it when pretrain() copies it
    cfg = PretrainConfig(recipe="seed", learning_rate=3e-4).updated(learning_rate=2e-3, max_steps=3)
    _applies_seed(cfg, learning_rate=2e-3, max_steps=3)


def test_every_recipe_spells_out_its_settings():
    from tinypretrain.config.fields import choices
    from tinypretrain.config.recipes import RECIPES

    assert RECIPES["seed"].keys() == RECIPES["fast"].keys()
    assert set(choices(PretrainConfig, "recipe")) == {*RECIPES, None}  # the CLI's choices are the recipes there are
    assert {"learning_rate", "lr_scheduler_type", "warmup_steps", "packing", "max_length", "preset"} <= RECIPES["fast"].keys()


@pytest.mark.slow
def test_real_tinystories_sample(tinystories_dir, tmp_path):
    result = tp.pretrain(dataset=str(tinystories_dir), output_dir=str(tmp_path / "ts"), max_steps=6,
                         **{**TINY, "max_train_samples": 300, "max_eval_samples": 20})
    info = json.loads((result.output_dir / "run.json").read_text())
    assert info["config"]["dataset"] == str(tinystories_dir)
    assert result.metrics["train_steps"] == 6 and 0 < result.metrics["eval_bits_per_byte"] < 10
    assert result.metrics["eval_loss"] < math.log(len(result.tokenizer)) + 1


@pytest.mark.slow
def test_compiled_training_equals_eager(tmp_path):
    """The CUDA fast path's torch.compile, run on CPU: same losses as eager, with per-document positions and the
    chunked loss (the parts of our training step that compile must see through)."""
    small = {**TINY, "builtin_stories": 300, "max_length": 32, "per_device_train_batch_size": 4, "logging_steps": 1,
             "num_samples": 0, "model_overrides": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                   "num_key_value_heads": 1}}
    from torch._dynamo.utils import counters

    losses = {}
    for compiled in (False, True):
        counters.clear()
        result = tp.pretrain(output_dir=str(tmp_path / str(compiled)), torch_compile=compiled, max_steps=4,
                             packing="pack_documents", loss_chunk_size=48, **small)
        history = map(json.loads, (result.output_dir / "metrics.jsonl").read_text().splitlines())
        losses[compiled] = [h["loss"] for h in history if "loss" in h]
        assert (counters["frames"]["ok"] > 0) == compiled  # the compiled run really went through dynamo
    assert len(losses[True]) == 4
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)


def test_compile_after_trains_eagerly_until_the_clock_says_then_compiles_in_place(tmp_path, monkeypatch):
    """``torch_compile_after``: Trainer does not compile; the model is compiled in place once the training clock
    reaches the given seconds (never, within a run shorter than that), and the losses are eager's. The device's
    chunked loss serves the eager steps only; the compiled ones compute transformers' loss in the graph."""
    from torch._dynamo.utils import counters

    import tinypretrain.train.trainer as trainer_module
    from tinypretrain.train.compile_later import CompileLater

    chunked_steps = []
    monkeypatch.setattr(trainer_module, "causal_lm_loss",
                        lambda *args, **kwargs: chunked_steps.append(1) or tp.causal_lm_loss(*args, **kwargs))

    small = {**TINY, "builtin_stories": 300, "max_length": 32, "per_device_train_batch_size": 4, "logging_steps": 1,
             "num_samples": 0, "model_overrides": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                   "num_key_value_heads": 1}}
    runs = {"eager": {"torch_compile": False}, "never": {"torch_compile": True, "torch_compile_after": 1e6},
            "soon": {"torch_compile": True, "torch_compile_after": 1e-3}}
    losses, frames, chunked = {}, {}, {}
    for name, options in runs.items():
        torch.compiler.reset()
        counters.clear()
        chunked_steps.clear()
        result = tp.pretrain(output_dir=str(tmp_path / name), max_steps=4, **options, **small)
        history = map(json.loads, (result.output_dir / "metrics.jsonl").read_text().splitlines())
        losses[name], frames[name] = [h["loss"] for h in history if "loss" in h], counters["frames"]["ok"]
        chunked[name] = len(chunked_steps)
    assert frames["eager"] == frames["never"] == 0 and frames["soon"] > 0  # compiled once the clock got there
    # Eager steps take the chunked loss; from the compile on (at once, here), transformers' loss in the graph.
    assert chunked["eager"] == chunked["never"] == 4 and chunked["soon"] < 4
    assert losses["never"] == losses["eager"] and losses["soon"] == pytest.approx(losses["eager"], abs=1e-4)
    config = json.loads((tmp_path / "never" / "run.json").read_text())["config"]
    assert (config["torch_compile"], config["torch_compile_after"]) == (True, 1e6)

    class Clock:  # seconds of training, as the test sets them
        now = 0.0

        def seconds(self):
            return self.now

    class Tiny(torch.nn.Module):  # a model of its own: dynamo does not trace torch.nn's modules alone
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.linear(x).relu()

    clock, model = Clock(), Tiny()
    later = CompileLater(clock, after_s=5.0, backend=None, mode=None)
    for now in (0.0, 4.9, 5.0, 9.0):
        clock.now = now
        later.on_step_begin(None, type("State", (), {"global_step": 0})(), None, model=model)
        assert later.compiled == (now >= 5.0)
    counters.clear()
    model(torch.ones(1, 2))
    assert counters["frames"]["ok"] == 1  # the module itself now runs compiled
    with pytest.raises(ValueError, match="torch_compile_after needs torch_compile"):
        PretrainConfig(torch_compile=False, torch_compile_after=30)
    with pytest.raises(ValueError, match="torch_compile_after must be >= 0 seconds, got -1"):
        PretrainConfig(torch_compile_after=-1)


@pytest.mark.slow
def test_a_compiled_run_drops_the_last_smaller_batch_instead_of_recompiling(tmp_path):
    """An epoch's smaller last batch makes torch.compile recompile the model (on an H200 that took a 30-s budget past
    48 s): compiled runs drop it by default, and keep it, recompiling, when told to; too few rows for one batch fail."""
    from torch._dynamo.utils import counters

    small = {**TINY, "builtin_stories": 60, "max_length": 32, "per_device_train_batch_size": 5, "num_train_epochs": 2,
             "eval_strategy": "no", "num_samples": 0, "story_samples": 0, "save_strategy": "no",
             "model_overrides": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                 "num_key_value_heads": 1}}
    steps, compiles = {}, {}
    for drop in (None, False):
        torch.compiler.reset()  # each run compiles as a fresh process would
        counters.clear()
        result = tp.pretrain(output_dir=str(tmp_path / str(drop)), torch_compile=True, dataloader_drop_last=drop,
                             **small)
        steps[drop], compiles[drop] = result.metrics["train_steps"], counters["frames"]["ok"]
    assert steps[False] == steps[None] + 2  # each of the 2 epochs ends in a smaller batch, dropped by default
    assert compiles[False] > compiles[None]  # ... which, kept, compiled the model again
    with pytest.raises(ValueError, match="fewer than one batch of 4096.*dataloader_drop_last=false"):
        tp.pretrain(output_dir=str(tmp_path / "few"), torch_compile=True, **{**small, "per_device_train_batch_size": 4096})


def test_model_override_typos_are_caught_with_a_suggestion():
    with pytest.raises(ValueError, match="model_overrides key 'hiden_size' is not a model field; did you mean 'hidden_size'"):
        PretrainConfig(model_overrides={"hiden_size": 64})
    assert PretrainConfig(model_overrides={"rope_theta": 1e4, "tie_word_embeddings": True}).model_overrides


def test_mistyped_local_paths_are_not_hub_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError, match="data/smal does not exist"):
        tp.load_text_dataset("data/smal")
    with pytest.raises(ValueError, match="Tokenizer folder data/tok does not exist"):
        tp.load_tokenizer("data/tok")


def test_offline_hub_names_fail_fast_with_what_to_do(monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "https://127.0.0.1:9")  # a hub that cannot be reached: a closed port
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"dataset 'someone/stories' is a hub name, but the hub \(127.0.0.1\) cannot be reached \(ConnectError\).*HF_HUB_OFFLINE=1"):
        tp.load_text_dataset("someone/stories")
    with pytest.raises(ValueError, match=r"tokenizer 'someone/tok' is a hub name.*--tokenizer PATH"):
        tp.load_tokenizer("someone/tok")
    assert time.monotonic() - start < 5
