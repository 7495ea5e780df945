"""``OptimizerWrapper``: the ``torch.optim.Optimizer`` surface of an optimizer that wraps another.

Wrappers that re-implement this surface by hand are where other libraries' bugs live (a cached
``param_groups`` alias that goes stale after ``load_state_dict``, hooks that never fire, state
that cannot be restored into fresh objects). TRAlgo and the harness's Lookahead share this one.

The wrapper owns no parameters. ``param_groups``, ``state`` and ``defaults`` read through to the
base every time; the wrapper's options live in every param group (``setdefault``, like ``lr``),
so they can differ per group and travel in the base's standard ``state_dict``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch.optim import Optimizer

_HOOK_DICTS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


class OptimizerWrapper(Optimizer):
    """Base class of optimizers that wrap an already-built ``torch.optim.Optimizer``.

    Subclasses pass their per-group options to ``__init__``, extend ``_init_group`` for derived
    group keys, may validate a checkpoint in ``_check_state_dict``, and implement ``step``.
    """

    # GradScaler must unscale the gradients before a wrapper changes them; never advertise the
    # fused-kernel scaling protocol of a base (GradScaler would then skip unscaling).
    _step_supports_amp_scaling = False

    def __init__(self, optimizer: Optimizer, options: dict[str, Any]) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer instance, got {type(optimizer).__name__}; "
                f"build the base first, e.g. {type(self).__name__}(torch.optim.SGD(params, lr=0.1))"
            )
        self.optimizer = optimizer
        self._wrapper_defaults = dict(options)
        self._init_hooks()
        for group in self.optimizer.param_groups:
            self._init_group(group)

    def _init_hooks(self) -> None:
        # Optimizer.__init__ is not called (the base owns the params): set what it would set, and
        # patch step so that hooks registered on the wrapper fire from the first step.
        for name in _HOOK_DICTS:
            setattr(self, name, OrderedDict())
        self._patch_step_function()
        self._warned_capturable_if_run_uncaptured = True

    def _init_group(self, group: dict[str, Any]) -> None:
        for key, value in self._wrapper_defaults.items():
            group.setdefault(key, value)

    def _check_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Raise a clear error before loading a checkpoint that does not fit (subclasses)."""

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        # A property, never a cached alias: load_state_dict replaces the base's list.
        return self.optimizer.param_groups

    @property
    def state(self):  # type: ignore[override]
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return {**self.optimizer.defaults, **self._wrapper_defaults}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)
        self._init_group(self.param_groups[-1])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self._wrapper_defaults.items())
        return f"{type(self).__name__}({options}) over {self.optimizer!r}"

    def __getstate__(self) -> dict[str, Any]:
        # Hooks may be lambdas; like torch.optim, they are not pickled.
        return {k: v for k, v in self.__dict__.items() if k not in _HOOK_DICTS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_hooks()

    def state_dict(self) -> dict[str, Any]:
        """The base's standard state dict (the wrapper's keys are in its groups and state)."""
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        state_dict = self.optimizer.state_dict()
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        self._check_state_dict(state_dict)
        self.optimizer.load_state_dict(state_dict)  # torch casts state to each param's device/dtype
        for group in self.param_groups:
            self._init_group(group)  # a base-only or older checkpoint lacks the wrapper's keys
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)
