"""`tralgo train` under torchrun: 2 CPU processes (gloo) stay identical, match one process with the
same global batch, and only rank 0 writes the run folder."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

from tralgo.experiments.io import read_jsonl
from tralgo.experiments.trainer import RunOptions, TrainConfig, run_training, synthetic_dataset

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

CONFIG = dict(model="cnn", width=0.25, optimizer="trsgd", lr=0.05, epochs=2, inner_steps=3, eval_batch_size=64,
              seed=0)

# Each rank trains through the real entry point, then records its parameters for the test.
DRIVER = textwrap.dedent("""
    import json, os, sys
    import torch
    import tralgo.experiments.trainer as trainer_module

    made = []

    class RecordingTrainer(trainer_module.Trainer):  # keeps a handle on this rank's live model
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    trainer_module.Trainer = RecordingTrainer
    out, config, data = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    code = trainer_module.run_training(
        trainer_module.TrainConfig(**config), trainer_module.RunOptions(out=out, device="cpu", progress=False),
        dataset=trainer_module.synthetic_dataset(**data), log=lambda line: None)
    torch.save(made[0].model.state_dict(), os.path.join(out, f"rank{os.environ['RANK']}.pt"))
    trainer_module.shutdown_distributed()
    sys.exit(code)
""")


DATA = dict(n_train=96, n_test=40, seed=3)


def torchrun_two_ranks(tmp_path, out, config: dict, data: dict) -> tuple[dict, dict]:
    """Train with 2 gloo processes; return each rank's final model state."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(driver), str(out),
         json.dumps(config), json.dumps(data)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out / "rank0.pt", weights_only=True), torch.load(out / "rank1.pt", weights_only=True)


@pytest.mark.slow  # torchrun with two processes: ~6 s idle, 15 s on the shared machine
def test_two_cpu_processes_stay_identical_and_match_one_process(tmp_path):
    out = tmp_path / "ddp"
    # 2 ranks x 4 = the global batch of 8
    rank0, rank1 = torchrun_two_ranks(tmp_path, out, {**CONFIG, "batch_size": 4}, DATA)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name  # replicas bit-identical
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    ddp_metrics = list(read_jsonl(out / "metrics.jsonl"))
    assert [r["epoch"] for r in ddp_metrics] == [1, 2] and ddp_metrics[-1]["step"] == 24

    # One process with batch 8 sees the same global batches (rank r takes every other index of
    # each slice of 8 of the shared permutation), so the runs agree up to reduction order.
    single = tmp_path / "single"
    run_training(TrainConfig(**{**CONFIG, "batch_size": 8}), RunOptions(out=str(single), device="cpu", progress=False),
                 dataset=synthetic_dataset(**DATA), log=lambda line: None)
    single_weights = torch.load(single / "checkpoint.pt", weights_only=True)["model"]
    for name in rank0:
        torch.testing.assert_close(rank0[name], single_weights[name], rtol=1e-4, atol=1e-5)
    for ddp_record, record in zip(ddp_metrics, read_jsonl(single / "metrics.jsonl")):
        assert ddp_record["train_loss"] == pytest.approx(record["train_loss"], rel=1e-4)
        assert ddp_record["test_acc"] == pytest.approx(record["test_acc"], abs=1 / 40)


@pytest.mark.slow  # torchrun with two processes: ~6 s idle, 15 s on the shared machine
def test_batch_norm_buffers_and_augmentation_stay_consistent_across_ranks(tmp_path):
    # Each rank augments its own images and updates its own BN statistics; the trainer makes
    # rank 0's statistics everyone's before evaluating, so the replicas end identical.
    out = tmp_path / "ddp"
    config = {**CONFIG, "dataset": "cifar10", "model": "resnet18", "width": 0.125, "epochs": 1, "batch_size": 4}
    data = dict(n_train=32, n_test=16, channels=3, size=32, name="cifar10", seed=2)
    rank0, rank1 = torchrun_two_ranks(tmp_path, out, config, data)
    assert any("running_mean" in name for name in rank0)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["world_size"] == 2 and len(saved["rng"]) == 2  # every rank's RNG states, for resuming
    for name in rank0:
        assert torch.equal(saved["model"][name], rank0[name]), name
