"""``TrajectoryRegularized``: TRAlgo around any ``torch.optim.Optimizer``.

Algorithm 1 of Zhang, Qu, Chen & Metaxas (IJCAI 2019), per parameter group, with inner counter
``k`` in ``0 .. S-1`` (``S = inner_steps``):

.. code-block:: text

    if k == 0:            anchor <- w                      (re-centre the proximal term)
    lam_k = lam                                 (lam_scaling="constant")
          = lam * initial_lr / lr               (lam_scaling="inverse_lr"; 0 when lr == 0)
    g     <- g + lam_k * (w - anchor)           gradient of  f(w) + lam_k/2 ||w - anchor||^2
    lr_k  = lr / (k + 1)  if inner_lr_decay else lr
    base optimizer step with g and lr_k         (its own state is never reset)
    k     <- (k + 1) mod S

``initial_lr`` is the group's ``lr`` at the moment the wrapper first sees the group (construction,
``add_param_group``, or loading a checkpoint without it), or the group's ``"initial_lr"`` when an
LR scheduler has recorded one; stored in the group as ``"tr_initial_lr"`` and overridable there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from tralgo import _functional as F
from tralgo import _fused
from tralgo._wrapper import OptimizerWrapper

ANCHOR_KEY = "tralgo_anchor"
COUNTER_KEY = "inner_step"
INITIAL_LR_KEY = "tr_initial_lr"
LAM_SCALINGS = ("constant", "inverse_lr")
_OPTION_KEYS = ("lam", "inner_steps", "inner_lr_decay", "lam_scaling")

# Bases whose L2 weight decay is ``g + wd * w`` added after the maximize sign and before
# anything else, on every implementation (for-loop, foreach, fused). For these the ``lam_k * w``
# half of the proximal gradient is folded into the weight decay the base already applies, so
# tralgo only has to add ``-lam_k * anchor``: one pass over the gradients instead of two.
_FOLDABLE_BASES = (torch.optim.SGD, torch.optim.Adam)
# Folding rounds ``lam_k * w`` and ``lam_k * anchor`` separately before they cancel: in 16-bit
# floats that costs several times torch's own low-precision tolerance, so such groups add
# ``lam_k * (w - anchor)`` (the difference of two nearby values is exact) instead.
_NO_FOLD_DTYPES = (torch.float16, torch.bfloat16)


def check_options(lam: Any, inner_steps: Any, inner_lr_decay: Any, lam_scaling: Any, where: str = "") -> None:
    """Raise a ValueError/TypeError naming the option and its accepted range."""
    suffix = f" ({where})" if where else ""
    if isinstance(lam, bool) or not isinstance(lam, Real) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}{suffix}")
    if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 1:
        raise ValueError(f"inner_steps must be an int >= 1, got {inner_steps!r}{suffix}")
    if not isinstance(inner_lr_decay, bool):
        raise TypeError(f"inner_lr_decay must be True or False, got {inner_lr_decay!r}{suffix}")
    if lam_scaling not in LAM_SCALINGS:
        raise ValueError(f"lam_scaling must be one of {LAM_SCALINGS}, got {lam_scaling!r}{suffix}")


def check_fused(fused: Any, *, differentiable: bool = False, capturable: bool = False) -> None:
    """``fused`` of TRSGD / TRAdam / TRAdamW: torch's ``None``/``False``/``True`` or ``"compiled"``."""
    if fused not in (None, False, True, "compiled"):
        raise ValueError(f"fused must be None, False, True or 'compiled', got {fused!r}")
    if fused == "compiled" and differentiable:
        # The kernel writes params and state in place outside autograd: the graph would be wrong.
        raise ValueError("fused='compiled' does not support differentiable=True; use fused=None with differentiable=True")
    if fused == "compiled" and capturable:
        # The kernel reads the step count on the host; the capturable contract forbids that sync.
        raise ValueError("fused='compiled' does not support capturable=True; use fused=None or fused=True with capturable=True")


def _as_float(value: float | Tensor) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


