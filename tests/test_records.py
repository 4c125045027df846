"""Honest records: resuming a finished run changes nothing, resumed runs count every process, an edited card survives
--overwrite_output_dir, signals after the last step say what happened; determinism; compute accounting."""

import json
import logging
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import tinypretrain as tp
from tinypretrain.cli import main
from tinypretrain.model.compute import flops_per_token

TINY = ["--builtin_stories", "300", "--max_length", "32", "--vocab_size", "300", "--max_eval_samples", "4",
        "--eval_size", "4", "--num_samples", "0", "--story_samples", "2", "--per_device_train_batch_size", "4",
        "--logging_steps", "1",
        "--model_overrides", '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}']
RECORDS = ("run.json", "README.md", "metrics.jsonl", "loss.png", "model.safetensors")


def _snapshot(out):
    return {name: ((out / name).read_bytes(), (out / name).stat().st_mtime_ns) for name in RECORDS}


def _train_then_resume(out, capsys, budget, resumed_budget):
    """Train to ``budget`` (a flag and value), then resume with ``resumed_budget``: (exit code, output, records
    before the resume)."""
    assert main(["train", *TINY, *budget, "--output_dir", str(out)]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    code = main(["train", *TINY, *resumed_budget, "--output_dir", str(out), "--resume_from_checkpoint", "true"])
    return code, capsys.readouterr(), before


def test_resuming_a_finished_run_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured, before = _train_then_resume(out, capsys, ["--max_steps", "4"], ["--max_steps", "4"])
    assert code == 0
    assert "is already complete (step 4); nothing was trained or written" in captured.out and "eval loss" in captured.out
    assert _snapshot(out) == before


def test_a_budget_below_the_time_already_trained_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured, before = _train_then_resume(out, capsys, ["--max_time", "2"], ["--max_time", "1"])
    err = captured.err
    assert code == 2 and "max_time 1 is less than the" in err and "already trained" in err and _snapshot(out) == before
    # the run's own budget: already complete
    assert main(["train", *TINY, "--max_time", "2", "--output_dir", str(out), "--resume_from_checkpoint", "true"]) == 0
    assert _snapshot(out) == before


def test_a_resumed_run_records_every_process(tmp_path):
    constant = ["--lr_scheduler_type", "constant", "--warmup_steps", "0", "--save_steps", "4", "--eval_steps", "8"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", *TINY, *constant, "--max_steps", "8", "--output_dir", str(straight)]) == 0
    assert main(["train", *TINY, *constant, "--max_steps", "4", "--output_dir", str(split)]) == 0
    assert main(["train", *TINY, *constant, "--max_steps", "8", "--output_dir", str(split),
                 "--resume_from_checkpoint", "true"]) == 0
    a, b = (json.loads((d / "run.json").read_text())["metrics"] for d in (straight, split))
    assert b["train_steps"] == 8 and b["tokens_seen"] == a["tokens_seen"] == 8 * 4 * 32
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)  # both processes' steps, not the last one's
    first = json.loads((split / "checkpoint-4" / "tinypretrain_complete").read_text())
    assert b["train_seconds"] > first["train_seconds"] and b["wall_time_s"] > first["wall_seconds"]
    assert b["train_tokens_per_s"] == pytest.approx(b["tokens_seen"] / b["train_seconds"])


def test_overwrite_keeps_a_card_the_user_edited(tmp_path, caplog):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--max_steps", "2", "--output_dir", str(out)]) == 0
    card = out / "README.md"
    card.write_text(card.read_text() + "\nMy notes on this model.\n")
    edited = card.read_text()
    assert main(["train", *TINY, "--max_steps", "3", "--output_dir", str(out), "--overwrite_output_dir", "true"]) == 0
    assert card.read_text() == edited and "was edited after tinypretrain wrote it: kept" in caplog.text
    assert json.loads((out / "run.json").read_text())["metrics"]["train_steps"] == 3


SLOW_FINISH = """
import pathlib, sys, time
import tinypretrain.train.run as train
finish = train._record
def slow_finish(*args, **kwargs):
    pathlib.Path(sys.argv[1]).write_text("finishing")
    time.sleep(3)
    return finish(*args, **kwargs)
train._record = slow_finish
from tinypretrain.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("signals", [(signal.SIGINT,), (signal.SIGTERM,), (signal.SIGINT, signal.SIGINT)])
def test_a_signal_after_the_last_step_tells_the_truth(tmp_path, signals):
    out, marker = tmp_path / "run", tmp_path / "finishing"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_FINISH, str(marker), "train", *TINY, "--max_steps", "3",
                             "--output_dir", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.3)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signals[-1].value
    if len(signals) == 1:  # the run is completed first, and says so
        assert f"{signals[0].name} received after the last step (step 3); the run was completed first" in err
        assert (out / "run.json").exists() and (out / "model.safetensors").exists()
    else:  # a second signal stops at once, naming the checkpoint to resume from
        assert "while writing the final model; the last complete checkpoint is" in err and "checkpoint-3" in err
        assert not (out / "run.json").exists() and (out / "checkpoint-3" / "tinypretrain_complete").exists()
    assert "nothing was saved" not in err and "Traceback" not in err


def test_the_same_seed_gives_bit_identical_weights_and_the_output_is_quiet_unless_verbose(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="tinypretrain")
    runs, printed = [tmp_path / "a", tmp_path / "b"], []
    for out, extra in zip(runs, ([], ["--verbose", "true"])):  # verbose changes the output, never the training
        assert main(["train", *TINY, "--max_steps", "6", "--output_dir", str(out), *extra]) == 0
        captured = capsys.readouterr()
        printed.append(captured.out + captured.err + caplog.text)
        caplog.clear()
    # the summary: training-only rate and time, and what the wall time spent outside training
    assert "s of training at " in printed[0] and "s outside training (data, evaluations, saves, records)" in printed[0]
    # one parameter line (total, non-embedding, bytes); the per-tensor table only with --verbose
    assert "parameters (" in printed[0] and "non-embedding" in printed[0] and " MiB" in printed[0]
    assert "model.layers.0." not in printed[0] and "model.layers.0." in printed[1]
    a, b = (load_file(out / "model.safetensors") for out in runs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# The first 20 training losses of a tiny fixed run (torch 2.13 CPU, fp32). A change to the maths of data, model,
# init, loss or optimizer moves them; regenerate only for a change meant to alter training (last: zero-init
# projections on by default, 2026-12-03).
GOLDEN_LOSSES = [
    7.0333075523376465, 7.0209784507751465, 6.5184125900268555, 6.77420711517334, 6.303466796875,
    5.823275566101074, 5.848316192626953, 5.530676364898682, 5.655472278594971, 5.110851287841797,
    5.0853590965271, 4.9571099281311035, 4.970005035400391, 4.989455699920654, 4.71661901473999,
    4.874502658843994, 4.462812900543213, 4.432747840881348, 4.599673271179199, 4.545508861541748,
]


def test_golden_curve(tmp_path):
    out = tmp_path / "golden"
    assert main(["train", *TINY, "--max_steps", "20", "--output_dir", str(out), "--eval_steps", "20"]) == 0
    losses = [h["loss"] for h in map(json.loads, (out / "metrics.jsonl").open()) if "loss" in h][:20]
    assert losses == pytest.approx(GOLDEN_LOSSES, abs=1e-5)


def test_flops_per_token_matches_a_count_of_the_real_kernels():
    from torch.utils.flop_counter import FlopCounterMode

    model = tp.build_model(tp.make_llama_config(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                                num_key_value_heads=2, vocab_size=512))
    seq = 128
    ids = torch.randint(0, 512, (2, seq))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    measured = counter.get_total_flops() / ids.numel()
    assert flops_per_token(model, seq) == pytest.approx(measured, rel=0.25)
    # the formula: 6 x matmul weights (output head included, embedding lookup not) + 12 x layers x hidden x seq
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert flops_per_token(model, seq) == 6 * matmul + 12 * 2 * 128 * seq


def test_run_json_accounts_for_compute(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--max_steps", "3", "--output_dir", str(out), "--peak_flops", "1e11"]) == 0
    record = json.loads((out / "run.json").read_text())
    compute, metrics = record["compute"], record["metrics"]
    assert compute["total_flops"] == compute["flops_per_token"] * metrics["tokens_seen"]
    assert compute["achieved_flops_per_s"] == pytest.approx(compute["total_flops"] / metrics["train_seconds"])
    assert compute["mfu"] == pytest.approx(compute["achieved_flops_per_s"] / 1e11)
    assert compute["peak_source"] == "peak_flops" and "MFU" in (out / "README.md").read_text()


def test_a_damaged_or_older_checkpoint_record_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--max_steps", "4", "--save_steps", "2", "--output_dir", str(out)]) == 0
    marker = out / "checkpoint-4" / "tinypretrain_complete"
    resume = ["train", *TINY, "--max_steps", "6", "--save_steps", "2", "--output_dir", str(out),
              "--resume_from_checkpoint", str(out / "checkpoint-4")]
    for text, words in ((marker.read_text()[:20], "cannot be read"), ('{"step": 4}', "written by an older tinypretrain")):
        marker.write_text(text)  # a write cut off by a kill (markers are written atomically now), or an old format
        capsys.readouterr()
        assert main(resume) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 2
