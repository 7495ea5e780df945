"""How much of a GAN table's differences survives the judge's own seed-to-seed spread.

Each RUNS_CSV is the same study scored by another judge (`tralgo gan compare --judge J` writes one
runs.csv per scoring). For every paired difference of the table (same GAN seed) and FCN metric this
writes a markdown table: the mean difference under each judge, the spread of those means between
judges (sample std), and the difference averaged over the judges with its 95% interval over the GAN
seeds. A difference "survives the judges" when its sign is the same under every judge and its size
is more than twice the between-judge spread.

    python experiments/gan_judge_spread.py --out docs/gan/results/judge_spread.md \\
        docs/gan/results/runs.csv docs/gan/results/judge2/runs.csv docs/gan/results/judge3/runs.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tralgo.experiments import stats
from tralgo.experiments.io import atomic_write_text
from tralgo.gan.compare import METHOD_LABELS, METRICS, read_raw


def spread_table(paths: list[Path]) -> str:
    summaries = [read_raw(p) for p in paths]
    pairs = list(summaries[0]["paired"])
    if any(list(s["paired"]) != pairs for s in summaries):
        raise ValueError("the runs.csv files hold different comparisons: they must score the same study")
    header = ["difference", "metric", *[f"judge {i + 1}" for i in range(len(paths))], "between-judge std",
              "mean over judges [95% CI over GAN seeds]", "survives the judges"]
    rows = []
    for pair in pairs:
        method, reference = summaries[0]["paired"][pair]["method"], summaries[0]["paired"][pair]["reference"]
        for metric in METRICS:
            per_judge = [s["paired"][pair][metric]["values"] for s in summaries]
            if len({len(v) for v in per_judge}) != 1:
                raise ValueError(f"{pair}: the judges scored different numbers of seeds")
            means = [stats.mean(v) for v in per_judge]
            spread = stats.sample_std(means)
            averaged = stats.mean_ci95([stats.mean(seed) for seed in zip(*per_judge)])
            same_sign = all(m > 0 for m in means) or all(m < 0 for m in means)
            survives = "yes" if same_sign and abs(averaged.mean) > 2 * spread else "no"
            rows.append([f"{METHOD_LABELS[method]} − {METHOD_LABELS[reference]}", metric.replace("_", " "),
                         *[f"{m:+.4f}" for m in means], f"{spread:.4f}", averaged.format(digits=4), survives])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_csv", nargs="+", type=Path, help="runs.csv of the same study, one per judge")
    parser.add_argument("--out", type=Path, help="write the markdown table here (default: print it)")
    args = parser.parse_args(argv)
    if len(args.runs_csv) < 2:
        parser.error("give the runs.csv of at least two judges")
    try:
        table = spread_table(args.runs_csv)
    except (OSError, ValueError) as e:
        print(f"gan_judge_spread: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        atomic_write_text(args.out, table)
    else:
        print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
