"""Algorithm 1 (TRAlgo with SGD inside: TRSGD) and Algorithm 2 (SGD), exactly as in the paper,
vectorised over independent repetitions (one row of ``W`` per repetition, float64).

* Algorithm 2, ``sgd``: ``w_{k+1} = w_k - eta_k grad f_{I_k}(w_k)`` with ``I_k`` a batch of ``M``
  indices drawn uniformly *with replacement* (so the batch gradient's variance is exactly
  ``sigma^2(w) / M``).
* Definition 1, ``sgd_on_prox``: Algorithm 2 on ``G_t(w) = f(w) + lam/2 ||w - w_t||^2`` from
  ``w_t`` with ``eta_k = 1 / ((lam - delta) k)``, ``k = 1..S``, batch 1; Option I returns the last
  inner iterate ``w_S`` (what Lemma 2 bounds), Option II a uniformly random one of ``w_1..w_S``.
* Algorithm 1, ``trsgd``: ``T`` outer steps ``w_{t+1} = sgd_on_prox(w_t)``. Algorithm 1's own
  Options I/II (last outer iterate / uniformly random outer iterate) are read off the outer
  trajectory by an observer (see ``estimators.OuterIterateTracker``).

Observers are called as ``observe(t, W)`` after each outer step ``t = 1..T`` and
``observe_inner(k, W, anchor)`` after each inner step, so studies measure without storing
trajectories.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from tralgo.theory.problems import FiniteSum

Observer = Optional[Callable[[int, np.ndarray], None]]
InnerObserver = Optional[Callable[[int, np.ndarray, np.ndarray], None]]
INNER_OUTPUTS = ("last", "random")


def draw_indices(rng: np.random.Generator, reps: int, batch: int, n: int) -> np.ndarray:
    """One batch of ``batch`` sample indices per repetition, uniform with replacement: (reps, batch)."""
    return rng.integers(0, n, size=(reps, batch))


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def sgd(
    problem: FiniteSum,
    W0: np.ndarray,
    step: float,
    batch: int,
    steps: int,
    rng: np.random.Generator,
    observe: Observer = None,
) -> np.ndarray:
    """Algorithm 2 with a constant step ``eta`` (Theorem 1 uses ``eta = 1/(2l)``); returns w_T."""
    _check_positive_int("batch", batch)
    _check_positive_int("steps", steps)
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step!r}")
    W = np.array(W0, dtype=np.float64, ndmin=2)
    for t in range(1, steps + 1):
        W = W - step * problem.stochastic_grad(W, draw_indices(rng, W.shape[0], batch, problem.n))
        if observe is not None:
            observe(t, W)
    return W


def sgd_on_prox(
    problem: FiniteSum,
    anchor: np.ndarray,
    lam: float,
    delta: float,
    inner_steps: int,
    rng: np.random.Generator,
    output: str = "last",
    batch: int = 1,
    observe_inner: InnerObserver = None,
) -> np.ndarray:
    """Definition 1: S steps of SGD on G_t from ``anchor`` with ``eta_k = 1/((lam - delta) k)``."""
    _check_positive_int("inner_steps", inner_steps)
    if not lam > delta:
        raise ValueError(f"lam must exceed delta (G_t strongly convex), got lam={lam!r}, delta={delta!r}")
    if output not in INNER_OUTPUTS:
        raise ValueError(f"output must be one of {INNER_OUTPUTS}, got {output!r}")
    anchor = np.array(anchor, dtype=np.float64, ndmin=2)
    reps = anchor.shape[0]
    W = anchor.copy()
    if output == "random":
        pick = rng.integers(1, inner_steps + 1, size=reps)
        chosen = np.empty_like(W)
    for k in range(1, inner_steps + 1):
        grad_G = problem.stochastic_grad(W, draw_indices(rng, reps, batch, problem.n)) + lam * (W - anchor)
        W = W - grad_G / ((lam - delta) * k)
        if observe_inner is not None:
            observe_inner(k, W, anchor)
        if output == "random":
            chosen[pick == k] = W[pick == k]
    return chosen if output == "random" else W


def trsgd(
    problem: FiniteSum,
    W0: np.ndarray,
    lam: float,
    delta: float,
    inner_steps: int,
    outer_steps: int,
    rng: np.random.Generator,
    inner_output: str = "last",
    observe: Observer = None,
    observe_inner: InnerObserver = None,
) -> np.ndarray:
    """Algorithm 1 with SGD (TRSGD, Definition 1), batch 1; returns the last outer iterate w_T."""
    _check_positive_int("outer_steps", outer_steps)
    W = np.array(W0, dtype=np.float64, ndmin=2)
    for t in range(1, outer_steps + 1):
        W = sgd_on_prox(problem, W, lam, delta, inner_steps, rng, output=inner_output, observe_inner=observe_inner)
        if observe is not None:
            observe(t, W)
    return W
