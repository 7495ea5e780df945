"""``OptimizerWrapper``: the ``torch.optim.Optimizer`` surface of an optimizer that wraps another.

Wrappers that re-implement this surface by hand are where other libraries' bugs live (a cached
``param_groups`` alias that goes stale after ``load_state_dict``, hooks that never fire, state
that cannot be restored into fresh objects). TRAlgo and the harness's Lookahead share this one.

The wrapper owns no parameters. ``param_groups``, ``state`` and ``defaults`` read through to the
base every time; the wrapper's options live in every param group (``setdefault``, like ``lr``),
so they can differ per group and travel in the base's standard ``state_dict``. That needs a base
whose ``state_dict()`` saves its ``state`` in torch's format; a base that does not is refused at
construction, and a checkpoint that does not fit the base is refused before anything is loaded.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
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
        _check_state_is_saved(optimizer, type(self).__name__)
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

    def _base_step(self, *args: Any) -> Any:
        """The base's step with the hooks registered on the base, but not torch's global hooks
        (``register_optimizer_step_pre_hook``/``post_hook``): the user stepped the wrapper, whose
        own patched ``step`` has fired them once already."""
        base = self.optimizer
        unhooked_step = None if "step" in vars(base) else _unhooked(type(base).step)
        if unhooked_step is None:
            # The instance's step was replaced (e.g. by a scheduler built on the base), or the
            # class's is not torch's hook wrapper: it must run as it is, global hooks included.
            return base.step(*args)
        kwargs: dict[str, Any] = {}
        args = (base, *args)
        for pre_hook in list(base._optimizer_step_pre_hooks.values()):
            result = pre_hook(base, args, kwargs)
            if result is not None:
                args, kwargs = result
        out = unhooked_step(*args, **kwargs)
        for post_hook in list(base._optimizer_step_post_hooks.values()):
            post_hook(base, args, kwargs)
        return out

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
        _check_saved_groups(self.optimizer, state_dict)
        self._check_state_dict(state_dict)
        self.optimizer.load_state_dict(state_dict)  # torch casts state to each param's device/dtype
        for group in self.param_groups:
            self._init_group(group)  # a base-only or older checkpoint lacks the wrapper's keys
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)


_HOOK_WRAPPER_CODE = Optimizer.profile_hook_step(lambda *args, **kwargs: None).__code__


def _unhooked(step: Any) -> Any:
    """The function inside torch's step-hook wrapper of an optimizer class's ``step``, looking
    through the ``torch._dynamo.disable`` wrappers that torch.compile's first use puts around
    some classes' ``step`` (LBFGS, SparseAdam); None when ``step`` is anything else."""
    while step is not None:
        code = getattr(step, "__code__", None)
        if code is _HOOK_WRAPPER_CODE:
            return step.__wrapped__
        if code is None or not (code.co_name == "_fn" and code.co_filename.endswith(("_dynamo/eval_frame.py",
                                                                                      "_dynamo\\eval_frame.py"))):
            return None
        step = getattr(step, "__wrapped__", None)
    return None


# -- what a base must offer ----------------------------------------------------------------------

_PROBE_KEY = "_tralgo_state_probe"


def _check_state_is_saved(optimizer: Optimizer, wrapper: str) -> None:
    """Refuse a base whose ``state_dict()`` does not save its own ``state``: a wrapper keeps its
    per-parameter tensors (TRAlgo's anchors) there, so they would be missing from checkpoints.

    timm's ``Lookahead`` keeps an empty ``state`` of its own and saves its inner optimizer's;
    pytorch_optimizer's ``Lookahead`` saves ``{lookahead_state, base_optimizer}``. Both work the
    other way round (the other wrapper outside), which the error says. Checked by writing a marker
    into ``state`` and looking for it in ``state_dict()``; the marker is removed again.
    """
    if type(optimizer).__module__.startswith("torch.optim."):
        return  # torch's own optimizers save their state in the standard format
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not params:
        return
    state, param = optimizer.state, params[0]
    had_entry = param in state
    entry = state.setdefault(param, {})
    entry[_PROBE_KEY] = True
    try:
        saved = optimizer.state_dict()
        standard = isinstance(saved, Mapping) and isinstance(saved.get("state"), Mapping) and "param_groups" in saved
        # Read before the marker is removed: the saved entries are usually the live dicts.
        marked = standard and any(isinstance(e, Mapping) and _PROBE_KEY in e for e in saved["state"].values())
    except Exception:
        # Some bases cannot save before a collective step (ZeroRedundancyOptimizer needs
        # consolidate_state_dict); nothing can be concluded about them here.
        return
    finally:
        entry.pop(_PROBE_KEY, None)
        if not had_entry and not entry:
            state.pop(param, None)
    name = type(optimizer).__name__
    order = f"wrap the other way round: {name}({wrapper}(...)), e.g. Lookahead(TRSGD(params, ...))"
    if not standard:
        keys = sorted(saved) if isinstance(saved, Mapping) else type(saved).__name__
        raise ValueError(
            f"{name}.state_dict() is not in torch.optim's format (it has {keys}), so {wrapper}'s per-parameter "
            f"state could not be saved in it or loaded back; {order}"
        )
    if not marked:
        raise ValueError(
            f"{name}.state_dict() does not save {name}.state (it saves another optimizer's), so {wrapper}'s "
            f"per-parameter state would be silently missing from checkpoints; {order}"
        )


def _keys_filled_on_load(optimizer: Optimizer) -> set[str] | None:
    """Group keys the base's ``__setstate__`` fills in for checkpoints that lack them (torch adds
    flags such as ``fused`` or ``decoupled_weight_decay`` that old checkpoints do not have); None
    when that cannot be found out without touching the base."""
    scratch = object.__new__(type(optimizer))
    scratch.__dict__["defaults"] = dict(optimizer.defaults)
    try:
        type(optimizer).__setstate__(scratch, {"state": {}, "param_groups": [{"params": []}]})
        return set(scratch.__dict__["param_groups"][0])
    except Exception:
        return None


def _check_saved_groups(optimizer: Optimizer, state_dict: Any) -> None:
    """Refuse, before anything is loaded, a checkpoint that is not a torch.optim state dict or
    whose groups lack hyperparameters the base reads at every step: torch would load it and the
    next step would fail with a KeyError (Adam's state loaded into SGD, or SGD's into Adam)."""
    name = type(optimizer).__name__
    if not (isinstance(state_dict, Mapping) and "state" in state_dict and "param_groups" in state_dict):
        keys = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
        raise ValueError(f"state_dict must be a torch.optim state dict with 'state' and 'param_groups', got {keys}")
    filled = _keys_filled_on_load(optimizer)
    if filled is None:
        return
    needed = [key for key in optimizer.defaults if key not in filled]
    for index, group in enumerate(state_dict["param_groups"]):
        missing = [key for key in needed if key not in group]
        if missing:
            foreign = sorted(key for key in group if key != "params" and key not in optimizer.defaults)
            raise ValueError(
                f"param group {index} of the state_dict lacks {missing}, which {name} needs at every step "
                f"(it has {foreign} instead): it was saved from a different optimizer; load it into that one"
            )
