"""TRAdam and TRAdamW: TRAlgo over ``torch.optim.Adam`` (L2 weight decay) and ``AdamW``
(decoupled weight decay)."""
from __future__ import annotations

import torch

from tralgo._trajectory import TrajectoryRegularized


class TRAdam(TrajectoryRegularized):
    r"""Adam on ``f(w) + lam/2 ||w - anchor||^2``, re-anchored every ``inner_steps`` steps.

    Adam's moments and step count run on across inner loops (bias correction is never reset).
    The authors' TRAdam (lr 1e-3, ``lambda_w = 1e-4``) is ``lam = 2 * lambda_w / lr = 0.2`` with
    ``lam_scaling="inverse_lr"``; it places Adam's ``eps`` before the bias correction, so the two
    agree to about 1e-5 relative, not bit for bit.
    """

    _base_class = torch.optim.Adam

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        lam: float = 0.1,
        inner_steps: int = 10,
        inner_lr_decay: bool = True,
        lam_scaling: str = "constant",
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        base = self._base_class(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            foreach=foreach, fused=fused,
        )
        super().__init__(base, lam=lam, inner_steps=inner_steps, inner_lr_decay=inner_lr_decay, lam_scaling=lam_scaling)


class TRAdamW(TRAdam):
    r"""AdamW (decoupled weight decay, default 1e-2 as in torch) on ``f(w) + lam/2 ||w - anchor||^2``.

    The proximal term is part of the gradient (it shapes the moments); the weight decay stays
    decoupled, exactly as in ``torch.optim.AdamW``.
    """

    _base_class = torch.optim.AdamW

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 amsgrad: bool = False, **kwargs) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, **kwargs)
