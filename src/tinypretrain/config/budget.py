"""Time-budget rules: how long ``max_time`` means, and which settings a time-budgeted run takes for fields
nobody set."""

from __future__ import annotations

import re

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


# Shapes of the rate after warmup, as a function of the fraction of the budget spent. transformers' schedulers
# count steps, and a time budget has no step count, hence these.
TIME_SCHEDULES = ("constant_with_warmup", "constant", "linear", "cosine", "warmup_stable_decay")


# What a time-budgeted run uses for each of these fields that neither you nor the recipe set, chosen by equal-time
# runs on 2 CPU cores (benchmarks/RESULTS.md, "Budget defaults"; docs/budget.md). A budget wants the rate to end at the deadline,
# and a short run wants a higher peak than a long one. The schedule applies on every device; the peak rate and the
# shape were measured on CPU only, so on other devices the step-budgeted defaults stand.
BUDGET_SCHEDULE = {"lr_scheduler_type": "warmup_stable_decay", "decay_fraction": 0.4}


# A warmup of 20 steps, not 5% of the budget: the warmup steadies the optimiser's first steps, whatever the budget,
# and 5% of 300 s spent 15 s of it warming up (benchmarks/RESULTS.md section 45).
CPU_BUDGET_SETTINGS = {"learning_rate": 4e-3, "warmup_steps": 20}


def budget_settings(on_cpu: bool) -> dict[str, object]:
    """The field values a time-budgeted run takes for the fields that neither you nor its recipe set."""
    return {**BUDGET_SCHEDULE, **(CPU_BUDGET_SETTINGS if on_cpu else {})}


def budget_seconds(max_time: str | float | None) -> float | None:
    """The time budget ``max_time`` in seconds, or None without one."""
    return None if max_time is None else parse_duration(max_time)


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``value``: a number of seconds, or a number with a unit, as in ``"90s"``, ``"10m"``, ``"2h"``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"max_time must be a positive number of seconds or a duration like '90s', '10m', '2h'; got {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]
