"""The algorithm, observed through a spy base optimizer (what the base was given, step by step)."""
import math

import pytest
import torch

import tralgo
from _helpers import Spy


def _setup(lam=0.5, inner_steps=3, **kw):
    w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    spy = Spy([w], lr=0.1, maximize=kw.pop("maximize", False))
    return w, spy, tralgo.TrajectoryRegularized(spy, lam=lam, inner_steps=inner_steps, **kw)


def test_base_sees_proximal_gradient_and_decayed_lr():
    w, spy, opt = _setup()
    g = torch.tensor([0.3, 0.7], dtype=torch.float64)
    anchor = None
    for t in range(7):
        k = t % 3
        before = w.detach().clone()
        if k == 0:
            anchor = before
        w.grad = g.clone()
        opt.step()
        lr_seen, (grad_seen,) = spy.seen[-1][0]
        assert lr_seen == pytest.approx(0.1 / (k + 1), rel=0, abs=1e-18)
        torch.testing.assert_close(grad_seen, g + 0.5 * (before - anchor), rtol=0, atol=1e-15)
        assert opt.param_groups[0]["lr"] == 0.1  # restored: schedulers never see the decayed value
        assert opt.param_groups[0]["inner_step"] == (k + 1) % 3
        assert torch.equal(opt.state[w]["tralgo_anchor"], anchor)


def test_no_inner_decay_and_inverse_lr_scaling():
    w, spy, opt = _setup(lam=0.5, inner_lr_decay=False, lam_scaling="inverse_lr")
    for t in range(3):
        if t == 2:
            opt.param_groups[0]["lr"] = 0.025  # an outer schedule lowers lr: lam_k grows by 4x
        before = w.detach().clone()
        w.grad = torch.zeros(2, dtype=torch.float64)
        opt.step()
    anchor = opt.state[w]["tralgo_anchor"]
    lr_seen, (grad_seen,) = spy.seen[-1][0]
    assert lr_seen == 0.025
    torch.testing.assert_close(grad_seen, 0.5 * (0.1 / 0.025) * (before - anchor), rtol=0, atol=1e-15)


def test_maximize_still_pulls_towards_the_anchor():
    w, spy, opt = _setup(lam=1.0, inner_steps=100, inner_lr_decay=False, maximize=True)
    w.grad = torch.zeros(2, dtype=torch.float64)
    opt.step()  # anchors
    anchor = opt.state[w]["tralgo_anchor"].clone()
    with torch.no_grad():
        w.add_(1.0)  # move away from the anchor
    w.grad = torch.zeros(2, dtype=torch.float64)
    opt.step()
    # A maximizing base climbs its gradient; the regulariser must still shrink ||w - anchor||.
    assert (w.detach() - anchor).norm() < math.sqrt(2) - 1e-3
    w2 = torch.nn.Parameter(torch.zeros(3))
    opt2 = tralgo.TRSGD([w2], lr=0.1, lam=1.0, inner_lr_decay=False)
    opt2.optimizer.param_groups[0]["maximize"] = True
    w2.grad = torch.zeros(3); opt2.step()
    with torch.no_grad():
        w2.add_(1.0)
    w2.grad = torch.zeros(3); opt2.step()
    assert (w2.detach() - opt2.state[w2]["tralgo_anchor"]).norm() < math.sqrt(3) - 1e-3


