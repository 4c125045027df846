"""kill -9 during training, resume, and compare with an uninterrupted run of the same seed."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

FLAGS = [
    "--builtin_stories", "1500", "--max_length", "64", "--vocab_size", "400", "--max_eval_samples", "16",
    "--eval_size", "16", "--per_device_train_batch_size", "8", "--max_steps", "240", "--save_steps", "40",
    "--eval_steps", "120", "--logging_steps", "10", "--num_samples", "1", "--save_total_limit", "2",
    "--model_overrides", '{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}',
]


def _train(out, *extra):
    return [sys.executable, "-m", "tinypretrain", "train", "--output_dir", str(out), *FLAGS, *extra]


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _kill_after_checkpoint(command, checkpoint):
    """Start ``command`` and kill -9 it once ``checkpoint`` is complete."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (checkpoint / "tinypretrain_complete").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    crashed, full = tmp_path / "crashed", tmp_path / "full"
    _kill_after_checkpoint(_train(crashed), crashed / "checkpoint-80")
    assert not (crashed / "run.json").exists()

    subprocess.run(_train(crashed, "--resume_from_checkpoint", "true"), check=True, capture_output=True)
    subprocess.run(_train(full), check=True, capture_output=True)

    a, b = load_file(crashed / "model.safetensors"), load_file(full / "model.safetensors")
    max_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert max_diff == 0.0, f"resumed weights differ from the uninterrupted run by {max_diff}"
    assert _losses(crashed) == _losses(full)
    resumed, straight = (json.loads((d / "run.json").read_text())["metrics"] for d in (crashed, full))
    assert resumed["train_steps"] == 240
    # the record covers both processes: the loss of every step, all tokens, both processes' time
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-9)
    assert resumed["tokens_seen"] == straight["tokens_seen"] == 240 * 8 * 64
    assert resumed["wall_time_s"] > resumed["train_seconds"] > 0.5 * straight["train_seconds"]


def test_resume_skips_a_checkpoint_killed_mid_save(tmp_path):
    from tinypretrain.train.checkpoint import COMPLETE_MARKER, last_complete_checkpoint

    for step, complete in ((10, True), (20, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / COMPLETE_MARKER).write_text(str(step))
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_corrupt_checkpoint_is_refused_with_the_fix(tmp_path):
    import tinypretrain as tp
    from tinypretrain.train.checkpoint import COMPLETE_MARKER

    ckpt = tmp_path / "checkpoint-5"
    ckpt.mkdir()
    (ckpt / COMPLETE_MARKER).write_text("5")
    (ckpt / "trainer_state.json").write_text("{}")
    (ckpt / "optimizer.pt").write_bytes(b"")
    (ckpt / "model.safetensors").write_bytes(os.urandom(64))
    with pytest.raises(ValueError, match=r"checkpoint-5 is corrupt .*Delete it to resume from an earlier checkpoint"):
        tp.pretrain(output_dir=str(tmp_path), max_steps=1, resume_from_checkpoint="true", builtin_stories=50)


@pytest.mark.slow
def test_resume_at_the_edges_and_refused_changes(tmp_path):
    """A kill during the final save leaves the last checkpoint complete and the final files missing: resuming
    completes the artifacts without training another step. A resume with another layout is refused."""
    import json
    import shutil

    import tinypretrain as tp

    tiny = dict(builtin_stories=200, max_length=32, vocab_size=300, max_eval_samples=4, eval_size=4, num_samples=0,
                per_device_train_batch_size=4, save_steps=3, eval_steps=3,
                model_overrides={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                 "num_key_value_heads": 1})
    full = tp.pretrain(output_dir=str(tmp_path / "full"), max_steps=6, **tiny)
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "full" / "checkpoint-6", cut / "checkpoint-6")  # killed during the final save
    resumed = tp.pretrain(output_dir=str(cut), max_steps=6, resume_from_checkpoint="true", **tiny)
    assert resumed.metrics["train_steps"] == 6 and resumed.metrics["tokens_seen"] == full.metrics["tokens_seen"]
    final, again_final = load_file(tmp_path / "full" / "model.safetensors"), load_file(cut / "model.safetensors")
    assert all((final[k] == again_final[k]).all() for k in final)
    assert json.loads((cut / "run.json").read_text())["metrics"]["eval_loss"] == pytest.approx(
        full.metrics["eval_loss"], abs=1e-6)

    for change, names in (({"max_length": 16}, "max_length: 32 -> 16"),
                          ({"per_device_train_batch_size": 2}, "per_device_train_batch_size: 4 -> 2"),
                          ({"bf16": True}, "bf16: False -> True"),
                          ({"dataloader_drop_last": True}, "dataloader_drop_last: False -> True"),
                          ({"model_overrides": {**tiny["model_overrides"], "hidden_size": 64}}, "hidden_size: 32 -> 64")):
        with pytest.raises(ValueError, match=f"other settings \\(.*{re.escape(names)}.*allow_resume_changes=true"):
            tp.pretrain(output_dir=str(cut), max_steps=9, resume_from_checkpoint="true", **{**tiny, **change})
    again = tp.pretrain(output_dir=str(cut), max_steps=9, resume_from_checkpoint="true",
                        **{**tiny, "per_device_train_batch_size": 2, "allow_resume_changes": True})
    assert again.metrics["train_steps"] == 9


STREAM_FLAGS = [
    "--streaming", "true", "--max_length", "64", "--vocab_size", "400", "--max_eval_samples", "16", "--eval_size", "16",
    "--per_device_train_batch_size", "8", "--max_steps", "1000", "--save_steps", "100", "--eval_steps", "500",
    "--logging_steps", "50", "--num_samples", "1", "--save_total_limit", "2",
    "--model_overrides", '{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}',
]


@pytest.mark.slow
def test_a_killed_streamed_run_resumes_where_it_was_without_reading_a_text_twice(tmp_path):
    """kill -9 a streamed run in its second pass over the corpus, resume: the weights and losses of an uninterrupted
    run, and the texts the two processes read add up to the texts the uninterrupted run read (none twice)."""
    import tinypretrain as tp

    corpus = tmp_path / "train.txt"
    corpus.write_text("".join(story + "<|endoftext|>" for story in tp.generate_stories(1500, seed=3)))
    crashed, full = tmp_path / "crashed", tmp_path / "full"

    def train(out, *extra):
        return [sys.executable, "-m", "tinypretrain", "train", "--dataset", str(corpus), "--output_dir", str(out),
                *STREAM_FLAGS, *extra]

    _kill_after_checkpoint(train(crashed), crashed / "checkpoint-700")

    subprocess.run(train(crashed, "--resume_from_checkpoint", "true"), check=True, capture_output=True)
    subprocess.run(train(full), check=True, capture_output=True)

    a, b = load_file(crashed / "model.safetensors"), load_file(full / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert _losses(crashed) == _losses(full)
    resumed, straight = (json.loads((d / "run.json").read_text())["run"]["data"]["stream"] for d in (crashed, full))
    texts_per_pass = 1500 - 16  # the first 16 texts are held out for evaluation
    assert resumed["resumed_at"]["blocks"] == 700 * 8 and resumed["resumed_at"]["texts"] > texts_per_pass
    # the resumed process read only texts after the checkpoint's position: together, exactly the texts of one run
    assert resumed["resumed_at"]["texts"] + resumed["texts_read"] == straight["texts_read"]
