"""pix2pix training: optimizer wiring, schedule, a smoke run, exact resume, run-folder rules."""
import dataclasses
import json

import pytest
import torch

import tralgo
from tralgo.experiments.io import read_jsonl
from tralgo.gan.train import (GANConfig, RunExistsError, batch_at, build_datasets, build_networks, build_optimizer, generate,
                              inner_decay_equivalent_lr, pix2pix_lr_factor, train, train_step, uses_tr)

TINY = dict(size=32, ngf=4, ndf=4, n_layers=1, train_images=8, val_images=4, log_every=5, checkpoint_every=10,
            sample_every=10, threads=1)


def tiny(**changes) -> GANConfig:
    return GANConfig(**{**TINY, "iters": 10, "decay_iters": 10, **changes})


def _optimizers(config):
    G, D = build_networks(config)
    tr = uses_tr(config)
    return G, D, build_optimizer(G.parameters(), config, tr["G"]), build_optimizer(D.parameters(), config, tr["D"])


def test_g_and_d_have_independent_tradam_state_over_more_than_s_steps():
    config = tiny(inner_steps=4)
    G, D, opt_G, opt_D = _optimizers(config)
    assert isinstance(opt_G, tralgo.TRAdam) and isinstance(opt_D, tralgo.TRAdam) and opt_G is not opt_D
    assert not {id(p) for p in G.parameters()} & {id(p) for g in opt_D.param_groups for p in g["params"]}
    train_set, _ = build_datasets(config)
    snapshots = {}
    for it in range(10):  # 2.5 inner loops of S = 4: anchors refresh at steps 0, 4, 8
        if it == 8:
            snapshots = {"G": [p.detach().clone() for p in G.parameters()],
                         "D": [p.detach().clone() for p in D.parameters()]}
        batch = batch_at(train_set, config, it)
        train_step(G, D, opt_G, opt_D, batch["input"], batch["target"], config.lambda_l1)
    for name, net, opt in (("G", G, opt_G), ("D", D, opt_D)):
        assert opt.param_groups[0]["inner_step"] == 10 % 4
        for param, before in zip(net.parameters(), snapshots[name]):
            anchor = opt.state[param]["tralgo_anchor"]
            assert torch.equal(anchor, before)  # re-anchored at step 8, at that step's weights
            assert not torch.equal(anchor, param)  # and the weights have moved on since
        assert int(opt.state[next(net.parameters())]["step"]) == 10  # Adam's own count runs on


@pytest.mark.parametrize("tr_on,expect", [("G", (True, False)), ("D", (False, True)), ("both", (True, True))])
def test_tr_switch(tr_on, expect):
    _, _, opt_G, opt_D = _optimizers(tiny(tr_on=tr_on))
    assert (isinstance(opt_G, tralgo.TRAdam), isinstance(opt_D, tralgo.TRAdam)) == expect
    _, _, opt_G, opt_D = _optimizers(tiny(optimizer="adam", tr_on=tr_on))
    assert type(opt_G) is torch.optim.Adam and type(opt_D) is torch.optim.Adam


def test_lambda_scalings_reach_the_optimizer():
    for scaling in ("inverse_lr", "constant"):
        _, _, opt_G, _ = _optimizers(tiny(lam=0.2, lam_scaling=scaling))
        assert opt_G.param_groups[0]["lam_scaling"] == scaling and opt_G.param_groups[0]["lam"] == 0.2


def test_pix2pix_schedule_and_equivalent_lr():
    factor = pix2pix_lr_factor(tiny(iters=3, decay_iters=4))
    assert [factor(i) for i in range(7)] == pytest.approx([1, 1, 1, 0.8, 0.6, 0.4, 0.2])
    assert inner_decay_equivalent_lr(2e-4, 10) == pytest.approx(2e-4 * 2.9289683 / 10)
    assert inner_decay_equivalent_lr(2e-4, 1) == 2e-4


@pytest.mark.filterwarnings("ignore:Detected call of")  # the schedule alone, without optimizer steps
def test_schedule_drives_the_tradam_wrapper():
    config = tiny(iters=2, decay_iters=2)
    G, D, opt_G, opt_D = _optimizers(config)
    sched = torch.optim.lr_scheduler.LambdaLR(opt_G, pix2pix_lr_factor(config))
    lrs = []
    for _ in range(4):
        lrs.append(opt_G.param_groups[0]["lr"])
        sched.step()
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-4 * 2 / 3, 2e-4 / 3])
    assert opt_G.optimizer.param_groups[0]["lr"] == opt_G.param_groups[0]["lr"]  # shared with the base Adam


