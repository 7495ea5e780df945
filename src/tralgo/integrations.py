"""TRSGD, TRAdam and TRAdamW by name in other libraries' optimizer factories.

Nothing here is a dependency of tralgo: each helper imports its library when it is called and
says so in a one-line error when the library is missing. See docs/integrations.md for the
libraries that need no registration at all (Lightning, accelerate: they take any
``torch.optim.Optimizer``).

* ``register_timm()``: ``timm.optim.create_optimizer_v2(model, "trsgd", lr=0.1, lam=0.2)``,
  also ``"lookahead_trsgd"`` (timm then builds ``Lookahead(TRSGD(...))``, the order that works).
* ``register_pytorch_optimizer()``: ``pytorch_optimizer.load_optimizer("trsgd")`` and
  ``create_optimizer(model, "trsgd", ...)`` (with ``use_lookahead=True``: ``Lookahead(TRSGD(...))``).
* ``trainer_optimizer(name, args, **options)``: the ``(class, kwargs)`` pair for Hugging Face
  ``Trainer(optimizer_cls_and_kwargs=...)``, with ``lr``, ``betas`` and ``eps`` taken from the
  ``TrainingArguments`` as the Trainer's own AdamW takes them.
"""
from __future__ import annotations

import importlib
from typing import Any

from torch.optim import Optimizer

from tralgo.tradam import TRAdam, TRAdamW
from tralgo.trsgd import TRSGD

#: The names under which every helper registers the optimizers (lower case, as the factories
#: look names up).
OPTIMIZERS: dict[str, type[Optimizer]] = {"trsgd": TRSGD, "tradam": TRAdam, "tradamw": TRAdamW}


def optimizer_class(name: str) -> type[Optimizer]:
    """``TRSGD``/``TRAdam``/``TRAdamW`` by case-insensitive name."""
    try:
        return OPTIMIZERS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"name must be one of {sorted(OPTIMIZERS)}, got {name!r}") from None


def _require(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this helper needs {package} ({error}); install it with: pip install {package}") from error


def register_timm(registry: Any = None) -> list[str]:
    """Register the optimizers in timm's optimizer registry (timm >= 1.0) and return their names.

    ``registry`` defaults to the one ``timm.optim.create_optimizer_v2`` uses. The entries say
    what timm's factory may pass: TRSGD takes ``momentum`` (timm's factory defaults it to 0.9, as
    for its own ``"momentum"``), the Adam family takes ``betas`` and ``eps``. TRAlgo's options
    (``lam``, ``inner_steps``, ...) pass through ``create_optimizer_v2``'s keyword arguments.
    Registering twice replaces the entries (timm logs a warning).
    """
    optim = _require("timm.optim", "timm")
    if registry is None:
        registry = importlib.import_module("timm.optim._optim_factory").default_registry
    infos = [
        optim.OptimInfo(name="trsgd", opt_class=TRSGD, has_eps=False, has_momentum=True,
                        description="TRAlgo (trajectory-regularized) SGD, tralgo.TRSGD"),
        optim.OptimInfo(name="tradam", opt_class=TRAdam, has_betas=True,
                        description="TRAlgo (trajectory-regularized) Adam, tralgo.TRAdam"),
        optim.OptimInfo(name="tradamw", opt_class=TRAdamW, has_betas=True,
                        description="TRAlgo (trajectory-regularized) AdamW, tralgo.TRAdamW"),
    ]
    for info in infos:
        registry.register(info)
    return [info.name for info in infos]


def register_pytorch_optimizer() -> list[str]:
    """Make ``pytorch_optimizer.load_optimizer`` / ``create_optimizer`` know the optimizers and
    return their names.

    pytorch_optimizer has no registration function: both look names up in the module-level
    dict ``pytorch_optimizer.optimizer.OPTIMIZERS``, which this adds to (checked by the tests
    against the installed version).
    """
    registry = _require("pytorch_optimizer.optimizer", "pytorch_optimizer").OPTIMIZERS
    registry.update(OPTIMIZERS)
    return list(OPTIMIZERS)


def trainer_optimizer(name: str, args: Any = None, **options: Any) -> tuple[type[Optimizer], dict[str, Any]]:
    """``(class, kwargs)`` for ``transformers.Trainer(optimizer_cls_and_kwargs=...)``.

    The Trainer builds ``class(param_groups, **kwargs)`` itself, with the weight decay of
    ``args`` already in the groups; it does not pass ``args.learning_rate`` to a class given this
    way, so with ``args`` the learning rate (and, for the Adam family, ``adam_beta1/2`` and
    ``adam_epsilon``) is taken from it here. ``options`` (``lam``, ``inner_steps``, ``momentum``,
    ...) come last and win.
    """
    cls = optimizer_class(name)
    kwargs: dict[str, Any] = {}
    if args is not None:
        kwargs["lr"] = args.learning_rate
        if cls is not TRSGD:
            kwargs.update(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    kwargs.update(options)
    return cls, kwargs
