"""experiments/gan_judge_spread.py: a GAN table's differences against the judges' own spread."""
import importlib.util
from pathlib import Path

import pytest

from tralgo.gan.compare import write_raw

_PATH = Path(__file__).resolve().parents[2] / "experiments" / "gan_judge_spread.py"
_spec = importlib.util.spec_from_file_location("gan_judge_spread", _PATH)
gan_judge_spread = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gan_judge_spread)

CLASSES = 19


def _study(folder: Path, shift: float) -> Path:
    """A 3-seed study scored by one judge: TRAdam is +0.05 per-pixel (plus this judge's ``shift``),
    +0.001 per-class with the sign flipping between judges, equal on IoU."""
    records = []
    for seed in (1, 2, 3):
        for method, pixel, klass in (("adam", 0.80, 0.60), ("tradam", 0.85 + shift, 0.60 + shift / 10)):
            records.append({"method": method, "seed": seed, "status": "evaluated", "per_pixel_acc": pixel + seed / 100,
                            "per_class_acc": klass, "class_iou": 0.5, "val_l1": 0.2, "wall_s": 1.0,
                            "per_class_iou": [0.5] * CLASSES})
    gt = {"per_pixel_acc": 0.98, "per_class_acc": 0.9, "class_iou": 0.88, "per_class_iou": [0.9] * CLASSES}
    folder.mkdir(parents=True)
    write_raw(folder, records, gt)
    return folder / "runs.csv"


def test_spread_between_judges_and_the_verdict(tmp_path, capsys):
    paths = [_study(tmp_path / f"j{i}", shift) for i, shift in enumerate((0.01, -0.01, 0.0))]
    assert gan_judge_spread.main([str(p) for p in paths]) == 0
    rows = {tuple(c.strip() for c in line.strip("|").split("|"))[1]: [c.strip() for c in line.strip("|").split("|")]
            for line in capsys.readouterr().out.splitlines()[2:]}
    pixel = rows["per pixel acc"]
    assert pixel[2:5] == ["+0.0600", "+0.0400", "+0.0500"]
    assert float(pixel[5]) == pytest.approx(0.01, abs=1e-4) and pixel[6].startswith("+0.0500 [") and pixel[7] == "yes"
    assert rows["per class acc"][7] == "no"  # +0.001, -0.001, 0: the judges disagree on the sign


def test_files_of_different_studies_are_one_error(tmp_path, capsys):
    one = _study(tmp_path / "a", 0.0)
    (tmp_path / "b").mkdir()
    write_raw(tmp_path / "b", [{"method": "adam", "seed": 1, "status": "evaluated", "per_pixel_acc": 0.8,
                                "per_class_acc": 0.6, "class_iou": 0.5, "val_l1": 0.2, "wall_s": 1.0,
                                "per_class_iou": [0.5] * CLASSES}], None)
    assert gan_judge_spread.main([str(one), str(tmp_path / "b" / "runs.csv")]) == 2
    assert "different comparisons" in capsys.readouterr().err
