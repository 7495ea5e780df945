"""The optimizer factory, Lookahead and the schedules of the harness."""
import copy

import pytest
import torch

import tralgo
from tralgo.experiments.optimizers import (
    OPTIMIZERS, Lookahead, OptimizerSettings, build_optimizer, build_scheduler, restart_inner_loop, step_milestones,
)


def quadratic_grad(w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return w - target


def test_lookahead_matches_the_algorithm_written_out():
    # f(w) = ||w - target||^2 / 2 with SGD (lr 0.3): k fast steps, slow += alpha (fast - slow), fast = slow.
    torch.manual_seed(0)
    target = torch.randn(5, dtype=torch.float64)
    w0 = torch.randn(5, dtype=torch.float64)
    param = torch.nn.Parameter(w0.clone())
    opt = Lookahead(torch.optim.SGD([param], lr=0.3), k=3, alpha=0.4)

    fast, slow = w0.clone(), w0.clone()
    for step in range(1, 11):
        param.grad = quadratic_grad(param.detach(), target)
        opt.step()
        fast = fast - 0.3 * quadratic_grad(fast, target)
        if step % 3 == 0:
            slow = slow + 0.4 * (fast - slow)
            fast = slow.clone()
        torch.testing.assert_close(param.detach(), fast, rtol=0, atol=1e-12)
    torch.testing.assert_close(opt.state[param]["lookahead_slow"], slow, rtol=0, atol=1e-12)


def test_lookahead_over_adam_initialises_lazily_and_resumes_mid_cycle_exactly():
    def make():
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        return model, Lookahead(torch.optim.Adam(model.parameters(), lr=1e-2), k=4, alpha=0.5)

    data = [(torch.randn(6, 4, generator=torch.Generator().manual_seed(i)),) for i in range(14)]

    def train(model, opt, batches):
        for (x,) in batches:
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()

    model, opt = make()
    train(model, opt, data)

    model2, opt2 = make()
    train(model2, opt2, data[:6])  # stop mid-cycle (6 = 4 + 2)
    saved = copy.deepcopy({"model": model2.state_dict(), "opt": opt2.state_dict()})
    model3, opt3 = make()
    model3.load_state_dict(saved["model"])
    opt3.load_state_dict(saved["opt"])
    assert opt3.param_groups[0]["lookahead_step"] == 6
    train(model3, opt3, data[6:])
    for a, b in zip(model.parameters(), model3.parameters()):
        assert torch.equal(a, b)


def test_lookahead_works_with_an_lr_scheduler_and_rejects_bad_options():
    param = torch.nn.Parameter(torch.ones(2))
    opt = Lookahead(torch.optim.SGD([param], lr=0.1))
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    param.grad = torch.ones(2)
    opt.step()
    scheduler.step()
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        Lookahead(torch.optim.SGD([param], lr=0.1), k=0)
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\]"):
        Lookahead(torch.optim.SGD([param], lr=0.1), alpha=1.5)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_name_builds_the_paper_defaults(name):
    param = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([param], OptimizerSettings(name=name))
    base = opt.optimizer if isinstance(opt, (tralgo.TrajectoryRegularized, Lookahead)) else opt
    group = base.param_groups[0]
    assert isinstance(opt, tralgo.TrajectoryRegularized) == name.startswith("tr")
    assert isinstance(opt, Lookahead) == name.startswith("lookahead")
    if "sgd" in name:
        assert type(base) is torch.optim.SGD
        assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.9, 1e-4)
    else:
        assert type(base) is (torch.optim.AdamW if "adamw" in name else torch.optim.Adam)
        assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-4)
    if name.startswith("tr"):
        # The authors' lambda_w = 0.1*lr0 with coefficient 2*lambda_w/lr: lam 0.2 scaled by lr0/lr.
        assert (group["lam"], group["lam_scaling"], group["inner_steps"]) == (0.2, "inverse_lr", 10)


def test_trsgd_defaults_reproduce_the_authors_coefficient():
    # Authors: grad += 2*(lambda_w/lr)*(w - anchor) with lambda_w = 0.1*lr0, lr the scheduled lr.
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([param], OptimizerSettings(name="trsgd", momentum=0.0, weight_decay=0.0))
    group = opt.param_groups[0]
    group["lr"] = 0.01  # the schedule cut lr x10
    from tralgo._trajectory import proximal_coefficient

    assert proximal_coefficient(group) == pytest.approx(2 * (0.1 * 0.1) / 0.01)


@pytest.mark.parametrize("settings, message", [
    (OptimizerSettings(name="nadam"), "optimizer must be one of"),
    (OptimizerSettings(lr=0.0), "lr must be a finite number > 0"),
    (OptimizerSettings(momentum=1.0), r"momentum must be in \[0, 1\)"),
    (OptimizerSettings(weight_decay=-1e-4), "weight_decay must be a finite number >= 0"),
    (OptimizerSettings(name="trsgd", lam=float("nan")), "lam must be a finite number >= 0"),
    (OptimizerSettings(name="trsgd", lam_scaling="sqrt"), "lam_scaling must be"),
    (OptimizerSettings(name="trsgd", inner_steps=0), "inner_steps must be an integer >= 1"),
    (OptimizerSettings(name="lookahead-sgd", lookahead_alpha=0.0), r"lookahead_alpha must be in \(0, 1\]"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], settings)


def test_restart_inner_loop_resets_only_tralgo_counters():
    param = torch.nn.Parameter(torch.zeros(1))
    tr = build_optimizer([param], OptimizerSettings(name="trsgd"))
    tr.param_groups[0]["inner_step"] = 7
    restart_inner_loop(tr)
    assert tr.param_groups[0]["inner_step"] == 0
    plain = build_optimizer([param], OptimizerSettings(name="sgd"))
    restart_inner_loop(plain)  # a no-op, no error
    assert "inner_step" not in plain.param_groups[0]


def lrs(name: str, epochs: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(opt, name, epochs)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


def test_schedules_per_epoch():
    assert step_milestones(200) == [100, 150]  # the paper: decays at epochs 100 and 150 of 200
    assert lrs("step", 8) == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lrs("constant", 3) == [1.0, 1.0, 1.0]
    cosine = lrs("cosine", 4)
    assert cosine[0] == 1.0 and cosine == sorted(cosine, reverse=True) and cosine[-1] == pytest.approx(0.1464, abs=1e-3)
    with pytest.raises(ValueError, match="schedule must be one of"):
        lrs("exponential", 2)
