"""tralgo gan: pix2pix label -> photo with Adam or TRAdam.

    tralgo gan judge    --out DIR                      train the FCN-score judge on real photos
    tralgo gan train    --run DIR [options] [--resume] train one pix2pix run
    tralgo gan evaluate --run DIR --judge PATH         FCN-score of a run (and of the real photos)
    tralgo gan compare  --out DIR [options]            Adam / TRAdam / equal-lr control over seeds
    tralgo gan prepare-cityscapes --gtfine D --leftimg D --out D   Cityscapes -> aligned folders
    tralgo gan validate-judge --out DIR --config result.json   the judge on real and degenerate images, 3 seeds
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

CONFIG_HELP = {
    "data": "'procedural' (the built-in street scenes) or the path of a pix2pix aligned folder "
            "(<data>/train, <data>/val, <data>/val_labels)",
    "direction": "aligned folders: 'BtoA' if the label image is the right half (pix2pix's and "
                 "prepare-cityscapes' layout), 'AtoB' if it is the left half",
    "size": "image side in pixels (64 for the CPU study, 256 for pix2pix)",
    "train_images": "procedural data: number of training scenes",
    "val_images": "procedural data: number of validation scenes (FCN-score set)",
    "jitter": "pix2pix's resize-to-286/256-crop-flip augmentation (aligned folders)",
    "num_downs": "U-Net levels; 0 means log2(size), i.e. down to 1x1 (8 = unet_256)",
    "ngf": "generator filters in the outermost level (pix2pix: 64)",
    "ndf": "discriminator filters in the first layer (pix2pix: 64)",
    "n_layers": "PatchGAN stride-2 layers: 3 = 70x70 patches, 2 = 34x34, 1 = 16x16",
    "dropout": "dropout 0.5 in the intermediate 8*ngf decoder levels (pix2pix's noise)",
    "optimizer": "'adam' or 'tradam'",
    "tr_on": "with --optimizer tradam: TRAdam on 'both' networks, on 'G' only or 'D' only (the other gets Adam)",
    "lr": "initial learning rate of both networks (pix2pix: 2e-4)",
    "beta1": "Adam beta1 (pix2pix: 0.5)",
    "beta2": "Adam beta2",
    "lam": "TRAdam lambda (tralgo convention). 0.2 with inverse_lr = the paper's 0.1 in the authors' code",
    "lam_scaling": "'inverse_lr' (lambda x initial_lr / lr, the authors' behaviour) or 'constant'",
    "inner_steps": "TRAdam S: steps between re-anchorings (paper: 10)",
    "inner_lr_decay": "TRAdam's lr/(k+1) inside each inner loop (paper and authors' code)",
    "lambda_l1": "weight of the L1 term in the generator loss (pix2pix: 100)",
    "batch_size": "images per iteration (pix2pix: 1)",
    "iters": "iterations at constant learning rate",
    "decay_iters": "iterations of linear decay to 0 after that (pix2pix: as many as constant)",
    "seed": "seed of the initialisation, data order and dropout noise",
    "log_every": "iterations per metrics.jsonl line",
    "checkpoint_every": "iterations per checkpoint (and validation-L1 line)",
    "sample_every": "iterations per sample grid PNG",
    "device": "torch device ('cpu', 'cuda')",
    "threads": "torch CPU threads (1 is fastest per run on a small shared machine)",
}


CHOICES = {"optimizer": ("adam", "tradam"), "tr_on": ("both", "G", "D"), "lam_scaling": ("constant", "inverse_lr"),
           "direction": ("AtoB", "BtoA")}


def _add_config_arguments(parser: argparse.ArgumentParser, skip=()) -> None:
    from tralgo.gan.train import GANConfig

    for field in dataclasses.fields(GANConfig):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text = f"{CONFIG_HELP[field.name]} (default: {field.default})"
        if field.type in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(field.type), type(field.default))
            parser.add_argument(flag, type=kind, default=field.default, choices=CHOICES.get(field.name),
                                help=help_text)


def _config_from(args: argparse.Namespace, skip=()):
    from tralgo.gan.train import GANConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(GANConfig) if f.name not in skip}
    return GANConfig(**values)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (the full usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tralgo gan", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{judge,train,evaluate,compare,prepare-cityscapes,validate-judge}")

    p = sub.add_parser("judge", help="train the FCN-score judge on real procedural photos (judge split)")
    p.add_argument("--out", required=True, help="folder for judge.pt and result.json")
    p.add_argument("--size", type=int, default=64, help="image side (must match the GAN runs; default 64)")
    p.add_argument("--images", type=int, default=1000, help="judge-split scenes to train on (default 1000)")
    p.add_argument("--iters", type=int, default=1200, help="training iterations (default 1200)")
    p.add_argument("--batch-size", type=int, default=8, help="images per iteration (default 8)")
    p.add_argument("--width", type=int, default=16, help="JudgeNet width (default 16)")
    p.add_argument("--val-images", type=int, default=100, help="validation scenes for the GT score (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the judge's init and batches (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")

    p = sub.add_parser("train", help="train one pix2pix run into a run folder")
    p.add_argument("--run", required=True, help="run folder (config.json, metrics.jsonl, checkpoint.pt, samples/)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run from its checkpoint")
    _add_config_arguments(p)

    p = sub.add_parser("evaluate", help="FCN-score of a run's generator on the validation set")
    p.add_argument("--run", required=True, help="a trained run folder")
    p.add_argument("--judge", required=True, help="a `tralgo gan judge` folder, or a user's 19-class Cityscapes "
                   "model taking RGB in [0, 1]: *.pt2 (torch.export) or TorchScript")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")

    p = sub.add_parser("compare", help="Adam vs TRAdam vs the inner-decay-equivalent lr, over seeds")
    p.add_argument("--out", required=True, help="study folder: runs/<method>_seed<s>/, table.md, summary.json")
    p.add_argument("--judge", default=None, help="judge folder, or a user's model (*.pt2 from torch.export, or TorchScript) (default: <out>/judge, "
                   "trained with `tralgo gan judge` defaults if missing)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds (default 1 2 3)")
    p.add_argument("--from", dest="from_file", default=None, metavar="FILE",
                   help="train and evaluate nothing: rebuild --out/table.md from a runs.csv (per_class_iou.csv "
                        "next to it), or from a summary.json whose run folders are gone, writing its runs.csv and "
                        "per_class_iou.csv into --out first")
    p.add_argument("--methods", nargs="+", default=["adam", "tradam", "adam_equiv_lr"],
                   choices=["adam", "tradam", "adam_equiv_lr"],
                   help="rows: adam, tradam, adam_equiv_lr (Adam at lr x H_S/S, 0.293x at S=10)")
    _add_config_arguments(p, skip=("seed", "optimizer"))

    p = sub.add_parser("prepare-cityscapes", help="gtFine + leftImg8bit -> pix2pix aligned folders with label maps")
    p.add_argument("--gtfine", required=True, help="Cityscapes gtFine folder (holding train/, val/)")
    p.add_argument("--leftimg", required=True, help="Cityscapes leftImg8bit folder (holding train/, val/)")
    p.add_argument("--out", required=True, help="output folder: <out>/<split>/<name>.png, <out>/<split>_labels/")
    p.add_argument("--size", type=int, default=256, help="side of each half (default 256)")
    p.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to convert (default train val)")

    from tralgo.gan.judge_check import add_arguments as add_judge_check_arguments

    p = sub.add_parser("validate-judge", help="score real photos and degenerate images (label map, class means, "
                       "blurred, shuffled) with judges of several seeds")
    add_judge_check_arguments(p)
    return parser


def _log(message: str) -> None:
    print(message, flush=True)


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.command == "judge":
        from tralgo.gan.judge import train_judge

        result = train_judge(args.out, size=args.size, num_images=args.images, iters=args.iters,
                             batch_size=args.batch_size, width=args.width, seed=args.seed,
                             val_images=args.val_images, log=_log)
        print(json.dumps({"gt_val": {k: v for k, v in result["gt_val"].items() if k != "per_class_iou"},
                          "wall_s": round(result["wall_s"], 1)}, indent=2))
    elif args.command == "train":
        from tralgo.gan.train import train

        result = train(_config_from(args), args.run, resume=args.resume, log=_log)
        print(json.dumps({"status": result["status"], "wall_s": result.get("wall_s")}))
    elif args.command == "evaluate":
        from tralgo.gan.evaluate import evaluate_run

        result = evaluate_run(args.run, args.judge, args.device)
        for row in ("gt", "fake"):
            scores = result[row]
            print(f"{row:>4}: per-pixel {scores['per_pixel_acc']:.3f}  per-class {scores['per_class_acc']:.3f}  "
                  f"class IoU {scores['class_iou']:.3f}")
    elif args.command == "compare":
        _compare(args)
    elif args.command == "prepare-cityscapes":
        from tralgo.gan.data import prepare_cityscapes

        counts = prepare_cityscapes(args.gtfine, args.leftimg, args.out, size=args.size, splits=tuple(args.splits))
        print(json.dumps(counts))
    elif args.command == "validate-judge":
        from tralgo.gan.judge_check import run_cli

        print(run_cli(args, log=_log), end="")
    return 0


def _compare(args: argparse.Namespace) -> None:
    from tralgo.gan.compare import comparison_grid, format_table, plot_curves, run_all
    from tralgo.gan.judge import train_judge

    out = Path(args.out)
    if args.from_file is not None:
        _compare_from(Path(args.from_file), out)
        return
    base = _config_from(args, skip=("seed", "optimizer"))
    judge = Path(args.judge) if args.judge else out / "judge"
    if args.judge is None and not (judge / "judge.pt").exists():
        _log(f"training the judge into {judge}")
        train_judge(judge, size=base.size, log=_log)
    start = time.time()
    summary = run_all(base, out, args.methods, args.seeds, judge, log=_log)
    comparison_grid(out, args.methods, args.seeds[0])
    plot_curves(out, args.methods, args.seeds)
    print(format_table(summary))
    print(f"compare wall time (this invocation): {time.time() - start:.0f} s")
    if summary["missing"]:
        raise RuntimeError(f"runs without an evaluation: {summary['missing']}")


def _compare_from(source: Path, out: Path) -> None:
    from tralgo.experiments.io import atomic_write_text
    from tralgo.gan.compare import CURVES_CSV, RUNS_CSV, draw_curves, export_summary, format_table, read_curves, read_raw

    if source.suffix == ".json":
        try:
            summary = json.loads(source.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"--from: {str(source)!r} does not exist") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"--from: {str(source)!r} is not valid JSON ({error})") from None
        out.mkdir(parents=True, exist_ok=True)
        export_summary(summary, out)
        source = out / RUNS_CSV
        _log(f"wrote {source} and its per_class_iou.csv from the summary")
    table = format_table(read_raw(source))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table.md", table)
    print(table)
    _log(f"wrote {out / 'table.md'} from {source}")
    curves = source.with_name(CURVES_CSV)
    if curves.is_file():  # studies exported from a summary.json have no per-iteration data
        _log(f"wrote {draw_curves(read_curves(curves), out / 'curves.png')} from {curves}")


def main(argv: list[str]) -> int:
    from tralgo.gan.train import RunExistsError

    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, TypeError, FileNotFoundError, RunExistsError, RuntimeError) as error:
        print(f"tralgo gan {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tralgo gan {args.command}: interrupted (resume with --resume / rerun compare)", file=sys.stderr)
        return 130
