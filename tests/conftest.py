import sys
from pathlib import Path

import pytest
import torch

# Core tests share tests/_helpers.py (pytest runs with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _deterministic_torch():
    # Small problems: one thread is faster here and makes reductions order-stable.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
