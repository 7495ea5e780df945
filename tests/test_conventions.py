"""tralgo follows the conventions of torch.optim: schedulers, checkpoints, AMP, closures, hooks, pickling."""
import copy
import io
import pickle

import pytest
import torch

import tralgo
from _helpers import batches, flat, make_model, train

SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5),
    "MultiStepLR": lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[5, 9], gamma=0.1),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.2, total_steps=13),
}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedulers_drive_the_wrapper(name):
    model = make_model()
    opt = tralgo.TRSGD(model.parameters(), lr=0.1, momentum=0.9, lam=0.3, inner_steps=4)
    assert isinstance(opt, torch.optim.Optimizer)
    sched = SCHEDULERS[name](opt)
    base_model = make_model()
    base_opt = torch.optim.SGD(base_model.parameters(), lr=0.1, momentum=0.9)
    base_sched = SCHEDULERS[name](base_opt)
    lrs, base_lrs = [], []
    for x, y in batches(12):
        for m, o, s, out in ((model, opt, sched, lrs), (base_model, base_opt, base_sched, base_lrs)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            out.append(o.param_groups[0]["lr"])
            o.step()
            s.step()
    assert lrs == base_lrs  # the schedule is untouched by the inner decay (no compounding)
    assert opt.optimizer.param_groups[0]["lr"] == base_opt.param_groups[0]["lr"]


def _run_with_checkpoint(stop_at, total, opt_factory, sched_factory=None, via_bytes=True):
    data = batches(total)
    model = make_model()
    opt = opt_factory(model)
    sched = sched_factory(opt) if sched_factory else None
    train(model, opt, data[:stop_at], sched)
    blob = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict() if sched else None}
    if via_bytes:
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        buffer.seek(0)
        blob = torch.load(buffer, weights_only=True)
    fresh = make_model(seed=123)  # different init: everything must come from the checkpoint
    fresh.load_state_dict(blob["model"])
    fresh_opt = opt_factory(fresh)
    fresh_opt.load_state_dict(blob["opt"])
    fresh_sched = None
    if sched_factory:
        fresh_sched = sched_factory(fresh_opt)
        fresh_sched.load_state_dict(blob["sched"])
    train(fresh, fresh_opt, data[stop_at:], fresh_sched)
    return fresh, fresh_opt


OPTIMIZERS = {
    "TRSGD": lambda m: tralgo.TRSGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3, lam=0.4, inner_steps=5),
    "TRAdam-inverse": lambda m: tralgo.TRAdam(m.parameters(), lr=0.01, lam=0.2, inner_steps=5, lam_scaling="inverse_lr"),
    "TRAdamW": lambda m: tralgo.TRAdamW(m.parameters(), lr=0.01, lam=0.4, inner_steps=5),
    "TR(RMSprop)": lambda m: tralgo.TrajectoryRegularized(torch.optim.RMSprop(m.parameters(), lr=0.01), lam=0.4, inner_steps=5),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resume_mid_inner_loop_is_bit_exact(name):
    factory = OPTIMIZERS[name]
    sched = lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=6, gamma=0.5)
    straight = make_model()
    opt = factory(straight)
    train(straight, opt, batches(17), torch.optim.lr_scheduler.StepLR(opt, step_size=6, gamma=0.5))
    resumed, resumed_opt = _run_with_checkpoint(8, 17, factory, sched)  # stops at k = 3 of S = 5
    assert torch.equal(flat(straight), flat(resumed))
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(opt.state[p]["tralgo_anchor"], resumed_opt.state[q]["tralgo_anchor"])
    assert [g["inner_step"] for g in opt.param_groups] == [g["inner_step"] for g in resumed_opt.param_groups]
    # After load_state_dict the scheduler still drives the lr that the base really uses.
    initial = opt.param_groups[0]["tr_initial_lr"]
    assert resumed_opt.optimizer.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == initial * 0.25


def test_loading_into_a_differently_shaped_model_fails_clearly():
    model = make_model()
    opt = OPTIMIZERS["TRSGD"](model)
    train(model, opt, batches(2))
    other = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    with pytest.raises(ValueError, match="differently-shaped model"):
        OPTIMIZERS["TRSGD"](other).load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="param group"):
        tralgo.TRSGD([{"params": [other[0].weight]}, {"params": [other[0].bias]}], lr=0.1).load_state_dict(opt.state_dict())


