"""Optimizers and learning-rate schedules of the experiment harness, by name.

``build_optimizer`` turns a name (``OPTIMIZERS``) and the trainer's hyperparameters into a
``torch.optim.Optimizer``; ``build_scheduler`` does the same for the per-epoch schedules
(``SCHEDULES``). ``Lookahead`` (Zhang, Lucas, Hinton & Ba, 2019) is the comparison method the
harness offers next to TRAlgo: both anchor the trajectory every k steps, Lookahead by
interpolating towards the anchor, TRAlgo by a proximal term.

Default hyperparameters are the paper's (Section 4): SGD-family lr 0.1, momentum 0.9, weight
decay 1e-4; Adam-family lr 1e-3, betas (0.9, 0.999), weight decay 1e-4 (AdamW too, so that the
three Adam variants differ only in how the decay is applied).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR

import tralgo
from tralgo._wrapper import OptimizerWrapper

OPTIMIZERS = ("sgd", "trsgd", "adam", "tradam", "adamw", "tradamw", "lookahead-sgd", "lookahead-adam")
SCHEDULES = ("step", "cosine", "constant")

# The family decides the default hyperparameters and the base torch optimizer.
_FAMILY = {
    "sgd": "sgd", "trsgd": "sgd", "lookahead-sgd": "sgd",
    "adam": "adam", "tradam": "adam", "lookahead-adam": "adam",
    "adamw": "adamw", "tradamw": "adamw",
}
_DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}
DEFAULT_MOMENTUM = 0.9
DEFAULT_WEIGHT_DECAY = 1e-4
# The authors' lambda_w = 0.1 * initial_lr with coefficient 2*lambda_w/current_lr is, in tralgo's
# terms, lam = 2 * lambda_w / initial_lr = 0.2 scaled by initial_lr/current_lr ("inverse_lr").
DEFAULT_LAM = 0.2
DEFAULT_LAM_SCALING = "inverse_lr"
DEFAULT_INNER_STEPS = 10
DEFAULT_LOOKAHEAD_ALPHA = 0.5


def is_trajectory_regularized(name: str) -> bool:
    return name.startswith("tr")


def is_lookahead(name: str) -> bool:
    return name.startswith("lookahead-")


def default_lr(name: str) -> float:
    _check_name(name)
    return _DEFAULT_LR[_FAMILY[name]]


def _check_name(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")


@dataclass(frozen=True)
class OptimizerSettings:
    """Everything ``build_optimizer`` needs besides the parameters; ``None`` = the name's default."""

    name: str = "sgd"
    lr: float | None = None
    momentum: float = DEFAULT_MOMENTUM
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lam: float = DEFAULT_LAM
    lam_scaling: str = DEFAULT_LAM_SCALING
    inner_steps: int = DEFAULT_INNER_STEPS
    inner_lr_decay: bool = True
    lookahead_k: int = DEFAULT_INNER_STEPS
    lookahead_alpha: float = DEFAULT_LOOKAHEAD_ALPHA

    @property
    def resolved_lr(self) -> float:
        return default_lr(self.name) if self.lr is None else self.lr

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting and its accepted range."""
        _check_name(self.name)
        if not (math.isfinite(self.resolved_lr) and self.resolved_lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.resolved_lr!r}")
        if not (0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must both be in [0, 1), got {self.betas!r}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam!r}")
        if self.lam_scaling not in ("constant", "inverse_lr"):
            raise ValueError(f"lam_scaling must be 'constant' or 'inverse_lr', got {self.lam_scaling!r}")
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be an integer >= 1, got {self.inner_steps!r}")
        if self.lookahead_k < 1:
            raise ValueError(f"lookahead_k must be an integer >= 1, got {self.lookahead_k!r}")
        if not (0 < self.lookahead_alpha <= 1):
            raise ValueError(f"lookahead_alpha must be in (0, 1], got {self.lookahead_alpha!r}")


def build_optimizer(params: Iterable[Tensor], settings: OptimizerSettings) -> Optimizer:
    """The optimizer ``settings.name`` over ``params`` (validated first)."""
    settings.validate()
    family = _FAMILY[settings.name]
    lr = settings.resolved_lr
    if family == "sgd":
        base: Optimizer = torch.optim.SGD(
            params, lr=lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
    else:
        adam_class = torch.optim.Adam if family == "adam" else torch.optim.AdamW
        base = adam_class(
            params, lr=lr, betas=settings.betas, eps=settings.eps, weight_decay=settings.weight_decay
        )
    if is_trajectory_regularized(settings.name):
        return tralgo.TrajectoryRegularized(
            base, lam=settings.lam, inner_steps=settings.inner_steps,
            inner_lr_decay=settings.inner_lr_decay, lam_scaling=settings.lam_scaling,
        )
    if is_lookahead(settings.name):
        return Lookahead(base, k=settings.lookahead_k, alpha=settings.lookahead_alpha)
    return base


def restart_inner_loop(optimizer: Optimizer) -> None:
    """The authors' per-epoch restart of TRAlgo's inner loop; a no-op for other optimizers."""
    if isinstance(optimizer, tralgo.TrajectoryRegularized):
        optimizer.restart_inner_loop()


# -- Lookahead --------------------------------------------------------------------------------

SLOW_KEY = "lookahead_slow"
LOOKAHEAD_COUNTER_KEY = "lookahead_step"


class Lookahead(OptimizerWrapper):
    r"""Lookahead (Zhang, Lucas, Hinton & Ba, NeurIPS 2019) around any built optimizer.

    The base ("fast") optimizer takes ``k`` steps; then the slow weights move
    ``slow <- slow + alpha * (fast - slow)`` and the fast weights restart from them.
    The slow weights start at the parameters' values before their first step.

    Like ``tralgo.TrajectoryRegularized`` the wrapper shares the base's ``param_groups`` and
    ``state`` (LR schedulers work on it). ``k``, ``alpha`` and the counter ``"lookahead_step"``
    live in every param group; slow weights live in the base's per-parameter state under
    ``"lookahead_slow"``. So ``state_dict()`` is the base's standard format and a resumed run
    continues exactly, also in the middle of a cycle. Slow weights enter the state only after
    the base has stepped, because bases such as Adam initialise a parameter's state lazily when
    it is empty.

    Evaluation uses the current (fast) weights, as in the authors' reference code between syncs.
    """

    def __init__(self, optimizer: Optimizer, *, k: int = DEFAULT_INNER_STEPS, alpha: float = DEFAULT_LOOKAHEAD_ALPHA) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if not (isinstance(alpha, (int, float)) and 0 < alpha <= 1):
            raise ValueError(f"alpha must be a number in (0, 1], got {alpha!r}")
        super().__init__(optimizer, {"lookahead_k": k, "lookahead_alpha": alpha})

    def _init_group(self, group: dict) -> None:
        super()._init_group(group)
        group.setdefault(LOOKAHEAD_COUNTER_KEY, 0)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One fast step; every ``k``-th step also syncs the slow weights."""
        first_values = [
            (p, p.detach().clone(memory_format=torch.preserve_format))
            for group in self.param_groups
            for p in group["params"]
            if p.requires_grad and SLOW_KEY not in self.state.get(p, {})
        ]
        with torch.enable_grad():
            loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        for param, value in first_values:
            if param.grad is not None:  # the base stepped it
                self.state[param][SLOW_KEY] = value
        for group in self.param_groups:
            group[LOOKAHEAD_COUNTER_KEY] += 1
            if group[LOOKAHEAD_COUNTER_KEY] % group["lookahead_k"] == 0:
                self._sync(group)
        return loss

    def _sync(self, group: dict) -> None:
        fast = [p for p in group["params"] if SLOW_KEY in self.state.get(p, {})]
        if not fast:
            return
        slow = [self.state[p][SLOW_KEY] for p in fast]
        torch._foreach_lerp_(slow, fast, group["lookahead_alpha"])
        torch._foreach_copy_(fast, slow)


# -- schedules ----------------------------------------------------------------------------------

def step_milestones(epochs: int) -> list[int]:
    """The paper's step schedule: x0.1 from epoch 0.5*E and again from 0.75*E (0-based epochs;
    100 and 150 of 200)."""
    return [math.ceil(0.5 * epochs), math.ceil(0.75 * epochs)]


def build_scheduler(optimizer: Optimizer, name: str, epochs: int) -> LRScheduler:
    """A scheduler stepped once per epoch; ``epochs`` is the run's total number of epochs."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {name!r}")
    if name == "step":
        return MultiStepLR(optimizer, milestones=step_milestones(epochs), gamma=0.1)
    if name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    return MultiStepLR(optimizer, milestones=[], gamma=1.0)
