"""torch's global optimizer hooks fire exactly once per user step(), with the TR optimizer, on
every path (before: the wrapper and its base both fired them on the eager paths, only the wrapper
with the compiled kernel)."""
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import tralgo
from tralgo import _fused
from _helpers import batches, make_model

TR = dict(lam=0.5, inner_steps=2)  # six steps cross three re-anchorings
PATHS = {
    "TRSGD-for-loop": lambda p: tralgo.TRSGD(p, lr=0.05, momentum=0.9, foreach=False, **TR),
    "TRSGD-foreach": lambda p: tralgo.TRSGD(p, lr=0.05, momentum=0.9, foreach=True, **TR),
    "TRSGD-fused": lambda p: tralgo.TRSGD(p, lr=0.05, momentum=0.9, fused=True, **TR),
    "TRSGD-compiled": lambda p: tralgo.TRSGD(p, lr=0.05, momentum=0.9, fused="compiled", **TR),
    "TRAdam-foreach": lambda p: tralgo.TRAdam(p, lr=0.01, **TR),
    "TRAdamW-compiled": lambda p: tralgo.TRAdamW(p, lr=0.01, fused="compiled", **TR),
    "RMSprop-base": lambda p: tralgo.TrajectoryRegularized(torch.optim.RMSprop(p, lr=0.01), **TR),
    "LBFGS-closure": lambda p: tralgo.TrajectoryRegularized(torch.optim.LBFGS(p, lr=0.1, max_iter=3), **TR),
}


@pytest.fixture
def global_hooks():
    calls = []
    handles = [register_optimizer_step_pre_hook(lambda opt, args, kwargs: calls.append(("pre", opt))),
               register_optimizer_step_post_hook(lambda opt, args, kwargs: calls.append(("post", opt)))]
    yield calls
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("path", PATHS)
def test_global_hooks_fire_once_per_step(path, global_hooks, monkeypatch):
    monkeypatch.setattr(_fused, "COMPILE_BACKEND", "eager")
    model = make_model()
    opt = PATHS[path](model.parameters())
    own = []
    opt.register_step_pre_hook(lambda *args: own.append("pre"))
    opt.register_step_post_hook(lambda *args: own.append("post"))
    for step, (x, y) in enumerate(batches(6)):
        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        global_hooks.clear()
        own.clear()
        if "closure" in path:
            opt.step(closure)
        else:
            closure()
            opt.step()
        assert global_hooks == [("pre", opt), ("post", opt)], f"step {step}"
        assert own == ["pre", "post"], f"step {step}"
    if "compiled" in path:
        assert opt._compiled_kernel.available  # the kernel took the later steps


def test_hooks_registered_on_the_base_still_fire_when_the_base_steps(global_hooks):
    model = make_model()
    base = torch.optim.SGD(model.parameters(), lr=0.05)
    opt = tralgo.TrajectoryRegularized(base, lam=0.5, inner_steps=2)
    seen = []
    base.register_step_pre_hook(lambda o, args, kwargs: seen.append(("pre", o)))
    base.register_step_post_hook(lambda o, args, kwargs: seen.append(("post", o)))
    for x, y in batches(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    assert seen == [("pre", base), ("post", base)] * 3
    assert global_hooks == [("pre", opt), ("post", opt)] * 3


def test_once_also_when_dynamo_wrapped_the_base_class_step(global_hooks, monkeypatch):
    """torch.compile's first use wraps ``LBFGS.step`` in ``torch._dynamo.disable``
    (``TorchPatcher.patch``; the fused TR kernel's compile triggers it): when LBFGS was hooked
    before, torch's hook wrapper sits inside the disable wrapper and must still be found."""
    torch.optim.LBFGS([torch.nn.Parameter(torch.zeros(1))])  # hooks the class's step if not yet
    monkeypatch.setattr(torch.optim.LBFGS, "step", torch._dynamo.disable(torch.optim.LBFGS.step))
    model = make_model()
    opt = PATHS["LBFGS-closure"](model.parameters())
    x, y = batches(1)[0]

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(3):
        global_hooks.clear()
        opt.step(closure)
        assert global_hooks == [("pre", opt), ("post", opt)]