def test_loading_a_plain_base_checkpoint_fills_tralgo_options():
    model = make_model()
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, base, batches(2))
    opt = tralgo.TRSGD(model.parameters(), lr=0.1, momentum=0.9, lam=0.2, inner_steps=7)
    opt.load_state_dict(base.state_dict())
    assert opt.param_groups[0]["inner_steps"] == 7 and opt.param_groups[0]["inner_step"] == 0
    train(model, opt, batches(3))


def test_gradscaler_cpu_and_skipped_steps():
    model = make_model(dtype=torch.float32)
    opt = tralgo.TRSGD(model.parameters(), lr=0.05, momentum=0.9, lam=0.5, inner_steps=4)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    reference = make_model(dtype=torch.float32)
    ref_opt = tralgo.TRSGD(reference.parameters(), lr=0.05, momentum=0.9, lam=0.5, inner_steps=4)
    for x, y in batches(6, dtype=torch.float32):
        opt.zero_grad(); ref_opt.zero_grad()
        scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
        torch.nn.functional.mse_loss(reference(x), y).backward()
        ref_opt.step()
    torch.testing.assert_close(flat(model), flat(reference), rtol=1e-5, atol=1e-6)
    # An inf gradient: the step is skipped and nothing advances (counter, anchors, weights).
    before = (flat(model).clone(), opt.param_groups[0]["inner_step"],
              [opt.state[p]["tralgo_anchor"].clone() for p in model.parameters()])
    opt.zero_grad()
    scaler.scale(model(torch.full((8, 5), float("inf"))).sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.equal(flat(model), before[0])
    assert opt.param_groups[0]["inner_step"] == before[1]
    for p, a in zip(model.parameters(), before[2]):
        assert torch.equal(opt.state[p]["tralgo_anchor"], a)


def test_fused_base_under_gradscaler_unscales_before_the_proximal_term():
    model = make_model(dtype=torch.float32)
    opt = tralgo.TRAdam(model.parameters(), lr=0.01, lam=0.5, inner_steps=3, fused=True)
    assert opt._step_supports_amp_scaling is False
    reference = make_model(dtype=torch.float32)
    ref_opt = tralgo.TRAdam(reference.parameters(), lr=0.01, lam=0.5, inner_steps=3, foreach=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    for x, y in batches(7, dtype=torch.float32):
        opt.zero_grad(); ref_opt.zero_grad()
        scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
        scaler.step(opt); scaler.update()
        torch.nn.functional.mse_loss(reference(x), y).backward()
        ref_opt.step()
    torch.testing.assert_close(flat(model), flat(reference), rtol=1e-5, atol=1e-6)


def test_lbfgs_closure_sees_the_proximal_term_at_every_evaluation():
    torch.manual_seed(0)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    w = torch.nn.Parameter(torch.zeros(5, 3, dtype=torch.float64))
    lam = 2.0
    opt = tralgo.TrajectoryRegularized(torch.optim.LBFGS([w], lr=1, max_iter=50, tolerance_grad=1e-12,
                                                         tolerance_change=1e-14, line_search_fn="strong_wolfe"),
                                       lam=lam, inner_steps=3, inner_lr_decay=False)
    evaluations = []

    def closure():
        opt.zero_grad()
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        evaluations.append(1)
        return loss

    opt.step(closure)  # k = 0: anchors at zero, no proximal term: plain least squares
    anchor = opt.state[w]["tralgo_anchor"].clone()
    evaluations.clear()
    opt.step(closure)  # k = 1: minimises f(w) + lam/2 ||w - anchor||^2 exactly (it is quadratic)
    assert len(evaluations) > 1
    n = x.shape[0]
    # closed form: (2/n X^T X + lam I) w = 2/n X^T y + lam * anchor   (mean over 16*3 entries)
    m = x.shape[0] * y.shape[1]
    A = 2.0 / m * x.T @ x + lam * torch.eye(5, dtype=torch.float64)
    expected = torch.linalg.solve(A, 2.0 / m * x.T @ y + lam * anchor)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-6, atol=1e-8)
    plain = torch.linalg.lstsq(x, y).solution
    assert (w.detach() - plain).norm() > 1e-3  # the regulariser really changed the answer


def test_zero_grad_add_param_group_deepcopy_pickle_and_hooks():
    model = make_model()
    opt = tralgo.TRSGD(list(model[0].parameters()), lr=0.1, momentum=0.9, lam=0.3, inner_steps=3)
    fired = []
    opt.register_step_pre_hook(lambda o, a, k: fired.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: fired.append("post"))
    train(model, opt, batches(1))
    assert fired == ["pre", "post"]  # from the very first step
    opt.add_param_group({"params": list(model[2].parameters()), "lam": 0.0})
    assert opt.param_groups[1]["inner_step"] == 0 and opt.param_groups[1]["lam"] == 0.0
    assert opt.param_groups[1]["inner_steps"] == 3
    train(model, opt, batches(4))
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())  # zero_grad (set_to_none) reached the base
    twin = copy.deepcopy({"m": model, "o": opt})
    pickled = pickle.loads(pickle.dumps({"m": model, "o": opt}))
    for m, o in ((model, opt), (twin["m"], twin["o"]), (pickled["m"], pickled["o"])):
        train(m, o, batches(5, seed=9))
    assert torch.equal(flat(model), flat(twin["m"])) and torch.equal(flat(model), flat(pickled["m"]))
    twin["o"].param_groups[0]["lr"] = 0.5
    assert opt.param_groups[0]["lr"] == 0.1  # the copy owns its own base


