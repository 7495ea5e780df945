"""``tralgo theory --out DIR``: run the studies, cache each one, write the Markdown report.

Each (problem, l choice, study) result is written atomically to ``DIR/results/`` as soon as it is
done; a rerun with the same configuration loads it instead of recomputing, so a killed run resumes
where it stopped and, every study being seeded, ends with exactly the same numbers. The header of
the run that computed them (command, machine, wall time) goes to ``DIR/results/report_header.json``;
``--from-results`` rebuilds README.md and the plots from ``results/`` alone, byte for byte, and
refuses to compute anything.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

from tralgo.experiments.io import atomic_write_json
from tralgo.theory.problems import L_CHOICES, PROBLEMS, make_problem
from tralgo.theory.report import Case, write_report
from tralgo.theory.studies import QUICK, STUDIES, StudyConfig, constants, run_study


def _csv(choices: tuple[str, ...], what: str):
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{what} must be a comma-separated subset of {', '.join(choices)}; got {text!r}")
        return items
    return parse


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--seed must be an integer >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tralgo theory",
        description="Measure the paper's Section 3 claims (Lemma 2, Theorems 1-2, variance of TRSGD vs SGD) on "
                    "finite-sum problems and write a Markdown report with tables and PNG plots.",
    )
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder: README.md, PNG plots and results/ (per-study JSON, reused on rerun)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (seconds): a smoke test of the whole pipeline, not meaningful numbers")
    parser.add_argument("--seed", type=_nonnegative_int, default=0,
                        help="base seed of every data set and random stream (default 0)")
    parser.add_argument("--problems", type=_csv(tuple(PROBLEMS), "--problems"), default=list(PROBLEMS),
                        help=f"comma-separated problems to run (default all: {','.join(PROBLEMS)})")
    parser.add_argument("--l-choices", type=_csv(L_CHOICES, "--l-choices"), default=list(L_CHOICES),
                        help="which smoothness constant the step sizes use: 'f' (smoothness of f) and/or "
                             "'per_sample' (max smoothness of one f_i); default both")
    parser.add_argument("--from-results", action="store_true",
                        help="rebuild README.md and the plots from the raw results in DIR/results/ (and the header "
                             "of the run that computed them) without computing anything; an error if a study's "
                             "result is missing or was made with another configuration")
    return parser


def _machine() -> str:
    import numpy

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()}-core CPU ({platform.machine()}, {platform.system()}), one BLAS thread, "
            f"Python {platform.python_version()}, numpy {numpy.__version__}; load average when the report "
            f"was written (1, 5, 15 min): {load} (the machine is shared, so wall times vary with it)")


def _load_or_run(path: Path, key: dict, compute) -> dict:
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                return saved["result"]
        except (json.JSONDecodeError, KeyError):
            pass  # a foreign or damaged file: recompute and overwrite it
    result = compute()
    atomic_write_json(path, {"key": key, "result": result})
    return json.loads(json.dumps(result, default=float))  # the same types a reload would give


HEADER_FILE = "report_header.json"


def _load_only(path: Path, key: dict) -> dict:
    """The saved result of one study for ``--from-results``; never computes."""
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--from-results: {path} is missing; run without --from-results to compute it") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--from-results: {path} is not valid JSON ({error})") from None
    if saved.get("key") != key:
        raise ValueError(f"--from-results: {path} was made with another configuration than the options given "
                         f"(saved {saved.get('key')!r}); pass the same options as the run that made it")
    return saved["result"]


def run(args: argparse.Namespace, argv: list[str], log=print) -> Path:
    from threadpoolctl import threadpool_limits

    cfg = dataclasses.replace(QUICK if args.quick else StudyConfig(), seed=args.seed)
    out: Path = args.out
    start = time.perf_counter()
    cases = []
    with threadpool_limits(1):  # the report's timings are for one core per process
        for name in args.problems:
            problem = make_problem(name, cfg.seed)
            for l_choice in args.l_choices:
                results = {}
                for study in STUDIES:
                    key = {"problem": name, "l_choice": l_choice, "study": study, "config": cfg.to_dict()}
                    path = out / "results" / f"{name}.{l_choice}.{study}.json"
                    if args.from_results:
                        results[study] = _load_only(path, key)
                    else:
                        results[study] = _load_or_run(path, key, lambda: run_study(study, problem, cfg, l_choice))
                    log(f"{name} [{l_choice}] {study}: {results[study]['seconds']:.1f} s")
                cases.append(Case(name, problem.description, l_choice, results, constants(problem, results, l_choice)))
        compute = sum(r["seconds"] for c in cases for r in c.results.values())

        def wall_text() -> str:
            return (f"{time.perf_counter() - start:.0f} s for this invocation, plots included "
                    f"(the studies themselves: {compute:.0f} s; a rerun reuses finished studies from results/)")

        header_path = out / "results" / HEADER_FILE
        if args.from_results:
            try:
                header = json.loads(header_path.read_text())
            except (FileNotFoundError, json.JSONDecodeError) as error:
                raise ValueError(f"--from-results: {header_path} is missing or damaged ({error}); it is written by "
                                 "a run without --from-results") from None
            write_report(cases, cfg.to_dict(), {**header, "from_results": True}, out, lambda: header["wall"])
        else:
            header = {"command": " ".join(["tralgo theory", *argv]), "machine": _machine()}
            header["wall"] = write_report(cases, cfg.to_dict(), header, out, wall_text)
            atomic_write_json(header_path, header)
    log(f"wrote {out / 'README.md'} ({time.perf_counter() - start:.0f} s)")
    return out / "README.md"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        run(args, argv)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"tralgo theory: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
