"""`tralgo gan validate-judge`: the degenerate inputs, the CSV -> table regeneration, the CLI."""
import json
import math

import pytest
import torch

from tralgo.gan import judge_check as jc
from tralgo.gan.cli import main
from tralgo.gan.data import NUM_CLASSES, ProceduralScenes


@pytest.fixture(scope="module")
def scenes():
    return ProceduralScenes("val", 3, 16)


def test_class_mean_colours_are_the_per_class_pixel_means():
    labels = torch.tensor([[[0, 0], [1, 255]]])
    photos = torch.tensor([[[[0.2, 0.4], [-1.0, 0.9]]]]).expand(1, 3, 2, 2).clone()
    photos[:, 1] *= -1
    colours = jc.class_mean_colours(labels, photos, num_classes=3)
    assert torch.allclose(colours[0], torch.tensor([0.3, -0.3, 0.3]))
    assert torch.allclose(colours[1], torch.tensor([-1.0, 1.0, -1.0]))
    # class 2 has no pixel: the mean of every pixel (the ignored one included)
    assert torch.allclose(colours[2], photos.mean((0, 2, 3)))


def test_class_mean_image_is_constant_per_class(scenes):
    colours = jc.class_mean_colours(scenes.labels, scenes.targets)
    image = jc.class_mean_image(scenes.labels, colours)
    assert image.shape == scenes.targets.shape
    pixels = image.permute(0, 2, 3, 1)
    for c in scenes.labels.unique().tolist():
        assert torch.equal(pixels[scenes.labels == c], colours[c].expand(int((scenes.labels == c).sum()), 3))
    # on the photos it was computed from, the class mean is what each class's pixels average to
    real = scenes.targets.permute(0, 2, 3, 1)
    for c in scenes.labels.unique().tolist():
        assert torch.allclose(real[scenes.labels == c].mean(0), colours[c], atol=1e-6)


def test_label_map_image_uses_the_palette(scenes):
    image = jc.label_map_image(scenes.labels)
    assert torch.equal(image, scenes.inputs)  # exactly the generator's input


@pytest.mark.parametrize("sigma", [0.5, 1.5, 4.0])
def test_blur_preserves_each_channel_mean_and_smooths(scenes, sigma):
    blurred = jc.gaussian_blur(scenes.targets, sigma)
    assert blurred.shape == scenes.targets.shape
    assert torch.allclose(blurred.double().mean((2, 3)), scenes.targets.double().mean((2, 3)), atol=1e-6)
    tv = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean()  # noqa: E731
    assert tv(blurred) < tv(scenes.targets)


def test_blur_rejects_bad_sigma(scenes):
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="sigma"):
            jc.gaussian_blur(scenes.targets, bad)


@pytest.mark.parametrize("patch", [1, 4, 8])
def test_shuffle_is_a_permutation_of_each_image(scenes, patch):
    photos = scenes.targets
    shuffled = jc.shuffle_patches(photos, patch, torch.Generator().manual_seed(0))
    assert not torch.equal(shuffled, photos)
    n, c, h, w = photos.shape
    tiles = lambda x: x.reshape(n, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5).reshape(  # noqa: E731
        n, -1, c * patch * patch)
    for a, b in zip(tiles(photos), tiles(shuffled)):
        # the same multiset of tiles (pixels with all their channels when patch is 1)
        assert torch.equal(torch.unique(a, dim=0), torch.unique(b, dim=0))
        assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, b.tolist()))


def test_shuffle_rejects_a_patch_not_dividing_the_image(scenes):
    with pytest.raises(ValueError, match="patch must be an int >= 1 dividing"):
        jc.shuffle_patches(scenes.targets, 5, torch.Generator())


def test_build_inputs_has_every_kind(scenes):
    colours = jc.class_mean_colours(scenes.labels, scenes.targets)
    inputs = jc.build_inputs(scenes.labels, scenes.targets, colours, blur_sigma=1.0, patch=4)
    assert tuple(inputs) == jc.INPUT_KINDS
    assert all(x.shape == scenes.targets.shape and x.dtype == torch.float32 for x in inputs.values())


def _rows():
    rows, g = [], torch.Generator().manual_seed(1)
    for seed in (1, 2, 3):
        for kind in jc.INPUT_KINDS:
            rows.append({"judge_seed": seed, "input": kind,
                         **{m: float(torch.rand((), generator=g, dtype=torch.float64)) for m in jc.METRICS}})
    return rows


def test_csv_round_trip_regenerates_the_table_exactly(tmp_path):
    rows = _rows()
    path = tmp_path / jc.CSV_NAME
    path.write_text(jc.csv_text(rows))
    assert jc.read_csv(path) == rows  # repr floats: the very same numbers
    assert jc.format_table(jc.read_csv(path)) == jc.format_table(rows)
    table = jc.format_table(rows)
    real = [r["per_pixel_acc"] for r in rows if r["input"] == "real"]
    import statistics

    assert f"{statistics.fmean(real):.3f} ± {statistics.stdev(real):.4f}" in table


