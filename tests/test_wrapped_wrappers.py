"""TRAlgo and other libraries' optimizer wrappers (issue 11, item 6).

A base whose ``state`` is not what its ``state_dict()`` saves would lose TRAlgo's anchors from
every checkpoint, so ``TrajectoryRegularized`` refuses it at construction and names the order
that works: the other wrapper outside, ``Lookahead(TRSGD(...))``. That order resumes bit for bit.
"""
import io
from collections import OrderedDict, defaultdict

import pytest
import torch

import tralgo
from tralgo._trajectory import ANCHOR_KEY

from _helpers import batches, flat, make_model, train


class TimmStyleLookahead(torch.optim.Optimizer):
    """The pattern of ``timm.optim.Lookahead`` (timm 1.0.31, read from its wheel; timm itself
    does not import here, it needs torchvision): ``Optimizer.__init__`` is skipped, ``param_groups`` aliases the base's, its
    own ``state`` stays empty, slow weights live in the base's state, and ``state_dict()`` is the
    base's."""

    def __init__(self, base_optimizer, alpha=0.5, k=6):
        defaults = dict(lookahead_alpha=alpha, lookahead_k=k, lookahead_step=0)
        self._base_optimizer = base_optimizer
        self.param_groups = base_optimizer.param_groups
        self.defaults = base_optimizer.defaults
        self.defaults.update(defaults)
        self.state = defaultdict(dict)
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        for name, default in defaults.items():
            for group in self._base_optimizer.param_groups:
                group.setdefault(name, default)

    @torch.no_grad()
    def update_slow(self, group):
        for fast_p in group["params"]:
            if fast_p.grad is None:
                continue
            param_state = self._base_optimizer.state[fast_p]
            if "lookahead_slow_buff" not in param_state:
                param_state["lookahead_slow_buff"] = torch.empty_like(fast_p)
                param_state["lookahead_slow_buff"].copy_(fast_p)
            slow = param_state["lookahead_slow_buff"]
            slow.add_(fast_p - slow, alpha=group["lookahead_alpha"])
            fast_p.copy_(slow)

    def step(self, closure=None):
        loss = self._base_optimizer.step(closure)
        for group in self._base_optimizer.param_groups:
            group["lookahead_step"] += 1
            if group["lookahead_step"] % group["lookahead_k"] == 0:
                self.update_slow(group)
        return loss

    def state_dict(self):
        return self._base_optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self._base_optimizer.load_state_dict(state_dict)
        self.param_groups = self._base_optimizer.param_groups
        for name in ("lookahead_alpha", "lookahead_k", "lookahead_step"):
            for group in self.param_groups:
                group.setdefault(name, self.defaults[name])


def _po_lookahead():
    return pytest.importorskip("pytorch_optimizer").Lookahead


def test_tr_around_a_timm_style_lookahead_is_refused_naming_the_order_that_works():
    # Before: accepted; the anchors went into the Lookahead's own (never saved) state.
    model = make_model()
    with pytest.raises(ValueError, match=r"does not save TimmStyleLookahead\.state.*"
                                         r"TimmStyleLookahead\(TrajectoryRegularized\(\.\.\.\)\), e\.g\. Lookahead\(TRSGD"):
        tralgo.TrajectoryRegularized(TimmStyleLookahead(torch.optim.SGD(model.parameters(), lr=0.1)), lam=0.5)


def test_tr_around_pytorch_optimizer_lookahead_is_refused_naming_the_order_that_works():
    # Before: accepted; load_state_dict then refused its {lookahead_state, base_optimizer} dict.
    lookahead = _po_lookahead()
    model = make_model()
    with pytest.raises(ValueError, match=r"not in torch\.optim's format \(it has \['base_optimizer', 'lookahead_state'\]\)"
                                         r".*Lookahead\(TrajectoryRegularized\(\.\.\.\)\)"):
        tralgo.TrajectoryRegularized(lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=3), lam=0.5)


def test_the_refusal_probe_leaves_the_base_untouched():
    model = make_model()
    base = TimmStyleLookahead(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError):
        tralgo.TrajectoryRegularized(base, lam=0.5)
    assert len(base.state) == 0 and len(base._base_optimizer.state) == 0


