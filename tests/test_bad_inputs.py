"""Every bad input gets one clear message naming the problem and the fix, through the CLI, with no traceback."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import tinypretrain as tp
from tinypretrain.cli import main

SMALL = ["--max_steps", "2", "--max_length", "32", "--vocab_size", "300", "--builtin_stories", "100",
         "--max_eval_samples", "4", "--eval_size", "4", "--num_samples", "0",
         "--model_overrides", '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}']


def _eot(path, texts):
    path.write_text("".join(f"{t}\n<|endoftext|>\n" for t in texts), encoding="utf-8")
    return path


def _no_eos_tokenizer(tmp_path):
    tok = tp.train_tokenizer(tp.generate_stories(50), vocab_size=300)
    bare = tok.__class__(tokenizer_object=tok.backend_tokenizer)
    bare.save_pretrained(tmp_path / "noeos")
    return str(tmp_path / "noeos")


def _case(name, tmp_path):
    """(extra CLI args, expected message) for each bad input."""
    data = tmp_path / "data"
    data.mkdir()
    if name == "empty dataset":
        (data / "train.txt").write_text("")
        return ["--dataset", str(data)], "is empty"
    if name == "empty after filtering":
        (data / "train.jsonl").write_text(json.dumps({"text": "  "}) + "\n" + json.dumps({"text": ""}) + "\n")
        return ["--dataset", str(data)], "is empty (or only blank texts)"
    if name == "missing text column":
        (data / "train.jsonl").write_text(json.dumps({"story": "Once upon a time."}) + "\n")
        return ["--dataset", str(data)], "Column 'text' not found; the dataset has ['story']"
    if name == "non-text column":
        (data / "train.jsonl").write_text(json.dumps({"text": 3}) + "\n" + json.dumps({"text": 4}) + "\n")
        return ["--dataset", str(data)], "not text. Point text_column at a string column"
    if name == "not UTF-8":
        (data / "train.txt").write_bytes("caf\xe9\n<|endoftext|>\n".encode("latin-1"))
        return ["--dataset", str(data)], "is not UTF-8 text"
    if name == "no readable files":
        (data / "notes.md").write_text("hello")
        return ["--dataset", str(data)], "No readable data files"
    if name == "max_length < 2":
        return ["--max_length", "1"], "max_length must be >= 2"
    if name == "tokenizer vocab larger than model":
        return ["--model_overrides", '{"vocab_size": 64, "hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1}'], "but the model's vocab_size is 64"
    if name == "tokenizer without EOS":
        return ["--tokenizer", _no_eos_tokenizer(tmp_path)], "has no EOS token"
    if name == "hidden not divisible by heads":
        return ["--model_overrides", '{"hidden_size": 30, "num_attention_heads": 4, "num_key_value_heads": 2}'], "not divisible by num_attention_heads"
    if name == "heads not divisible by KV heads":
        return ["--model_overrides", '{"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 3}'], "not divisible by num_key_value_heads"
    if name == "negative learning rate":
        return ["--learning_rate", "-0.1"], "learning_rate must be >= 0"
    if name == "negative batch size":
        return ["--per_device_train_batch_size", "-4"], "per_device_train_batch_size must be >= 1"
    if name == "output_dir is a file":
        (tmp_path / "taken").write_text("x")
        return ["--output_dir", str(tmp_path / "taken")], "is an existing file"
    if name == "output_dir holds another run":
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "run.json").write_text("{}")
        return ["--output_dir", str(tmp_path / "other")], "already holds files"
    if name == "unknown preset":
        return ["--preset", "gpt-5"], "unknown preset 'gpt-5'"
    if name == "unknown YAML key":
        (tmp_path / "c.yaml").write_text("learning_rat: 0.1\n")
        return [str(tmp_path / "c.yaml")], "Unknown PretrainConfig key(s) ['learning_rat']"
    if name == "missing checkpoint":
        return ["--output_dir", str(tmp_path / "new"), "--resume_from_checkpoint", "true"], "has no complete checkpoint"
    if name == "corrupt checkpoint":
        ckpt = tmp_path / "ck" / "checkpoint-3"
        ckpt.mkdir(parents=True)
        for f in ("trainer_state.json", "model.safetensors", "optimizer.pt"):
            (ckpt / f).write_text("garbage")
        return ["--output_dir", str(tmp_path / "ck"), "--resume_from_checkpoint", str(ckpt)], "is corrupt"
    raise AssertionError(name)


CASES = ["empty dataset", "empty after filtering", "missing text column", "non-text column", "not UTF-8",
         "no readable files", "max_length < 2", "tokenizer vocab larger than model", "tokenizer without EOS",
         "hidden not divisible by heads", "heads not divisible by KV heads", "negative learning rate",
         "negative batch size", "output_dir is a file", "output_dir holds another run", "unknown preset",
         "unknown YAML key", "missing checkpoint", "corrupt checkpoint"]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_gets_one_clear_message(name, tmp_path, capsys):
    extra, message = _case(name, tmp_path)
    argv = ["train", *extra] if extra and not extra[0].startswith("-") else ["train", *SMALL, *extra]
    if "--output_dir" not in argv:
        argv += ["--output_dir", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback (most recent call last)" not in err
    assert sum(line.startswith("tinypretrain: error: ") for line in err.splitlines()) == 1
    assert not (tmp_path / "out" / "run.json").exists()  # nothing half-written


def test_story_far_longer_than_max_length_is_split_not_lost(tmp_path):
    long_story = " ".join(tp.generate_stories(40, seed=3))  # thousands of tokens
    data = tmp_path / "data"
    data.mkdir()
    _eot(data / "train.txt", [long_story, *tp.generate_stories(20, seed=4)])
    _eot(data / "valid.txt", [long_story])
    result = tp.pretrain(dataset=str(data), output_dir=str(tmp_path / "out"), max_steps=2, max_length=32,
                         vocab_size=300, num_samples=0, per_device_train_batch_size=4,
                         model_overrides={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                          "num_key_value_heads": 1})
    assert result.metrics["eval_loss"] > 0  # the long eval story is scored on its first 32 tokens
    assert result.metrics["tokens_seen"] == 2 * 4 * 32


class _PoisonWeights(TrainerCallback):
    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 4:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


def test_nan_loss_stops_with_the_fix_and_keeps_the_good_checkpoint(tmp_path):
    with pytest.raises(tp.TrainingDivergedError, match=r"Loss became NaN/inf at step 5\. Lower learning_rate.*checkpoint-3"):
        tp.pretrain(output_dir=str(tmp_path), max_steps=12, logging_steps=1, save_steps=3, eval_steps=100,
                    builtin_stories=200, max_length=32, vocab_size=300, num_samples=0, callbacks=[_PoisonWeights()],
                    model_overrides={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                     "num_key_value_heads": 1})
    assert not (tmp_path / "checkpoint-6").exists()
    weights = load_file(tmp_path / "checkpoint-3" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_full_disk_keeps_the_last_checkpoint_and_names_the_disk(tmp_path, monkeypatch, capsys):
    import errno

    from transformers import Trainer

    real_save = Trainer._save_checkpoint  # the hook point is only used to inject the failure
    calls = []

    def filling_disk(self, model, trial):
        calls.append(self.state.global_step)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, model, trial)

    monkeypatch.setattr(Trainer, "_save_checkpoint", filling_disk)
    out = tmp_path / "run"
    assert main(["train", *SMALL[:1], "6", *SMALL[2:], "--save_steps", "2", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"The disk holding {out.resolve()} is full" in err and "Traceback" not in err
    assert f"last complete checkpoint is {out}/checkpoint-2" in err
    assert (out / "checkpoint-2" / "tinypretrain_complete").exists()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny model folder with its tokenizer, as a finished run leaves it."""
    folder = tmp_path_factory.mktemp("model")
    tok = tp.train_tokenizer(tp.generate_stories(60), vocab_size=300)
    tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=1, vocab_size=320)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _table_case(name, tmp_path, saved_model):
    """(argv, expected exit code, expected words) for each bad input of the CLI."""
    data = tmp_path / "data"
    data.mkdir()
    lines = [json.dumps({"text": f"Story {i}."}) for i in range(1, 121)]
    if name == "malformed JSON line":
        (data / "train.jsonl").write_text("\n".join([*lines, '{"text": "broken', *lines[:3]]) + "\n")
        return ["train", "--dataset", str(data)], 2, "train.jsonl line 121 is not valid JSON"
    if name == "a text that is a number":
        (data / "train.jsonl").write_text("\n".join([lines[0], json.dumps({"text": 5}), lines[1]]) + "\n")
        return ["train", "--dataset", str(data)], 2, "train.jsonl line 2: 'text' holds 5 (int), not a string"
    if name == "a .json object of columns":
        (data / "train.json").write_text(json.dumps({"text": ["a story.", "another story."]}))
        return ["train", "--dataset", str(data)], 2, "holds one JSON object of columns; a .json file must hold a list"
    if name == "an empty file":
        (data / "train.txt").write_text("")
        return ["train", "--dataset", str(data)], 2, f"its files ({data / 'train.txt'}) hold no texts"
    if name == "a separator-only file":
        (data / "train.txt").write_text("<|endoftext|>\n\n<|endoftext|>\n")
        return ["train", "--dataset", str(data)], 2, f"its files ({data / 'train.txt'}) hold no texts"
    if name == "a folder without a tokenizer":
        return ["train", "--tokenizer", str(data)], 2, "holds no tokenizer (no tokenizer.json or tokenizer_config.json)"
    if name == "tokenizer train from a missing input":
        return (["tokenizer", "train", "--input", "nonexist", "--output", str(tmp_path / "tok")], 2,
                "--input nonexist does not exist; pass a corpus file")
    if name == "tokenizer train into a run folder":
        (data / "run.json").write_text("{}")
        return (["tokenizer", "train", "--input", str(saved_model / "tokenizer.json"), "--output", str(data)], 2,
                "is a tinypretrain run folder")
    if name == "an abbreviated flag":
        return ["train", "--recip", "seed"], 2, "--recip (did you mean --recipe?)"
    if name == "an ambiguous abbreviation":
        return ["train", "--max_t", "5m"], 2, "--max_t (did you mean --max_time?)"
    if name == "top_p above 1":
        return ["generate", str(saved_model), "--top_p", "1.5"], 2, "top_p must be in (0, 1]"
    if name == "top_p of 0":
        return ["generate", str(saved_model), "--top_p", "0"], 2, "top_p must be in (0, 1]"
    if name == "negative top_k":
        return ["generate", str(saved_model), "--top_k", "-1"], 2, "top_k and temperature must be >= 0"
    if name == "negative max_samples":
        return ["eval", str(saved_model), "--dataset", str(data), "--max_samples", "-5"], 2, "--max_samples must be >= 1"
    if name == "an infinite token budget":
        return (["sweep", "--presets", "cpu-2m", "--budgets", "inf", "--budget_kind", "tokens", "--output_dir",
                 str(tmp_path / "s")], 2, "A token budget must be a positive number")
    raise AssertionError(name)


