"""``tralgo train``: train one model into a resumable run folder (see ``trainer.py``).

Under ``torchrun --nproc_per_node=N -m tralgo train ...`` the same command trains with
DistributedDataParallel (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import argparse
import sys

from tralgo.experiments import optimizers as opt_lib
from tralgo.experiments.trainer import EXIT_USAGE, RunError, RunOptions, TrainConfig, run_training

EXIT_DATA = 1

_LAM_HELP = (
    "the paper's lambda: the proximal gradient added at each step is lam_k*(w - anchor). The authors' code uses lambda_w = 0.1*lr0 with coefficient "
    "2*lambda_w/current_lr, which is lam = 2*lambda_w/lr0 = 0.2 with --lam-scaling inverse_lr: "
    "the defaults reproduce it. lam 0 makes TR* the base optimizer plus only the inner lr decay"
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for flags and the uninformative None of optional values."""

    def _get_help_string(self, action: argparse.Action) -> str:
        is_flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if action.default is None or is_flag:
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(
        prog="tralgo train",
        description="Train one image classifier into a resumable run folder (config.json, metrics.jsonl, "
                    "checkpoint.pt, result.json). Defaults are the paper's (batch 8, S=10, step schedule); "
                    "under torchrun it trains data-parallel.",
        formatter_class=HelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default=defaults.dataset, help="fashion-mnist, mnist, cifar10 or cifar100")
    data.add_argument("--data-dir", default=None, help="folder holding the dataset files (else the standard places)")
    data.add_argument("--download", action="store_true", help="download the dataset when it is not found")
    data.add_argument("--subset", type=int, default=None, help="train on the first N training images only")
    data.add_argument("--val-split", type=int, default=0,
                      help="hold out N training images (seeded permutation) and log val_loss/val_acc")
    data.add_argument("--no-augment", dest="augment", action="store_false",
                      help="switch off the dataset's training augmentation (crop+flip on CIFAR, none on MNISTs)")

    model = p.add_argument_group("model")
    model.add_argument("--model", default=defaults.model, help="cnn, resnet18, resnet101 or densenet121")
    model.add_argument("--width", type=float, default=defaults.width, help="channel-width multiplier of the model")

    optim = p.add_argument_group("optimizer")
    optim.add_argument("--optimizer", default=defaults.optimizer, help=", ".join(opt_lib.OPTIMIZERS))
    optim.add_argument("--lr", type=float, default=None,
                       help="initial learning rate (default: 0.1 for the SGD family, 1e-3 for the Adam family)")
    optim.add_argument("--momentum", type=float, default=defaults.momentum, help="SGD-family momentum")
    optim.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                       help="L2 weight decay (decoupled for adamw/tradamw)")
    optim.add_argument("--lam", type=float, default=defaults.lam, help=_LAM_HELP)
    optim.add_argument("--lam-scaling", default=defaults.lam_scaling,
                       help="constant: lam_k = lam; inverse_lr: lam_k = lam*lr0/lr (the authors')")
    optim.add_argument("--inner-steps", type=int, default=defaults.inner_steps,
                       help="S: steps between re-anchorings of the proximal term")
    optim.add_argument("--no-inner-lr-decay", dest="inner_lr_decay", action="store_false",
                       help="use lr instead of lr/(k+1) at inner step k")
    optim.add_argument("--restart-inner-each-epoch", default=defaults.restart_inner_each_epoch,
                       action=argparse.BooleanOptionalAction,
                       help="restart the inner loop (re-anchor) at every epoch start, as the authors' code does")
    optim.add_argument("--lookahead-k", type=int, default=defaults.lookahead_k,
                       help="Lookahead: fast steps per slow update")
    optim.add_argument("--lookahead-alpha", type=float, default=defaults.lookahead_alpha,
                       help="Lookahead: slow step size")
    optim.add_argument("--schedule", default=defaults.schedule,
                       help="per-epoch lr schedule: step (x0.1 at 50%% and 75%% of epochs, the paper's), "
                            "cosine or constant")

    loop = p.add_argument_group("training loop")
    loop.add_argument("--epochs", type=int, default=defaults.epochs, help="number of epochs (paper: 200)")
    loop.add_argument("--batch-size", type=int, default=defaults.batch_size, help="(micro-)batch size")
    loop.add_argument("--accumulate", type=int, default=defaults.accumulate,
                      help="micro-batches per optimizer step (gradient of the mean over N*batch-size)")
    loop.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size, help="evaluation batch size")
    loop.add_argument("--seed", type=int, default=defaults.seed, help="seed of weights, shuffling and augmentation")

    run = p.add_argument_group("run folder and machine")
    run.add_argument("--out", required=True, help="run folder")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its checkpoint (a finished run: nothing to do)")
    run.add_argument("--overwrite", action="store_true", help="delete the run in --out and start again")
    run.add_argument("--stop-after", type=int, default=None, metavar="N",
                     help="stop after N epochs in this process (resumable with --resume)")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                     help="auto = cuda when available")
    run.add_argument("--threads", type=int, default=None,
                     help="torch threads (default on CPU: 1, faster than 2 for small batches)")
    run.add_argument("--tensorboard", action="store_true", help="also log to <out>/tensorboard (needs tensorboard)")
    run.add_argument("--progress", default=None, action=argparse.BooleanOptionalAction,
                     help="progress bar (default: when stderr is a terminal)")
    return p


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, RunOptions]:
    config = TrainConfig(
        dataset=args.dataset, data_dir=args.data_dir, model=args.model, width=args.width,
        optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
        lam=args.lam, lam_scaling=args.lam_scaling, inner_steps=args.inner_steps,
        inner_lr_decay=args.inner_lr_decay, restart_inner_each_epoch=args.restart_inner_each_epoch,
        lookahead_k=args.lookahead_k, lookahead_alpha=args.lookahead_alpha, schedule=args.schedule,
        epochs=args.epochs, batch_size=args.batch_size, accumulate=args.accumulate,
        eval_batch_size=args.eval_batch_size, subset=args.subset, val_split=args.val_split,
        augment=args.augment, seed=args.seed,
    )
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {args.threads}")
    if args.stop_after is not None and args.stop_after < 1:
        raise ValueError(f"stop-after must be an integer >= 1, got {args.stop_after}")
    options = RunOptions(out=args.out, resume=args.resume, overwrite=args.overwrite, device=args.device,
                         threads=args.threads, tensorboard=args.tensorboard, progress=args.progress,
                         max_epochs=args.stop_after, download=args.download)
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

            dataset = load_dataset(config.dataset, config.data_dir, download=True)
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