def test_per_group_options_and_restart():
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    spy = Spy([{"params": [a], "lam": 0.0, "inner_steps": 2}, {"params": [b], "inner_lr_decay": False}], lr=0.1)
    opt = tralgo.TrajectoryRegularized(spy, lam=0.3, inner_steps=4)
    assert [g["lam"] for g in opt.param_groups] == [0.0, 0.3]
    assert [g["inner_steps"] for g in opt.param_groups] == [2, 4]
    for _ in range(3):
        a.grad = torch.ones(2, dtype=torch.float64)
        b.grad = torch.ones(2, dtype=torch.float64)
        opt.step()
    assert [g["inner_step"] for g in opt.param_groups] == [1, 3]
    assert [lr for lr, _ in spy.seen[-2]] == [pytest.approx(0.05), 0.1]  # k = 1 in group 0
    assert [lr for lr, _ in spy.seen[-1]] == [0.1, 0.1]  # group 0 re-anchored (S = 2)
    opt.restart_inner_loop()
    assert [g["inner_step"] for g in opt.param_groups] == [0, 0]
    a.grad = torch.ones(2, dtype=torch.float64); b.grad = torch.ones(2, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(opt.state[b]["tralgo_anchor"], b.detach() + 0.1)  # re-anchored before the step


def test_grad_after_step_is_what_the_base_consumed():
    """Documented contract: .grad is scratch after step(); before step() it is the data gradient."""
    w, spy, opt = _setup(lam=0.5, inner_steps=3)
    for _ in range(2):
        w.grad = torch.ones(2, dtype=torch.float64)
        opt.step()
    torch.testing.assert_close(w.grad, spy.seen[-1][0][1][0])
    opt.zero_grad(set_to_none=False)
    assert torch.count_nonzero(w.grad) == 0  # the usual loop starts the next backward from zero


def test_first_gradient_mid_loop_and_frozen_params():
    used = torch.zeros(2, requires_grad=True)
    late = torch.ones(2, requires_grad=True)
    frozen = torch.ones(2, requires_grad=False)
    opt = tralgo.TRSGD([used, late, frozen], lr=0.1, lam=1.0, inner_steps=5)
    for t in range(4):
        used.grad = torch.ones(2)
        if t == 2:
            late.grad = torch.zeros(2)
        opt.step()
        if t >= 2:
            late.grad = None
    assert "tralgo_anchor" not in opt.state.get(frozen, {})
    assert torch.equal(opt.state[late]["tralgo_anchor"], torch.ones(2))  # current value, not zero
    assert torch.equal(late.detach(), torch.ones(2))


@pytest.mark.parametrize("impl", ["foreach", "forloop", "fused"])
@pytest.mark.parametrize("base", ["sgd", "adam", "adamw", "rmsprop"])
def test_empty_frozen_and_partial_groups_on_every_path(impl, base):
    if impl == "fused" and base == "rmsprop":
        pytest.skip("RMSprop has no fused implementation")
    torch.manual_seed(0)
    p1, p2, p3 = (torch.nn.Parameter(torch.randn(3, 2)) for _ in range(3))
    frozen = torch.nn.Parameter(torch.randn(2), requires_grad=False)
    groups = [{"params": [p1, p2]}, {"params": [frozen]}, {"params": []}, {"params": [p3]}]
    flags = {"foreach": dict(foreach=True), "forloop": dict(foreach=False), "fused": dict(fused=True)}[impl]
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}[base]
    kw = dict(momentum=0.9) if base in ("sgd", "rmsprop") else {}
    opt = tralgo.TrajectoryRegularized(cls(groups, lr=0.01, **kw, **flags), lam=0.5, inner_steps=3)
    for t in range(7):
        opt.zero_grad()
        loss = (p1 ** 2).sum() + (p3 ** 2).sum() * (t % 2)  # p2 never, p3 every other step
        loss.backward()
        opt.step()
    for p in (p1, p2, p3, frozen):
        assert torch.isfinite(p).all()
    assert "tralgo_anchor" not in opt.state.get(p2, {})
    assert "tralgo_anchor" in opt.state[p3]


def _reference_loop(params, grads_per_step, lam, inner_steps, base_factory):
    """TRAlgo written out by hand over a base: the oracle for the fold/foreach/fused paths."""
    params = [p.detach().clone().requires_grad_(True) for p in params]
    base = base_factory(params)
    anchors = None
    for t, grads in enumerate(grads_per_step):
        k = t % inner_steps
        if k == 0:
            anchors = [p.detach().clone() for p in params]
        for p, g, a in zip(params, grads, anchors):
            p.grad = g + lam * (p.detach() - a)
        for group in base.param_groups:
            group["lr_saved"] = group["lr"]
            group["lr"] = group["lr"] / (k + 1)
        base.step()
        for group in base.param_groups:
            group["lr"] = group.pop("lr_saved")
    return params


@pytest.mark.parametrize("impl", [dict(foreach=False), dict(foreach=True), dict(fused=True)])
@pytest.mark.parametrize("cls,kw", [
    (torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)),
    (torch.optim.Adam, dict(lr=0.01, weight_decay=1e-3, amsgrad=True)),
    (torch.optim.AdamW, dict(lr=0.01, weight_decay=1e-2)),
])
def test_every_implementation_matches_the_written_out_algorithm(impl, cls, kw):
    torch.manual_seed(0)
    params = [torch.randn(4, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    grads = [[torch.randn_like(p) for p in params] for _ in range(12)]
    expected = _reference_loop(params, grads, 0.7, 4, lambda ps: cls(ps, **kw, foreach=False))
    ours = [p.clone().requires_grad_(True) for p in params]
    if impl.get("fused"):
        ours = [p.detach().float().requires_grad_(True) for p in params]  # fused kernels: float32
    opt = tralgo.TrajectoryRegularized(cls(ours, **kw, **impl), lam=0.7, inner_steps=4)
    for step_grads in grads:
        for p, g in zip(ours, step_grads):
            p.grad = g.to(p.dtype).clone()
        opt.step()
    tol = 1e-5 if impl.get("fused") else 1e-12
    for o, e in zip(ours, expected):
        torch.testing.assert_close(o.detach().double(), e.detach(), rtol=tol, atol=tol)
