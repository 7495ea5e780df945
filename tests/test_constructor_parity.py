"""TRSGD / TRAdam / TRAdamW take every argument of torch's SGD / Adam / AdamW, with torch's
defaults and meaning (issue 11, item 5).

The argument lists come from ``inspect.signature`` of the installed torch, so an argument a
future torch adds fails ``test_signature_mirrors_torch`` and ``test_every_argument_has_a_case``
until it is supported (or refused) here.
"""
import inspect

import pytest
import torch

import tralgo

PAIRS = [(tralgo.TRSGD, torch.optim.SGD), (tralgo.TRAdam, torch.optim.Adam), (tralgo.TRAdamW, torch.optim.AdamW)]
TR_OPTIONS = ("lam", "inner_steps", "inner_lr_decay", "lam_scaling")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]

# A non-default value for every argument torch's constructors take, and what it needs to matter.
NON_DEFAULT = {
    "lr": (0.05, {}),
    "momentum": (0.9, {}),
    "dampening": (0.3, {"momentum": 0.9}),
    "weight_decay": (0.03, {}),
    "nesterov": (True, {"momentum": 0.9}),
    "maximize": (True, {"momentum": 0.9, "weight_decay": 0.01}),
    "foreach": (True, {}),
    "differentiable": (True, {}),
    "fused": (True, {}),
    "betas": ((0.8, 0.95), {}),
    "eps": (1e-4, {}),
    "amsgrad": (True, {}),
    "capturable": (True, {}),
    "decoupled_weight_decay": (True, {"weight_decay": 0.05}),
}


def _torch_arguments(torch_cls):
    return [p for name, p in inspect.signature(torch_cls.__init__).parameters.items() if name not in ("self", "params")]


@pytest.mark.parametrize("tr_cls,torch_cls", PAIRS)
def test_signature_mirrors_torch(tr_cls, torch_cls):
    ours = inspect.signature(tr_cls.__init__).parameters
    for theirs in _torch_arguments(torch_cls):
        assert theirs.name in ours, f"{tr_cls.__name__} lacks {torch_cls.__name__}'s argument {theirs.name!r}"
        mine = ours[theirs.name]
        assert mine.kind == theirs.kind, f"{theirs.name}: {mine.kind} here, {theirs.kind} in torch"
        assert mine.default == theirs.default, f"{theirs.name}: default {mine.default!r} here, {theirs.default!r} in torch"
    torch_names = {p.name for p in _torch_arguments(torch_cls)} | {"self", "params"}
    extra = [p for name, p in ours.items() if name not in torch_names]
    assert {p.name for p in extra} == set(TR_OPTIONS)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extra)  # never shifts torch's positions


@pytest.mark.parametrize("torch_cls", [torch_cls for _, torch_cls in PAIRS])
def test_every_argument_has_a_case(torch_cls):
    missing = [p.name for p in _torch_arguments(torch_cls) if p.name not in NON_DEFAULT]
    assert not missing, f"add {missing} to NON_DEFAULT and check that TR honours or refuses them"


def _cases():
    for tr_cls, torch_cls in PAIRS:
        accepted = {p.name for p in _torch_arguments(torch_cls)}
        for argument in _torch_arguments(torch_cls):
            if argument.name in NON_DEFAULT:
                value, needs = NON_DEFAULT[argument.name]
                needs = {name: v for name, v in needs.items() if name in accepted}
                yield pytest.param(tr_cls, torch_cls, {**needs, argument.name: value},
                                   id=f"{tr_cls.__name__}-{argument.name}")


def _leaves(device, dtype, differentiable):
    g = torch.Generator().manual_seed(0)
    values = [torch.randn(4, 3, generator=g, dtype=dtype), torch.randn(3, generator=g, dtype=dtype)]
    if differentiable:
        # torch's differentiable optimizers update non-leaf tensors (a leaf cannot be changed in
        # place while autograd records); their origin is what gradients flow back to.
        origins = [v.to(device).requires_grad_(True) for v in values]
        return origins, [o.clone() for o in origins]
    params = [v.to(device).requires_grad_(True) for v in values]
    return params, params


def _gradients(params, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) for p in params] for _ in range(steps)]


