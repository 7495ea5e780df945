"""``tralgo train``: train one model into a resumable run folder (see ``trainer.py``).

Under ``torchrun --nproc_per_node=N -m tralgo train ...`` the same command trains with
DistributedDataParallel (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from tralgo.experiments import config as config_lib
from tralgo.experiments.trainer import EXIT_USAGE, RunError, RunOptions, TrainConfig, run_training

EXIT_DATA = 1

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for flags and the uninformative None of optional values."""

    def _get_help_string(self, action: argparse.Action) -> str:
        is_flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if action.default is None or is_flag:
            return action.help or ""
        return super()._get_help_string(action)


_GROUPS = ("data", "model", "optimizer", "training loop", "run folder and machine")


def _add_field(group: argparse._ArgumentGroup, f: dataclasses.Field) -> None:
    """One option, derived from a TrainConfig/RunOptions field: flag, type, choices, default, help."""
    base, _ = config_lib.field_type(f)
    kwargs: dict = {"dest": f.name, "help": config_lib.field_help(f)}
    if f.metadata.get("required"):
        kwargs["required"] = True
    else:
        kwargs["default"] = f.default
    if base is bool:
        # --x / --no-x for every boolean, so a sweep can pass either value explicitly.
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = base
        choices = config_lib.choices_of(f)
        if choices is not None:
            # Listed in the help, checked by TrainConfig.validate: its error is one line, argparse's two.
            kwargs["help"] += f" (one of: {', '.join(choices)})"
        if "metavar" in f.metadata:
            kwargs["metavar"] = f.metadata["metavar"]
    group.add_argument(config_lib.cli_flag(f), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tralgo train",
        description="Train one image classifier into a resumable run folder (config.json, metrics.jsonl, "
                    "checkpoint.pt, result.json). Defaults are the paper's (batch 8, S=10, step schedule); "
                    "under torchrun it trains data-parallel.",
        formatter_class=HelpFormatter,
    )
    groups = {name: p.add_argument_group(name) for name in _GROUPS}
    for f in (*config_lib.TRAIN_FIELDS.values(), *config_lib.RUN_FIELDS.values()):
        _add_field(groups[f.metadata["group"]], f)
    return p


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, RunOptions]:
    config = TrainConfig(**{name: getattr(args, name) for name in config_lib.TRAIN_FIELDS})
    options = RunOptions(**{name: getattr(args, name) for name in config_lib.RUN_FIELDS})
    if options.threads is not None and options.threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {options.threads}")
    if options.max_epochs is not None and options.max_epochs < 1:
        raise ValueError(f"stop-after must be an integer >= 1, got {options.max_epochs}")
    return config, options


def _error(message: str, code: int) -> int:
    print(f"tralgo train: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    from tralgo.experiments.data import DataError

    args = build_parser().parse_args(argv)
    if args.resume and args.overwrite:
        return _error("--resume and --overwrite exclude each other", EXIT_USAGE)
    try:
        config, options = config_from_args(args)
        config = config.resolved()
        dataset = None
        if args.download:
            from tralgo.experiments.data import load_dataset

            dataset = load_dataset(config.dataset, options.data_dir, download=True)
        return run_training(config, options, dataset=dataset)
    except DataError as e:
        return _error(str(e), EXIT_DATA)
    except (RunError, ValueError) as e:
        return _error(str(e), EXIT_USAGE)
    except OSError as e:  # e.g. an --out folder that cannot be written
        return _error(f"{e.strerror or e}: {e.filename}" if e.filename else str(e), EXIT_DATA)
    except KeyboardInterrupt:
        return _error("interrupted; continue with --resume", 130)
    finally:
        from tralgo.experiments.trainer import shutdown_distributed

        shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
