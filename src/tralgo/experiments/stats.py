"""Small-sample statistics for comparing optimizers over seeds.

Paired t-intervals and tests, two one-sided tests (TOST) for equivalence within a margin, Holm's
correction over a declared family of contrasts, the minimum detectable effect of a paired t-test,
and the number of seeds an equivalence test needs. The distributions come from scipy.stats and
statsmodels (imported on first use, so importing this module stays cheap); the tests check the
numbers against statsmodels' own ``ttost_paired`` and ``multipletests`` and textbook values.

Conventions: differences are ``a - b`` over matched pairs (same seed = same initialisation and data
order); ``ALPHA`` = 0.05 two-sided for the t-test and 0.05 per side for TOST (the usual 90%-interval
equivalence test); ``POWER`` = 0.8 for detectable effects and seed counts.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

ALPHA = 0.05
POWER = 0.8


def _check_probability(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def t_critical(df: int, level: float = 0.95) -> float:
    """Two-sided critical value of Student's t: the ``(1 + level) / 2`` quantile with ``df`` degrees of freedom."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an int >= 1, got {df!r}")
    level = _check_probability(level, "level")
    from scipy.stats import t

    return float(t.ppf((1 + level) / 2, df))


def _check_values(values: Sequence[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    if any(not math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite numbers, got {list(values)!r}")
    return out


def format_p(p: float) -> str:
    """A p-value for a table: three decimals, "<0.001" below that, "–" where there is none (NaN)."""
    if math.isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


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
    """``a - b`` over matched pairs (same seed): mean, 95% t confidence interval, count, the
    sample std of the differences and the two-sided paired t-test p-value against 0.

    ``significant`` is True when the interval excludes 0 (the same as ``p < 0.05``). With one
    pair the interval, std and p are undefined (NaN; not significant).
    """

    n: int
    mean: float
    low: float
    high: float
    std: float = math.nan
    p: float = math.nan

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def significant(self) -> bool:
        return self.n >= 2 and not math.isnan(self.low) and (self.low > 0 or self.high < 0)

    def tost_p(self, margin: float) -> float:
        """p-value of the two one-sided tests that the true difference lies inside ``(-margin, +margin)``."""
        return tost_p(self.mean, self.std, self.n, margin)

    def mde(self, alpha: float = ALPHA, power: float = POWER) -> float:
        """Smallest true difference this many pairs detect with ``power`` at two-sided ``alpha``,
        taking the observed std of the differences as the truth."""
        return minimum_detectable_effect(self.n, self.std, alpha, power)

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
    """Mean of ``values`` with its two-sided 95% Student-t interval and the t-test p-value against 0."""
    values = _check_values(values, "values")
    n = len(values)
    if n == 0:
        return PairedDifference(0, math.nan, math.nan, math.nan)
    m = mean(values)
    if n < 2:
        return PairedDifference(1, m, math.nan, math.nan)
    s = sample_std(values)
    half = t_critical(n - 1) * s / math.sqrt(n)
    return PairedDifference(n, m, m - half, m + half, s, _t_test_p(m, s, n))


def _t_test_p(m: float, s: float, n: int) -> float:
    from scipy.stats import t

    if s == 0:  # every pair differs by the same amount: the t statistic is infinite (or 0/0)
        return 1.0 if m == 0 else 0.0
    return float(2 * t.sf(abs(m) / (s / math.sqrt(n)), n - 1))


def paired_difference(a: dict, b: dict) -> PairedDifference:
    """Paired ``a - b`` over the keys (seeds) present in both mappings, with a 95% t CI.

    Pairing by seed removes the seed-to-seed variation that both optimizers share (same
    initialisation and data order), so the interval is usually much narrower than the one an
    unpaired comparison of the two means would give.
    """
    common = sorted(set(a) & set(b))
    return mean_ci95([float(a[k]) - float(b[k]) for k in common])


def _check_margin(margin: float) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin > 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}")
    return float(margin)


def tost_p(mean_diff: float, std: float, n: int, margin: float) -> float:
    """Two one-sided paired t-tests of H0: |true difference| >= margin; the larger of the two p-values.

    Equivalence within ``margin`` is shown at level ``alpha`` when the result is below ``alpha``
    (equivalently: the 1 - 2 alpha t-interval lies inside (-margin, +margin)). NaN with fewer
    than 2 pairs. Agrees with ``statsmodels.stats.weightstats.ttost_paired``.
    """
    margin = _check_margin(margin)
    if n < 2 or math.isnan(std):
        return math.nan
    from scipy.stats import t

    if std == 0:  # identical differences: the interval is the point mean_diff
        return 0.0 if abs(mean_diff) < margin else 1.0
    se = std / math.sqrt(n)
    p_lower = t.sf((mean_diff + margin) / se, n - 1)   # H0: difference <= -margin
    p_upper = t.cdf((mean_diff - margin) / se, n - 1)  # H0: difference >= +margin
    return float(max(p_lower, p_upper))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values of a family (``statsmodels`` ``multipletests(method="holm")``).

    A family member without a p-value (NaN: fewer than 2 pairs) still counts in the family size,
    as a p-value of 1: dropping it would correct the others less than the declared family needs.
    """
    values = [1.0 if p is None or math.isnan(p) else float(p) for p in pvalues]
    if any(not 0 <= p <= 1 for p in values):
        raise ValueError(f"p-values must lie in [0, 1], got {list(pvalues)!r}")
    if not values:
        return []
    import gc

    from statsmodels.stats.multitest import multipletests

    # multipletests calls gc.collect() on every call, which walks every object of the process (a
    # report holds thousands of metric records: ~0.3 s per call). Frozen objects are skipped.
    gc.freeze()
    try:
        adjusted = multipletests(values, method="holm")[1]
    finally:
        gc.unfreeze()
    return [math.nan if p is None or math.isnan(p) else float(q) for p, q in zip(pvalues, adjusted)]


def minimum_detectable_effect(n: int, std: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true mean difference a two-sided paired t-test over ``n`` pairs detects with
    probability ``power`` at level ``alpha`` when the differences have standard deviation ``std``
    (``statsmodels`` ``TTestPower``). NaN with fewer than 2 pairs or an unknown std."""
    alpha = _check_probability(alpha, "alpha")
    power = _check_probability(power, "power")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if n < 2 or math.isnan(std):
        return math.nan
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std!r}")
    if std == 0:
        return 0.0
    return _standardized_effect(n, alpha, power) * std


@functools.lru_cache(maxsize=1024)
def _standardized_effect(n: int, alpha: float, power: float) -> float:
    """Detectable effect in units of the differences' std: the same for every contrast with n pairs
    (a root search of ~10 ms, so a report computes it once per n, not once per contrast)."""
    from statsmodels.stats.power import TTestPower

    return float(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided"))


def tost_power(n: int, margin: float, std: float, alpha: float = ALPHA, true_difference: float = 0.0) -> float:
    """Probability that the paired TOST over ``n`` pairs shows equivalence within ``margin`` when the
    true difference is ``true_difference`` and the differences have standard deviation ``std``.

    Exact (no normal approximation): given the sample std s, the test passes when the mean lies in
    (-margin + c s/sqrt(n), margin - c s/sqrt(n)), c the one-sided t critical value; the mean is
    normal and independent of s, and s^2 is a scaled chi-square, so the power is one integral.
    """
    margin = _check_margin(margin)
    alpha = _check_probability(alpha, "alpha")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if not std > 0 or not math.isfinite(std):
        raise ValueError(f"std must be a finite number > 0, got {std!r}")
    from scipy import integrate
    from scipy.special import gammaln, ndtr, stdtrit

    # scipy.special rather than scipy.stats objects inside the integrand: ~50x less overhead per call.
    df = n - 1
    c = float(stdtrit(df, 1 - alpha))
    root_n = math.sqrt(n)
    z = root_n / std
    log_norm = -(df / 2) * math.log(2) - float(gammaln(df / 2))  # chi-square density constant

    def integrand(w: float) -> float:
        half = margin - c * std * math.sqrt(w / df) / root_n  # half width of the passing range of the mean
        if half <= 0 or w <= 0:
            return 0.0
        density = math.exp(log_norm + (df / 2 - 1) * math.log(w) - w / 2)
        return float(ndtr((half - true_difference) * z) - ndtr((-half - true_difference) * z)) * density

    w_max = df * (margin * root_n / (c * std)) ** 2  # beyond it the passing range is empty
    value, _ = integrate.quad(integrand, 0, w_max, limit=200)
    return min(max(value, 0.0), 1.0)


def seeds_for_equivalence(margin: float, std: float, alpha: float = ALPHA, power: float = POWER,
                          true_difference: float = 0.0, max_n: int = 10_000) -> int:
    """Smallest number of paired seeds whose TOST shows equivalence within ``margin`` with
    probability >= ``power``, for paired differences of standard deviation ``std`` (e.g. a pilot's)
    and a true difference ``true_difference`` (0: the optimizers are truly the same)."""
    margin = _check_margin(margin)
    power = _check_probability(power, "power")
    if abs(true_difference) >= margin:
        raise ValueError(f"true_difference must lie inside (-margin, margin), got {true_difference!r} "
                         f"with margin {margin!r}")
    n_low, n_high = 2, 2
    while tost_power(n_high, margin, std, alpha, true_difference) < power:
        n_low, n_high = n_high + 1, n_high * 2
        if n_high > max_n:
            raise ValueError(f"more than max_n={max_n} seeds would be needed (margin {margin!r}, std {std!r})")
    while n_low < n_high:  # the power grows with n: bisect for the first n that reaches it
        middle = (n_low + n_high) // 2
        if tost_power(middle, margin, std, alpha, true_difference) >= power:
            n_high = middle
        else:
            n_low = middle + 1
    return n_high
