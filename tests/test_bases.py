"""Wrapping every torch.optim class with per-parameter state: with lam = 0 and no inner decay the
wrapper is the base, bit for bit, before and after a save/load (tralgo's anchor lives in the base's
state, so this also proves the extra key never breaks a base's lazy initialisation or its loader)."""
import io

import pytest
import torch
from hypothesis import given, settings, strategies as st

import tralgo
from _helpers import batches, flat, make_model, train

BASES = {
    "SGD": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "Adam": lambda ps: torch.optim.Adam(ps, lr=0.01, amsgrad=True),
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=0.01),
    "NAdam": lambda ps: torch.optim.NAdam(ps, lr=0.01),
    "RAdam": lambda ps: torch.optim.RAdam(ps, lr=0.01),
    "Adamax": lambda ps: torch.optim.Adamax(ps, lr=0.01),
    "Adagrad": lambda ps: torch.optim.Adagrad(ps, lr=0.05),
    "Adadelta": lambda ps: torch.optim.Adadelta(ps, lr=0.5),
    "RMSprop": lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
    "Rprop": lambda ps: torch.optim.Rprop(ps, lr=0.01),
    "ASGD": lambda ps: torch.optim.ASGD(ps, lr=0.01, t0=3),
}
if hasattr(torch.optim, "Adafactor"):
    BASES["Adafactor"] = lambda ps: torch.optim.Adafactor(ps, lr=0.01)


def _checkpoint_roundtrip(model, opt, factory):
    buffer = io.BytesIO()
    torch.save({"m": model.state_dict(), "o": opt.state_dict()}, buffer)
    buffer.seek(0)
    blob = torch.load(buffer, weights_only=True)
    fresh = make_model(seed=77)
    fresh.load_state_dict(blob["m"])
    fresh_opt = factory(fresh)
    fresh_opt.load_state_dict(blob["o"])
    return fresh, fresh_opt


@pytest.mark.parametrize("name", BASES)
def test_lam_zero_without_decay_is_the_base_bit_for_bit(name):
    data = batches(12)
    base_model = make_model()
    base_factory = lambda m: BASES[name](m.parameters())
    base_opt = base_factory(base_model)
    tr_model = make_model()
    tr_factory = lambda m: tralgo.TrajectoryRegularized(BASES[name](m.parameters()), lam=0.0, inner_steps=4, inner_lr_decay=False)
    tr_opt = tr_factory(tr_model)
    train(base_model, base_opt, data[:6])
    train(tr_model, tr_opt, data[:6])
    assert torch.equal(flat(base_model), flat(tr_model))
    base_model, base_opt = _checkpoint_roundtrip(base_model, base_opt, base_factory)
    tr_model, tr_opt = _checkpoint_roundtrip(tr_model, tr_opt, tr_factory)
    train(base_model, base_opt, data[6:])
    train(tr_model, tr_opt, data[6:])
    assert torch.equal(flat(base_model), flat(tr_model))


@pytest.mark.parametrize("name", BASES)
def test_regularized_wrapping_runs_and_resumes_exactly(name):
    factory = lambda m: tralgo.TrajectoryRegularized(BASES[name](m.parameters()), lam=0.5, inner_steps=4)
    data = batches(11)
    straight = make_model()
    train(straight, factory(straight), data)
    model = make_model()
    opt = factory(model)
    train(model, opt, data[:6])
    model, opt = _checkpoint_roundtrip(model, opt, factory)
    train(model, opt, data[6:])
    if name == "NAdam":
        # torch's own NAdam is not bit-exact across save/load: its float32 `mu_product` comes back
        # cast to the parameter's dtype (float64 here), ~1e-12 apart after 5 more steps.
        torch.testing.assert_close(flat(straight), flat(model), rtol=1e-10, atol=1e-10)
    else:
        assert torch.equal(flat(straight), flat(model))
    assert torch.isfinite(flat(model)).all()


@settings(max_examples=25, deadline=None)
@given(
    base=st.sampled_from(["SGD", "Adam", "AdamW", "RMSprop"]),
    steps=st.integers(1, 9),
    inner_steps=st.integers(1, 5),
    seed=st.integers(0, 2 ** 16),
)
def test_property_lam_zero_no_decay_equals_base(base, steps, inner_steps, seed):
    data = batches(steps, seed=seed)
    a, b = make_model(seed), make_model(seed)
    train(a, BASES[base](a.parameters()), data)
    train(b, tralgo.TrajectoryRegularized(BASES[base](b.parameters()), lam=0.0, inner_steps=inner_steps, inner_lr_decay=False), data)
    assert torch.equal(flat(a), flat(b))


@settings(max_examples=25, deadline=None)
@given(
    steps=st.integers(1, 12),
    inner_steps=st.integers(1, 5),
    lam=st.floats(0.0, 5.0),
    seed=st.integers(0, 2 ** 16),
    foreach=st.booleans(),
)
def test_property_anchors_equal_params_right_after_reanchoring(steps, inner_steps, lam, seed, foreach):
    model = make_model(seed)
    opt = tralgo.TRSGD(model.parameters(), lr=0.05, momentum=0.9, lam=lam, inner_steps=inner_steps, foreach=foreach)
    for x, y in batches(steps, seed=seed):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        if opt.param_groups[0]["inner_step"] == 0:
            before = [p.detach().clone() for p in model.parameters()]
            opt.step()
            for p, w in zip(model.parameters(), before):
                assert torch.equal(opt.state[p]["tralgo_anchor"], w)
        else:
            opt.step()
    assert opt.param_groups[0]["inner_step"] == steps % inner_steps


@settings(max_examples=20, deadline=None)
@given(lam=st.floats(0.01, 5.0), seed=st.integers(0, 2 ** 16), maximize=st.booleans(),
       weight_decay=st.sampled_from([0.0, 1e-2]))
def test_property_folded_and_generic_paths_agree(lam, seed, maximize, weight_decay):
    """TRSGD folds lam*w into SGD's weight decay; the generic path (an unknown subclass) does not."""
    class OpaqueSGD(torch.optim.SGD):  # not folded: tralgo does not know this class's math
        pass

    data = batches(7, seed=seed)
    models = [make_model(seed), make_model(seed)]
    opts = [
        tralgo.TrajectoryRegularized(cls(m.parameters(), lr=0.05, momentum=0.9, weight_decay=weight_decay, maximize=maximize),
                                     lam=lam, inner_steps=3)
        for cls, m in zip((torch.optim.SGD, OpaqueSGD), models)
    ]
    for m, o in zip(models, opts):
        train(m, o, data)
    torch.testing.assert_close(flat(models[0]), flat(models[1]), rtol=1e-10, atol=1e-12)
