"""fused="compiled": the whole TR update in one compiled kernel equals the eager paths."""
import warnings

import pytest
import torch

import tralgo
from tralgo import _fused
from _helpers import DEVICES, batches, flat, make_model, train

CONFIGS = {
    "TRSGD-nesterov": (tralgo.TRSGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)),
    "TRSGD-dampening-maximize": (tralgo.TRSGD, dict(lr=0.05, momentum=0.9, dampening=0.3)),
    "TRSGD-no-momentum": (tralgo.TRSGD, dict(lr=0.05, weight_decay=1e-3)),
    "TRAdam-amsgrad": (tralgo.TRAdam, dict(lr=0.01, weight_decay=1e-3, amsgrad=True)),
    "TRAdamW": (tralgo.TRAdamW, dict(lr=0.01, weight_decay=1e-2)),
}


@pytest.fixture
def eager_backend(monkeypatch):
    # The math, checked without inductor's compile time; test_inductor below compiles for real.
    monkeypatch.setattr(_fused, "COMPILE_BACKEND", "eager")


def _on(device, data):
    return [(x.to(device), y.to(device)) for x, y in data]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("scaling", ["constant", "inverse_lr"])
def test_compiled_equals_eager(name, scaling, device, eager_backend):
    cls, kw = CONFIGS[name]
    tr = dict(lam=0.7, inner_steps=4, lam_scaling=scaling)
    models = [make_model().to(device), make_model().to(device)]
    opts = [cls(models[0].parameters(), **kw, **tr, foreach=False), cls(models[1].parameters(), **kw, **tr, fused="compiled")]
    if "maximize" in name:
        for o in opts:
            o.param_groups[0]["maximize"] = True
    scheds = [torch.optim.lr_scheduler.StepLR(o, 5, 0.5) for o in opts]
    for m, o, s in zip(models, opts, scheds):
        train(m, o, _on(device, batches(13)), s)
    torch.testing.assert_close(flat(models[1]), flat(models[0]), rtol=1e-6, atol=1e-9)
    assert opts[1]._compiled_kernel.available
    # The state is the base's own: the compiled optimizer's checkpoint loads into an eager one.
    eager = cls(models[1].parameters(), **kw, **tr)
    eager.load_state_dict(opts[1].state_dict())


def test_compiled_path_handles_late_parameters_and_multiple_groups(eager_backend):
    model = make_model()
    first, last = list(model[0].parameters()), list(model[2].parameters())
    reference = make_model()
    ref_opt = tralgo.TRSGD([{"params": list(reference[0].parameters())}, {"params": list(reference[2].parameters()), "lam": 0.1}],
                           lr=0.05, momentum=0.9, lam=0.5, inner_steps=3, foreach=False)
    opt = tralgo.TRSGD([{"params": first}, {"params": last, "lam": 0.1}], lr=0.05, momentum=0.9, lam=0.5, inner_steps=3, fused="compiled")
    for t, (x, y) in enumerate(batches(10)):
        for m, o in ((model, opt), (reference, ref_opt)):
            o.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y)
            loss.backward()
            if t < 4:  # the last layer receives its first gradient mid-loop
                for p in m[2].parameters():
                    p.grad = None
            o.step()
    torch.testing.assert_close(flat(model), flat(reference), rtol=1e-6, atol=1e-9)


def test_bad_fused_value():
    with pytest.raises(ValueError, match="fused must be None, False, True or 'compiled'"):
        tralgo.TRSGD(make_model().parameters(), lr=0.1, fused="fast")


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls,kw", [
    (tralgo.TRSGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-4)),
    (tralgo.TRAdam, dict(lr=0.01, weight_decay=1e-4)),
])
def test_inductor_kernel_matches_eager(cls, kw, device):
    """The real thing: inductor generates the fused TR kernel (one-time compile)."""
    models = [make_model(dtype=torch.float32).to(device), make_model(dtype=torch.float32).to(device)]
    kw = dict(kw, lam=0.5, inner_steps=4)
    opts = [cls(models[0].parameters(), **kw), cls(models[1].parameters(), **kw, fused="compiled")]
    for m, o in zip(models, opts):
        train(m, o, _on(device, batches(9, dtype=torch.float32)))
    if not opts[1]._compiled_kernel.available:
        pytest.skip("torch.compile with inductor is unavailable here (no C++ compiler?)")
    torch.testing.assert_close(flat(models[1]), flat(models[0]), rtol=1e-5, atol=1e-6)


