"""Checkpoints that do not fit are refused at ``load_state_dict``; base-only checkpoints resume
with the right ``initial_lr`` (issue 9, item 6, optimizer-library parts)."""
import copy

import pytest
import torch

import tralgo
from tralgo._trajectory import INITIAL_LR_KEY, proximal_coefficient

from _helpers import batches, flat, make_model, train

BUILDERS = {
    "SGD": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "Adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
    "TRSGD": lambda ps: tralgo.TRSGD(ps, lr=0.1, momentum=0.9, lam=0.5, inner_steps=3),
    "TRAdam": lambda ps: tralgo.TRAdam(ps, lr=0.01, lam=0.5, inner_steps=3),
    "TRAdamW": lambda ps: tralgo.TRAdamW(ps, lr=0.01, lam=0.5, inner_steps=3),
}


@pytest.mark.parametrize("saved,loader,missing", [
    ("Adam", "TRSGD", r"\['momentum', 'dampening'\]"),
    ("TRAdam", "TRSGD", r"\['momentum', 'dampening'\]"),
    ("SGD", "TRAdam", r"\['betas', 'eps'\]"),
    ("TRSGD", "TRAdam", r"\['betas', 'eps'\]"),
    ("TRSGD", "TRAdamW", r"\['betas', 'eps'\]"),
])
def test_another_optimizers_checkpoint_is_refused_at_load(saved, loader, missing):
    # Before: the load "succeeded" and the next step raised KeyError ('momentum' or 'betas').
    model = make_model()
    source = BUILDERS[saved](model.parameters())
    train(model, source, batches(4))
    opt = BUILDERS[loader](model.parameters())
    train(model, opt, batches(2, seed=3))
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=rf"param group 0 of the state_dict lacks {missing}, which "
                                         rf"(SGD|Adam|AdamW) needs at every step .*saved from a different optimizer"):
        opt.load_state_dict(source.state_dict())
    # Refused before anything was loaded: the optimizer is intact and keeps training.
    assert opt.state_dict()["param_groups"] == before["param_groups"]
    train(model, opt, batches(2, seed=4))


def test_a_non_torch_state_dict_is_refused_clearly():
    model = make_model()
    opt = tralgo.TRSGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"torch\.optim state dict with 'state' and 'param_groups', got "
                                         r"\['base_optimizer', 'lookahead_state'\]"):
        opt.load_state_dict({"lookahead_state": {}, "base_optimizer": opt.state_dict()})


def test_checkpoints_without_torchs_newer_flags_still_load():
    # torch fills flags it added later (fused, differentiable, ...) on load: not a reason to refuse.
    model = make_model()
    for name, flags in (("SGD", ("nesterov", "maximize", "foreach", "differentiable", "fused")),
                        ("Adam", ("amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused",
                                  "decoupled_weight_decay"))):
        base = BUILDERS[name](model.parameters())
        train(model, base, batches(2))
        old = base.state_dict()
        for group in old["param_groups"]:
            for flag in flags:
                del group[flag]
        opt = BUILDERS["TR" + name](model.parameters())
        opt.load_state_dict(old)
        train(model, opt, batches(2, seed=3))


def test_plain_sgd_checkpoint_with_a_scheduler_gives_inverse_lr_its_initial_lr():
    # Before: tr_initial_lr was the decayed lr (0.001), so lam_k = lam instead of lam * 100.
    model = make_model()
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(base, milestones=[1, 2], gamma=0.1)
    for x, y in batches(3):
        base.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        base.step()
        scheduler.step()
    assert base.param_groups[0]["lr"] == pytest.approx(0.001)
    opt = tralgo.TRSGD(model.parameters(), lr=0.1, momentum=0.9, lam=0.5, inner_steps=3, lam_scaling="inverse_lr")
    opt.load_state_dict(base.state_dict())
    assert opt.param_groups[0][INITIAL_LR_KEY] == 0.1
    assert proximal_coefficient(opt.param_groups[0]) == pytest.approx(0.5 * 0.1 / 0.001)


def test_resuming_a_plain_sgd_run_equals_tr_started_from_the_same_point():
    # The loaded run steps as a TRSGD built on the same weights with initial_lr = the
    # scheduler's: the checkpoint's lr, momentum and initial_lr are all taken over.
    data = batches(6)
    model = make_model()
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(base, milestones=[2], gamma=0.1)
    train(model, base, data[:3], scheduler=scheduler)
    checkpoint = copy.deepcopy(base.state_dict())
    weights = copy.deepcopy(model.state_dict())

    def tr(m):
        return tralgo.TRSGD(m.parameters(), lr=0.1, momentum=0.9, lam=0.5, inner_steps=2, lam_scaling="inverse_lr")

    resumed_model = make_model(seed=7)
    resumed_model.load_state_dict(weights)
    resumed = tr(resumed_model)
    resumed.load_state_dict(copy.deepcopy(checkpoint))  # torch keeps the loaded tensors

    expected_model = make_model(seed=7)
    expected_model.load_state_dict(weights)
    expected = tr(expected_model)
    expected.load_state_dict(copy.deepcopy(checkpoint))
    expected.param_groups[0][INITIAL_LR_KEY] = 0.1  # set by hand: what the load must derive
    train(resumed_model, resumed, data[3:])
    train(expected_model, expected, data[3:])
    assert torch.equal(flat(resumed_model), flat(expected_model))
