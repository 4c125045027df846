"""When training stops: ``max_time`` budgets (a clock that survives resume, a learning-rate schedule that ends at the
deadline, evaluations and saves by the clock) and preemption (SIGTERM/SIGINT end the step, checkpoint and stop)."""

from __future__ import annotations

import math
import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from accelerate import PartialState
from transformers import TrainerCallback

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
# Shapes of the rate after warmup, as a function of the fraction of the budget spent. transformers' schedulers
# count steps, and a time budget has no step count, hence these.
TIME_SCHEDULES = ("constant_with_warmup", "constant", "linear", "cosine", "warmup_stable_decay")


# What a time-budgeted run uses for each of these fields that neither you nor the recipe set, chosen by equal-time
# runs on 2 CPU cores (benchmarks/RESULTS.md, "Budget defaults"; docs/budget.md). A budget wants the rate to end at the deadline,
# and a short run wants a higher peak than a long one. The schedule applies on every device; the peak rate and the
# shape were measured on CPU only, so on other devices the step-budgeted defaults stand.
BUDGET_SCHEDULE = {"lr_scheduler_type": "warmup_stable_decay", "decay_fraction": 0.4}
CPU_BUDGET_SETTINGS = {"learning_rate": 4e-3}


def budget_settings(on_cpu: bool) -> dict[str, object]:
    """The field values a time-budgeted run takes for the fields that neither you nor its recipe set."""
    return {**BUDGET_SCHEDULE, **(CPU_BUDGET_SETTINGS if on_cpu else {})}


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``value``: a number of seconds, or a number with a unit, as in ``"90s"``, ``"10m"``, ``"2h"``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"max_time must be a positive number of seconds or a duration like '90s', '10m', '2h'; got {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


class TrainingClock:
    """Seconds spent training (steps, not evaluations or checkpoint saves), in this process plus what earlier
    (resumed) processes of the run spent; apart, the seconds this process spent paused; and the run's wall time."""

    def __init__(self) -> None:
        self.spent_before = self.wall_before = 0.0  # what earlier processes of the run spent
        self.paused_seconds = 0.0  # evaluations and saves while training, in this process
        self._process_start = time.monotonic()
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
            paused = time.monotonic() - self._paused_at
            self._started += paused
            self.paused_seconds += paused
            self._paused_at = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def wall_seconds(self) -> float:
        """Wall time of the run: this process so far, plus the earlier processes up to their last checkpoint."""
        return self.wall_before + time.monotonic() - self._process_start

    def seconds(self) -> float:
        if self._started is None:
            return self.spent_before
        return self.spent_before + (self._paused_at or time.monotonic()) - self._started


OVERHEAD_SHARE = 0.1  # of a time budget, at most this much goes to evaluations and saves during training


class OverheadAllowance:
    """What a time-budgeted run may still spend on evaluations and saves during training (``OVERHEAD_SHARE`` of the
    budget), and what each kind cost last time, so one is started only when it fits."""

    def __init__(self, clock: TrainingClock, budget_s: float, kinds: set[str]) -> None:
        self.clock, self.limit, self.kinds = clock, OVERHEAD_SHARE * budget_s, kinds  # kinds: "evaluate", "save"
        self.cost: dict[str, float] = {}
        self.skipped: dict[str, int] = dict.fromkeys(kinds, 0)

    def left(self) -> float:
        return self.limit - self.clock.paused_seconds

    def fits(self, kind: str) -> bool:
        """Whether an evaluation or a save fits in what is left (the first evaluation is tried with a deadline);
        kinds whose cadence you set always fit."""
        if kind not in self.kinds:
            return True
        fits = self.left() > 0 and self.cost.get(kind, 0.0) <= self.left()
        self.skipped[kind] += not fits
        return fits


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
    ``save_every`` fraction of the budget, and, with an ``allowance``, only while they fit in it. All ranks act on
    rank 0's clock, so they stop at the same step."""

    def __init__(self, clock: TrainingClock, budget_s: float, eval_every: float | None, save_every: float | None,
                 allowance: OverheadAllowance | None = None, agreement: RankAgreement | None = None):
        self.clock, self.budget_s, self.allowance = clock, budget_s, allowance
        self.eval_every, self.save_every = eval_every, save_every
        self.agreement = agreement or RankAgreement(clock)
        self._last_seconds = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_seconds = self.clock.spent_before

    def on_step_end(self, args, state, control, **kwargs):
        agreed = self.agreement.at_step(state.global_step)
        if agreed is None:
            return
        seconds = agreed.seconds
        before, now = self._last_seconds / self.budget_s, seconds / self.budget_s
        self._last_seconds = seconds
        if now >= 1.0:  # the final evaluation runs after training, outside the budget's clock
            control.should_training_stop = True
            control.should_save = True
            return
        for every, kind in ((self.eval_every, "evaluate"), (self.save_every, "save")):
            if every and math.floor(now / every) > math.floor(before / every):
                if self.allowance is None or self.allowance.fits(kind):
                    setattr(control, f"should_{kind}", True)


