"""max_time: parsing, the time-based schedule, stopping at the deadline, and resume keeping the time spent."""

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tinypretrain as tp
from tinypretrain.config.budget import TIME_SCHEDULES, budget_settings, parse_duration
from tinypretrain.train.budget import schedule_factor

BUDGET_SETTINGS = budget_settings(on_cpu=True)

TINY = {"builtin_stories": 300, "max_length": 32, "vocab_size": 300, "max_eval_samples": 8, "eval_size": 8,
        "num_samples": 0, "per_device_train_batch_size": 4, "logging_steps": 1,
        "model_overrides": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                            "num_key_value_heads": 1}}


@given(st.floats(0.01, 1e5), st.sampled_from(["", "s", "m", "h"]))
def test_durations(number, unit):
    text = f"{number:.3f}{unit}"
    assert parse_duration(text) == pytest.approx(float(f"{number:.3f}") * {"": 1, "s": 1, "m": 60, "h": 3600}[unit])


@pytest.mark.parametrize("bad", ["", "ten", "5 minutes", "-3", "0", "3d", "1h30m"])
def test_bad_durations_name_the_format(bad):
    with pytest.raises(ValueError, match="max_time must be a positive number of seconds or a duration like '90s'"):
        parse_duration(bad)
    with pytest.raises(ValueError, match="max_time must be"):
        tp.PretrainConfig(max_time=bad)


@given(st.sampled_from(TIME_SCHEDULES), st.floats(0, 0.5), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
def test_schedule_shapes(kind, warmup, decay, p, q):
    lo, hi = sorted((p, q))
    f = lambda x: schedule_factor(kind, x, warmup, decay)  # noqa: E731
    assert 0.0 <= f(lo) <= 1.0
    if lo >= warmup:  # after warmup the rate never rises
        assert f(hi) <= f(lo) + 1e-12
    if kind in ("linear", "cosine") or (kind == "warmup_stable_decay" and decay > 0):
        assert f(1.0) == pytest.approx(0.0, abs=1e-12)  # the end value, reached at the deadline
    if kind == "warmup_stable_decay" and warmup <= lo <= 1 - decay:
        assert f(lo) == 1.0  # stable phase at the peak


def _history(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_deadline_stops_training_and_the_rate_ends_at_zero(tmp_path):
    # eval_steps given, so evaluations keep their cadence instead of sharing 10% of the budget with saves
    result = tp.pretrain(output_dir=str(tmp_path / "run"), max_time="3s", decay_fraction=0.5, eval_steps=0.2, **TINY)
    spent = result.metrics["train_seconds"]
    assert 3.0 <= spent < 6.0
    rates = [h["learning_rate"] for h in _history(result.output_dir) if "learning_rate" in h]
    peak = BUDGET_SETTINGS["learning_rate"]
    assert max(rates) == pytest.approx(peak, rel=0.05)  # the peak is reached
    # the budget's warmup on CPU counts steps, not a share of the budget: the rate climbs over the first 20
    warmup = BUDGET_SETTINGS["warmup_steps"]
    climb = {h["step"]: h["learning_rate"] / peak for h in _history(result.output_dir) if "learning_rate" in h}
    assert warmup == 20 and all(climb[s] <= s / warmup + 1e-9 for s in range(1, warmup + 1))
    assert [climb[s + 1] - climb[s] for s in range(1, warmup - 1)] == pytest.approx([1 / warmup] * (warmup - 2))
    # the scheduler stepped at the deadline sits at the end value, 0 (saved in the checkpoint taken there); it stepped
    # a moment before the clock was read for the stop, so it may be a hair above
    steps = result.metrics["train_steps"]
    scheduler = torch.load(result.output_dir / f"checkpoint-{steps}" / "scheduler.pt", weights_only=True)
    assert max(scheduler["_last_lr"]) < 0.01 * peak
    config = json.loads((result.output_dir / "run.json").read_text())["config"]
    # the budget's own settings filled the fields left at their defaults; the one given was kept
    assert (config["max_time"], config["lr_scheduler_type"], config["decay_fraction"]) == (
        "3s", "warmup_stable_decay", 0.5)
    assert (result.output_dir / f"checkpoint-{steps}" / "tinypretrain_complete").exists()  # resumable
    evals = [h for h in _history(result.output_dir) if "eval_loss" in h]
    assert len(evals) >= 4 and evals[-1]["step"] == steps  # every 0.2 of the time, and once after the end


def test_resume_counts_the_time_already_spent(tmp_path):
    out = tmp_path / "run"
    first = tp.pretrain(output_dir=str(out), max_time="2s", **TINY)
    assert 2.0 <= first.metrics["train_seconds"] < 4.0
    resumed = tp.pretrain(output_dir=str(out), max_time="4s", resume_from_checkpoint="true", **TINY)
    assert 4.0 <= resumed.metrics["train_seconds"] < 6.5  # 2 s before the resume + about 2 s after it
    assert resumed.metrics["train_steps"] > first.metrics["train_steps"]
    assert math.isfinite(resumed.metrics["eval_loss"])


def test_clock_stops_while_paused_and_nests(monkeypatch):
    from tinypretrain.train.clock import TrainingClock

    now = [100.0]
    monkeypatch.setattr("tinypretrain.train.clock.time.monotonic", lambda: now[0])
    clock = TrainingClock()
    clock.spent_before = 5.0
    clock.start()
    now[0] += 2
    clock.pause()  # a checkpoint
    with clock.paused():  # an evaluation inside it
        now[0] += 10
    now[0] += 3  # still saving
    clock.resume()
    now[0] += 1
    assert clock.seconds() == 5.0 + 2 + 1


def test_ranks_agree_by_a_tensor_all_reduce_about_twice_a_second(monkeypatch):
    """Several processes compare notes through one small all-reduce every ~0.5 s of training, never by pickling an
    object every step (which cost a host sync and a broadcast per step)."""
    import torch

    from tinypretrain.train import clock as clock_module
    from tinypretrain.train import signals
    from tinypretrain.train.clock import TrainingClock
    from tinypretrain.train.signals import RankAgreement

    class TwoRanks:
        num_processes, is_main_process, device = 2, True, torch.device("cpu")

    calls = []

    def all_reduce(tensor, op=None):
        calls.append(tensor.clone())
        tensor[1] = 1.0 if len(calls) == 5 else tensor[1]  # another rank got a signal before the fifth exchange

    now = [0.0]
    monkeypatch.setattr(signals, "PartialState", TwoRanks)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    monkeypatch.setattr(clock_module.time, "monotonic", lambda: now[0])
    clock = TrainingClock()
    clock.start()
    agreement = RankAgreement(clock)
    agreed = {}
    for step in range(1, 401):
        now[0] += 0.01  # 10 ms steps: ~50 steps per half second
        if agreement.at_step(step) is not None:
            agreed[step] = agreement.at_step(step)  # asked again at the same step: no second exchange
    agreed_at = list(agreed)
    assert len(calls) == len(agreed_at) and 5 <= len(calls) <= 20  # not 400
    assert all(b - a >= 40 for a, b in zip(agreed_at[2:], agreed_at[3:])), agreed_at  # after measuring, ~every 50 steps
    assert [a.signalled for a in agreed.values()][3:5] == [False, True]  # any rank's signal reaches every rank
