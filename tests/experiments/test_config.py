"""One source of truth for run settings: TrainConfig/RunOptions drive the train CLI, the spec's
keys and types, a run's identity; eval_every evaluates on a schedule without changing training."""
import dataclasses
import json

import pytest
import torch

from tralgo.experiments import config as config_lib
from tralgo.experiments.config import RunOptions, TrainConfig
from tralgo.experiments.io import read_jsonl
from tralgo.experiments.trainer import run_training, synthetic_dataset
from tralgo.experiments.train_cli import build_parser, config_from_args

DATA = synthetic_dataset(n_train=64, n_test=24, seed=4)


def test_every_field_is_a_cli_option_with_the_dataclass_default():
    parser = build_parser()
    args = parser.parse_args(["--out", "x"])
    config, options = config_from_args(args)
    assert config == TrainConfig()
    assert options == RunOptions(out="x")
    dests = {a.dest for a in parser._actions}
    assert set(config_lib.TRAIN_FIELDS) | set(config_lib.RUN_FIELDS) <= dests
    # Booleans take both forms, so a sweep can pass either value explicitly.
    args = parser.parse_args(["--out", "x", "--no-augment", "--no-inner-lr-decay", "--eval-every", "5",
                              "--lookahead-alpha", "0.3", "--eval-batch-size", "10", "--stop-after", "2"])
    config, options = config_from_args(args)
    assert (config.augment, config.inner_lr_decay, config.eval_every, config.lookahead_alpha,
            config.eval_batch_size, options.max_epochs) == (False, False, 5, 0.3, 10, 2)


def test_data_dir_is_a_run_option_not_part_of_identity():
    assert "data_dir" in config_lib.RUN_FIELDS and "data_dir" not in config_lib.TRAIN_FIELDS
    assert "data_dir" in config_lib.SPEC_RUN_FIELDS


@pytest.mark.parametrize("name, value, message", [
    ("inner_lr_decay", "yes", "inner_lr_decay must be true or false, got 'yes'"),
    ("epochs", 2.5, "epochs must be an integer, got 2.5"),
    ("epochs", True, "epochs must be an integer, got True"),
    ("lr", "0.1", "lr must be a number, got '0.1'"),
    ("optimizer", "sdg", "optimizer must be one of sgd, trsgd"),
    ("subset", [1], "subset must be an integer, got [1]"),
])
def test_check_value_uses_the_annotations_and_choices(name, value, message):
    assert message in config_lib.check_value(config_lib.TRAIN_FIELDS[name], value)


def test_check_value_accepts_what_the_dataclass_accepts():
    fields = config_lib.TRAIN_FIELDS
    assert config_lib.check_value(fields["lr"], 1) is None  # an int where a float is wanted
    assert config_lib.check_value(fields["lr"], None) is None  # optional
    assert config_lib.check_value(fields["augment"], False) is None
    assert config_lib.check_value(config_lib.RUN_FIELDS["device"], "cpu") is None
    assert "device must be one of" in config_lib.check_value(config_lib.RUN_FIELDS["device"], "tpu")


def test_differences_name_each_changed_setting_and_default_missing_ones():
    config = TrainConfig(lr=0.05).resolved()
    saved = dataclasses.asdict(config)
    assert config_lib.differences(saved, config) == []
    assert config_lib.differences({**saved, "lr": 0.01}, config) == ["lr: 0.01 in the folder, 0.05 now"]
    # A record from before eval_every existed ran with its default (every epoch).
    older = {k: v for k, v in saved.items() if k != "eval_every"}
    assert config_lib.differences(older, config) == []
    assert config_lib.differences(older, dataclasses.replace(config, eval_every=2)) == [
        "eval_every: 1 in the folder, 2 now"]
    assert config_lib.differences({**saved, "epochs": 3.0}, dataclasses.replace(config, epochs=3)) == []


def test_validate_rejects_eval_every_below_one():
    with pytest.raises(ValueError, match="eval_every must be an integer >= 1, got 0"):
        TrainConfig(eval_every=0).resolved()


