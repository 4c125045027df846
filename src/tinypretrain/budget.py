"""When training stops: ``max_time`` budgets (a clock that survives resume, a learning-rate schedule that ends at the
deadline, evaluations and saves by the clock) and preemption (SIGTERM/SIGINT end the step, checkpoint and stop)."""

from __future__ import annotations

import math
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from transformers import TrainerCallback

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
# Shapes of the rate after warmup, as a function of the fraction of the budget spent. transformers' schedulers
# count steps, and a time budget has no step count, hence these.
TIME_SCHEDULES = ("constant_with_warmup", "constant", "linear", "cosine", "warmup_stable_decay")


# What a time-budgeted run uses for each of these fields left at its default, chosen by equal-time runs on 2 CPU
# cores (benchmarks/RESULTS.md, "Budget defaults"; docs/budget.md). A budget wants the rate to end at the deadline,
# and a short run wants a higher peak than a long one. The schedule applies on every device; the peak rate and the
# shape were measured on CPU only, so on other devices the step-budgeted defaults stand.
BUDGET_SCHEDULE = {"lr_scheduler_type": "warmup_stable_decay", "decay_fraction": 0.4}
CPU_BUDGET_SETTINGS = {"learning_rate": 4e-3}


def budget_settings(on_cpu: bool) -> dict[str, object]:
    """The field values a time-budgeted run takes for fields left at their defaults."""
    return {**BUDGET_SCHEDULE, **(CPU_BUDGET_SETTINGS if on_cpu else {})}


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``value``: a number of seconds, or a number with a unit, as in ``"90s"``, ``"10m"``, ``"2h"``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"max_time must be a positive number of seconds or a duration like '90s', '10m', '2h'; got {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


class TrainingClock:
    """Seconds spent training (steps, not evaluations or checkpoint saves), in this process plus what earlier
    (resumed) processes of the run spent."""

    def __init__(self) -> None:
        self.spent_before = 0.0
        self._started: float | None = None
        self._paused_at: float | None = None
        self._pauses = 0  # nested: an evaluation inside a checkpoint's pause keeps the clock stopped

    def start(self) -> None:
        self._started, self._paused_at, self._pauses = time.monotonic(), None, 0

    def pause(self) -> None:
        self._pauses += 1
        if self._started is not None and self._paused_at is None:
            self._paused_at = time.monotonic()

    def resume(self) -> None:
        self._pauses = max(0, self._pauses - 1)
        if self._pauses == 0 and self._paused_at is not None:
            self._started += time.monotonic() - self._paused_at
            self._paused_at = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def seconds(self) -> float:
        if self._started is None:
            return self.spent_before
        return self.spent_before + (self._paused_at or time.monotonic()) - self._started


def schedule_factor(kind: str, progress: float, warmup: float, decay_fraction: float) -> float:
    """The multiplier of the peak rate once ``progress`` (0..1) of the budget is spent, after a linear warmup over
    the first ``warmup`` of it. ``warmup_stable_decay`` holds the peak, then decays linearly to 0 over the last
    ``decay_fraction``."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return progress / warmup
    if kind == "linear":
        return 1.0 - progress
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "warmup_stable_decay" and decay_fraction > 0:
        return min(1.0, (1.0 - progress) / decay_fraction)
    return 1.0


class TimeBudget(TrainerCallback):
    """Stop (and checkpoint) once the clock reaches ``budget_s``; evaluate and save every ``eval_every`` /
    ``save_every`` fraction of the budget. All ranks act on rank 0's clock, so they stop at the same step."""

    def __init__(self, clock: TrainingClock, budget_s: float, eval_every: float | None, save_every: float | None):
        self.clock, self.budget_s = clock, budget_s
        self.eval_every, self.save_every = eval_every, save_every
        self._last_seconds = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_seconds = self.clock.spent_before

    def on_step_end(self, args, state, control, **kwargs):
        seconds = rank0_value(self.clock.seconds())
        before, now = self._last_seconds / self.budget_s, seconds / self.budget_s
        self._last_seconds = seconds
        if self.eval_every and math.floor(now / self.eval_every) > math.floor(before / self.eval_every):
            control.should_evaluate = True
        if self.save_every and math.floor(now / self.save_every) > math.floor(before / self.save_every):
            control.should_save = True
        if now >= 1.0:
            control.should_training_stop = True
            control.should_save = True


def rank0_value(value):
    """Rank 0's ``value`` on every rank (one small broadcast; free in a single process), so ranks decide alike."""
    if PartialState().num_processes > 1:
        return broadcast_object_list([value], from_process=0)[0]
    return value


class TrainingInterrupted(Exception):
    """A signal stopped the run after a complete checkpoint; resuming continues it exactly."""

    def __init__(self, signal_name: str, step: int, exit_code: int) -> None:
        super().__init__(f"stopped by {signal_name} at step {step}; resume with --resume_from_checkpoint true")
        self.exit_code = exit_code


class StopOnSignal(TrainerCallback):
    """While installed, SIGTERM (how clusters and spot instances stop jobs) and SIGINT (Ctrl-C) let the current step
    finish, then save a checkpoint and stop training; ``received`` names the signal."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[int, object] = {}

    @contextmanager
    def installed(self) -> Iterator[None]:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        try:
            yield
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum)

    def on_step_end(self, args, state, control, **kwargs):
        if rank0_value(self.received is not None):  # every rank stops at rank 0's step
            self.received = self.received or signal.SIGTERM
            control.should_save = True
            control.should_training_stop = True