def test_smoke_run_l1_falls(tmp_path):
    torch.set_num_threads(1)
    config = tiny(train_images=4, iters=60, decay_iters=0, lr=1e-3, log_every=10, checkpoint_every=60,
                  sample_every=60, dropout=False)
    result = train(config, tmp_path / "run", log=lambda _: None)
    assert result["status"] == "completed"
    l1 = [r["loss_G_L1"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert len(l1) == 6 and l1[-1] < 0.85 * l1[0] and max(l1[3:]) < min(l1[:2])
    assert (tmp_path / "run" / "samples" / "iter_0000060.png").exists()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 1e-3


def test_resume_after_a_kill_gives_the_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    config = tiny(iters=12, decay_iters=8, log_every=3, checkpoint_every=10)  # logs and checkpoints interleave
    full = tmp_path / "full"
    train(config, full, log=lambda _: None)
    cut = tmp_path / "cut"
    assert train(config, cut, log=lambda _: None, stop_after=10)["status"] == "stopped"
    # a line logged after the checkpoint, as a kill between log and checkpoint would leave behind
    from tralgo.experiments.io import append_jsonl

    append_jsonl(cut / "metrics.jsonl", {"kind": "train", "iter": 12, "loss_D": -1.0})
    assert train(config, cut, resume=True, log=lambda _: None)["status"] == "completed"
    a, b = torch.load(full / "checkpoint.pt", weights_only=False), torch.load(cut / "checkpoint.pt", weights_only=False)
    for key in ("G", "D"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    for key in ("opt_G", "opt_D"):
        for pid, state in a[key]["state"].items():
            for name, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(b[key]["state"][pid][name])), (key, name)
        assert a[key]["param_groups"][0]["inner_step"] == b[key]["param_groups"][0]["inner_step"]
    strip = lambda path: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in read_jsonl(path)]  # noqa: E731
    assert strip(full / "metrics.jsonl") == strip(cut / "metrics.jsonl")


def test_run_folder_rules(tmp_path):
    config = tiny(iters=1, decay_iters=0)
    train(config, tmp_path, log=lambda _: None)
    with pytest.raises(RunExistsError, match="pass --resume"):
        train(config, tmp_path, log=lambda _: None)
    with pytest.raises(RunExistsError, match="differs in: lr"):
        train(dataclasses.replace(config, lr=1e-3), tmp_path, resume=True, log=lambda _: None)
    # device/threads may change on resume; a finished run just returns its result
    assert train(dataclasses.replace(config, threads=2), tmp_path, resume=True, log=lambda _: None)["status"] == "completed"


@pytest.mark.parametrize("changes,message", [
    ({"optimizer": "sgd"}, "optimizer must be one of"),
    ({"tr_on": "both_nets"}, "tr_on must be one of"),
    ({"lam_scaling": "linear"}, "lam_scaling must be one of"),
    ({"size": 48}, "num_downs >= 5 and size divisible"),
    ({"lr": -1.0}, "lr must be a finite number >= 0"),
    ({"beta1": 1.0}, r"beta1 must be in \[0, 1\)"),
    ({"batch_size": 0}, "batch_size must be an int >= 1"),
])
def test_config_errors_name_the_parameter(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(**changes)


def test_test_mode_generation_is_seeded_and_leaves_the_model_untouched():
    config = tiny(size=64)  # 6 levels: one dropout level
    G, _ = build_networks(config)
    _, val = build_datasets(config)
    inputs = torch.stack([val[i]["input"] for i in range(2)])
    buffers = {k: v.clone() for k, v in G.state_dict().items()}
    rng = torch.get_rng_state()
    a, b, c = generate(G, inputs, seed=5), generate(G, inputs, seed=5), generate(G, inputs, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)  # dropout noise comes from the seed
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in buffers.items())  # BN running stats untouched
    assert torch.equal(rng, torch.get_rng_state())  # the training RNG stream is not consumed


def test_empty_run_folder_is_refused_and_the_current_folder_untouched(tmp_path, monkeypatch, capsys):
    from tralgo.gan.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--run", "", "--size", "32", "--ngf", "4", "--ndf", "4", "--iters", "1",
                 "--decay-iters", "0"]) == 2
    assert "--run must name a run folder, got an empty path" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_folder_holding_other_files_is_not_a_run_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(RunExistsError, match="is not a GAN run folder .*notes.txt"):
        train(tiny(iters=1, decay_iters=0), tmp_path, log=lambda _: None)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_one_training_process_per_run_folder(tmp_path):
    from tralgo.experiments.io import FolderInUseError, FolderLock

    config = tiny(iters=1, decay_iters=0)
    (tmp_path / "link").symlink_to(tmp_path / "run", target_is_directory=True)
    with FolderLock(tmp_path / "run", "GAN training process"):  # as a live trainer holds it
        with pytest.raises(FolderInUseError, match="link is in use by another GAN training process"):
            train(config, tmp_path / "link", resume=True, log=lambda _: None)
    assert train(config, tmp_path / "link", resume=True, log=lambda _: None)["status"] == "completed"


def test_temporary_files_of_a_killed_writer_are_removed_on_resume(tmp_path):
    config = tiny(iters=12, decay_iters=8, checkpoint_every=10)
    assert train(config, tmp_path, log=lambda _: None, stop_after=10)["status"] == "stopped"
    stale = tmp_path / ".checkpoint.pt.k9x2m1.tmp"  # what kill -9 inside atomic_torch_save leaves
    stale.write_bytes(b"half a checkpoint")
    said = []
    assert train(config, tmp_path, resume=True, log=said.append)["status"] == "completed"
    assert not stale.exists() and any("removed 1 temporary file" in line for line in said)
