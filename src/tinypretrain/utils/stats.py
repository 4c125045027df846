"""How sure a comparison is: means with Student-t 95% confidence intervals, and Welch's t-test between groups."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """The mean of ``values`` and the half-width of its two-sided Student-t confidence interval (None for one value:
    one run says nothing about the noise)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("mean_ci() needs at least one value.")
    mean = sum(values) / n
    if n == 1:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test that ``a`` and ``b`` have the same mean (None with fewer than two values
    in either, or when neither varies)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    if len(set(a)) == 1 and len(set(b)) == 1:
        return None if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def format_mean_ci(values: Sequence[float]) -> str:
    """``1.234 ± 0.012`` (or just ``1.234`` for one value)."""
    mean, half = mean_ci(values)
    return f"{mean:.4f}" if half is None else f"{mean:.4f} ± {half:.4f}"


def format_p(p: float | None) -> str:
    """``p=0.03``, ``p<0.001`` or an empty string when there is no test."""
    if p is None:
        return ""
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"
