"""The one description of a run's settings.

:class:`TrainConfig` lists every setting that changes what a run computes; :class:`RunOptions`
every option that only changes where or how it runs. Everything else is derived from these two
dataclasses and their field metadata, so adding an option cannot make the places disagree:

* ``tralgo train``'s command-line options (``train_cli.build_parser``): flag, type, choices, help;
* the keys a sweep spec accepts and their types (``sweep.validate_spec``, via :func:`check_value`);
* a run's identity (:func:`identity`, :func:`differences`): resume, the sweep's reuse of finished
  runs and the report's grouping all compare the full resolved ``TrainConfig``;
* the settings columns of ``runs.csv`` (``report.export_csv``).

Field metadata keys: ``help``; ``group`` (the CLI's option group); ``choices`` (a tuple, or a
zero-argument callable for lists that live in modules importing torch); ``flag`` (a CLI name
other than ``--field-name``); ``spec`` (RunOptions only: a sweep spec may set it);
``optimizer_detail`` (TrainConfig only: a hyperparameter of TR/Lookahead that names a variant
rather than a grid point when the report groups runs not made by a sweep).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import subprocess
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tralgo.experiments import optimizers as opt_lib


def _datasets() -> tuple[str, ...]:
    from tralgo.experiments.data import DATASETS

    return DATASETS


def _models() -> tuple[str, ...]:
    from tralgo.experiments.models import MODELS

    return MODELS


LAM_SCALINGS = ("constant", "inverse_lr")
VAL_FROM = ("subset", "after_subset")
DEVICES = ("auto", "cpu", "cuda")

_LAM_HELP = (
    "the paper's lambda: the proximal gradient added at each step is lam_k*(w - anchor). The authors' code "
    "uses lambda_w = 0.1*lr0 with coefficient 2*lambda_w/current_lr, which is lam = 2*lambda_w/lr0 = 0.2 with "
    "--lam-scaling inverse_lr: the defaults reproduce it. lam 0 makes TR* the base optimizer plus only the "
    "inner lr decay"
)


def _opt(default: Any, help: str, group: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, "group": group, **meta})


@dataclass(frozen=True)
class TrainConfig:
    """Every setting that determines what a run computes: its identity for resuming, for a
    sweep's reuse of a finished run and for the report's grouping."""

    dataset: str = _opt("fashion-mnist", "dataset", "data", choices=_datasets)
    subset: int | None = _opt(None, "train on the first N training images only", "data")
    val_split: int = _opt(0, "N training images for validation (val_loss/val_acc), taken as --val-from says",
                          "data")
    val_from: str = _opt("subset", "where the --val-split images come from: subset = held out of the training "
                         "subset by a permutation seeded with --seed (the run trains on the rest); after_subset = "
                         "the N images that follow the first --subset (the run trains on all --subset images)",
                         "data", choices=VAL_FROM)
    augment: bool = _opt(True, "the dataset's training augmentation (crop+flip on CIFAR, none on the MNISTs)",
                         "data")
    model: str = _opt("cnn", "model", "model", choices=_models)
    width: float = _opt(1.0, "channel-width multiplier of the model", "model")
    optimizer: str = _opt("sgd", "optimizer", "optimizer", choices=opt_lib.OPTIMIZERS)
    lr: float | None = _opt(None, "initial learning rate (default: 0.1 for the SGD family, 1e-3 for the Adam "
                                  "family)", "optimizer")
    momentum: float = _opt(opt_lib.DEFAULT_MOMENTUM, "SGD-family momentum", "optimizer")
    weight_decay: float = _opt(opt_lib.DEFAULT_WEIGHT_DECAY, "L2 weight decay (decoupled for adamw/tradamw)",
                               "optimizer")
    lam: float = _opt(opt_lib.DEFAULT_LAM, _LAM_HELP, "optimizer", optimizer_detail=True)
    lam_scaling: str = _opt(opt_lib.DEFAULT_LAM_SCALING, "constant: lam_k = lam; inverse_lr: lam_k = lam*lr0/lr "
                            "(the authors')", "optimizer", choices=LAM_SCALINGS, optimizer_detail=True)
    inner_steps: int = _opt(opt_lib.DEFAULT_INNER_STEPS, "S: steps between re-anchorings of the proximal term",
                            "optimizer", optimizer_detail=True)
    inner_lr_decay: bool = _opt(True, "inner lr lr/(k+1) at inner step k (--no-inner-lr-decay: lr)", "optimizer",
                                optimizer_detail=True)
    restart_inner_each_epoch: bool = _opt(True, "restart the inner loop (re-anchor) at every epoch start, as the "
                                          "authors' code does", "optimizer", optimizer_detail=True)
    lookahead_k: int = _opt(opt_lib.DEFAULT_INNER_STEPS, "Lookahead: fast steps per slow update", "optimizer",
                            optimizer_detail=True)
    lookahead_alpha: float = _opt(opt_lib.DEFAULT_LOOKAHEAD_ALPHA, "Lookahead: slow step size", "optimizer",
                                  optimizer_detail=True)
    schedule: str = _opt("step", "per-epoch lr schedule: step (x0.1 at 50%% and 75%% of epochs, the paper's), "
                         "cosine or constant", "optimizer", choices=opt_lib.SCHEDULES)
    epochs: int = _opt(200, "number of epochs (paper: 200)", "training loop")
    batch_size: int = _opt(8, "(micro-)batch size", "training loop")
    accumulate: int = _opt(1, "micro-batches per optimizer step (gradient of the mean over N*batch-size)",
                           "training loop")
    eval_every: int = _opt(1, "evaluate (validation and test set) every N epochs and always after the last; "
                           "other epochs log training statistics only", "training loop")
    eval_batch_size: int = _opt(1000, "evaluation batch size", "training loop")
    seed: int = _opt(0, "seed of weights, shuffling, augmentation and the validation hold-out", "training loop")

    def optimizer_settings(self) -> opt_lib.OptimizerSettings:
        return opt_lib.OptimizerSettings(
            name=self.optimizer, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
            lam=self.lam, lam_scaling=self.lam_scaling, inner_steps=self.inner_steps,
            inner_lr_decay=self.inner_lr_decay, lookahead_k=self.lookahead_k,
            lookahead_alpha=self.lookahead_alpha,
        )

    def resolved(self) -> "TrainConfig":
        """Validated, with the optimizer's default lr filled in."""
        self.validate()
        return dataclasses.replace(self, lr=self.optimizer_settings().resolved_lr)

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting and its accepted range."""
        for f in dataclasses.fields(self):
            problem = check_value(f, getattr(self, f.name))
            if problem:
                raise ValueError(problem)
        positive_ints = ("epochs", "batch_size", "accumulate", "eval_every", "eval_batch_size", "inner_steps",
                         "lookahead_k")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"subset must be an integer >= 1 (or omitted for the whole set), got {self.subset!r}")
        if self.val_split < 0:
            raise ValueError(f"val_split must be an integer >= 0, got {self.val_split!r}")
        if self.val_split and self.val_from == "after_subset" and self.subset is None:
            raise ValueError("val_from 'after_subset' needs a subset (the validation images follow it)")
        if not (math.isfinite(self.width) and self.width > 0):
            raise ValueError(f"width must be a finite number > 0, got {self.width!r}")
        self.optimizer_settings().validate()


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what): where, resume or not, devices, logging. Never part of identity."""

    out: str = field(metadata={"help": "run folder", "group": "run folder and machine", "required": True})
    resume: bool = _opt(False, "continue the run in --out from its checkpoint (a finished run: nothing to do)",
                        "run folder and machine")
    overwrite: bool = _opt(False, "delete the run in --out and start again", "run folder and machine")
    max_epochs: int | None = _opt(None, "stop after N epochs in this process (resumable with --resume)",
                                  "run folder and machine", flag="--stop-after", metavar="N")
    data_dir: str | None = _opt(None, "folder holding the dataset files (else the standard places)", "data",
                                spec=True)
    download: bool = _opt(False, "download the dataset when it is not found", "data")
    device: str = _opt("auto", "auto = cuda when available", "run folder and machine", choices=DEVICES, spec=True)
    threads: int | None = _opt(None, "torch threads (default on CPU: 1, faster than 2 for small batches)",
                               "run folder and machine", spec=True)
    tensorboard: bool = _opt(False, "also log to <out>/tensorboard (needs tensorboard)", "run folder and machine")
    progress: bool | None = _opt(None, "progress bar (default: when stderr is a terminal)", "run folder and machine")