@pytest.mark.parametrize("scaling", ["constant", "inverse_lr"])
@pytest.mark.parametrize("factory", [
    lambda ps, **kw: tralgo.TRSGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2, **kw),
    lambda ps, **kw: tralgo.TRAdam(ps, lr=0.1, **kw),
    lambda ps, **kw: tralgo.TRAdamW(ps, lr=0.1, **kw),
])
def test_zero_learning_rate_changes_nothing_and_stays_finite(scaling, factory):
    model = make_model()
    opt = factory(model.parameters(), lam=0.5, inner_steps=3, lam_scaling=scaling)
    train(model, opt, batches(2))
    before = flat(model).clone()
    for group in opt.param_groups:
        group["lr"] = 0.0
    train(model, opt, batches(4))
    # the dummy step of distributed checkpointing: zero grads at lr 0
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(flat(model), before)
    for state in opt.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                assert torch.isfinite(value).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(lam=-0.1), "lam must be a finite number >= 0"),
    (dict(lam=float("nan")), "lam must be a finite number >= 0"),
    (dict(lam=float("inf")), "lam must be a finite number >= 0"),
    (dict(inner_steps=0), "inner_steps must be an int >= 1"),
    (dict(inner_steps=2.5), "inner_steps must be an int >= 1"),
    (dict(lam_scaling="linear"), "lam_scaling must be one of"),
    (dict(inner_lr_decay="yes"), "inner_lr_decay must be True or False"),
])
def test_bad_options_name_the_parameter_and_range(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tralgo.TRSGD(make_model().parameters(), lr=0.1, **kwargs)


def test_bad_wrapping_and_bad_group_values():
    with pytest.raises(TypeError, match="must be a torch.optim.Optimizer"):
        tralgo.TrajectoryRegularized(make_model().parameters())
    opt = tralgo.TRSGD(make_model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="already a TrajectoryRegularized"):
        tralgo.TrajectoryRegularized(opt)
    opt.param_groups[0]["lam"] = -1
    model = make_model()
    with pytest.raises(ValueError, match=r"lam must be .* \(param group 0\)"):
        opt.step()
    with pytest.raises(ValueError, match="positive initial lr"):
        tralgo.TRSGD(model.parameters(), lr=0.0, lam_scaling="inverse_lr")


def test_sparse_gradients_are_refused_clearly():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = tralgo.TRSGD(emb.parameters(), lr=0.1, lam=0.5, inner_steps=3)
    for _ in range(2):
        opt.zero_grad()
        emb(torch.tensor([1, 2])).sum().backward()
        if opt.param_groups[0]["inner_step"] == 0:
            opt.step()
        else:
            with pytest.raises(RuntimeError, match="sparse gradients"):
                opt.step()
