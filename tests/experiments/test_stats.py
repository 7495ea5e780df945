import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tralgo.experiments import stats


def test_t_critical_matches_scipy_for_all_degrees_of_freedom():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in list(range(1, 61)) + [75, 100, 250, 1000, 10**6]:
        assert stats.t_critical(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-12), df
    assert stats.t_critical(4, level=0.90) == pytest.approx(scipy_stats.t.ppf(0.95, 4), rel=1e-12)


def test_t_critical_known_textbook_values():
    # Standard t-table entries (two-sided 95%, and 90% for df 4).
    assert stats.t_critical(1) == pytest.approx(12.706, abs=1e-3)
    assert stats.t_critical(4) == pytest.approx(2.776, abs=1e-3)
    assert stats.t_critical(9) == pytest.approx(2.262, abs=1e-3)
    assert stats.t_critical(40) == pytest.approx(2.021, abs=1e-3)
    assert stats.t_critical(120) == pytest.approx(1.980, abs=1e-3)
    assert stats.t_critical(4, level=0.90) == pytest.approx(2.132, abs=1e-3)


@pytest.mark.parametrize("df", [0, -1, 2.5, True, "3"])
def test_t_critical_rejects_bad_df(df):
    with pytest.raises(ValueError, match="df must be an int >= 1"):
        stats.t_critical(df)


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, "0.9"])
def test_t_critical_rejects_bad_level(level):
    with pytest.raises(ValueError, match=r"level must be a number in \(0, 1\)"):
        stats.t_critical(3, level)


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


# ----------------------------------------------------------------------------- paired t-test p-value


def test_paired_p_value_matches_scipy_ttest_rel():
    scipy_stats = pytest.importorskip("scipy.stats")
    a = {1: 0.81, 2: 0.84, 3: 0.80, 4: 0.86, 5: 0.83}
    b = {1: 0.80, 2: 0.81, 3: 0.81, 4: 0.82, 5: 0.80}
    d = stats.paired_difference(a, b)
    expected = scipy_stats.ttest_rel([a[k] for k in a], [b[k] for k in a])
    assert d.p == pytest.approx(expected.pvalue, rel=1e-10)
    assert d.std == pytest.approx(stats.sample_std([a[k] - b[k] for k in a]))
    assert d.significant == (d.p < 0.05)


def test_identical_differences_have_a_degenerate_but_defined_test():
    d = stats.mean_ci95([0.01, 0.01, 0.01])
    assert (d.low, d.high, d.std, d.p) == (pytest.approx(0.01), pytest.approx(0.01), 0.0, 0.0)
    assert stats.mean_ci95([0.0, 0.0]).p == 1.0
    assert d.tost_p(0.02) == 0.0 and d.tost_p(0.005) == 1.0


# ----------------------------------------------------------------------------- TOST


@pytest.mark.parametrize("diffs,margin", [
    ([0.01, 0.02, 0.015, 0.0, 0.012], 0.03),
    ([0.01, 0.02, 0.015, 0.0, 0.012], 0.01),
    ([-0.004, 0.003, 0.001, -0.002, 0.0, 0.005, -0.001], 0.005),
    ([0.5, -0.3], 1.0),
])
def test_tost_matches_statsmodels_ttost_paired(diffs, margin):
    np = pytest.importorskip("numpy")
    weightstats = pytest.importorskip("statsmodels.stats.weightstats")
    expected, _, _ = weightstats.ttost_paired(np.array(diffs), np.zeros(len(diffs)), -margin, margin)
    d = stats.mean_ci95(diffs)
    assert d.tost_p(margin) == pytest.approx(float(expected), rel=1e-9)


def test_tost_equals_the_90_percent_interval_inside_the_margin():
    # TOST at alpha rejects exactly when the (1 - 2 alpha) t-interval lies inside (-margin, margin).
    diffs = [0.002, -0.001, 0.004, 0.001, 0.003]
    d = stats.mean_ci95(diffs)
    half90 = stats.t_critical(len(diffs) - 1, level=0.90) * d.std / math.sqrt(len(diffs))
    inside = max(abs(d.mean - half90), abs(d.mean + half90))
    assert d.tost_p(inside * 1.001) < 0.05 < d.tost_p(inside * 0.999)


def test_tost_needs_two_pairs_and_a_positive_margin():
    assert math.isnan(stats.mean_ci95([0.1]).tost_p(0.5))
    for margin in (0, -0.01, float("nan"), True, "0.01"):
        with pytest.raises(ValueError, match="margin must be a finite number > 0"):
            stats.tost_p(0.0, 0.1, 5, margin)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=2, max_size=12), st.floats(0.01, 2), st.floats(0.01, 2))
def test_tost_p_is_a_probability_and_decreases_with_the_margin(diffs, m1, m2):
    assume(stats.sample_std(diffs) > 1e-6)
    d = stats.mean_ci95(diffs)
    small, large = sorted((m1, m2))
    p_small, p_large = d.tost_p(small), d.tost_p(large)
    assert 0 <= p_large <= p_small <= 1


# ----------------------------------------------------------------------------- Holm


def test_holm_textbook_example():
    # Holm (1979)-style worked example: sorted p (0.01, 0.03, 0.04, 0.2) times (4, 3, 2, 1),
    # made monotone: 0.04, 0.09, 0.09, 0.2.
    assert stats.holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])