def proximal_coefficient(group: dict) -> float:
    """lam_k of the group's next step, before the ``maximize`` sign."""
    lam = float(group["lam"])
    if lam == 0.0 or group["lam_scaling"] == "constant":
        return lam
    lr = _as_float(group["lr"])
    # At lr == 0 the step moves nothing; a coefficient of lam*initial_lr/0 would only put inf/NaN
    # into the base's state (e.g. Adam's moments), so the proximal term is switched off.
    return 0.0 if lr == 0.0 else lam * _as_float(group[INITIAL_LR_KEY]) / lr


@dataclass
class _GroupStep:
    """What one step does to one group, and what must be undone or committed afterwards."""

    group: dict
    k: int
    coeff: float  # signed lam_k: negative when the base maximizes
    lr: Any  # the group's own lr object, restored after the base step
    folded_weight_decay: Any = None  # the original weight_decay when lam_k*w was folded in
    params: list[Tensor] = field(default_factory=list)  # params with an anchor for this step
    anchors: list[Tensor] = field(default_factory=list)
    new_params: list[Tensor] = field(default_factory=list)  # anchored after the base step
    new_anchors: list[Tensor] = field(default_factory=list)


class TrajectoryRegularized(OptimizerWrapper):
    r"""Wrap an already-built optimizer so that it minimises ``f(w) + lam/2 ||w - w_t||^2``,
    re-centring ``w_t`` at the current weights every ``inner_steps`` steps (TRAlgo).

    Args:
        optimizer: any ``torch.optim.Optimizer`` (SGD, Adam, RMSprop, LBFGS, a third-party class).
            The wrapper shares its ``param_groups`` and ``state``: a scheduler that changes ``lr``
            on the wrapper changes what the base uses. A base whose ``state_dict()`` does not
            save its ``state`` (timm's and pytorch_optimizer's ``Lookahead``) is refused: the
            anchors would be lost from checkpoints; put such a wrapper outside,
            ``Lookahead(TRSGD(...))``.
        lam: the paper's lambda (``lam >= 0``): the gradient of the proximal term is
            ``lam_k * (w - anchor)``. ``lam = 0`` switches the regulariser off.
        inner_steps: S, the number of steps between re-anchorings (``>= 1``).
        inner_lr_decay: use ``lr / (k + 1)`` at inner step ``k`` (the paper's Definition 1 and the
            authors' code); the group's ``lr`` is restored right after the step.
        lam_scaling: ``"constant"`` (lam_k = lam) or ``"inverse_lr"`` (lam_k = lam * initial_lr /
            lr, the authors' behaviour: the pull ``lr * lam_k`` stays constant as a schedule
            lowers ``lr``). The authors' ``lambda_w`` maps to ``lam = 2 * lambda_w / initial_lr``.

    ``lam``, ``inner_steps``, ``inner_lr_decay`` and ``lam_scaling`` are stored in every param
    group (like ``lr``) and may differ between groups; each group keeps its own counter
    ``"inner_step"``. Anchors live in the base's per-parameter state under ``"tralgo_anchor"``,
    so ``state_dict()`` is the base's standard format and resumes exactly.

    After ``step()`` returns, a parameter's ``.grad`` has served as scratch space: it holds what
    the base optimizer consumed, not the data gradient (the authors' code and
    ``GradScaler.unscale_`` modify gradients in place too). Read or clip gradients before
    ``step()`` and zero them before the next backward, as every training loop does.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = TrajectoryRegularized(torch.optim.SGD(model.parameters(), lr=0.1), lam=0.1)
        >>> model(torch.randn(8, 4)).pow(2).mean().backward()
        >>> opt.step(); opt.zero_grad()
    """

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        lam: float = 0.1,
        inner_steps: int = 10,
        inner_lr_decay: bool = True,
        lam_scaling: str = "constant",
    ) -> None:
        if isinstance(optimizer, TrajectoryRegularized):
            raise ValueError("optimizer is already a TrajectoryRegularized optimizer; wrap its base only once")
        check_options(lam, inner_steps, inner_lr_decay, lam_scaling)
        super().__init__(
            optimizer, dict(lam=lam, inner_steps=inner_steps, inner_lr_decay=inner_lr_decay, lam_scaling=lam_scaling)
        )

    def _init_group(self, group: dict) -> None:
        super()._init_group(group)
        group.setdefault(COUNTER_KEY, 0)
        # The undecayed lr: a scheduler records it as "initial_lr" (a base-only checkpoint loaded
        # mid-schedule carries it while "lr" is already decayed).
        group.setdefault(INITIAL_LR_KEY, _as_float(group.get("initial_lr", group["lr"])))
        index = next((i for i, g in enumerate(self.param_groups) if g is group), None)
        self._check_group(group, index)

    def _check_group(self, group: dict, index: int | None) -> None:
        where = f"param group {index}" if index is not None else "param group"
        check_options(group["lam"], group["inner_steps"], group["inner_lr_decay"], group["lam_scaling"], where)
        if group["lam_scaling"] == "inverse_lr" and group["lam"] > 0 and _as_float(group[INITIAL_LR_KEY]) <= 0:
            raise ValueError(
                f"lam_scaling='inverse_lr' needs a positive initial lr ({where} has "
                f"{INITIAL_LR_KEY}={group[INITIAL_LR_KEY]!r}); set group['{INITIAL_LR_KEY}'] explicitly"
            )

    def restart_inner_loop(self) -> None:
        """Make the next step re-anchor every group (the authors' restart at each epoch)."""
        for group in self.param_groups:
            group[COUNTER_KEY] = 0

    @torch._disable_dynamo
    def state_dict(self) -> dict[str, Any]:
        return super().state_dict()

    @torch._disable_dynamo
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)

    def _check_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._check_anchor_shapes(state_dict)

    def _check_anchor_shapes(self, state_dict: dict[str, Any]) -> None:
        saved_groups = state_dict.get("param_groups", [])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(saved_groups)} param groups but the optimizer has {len(self.param_groups)}"
            )
        saved_state = state_dict.get("state", {})
        for index, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"param group {index}: state_dict has {len(saved['params'])} parameters, "
                    f"the optimizer has {len(group['params'])}; was it saved from a different model?"
                )
            for position, (param_id, param) in enumerate(zip(saved["params"], group["params"])):
                anchor = saved_state.get(param_id, {}).get(ANCHOR_KEY)
                if anchor is not None and anchor.shape != param.shape:
                    raise ValueError(
                        f"param group {index}, parameter {position}: the saved anchor has shape "
                        f"{tuple(anchor.shape)} but the parameter has shape {tuple(param.shape)}; "
                        "the checkpoint was saved from a differently-shaped model"
                    )

    # -- the step ------------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One TRAlgo step: re-anchor if the inner loop starts, add the proximal gradient, run the
        base optimizer at the inner learning rate, advance the inner counter."""
        return self._step(closure)

    @torch._disable_dynamo
    def _step(self, closure: Callable[[], Any] | None) -> Any:
        # Bookkeeping runs eagerly: compiling it would specialise on the counter and recompile
        # at every inner step. The base step is the base's own business.
        fold = closure is None and type(self.optimizer) in _FOLDABLE_BASES
        with torch.no_grad():
            plans = [self._plan_group(group, index, fold, closure is not None) for index, group in enumerate(self.param_groups)]
            eager_plans = plans
            if closure is None and self._compiled_kernel is not None:
                eager_plans = [plan for plan in plans if not self._compiled_group_step(plan)]
        loss = None
        if eager_plans:
            # Groups already updated by the compiled kernel must not be stepped again by the base.
            eager_ids = {id(plan) for plan in eager_plans}
            hidden = [(p, p.grad) for plan in plans if id(plan) not in eager_ids
                      for p in plan.group["params"] if p.grad is not None]
            for param, _ in hidden:
                param.grad = None
            try:
                with torch.no_grad():
                    for plan in eager_plans:
                        self._apply_lr_and_weight_decay(plan)
                    if closure is None:
                        for plan in eager_plans:
                            self._add_proximal(plan, fold)
                loss = self._base_step() if closure is None else self._base_step(self._wrap_closure(closure, eager_plans))
            finally:
                for plan in eager_plans:
                    plan.group["lr"] = plan.lr
                    if plan.folded_weight_decay is not None:
                        plan.group["weight_decay"] = plan.folded_weight_decay
                for param, grad in hidden:
                    param.grad = grad
        with torch.no_grad():
            for plan in plans:
                self._commit(plan)
        return loss

    # Set by TRSGD / TRAdam / TRAdamW with fused="compiled": a tralgo._fused.CompiledKernel.
    _compiled_kernel = None

    def _build(self, base_class: type, params: Any, fused: Any, update: Callable, base_kwargs: dict,
               options: dict) -> None:
        """The construction of TRSGD, TRAdam and TRAdamW: the base gets torch's ``fused``, or None
        under ``fused="compiled"``, whose kernel (``update`` compiled) then takes the steps."""
        check_fused(fused, differentiable=base_kwargs.get("differentiable", False),
                    capturable=base_kwargs.get("capturable", False))
        base = base_class(params, **base_kwargs, fused=None if fused == "compiled" else fused)
        TrajectoryRegularized.__init__(self, base, **options)
        if fused == "compiled":
            self._compiled_kernel = _fused.CompiledKernel(update)

    def _compiled_group_step(self, plan: _GroupStep) -> bool:
        """Update the group with the compiled kernel; False when it must take the eager path."""
        inputs = self._compiled_inputs(plan)
        if inputs is None:
            return False
        params, grads, anchors = inputs
        if not params:
            return True
        return self._run_compiled_kernel(plan.group, params, grads, anchors, self._inner_lr(plan), abs(plan.coeff))

    def _run_compiled_kernel(self, group: dict, params: list[Tensor], grads: list[Tensor], anchors: list[Tensor],
                             lr: float, coeff: float) -> bool:
        """Gather the base's state and run the kernel (TRSGD, TRAdam); False when that state does not
        exist yet (the base initialises it eagerly on its first step)."""
        raise NotImplementedError

    def _compiled_inputs(self, plan: _GroupStep) -> tuple[list[Tensor], list[Tensor], list[Tensor]] | None:
        """(params, grads, anchors) of a group the compiled kernel can take, else None."""
        if plan.new_params or not self._compiled_kernel.available:
            return None  # a first gradient: the base initialises its state eagerly, once
        pairs = [(p, a) for p, a in zip(plan.params, plan.anchors) if p.grad is not None]
        if any(p.grad.is_sparse or p.is_complex() for p, _ in pairs):
            return self._compiled_kernel.not_used("a param group with sparse gradients or complex parameters")
        if len({(p.device, p.dtype) for p, _ in pairs}) > 1:
            return self._compiled_kernel.not_used(
                "a param group whose parameters differ in device or dtype; give each its own param group")
        params = [p for p, _ in pairs]
        return params, [p.grad for p in params], [a for _, a in pairs]

    def _inner_lr(self, plan: _GroupStep) -> float:
        lr = _as_float(plan.lr)
        return lr / (plan.k + 1) if plan.group["inner_lr_decay"] else lr

    def _plan_group(self, group: dict, index: int, fold: bool, has_closure: bool) -> _GroupStep:
        self._check_group(group, index)
        k = int(group[COUNTER_KEY]) % group["inner_steps"]
        sign = -1.0 if group.get("maximize", False) else 1.0
        coeff = 0.0 if k == 0 else sign * proximal_coefficient(group)
        plan = _GroupStep(group=group, k=k, coeff=coeff, lr=group["lr"])
        state = self.state
        refresh_params, refresh_anchors = [], []
        for param in group["params"]:
            anchor = state[param].get(ANCHOR_KEY) if param in state else None
            if anchor is not None:
                if k == 0:
                    refresh_params.append(param)
                    refresh_anchors.append(anchor)
                if param.grad is not None or has_closure:
                    plan.params.append(param)
                    plan.anchors.append(anchor)
            elif param.requires_grad and (param.grad is not None or has_closure):
                # First gradient (possibly mid-loop): anchored at its current value, so its
                # proximal term is zero this step. The anchor enters the base's state only after
                # the base has stepped, never into an empty state entry it would lazily initialise.
                plan.new_params.append(param)
                plan.new_anchors.append(param.detach().clone(memory_format=torch.preserve_format))
        F.refresh_anchors(refresh_anchors, refresh_params, foreach=self._use_foreach(group))
        if (fold and coeff != 0.0 and not group.get("decoupled_weight_decay", False)
                and not any(p.dtype in _NO_FOLD_DTYPES for p in group["params"])):
            plan.folded_weight_decay = group["weight_decay"]
        return plan

    @staticmethod
    def _use_foreach(group: dict) -> bool:
        # Follow the base: its foreach/fused kernels mean it expects multi-tensor work.
        return bool(group.get("foreach") or group.get("fused")) or (
            group.get("foreach") is None and group.get("fused") is None
        )

    def _apply_lr_and_weight_decay(self, plan: _GroupStep) -> None:
        group = plan.group
        if group["inner_lr_decay"] and plan.k > 0:
            group["lr"] = plan.lr / (plan.k + 1)
        if plan.folded_weight_decay is not None:
            group["weight_decay"] = plan.folded_weight_decay + abs(plan.coeff)

    def _grads(self, params: list[Tensor]) -> list[Tensor]:
        grads = [p.grad for p in params]
        for grad in grads:
            if grad.is_sparse:
                raise RuntimeError(
                    "TrajectoryRegularized does not support sparse gradients while lam > 0 (the proximal "
                    "term is dense); use a dense embedding or lam=0 for that parameter's group"
                )
        return grads

    def _add_proximal(self, plan: _GroupStep, fold: bool) -> None:
        if plan.coeff == 0.0:
            return
        params = [p for p in plan.params if p.grad is not None]
        anchors = [a for p, a in zip(plan.params, plan.anchors) if p.grad is not None]
        # differentiable=True (torch's meaning): autograd records the term's dependence on w, as
        # the base records its own weight decay; anchors stay constant snapshots. Like torch's
        # differentiable optimizers it takes the for-loop path (foreach ops save inputs that the
        # base's in-place update then changes).
        differentiable = bool(plan.group.get("differentiable", False))
        foreach = self._use_foreach(plan.group) and not differentiable
        with torch.set_grad_enabled(differentiable):
            if plan.folded_weight_decay is not None:
                # weight_decay now carries +|lam_k| * w for every param with a grad; new params are
                # pulled towards their snapshot (their current value), so their term cancels.
                params += plan.new_params
                anchors += plan.new_anchors
                F.add_anchor_pull(self._grads(params), anchors, plan.coeff, foreach=foreach)
            else:
                F.add_proximal_grad(self._grads(params), params, anchors, plan.coeff, foreach=foreach)

    def _wrap_closure(self, closure: Callable[[], Any], plans: list[_GroupStep]) -> Callable[[], Any]:
        # The base may evaluate the closure many times per step (LBFGS): the proximal term must be
        # part of every evaluation, so it is added after each one, not once before the step.
        def regularized_closure():
            with torch.enable_grad():
                loss = closure()
            with torch.no_grad():
                penalty = 0.0
                for plan in plans:
                    if plan.coeff == 0.0:
                        continue
                    pairs = [(p, a) for p, a in zip(plan.params, plan.anchors) if p.grad is not None]
                    if not pairs:
                        continue
                    params, anchors = map(list, zip(*pairs))
                    F.add_proximal_grad(self._grads(params), params, anchors, plan.coeff, foreach=False)
                    penalty += 0.5 * plan.coeff * sum(float((p - a).pow(2).sum()) for p, a in pairs)
            if loss is not None and penalty != 0.0:
                loss = loss + penalty
            return loss

        return regularized_closure

    def _commit(self, plan: _GroupStep) -> None:
        for param, anchor in zip(plan.new_params, plan.new_anchors):
            if param.grad is not None:
                self.state[param][ANCHOR_KEY] = anchor
        plan.group[COUNTER_KEY] = (plan.k + 1) % plan.group["inner_steps"]