def test_a_wrapper_that_saves_its_state_in_torch_format_is_accepted():
    # The harness's Lookahead keeps slow weights in the base's state and saves the base's dict:
    # TR around it keeps its anchors in checkpoints.
    from tralgo.experiments.optimizers import Lookahead

    model = make_model()
    opt = tralgo.TrajectoryRegularized(Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=3), lam=0.5, inner_steps=4)
    train(model, opt, batches(2))
    assert all(ANCHOR_KEY in entry for entry in opt.state_dict()["state"].values())


def _resume_is_bit_exact(build, steps_before, steps_after):
    """Train, checkpoint through torch.save, continue; load into fresh objects and continue: the
    two runs must agree bit for bit (and the checkpoint must carry the anchors)."""
    data = batches(steps_before + steps_after)
    model = make_model()
    opt = build(model)
    train(model, opt, data[:steps_before])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    train(model, opt, data[steps_before:])

    buffer.seek(0)
    blob = torch.load(buffer, weights_only=True)
    fresh = make_model(seed=5)
    fresh.load_state_dict(blob["model"])
    fresh_opt = build(fresh)
    fresh_opt.load_state_dict(blob["opt"])
    train(fresh, fresh_opt, data[steps_before:])
    assert torch.equal(flat(fresh), flat(model))
    return blob["opt"]


def test_timm_style_lookahead_around_trsgd_resumes_bit_for_bit():
    def build(model):
        return TimmStyleLookahead(tralgo.TRSGD(model.parameters(), lr=0.1, momentum=0.9, lam=0.5, inner_steps=4), k=3)

    # 7 steps: inside a TR inner loop (k = 3 of 4) and a Lookahead cycle (step 1 of 3).
    saved = _resume_is_bit_exact(build, 7, 8)
    assert all(ANCHOR_KEY in entry and "lookahead_slow_buff" in entry for entry in saved["state"].values())


def test_pytorch_optimizer_lookahead_around_trsgd_resumes_bit_for_bit():
    lookahead = _po_lookahead()

    def build(model):
        return lookahead(tralgo.TRSGD(model.parameters(), lr=0.1, momentum=0.9, lam=0.5, inner_steps=4), k=3)

    saved = _resume_is_bit_exact(build, 7, 8)
    assert all(ANCHOR_KEY in entry for entry in saved["base_optimizer"]["state"].values())
    assert saved["lookahead_state"]  # its slow weights travel in its own part of the dict


def test_lookahead_outside_changes_the_trajectory_like_tr_inside():
    # The recommended order is not a no-op around TR: with lam = 0 it is Lookahead over plain
    # SGD exactly, with lam > 0 it differs from it.
    data = batches(9)

    def run(lam):
        model = make_model()
        opt = TimmStyleLookahead(tralgo.TRSGD(model.parameters(), lr=0.1, lam=lam, inner_steps=1 if lam == 0 else 4), k=3)
        return flat(train(model, opt, data))

    plain_model = make_model()
    plain = flat(train(plain_model, TimmStyleLookahead(torch.optim.SGD(plain_model.parameters(), lr=0.1), k=3), data))
    assert torch.equal(run(0.0), plain)
    assert not torch.allclose(run(0.5), plain)


@pytest.mark.parametrize("name", ["Lookahead", "OrthoGrad", "TRAC", "ScheduleFreeWrapper"])
def test_pytorch_optimizer_wrappers_either_resume_exactly_or_are_refused(name):
    po = pytest.importorskip("pytorch_optimizer")
    if not hasattr(po, name):
        pytest.skip(f"pytorch_optimizer {getattr(po, '__version__', '')} has no {name}")
    wrapper = getattr(po, name)

    def build(model):
        return tralgo.TrajectoryRegularized(wrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)),
                                            lam=0.5, inner_steps=4)

    try:
        build(make_model())
    except ValueError as error:
        assert f"wrap the other way round: {name}(TrajectoryRegularized(...))" in str(error)
        return
    saved = _resume_is_bit_exact(build, 7, 8)
    # Every parameter's entry carries its anchor (TRAC also saves a non-parameter entry, "trac").
    assert all(ANCHOR_KEY in saved["state"][i] for group in saved["param_groups"] for i in group["params"])