def _written_out_tr(torch_cls, kwargs, params, grads, lam, inner_steps):
    """TRAlgo spelled out over the torch optimizer: anchor at k = 0, g + lam*(w - anchor) (sign
    flipped under maximize, which the base flips back), lr / (k + 1)."""
    base = torch_cls(params, **kwargs)
    sign = -1.0 if kwargs.get("maximize") else 1.0
    for t, step_grads in enumerate(grads):
        k = t % inner_steps
        if k == 0:
            anchors = [p.detach().clone() for p in params]
        for p, g, a in zip(params, step_grads, anchors):
            # At k = 0 the anchor is w itself: the term and its derivative vanish.
            p.grad = g + sign * lam * (p - a) if k > 0 else g
        for group in base.param_groups:
            group["outer_lr"] = group["lr"]
            group["lr"] = group["lr"] / (k + 1)
        base.step()
        for group in base.param_groups:
            group["lr"] = group.pop("outer_lr")
    return base


def _run_tr(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()


def _needs(kwargs, device):
    if kwargs.get("capturable") and device == "cpu":
        pytest.skip("torch's capturable Adam needs CUDA (test_capturable_on_cpu_fails_as_torch_does covers CPU)")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tr_cls,torch_cls,kwargs", _cases())
def test_with_lam_zero_every_argument_steps_exactly_as_torch(tr_cls, torch_cls, kwargs, device):
    _needs(kwargs, device)
    dtype = torch.float32  # the dtype every implementation (fused included) supports
    differentiable = kwargs.get("differentiable", False)
    _, ours = _leaves(device, dtype, differentiable)
    _, theirs = _leaves(device, dtype, differentiable)
    grads = _gradients(ours, 6)
    opt = tr_cls(ours, **kwargs, lam=0.0, inner_steps=1)
    reference = torch_cls(theirs, **kwargs)
    _run_tr(opt, ours, grads)
    _run_tr(reference, theirs, grads)
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o, t, rtol=0, atol=0)
    for o, t in zip(ours, theirs):
        for key, value in reference.state[t].items():
            torch.testing.assert_close(opt.state[o][key], value, rtol=0, atol=0)
    assert all(opt.param_groups[0][name] == reference.param_groups[0][name] for name in kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tr_cls,torch_cls,kwargs", _cases())
def test_with_lam_every_argument_matches_the_written_out_algorithm(tr_cls, torch_cls, kwargs, device):
    _needs(kwargs, device)
    # Fused kernels run in float32; the others in float64, where only the folded weight decay
    # (a different but equivalent rounding order) separates tralgo from the written-out loop.
    dtype = torch.float32 if kwargs.get("fused") else torch.float64
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    differentiable = kwargs.get("differentiable", False)
    _, ours = _leaves(device, dtype, differentiable)
    _, theirs = _leaves(device, dtype, differentiable)
    grads = _gradients(ours, 11)
    opt = tr_cls(ours, **kwargs, lam=0.7, inner_steps=4)
    _run_tr(opt, ours, grads)
    _written_out_tr(torch_cls, kwargs, theirs, grads, 0.7, 4)
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o.detach(), t.detach(), rtol=tol, atol=tol)


def test_capturable_on_cpu_fails_as_torch_does():
    params = [torch.randn(3, requires_grad=True)]
    for cls in (tralgo.TRAdam, tralgo.TRAdamW):
        opt = cls(params, capturable=True, lam=0.5, inner_steps=2)
        params[0].grad = torch.randn(3)
        with pytest.raises(AssertionError, match="capturable=True"):
            opt.step()


