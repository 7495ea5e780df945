"""FSDP2 (``fully_shard``, DTensor parameters), 2 CPU processes over gloo: every step path trains
across re-anchorings, and a ``torch.distributed.checkpoint`` save/load into fresh objects continues
bit for bit like the uninterrupted run."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tralgo
from _helpers import batches, make_model

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

TR = dict(lam=0.5, inner_steps=3)  # 8 steps: re-anchors at steps 3 and 6, saved at step 5
VARIANTS = {
    "TRSGD-for-loop": lambda p: tralgo.TRSGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3, foreach=False, **TR),
    "TRSGD-foreach-folded": lambda p: tralgo.TRSGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3, **TR),
    "TRSGD-compiled": lambda p: tralgo.TRSGD(p, lr=0.05, momentum=0.9, fused="compiled", **TR),
    "TRAdam-foreach-folded": lambda p: tralgo.TRAdam(p, lr=0.01, weight_decay=1e-3, **TR),
    "TRAdamW-compiled": lambda p: tralgo.TRAdamW(p, lr=0.01, fused="compiled", **TR),
    "RMSprop-base": lambda p: tralgo.TrajectoryRegularized(torch.optim.RMSprop(p, lr=0.01), **TR),
}
STEPS, SAVE_AT = 8, 5


def _train(model, opt, data):
    for x, y in data:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _sharded(name):
    from torch.distributed.fsdp import fully_shard

    model = make_model(seed=0)
    for layer in (model[0], model[2]):
        fully_shard(layer)
    fully_shard(model)
    return model, VARIANTS[name](model.parameters())


def _full(model):
    return torch.cat([p.full_tensor().reshape(-1) for p in model.parameters()])


def _worker(rank, world_size, tmp, names):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)
    from torch.distributed.tensor import DTensor

    from tralgo import _fused

    _fused.COMPILE_BACKEND = "eager"  # the math on DTensor shards, without inductor's compile time
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world_size)
    try:
        results = {}
        data = batches(STEPS, seed=100 + rank)  # each rank its own data
        for name in names:
            model, opt = _sharded(name)
            assert isinstance(next(model.parameters()), DTensor)
            _train(model, opt, data)
            uninterrupted = _full(model)
            trained_anchor = opt.state[next(model.parameters())]["tralgo_anchor"]
            assert isinstance(trained_anchor, DTensor)

            model, opt = _sharded(name)
            _train(model, opt, data[:SAVE_AT])
            checkpoint = f"{tmp}/{name}"
            dcp.save({"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)},
                     checkpoint_id=checkpoint)
            model, opt = _sharded(name)  # fresh objects
            state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
            dcp.load(state, checkpoint_id=checkpoint)
            set_model_state_dict(model, state["model"])
            set_optimizer_state_dict(model, opt, state["optim"])
            assert opt.param_groups[0]["inner_step"] == SAVE_AT % TR["inner_steps"]
            _train(model, opt, data[SAVE_AT:])
            results[name] = dict(uninterrupted=uninterrupted, resumed=_full(model),
                                 compiled=getattr(opt._compiled_kernel, "available", None))
        torch.save(results, os.path.join(tmp, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_fsdp2_every_path_and_dcp_resume_is_exact(tmp_path):
    names = list(VARIANTS)
    mp.spawn(_worker, args=(2, str(tmp_path), names), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    initial = torch.cat([p.detach().reshape(-1) for p in make_model(seed=0).parameters()])
    for name in names:
        r0, r1 = ranks[0][name], ranks[1][name]
        assert torch.equal(r0["uninterrupted"], r1["uninterrupted"]), name  # one model, gathered the same
        assert not torch.equal(r0["uninterrupted"], initial), name  # it trained
        assert torch.equal(r0["resumed"], r0["uninterrupted"]), name  # DCP resume is bit for bit
        assert torch.equal(r1["resumed"], r1["uninterrupted"]), name
        if "compiled" in name:
            assert r0["compiled"] and r1["compiled"], name  # the kernel ran on the shards, no fallback
