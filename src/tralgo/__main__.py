"""``python -m tralgo ...`` is the same as the ``tralgo`` command (so ``torchrun -m tralgo`` works)."""
import sys

from tralgo.cli import main

if __name__ == "__main__":
    sys.exit(main())
