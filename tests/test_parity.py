"""Step-for-step parity with the authors' TRSGD / TRAdam (recorded in tests/data/parity, see its README).

The recorded gradients are fed to tralgo at every step, so the trajectories can differ only through the
optimizer's arithmetic. Mapping: lam = 2 * lambda_w / lr0, lam_scaling="inverse_lr", inner decay on.
"""
import json
from pathlib import Path

import pytest
import torch

import tralgo
from _helpers import DEVICES

DATA = Path(__file__).parent / "data" / "parity"
# Scenarios that record a quirk tralgo deliberately does not copy (README of the recordings).
NOT_COPIED = {"first_call_iteration_3"}


def _scenarios(kind):
    recorded = json.loads((DATA / f"{kind}.json").read_text())["float64"]
    return [(name, s) for name, s in recorded.items()]


def _replay(kind, scenario, device="cpu"):
    opt_cfg = dict(scenario["config"]["opt"])
    lambda_w, lr0 = opt_cfg.pop("lambda_w"), opt_cfg["lr"]
    params = {k: torch.tensor(v[0], dtype=torch.float64, device=device, requires_grad=True)
              for k, v in scenario["params"].items()}
    iterations = scenario["iterations"]
    epoch_len = scenario["config"].get("epoch_len")
    inner_steps = scenario["config"].get("S", 10)
    if all(k == 0 for k in iterations):
        inner_steps = 1  # the authors' "always iteration 0" is an inner loop of length 1
    options = dict(lam=2 * lambda_w / lr0, lam_scaling="inverse_lr", inner_steps=inner_steps)
    if kind == "trsgd":
        opt_cfg.pop("dampening", None)  # the authors' TRSGD ignores dampening: it is always 0 there
        opt = tralgo.TRSGD(list(params.values()), **opt_cfg, **options)
    else:
        opt = tralgo.TRAdam(list(params.values()), **opt_cfg, **options)
    for t, k in enumerate(iterations):
        if epoch_len and t % epoch_len == 0:
            opt.restart_inner_loop()
        assert opt.param_groups[0]["inner_step"] == k
        opt.param_groups[0]["lr"] = scenario["lrs"][t]
        for name, p in params.items():
            p.grad = torch.tensor(scenario["grad_from_backward"][name][t], dtype=torch.float64, device=device)
        opt.step()
        for name, p in params.items():
            yield t, name, p.detach().cpu(), torch.tensor(scenario["params"][name][t + 1], dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind,tolerance", [("trsgd", 1e-6), ("tradam", 1e-4)])
def test_matches_authors_trajectories(kind, tolerance, device):
    compared = 0
    for name, scenario in _scenarios(kind):
        if name in NOT_COPIED:
            continue
        for t, pname, ours, ref in _replay(kind, scenario, device):
            rel = ((ours - ref).norm() / ref.norm()).item()
            assert rel <= tolerance, f"{kind}/{name} step {t} param {pname}: relative error {rel:.2e}"
            compared += 1
    assert compared >= 2 * 25 * 6


def test_parity_is_tight():
    """The tolerances above are the issue's; record how much better we actually are."""
    worst = {}
    for kind in ("trsgd", "tradam"):
        worst[kind] = max(
            ((ours - ref).norm() / ref.norm()).item()
            for name, s in _scenarios(kind) if name not in NOT_COPIED
            for _, _, ours, ref in _replay(kind, s)
        )
    assert worst["trsgd"] < 1e-12, worst
    assert worst["tradam"] < 1e-5, worst  # measured 3.3e-6 (eps placement)


def test_first_gradient_mid_loop_is_anchored_at_current_value_not_zero():
    """The authors anchor a parameter first seen mid-loop at zero; tralgo anchors it where it is."""
    name, scenario = next(s for s in _scenarios("trsgd") if s[0] == "first_call_iteration_3")
    w = torch.tensor(scenario["params"]["W"][0], dtype=torch.float64, requires_grad=True)
    opt = tralgo.TRSGD([w], lr=0.1, lam=0.2, lam_scaling="inverse_lr")
    opt.param_groups[0]["inner_step"] = 3
    w.grad = torch.zeros_like(w)
    opt.step()
    assert torch.equal(opt.state[w]["tralgo_anchor"], torch.tensor(scenario["params"]["W"][0], dtype=torch.float64))
    # With a zero gradient and the anchor at the current value nothing moves; the authors' zero
    # anchor pulls the weights towards the origin instead.
    assert torch.equal(w.detach(), opt.state[w]["tralgo_anchor"])
