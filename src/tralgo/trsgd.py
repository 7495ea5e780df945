"""TRSGD: TRAlgo over ``torch.optim.SGD`` (momentum, dampening, weight decay, Nesterov)."""
from __future__ import annotations

import torch

from tralgo._trajectory import TrajectoryRegularized


class TRSGD(TrajectoryRegularized):
    r"""SGD on ``f(w) + lam/2 ||w - anchor||^2``, re-anchored every ``inner_steps`` steps.

    The SGD arguments (and ``foreach``/``fused``) are ``torch.optim.SGD``'s; the keyword-only
    ones are ``TrajectoryRegularized``'s. To reproduce the authors' TRSGD (lr 0.1, momentum 0.9,
    weight decay 1e-4, ``lambda_w = 0.01``) use ``lam = 2 * lambda_w / lr = 0.2`` with
    ``lam_scaling="inverse_lr"``.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = TRSGD(model.parameters(), lr=0.1, momentum=0.9, lam=0.1, inner_steps=10)
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        lam: float = 0.1,
        inner_steps: int = 10,
        inner_lr_decay: bool = True,
        lam_scaling: str = "constant",
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        base = torch.optim.SGD(
            params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov, foreach=foreach, fused=fused,
        )
        super().__init__(base, lam=lam, inner_steps=inner_steps, inner_lr_decay=inner_lr_decay, lam_scaling=lam_scaling)