# --------------------------------------------------------------------------- types


def field_type(f: dataclasses.Field) -> tuple[type, bool]:
    """(base type, whether None is allowed) of a field annotated ``T`` or ``T | None``."""
    return _field_types()[f.name]


@functools.cache
def _field_types() -> dict[str, tuple[type, bool]]:
    # Evaluated once: get_type_hints parses the (string) annotations, too slow to repeat for every
    # value of every planned run (a 557-run dry run took 31 s instead of 8).
    out = {}
    for cls in (TrainConfig, RunOptions):
        for name, hint in typing.get_type_hints(cls).items():
            if typing.get_origin(hint) in (typing.Union, types.UnionType):
                (base,) = [a for a in typing.get_args(hint) if a is not type(None)]
                out[name] = (base, True)
            else:
                out[name] = (hint, False)
    return out


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    choices = f.metadata.get("choices")
    return choices() if callable(choices) else choices


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def check_value(f: dataclasses.Field, value: Any) -> str | None:
    """A one-line problem with ``value`` for field ``f`` (type and choices), or None."""
    base, optional = field_type(f)
    if value is None and optional:
        return None
    if base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, base)
    if not ok:
        return f"{f.name} must be {_TYPE_WORDS[base]}, got {value!r}"
    choices = choices_of(f)
    if choices is not None and value not in choices:
        return f"{f.name} must be one of {', '.join(choices)}; got {value!r}"
    return None


