"""Small-sample statistics for comparing optimizers over seeds.

Everything here is plain Python (no numpy/scipy import), so ``tralgo report`` stays fast and
works without scipy. Student-t quantiles come from a table for the degrees of freedom that
seed counts produce (1..30) and from a Cornish-Fisher expansion beyond; the values match
``scipy.stats.t.ppf`` to 4 significant digits (tested).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# Two-sided 95% critical values t_{0.975, df} for df = 1..30.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)
_Z975 = 1.959963984540054


def t_critical_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (two-sided 95%)."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an int >= 1, got {df!r}")
    if df <= len(_T975):
        return _T975[df - 1]
    # Cornish-Fisher expansion of the t quantile around the normal one; error < 1e-5 for df > 30.
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def _check_values(values: Sequence[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    if any(not math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite numbers, got {list(values)!r}")
    return out


def mean(values: Sequence[float]) -> float:
    values = _check_values(values, "values")
    if not values:
        raise ValueError("values must be non-empty")
    return math.fsum(values) / len(values)


def sample_std(values: Sequence[float]) -> float:
    """Standard deviation with Bessel's correction (ddof=1); NaN for fewer than 2 values."""
    values = _check_values(values, "values")
    if len(values) < 2:
        return math.nan
    m = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class Summary:
    """mean, sample std and count of one configuration's final metric over seeds."""

    n: int
    mean: float
    std: float

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        if self.n == 0:
            return "n/a (0)"
        std = "–" if math.isnan(self.std) else f"{self.std * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {std} ({self.n})"


def summarize(values: Sequence[float]) -> Summary:
    values = _check_values(values, "values")
    if not values:
        return Summary(0, math.nan, math.nan)
    return Summary(len(values), mean(values), sample_std(values))


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over matched pairs (same seed): mean, 95% t confidence interval, count.

    ``significant`` is True when the interval excludes 0. With one pair the interval is
    undefined (NaN bounds, not significant).
    """

    n: int
    mean: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def significant(self) -> bool:
        return self.n >= 2 and not math.isnan(self.low) and (self.low > 0 or self.high < 0)

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        if self.n == 0:
            return "n/a (0 pairs)"
        if self.n < 2:
            return f"{self.mean * scale:+.{digits}f} [CI needs 2 pairs] (1)"
        return (
            f"{self.mean * scale:+.{digits}f} [{self.low * scale:+.{digits}f}, "
            f"{self.high * scale:+.{digits}f}] ({self.n})"
        )


def mean_ci95(values: Sequence[float]) -> PairedDifference:
    """Mean of ``values`` with its two-sided 95% Student-t confidence interval."""
    values = _check_values(values, "values")
    n = len(values)
    if n == 0:
        return PairedDifference(0, math.nan, math.nan, math.nan)
    m = mean(values)
    if n < 2:
        return PairedDifference(1, m, math.nan, math.nan)
    half = t_critical_975(n - 1) * sample_std(values) / math.sqrt(n)
    return PairedDifference(n, m, m - half, m + half)


def paired_difference(a: dict, b: dict) -> PairedDifference:
    """Paired ``a - b`` over the keys (seeds) present in both mappings, with a 95% t CI.

    Pairing by seed removes the seed-to-seed variation that both optimizers share (same
    initialisation and data order), so the interval is usually much narrower than the one an
    unpaired comparison of the two means would give.
    """
    common = sorted(set(a) & set(b))
    return mean_ci95([float(a[k]) - float(b[k]) for k in common])