def _per_layer_groups(seed=0):
    """12 parameter groups of distinct shapes with their own learning rates (per-layer lr)."""
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(i + 2, 3, dtype=torch.float64)) for i in range(12)]
    groups = [{"params": [p], "lr": 0.01 * (1 + i % 3)} for i, p in enumerate(params)]
    return params, groups


def _train_groups(params, opt, steps=7):
    g = torch.Generator().manual_seed(5)
    for _ in range(steps):
        opt.zero_grad()
        sum((p * torch.randn(p.shape, generator=g, dtype=p.dtype)).pow(2).sum() for p in params).backward()
        opt.step()


def test_compiled_path_keeps_working_for_many_groups_and_optimizers(eager_backend):
    """Before: one compiled function per process; the 9th layout hit dynamo's recompile limit (8)
    and every optimizer fell back to eager for good."""
    torch._dynamo.reset()
    compiles = torch._dynamo.utils.counters["stats"]
    start = compiles["unique_graphs"]
    configs = [(tralgo.TRSGD, dict(momentum=0.9, weight_decay=1e-3)), (tralgo.TRAdam, dict(weight_decay=1e-3)),
               (tralgo.TRSGD, dict(momentum=0.9, weight_decay=1e-3))]  # the third has the first one's layout
    graphs = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback warning fails the test
        for cls, kw in configs:
            params, groups = _per_layer_groups()
            ref_params, ref_groups = _per_layer_groups()
            opt = cls(groups, lam=0.5, inner_steps=3, fused="compiled", **kw)
            _train_groups(params, opt)
            _train_groups(ref_params, cls(ref_groups, lam=0.5, inner_steps=3, foreach=False, **kw))
            assert opt._compiled_kernel.available
            for p, r in zip(params, ref_params):
                torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-9)
            graphs.append(compiles["unique_graphs"] - start)
    # One compile per layout: 12 for TRSGD, 12 for TRAdam, none for the second TRSGD.
    assert graphs == [12, 24, 24]


def test_a_fallback_says_why(monkeypatch, eager_backend):
    def broken(*args):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(_fused, "compiled_for_layout", broken)
    model = make_model()
    opt = tralgo.TRSGD(model.parameters(), lr=0.05, momentum=0.9, fused="compiled")
    with pytest.warns(RuntimeWarning, match=r"torch.compile failed \(RuntimeError: no C\+\+ compiler found\)"):
        train(model, opt, batches(3))
    assert not opt._compiled_kernel.available


@pytest.mark.parametrize("case", ["mixed dtypes", "Adam step counts differ"])
def test_a_group_the_kernel_cannot_take_is_stepped_eagerly_and_said_once(case, eager_backend):
    def make():
        torch.manual_seed(0)
        second_dtype = torch.float32 if case == "mixed dtypes" else torch.float64
        return [torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64)),
                torch.nn.Parameter(torch.randn(3, dtype=second_dtype))]

    cls, kw = (tralgo.TRSGD, dict(lr=0.05, momentum=0.9)) if case == "mixed dtypes" else (tralgo.TRAdam, dict(lr=0.01))
    params = [make(), make()]  # one param group each
    opts = [cls(params[0], lam=0.5, inner_steps=3, foreach=False, **kw),
            cls(params[1], lam=0.5, inner_steps=3, fused="compiled", **kw)]
    expected = "differ in device or dtype" if case == "mixed dtypes" else "different Adam step counts"
    g = torch.Generator().manual_seed(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for t in range(8):
            x = torch.randn(4, 3, generator=g, dtype=torch.float64)
            for (w, b), o in zip(params, opts):
                o.zero_grad()
                ((w * x).sum(0) + b).pow(2).sum().backward()
                if case != "mixed dtypes" and t < 2:  # the second parameter's first gradient comes later
                    b.grad = None
                o.step()
    said = [w for w in caught if expected in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]
    for ours, reference in zip(params[1], params[0]):
        torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kernel_scalars_of_16_bit_parameters_are_float32(dtype):
    """lr and the proximal coefficient are not rounded to 16 bits (lr = 0.1 is 0.1001 in bf16):
    like torch's own kernels, the update computes with them in float32."""
    kernel = _fused.CompiledKernel(_fused.sgd_tr_update)
    lr, coeff = kernel.scalars(0, torch.zeros(3, dtype=dtype), 0.1, 0.7)
    assert lr.dtype == coeff.dtype == torch.float32
    assert lr.item() == torch.tensor(0.1, dtype=torch.float32).item()
