"""Finite-sum test problems whose constants can be computed or tightly bounded.

Every problem is a generalised linear finite sum with a separable penalty,

.. code-block:: text

    f(w) = 1/n sum_i f_i(w),   f_i(w) = loss(x_i . w, y_i) + alpha * sum_j phi(w_j),
    phi(u) = u^2 / (1 + u^2)   (the non-convex penalty; alpha = 0 switches it off)

with ``loss`` the squared loss ``(z - y)^2 / 2`` (least squares, convex) or the logistic loss
``log(1 + exp(-y z))`` with ``y`` in {-1, +1}. The shared structure makes everything a study needs
cheap and exact in float64, for many points at once (``W`` has one row per point/repetition):

* ``grad f_i = loss'(x_i . w) x_i + alpha phi'(w)``: the penalty is the same for every sample, so
  the per-sample gradient variance ``1/n sum_i ||grad f_i - grad f||^2`` equals
  ``mean_i loss'(z_i)^2 ||x_i||^2 - ||X^T loss'(z) / n||^2`` (one pass over the data, no n x d
  tensor of per-sample gradients).
* ``Hessian f = X^T diag(loss''(z)) X / n + alpha diag(phi''(w))`` with ``loss'' = 1`` (squared)
  or ``loss'' <= 1/4`` (logistic) and ``phi''`` in ``[-1/2, 2]``, which gives the global bounds
  ``l <= c lambda_max(X^T X / n) + 2 alpha`` and ``delta <= alpha / 2`` used by the studies.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

LOSSES = ("squared", "logistic")
L_CHOICES = ("f", "per_sample")
# phi''(u) = (2 - 6u^2) / (1 + u^2)^3 ranges over [-1/2 (at u^2 = 1), 2 (at u = 0)].
PHI_CURVATURE_MIN = -0.5
PHI_CURVATURE_MAX = 2.0
# Upper bound of loss'' (the curvature of the scalar loss in z).
LOSS_CURVATURE_MAX = {"squared": 1.0, "logistic": 0.25}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return expit(x)  # overflow-free and vectorised


def _as_rows(W: np.ndarray) -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    return W[None, :] if W.ndim == 1 else W


@dataclass
class Evaluation:
    """Exact full-data quantities at each row of ``W``."""

    loss: np.ndarray  # (R,) f(w)
    grad: np.ndarray  # (R, d) grad f(w)
    variance: np.ndarray  # (R,) 1/n sum_i ||grad f_i(w) - grad f(w)||^2

    @property
    def grad_sqnorm(self) -> np.ndarray:
        return np.einsum("rd,rd->r", self.grad, self.grad)


@dataclass
class FiniteSum:
    """``f(w) = 1/n sum_i loss(x_i . w, y_i) + alpha sum_j phi(w_j)`` in float64."""

    name: str
    description: str
    X: np.ndarray  # (n, d)
    y: np.ndarray  # (n,)
    loss_name: str
    alpha: float
    w0: np.ndarray  # (d,) the starting point every study uses
    stream: str = ""  # names the studies' random streams (default: name); equal streams, equal draws
    _sample_sqnorms: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.loss_name not in LOSSES:
            raise ValueError(f"loss_name must be one of {LOSSES}, got {self.loss_name!r}")
        if not (np.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        self.X = np.ascontiguousarray(self.X, dtype=np.float64)
        self.y = np.ascontiguousarray(self.y, dtype=np.float64)
        self.w0 = np.asarray(self.w0, dtype=np.float64)
        if self.X.ndim != 2 or self.y.shape != (self.X.shape[0],) or self.w0.shape != (self.X.shape[1],):
            raise ValueError("X must be (n, d), y (n,) and w0 (d,)")
        if self.loss_name == "logistic" and not np.all(np.abs(self.y) == 1):
            raise ValueError("logistic loss needs labels y in {-1, +1}")
        self._sample_sqnorms = np.einsum("nd,nd->n", self.X, self.X)

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def convex(self) -> bool:
        return self.alpha == 0.0

    # -- scalar loss and penalty --------------------------------------------------------------

    def _loss(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.loss_name == "squared":
            return 0.5 * (z - y) ** 2
        return np.logaddexp(0.0, -y * z)

    def _dloss(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.loss_name == "squared":
            return z - y
        return -y * _sigmoid(-y * z)

    def _d2loss(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.loss_name == "squared":
            return np.ones_like(z)
        s = _sigmoid(y * z)
        return s * (1.0 - s)

    def _penalty(self, W: np.ndarray) -> np.ndarray:
        return self.alpha * np.sum(W**2 / (1.0 + W**2), axis=-1)

    def _penalty_grad(self, W: np.ndarray) -> np.ndarray:
        return self.alpha * 2.0 * W / (1.0 + W**2) ** 2

    def _penalty_curvature(self, w: np.ndarray) -> np.ndarray:
        u2 = w**2
        return self.alpha * (2.0 - 6.0 * u2) / (1.0 + u2) ** 3

    # -- full-data and stochastic oracles -----------------------------------------------------

    def evaluate(self, W: np.ndarray, with_loss: bool = True) -> Evaluation:
        """f, grad f and the per-sample gradient variance at each row of ``W``
        (``with_loss=False`` skips f, which is NaN then: the logistic loss is the costly part)."""
        W = _as_rows(W)
        Z = W @ self.X.T  # (R, n)
        D1 = self._dloss(Z, self.y)
        data_grad = D1 @ self.X / self.n
        second_moment = (D1**2) @ self._sample_sqnorms / self.n
        variance = np.maximum(second_moment - np.einsum("rd,rd->r", data_grad, data_grad), 0.0)
        loss = self._loss(Z, self.y).mean(axis=1) + self._penalty(W) if with_loss else np.full(W.shape[0], np.nan)
        return Evaluation(loss=loss, grad=data_grad + self._penalty_grad(W), variance=variance)

    def per_sample_grads(self, w: np.ndarray) -> np.ndarray:
        """All n per-sample gradients at one point, (n, d): the slow reference for tests."""
        w = np.asarray(w, dtype=np.float64)
        z = self.X @ w
        return self._dloss(z, self.y)[:, None] * self.X + self._penalty_grad(w)[None, :]

    def stochastic_grad(self, W: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Mini-batch gradient ``1/M sum_{i in idx[r]} grad f_i(W[r])`` for each row r; idx is (R, M)."""
        W = _as_rows(W)
        Xb = self.X[idx]  # (R, M, d)
        z = np.einsum("rmd,rd->rm", Xb, W)
        d1 = self._dloss(z, self.y[idx])
        return np.einsum("rm,rmd->rd", d1, Xb) / idx.shape[1] + self._penalty_grad(W)

    def hessian(self, w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        z = self.X @ w
        H = (self.X * self._d2loss(z, self.y)[:, None]).T @ self.X / self.n
        H[np.diag_indices_from(H)] += self._penalty_curvature(w)
        return H

    # -- constants ----------------------------------------------------------------------------

    def smoothness(self, choice: str) -> float:
        """The l the studies use: ``"f"`` the smoothness of f (Assumption 1 as stated), or
        ``"per_sample"`` the largest smoothness of an f_i (also a valid l for f, and the one that
        keeps batch-1 steps of size 1/(2l) stable on least squares)."""
        if choice not in L_CHOICES:
            raise ValueError(f"l_choice must be one of {L_CHOICES}, got {choice!r}")
        return self.smoothness_bound() if choice == "f" else self.per_sample_smoothness_bound()

    def smoothness_bound(self) -> float:
        """Global l: ``c lambda_max(X^T X / n) + 2 alpha`` (exact for least squares)."""
        top = float(np.linalg.eigvalsh(self.X.T @ self.X / self.n)[-1])
        return LOSS_CURVATURE_MAX[self.loss_name] * top + PHI_CURVATURE_MAX * self.alpha

    def per_sample_smoothness_bound(self) -> float:
        """max_i of the smoothness of f_i: ``c max_i ||x_i||^2 + 2 alpha``."""
        return LOSS_CURVATURE_MAX[self.loss_name] * float(self._sample_sqnorms.max()) + PHI_CURVATURE_MAX * self.alpha

    def nonconvexity_bound(self) -> float:
        """Global delta: the loss part is convex, the penalty's curvature is >= -alpha/2."""
        return -PHI_CURVATURE_MIN * self.alpha

    def curvature_range(self, W: np.ndarray) -> tuple[float, float]:
        """(min, max) Hessian eigenvalue over the rows of ``W`` (empirical l and -delta)."""
        lo, hi = np.inf, -np.inf
        for w in _as_rows(W):
            eig = np.linalg.eigvalsh(self.hessian(w))
            lo, hi = min(lo, float(eig[0])), max(hi, float(eig[-1]))
        return lo, hi

    # -- the proximal subproblem G_t(w) = f(w) + lam/2 ||w - anchor||^2 -----------------------

    def prox_minimizer(self, anchor: np.ndarray, lam: float, tol: float = 1e-12, max_iter: int = 100) -> np.ndarray:
        """argmin_w f(w) + lam/2 ||w - anchor||^2 by damped Newton, until ``||grad G|| <= tol * scale``
        or Newton stalls at round-off; the distance to the true minimiser is then at most
        ``||grad G|| / (lam - delta)`` (G is (lam - delta)-strongly convex).

        Needs ``lam > delta`` (G strongly convex). Least squares has the closed form
        ``(X^T X / n + lam I)^{-1} (X^T y / n + lam anchor)``; Newton reaches it in one step.
        """
        anchor = np.asarray(anchor, dtype=np.float64)
        if not lam > self.nonconvexity_bound():
            raise ValueError(f"lam must exceed the non-convexity bound {self.nonconvexity_bound()}, got {lam!r}")
        w = anchor.copy()
        identity = np.eye(self.d)

        def objective(v: np.ndarray) -> float:
            return float(self.evaluate(v).loss[0] + 0.5 * lam * np.sum((v - anchor) ** 2))

        scale = 1.0 + np.linalg.norm(self.evaluate(anchor).grad[0])
        for _ in range(max_iter):
            grad = self.evaluate(w).grad[0] + lam * (w - anchor)
            if np.linalg.norm(grad) <= tol * scale:
                return w
            step = np.linalg.solve(self.hessian(w) + lam * identity, grad)
            t, current = 1.0, objective(w)
            # Armijo backtracking: a full Newton step is taken near the minimiser.
            while objective(w - t * step) > current - 1e-4 * t * float(grad @ step) and t > 1e-10:
                t *= 0.5
            w = w - t * step
        grad = self.evaluate(w).grad[0] + lam * (w - anchor)
        if np.linalg.norm(grad) > 1e4 * tol * scale:  # round-off stall is fine, divergence is not
            raise RuntimeError(f"Newton did not converge on G_t for {self.name}: ||grad G|| = {np.linalg.norm(grad):.3e}")
        return w


# -- the problems the report uses -----------------------------------------------------------


def _standardize(X: np.ndarray) -> np.ndarray:
    X = X - X.mean(axis=0)
    return X / X.std(axis=0)


def synthetic_least_squares(seed: int = 0, n: int = 200, d: int = 10, noise: float = 0.5) -> FiniteSum:
    rng = np.random.default_rng([seed, 1])
    # Column scales from 1 to 0.1: the Hessian has condition number about 100.
    X = rng.standard_normal((n, d)) * np.logspace(0.0, -1.0, d)
    y = X @ rng.standard_normal(d) + noise * rng.standard_normal(n)
    return FiniteSum(
        name="ls-synthetic",
        description=f"least squares, Gaussian design n={n}, d={d}, column scales 1..0.1, noise {noise} (seed {seed})",
        X=X, y=y, loss_name="squared", alpha=0.0, w0=rng.standard_normal(d),
    )


def diabetes_least_squares(seed: int = 0) -> FiniteSum:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    X = _standardize(data.data)
    y = (data.target - data.target.mean()) / data.target.std()
    rng = np.random.default_rng([seed, 2])
    return FiniteSum(
        name="ls-diabetes",
        description=f"least squares on scikit-learn's diabetes data (n={X.shape[0]}, d={X.shape[1]}, standardised features and target)",
        X=X, y=y, loss_name="squared", alpha=0.0, w0=rng.standard_normal(X.shape[1]),
    )


def synthetic_logistic(seed: int = 0, n: int = 200, d: int = 10, alpha: float = 0.5) -> FiniteSum:
    rng = np.random.default_rng([seed, 3])
    X = rng.standard_normal((n, d))
    y = np.sign(X @ rng.standard_normal(d) + rng.standard_normal(n))
    y[y == 0] = 1.0
    return FiniteSum(
        name="logreg-synthetic",
        description=(f"logistic loss + {alpha} * sum w_j^2/(1+w_j^2), Gaussian design n={n}, d={d}, "
                     f"labels sign(x.w* + N(0,1)) (seed {seed})"),
        X=X, y=y, loss_name="logistic", alpha=alpha, w0=2.0 * rng.standard_normal(d),
    )


def breast_cancer_logistic(seed: int = 0, alpha: float = 0.5) -> FiniteSum:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    X = _standardize(data.data)
    y = np.where(data.target == 1, 1.0, -1.0)
    rng = np.random.default_rng([seed, 4])
    return FiniteSum(
        name="logreg-breast-cancer",
        description=(f"logistic loss + {alpha} * sum w_j^2/(1+w_j^2) on scikit-learn's breast-cancer data "
                     f"(n={X.shape[0]}, d={X.shape[1]}, standardised features)"),
        X=X, y=y, loss_name="logistic", alpha=alpha, w0=2.0 * rng.standard_normal(X.shape[1]),
    )


SCALE_DOWN = 0.01


def synthetic_least_squares_scaled(seed: int = 0) -> FiniteSum:
    """ls-synthetic with f multiplied by SCALE_DOWN (X and y by its square root).

    With l, lam and the steps rescaled accordingly every algorithm visits exactly the same
    iterates, so distances are unchanged and squared gradients scale by SCALE_DOWN^2: the
    dimensionally consistent bounds keep their measured/bound ratios, the others do not.
    """
    base = synthetic_least_squares(seed)
    root = np.sqrt(SCALE_DOWN)
    return FiniteSum(
        name="ls-synthetic-scaled",
        description=f"ls-synthetic with f multiplied by {SCALE_DOWN} (X and y scaled by {root:g}); same iterates, rescaled constants",
        X=base.X * root, y=base.y * root, loss_name="squared", alpha=0.0, w0=base.w0, stream=base.name,
    )


PROBLEMS = {
    "ls-synthetic": synthetic_least_squares,
    "ls-synthetic-scaled": synthetic_least_squares_scaled,
    "ls-diabetes": diabetes_least_squares,
    "logreg-synthetic": synthetic_logistic,
    "logreg-breast-cancer": breast_cancer_logistic,
}


def make_problem(name: str, seed: int = 0) -> FiniteSum:
    if name not in PROBLEMS:
        raise ValueError(f"problem must be one of {tuple(PROBLEMS)}, got {name!r}")
    return PROBLEMS[name](seed)
