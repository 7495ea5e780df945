"""The ``tralgo`` command: one entry point, subcommands implemented in their own modules.

Each subcommand module exposes ``main(argv: list[str]) -> int``; it is imported only when used,
so ``import tralgo`` never pulls in the experiment harness's extras.
"""
from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "train": ("tralgo.experiments.train_cli", "train one model (resumable, distributed with torchrun)"),
    "demo": ("tralgo.experiments.demo", "the README's main job: SGD vs TRSGD, Adam vs TRAdam on Fashion-MNIST"),
    "sweep": ("tralgo.experiments.sweep", "run a grid of trainings described in a TOML spec"),
    "report": ("tralgo.experiments.report", "summarise run folders into a Markdown report with plots"),
    "gan": ("tralgo.gan.cli", "pix2pix label->photo with TRAdam: train / evaluate / compare"),
    "theory": ("tralgo.theory.cli", "numerical checks of the paper's theory (Lemma 2, Theorems 1-2)"),
}


def _usage() -> str:
    lines = ["usage: tralgo <command> [options]", "", "commands:"]
    for name, (_, text) in SUBCOMMANDS.items():
        lines.append(f"  {name:<8} {text}")
    lines.append("")
    lines.append("`tralgo <command> --help` explains every option of a command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"tralgo: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)