def test_committed_table_regenerates_from_the_committed_csv(tmp_path):
    from pathlib import Path

    from tralgo.gan.compare import read_raw

    results = Path(__file__).resolve().parents[2] / "docs" / "gan" / "results"
    if not (results / jc.CSV_NAME).exists():
        pytest.skip("no committed judge_check.csv")
    table = jc.format_table(jc.read_csv(results / jc.CSV_NAME), read_raw(results / "runs.csv"))
    assert table == (results / jc.TABLE_NAME).read_text()


def test_cli_from_rebuilds_the_table(tmp_path, capsys):
    (tmp_path / jc.CSV_NAME).write_text(jc.csv_text(_rows()))
    assert main(["validate-judge", "--from", str(tmp_path / jc.CSV_NAME), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / jc.TABLE_NAME).read_text() == jc.format_table(_rows())


@pytest.mark.parametrize("content, message", [
    ("a,b\n1,2\n", "is not a judge_check.csv"),
    ("judge_seed,input,per_pixel_acc,per_class_acc,class_iou\n1,photo,0.1,0.2,0.3\n", "input must be one of"),
    ("judge_seed,input,per_pixel_acc,per_class_acc,class_iou\n1,real,x,0.2,0.3\n", "must be an int"),
])
def test_cli_from_bad_csv_is_one_line_error(tmp_path, capsys, content, message):
    (tmp_path / "bad.csv").write_text(content)
    assert main(["validate-judge", "--from", str(tmp_path / "bad.csv"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("extra, message", [
    ([], "--config is required"),
    (["--seeds", "1"], "at least 2 judge seeds"),
    (["--seeds", "1", "1"], "--seeds must be distinct"),
    (["--blur-sigma", "0"], "--blur-sigma must be a finite number > 0"),
    (["--val-images", "0"], "--val-images must be an int >= 1"),
    (["--config", "/nonexistent/result.json"], "does not exist"),
])
def test_cli_bad_arguments_are_one_line_errors(tmp_path, capsys, extra, message):
    assert main(["validate-judge", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_rejects_a_judge_of_another_configuration(tmp_path, capsys):
    config = {"size": 16, "num_images": 4, "iters": 2, "batch_size": 2, "lr": 2e-3, "width": 2, "seed": 0,
              "num_classes": NUM_CLASSES}
    (tmp_path / "result.json").write_text(json.dumps({"config": config}))
    (tmp_path / "judges").mkdir()
    torch.save({"config": {**config, "width": 4, "seed": 1}, "state_dict": {}}, tmp_path / "judges" / "judge_seed1.pt")
    args = ["validate-judge", "--out", str(tmp_path), "--config", str(tmp_path / "result.json"), "--seeds", "1", "2"]
    assert main(args) == 2
    assert "differs in width" in capsys.readouterr().err


def test_cli_trains_scores_and_writes_csv_and_table(tmp_path, capsys):
    torch.set_num_threads(1)
    config = {"size": 16, "num_images": 4, "iters": 2, "batch_size": 2, "lr": 2e-3, "width": 2, "seed": 0,
              "num_classes": NUM_CLASSES}
    (tmp_path / "result.json").write_text(json.dumps({"config": config}))
    args = ["validate-judge", "--out", str(tmp_path / "out"), "--config", str(tmp_path / "result.json"),
            "--seeds", "1", "2", "--val-images", "2", "--train-images", "2", "--patch", "4"]
    assert main(args) == 0
    rows = jc.read_csv(tmp_path / "out" / jc.CSV_NAME)
    assert [(r["judge_seed"], r["input"]) for r in rows] == [(s, k) for s in (1, 2) for k in jc.INPUT_KINDS]
    assert all(0.0 <= r[m] <= 1.0 for r in rows for m in jc.METRICS)
    saved = torch.load(tmp_path / "out" / "judges" / "judge_seed2.pt", weights_only=True)
    assert saved["config"] == {**config, "seed": 2}
    table = (tmp_path / "out" / jc.TABLE_NAME).read_text()
    assert table == jc.format_table(rows)
    # a second run loads the saved judges and scores the same numbers
    assert main(args) == 0
    assert jc.read_csv(tmp_path / "out" / jc.CSV_NAME) == rows


def test_study_table_sets_differences_against_the_judge_spread(tmp_path):
    import statistics

    rows = _rows()
    study = {"paired": {"tradam - adam": {"method": "tradam", "reference": "adam",
                                          **{m: {"mean": 0.01} for m in jc.METRICS}}}}
    table = jc.format_table(rows, study)
    by = {(r["input"], r["judge_seed"]): r["class_iou"] for r in rows}
    s_lo = statistics.stdev([by[("class_mean", s)] - by[("blurred", s)] for s in (1, 2, 3)])
    s_hi = math.sqrt(2) * max(statistics.stdev([by[(k, s)] for s in (1, 2, 3)]) for k in jc.INPUT_KINDS)
    assert f"{s_lo:.4f} (class_mean − blurred) |" in table
    assert f"{s_hi:.4f} (sqrt(2) × " in table
    assert f"+0.010; {0.01 / s_lo:.1f}, {0.01 / s_hi:.1f} |" in table
