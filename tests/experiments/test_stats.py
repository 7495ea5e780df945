import math

import pytest

from tralgo.experiments import stats


def test_t_critical_matches_scipy_for_all_degrees_of_freedom():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in list(range(1, 61)) + [75, 100, 250, 1000, 10**6]:
        expected = scipy_stats.t.ppf(0.975, df)
        assert stats.t_critical_975(df) == pytest.approx(expected, rel=1e-4), df


def test_t_critical_known_textbook_values():
    # Standard t-table entries (two-sided 95%).
    assert stats.t_critical_975(1) == pytest.approx(12.706, abs=1e-3)
    assert stats.t_critical_975(4) == pytest.approx(2.776, abs=1e-3)
    assert stats.t_critical_975(9) == pytest.approx(2.262, abs=1e-3)
    assert stats.t_critical_975(40) == pytest.approx(2.021, abs=1e-3)
    assert stats.t_critical_975(120) == pytest.approx(1.980, abs=1e-3)


@pytest.mark.parametrize("df", [0, -1, 2.5, True, "3"])
def test_t_critical_rejects_bad_df(df):
    with pytest.raises(ValueError, match="df must be an int >= 1"):
        stats.t_critical_975(df)


def test_summary_mean_and_sample_std():
    s = stats.summarize([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert s.n == 8
    assert s.mean == pytest.approx(5.0)
    assert s.std == pytest.approx(math.sqrt(32 / 7))  # ddof=1
    assert s.format() == "5.00 ± 2.14 (8)"
    assert stats.summarize([0.8932]).format(scale=100) == "89.32 ± – (1)"
    assert stats.summarize([]).n == 0


def test_mean_ci95_known_values():
    # x = 1..5: mean 3, s = sqrt(2.5), half width = 2.7764 * sqrt(2.5)/sqrt(5) = 1.9632.
    ci = stats.mean_ci95([1, 2, 3, 4, 5])
    assert ci.mean == pytest.approx(3.0)
    assert ci.low == pytest.approx(3 - 1.96324, abs=1e-4)
    assert ci.high == pytest.approx(3 + 1.96324, abs=1e-4)
    assert ci.significant


def test_mean_ci95_agrees_with_scipy_interval():
    scipy_stats = pytest.importorskip("scipy.stats")
    values = [0.3, -0.1, 0.45, 0.2, 0.05, 0.12, -0.02]
    ci = stats.mean_ci95(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=ci.mean, scale=scipy_stats.sem(values))
    assert (ci.low, ci.high) == pytest.approx((low, high), rel=1e-4)


def test_paired_difference_uses_common_seeds_only():
    a = {1: 0.90, 2: 0.91, 3: 0.92, 4: 0.50}
    b = {1: 0.89, 2: 0.89, 3: 0.89, 5: 0.10}
    d = stats.paired_difference(a, b)
    assert d.n == 3
    assert d.mean == pytest.approx(0.02)
    # diffs 0.01, 0.02, 0.03: s = 0.01, half width = 4.3027 * 0.01 / sqrt(3)
    assert d.half_width == pytest.approx(4.3027 * 0.01 / math.sqrt(3), rel=1e-4)
    assert not d.significant  # 3 pairs: the interval still spans 0
    assert d.format(scale=100) == "+2.00 [-0.48, +4.48] (3)"


def test_paired_difference_not_significant_when_interval_spans_zero():
    d = stats.paired_difference({1: 1.0, 2: 2.0, 3: 3.0}, {1: 2.0, 2: 1.0, 3: 3.0})
    assert d.mean == pytest.approx(0.0)
    assert not d.significant


def test_paired_difference_degenerate_counts():
    one = stats.paired_difference({1: 0.5}, {1: 0.4})
    assert one.n == 1 and not one.significant and math.isnan(one.low)
    assert "CI needs 2 pairs" in one.format()
    none = stats.paired_difference({1: 0.5}, {2: 0.4})
    assert none.n == 0 and not none.significant


def test_non_finite_values_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="values must be finite"):
        stats.summarize([1.0, float("nan")])
