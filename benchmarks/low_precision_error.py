"""Error of one bf16/fp16 TR step against the same step in float64, in units of torch's
low-precision optimizer tolerance (atol = rtol = 5e-3): max |w16 - w64| / (atol + rtol |w64|).
Values <= 1 pass. The setup is tests/test_low_precision.py's; "folded" forces the old behaviour
(lam_k*w folded into SGD/Adam's weight decay for 16-bit groups too) for comparison.

    python benchmarks/low_precision_error.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_low_precision as setup  # noqa: E402  (the test's configurations and step)

import tralgo._trajectory as trajectory  # noqa: E402
from tralgo import _fused  # noqa: E402


def error(name: str, path: str, dtype: torch.dtype) -> float:
    updated, reference = setup.step_and_reference(name, path, dtype, "cpu")
    tol = setup.TOLERANCE
    return float(((updated.double() - reference).abs() / (tol["atol"] + tol["rtol"] * reference.abs())).max())


def main() -> None:
    _fused.COMPILE_BACKEND = "eager"  # the kernel's math without inductor's compile time
    shipped = trajectory._NO_FOLD_DTYPES
    print(f"{'':<9}{'config':<16}{'dtype':<10}" + "".join(f"{p:>10}" for p in setup.PATHS))
    for label, no_fold in (("folded", ()), ("shipped", shipped)):
        trajectory._NO_FOLD_DTYPES = no_fold
        for name in setup.CONFIGS:
            for dtype in (torch.bfloat16, torch.float16):
                if name == "TRAdam" and dtype == torch.float16:
                    continue  # torch's Adam alone gives inf here (see the test)
                cells = "".join(f"{error(name, path, dtype):>10.2f}" for path in setup.PATHS)
                print(f"{label:<9}{name:<16}{str(dtype).removeprefix('torch.'):<10}{cells}")
    trajectory._NO_FOLD_DTYPES = shipped


if __name__ == "__main__":
    main()
