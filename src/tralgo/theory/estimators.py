"""Estimators: means with standard errors, the region the iterates visit (the empirical
constants g, sigma^2, B), Algorithm 1's Options I/II over a trajectory, and the covariance trace
of a sampled update direction."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tralgo.theory.problems import Evaluation


def mean_se(samples: np.ndarray) -> tuple[float, float]:
    """Sample mean and its standard error ``std(ddof=1) / sqrt(count)`` (0 for one sample)."""
    samples = np.asarray(samples, dtype=np.float64).ravel()
    if samples.size == 0:
        raise ValueError("mean_se needs at least one sample")
    se = float(samples.std(ddof=1) / np.sqrt(samples.size)) if samples.size > 1 else 0.0
    return float(samples.mean()), se


def summary(samples: np.ndarray) -> dict:
    mean, se = mean_se(samples)
    return {"mean": mean, "se": se, "count": int(np.size(samples))}


@dataclass
class RegionStats:
    """Running maxima over every point a study evaluated: the empirical g, sigma^2 and B."""

    max_grad_norm: float = 0.0  # g: max ||grad f(w)||
    max_variance: float = 0.0  # sigma^2: max 1/n sum_i ||grad f_i(w) - grad f(w)||^2
    max_abs_loss: float = 0.0  # B: max |f(w)|
    points: int = 0

    def update(self, ev: Evaluation) -> None:
        self.max_grad_norm = max(self.max_grad_norm, float(np.sqrt(ev.grad_sqnorm.max())))
        self.max_variance = max(self.max_variance, float(ev.variance.max()))
        if not np.isnan(ev.loss).all():
            self.max_abs_loss = max(self.max_abs_loss, float(np.nanmax(np.abs(ev.loss))))
        self.points += int(ev.loss.size)

    def merge(self, other: "RegionStats") -> "RegionStats":
        return RegionStats(
            max(self.max_grad_norm, other.max_grad_norm),
            max(self.max_variance, other.max_variance),
            max(self.max_abs_loss, other.max_abs_loss),
            self.points + other.points,
        )

    def to_dict(self) -> dict:
        return {"max_grad_norm": self.max_grad_norm, "max_variance": self.max_variance,
                "max_abs_loss": self.max_abs_loss, "points": self.points}

    @classmethod
    def from_dict(cls, d: dict) -> "RegionStats":
        return cls(d["max_grad_norm"], d["max_variance"], d["max_abs_loss"], d["points"])


class OuterIterateTracker:
    """Per repetition, over outer iterates w_1..w_T of Algorithm 1 or 2, at each checkpoint T:

    * ``average``: (1/T) sum_t ||grad f(w_t)||^2, the left side of Theorems 1 and 2 (the exact
      expectation of Option II given the trajectory);
    * ``option1``: ||grad f(w_T)||^2 (Option I: last iterate);
    * ``option2``: ||grad f(w_tau)||^2 with tau uniform on 1..T (Option II, literally drawn: a
      reservoir sample, so every prefix has its own uniformly random pick).
    """

    def __init__(self, reps: int, checkpoints: list[int], rng: np.random.Generator) -> None:
        self.checkpoints = sorted(set(int(c) for c in checkpoints))
        self.rng = rng
        self.cumulative = np.zeros(reps)
        self.reservoir = np.zeros(reps)
        self.records: dict[int, dict[str, np.ndarray]] = {}

    def update(self, t: int, grad_sqnorm: np.ndarray) -> None:
        self.cumulative += grad_sqnorm
        replace = self.rng.random(grad_sqnorm.shape[0]) < 1.0 / t  # t = 1 always replaces
        self.reservoir[replace] = grad_sqnorm[replace]
        if t in self.checkpoints:
            self.records[t] = {
                "average": self.cumulative / t,
                "option1": grad_sqnorm.copy(),
                "option2": self.reservoir.copy(),
            }


def direction_moments(U: np.ndarray, reference: np.ndarray) -> dict:
    """Moments of sampled update directions U (K, d) at one point.

    ``variance`` = E||u - E u||^2 (trace of the covariance) estimated by the unbiased
    ``K/(K-1) mean ||u_k - mean u||^2``, with the standard error of the mean of the squared
    deviations; ``bias_sq`` = ||mean u - reference||^2 (reference: the true gradient).
    """
    U = np.asarray(U, dtype=np.float64)
    if U.ndim != 2 or U.shape[0] < 2:
        raise ValueError("U must be (K, d) with K >= 2 draws")
    K = U.shape[0]
    mean = U.mean(axis=0)
    sq_dev = np.einsum("kd,kd->k", U - mean, U - mean) * K / (K - 1)
    var, se = mean_se(sq_dev)
    return {
        "variance": var,
        "variance_se": se,
        "mean_sqnorm": float(mean @ mean),
        "bias_sq": float(np.sum((mean - reference) ** 2)),
        "draws": K,
    }
