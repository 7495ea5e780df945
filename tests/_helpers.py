"""Small shared pieces of the core tests."""
import pytest
import torch


def make_model(seed: int = 0, dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).to(dtype)


def batches(n: int, seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 5, generator=g, dtype=dtype), torch.randn(8, 3, generator=g, dtype=dtype)) for _ in range(n)]


def train(model, opt, data, scheduler=None, closure=False):
    for x, y in data:
        def loss_fn():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss
        if closure:
            opt.step(loss_fn)
        else:
            loss_fn()
            opt.step()
        if scheduler is not None:
            scheduler.step()
    return model


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


class Spy(torch.optim.Optimizer):
    """A third-party-style base (plain SGD, lr read from the group) that records what it was given."""

    def __init__(self, params, lr=0.1, maximize=False):
        super().__init__(params, dict(lr=lr, maximize=maximize))
        self.seen = []  # per step: [(lr, [grad clones])] per group

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        record = []
        for group in self.param_groups:
            grads = [None if p.grad is None else p.grad.clone() for p in group["params"]]
            record.append((group["lr"], grads))
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=group["lr"] if group["maximize"] else -group["lr"])
        self.seen.append(record)
        return loss


# Device-touching tests run on CUDA too when it is present, and report a skip when it is not.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]