TABLE = ["malformed JSON line", "a text that is a number", "a .json object of columns", "an empty file",
         "a separator-only file", "a folder without a tokenizer", "tokenizer train from a missing input",
         "tokenizer train into a run folder", "an abbreviated flag", "an ambiguous abbreviation", "top_p above 1",
         "top_p of 0", "negative top_k", "negative max_samples", "an infinite token budget"]


@pytest.mark.parametrize("name", TABLE)
def test_every_bad_input_is_one_line_with_the_documented_exit_code(name, tmp_path, saved_model, capsys):
    argv, code, words = _table_case(name, tmp_path, saved_model)
    if argv[0] == "train":
        argv += [*SMALL, "--output_dir", str(tmp_path / "out")]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err
    assert words in err, err
    assert "Traceback" not in err and sum(line.startswith("tinypretrain: error: ") for line in err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_a_bom_is_not_text_and_unclaimed_files_are_named(tmp_path, caplog):
    (tmp_path / "train.txt").write_bytes("\ufeffOnce upon a time.\n<|endoftext|>\nThe end.\n".encode())
    (tmp_path / "stories.txt").write_text("Not in any split.\n")
    texts = tp.load_text_dataset(tmp_path)["text"]
    assert texts == ["Once upon a time.", "The end."]
    assert "no split claims stories.txt" in caplog.text


def test_temperature_zero_is_greedy(saved_model, capsys):
    outputs = []
    for seed in ("1", "2"):
        assert main(["generate", str(saved_model), "--temperature", "0", "--max_new_tokens", "8", "--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
