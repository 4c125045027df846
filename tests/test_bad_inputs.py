"""Every bad input gets one clear message naming the problem and the fix, through the CLI, with no traceback."""

import json

import pytest
import torch
from safetensors.torch import load_file

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


class _PoisonWeights(tp.train.TrainerCallback):
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
