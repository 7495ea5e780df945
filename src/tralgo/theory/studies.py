"""The studies behind ``tralgo theory``: Lemma 2, Theorems 1-2 and the variance claim.

Each study runs on one ``FiniteSum`` and returns a JSON-ready dict of measurements (means with
standard errors over seeded repetitions) plus the region its iterates visited; the bounds are
evaluated afterwards by ``report`` from the constants of the whole region (``constants``).

Parameter choices follow the paper: l is the global smoothness bound of f
(``FiniteSum.smoothness_bound``), delta the global non-convexity bound, TRSGD uses
``lam = 2 l`` (Lemma 3, Theorem 2) and ``eta_k = 1/((lam - delta) k)`` (Definition 1), SGD uses
``eta = 1/(2 l)`` (Theorem 1).
"""
from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from tralgo.theory.algorithms import sgd, sgd_on_prox, trsgd
from tralgo.theory.estimators import OuterIterateTracker, RegionStats, direction_moments, summary
from tralgo.theory.problems import FiniteSum

STUDIES = ("theorems", "lemma2", "variance")


@dataclass(frozen=True)
class StudyConfig:
    seed: int = 0
    # Theorems 1-2: SGD with batch M and TRSGD (batch 1) with S inner steps, N gradient calls each.
    theorem_reps: int = 64
    gradient_calls: int = 4096  # N_max; E||grad f||^2 is reported at every power of 2 up to it
    batch_sizes: tuple[int, ...] = (1, 4, 16, 64)
    inner_steps: tuple[int, ...] = (1, 4, 16, 64)
    # Region statistics (g, sigma^2, B) are taken at every outer iterate of every repetition and at
    # every inner iterate of the first region_reps repetitions; Hessian spectra at checkpoints of those.
    region_reps: int = 8
    # Lemma 2: inner SGD on G_t from fixed anchors, S = 1, 2, 4, ..., lemma_max_inner.
    lemma_reps: int = 200
    lemma_max_inner: int = 1024
    anchor_steps: tuple[int, ...] = (0, 64, 1024)  # anchors: w0 after this many SGD(M=1) steps
    # The variance claim: update directions over many draws at the anchors.
    variance_draws: int = 2000
    variance_inner_steps: tuple[int, ...] = (1, 4, 16, 64)

    def __post_init__(self) -> None:
        for name in ("theorem_reps", "gradient_calls", "region_reps", "lemma_reps", "lemma_max_inner", "variance_draws"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.variance_draws < 2:
            raise ValueError(f"variance_draws must be >= 2, got {self.variance_draws!r}")
        for name in ("batch_sizes", "inner_steps", "variance_inner_steps"):
            for value in getattr(self, name):
                if not isinstance(value, int) or value < 1 or (name != "variance_inner_steps" and self.gradient_calls % value):
                    raise ValueError(f"{name} must hold ints >= 1 dividing gradient_calls={self.gradient_calls}, got {value!r}")
        if any(not isinstance(s, int) or s < 0 for s in self.anchor_steps) or not self.anchor_steps:
            raise ValueError(f"anchor_steps must be ints >= 0, got {self.anchor_steps!r}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# Small enough for tests and a smoke run (seconds), same code path as the full study.
QUICK = StudyConfig(
    theorem_reps=8, gradient_calls=64, batch_sizes=(1, 4), inner_steps=(1, 4), region_reps=4,
    lemma_reps=32, lemma_max_inner=32, anchor_steps=(0, 16), variance_draws=200, variance_inner_steps=(1, 4),
)


def _rng(cfg: StudyConfig, problem: FiniteSum, *tags) -> np.random.Generator:
    """An independent, reproducible stream per (seed, problem, study, configuration)."""
    key = "/".join([problem.stream or problem.name, *map(str, tags)])
    return np.random.default_rng([cfg.seed, zlib.crc32(key.encode())])


@dataclass(frozen=True)
class Steps:
    """The step-size parameters every study shares."""

    l: float  # global smoothness bound of f
    delta: float  # global non-convexity bound
    lam: float  # TRSGD's lambda = 2 l (Lemma 3, Theorem 2)
    eta: float  # SGD's step 1/(2 l) (Theorem 1)

    @classmethod
    def of(cls, problem: FiniteSum, l_choice: str) -> "Steps":
        l = problem.smoothness(l_choice)
        return cls(l=l, delta=problem.nonconvexity_bound(), lam=2.0 * l, eta=1.0 / (2.0 * l))


def _powers_of_two(up_to: int, at_least: int = 1) -> list[int]:
    out, p = [], 1
    while p <= up_to:
        if p >= at_least:
            out.append(p)
        p *= 2
    if up_to not in out:
        out.append(up_to)
    return out


class _Curvature:
    """Running min/max Hessian eigenvalue (empirical -delta and l) over sampled iterates."""

    def __init__(self, problem: FiniteSum) -> None:
        self.problem, self.lo, self.hi, self.points = problem, np.inf, -np.inf, 0

    def update(self, W: np.ndarray) -> None:
        lo, hi = self.problem.curvature_range(W)
        self.lo, self.hi, self.points = min(self.lo, lo), max(self.hi, hi), self.points + len(W)

    def to_dict(self) -> dict:
        return {"min_eigenvalue": self.lo, "max_eigenvalue": self.hi, "points": self.points}


def _tile(w: np.ndarray, reps: int) -> np.ndarray:
    return np.tile(np.asarray(w, dtype=np.float64), (reps, 1))


# -- Theorems 1 and 2 ---------------------------------------------------------------------------


def theorems_study(problem: FiniteSum, cfg: StudyConfig, l_choice: str = "f") -> dict:
    """E||grad f||^2 over outer iterates for SGD (batch M) and TRSGD (batch 1, S inner steps) at
    equal gradient calls N = T M = T S, at every power-of-two N up to ``gradient_calls``."""
    steps = Steps.of(problem, l_choice)
    region, curvature = RegionStats(), _Curvature(problem)
    rr = min(cfg.region_reps, cfg.theorem_reps)
    W0 = _tile(problem.w0, cfg.theorem_reps)
    region.update(problem.evaluate(W0[:1]))
    runs = []

    def run(method: str, calls_per_step: int, launch) -> None:
        calls = _powers_of_two(cfg.gradient_calls, at_least=calls_per_step)
        tracker = OuterIterateTracker(cfg.theorem_reps, [c // calls_per_step for c in calls],
                                      _rng(cfg, problem, "theorems", method, calls_per_step, "option2"))

        def observe(t: int, W: np.ndarray) -> None:
            ev = problem.evaluate(W)
            tracker.update(t, ev.grad_sqnorm)
            region.update(ev)
            if t in tracker.checkpoints:
                curvature.update(W[:rr])

        def observe_inner(k: int, W: np.ndarray, anchor: np.ndarray) -> None:
            region.update(problem.evaluate(W[:rr]))

        launch(observe, observe_inner, _rng(cfg, problem, "theorems", method, calls_per_step))
        runs.append({
            "method": method,
            "batch": calls_per_step if method == "sgd" else 1,
            "inner_steps": calls_per_step if method == "trsgd" else None,
            "checkpoints": [
                {"calls": T * calls_per_step, "T": T, **{key: summary(value) for key, value in tracker.records[T].items()}}
                for T in tracker.checkpoints
            ],
        })

    for M in cfg.batch_sizes:
        run("sgd", M, lambda observe, _, rng, M=M: sgd(
            problem, W0, steps.eta, M, cfg.gradient_calls // M, rng, observe=observe))
    for S in cfg.inner_steps:
        run("trsgd", S, lambda observe, observe_inner, rng, S=S: trsgd(
            problem, W0, steps.lam, steps.delta, S, cfg.gradient_calls // S, rng,
            observe=observe, observe_inner=observe_inner))
    return {"steps": asdict(steps), "runs": runs, "region": region.to_dict(), "curvature": curvature.to_dict()}


# -- anchors shared by Lemma 2 and the variance study ---------------------------------------------


def anchor_points(problem: FiniteSum, cfg: StudyConfig, l_choice: str = "f") -> list[dict]:
    """Fixed points along one seeded SGD (batch 1, eta = 1/(2l)) trajectory from w0."""
    steps = Steps.of(problem, l_choice)
    wanted = sorted(set(cfg.anchor_steps))
    points = {0: problem.w0.copy()} if 0 in wanted else {}

    def observe(t: int, W: np.ndarray) -> None:
        if t in wanted:
            points[t] = W[0].copy()

    if max(wanted) > 0:
        sgd(problem, problem.w0, steps.eta, 1, max(wanted), _rng(cfg, problem, "anchors"), observe=observe)
    return [{"sgd_steps": t, "w": points[t]} for t in wanted]


# -- Lemma 2 ----------------------------------------------------------------------------------------


def lemma2_study(problem: FiniteSum, cfg: StudyConfig, l_choice: str = "f") -> dict:
    """||w_S - w*||^2 and ||grad G_t(w_S)||^2 after S inner steps on G_t, S = 1, 2, 4, ...

    Also the constant of Rakhlin et al.'s lemma (which Lemma 2 follows): G^2 = max over visited
    inner iterates of E_i ||grad f_i(w) + lam (w - w_t)||^2 = ||grad G_t(w)||^2 + sigma^2(w).
    """
    steps = Steps.of(problem, l_choice)
    region, curvature = RegionStats(), _Curvature(problem)
    rr = min(cfg.region_reps, cfg.lemma_reps)
    checkpoints = _powers_of_two(cfg.lemma_max_inner)
    anchors = []
    for anchor in anchor_points(problem, cfg, l_choice):
        w_star = problem.prox_minimizer(anchor["w"], steps.lam)
        records: dict[int, dict] = {}
        second_moment = [0.0]

        def observe_inner(k: int, W: np.ndarray, A: np.ndarray) -> None:
            ev = problem.evaluate(W[:rr])
            grad_G = ev.grad + steps.lam * (W[:rr] - A[:rr])
            second_moment[0] = max(second_moment[0], float((np.einsum("rd,rd->r", grad_G, grad_G) + ev.variance).max()))
            region.update(ev)
            if k in checkpoints:
                full = problem.evaluate(W, with_loss=False)
                grad_G = full.grad + steps.lam * (W - A)
                records[k] = {
                    "S": k,
                    "dist_sq": summary(np.sum((W - w_star) ** 2, axis=1)),
                    "grad_G_sq": summary(np.einsum("rd,rd->r", grad_G, grad_G)),
                }
                curvature.update(W[:rr])

        sgd_on_prox(problem, _tile(anchor["w"], cfg.lemma_reps), steps.lam, steps.delta, cfg.lemma_max_inner,
                    _rng(cfg, problem, "lemma2", anchor["sgd_steps"]), observe_inner=observe_inner)
        anchors.append({
            "sgd_steps": anchor["sgd_steps"],
            "anchor_to_minimiser_sq": float(np.sum((anchor["w"] - w_star) ** 2)),
            # ||grad G_t(w*)||: the minimiser's error is at most this / (lam - delta).
            "minimiser_residual": float(np.linalg.norm(
                problem.evaluate(w_star).grad[0] + steps.lam * (w_star - anchor["w"]))),
            "stochastic_grad_G_second_moment": second_moment[0],
            "checkpoints": [records[k] for k in checkpoints],
        })
    return {"steps": asdict(steps), "anchors": anchors, "region": region.to_dict(), "curvature": curvature.to_dict()}


# -- the variance claim -----------------------------------------------------------------------------


def update_directions(problem: FiniteSum, w: np.ndarray, S: int, draws: int, steps: Steps, rng_for) -> dict[str, np.ndarray]:
    """``draws`` independent update directions at w, each in gradient units, per method.

    * ``sgd_batch1``: grad f_I(w), |I| = 1 (SGD's direction at TRSGD's batch size);
    * ``sgd_batchS``: grad f_I(w), |I| = S (one SGD step with TRSGD's gradient calls);
    * ``sgd_S_steps``: (w - w_S) / (S eta) after S SGD steps of batch 1 (same calls, same batch);
    * ``trsgd``: lam (w - w_{t+1}) after one TRSGD outer step (S inner steps, batch 1): the outer
      step is a proximal step of size 1/lam, so lam (w_t - w_{t+1}) estimates grad f(w*_{t+1}).
    """
    W = _tile(w, draws)
    out = {
        "sgd_batch1": problem.stochastic_grad(W, rng_for("sgd_batch1").integers(0, problem.n, (draws, 1))),
        "sgd_batchS": problem.stochastic_grad(W, rng_for("sgd_batchS").integers(0, problem.n, (draws, S))),
    }
    out["sgd_S_steps"] = (W - sgd(problem, W, steps.eta, 1, S, rng_for("sgd_S_steps"))) / (S * steps.eta)
    out["trsgd"] = steps.lam * (W - sgd_on_prox(problem, W, steps.lam, steps.delta, S, rng_for("trsgd")))
    return out


def variance_study(problem: FiniteSum, cfg: StudyConfig, l_choice: str = "f") -> dict:
    """Covariance trace of each method's update direction at fixed points of a trajectory."""
    steps = Steps.of(problem, l_choice)
    region = RegionStats()
    points = []
    for anchor in anchor_points(problem, cfg, l_choice):
        ev = problem.evaluate(anchor["w"])
        region.update(ev)
        rows = []
        for S in cfg.variance_inner_steps:
            directions = update_directions(
                problem, anchor["w"], S, cfg.variance_draws, steps,
                lambda tag, S=S: _rng(cfg, problem, "variance", anchor["sgd_steps"], S, tag))
            rows.append({"S": S, **{name: direction_moments(U, ev.grad[0]) for name, U in directions.items()}})
        points.append({
            "sgd_steps": anchor["sgd_steps"],
            "grad_sq": float(ev.grad_sqnorm[0]),
            "sigma_sq": float(ev.variance[0]),  # closed form: SGD batch M has variance sigma_sq / M
            "rows": rows,
        })
    return {"steps": asdict(steps), "points": points, "region": region.to_dict()}


STUDY_FUNCTIONS = {"theorems": theorems_study, "lemma2": lemma2_study, "variance": variance_study}


def run_study(name: str, problem: FiniteSum, cfg: StudyConfig, l_choice: str = "f") -> dict:
    if name not in STUDY_FUNCTIONS:
        raise ValueError(f"study must be one of {STUDIES}, got {name!r}")
    start = time.perf_counter()
    result = STUDY_FUNCTIONS[name](problem, cfg, l_choice)
    result["seconds"] = time.perf_counter() - start
    return result


def constants(problem: FiniteSum, results: dict[str, dict], l_choice: str = "f") -> dict:
    """l, delta (global bounds) and the empirical g, sigma^2, B over every study's region."""
    region = RegionStats()
    lo, hi = np.inf, -np.inf
    for result in results.values():
        region = region.merge(RegionStats.from_dict(result["region"]))
        if "curvature" in result:
            lo = min(lo, result["curvature"]["min_eigenvalue"])
            hi = max(hi, result["curvature"]["max_eigenvalue"])
    return {
        "l": problem.smoothness(l_choice),
        "l_f": problem.smoothness_bound(),
        "l_per_sample": problem.per_sample_smoothness_bound(),
        "delta": problem.nonconvexity_bound(),
        "empirical_max_eigenvalue": hi,
        "empirical_min_eigenvalue": lo,
        "g": region.max_grad_norm,
        "sigma_sq": region.max_variance,
        "B": region.max_abs_loss,
        "region_points": region.points,
    }