def _train(out, **changes):
    settings = dict(model="cnn", width=0.25, optimizer="trsgd", lr=0.05, epochs=5, batch_size=8,
                    inner_steps=3, eval_batch_size=64, seed=2)
    config = TrainConfig(**{**settings, **changes})
    return config, lambda **o: run_training(config, RunOptions(out=str(out), device="cpu", progress=False, **o),
                                            dataset=DATA, log=lambda _: None)


def _records(out):
    return [{k: v for k, v in r.items() if k not in ("wall_s", "steps_per_s")} for r in read_jsonl(out / "metrics.jsonl")]


def test_eval_every_evaluates_on_schedule_and_at_the_end_without_changing_training(tmp_path):
    _, every = _train(tmp_path / "every")
    assert every() == 0
    _, sparse = _train(tmp_path / "sparse", eval_every=2, val_split=16)
    assert sparse() == 0
    records = _records(tmp_path / "sparse")
    evaluated = [r["epoch"] for r in records if "test_acc" in r]
    assert evaluated == [2, 4, 5]  # every 2nd epoch and always the last
    assert all(("val_acc" in r) == ("test_acc" in r) for r in records)
    assert all({"train_loss", "train_acc", "lr", "step"} <= set(r) for r in records)
    # Evaluation draws no random numbers: skipping it leaves the training identical.
    _, dense = _train(tmp_path / "dense", val_split=16)
    assert dense() == 0
    for a, b in zip(records, _records(tmp_path / "dense")):
        assert (a["train_loss"], a["train_acc"]) == (b["train_loss"], b["train_acc"])
    final = json.loads((tmp_path / "sparse" / "result.json").read_text())["final"]
    assert final["epoch"] == 5 and "test_acc" in final


def test_resume_with_eval_every_is_exact(tmp_path):
    _, straight = _train(tmp_path / "straight", eval_every=3)
    assert straight() == 0
    _, stopped = _train(tmp_path / "stopped", eval_every=3)
    assert stopped(max_epochs=2) == 0
    assert stopped(resume=True) == 0
    assert _records(tmp_path / "straight") == _records(tmp_path / "stopped")
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_changed_eval_every(tmp_path):
    _, first = _train(tmp_path / "r", eval_every=2)
    assert first(max_epochs=1) == 0
    _, changed = _train(tmp_path / "r", eval_every=3)
    with pytest.raises(Exception, match="eval_every: 2 in the folder, 3 now"):
        changed(resume=True)


def test_validation_after_the_subset_is_disjoint_and_keeps_every_training_image():
    from tralgo.experiments.trainer import split_dataset

    data = synthetic_dataset(n_train=50, n_test=8, seed=6)
    split = split_dataset(data, 30, 10, seed=3, val_from="after_subset")
    assert torch.equal(split.train_images, data.train_images[:30])  # all of the subset, in order
    assert torch.equal(split.val_images, data.train_images[30:40])
    assert torch.equal(split.val_labels, data.train_labels[30:40])
    held_out = split_dataset(data, 30, 10, seed=3)  # the default: held out of the subset
    assert len(held_out.train_images) == 20
    with pytest.raises(ValueError, match="subset \\+ val_split <= the training set size 50"):
        split_dataset(data, 45, 10, seed=3, val_from="after_subset")
    with pytest.raises(ValueError, match="val_from 'after_subset' needs a subset"):
        TrainConfig(val_split=10, val_from="after_subset").resolved()
    with pytest.raises(ValueError, match="val_from must be one of subset, after_subset"):
        TrainConfig(val_from="test").resolved()


def test_a_run_validates_on_the_images_after_its_subset(tmp_path):
    _, run = _train(tmp_path / "r", epochs=1, subset=40, val_split=16, val_from="after_subset")
    assert run() == 0
    (record,) = _records(tmp_path / "r")
    assert record["step"] == 5 and "val_acc" in record  # 40 training images / batch 8
