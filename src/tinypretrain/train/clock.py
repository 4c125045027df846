"""The training clock: seconds spent training (not evaluating or saving), across resumed processes, beside the
run's wall time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


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