@pytest.mark.parametrize("tr_cls,torch_cls,kwargs", [
    (tralgo.TRSGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    (tralgo.TRAdam, torch.optim.Adam, dict(lr=0.05, weight_decay=0.01)),
    (tralgo.TRAdamW, torch.optim.AdamW, dict(lr=0.05)),
    (tralgo.TRAdam, torch.optim.Adam, dict(lr=0.05, weight_decay=0.02, decoupled_weight_decay=True)),
])
def test_differentiable_gradients_flow_through_the_proximal_term(tr_cls, torch_cls, kwargs):
    """d(weights after 7 steps) / d(initial weights, every gradient) equals autograd through
    the written-out loop (anchors are constant snapshots there, as torch treats a fresh momentum
    buffer). Without the proximal term in the graph the weight derivative is off by ~lam*lr."""
    kwargs = {**kwargs, "differentiable": True}
    origins, ours = _leaves("cpu", torch.float64, True)
    grad_leaves = [[g.requires_grad_(True) for g in step] for step in _gradients(ours, 7)]
    opt = tr_cls(ours, **kwargs, lam=2.0, inner_steps=3)
    for step_grads in grad_leaves:
        for p, g in zip(ours, step_grads):
            p.grad = g * 1.0  # a non-leaf gradient, as autograd.grad(create_graph=True) gives
        opt.step()
    theirs = [o.clone() for o in origins]
    _written_out_tr(torch_cls, kwargs, theirs, [[g * 1.0 for g in step] for step in grad_leaves], 2.0, 3)
    inputs = origins + [g for step in grad_leaves for g in step]
    weights = [torch.linspace(-1, 1, p.numel(), dtype=p.dtype).reshape(p.shape) for p in ours]
    # allow_unused: torch's differentiable SGD starts its momentum buffer from a detached copy
    # of the first gradient, so that gradient has no path to the result, in both loops.
    expected = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, theirs)), inputs, allow_unused=True)
    got = torch.autograd.grad(sum((w * o).sum() for w, o in zip(weights, ours)), inputs, allow_unused=True)
    assert [g is None for g in got] == [e is None for e in expected]
    got, expected = [g for g in got if g is not None], [e for e in expected if e is not None]
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o, t, rtol=1e-12, atol=1e-12)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [tralgo.TRSGD, tralgo.TRAdam, tralgo.TRAdamW])
def test_compiled_refuses_differentiable_and_capturable_clearly(cls):
    params = [torch.randn(3, requires_grad=True)]
    with pytest.raises(ValueError, match=r"fused='compiled' does not support differentiable=True"):
        cls(params, fused="compiled", differentiable=True)
    if cls is not tralgo.TRSGD:
        with pytest.raises(ValueError, match=r"fused='compiled' does not support capturable=True"):
            cls(params, fused="compiled", capturable=True)
    with pytest.raises(ValueError, match=r"fused must be None, False, True or 'compiled', got 'yes'"):
        cls(params, fused="yes")


def test_torch_refusals_come_through_unchanged():
    params = [torch.randn(3, requires_grad=True)]
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum"):
        tralgo.TRSGD(params, nesterov=True)
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        tralgo.TRSGD(params, fused=True, differentiable=True)
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        tralgo.TRAdam(params, fused=True, foreach=True)


def test_tradam_with_decoupled_weight_decay_is_tradamw():
    _, a = _leaves("cpu", torch.float64, False)
    _, b = _leaves("cpu", torch.float64, False)
    grads = _gradients(a, 9)
    _run_tr(tralgo.TRAdam(a, lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, lam=0.5, inner_steps=4), a, grads)
    _run_tr(tralgo.TRAdamW(b, lr=0.05, weight_decay=0.1, lam=0.5, inner_steps=4), b, grads)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("tr_cls,torch_cls,kwargs", [
    (tralgo.TRSGD, torch.optim.SGD, dict(momentum=0.9, foreach=False)),
    (tralgo.TRSGD, torch.optim.SGD, dict(momentum=0.9, fused=True)),
    (tralgo.TRAdam, torch.optim.Adam, dict(foreach=False)),
    (tralgo.TRAdamW, torch.optim.AdamW, dict(fused=True)),
])
def test_a_tensor_learning_rate_works_as_in_torch(tr_cls, torch_cls, kwargs):
    # torch's lr may be a 0-dim tensor (its annotation: float | Tensor); so may tralgo's.
    _, ours = _leaves("cpu", torch.float32, False)
    _, theirs = _leaves("cpu", torch.float32, False)
    grads = _gradients(ours, 9)
    _run_tr(tr_cls(ours, lr=torch.tensor(0.05), **kwargs, lam=0.7, inner_steps=4), ours, grads)
    _written_out_tr(torch_cls, {"lr": torch.tensor(0.05), **kwargs}, theirs, grads, 0.7, 4)
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o.detach(), t.detach(), rtol=1e-5, atol=1e-6)
