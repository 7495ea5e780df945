"""torch.compile (no recompilation at every inner step) and DDP (replicas stay identical)."""
import os

import pytest
import torch
import torch.multiprocessing as mp

import tralgo
from _helpers import batches, flat, make_model, train


def _compiled_training(compile_what):
    torch._dynamo.reset()
    model = make_model(dtype=torch.float32)
    opt = tralgo.TRSGD(model.parameters(), lr=0.05, momentum=0.9, lam=0.5, inner_steps=4)

    def loss_and_backward(x, y):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    if compile_what == "training step":
        def train_step(x, y):
            loss = loss_and_backward(x, y)
            opt.step()
            opt.zero_grad()
            return loss
        train_step = torch.compile(train_step, backend="eager")
    else:
        compiled_step = torch.compile(opt.step, backend="eager")

        def train_step(x, y):
            loss = loss_and_backward(x, y)
            compiled_step()
            opt.zero_grad()
            return loss

    data = batches(24, dtype=torch.float32)
    for x, y in data[:12]:  # three inner loops: every control-flow shape has been seen
        train_step(x, y)
    graphs_after_warmup = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for x, y in data[12:]:
        train_step(x, y)
    return model, graphs_after_warmup, torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("compile_what", ["training step", "opt.step"])
def test_compile_matches_eager_and_does_not_recompile_per_inner_step(compile_what):
    compiled, warm, final = _compiled_training(compile_what)
    assert final == warm, f"recompiled during steady state: {warm} -> {final} graphs"
    eager = make_model(dtype=torch.float32)
    train(eager, tralgo.TRSGD(eager.parameters(), lr=0.05, momentum=0.9, lam=0.5, inner_steps=4), batches(24, dtype=torch.float32))
    torch.testing.assert_close(flat(compiled), flat(eager), rtol=1e-6, atol=1e-7)


def _ddp_worker(rank, world_size, init_file, out_dir):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        model = DDP(make_model(seed=0))
        opt = tralgo.TRSGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4, lam=0.5, inner_steps=4)
        for x, y in batches(23, seed=100 + rank):  # each rank sees different data; 23 steps = 5+ inner loops
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        torch.save({"params": flat(model.module), "anchors": torch.cat([opt.state[p]["tralgo_anchor"].reshape(-1) for p in model.parameters()]),
                    "inner_step": opt.param_groups[0]["inner_step"]}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_keep_identical_replicas(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["params"], r1["params"])
    assert torch.equal(r0["anchors"], r1["anchors"])
    assert r0["inner_step"] == r1["inner_step"] == 23 % 4
    assert not torch.equal(r0["params"], flat(make_model(seed=0)))  # it trained
