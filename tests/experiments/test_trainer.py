"""The trainer: exact resume, reproducibility, divergence, run-folder rules, accumulation, schedules."""
import dataclasses
import json

import pytest
import torch

from tralgo.experiments.io import read_jsonl
from tralgo.experiments.trainer import (
    EXIT_DIVERGED, RunError, RunOptions, TrainConfig, Trainer, run_training, synthetic_dataset,
)

DATA = synthetic_dataset(n_train=96, n_test=40, seed=3)
TIMING_KEYS = ("wall_s", "steps_per_s")


def tiny(**changes) -> TrainConfig:
    settings = dict(dataset="fashion-mnist", model="cnn", width=0.25, optimizer="trsgd", lr=0.05, epochs=3,
                    batch_size=8, inner_steps=3, eval_batch_size=64, seed=0)
    settings.update(changes)
    return TrainConfig(**settings)


def run(config, out, *, log=lambda line: None, **options) -> int:
    return run_training(config, RunOptions(out=str(out), device="cpu", progress=False, **options), dataset=DATA, log=log)


def weights(out) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


def metrics(out) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_jsonl(out / "metrics.jsonl")]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("optimizer", ["trsgd", "tradam", "lookahead-adam"])
def test_resume_after_a_stop_is_bit_identical_to_a_straight_run(tmp_path, optimizer):
    # inner_steps 3 and lookahead_k 5 do not divide the 12 steps per epoch, and the inner loop
    # is not restarted: anchors, counters and slow weights are mid-cycle at the checkpoint.
    config = tiny(optimizer=optimizer, lr=0.01 if "adam" in optimizer else 0.05, restart_inner_each_epoch=False,
                  lookahead_k=5)
    assert run(config, tmp_path / "straight") == 0
    assert run(config, tmp_path / "stopped", max_epochs=1) == 0
    assert not (tmp_path / "stopped" / "result.json").exists()
    assert run(config, tmp_path / "stopped", resume=True) == 0
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "stopped"))
    assert metrics(tmp_path / "straight") == metrics(tmp_path / "stopped")
    result = json.loads((tmp_path / "stopped" / "result.json").read_text())
    assert result["status"] == "finished" and result["epochs_completed"] == 3
    wall = [r["wall_s"] for r in read_jsonl(tmp_path / "stopped" / "metrics.jsonl")]
    assert wall == sorted(wall) and result["wall_s"] == wall[-1]  # cumulative across the resume


def test_resume_is_exact_with_augmentation_and_batch_norm(tmp_path):
    # CIFAR-shaped data: crop+flip draw from the augmentation generator, ResNet18 has BN buffers.
    cifar = synthetic_dataset(n_train=48, n_test=16, channels=3, size=32, name="cifar10", seed=1)
    config = tiny(dataset="cifar10", model="resnet18", width=0.125, epochs=2, optimizer="trsgd", lr=0.02)

    def train(out, **options):
        return run_training(config, RunOptions(out=str(out), device="cpu", progress=False, **options),
                            dataset=cifar, log=lambda line: None)

    train(tmp_path / "straight")
    train(tmp_path / "stopped", max_epochs=1)
    train(tmp_path / "stopped", resume=True)
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "stopped"))
    no_augment = tmp_path / "no-augment"
    run_training(dataclasses.replace(config, augment=False), RunOptions(out=str(no_augment), device="cpu", progress=False),
                 dataset=cifar, log=lambda line: None)
    assert metrics(no_augment) != metrics(tmp_path / "straight")  # the augmentation really ran


def test_crash_between_metrics_line_and_checkpoint_drops_the_orphan_line(tmp_path):
    config = tiny()
    run(config, tmp_path / "straight")
    out = tmp_path / "crashed"
    run(config, out, max_epochs=1)
    # The crash: epoch 2's metrics line was appended, its checkpoint never written; plus a torn line.
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "train_loss": 9.0}) + "\n" + '{"epoch": 3, "tra')
    assert run(config, out, resume=True) == 0
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3]
    assert metrics(out) == metrics(tmp_path / "straight")
    assert_same_weights(weights(out), weights(tmp_path / "straight"))


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    config = tiny(epochs=1)
    run(config, tmp_path / "a")
    run(config, tmp_path / "b")
    run(tiny(epochs=1, seed=1), tmp_path / "c")
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert metrics(tmp_path / "a") != metrics(tmp_path / "c")


