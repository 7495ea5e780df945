"""The finite-sum oracles and constants against closed forms and finite differences."""
import numpy as np
import pytest

from tralgo.theory.problems import FiniteSum, make_problem, PROBLEMS


def tiny(loss="squared", alpha=0.0, n=7, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n) if loss == "squared" else np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return FiniteSum("tiny", "tiny", X, y, loss, alpha, w0=rng.standard_normal(d))


@pytest.mark.parametrize("loss,alpha", [("squared", 0.0), ("logistic", 0.7)])
def test_evaluate_matches_per_sample_reference(loss, alpha):
    p = tiny(loss, alpha)
    W = np.random.default_rng(1).standard_normal((4, p.d)) * 1.5
    ev = p.evaluate(W)
    for r, w in enumerate(W):
        G = p.per_sample_grads(w)
        np.testing.assert_allclose(ev.grad[r], G.mean(0), rtol=1e-12, atol=1e-14)
        # sigma^2(w) = 1/n sum_i ||grad f_i - grad f||^2, directly from the n per-sample gradients
        np.testing.assert_allclose(ev.variance[r], np.mean(np.sum((G - G.mean(0)) ** 2, axis=1)), rtol=1e-10)


def test_least_squares_closed_forms():
    p = tiny("squared")
    w = p.w0
    residual = p.X @ w - p.y
    ev = p.evaluate(w)
    assert ev.loss[0] == pytest.approx(0.5 * np.mean(residual**2), rel=1e-13)
    np.testing.assert_allclose(ev.grad[0], p.X.T @ residual / p.n, rtol=1e-12)
    # closed-form variance of the least-squares stochastic gradient r_i x_i
    sigma2 = np.mean(residual**2 * np.sum(p.X**2, axis=1)) - np.sum((p.X.T @ residual / p.n) ** 2)
    assert ev.variance[0] == pytest.approx(sigma2, rel=1e-12)
    assert p.smoothness_bound() == pytest.approx(np.linalg.eigvalsh(p.X.T @ p.X / p.n)[-1], rel=1e-12)
    assert p.nonconvexity_bound() == 0.0


def test_logistic_gradient_and_hessian_by_finite_differences():
    p = tiny("logistic", alpha=0.9)
    w, h = p.w0, 1e-6
    fd_grad = [(p.evaluate(w + h * e).loss[0] - p.evaluate(w - h * e).loss[0]) / (2 * h) for e in np.eye(p.d)]
    np.testing.assert_allclose(p.evaluate(w).grad[0], fd_grad, rtol=1e-7, atol=1e-9)
    fd_hess = np.array([(p.evaluate(w + h * e).grad[0] - p.evaluate(w - h * e).grad[0]) / (2 * h) for e in np.eye(p.d)])
    np.testing.assert_allclose(p.hessian(w), fd_hess, rtol=1e-6, atol=1e-8)


def test_stochastic_grad_is_the_batch_mean():
    p = tiny("logistic", alpha=0.3)
    W = np.random.default_rng(2).standard_normal((3, p.d))
    idx = np.array([[0, 2, 2], [1, 1, 1], [6, 5, 4]])
    out = p.stochastic_grad(W, idx)
    for r in range(3):
        np.testing.assert_allclose(out[r], p.per_sample_grads(W[r])[idx[r]].mean(0), rtol=1e-12)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_curvature_bounds_hold_at_random_points(name):
    p = make_problem(name)
    W = np.random.default_rng(3).standard_normal((20, p.d)) * 2.0
    lo, hi = p.curvature_range(W)
    assert hi <= p.smoothness_bound() * (1 + 1e-12)
    assert lo >= -p.nonconvexity_bound() - 1e-12
    assert p.smoothness_bound() <= p.per_sample_smoothness_bound()


def test_prox_minimizer_least_squares_closed_form():
    p = tiny("squared", n=9, d=4)
    anchor, lam = np.random.default_rng(4).standard_normal(p.d), 0.37
    exact = np.linalg.solve(p.X.T @ p.X / p.n + lam * np.eye(p.d), p.X.T @ p.y / p.n + lam * anchor)
    np.testing.assert_allclose(p.prox_minimizer(anchor, lam), exact, rtol=1e-11, atol=1e-13)


def test_prox_minimizer_nonconvex_is_a_stationary_point_of_a_strongly_convex_G():
    p = tiny("logistic", alpha=2.0, n=11, d=4)
    anchor, lam = 3.0 * p.w0, 2 * p.smoothness_bound()
    w = p.prox_minimizer(anchor, lam)
    grad_G = p.evaluate(w).grad[0] + lam * (w - anchor)
    assert np.linalg.norm(grad_G) < 1e-10
    assert np.linalg.eigvalsh(p.hessian(w) + lam * np.eye(p.d))[0] >= lam - p.nonconvexity_bound() - 1e-12


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="loss_name"):
        tiny("hinge")
    with pytest.raises(ValueError, match="alpha"):
        tiny("logistic", alpha=-1.0)
    with pytest.raises(ValueError, match="lam"):
        tiny("logistic", alpha=2.0).prox_minimizer(np.zeros(3), 0.5)  # lam <= delta = 1
    with pytest.raises(ValueError, match="problem"):
        make_problem("mnist")
    with pytest.raises(ValueError, match="l_choice"):
        tiny().smoothness("both")
