"""Estimators against closed forms: mean/SE, Options I/II, the variance of sampled gradients."""
import numpy as np
import pytest

from tralgo.theory.estimators import OuterIterateTracker, RegionStats, direction_moments, mean_se
from tralgo.theory.problems import FiniteSum


def test_mean_se_closed_form():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    mean, se = mean_se(x)
    assert mean == 3.5
    assert se == pytest.approx(np.sqrt(np.sum((x - 3.5) ** 2) / 3 / 4))
    with pytest.raises(ValueError):
        mean_se([])


def test_tracker_average_option1_and_uniform_option2():
    reps, T = 20000, 4
    tracker = OuterIterateTracker(reps, [2, 4], np.random.default_rng(0))
    for t in range(1, T + 1):
        tracker.update(t, np.full(reps, float(t)))  # ||grad f(w_t)||^2 = t in every repetition
    np.testing.assert_array_equal(tracker.records[4]["average"], 2.5)
    np.testing.assert_array_equal(tracker.records[2]["average"], 1.5)
    np.testing.assert_array_equal(tracker.records[4]["option1"], 4.0)
    # Option II: a uniform pick from w_1..w_T at every checkpoint (reservoir sampling)
    for T_, values in ((2, [1, 2]), (4, [1, 2, 3, 4])):
        picks = tracker.records[T_]["option2"]
        for v in values:
            share = np.mean(picks == v)
            assert abs(share - 1 / len(values)) < 5 * np.sqrt(1 / len(values) / reps)


def least_squares(n=9, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return FiniteSum("ls", "ls", rng.standard_normal((n, d)), rng.standard_normal(n), "squared", 0.0,
                     w0=rng.standard_normal(d))


@pytest.mark.parametrize("batch", [1, 5])
def test_monte_carlo_gradient_variance_matches_closed_form(batch):
    """Var of the batch-M least-squares gradient (with replacement) is sigma^2(w)/M exactly."""
    p = least_squares()
    w = p.w0
    residual = p.X @ w - p.y
    grad = p.X.T @ residual / p.n
    sigma2 = np.mean(residual**2 * np.sum(p.X**2, axis=1)) - grad @ grad
    draws = 40000
    rng = np.random.default_rng(3)
    U = p.stochastic_grad(np.tile(w, (draws, 1)), rng.integers(0, p.n, (draws, batch)))
    m = direction_moments(U, grad)
    assert abs(m["variance"] - sigma2 / batch) < 4 * m["variance_se"]
    assert m["variance_se"] < 0.03 * sigma2 / batch
    assert m["bias_sq"] < 16 * sigma2 / batch / draws  # unbiased: E ||mean - grad||^2 = Var / draws


def test_direction_moments_exact_on_a_fixed_sample():
    U = np.array([[1.0, 0.0], [3.0, 2.0]])
    m = direction_moments(U, np.array([2.0, 0.0]))
    assert m["variance"] == pytest.approx(4.0)  # 2/(2-1) * mean(||u - (2,1)||^2) = 2 * 2
    assert m["mean_sqnorm"] == pytest.approx(5.0)
    assert m["bias_sq"] == pytest.approx(1.0)


def test_region_stats_takes_maxima():
    p = least_squares()
    W = np.random.default_rng(0).standard_normal((5, p.d))
    region = RegionStats()
    region.update(p.evaluate(W[:2]))
    region.update(p.evaluate(W[2:]))
    ev = p.evaluate(W)
    assert region.max_grad_norm == pytest.approx(np.sqrt(ev.grad_sqnorm.max()))
    assert region.max_variance == pytest.approx(ev.variance.max())
    assert region.max_abs_loss == pytest.approx(np.abs(ev.loss).max())
    assert region.points == 5
