"""Training against the clock: a clock that survives resume, the learning-rate schedule that ends at the deadline,
and evaluations and saves by the clock within a share of the budget."""

from __future__ import annotations

import math

from transformers import TrainerCallback

from ..config.pretrain import PretrainConfig
from .clock import TrainingClock
from .signals import RankAgreement

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


def overhead_allowance(cfg: PretrainConfig, clock: TrainingClock, budget_s: float | None) -> OverheadAllowance | None:
    """With a time budget, evaluations and saves during training share 10% of it, unless you set their cadence."""
    if budget_s is None:
        return None
    governed = {kind for kind, name in (("evaluate", "eval_steps"), ("save", "save_steps"))
                if cfg.sources[name] != "explicit"}
    return OverheadAllowance(clock, budget_s, governed) if governed else None


def budget_callbacks(cfg: PretrainConfig, clock: TrainingClock, budget_s: float | None,
                     allowance: OverheadAllowance | None, agreement: RankAgreement) -> list[TimeBudget]:
    """The callback that ends a time-budgeted run by the clock (none without a budget)."""
    if budget_s is None:
        return []
    return [TimeBudget(clock, budget_s, time_fraction(cfg.eval_steps), time_fraction(cfg.save_steps), allowance,
                       agreement)]


def time_fraction(every: float | None) -> float | None:
    """``eval_steps``/``save_steps`` below 1 are a fraction of the time budget (None otherwise)."""
    return every if every is not None and 0 < every < 1 else None
