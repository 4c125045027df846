"""Preemption: SIGTERM/SIGINT end the step, every rank agrees to stop at the same step, a checkpoint is saved, and the run
stops with an exception that says how to go on."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState
from transformers import TrainerCallback

from .clock import TrainingClock


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

    def raise_if_stopped(self, step: int) -> None:
        """After training: a signal stopped it at ``step``, with a checkpoint saved to resume from."""
        if self.received is not None:
            raise TrainingInterrupted(f"stopped by {self.received.name} at step {step}",
                                      "resume with --resume_from_checkpoint true", 128 + self.received.value)

    def raise_if_received_late(self, step: int, out: Path) -> None:
        """After the final writes: a signal came once training was over, and the run in ``out`` was completed."""
        if self.received is not None:
            raise TrainingInterrupted(f"{self.received.name} received after the last step (step {step})",
                                      f"the run was completed first: {out}", 128 + self.received.value)

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
