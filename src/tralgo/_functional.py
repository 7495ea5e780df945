"""The tensor math of TRAlgo, separate from the bookkeeping of the wrapper.

Two operations touch tensors:

* ``refresh_anchors``: ``anchor <- w`` (start of an inner loop);
* ``add_proximal_grad``: ``g <- g + c * (w - anchor)``, the gradient of ``c/2 ||w - anchor||^2``
  added to the data gradient, where ``c`` already carries the sign for ``maximize``.

Each has a single-tensor (for-loop) path, which is the readable ground truth, and a multi-tensor
path (``torch._foreach_*``) that is used when the base optimizer runs its own foreach or fused
kernels. ``add_anchor_pull`` is the half of the proximal gradient that remains when the ``c * w``
half is folded into a base optimizer's L2 weight decay (see ``TrajectoryRegularized``).

DTensor parameters (FSDP2's ``fully_shard``, tensor parallelism): every operation here is
elementwise over tensors that share one layout (a parameter, its gradient, its anchor), so it is
done on the local shards. Not every ``_foreach_*`` op has a DTensor sharding strategy
(``_foreach_copy_`` has none in torch 2.13), and the local op also skips DTensor's dispatch.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor


try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed
    DTensor = None


def local_shards(*tensor_lists: list[Tensor]) -> tuple[list[Tensor], ...]:
    """The lists with each DTensor replaced by its local shard (a view: in-place ops write the
    DTensor), when the tensors at one position share the same mesh and placements; otherwise
    left as they are, for DTensor to redistribute or refuse."""
    if DTensor is None or not any(isinstance(t, DTensor) for t in tensor_lists[0]):
        return tensor_lists
    out = tuple([] for _ in tensor_lists)
    for items in zip(*tensor_lists):
        first = items[0]
        same_layout = all(
            isinstance(t, DTensor) and t.device_mesh == first.device_mesh and t.placements == first.placements
            and t.shape == first.shape for t in items
        )
        for bucket, t in zip(out, items):
            bucket.append(t.to_local() if same_layout else t)
    return out


def _by_device_and_dtype(*tensor_lists: list[Tensor]) -> list[tuple[list[Tensor], ...]]:
    """Split parallel lists into buckets whose tensors share device and dtype (foreach needs it)."""
    buckets: dict[tuple, tuple[list[Tensor], ...]] = defaultdict(lambda: tuple([] for _ in tensor_lists))
    for items in zip(*tensor_lists):
        key = (items[0].device, items[0].dtype)
        for bucket, item in zip(buckets[key], items):
            bucket.append(item)
    return list(buckets.values())


def refresh_anchors(anchors: list[Tensor], params: list[Tensor], *, foreach: bool) -> None:
    """``anchor <- w`` for every pair."""
    if not anchors:
        return
    anchors, params = local_shards(anchors, params)
    if foreach:
        for bucket_anchors, bucket_params in _by_device_and_dtype(anchors, params):
            torch._foreach_copy_(bucket_anchors, bucket_params)
    else:
        for anchor, param in zip(anchors, params):
            anchor.copy_(param)


def add_proximal_grad(
    grads: list[Tensor], params: list[Tensor], anchors: list[Tensor], coeff: float, *, foreach: bool
) -> None:
    """``g <- g + coeff * (w - anchor)``, in place.

    The difference is formed first (as the authors' code does): ``w - anchor`` of two nearby
    floats is exact, so the term is rounded once, when it is scaled.
    """
    if not grads or coeff == 0.0:
        return
    grads, params, anchors = local_shards(grads, params, anchors)
    if foreach:
        for bucket_grads, bucket_params, bucket_anchors in _by_device_and_dtype(grads, params, anchors):
            diffs = torch._foreach_sub(bucket_params, bucket_anchors)
            torch._foreach_add_(bucket_grads, diffs, alpha=coeff)
    else:
        for grad, param, anchor in zip(grads, params, anchors):
            grad.add_(param - anchor, alpha=coeff)


def add_anchor_pull(grads: list[Tensor], anchors: list[Tensor], coeff: float, *, foreach: bool) -> None:
    """``g <- g - coeff * anchor``, in place: the proximal gradient once ``coeff * w`` is folded
    into the base optimizer's L2 weight decay."""
    if not grads or coeff == 0.0:
        return
    grads, anchors = local_shards(grads, anchors)
    if foreach:
        for bucket_grads, bucket_anchors in _by_device_and_dtype(grads, anchors):
            torch._foreach_add_(bucket_grads, bucket_anchors, alpha=-coeff)
    else:
        for grad, anchor in zip(grads, anchors):
            grad.add_(anchor, alpha=-coeff)
