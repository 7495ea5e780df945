"""Apply a pre-registered seed rule blind: how many seeds the study's equivalence tests need,
decided from the spread of the paired differences only, never from their sign or size.

A study that fixes its seed count from its own first seeds (an internal pilot) keeps its error
rates only if the decision cannot depend on the observed effects. This prints, for every contrast
of the study's declared family, the number of paired seeds, the standard deviation of the paired
differences and the paired seeds that two one-sided tests at the study's equivalence margin need
with power 0.8 at alpha / (family size) if the true difference is 0
(``stats.seeds_for_equivalence``, the report's "seeds for ±margin" column); then the rule's seed
count: the largest of those, clipped to [--at-least, --at-most]. Means, differences and p-values
are not printed, so the person applying the rule does not see them.

    python experiments/seed_rule.py runs/converged --study converged --at-least 5 --at-most 12
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tralgo.experiments import report, stats


def family_spreads(runs: list[report.RunRecord], study_name: str) -> list[dict]:
    """The declared family's contrasts of ``study_name``: pairs, std of the paired differences
    and the seeds TOST needs (None where fewer than 2 pairs or no spread)."""
    studies = report.group(runs)
    if study_name not in studies:
        raise SystemExit(f"seed_rule: no runs of study {study_name!r}; found: {', '.join(sorted(studies)) or 'none'}")
    study = studies[study_name]
    if not study.report.get("contrasts") or not study.report.get("equivalence_margin"):
        raise SystemExit(f"seed_rule: study {study_name!r} declares no contrasts or no equivalence_margin "
                         "in [study.report]; the rule needs both")
    entries = report.comparisons(study)
    out = []
    for c in report._entry_contrasts(entries):
        if c.in_family:
            out.append({"contrast": f"{c.a.variant} - {c.b.variant}", "point": report._point_text(c.a.point),
                        "pairs": c.diff.n, "std": c.diff.std if c.diff.n >= 2 else None,
                        "seeds_needed": c.seeds_needed})
    for a, b in report._untested_contrasts(study, entries):
        out.append({"contrast": f"{a} - {b}", "point": "-", "pairs": 0, "std": None, "seeds_needed": None})
    return out


def decide(rows: list[dict], at_least: int, at_most: int) -> int | None:
    """The rule's seed count, or None while a contrast cannot be assessed yet."""
    if any(r["seeds_needed"] is None for r in rows):
        return None
    needed = [at_most if r["seeds_needed"] == -1 else r["seeds_needed"] for r in rows]  # -1: beyond max_n
    return min(at_most, max(at_least, *needed))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or runs.csv with --from-csv)")
    parser.add_argument("--study", required=True, help="the study's name in the spec")
    parser.add_argument("--at-least", type=int, required=True, help="never fewer seeds than this")
    parser.add_argument("--at-most", type=int, required=True, help="never more seeds than this")
    parser.add_argument("--from-csv", action="store_true", help="read the runs from one runs.csv")
    args = parser.parse_args(argv)
    if not 2 <= args.at_least <= args.at_most:
        parser.error(f"need 2 <= --at-least <= --at-most, got {args.at_least} and {args.at_most}")
    if args.from_csv:
        from tralgo.experiments import runs_csv

        runs = [r for path in args.runs for r in runs_csv.read_runs_csv(path)]
    else:
        runs, _, _ = report.load_runs(args.runs)
    rows = family_spreads(runs, args.study)
    print(f"{'contrast':<28} {'configuration':<16} {'pairs':>5} {'std of diff pp':>15} {'seeds for TOST':>15}")
    for r in rows:
        std = "-" if r["std"] is None else f"{100 * r['std']:.2f}"
        need = {None: "-", -1: "too many"}.get(r["seeds_needed"], r["seeds_needed"])
        print(f"{r['contrast']:<28} {r['point']:<16} {r['pairs']:>5} {std:>15} {need!s:>15}")
    n = decide(rows, args.at_least, args.at_most)
    if n is None:
        print("seed rule: not decidable yet (a contrast has fewer than 2 paired seeds or no spread)")
        return 1
    print(f"seed rule: {n} seeds (largest need, clipped to [{args.at_least}, {args.at_most}])")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