def test_metrics_records_follow_the_contract(tmp_path):
    out = tmp_path / "run"
    assert run(tiny(epochs=2, val_split=16, subset=80), out) == 0
    records = list(read_jsonl(out / "metrics.jsonl"))
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc", "lr", "wall_s",
                    "steps_per_s", "step"):
            assert key in r, key
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["test_acc"] <= 1 and 0 <= r["val_acc"] <= 1
    assert [r["step"] for r in records] == [8, 16]  # 80 - 16 held out = 64 images = 8 steps of 8
    config = json.loads((out / "config.json").read_text())
    for key in ("seed", "versions", "git_commit", "hostname", "device", "world_size", "lr", "lam", "optimizer"):
        assert key in config, key
    assert config["lr"] == 0.05 and config["world_size"] == 1 and config["device"] == "cpu"


def test_validation_split_is_a_seeded_hold_out_of_the_subset():
    trainer = Trainer(tiny(subset=80, val_split=16), DATA)
    again = Trainer(tiny(subset=80, val_split=16), DATA)
    assert len(trainer.data.val_labels) == 16 and len(trainer.data.train_labels) == 64
    assert torch.equal(trainer.data.val_images, again.data.val_images)
    # Held-out and kept images partition the first 80 training images.
    together = torch.cat([trainer.data.train_images, trainer.data.val_images]).flatten(1)
    assert sorted(map(bytes, together.numpy())) == sorted(map(bytes, DATA.train_images[:80].flatten(1).numpy()))


def test_divergence_stops_at_once_with_status_and_exit_code(tmp_path):
    out = tmp_path / "run"
    code = run(tiny(optimizer="sgd", lr=1e12, momentum=0.0), out)
    assert code == EXIT_DIVERGED
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "diverged" and result["epochs_completed"] == 0
    lines = list(read_jsonl(out / "metrics.jsonl"))
    assert len(lines) == 1 and lines[0]["diverged"] is True and lines[0]["step"] < 12  # stopped mid-epoch
    assert run(tiny(optimizer="sgd", lr=1e12, momentum=0.0), out, resume=True) == EXIT_DIVERGED


def test_finished_run_refuses_a_restart_accepts_resume_and_overwrite(tmp_path):
    out = tmp_path / "run"
    config = tiny(epochs=1)
    run(config, out)
    with pytest.raises(RunError, match="already finished.*--resume.*--overwrite"):
        run(config, out)
    said = []
    assert run(config, out, resume=True, log=said.append) == 0
    assert "already finished" in said[0]
    assert run(config, out, overwrite=True) == 0
    assert len(metrics(out)) == 1


def test_a_folder_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "run"
    run(tiny(epochs=2), out, max_epochs=1)
    with pytest.raises(RunError, match="different settings.*lr: 0.05 in the folder, 0.1 now"):
        run(tiny(epochs=2, lr=0.1), out, resume=True)
    (out / "config.json").unlink()  # the checkpoint still knows its settings
    with pytest.raises(RunError, match="checkpoint.pt holds a run with different settings.*seed"):
        run(tiny(epochs=2, seed=4), out, resume=True)


def test_accumulation_equals_one_big_batch():
    # Plain SGD, no augmentation: 2 micro-batches of 4 must give the gradient of the mean over 8.
    big = Trainer(tiny(optimizer="sgd", momentum=0.0, weight_decay=0.0, batch_size=8), DATA)
    small = Trainer(tiny(optimizer="sgd", momentum=0.0, weight_decay=0.0, batch_size=4, accumulate=2), DATA)
    big.train_steps(3)
    small.train_steps(3)
    assert small.step == big.step == 3
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_step_schedule_and_restart_of_the_inner_loop(tmp_path):
    out = tmp_path / "run"
    run(tiny(epochs=4, lr=0.04), out)
    assert [r["lr"] for r in metrics(out)] == pytest.approx([0.04, 0.04, 0.004, 0.0004])
    trainer = Trainer(tiny(inner_steps=5, restart_inner_each_epoch=True), DATA)
    trainer.train_epoch()  # 12 steps: the counter ends at 2 ...
    assert trainer.optimizer.param_groups[0]["inner_step"] == 2
    trainer.train_epoch()  # ... and restarts at 0 with the new epoch: 12 more steps end at 2 again
    assert trainer.optimizer.param_groups[0]["inner_step"] == 2


