"""Writes docs/gan/results/procedural_examples.png: 16 procedural val scenes, label colours above photos.

Run: python3 docs/gan/make_examples.py
"""
from pathlib import Path

import numpy as np

from tralgo.experiments.io import atomic_write_bytes
from tralgo.gan.data import ProceduralScenes, png_bytes, to_image

OUT = Path(__file__).resolve().parent / "results" / "procedural_examples.png"


def main() -> None:
    scenes = ProceduralScenes("val", 16, 64)
    rows = []
    for start in (0, 8):
        rows.append(np.concatenate([to_image(scenes[i]["input"]) for i in range(start, start + 8)], 1))
        rows.append(np.concatenate([to_image(scenes[i]["target"]) for i in range(start, start + 8)], 1))
    grid = np.concatenate(rows, 0).repeat(2, 0).repeat(2, 1)  # 2x nearest upscaling for legibility
    atomic_write_bytes(OUT, png_bytes(grid))
    print(OUT)


if __name__ == "__main__":
    main()