TRAIN_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
RUN_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunOptions)}
# Run options a sweep spec may set (the sweep itself sets out, resume and the rest).
SPEC_RUN_FIELDS = {name: f for name, f in RUN_FIELDS.items() if f.metadata.get("spec")}
# Settings that name a TR/Lookahead variant (the report's grouping of runs made outside a sweep).
OPTIMIZER_DETAILS = tuple(name for name, f in TRAIN_FIELDS.items() if f.metadata.get("optimizer_detail"))


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A flat mapping (a spec's entry) as (TrainConfig keys, RunOptions keys); raises KeyError on others."""
    train, run = {}, {}
    for key, value in options.items():
        if key in TRAIN_FIELDS:
            train[key] = value
        elif key in RUN_FIELDS:
            run[key] = value
        else:
            raise KeyError(key)
    return train, run


# --------------------------------------------------------------------------- identity


def identity(config: TrainConfig) -> dict[str, Any]:
    """A run's identity: every field of its (resolved) configuration."""
    return dataclasses.asdict(config)


def grouping_keys() -> tuple[str, ...]:
    """The settings that define a configuration in a report (all of identity but the seed)."""
    return tuple(name for name in TRAIN_FIELDS if name != "seed")


def recorded_setting(saved: dict[str, Any], name: str) -> Any:
    """The value of setting ``name`` in a recorded configuration. A setting the record lacks was
    added to TrainConfig after the run; its default is the behaviour every run had before it."""
    if name in saved:
        return saved[name]
    return TRAIN_FIELDS[name].default


def differences(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """Every setting in which a recorded configuration (config.json, a checkpoint's, a sweep's)
    differs from ``config``, as ``"name: <saved> in the folder, <now> now"``."""
    return [f"{key}: {recorded_setting(saved, key)!r} in the folder, {value!r} now"
            for key, value in identity(config).items() if not same_value(recorded_setting(saved, key), value)]


def same_value(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b


# --------------------------------------------------------------------------- code version


def code_version(root: Path | None = None) -> dict[str, Any]:
    """``{"git_commit": sha or None, "git_dirty": bool or None, "dirty_files": [...]}`` of the
    checkout holding tralgo (None where it is not a git checkout). Dirty means uncommitted changes
    to tracked files or untracked files under src/: what could change what a run computes."""
    if root is None:
        import tralgo

        root = Path(tralgo.__file__).resolve().parents[2]
        if not (root / "src" / "tralgo" / "__init__.py").is_file():
            # an installed copy, not a checkout: a git repository around it is not tralgo's
            return {"git_commit": None, "git_dirty": None, "dirty_files": []}

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git_commit": None, "git_dirty": None, "dirty_files": []}
    tracked = git("status", "--porcelain", "--untracked-files=no") or ""
    untracked = git("status", "--porcelain", "--untracked-files=all", "--", "src") or ""
    files = sorted({line[3:] for line in (tracked + untracked).splitlines() if line.strip()})
    return {"git_commit": commit.strip(), "git_dirty": bool(files), "dirty_files": files}


def field_help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def cli_flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


__all__ = ["TrainConfig", "RunOptions", "TRAIN_FIELDS", "RUN_FIELDS", "SPEC_RUN_FIELDS", "OPTIMIZER_DETAILS",
           "check_value", "field_type", "choices_of", "identity", "differences", "grouping_keys", "code_version",
           "split_options", "recorded_setting", "same_value", "cli_flag", "field_help"]