def test_train_steps_continues_through_epochs_and_learns():
    trainer = Trainer(tiny(optimizer="adam", lr=3e-3), DATA)
    before = trainer.evaluate(trainer.data.test_images, trainer.data.test_labels)[0]
    trainer.train_steps(40)  # more than the 12 steps of one epoch
    after = trainer.evaluate(trainer.data.test_images, trainer.data.test_labels)[0]
    assert trainer.step == 40 and after < 0.5 * before


@pytest.mark.parametrize("change, message", [
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(lam=-1.0), "lam must be a finite number >= 0"),
    (dict(inner_steps=0), "inner_steps must be an integer >= 1"),
    (dict(optimizer="rmsprop"), "optimizer must be one of"),
    (dict(schedule="linear"), "schedule must be one of"),
    (dict(val_split=-1), "val_split must be an integer >= 0"),
])
def test_bad_settings_name_the_setting(change, message):
    with pytest.raises(ValueError, match=message):
        tiny(**change).resolved()


def test_subset_and_val_split_larger_than_the_data_are_refused():
    with pytest.raises(ValueError, match="subset must be at most"):
        Trainer(tiny(subset=1000), DATA)
    with pytest.raises(ValueError, match="val_split must be smaller"):
        Trainer(tiny(subset=10, val_split=10), DATA)


def test_progress_bar_draws_in_place_and_throttles():
    import io

    from tralgo.experiments.progress import ProgressBar, stream_is_tty

    stream = io.StringIO()
    bar = ProgressBar(10, "epoch 1/2", stream=stream, width=10, min_interval=3600)
    for done in range(1, 11):
        bar.update(done, loss=0.5)
    bar.close()
    drawn = stream.getvalue().split("\r")
    # The first update draws, the next eight are throttled, the last one (done == total) draws.
    assert [d for d in drawn if d.startswith("epoch")] == [drawn[1], drawn[2]]
    assert "[#.........] 1/10" in drawn[1] and "[##########] 10/10" in drawn[2] and "loss 0.5000" in drawn[2]
    assert not stream_is_tty(stream)


def test_damaged_run_files_are_named_with_the_way_out(tmp_path):
    out = tmp_path / "run"
    run(tiny(epochs=2), out, max_epochs=1)
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="checkpoint.pt is unreadable.*--overwrite"):
        run(tiny(epochs=2), out, resume=True)
    (out / "result.json").write_text("{torn")
    with pytest.raises(RunError, match="result.json is unreadable.*--overwrite"):
        run(tiny(epochs=2), out, resume=True)
    assert run(tiny(epochs=2), out, overwrite=True) == 0


# ------------------------------------------------------------------------------------------
# Run-folder safety: one trainer per folder, no empty or foreign --out, damaged files
# ------------------------------------------------------------------------------------------

import os
import signal
import subprocess
import sys
import textwrap
import time

from tralgo.experiments import trainer as trainer_module

# A real second process: trains the tiny config into argv[1]; prints "epoch" lines as it goes.
# With argv[2] == "hold", it sleeps after its first epoch, holding the folder.
_TRAIN_SCRIPT = textwrap.dedent("""
    import sys, time
    from tralgo.experiments.trainer import RunError, RunOptions, TrainConfig, run_training, synthetic_dataset

    def log(line):
        print(line, flush=True)
        if sys.argv[2] == "hold" and line.startswith("epoch"):
            time.sleep(120)

    config = TrainConfig(dataset="fashion-mnist", model="cnn", width=0.25, optimizer="trsgd", lr=0.05, epochs=3,
                         batch_size=8, inner_steps=3, eval_batch_size=64, seed=0)
    try:
        code = run_training(config, RunOptions(out=sys.argv[1], resume=True, device="cpu", progress=False),
                            dataset=synthetic_dataset(n_train=96, n_test=40, seed=3), log=log)
    except RunError as e:
        print(f"error: {e}", flush=True)
        code = 2
    sys.exit(code)
""")