class RankAgreement:
    """Rank 0's clock reading and whether any rank got a stop signal, on every rank, so ranks decide alike.

    One process: every step, free. Several: one small tensor all-reduce every ``every`` steps, where ``every`` is
    picked from the agreed step time so that ranks compare notes about twice a second (an object broadcast every
    step would cost a host sync and a pickle per step)."""

    SYNC_SECONDS = 0.5

    def __init__(self, clock: TrainingClock) -> None:
        self.clock = clock
        self.signalled = False  # set by this rank's signal handler
        self.every = 1
        self._synced_at = 0
        self._step: int | None = None
        self._agreed: Agreed | None = None
        self._first: tuple[int, float] | None = None

    def at_step(self, step: int) -> Agreed | None:
        """The agreed values at ``step``, or None when ranks do not compare notes at this step."""
        if step == self._step:
            return self._agreed
        self._step, self._agreed = step, None
        state = PartialState()
        if state.num_processes == 1:
            self._agreed = Agreed(self.clock.seconds(), self.signalled)
        elif step >= self._synced_at + self.every:
            import torch

            seconds = self.clock.seconds() if state.is_main_process else 0.0
            values = torch.tensor([seconds, float(self.signalled)], dtype=torch.float64, device=state.device)
            torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MAX)
            self._agreed = Agreed(float(values[0]), bool(values[1]))
            self._synced_at = step
            self._adapt(step, self._agreed.seconds)
        return self._agreed

    def _adapt(self, step: int, seconds: float) -> None:
        if self._first is None:
            self._first = (step, seconds)
        elif step > self._first[0] and seconds > self._first[1]:
            per_step = (seconds - self._first[1]) / (step - self._first[0])
            self.every = max(1, min(100, int(self.SYNC_SECONDS / per_step)))


@dataclass(frozen=True)
class Agreed:
    seconds: float
    signalled: bool


class TrainingInterrupted(Exception):
    """A signal stopped the run: ``what`` happened, and ``next_step`` says how to go on (a sweep gives its own)."""

    def __init__(self, what: str, next_step: str, exit_code: int) -> None:
        super().__init__(f"{what}; {next_step}")
        self.what, self.next_step, self.exit_code = what, next_step, exit_code


class StopOnSignal(TrainerCallback):
    """While installed, SIGTERM (how clusters and spot instances stop jobs) and SIGINT (Ctrl-C) are handled from the
    first step to the last write of a run. During training: the current step finishes, a checkpoint is saved and
    training stops. Once training is over (``finishing``): the final model and records are completed first, and a
    second signal stops at once. ``received`` names the first signal."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, agreement: RankAgreement) -> None:
        self.agreement = agreement
        self.received: signal.Signals | None = None
        self._finishing: str | None = None  # what a second signal leaves behind, once training is over
        self._previous: dict[int, object] = {}

    @contextmanager
    def installed(self) -> Iterator[None]:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        try:
            yield
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    def finishing(self, left_behind: str) -> None:
        """Training is over: from now on a first signal waits for the final writes, and a second one stops them,
        raising ``TrainingInterrupted`` with ``left_behind`` (what the run folder then holds)."""
        self._finishing = left_behind

    def _handle(self, signum: int, frame) -> None:
        sig = signal.Signals(signum)
        if self._finishing is None:
            self.received = self.received or sig
            self.agreement.signalled = True
        elif self.received is None:
            self.received = sig
            print(f"tinypretrain: {sig.name} received after the last step; finishing the final model and records "
                  "(send it again to stop at once)", file=sys.stderr, flush=True)
        else:
            raise TrainingInterrupted(f"stopped by {sig.name} while writing the final model", self._finishing,
                                      128 + sig.value)

    def on_step_end(self, args, state, control, **kwargs):
        agreed = self.agreement.at_step(state.global_step)
        if agreed is not None and agreed.signalled:  # every rank stops at the same step
            self.received = self.received or signal.SIGTERM
            control.should_save = True
            control.should_training_stop = True
