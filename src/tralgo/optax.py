r"""TRAlgo for JAX: trajectory regularisation as an ``optax`` gradient transformation.

Needs the ``jax`` extra (``pip install "tralgo[jax]"``); ``import tralgo`` alone never imports jax.
The algorithm and its options are those of ``tralgo.TrajectoryRegularized`` (the PyTorch side),
step for step. With inner counter ``k`` in ``0 .. S-1`` (``S = inner_steps``) and ``t`` the
number of updates taken so far:

.. code-block:: text

    if k == 0:            anchor <- w                      (re-centre the proximal term)
    lam_k = lam                                 (lam_scaling="constant")
          = lam * lr(0) / lr(t)                 (lam_scaling="inverse_lr"; 0 when lr(t) == 0)
    g     <- g + lam_k * (w - anchor)           gradient of  f(w) + lam_k/2 ||w - anchor||^2
    u     <- inner(g)                           the wrapped transformation; its state is never reset
    u     <- u / (k + 1)  if inner_lr_decay     the inner learning rate lr(t) / (k + 1)
    k     <- (k + 1) mod S

Dividing the inner's update by ``k + 1`` is the same as running the inner at ``lr / (k + 1)``
whenever the inner's update is ``lr`` times something its state does not see through ``lr``:
true for SGD with momentum and L2 weight decay, Adam, and AdamW's decoupled decay
(``-lr (adam + wd w)``, where torch's AdamW also multiplies the decay by the decayed lr).

``lr(0)`` is read once, by ``init``, and kept in the state (``initial_lr``), as the PyTorch side
keeps ``tr_initial_lr`` in the param group: under ``optax.inject_hyperparams`` the factory is
rebuilt with the current learning rate at every update, and ``lam_k`` must still grow when the
learning rate drops.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, Callable, NamedTuple, Union

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tralgo._trajectory import check_options

__all__ = [
    "TrajectoryRegularizedState",
    "trajectory_regularized",
    "restart_inner_loop",
    "scale_by_torch_amsgrad",
    "trsgd",
    "tradam",
    "tradamw",
]

ScalarOrSchedule = Union[float, jax.Array, optax.Schedule]


class TrajectoryRegularizedState(NamedTuple):
    """State of ``trajectory_regularized``: a pytree, safe to jit, vmap, save and restore.

    Attributes:
        inner_state: the wrapped transformation's state (never reset at an inner-loop boundary).
        anchor: the weights at the start of the current inner loop, shaped like the params.
        inner_step: ``k``, the position in the inner loop (int32); 0 means "re-anchor next update".
        count: updates taken so far (int32): the argument of a ``learning_rate`` schedule.
        initial_lr: ``lr(0)``, read by ``init``; ``lam_scaling="inverse_lr"`` divides by the
            current learning rate relative to it. Replace it (``state._replace``) to override.
    """

    inner_state: optax.OptState
    anchor: optax.Params
    inner_step: jax.Array
    count: jax.Array
    initial_lr: jax.Array


def _concrete(value: Any) -> Any:
    """``value`` as a Python scalar when it is a concrete 0-d array, the value itself when it is
    already Python, and None when it is traced (checked when it was concrete: optax builds
    transformations from concrete hyperparameters in ``init``, e.g. under inject_hyperparams)."""
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return value.item() if np.ndim(value) == 0 else value
    return value


def _check_range(name: str, value: Any, low: float, high: float = math.inf, *, high_open: bool = False) -> None:
    """ValueError naming ``name`` unless ``low <= value <= high`` (``< high`` when ``high_open``)."""
    value = _concrete(value)
    if value is None:
        return
    inside = (isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
              and low <= value and (value < high if high_open else value <= high))
    if not inside:
        bracket = ")" if high_open or high == math.inf else "]"
        raise ValueError(f"{name} must be a finite number in [{low}, {high}{bracket}, got {value!r}")


def _check_learning_rate(learning_rate: Any) -> None:
    if callable(learning_rate):
        return  # a schedule: its values are the user's business, lr(0) is checked where it is needed
    _check_range("learning_rate", learning_rate, 0.0)


def _value_at(learning_rate: ScalarOrSchedule, count: jax.Array) -> jax.Array:
    return learning_rate(count) if callable(learning_rate) else learning_rate


def trajectory_regularized(
    inner: optax.GradientTransformation,
    *,
    lam: float = 0.1,
    inner_steps: int = 10,
    inner_lr_decay: bool = True,
    lam_scaling: str = "constant",
    learning_rate: ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Wrap an optax transformation so that it minimises ``f(w) + lam/2 ||w - w_t||^2``,
    re-centring ``w_t`` at the current weights every ``inner_steps`` updates (TRAlgo).

    The proximal gradient ``lam_k (w - anchor)`` is added to the raw gradient *before* ``inner``
    sees it, so it goes through everything ``inner`` does (L2 weight decay, momentum, Adam's
    moments). ``update`` needs ``params``.

    Args:
        inner: the base transformation, including its learning rate (e.g. ``optax.adam(1e-3)``).
        lam: the paper's lambda (``>= 0``): the proximal gradient is ``lam_k (w - anchor)``.
        inner_steps: S, updates between re-anchorings (``>= 1``).
        inner_lr_decay: divide the inner's update by ``k + 1`` at inner step ``k`` (the paper's
            Definition 1 and the authors' code), i.e. run the inner at ``lr / (k + 1)``.
        lam_scaling: ``"constant"`` (``lam_k = lam``) or ``"inverse_lr"`` (``lam_k = lam *
            lr(0) / lr(t)``, 0 at ``lr(t) = 0``; the authors' ``lambda_w`` maps to
            ``lam = 2 * lambda_w / lr(0)``).
        learning_rate: the learning rate (float or schedule of the update count) that ``inner``
            uses; needed by ``lam_scaling="inverse_lr"`` only.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state is a
        ``TrajectoryRegularizedState``; extra arguments are passed on to ``inner``.

    Example:
        >>> import optax, jax.numpy as jnp
        >>> opt = trajectory_regularized(optax.sgd(0.1, momentum=0.9), lam=0.1, inner_steps=10)
        >>> params = {"w": jnp.ones(3)}
        >>> state = opt.init(params)
        >>> updates, state = opt.update({"w": jnp.full(3, 0.5)}, state, params)
        >>> params = optax.apply_updates(params, updates)
    """
    # Traced hyperparameters (inject_hyperparams under jit) were checked while concrete, in init.
    concrete_lam, concrete_steps = _concrete(lam), _concrete(inner_steps)
    check_options(0.0 if concrete_lam is None else concrete_lam, 1 if concrete_steps is None else concrete_steps,
                  inner_lr_decay, lam_scaling)
    if lam_scaling == "inverse_lr":
        if learning_rate is None:
            raise ValueError("lam_scaling='inverse_lr' needs learning_rate= (the float or schedule the inner "
                             "transformation uses)")
        _check_learning_rate(learning_rate)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: optax.Params) -> TrajectoryRegularizedState:
        initial_lr = 0.0 if learning_rate is None else _value_at(learning_rate, jnp.zeros([], jnp.int32))
        if lam_scaling == "inverse_lr":
            lr0, lam_value = _concrete(initial_lr), _concrete(lam)
            if lr0 is not None and lam_value is not None and lam_value > 0 and not lr0 > 0:
                raise ValueError(f"lam_scaling='inverse_lr' needs a positive initial learning rate, got lr(0)={lr0!r}")
        inner_state = inner.init(params)
        if any(_is_tr_state(node) for node in jax.tree.leaves(inner_state, is_leaf=_is_tr_state)):
            raise ValueError("inner is already trajectory-regularized (trsgd/tradam/tradamw or "
                             "trajectory_regularized); wrap its base only once")
        return TrajectoryRegularizedState(
            inner_state=inner_state,
            # A copy, so that donating both params and state to a jitted step is legal.
            anchor=_copy(params),
            inner_step=jnp.zeros([], jnp.int32),
            count=jnp.zeros([], jnp.int32),
            # At least float32: a bfloat16 lr(0) would put a 0.4% error into every lam_k.
            initial_lr=jnp.asarray(initial_lr, dtype=jnp.promote_types(optax.tree.dtype(params, "highest"),
                                                                       jnp.float32)),
        )

    def update_fn(updates, state: TrajectoryRegularizedState, params=None, **extra_args):
        if params is None:
            raise ValueError("trajectory_regularized needs params: call update(updates, state, params)")
        chex.assert_trees_all_equal_shapes(updates, params)
        k = state.inner_step
        restart = k == 0
        # cond, not where: between restarts the anchor buffer passes through untouched (no write
        # of a params-sized array per step); under vmap it becomes a select.
        anchor = jax.lax.cond(restart, lambda: _copy(params), lambda: state.anchor)
        if lam_scaling == "constant":
            coeff = jnp.asarray(lam)
        else:
            lr = jnp.asarray(_value_at(learning_rate, state.count))
            # At lr == 0 the step moves nothing; lam * lr(0) / 0 would only put inf/NaN into the
            # inner's state (Adam's moments), so the proximal term is switched off, as in torch.
            safe_lr = jnp.where(lr == 0, 1, lr)
            coeff = jnp.where(lr == 0, 0, lam * state.initial_lr / safe_lr)
        # At k == 0 the anchor is w, so the term is zero for any finite lam_k; torch adds nothing
        # then, and neither does this, even when lam * lr(0) / lr(t) overflows.
        coeff = jnp.where(restart, 0, coeff)
        grads = jax.tree.map(lambda g, p, a: g + (coeff * (p - a)).astype(g.dtype), updates, params, anchor)
        updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
        if inner_lr_decay:
            updates = jax.tree.map(lambda u: u / (k + 1).astype(u.dtype), updates)
        next_k = ((k + 1) % inner_steps).astype(k.dtype)  # inner_steps may be an injected int64
        return updates, TrajectoryRegularizedState(
            inner_state=inner_state, anchor=anchor, inner_step=next_k,
            count=optax.safe_int32_increment(state.count), initial_lr=state.initial_lr,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _copy(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def restart_inner_loop(state: optax.OptState) -> optax.OptState:
    """Return ``state`` with every ``TrajectoryRegularizedState`` in it set to re-anchor at the
    next update (``inner_step = 0``): the authors' restart at each epoch, and torch's
    ``TrajectoryRegularized.restart_inner_loop``. Finds the state inside ``optax.chain``,
    ``MultiSteps``, ``multi_transform`` and ``inject_hyperparams`` states; nothing else changes.

    Raises:
        ValueError: ``state`` holds no ``TrajectoryRegularizedState``.
    """
    found = []

    def reset(node: Any) -> Any:
        if not _is_tr_state(node):
            return node
        found.append(node)
        return node._replace(inner_step=jnp.zeros_like(node.inner_step))

    new_state = jax.tree.map(reset, state, is_leaf=_is_tr_state)
    if not found:
        raise ValueError("restart_inner_loop: the state holds no TrajectoryRegularizedState "
                         "(was it built by trajectory_regularized / trsgd / tradam / tradamw?)")
    return new_state


def _is_tr_state(node: Any) -> bool:
    return isinstance(node, TrajectoryRegularizedState)


class ScaleByTorchAmsgradState(NamedTuple):
    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates


def scale_by_torch_amsgrad(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    r"""AMSGrad as ``torch.optim.Adam(amsgrad=True)`` computes it:

    .. math::

        m_t = b_1 m_{t-1} + (1 - b_1) g_t, \quad v_t = b_2 v_{t-1} + (1 - b_2) g_t^2, \quad
        \hat v_t = \max(\hat v_{t-1}, v_t), \quad
        u_t = \frac{m_t / (1 - b_1^t)}{\sqrt{\hat v_t} / \sqrt{1 - b_2^t} + \epsilon}

    ``optax.scale_by_amsgrad`` keeps the maximum of the *bias-corrected* second moment instead,
    which is a different trajectory; this one keeps torch's, for parity with ``tralgo.TRAdam``.
    """

    def init_fn(params):
        zeros = lambda: optax.tree.zeros_like(params)  # noqa: E731
        return ScaleByTorchAmsgradState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros(), nu_max=zeros())

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_int32_increment(state.count)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
        mu_hat = optax.tree.bias_correction(mu, b1, count)
        bias_correction2_sqrt = jnp.sqrt(1 - jnp.asarray(b2) ** count)
        updates = jax.tree.map(
            lambda m, v: m / (jnp.sqrt(v) / bias_correction2_sqrt.astype(v.dtype) + eps), mu_hat, nu_max)
        return updates, ScaleByTorchAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)

    return optax.GradientTransformation(init_fn, update_fn)


def _is_python_zero(value: Any) -> bool:
    # Only a Python 0 drops a transformation: an array (inject_hyperparams) must give the same
    # state structure in init (concrete) and update (traced) whatever its value.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


def _l2(weight_decay: Any) -> list[optax.GradientTransformation]:
    return [] if _is_python_zero(weight_decay) else [optax.add_decayed_weights(weight_decay)]


def _check_adam(learning_rate, b1, b2, eps, weight_decay) -> None:
    _check_learning_rate(learning_rate)
    _check_range("b1", b1, 0.0, 1.0, high_open=True)
    _check_range("b2", b2, 0.0, 1.0, high_open=True)
    _check_range("eps", eps, 0.0)
    _check_range("weight_decay", weight_decay, 0.0)


def trsgd(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    *,
    lam: float = 0.1,
    inner_steps: int = 10,
    inner_lr_decay: bool = True,
    lam_scaling: str = "constant",
) -> optax.GradientTransformationExtraArgs:
    r"""TRAlgo over SGD with the math of ``torch.optim.SGD`` (and ``tralgo.TRSGD``), dampening 0:

    .. math::

        g \leftarrow g + \lambda_k (w - a) + \mathrm{wd}\, w, \quad
        b \leftarrow \mu b + g, \quad
        w \leftarrow w - \frac{\eta_t}{k + 1} \,(g + \mu b \text{ if nesterov else } b)

    The authors' TRSGD (lr 0.1, momentum 0.9, weight decay 1e-4, ``lambda_w = 0.01``) is
    ``trsgd(0.1, 0.9, weight_decay=1e-4, lam=0.2, lam_scaling="inverse_lr")``.
    """
    _check_learning_rate(learning_rate)
    _check_range("momentum", momentum, 0.0)
    _check_range("weight_decay", weight_decay, 0.0)
    if nesterov and _is_python_zero(momentum):
        raise ValueError("nesterov=True requires momentum > 0")
    momentum_part = [] if _is_python_zero(momentum) else [optax.trace(decay=momentum, nesterov=nesterov)]
    inner = optax.chain(*_l2(weight_decay), *momentum_part, optax.scale_by_learning_rate(learning_rate))
    return trajectory_regularized(inner, lam=lam, inner_steps=inner_steps, inner_lr_decay=inner_lr_decay,
                                  lam_scaling=lam_scaling, learning_rate=learning_rate)


def _adam_direction(b1, b2, eps, amsgrad: bool) -> optax.GradientTransformation:
    return scale_by_torch_amsgrad(b1, b2, eps) if amsgrad else optax.scale_by_adam(b1, b2, eps)


def tradam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    lam: float = 0.1,
    inner_steps: int = 10,
    inner_lr_decay: bool = True,
    lam_scaling: str = "constant",
) -> optax.GradientTransformationExtraArgs:
    r"""TRAlgo over Adam with the math of ``torch.optim.Adam`` (L2 weight decay into the gradient)
    and ``tralgo.TRAdam``; moments and bias correction run on across inner loops:

    .. math::

        g \leftarrow g + \lambda_k (w - a) + \mathrm{wd}\, w, \quad
        w \leftarrow w - \frac{\eta_t}{k + 1}\,
            \frac{m_t / (1 - b_1^t)}{\sqrt{v_t / (1 - b_2^t)} + \epsilon}

    The authors' TRAdam (lr 1e-3, ``lambda_w = 1e-4``) is ``tradam(1e-3, lam=0.2,
    lam_scaling="inverse_lr")``. ``amsgrad=True`` follows torch (``scale_by_torch_amsgrad``).
    """
    _check_adam(learning_rate, b1, b2, eps, weight_decay)
    inner = optax.chain(*_l2(weight_decay), _adam_direction(b1, b2, eps, amsgrad),
                        optax.scale_by_learning_rate(learning_rate))
    return trajectory_regularized(inner, lam=lam, inner_steps=inner_steps, inner_lr_decay=inner_lr_decay,
                                  lam_scaling=lam_scaling, learning_rate=learning_rate)


def tradamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    lam: float = 0.1,
    inner_steps: int = 10,
    inner_lr_decay: bool = True,
    lam_scaling: str = "constant",
) -> optax.GradientTransformationExtraArgs:
    r"""TRAlgo over AdamW (decoupled weight decay, default 1e-2 as in torch) with the math of
    ``torch.optim.AdamW`` and ``tralgo.TRAdamW``: the proximal term enters the gradient (it
    shapes the moments), the decay does not:

    .. math::

        g \leftarrow g + \lambda_k (w - a), \quad
        w \leftarrow w - \frac{\eta_t}{k + 1}\left(\frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}
            + \mathrm{wd}\, w\right)

    torch's ``w (1 - lr_k wd)`` is the same decay at the decayed learning rate ``lr_k``.
    """
    _check_adam(learning_rate, b1, b2, eps, weight_decay)
    inner = optax.chain(_adam_direction(b1, b2, eps, amsgrad), *_l2(weight_decay),
                        optax.scale_by_learning_rate(learning_rate))
    return trajectory_regularized(inner, lam=lam, inner_steps=inner_steps, inner_lr_decay=inner_lr_decay,
                                  lam_scaling=lam_scaling, learning_rate=learning_rate)