def _trainer_process(out, mode: str, cwd) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _TRAIN_SCRIPT, str(out), mode], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # six tralgo processes
def test_a_second_trainer_on_the_same_folder_fails_at_once_under_any_spelling(tmp_path):
    (tmp_path / "link").symlink_to("out")  # dangling until the first trainer creates out/
    first = _trainer_process("out", "hold", cwd=tmp_path)
    try:
        assert first.stdout.readline().startswith("epoch 1/3")  # it holds the folder now
        for spelling in ("out", str(tmp_path / "out"), "link", "./out/"):
            started = time.monotonic()
            second = subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, spelling, "run"], cwd=tmp_path,
                                    capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stdout + second.stderr
            assert "is in use by another training process" in second.stdout
            assert f"pid {first.pid}" in second.stdout
            assert time.monotonic() - started < 60  # it fails at once instead of waiting
        assert len(metrics(tmp_path / "out")) == 1  # nobody else wrote into the run
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # kill -9 leaves no stuck lock: the next trainer resumes and finishes the run.
    third = subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, "link", "run"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "resuming after epoch 1/3" in third.stdout
    assert [r["epoch"] for r in metrics(tmp_path / "out")] == [1, 2, 3]


def test_empty_out_is_refused_and_the_current_folder_untouched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text('{"mine": 1}')
    for overwrite in (False, True):
        with pytest.raises(RunError, match="--out must name a run folder, got an empty path"):
            run(tiny(epochs=1), "", overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    assert (tmp_path / "config.json").read_text() == '{"mine": 1}'


def test_overwrite_refuses_a_folder_that_is_not_a_run_folder(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text('{"mine": 1}')
    (project / "result.json").write_text('{"status": "finished"}')
    (project / "notes.txt").write_text("keep me")
    with pytest.raises(RunError, match="project is not a run folder \\(it also holds notes.txt\\); --overwrite"):
        run(tiny(epochs=1), project, overwrite=True)
    assert sorted(p.name for p in project.iterdir()) == ["config.json", "notes.txt", "result.json"]
    # A run folder with the sweep's bookkeeping and tensorboard logs is one.
    out = tmp_path / "run"
    run(tiny(epochs=1), out)
    for name in ("train.log", "sweep.json", "sweep_status.json"):
        (out / name).write_text("{}")
    (out / "tensorboard").mkdir()
    assert run(tiny(epochs=1), out, overwrite=True) == 0


def test_the_sweeps_files_count_as_run_folder_entries():
    from tralgo.experiments import cluster, sweep

    names = {getattr(sweep, n) for n in ("SWEEP_FILE", "STATUS_FILE", "LOG_FILE", "PID_FILE") if hasattr(sweep, n)}
    assert names and names | {cluster.JOB_FILE} <= trainer_module.RUN_FOLDER_ENTRIES


def test_tensorboard_missing_fails_before_the_run_folder_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    with pytest.raises(RunError, match="--tensorboard needs the 'tensorboard' package"):
        run(tiny(epochs=1), tmp_path / "run", tensorboard=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_run_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        run(tiny(epochs=2), tmp_path / "run", max_epochs=1)
        run(tiny(epochs=2), tmp_path / "run", resume=True)
    finally:
        os.umask(previous)
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "result.json"):
        assert os.stat(tmp_path / "run" / name).st_mode & 0o777 == 0o666 & ~umask, name


def test_damaged_checkpoint_resumes_from_the_previous_one_exactly(tmp_path):
    config = tiny(epochs=3)
    run(config, tmp_path / "straight")
    out = tmp_path / "run"
    run(config, out, max_epochs=2)
    assert torch.load(out / "checkpoint.prev.pt", weights_only=True)["epoch"] == 1
    checkpoint = out / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])  # truncated
    said = []
    assert run(config, out, resume=True, log=said.append) == 0
    assert any("checkpoint.pt is unreadable" in line and "resuming from the previous checkpoint" in line
               and "(epoch 1)" in line for line in said), said
    assert f"{out}: resuming after epoch 1/3" in said
    assert_same_weights(weights(tmp_path / "straight"), weights(out))
    assert metrics(tmp_path / "straight") == metrics(out)
    assert not (out / "checkpoint.prev.pt").exists()  # a finished run keeps one checkpoint