def test_holm_matches_statsmodels_and_counts_missing_members():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    ps = [0.001, 0.02, 0.5, 0.013]
    assert stats.holm(ps) == pytest.approx(list(multitest.multipletests(ps, method="holm")[1]))
    # A member without a p-value keeps the family size (as p = 1) and stays without one.
    with_missing = stats.holm([0.01, math.nan, 0.02])
    assert math.isnan(with_missing[1])
    assert with_missing[0] == pytest.approx(0.03) and with_missing[2] == pytest.approx(0.04)
    assert stats.holm([]) == []
    with pytest.raises(ValueError, match=r"p-values must lie in \[0, 1\]"):
        stats.holm([0.5, 1.5])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=10))
def test_holm_adjusted_values_are_at_least_raw_and_keep_the_order(ps):
    adjusted = stats.holm(ps)
    assert all(p - 1e-12 <= q <= 1 for p, q in zip(ps, adjusted))
    assert all(adjusted[i] <= adjusted[j] + 1e-12 for i in range(len(ps)) for j in range(len(ps)) if ps[i] <= ps[j])
    assert min(adjusted) == pytest.approx(min(1.0, len(ps) * min(ps)))  # first step is Bonferroni


# ----------------------------------------------------------------------------- power


def test_minimum_detectable_effect_textbook_sample_size():
    # Cohen / G*Power: a two-sided one-sample (paired) t-test needs n = 34 to detect d = 0.5 with
    # power 0.8 at alpha 0.05; so the detectable effect is just below 0.5 sd at 34 and above at 33.
    assert stats.minimum_detectable_effect(34, 1.0) < 0.5 < stats.minimum_detectable_effect(33, 1.0)
    # Scales with the std of the differences.
    assert stats.minimum_detectable_effect(5, 0.02) == pytest.approx(0.02 * stats.minimum_detectable_effect(5, 1.0))


def test_minimum_detectable_effect_matches_statsmodels_power():
    power = pytest.importorskip("statsmodels.stats.power")
    mde = stats.minimum_detectable_effect(5, 0.01)
    achieved = power.TTestPower().power(effect_size=mde / 0.01, nobs=5, alpha=0.05, alternative="two-sided")
    assert achieved == pytest.approx(0.8, abs=1e-6)
    d = stats.mean_ci95([0.01, 0.03, 0.0, 0.02, 0.015])
    assert d.mde() == pytest.approx(stats.minimum_detectable_effect(5, d.std))
    assert d.mde(alpha=0.01) > d.mde()


def test_minimum_detectable_effect_edge_cases_and_errors():
    assert math.isnan(stats.minimum_detectable_effect(1, 0.1))
    assert math.isnan(stats.minimum_detectable_effect(5, math.nan))
    assert stats.minimum_detectable_effect(5, 0.0) == 0.0
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\)"):
        stats.minimum_detectable_effect(5, 0.1, alpha=0)
    with pytest.raises(ValueError, match=r"power must be a number in \(0, 1\)"):
        stats.minimum_detectable_effect(5, 0.1, power=1.0)
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        stats.minimum_detectable_effect(2.5, 0.1)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 60), st.integers(2, 60))
def test_minimum_detectable_effect_shrinks_with_more_seeds(n1, n2):
    assume(n1 != n2)
    small, large = sorted((n1, n2))
    assert stats.minimum_detectable_effect(large, 1.0) < stats.minimum_detectable_effect(small, 1.0)


def _simulated_tost_power(n, margin, std, true_difference, reps=20000, seed=0):
    np = pytest.importorskip("numpy")
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    x = rng.normal(true_difference, std, size=(reps, n))
    m, s = x.mean(1), x.std(1, ddof=1) / math.sqrt(n)
    c = scipy_stats.t.ppf(0.95, n - 1)
    return float(np.mean((m - c * s > -margin) & (m + c * s < margin)))


@pytest.mark.parametrize("n,margin,std,true_difference", [(5, 0.01, 0.008, 0.0), (10, 0.005, 0.006, 0.001),
                                                         (3, 1.0, 0.3, 0.2), (2, 1.0, 0.2, 0.0)])
def test_tost_power_matches_simulation(n, margin, std, true_difference):
    exact = stats.tost_power(n, margin, std, true_difference=true_difference)
    simulated = _simulated_tost_power(n, margin, std, true_difference)
    # 20000 draws: the simulation's standard error is at most 0.0036.
    assert exact == pytest.approx(simulated, abs=0.012)


def test_tost_power_large_n_approaches_the_normal_formula():
    scipy_stats = pytest.importorskip("scipy.stats")
    # Chow, Shao & Wang (one-sample equivalence, true difference 0): 2 Phi(margin sqrt(n)/sd - z_{1-alpha}) - 1.
    n, margin, std = 400, 0.15, 1.0
    normal = 2 * scipy_stats.norm.cdf(margin * math.sqrt(n) / std - scipy_stats.norm.ppf(0.95)) - 1
    assert stats.tost_power(n, margin, std) == pytest.approx(normal, abs=0.005)


def test_seeds_for_equivalence_is_the_first_n_reaching_the_power():
    margin, std = 0.005, 0.006
    n = stats.seeds_for_equivalence(margin, std)
    assert stats.tost_power(n, margin, std) >= 0.8 > stats.tost_power(n - 1, margin, std)
    # Chow, Shao & Wang's normal approximation n = (z_{1-alpha} + z_{1-beta/2})^2 sd^2 / margin^2
    # = (1.645 + 1.282)^2 * 1.44 = 12.3; the exact t-based count is a little larger.
    assert 13 <= n <= 15
    assert stats.seeds_for_equivalence(margin, std, true_difference=0.002) > n
    with pytest.raises(ValueError, match="true_difference must lie inside"):
        stats.seeds_for_equivalence(0.01, 0.01, true_difference=0.01)
    with pytest.raises(ValueError, match="more than max_n=50 seeds"):
        stats.seeds_for_equivalence(0.001, 0.1, max_n=50)
