"""The FCN-score judge, evaluation and the `tralgo gan` command line."""
import json

import pytest
import torch
from torch import nn

from tralgo.gan.cli import main
from tralgo.gan.data import NUM_CLASSES
from tralgo.gan.judge import JudgeNet, load_judge, train_judge

TINY_ARGS = ["--size", "32", "--ngf", "4", "--ndf", "4", "--n-layers", "1", "--train-images", "4", "--val-images", "4",
             "--iters", "2", "--decay-iters", "2", "--log-every", "2", "--checkpoint-every", "4", "--sample-every", "4"]


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("judge")
    result = train_judge(out, size=32, num_images=8, iters=3, batch_size=4, width=4, val_images=4, log=lambda _: None)
    assert result["status"] == "completed" and 0.0 <= result["gt_val"]["per_pixel_acc"] <= 1.0
    return out


def test_judge_shapes_and_frozen_loading(judge_dir):
    assert JudgeNet(width=4)(torch.zeros(2, 3, 32, 32)).shape == (2, NUM_CLASSES, 32, 32)
    judge = load_judge(judge_dir)
    assert not judge.training and not any(p.requires_grad for p in judge.parameters())
    again = load_judge(judge_dir / "judge.pt")
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(judge(x), again(x))


class _RedIsCar(nn.Module):
    """A stand-in for a user's Cityscapes model: class 13 (car) where red (in [0, 1]) > 0.5."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        background = torch.zeros_like(images[:, :1]).expand(-1, 13, -1, -1)
        car = images[:, :1] - 0.5
        rest = torch.zeros_like(images[:, :1]).expand(-1, NUM_CLASSES - 14, -1, -1)
        return torch.cat([background, car, rest], 1)


def _save_user_model(path, kind):
    example = torch.zeros(1, 3, 4, 4)
    if kind == "export":
        torch.export.save(torch.export.export(_RedIsCar(), (example,)), str(path))
    else:
        with pytest.warns(DeprecationWarning):
            torch.jit.trace(_RedIsCar(), example).save(str(path))


@pytest.mark.parametrize("kind,name", [("export", "model.pt2"), ("torchscript", "model.ts")])
def test_user_judge_gets_unit_range_images(tmp_path, kind, name):
    _save_user_model(tmp_path / name, kind)
    judge = load_judge(tmp_path / name)
    photos = torch.full((1, 3, 4, 4), -1.0)
    photos[0, 0, :2] = 1.0  # red 1.0 in [0, 1] at the top half, 0.0 below
    labels = judge(photos).argmax(1)[0]
    assert torch.equal(labels[:2], torch.full((2, 4), 13)) and torch.equal(labels[2:], torch.zeros(2, 4, dtype=torch.long))


def test_train_evaluate_compare_through_the_cli(tmp_path, judge_dir, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run", str(run), *TINY_ARGS]) == 0
    assert json.loads((run / "result.json").read_text())["status"] == "completed"
    assert main(["evaluate", "--run", str(run), "--judge", str(judge_dir)]) == 0
    scores = json.loads((run / "eval.json").read_text())
    for row in ("fake", "gt"):
        assert set(scores[row]) >= {"per_pixel_acc", "per_class_acc", "class_iou"}
    assert scores["val_images"] == 4
    study = tmp_path / "study"
    assert main(["compare", "--out", str(study), "--judge", str(judge_dir), "--seeds", "1", "2",
                 "--methods", "adam", "tradam", *TINY_ARGS]) == 0
    summary = json.loads((study / "summary.json").read_text())
    assert set(summary["rows"]) == {"adam", "tradam"} and summary["missing"] == []
    assert len(summary["rows"]["tradam"]["class_iou"]["values"]) == 2
    assert "| TRAdam |" in (study / "table.md").read_text()
    evals = {(m, seed): json.loads((study / "runs" / f"{m}_seed{seed}" / "eval.json").read_text())
             for m in ("adam", "tradam") for seed in (1, 2)}
    diffs = summary["paired"]["tradam - adam"]["class_iou"]["values"]
    assert diffs == pytest.approx([evals["tradam", s]["fake"]["class_iou"] - evals["adam", s]["fake"]["class_iou"]
                                   for s in (1, 2)])
    assert (study / "comparison_seed1.png").exists() and (study / "curves.png").exists()
    tradam_config = json.loads((study / "runs" / "tradam_seed2" / "config.json").read_text())
    assert tradam_config["optimizer"] == "tradam" and tradam_config["seed"] == 2


@pytest.mark.parametrize("argv,message", [
    (["train", "--run", "{tmp}/r", "--size", "48"], "num_downs >= 5"),
    (["train", "--run", "{tmp}/r", "--threads", "0"], "threads must be an int >= 1"),
    (["evaluate", "--run", "{tmp}/missing", "--judge", "{tmp}"], "is not a trained GAN run"),
    (["prepare-cityscapes", "--gtfine", "{tmp}/g", "--leftimg", "{tmp}/l", "--out", "{tmp}/o"], "does not exist"),
])
def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys, argv, message):
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_existing_run_needs_resume(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--run", run, *TINY_ARGS]) == 0
    assert main(["train", "--run", run, *TINY_ARGS]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "--run", run, "--resume", *TINY_ARGS]) == 0


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--optimizer", "--tr-on", "--lam-scaling", "--lam", "--inner-steps", "--resume", "--lambda-l1"):
        assert flag in text


def test_evaluate_refuses_a_judge_of_another_resolution(tmp_path, judge_dir, capsys):
    run = str(tmp_path / "run64")
    args = [a if a != "32" else "64" for a in TINY_ARGS]
    assert main(["train", "--run", run, *args]) == 0
    assert main(["evaluate", "--run", run, "--judge", str(judge_dir)]) == 2
    assert "trained on 32x32 photos but the run generates 64x64" in capsys.readouterr().err


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--run", "x", "--optimizer", "sgd"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "invalid choice: 'sgd'" in err


def test_saved_outputs_let_any_judge_rescore_a_study_without_its_generators(tmp_path, judge_dir):
    # A study's committed records (no checkpoint.pt) are enough to score it again: the 8-bit
    # validation outputs are what the FCN-score and L1 read, so the same judge gives the same
    # eval.json and another judge scores the very same images.
    import shutil

    import numpy as np

    from tralgo.gan.evaluate import OUTPUTS_FILE, from_images

    study = tmp_path / "study"
    argv = ["compare", "--out", str(study), "--seeds", "1", "--methods", "adam", "tradam", *TINY_ARGS]
    assert main([*argv, "--judge", str(judge_dir)]) == 0
    run = study / "runs" / "tradam_seed1"
    with np.load(run / OUTPUTS_FILE) as saved:
        images = saved["images"]
    assert images.dtype == np.uint8 and images.shape == (4, 32, 32, 3)
    assert torch.equal(from_images(images[:1])[0], torch.from_numpy(images[0]).permute(2, 0, 1).float() / 127.5 - 1)
    before = json.loads((run / "eval.json").read_text())
    assert before["images"] == "8-bit"
    records = tmp_path / "records"
    shutil.copytree(study, records, ignore=shutil.ignore_patterns("checkpoint.pt", "samples", "eval.json", "judge"))
    assert not (records / "runs" / "tradam_seed1" / "checkpoint.pt").exists()
    assert main([*argv, "--out", str(records), "--judge", str(judge_dir)]) == 0
    assert json.loads((records / "runs" / "tradam_seed1" / "eval.json").read_text()) == before
    assert (records / "table.md").read_text() == (study / "table.md").read_text()
    other = tmp_path / "other_judge"
    train_judge(other, size=32, num_images=8, iters=3, batch_size=4, width=4, val_images=4, seed=7, log=lambda _: None)
    assert main([*argv, "--out", str(records), "--judge", str(other)]) == 0
    rescored = json.loads((records / "runs" / "tradam_seed1" / "eval.json").read_text())
    assert rescored["judge_sha256"] != before["judge_sha256"] and rescored["val_l1"] == before["val_l1"]