def test_both_checkpoints_damaged_names_both_with_the_way_out(tmp_path):
    out = tmp_path / "run"
    run(tiny(epochs=3), out, max_epochs=2)
    (out / "checkpoint.pt").write_bytes(b"torn")
    (out / "checkpoint.prev.pt").write_bytes(b"torn too")
    with pytest.raises(RunError, match="checkpoint.pt is unreadable.*checkpoint.prev.pt is unreadable.*"
                                       "no earlier good checkpoint; use --overwrite"):
        run(tiny(epochs=3), out, resume=True)


_KILLED_MID_CHECKPOINT = textwrap.dedent("""
    import os, signal, sys
    from tralgo.experiments import io
    from tralgo.experiments.trainer import RunOptions, TrainConfig, run_training, synthetic_dataset

    replace = os.replace
    def replace_or_die(src, dst):
        # kill -9 once the second checkpoint's bytes are on disk, before the rename
        if str(dst).endswith("checkpoint.pt") and os.path.exists(dst):
            os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst)
    io.os.replace = replace_or_die
    config = TrainConfig(dataset="fashion-mnist", model="cnn", width=0.25, optimizer="trsgd", lr=0.05, epochs=3,
                         batch_size=8, inner_steps=3, eval_batch_size=64, seed=0)
    run_training(config, RunOptions(out=sys.argv[1], device="cpu", progress=False),
                 dataset=synthetic_dataset(n_train=96, n_test=40, seed=3), log=print)
""")


@pytest.mark.slow  # a training process killed mid-write
def test_kill_during_a_checkpoint_write_leaves_no_temporary_files_after_the_resume(tmp_path):
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_CHECKPOINT, str(out)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert any(name.startswith(".checkpoint.pt.") for name in leftovers), leftovers
    said = []
    assert run(tiny(epochs=3), out, resume=True, log=said.append) == 0
    assert any("removed" in line and "temporary file" in line for line in said), said
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    run(tiny(epochs=3), tmp_path / "straight")
    assert metrics(tmp_path / "straight") == metrics(out)


# Each rank trains through run_training with the given options, then saves its live model.
_DDP_DRIVER = textwrap.dedent("""
    import json, os, sys
    import torch
    import tralgo.experiments.trainer as trainer_module

    made = []

    class RecordingTrainer(trainer_module.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    trainer_module.Trainer = RecordingTrainer
    out, options = sys.argv[1], json.loads(sys.argv[2])
    config = trainer_module.TrainConfig(dataset="fashion-mnist", model="cnn", width=0.25, optimizer="trsgd", lr=0.05,
                                        epochs=3, batch_size=4, inner_steps=3, eval_batch_size=64, seed=0)
    code = trainer_module.run_training(config, trainer_module.RunOptions(out=out, device="cpu", progress=False, **options),
                                       dataset=trainer_module.synthetic_dataset(n_train=96, n_test=40, seed=3),
                                       log=lambda line: print(f"rank {os.environ['RANK']}: {line}", flush=True))
    torch.save(made[0].model.state_dict(), os.path.join(out, f"rank{os.environ['RANK']}.pt"))
    trainer_module.shutdown_distributed()
    sys.exit(code)
""")


def _torchrun(tmp_path, out, **options) -> str:
    driver = tmp_path / "ddp_driver.py"
    driver.write_text(_DDP_DRIVER)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(driver), str(out), json.dumps(options)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow  # three torchrun jobs of two processes
def test_distributed_resume_from_the_previous_checkpoint_when_the_last_is_damaged(tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("needs gloo")
    _torchrun(tmp_path, tmp_path / "straight")
    out = tmp_path / "run"
    _torchrun(tmp_path, out, max_epochs=2)
    (out / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes()[:1000])
    said = _torchrun(tmp_path, out, resume=True)
    assert "rank 0: " in said and "resuming from the previous checkpoint" in said and "(epoch 1)" in said, said
    assert "rank 1: " not in said  # only rank 0 speaks
    straight = torch.load(tmp_path / "straight" / "rank0.pt", weights_only=True)
    for rank in (0, 1):
        assert_same_weights(straight, torch.load(out / f"rank{rank}.pt", weights_only=True))
    assert metrics(tmp_path / "straight") == metrics(out)
