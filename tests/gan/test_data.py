"""Procedural scenes, aligned folders and Cityscapes preparation."""
import numpy as np
import pytest
import torch
from PIL import Image

from tralgo.gan.data import (CITYSCAPES_PALETTE, IGNORE_LABEL, PROCEDURAL_CLASSES, SPLIT_SEEDS, AlignedFolder,
                             ProceduralScenes, labels_to_color, prepare_cityscapes, render_scene, to_image,
                             write_aligned_folder)


def test_render_is_deterministic_per_seed_and_index():
    label_a, photo_a = render_scene(7, 3, 32)
    label_b, photo_b = render_scene(7, 3, 32)
    assert np.array_equal(label_a, label_b) and np.array_equal(photo_a, photo_b)
    label_c, photo_c = render_scene(7, 4, 32)
    assert not np.array_equal(photo_a, photo_c)


def test_splits_use_different_seeds_and_never_share_a_scene():
    assert len(set(SPLIT_SEEDS.values())) == len(SPLIT_SEEDS)
    train, val = ProceduralScenes("train", 4, 32), ProceduralScenes("val", 4, 32)
    for i in range(4):
        for j in range(4):
            assert not torch.equal(train.targets[i], val.targets[j])


def test_scene_content():
    data = ProceduralScenes("train", 12, 32)
    item = data[0]
    assert item["input"].shape == item["target"].shape == (3, 32, 32)
    assert item["label"].shape == (32, 32) and item["label"].dtype == torch.int64
    assert -1 <= float(data.targets.min()) and float(data.targets.max()) <= 1
    classes = set(torch.unique(data.labels).tolist())
    assert classes <= set(PROCEDURAL_CLASSES) and len(classes) >= 6  # a street scene, not a blob
    # the generator's input is exactly the label map in Cityscapes colours
    assert np.array_equal(to_image(item["input"]), labels_to_color(item["label"].numpy().astype(np.uint8)))


def test_one_label_map_many_photos():
    # Same class, different instances, different colours: cars are not one fixed colour.
    data = ProceduralScenes("train", 40, 32)
    car = data.labels == 13
    per_image = [data.targets[i][:, car[i]].mean(1) for i in range(len(data)) if car[i].sum() > 10]
    assert len(per_image) >= 5
    assert float(torch.stack(per_image).std(0).mean()) > 0.1


def test_labels_to_color_uses_the_palette_and_blacks_out_ignored_pixels():
    colour = labels_to_color(np.array([[0, 13], [IGNORE_LABEL, 10]], dtype=np.uint8))
    assert np.array_equal(colour[0, 1], CITYSCAPES_PALETTE[13]) and np.array_equal(colour[1, 0], [0, 0, 0])


def test_aligned_folder_round_trip(tmp_path):
    data = ProceduralScenes("val", 3, 32)
    write_aligned_folder(data, tmp_path, "val")
    folder = AlignedFolder(tmp_path, "val", direction="BtoA", size=32)
    assert len(folder) == 3
    for i in range(3):
        item = folder[i]
        assert item["name"] == data[i]["name"]
        assert np.array_equal(to_image(item["input"]), to_image(data[i]["input"]))
        assert np.array_equal(to_image(item["target"]), to_image(data[i]["target"]))
        assert torch.equal(item["label"], data[i]["label"])
    swapped = AlignedFolder(tmp_path, "val", direction="AtoB", size=32)[0]
    assert np.array_equal(to_image(swapped["target"]), to_image(data[0]["input"]))


def test_aligned_folder_jitter_is_reproducible_and_keeps_labels_aligned(tmp_path):
    data = ProceduralScenes("val", 2, 32)
    write_aligned_folder(data, tmp_path, "val")
    a = AlignedFolder(tmp_path, "val", size=32, jitter=True, load_size=40, seed=3)
    b = AlignedFolder(tmp_path, "val", size=32, jitter=True, load_size=40, seed=3)
    first, again = a[1], b[1]
    assert torch.equal(first["input"], again["input"]) and torch.equal(first["label"], again["label"])
    # the label map and the colour input come through the same crop and flip
    assert np.array_equal(to_image(first["input"]), labels_to_color(first["label"].numpy().astype(np.uint8)))
    a.set_epoch(1)  # a new epoch draws new crops (both items repeating has odds ~1/162**2; seeded anyway)
    assert any(not torch.equal(a[i]["input"], b[i]["input"]) for i in range(2))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AlignedFolder(tmp_path, "train")
    with pytest.raises(ValueError, match="direction must be"):
        AlignedFolder(tmp_path, "val", direction="LtoR")


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_prepare_cityscapes_keeps_names_and_maps_label_ids(tmp_path):
    base = "aachen_000000_000019"
    ids = np.array([[7, 26], [0, 23]], dtype=np.uint8).repeat(8, 0).repeat(8, 1)  # road, car / unlabeled, sky
    _write_png(tmp_path / "leftImg8bit/val/aachen" / f"{base}_leftImg8bit.png", np.full((16, 16, 3), 90, np.uint8))
    _write_png(tmp_path / "gtFine/val/aachen" / f"{base}_gtFine_labelIds.png", ids)
    _write_png(tmp_path / "gtFine/val/aachen" / f"{base}_gtFine_color.png", np.zeros((16, 16, 3), np.uint8))
    counts = prepare_cityscapes(tmp_path / "gtFine", tmp_path / "leftImg8bit", tmp_path / "out", size=8, splits=("val",))
    assert counts == {"val": 1}
    ab = np.asarray(Image.open(tmp_path / "out/val" / f"{base}.png"))
    assert ab.shape == (8, 16, 3)
    train_ids = np.asarray(Image.open(tmp_path / "out/val_labels" / f"{base}.png"))
    assert train_ids[0, 0] == 0 and train_ids[0, 7] == 13 and train_ids[7, 0] == IGNORE_LABEL and train_ids[7, 7] == 10
    item = AlignedFolder(tmp_path / "out", "val", direction="BtoA", size=8)[0]
    assert item["name"] == base and item["label"][0, 7] == 13
    with pytest.raises(FileNotFoundError, match="leftImg8bit split folder"):
        prepare_cityscapes(tmp_path / "gtFine", tmp_path / "leftImg8bit", tmp_path / "out", splits=("train",))


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of"):
        ProceduralScenes("test", 2, 32)
    with pytest.raises(ValueError, match="num_images must be an int >= 1"):
        ProceduralScenes("train", 0, 32)
    with pytest.raises(ValueError, match="size must be an int >= 8"):
        render_scene(0, 0, 4)
