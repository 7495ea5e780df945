"""The FCN-score judge: a segmentation network trained on real photos only, then frozen.

For the procedural stand-in, ``JudgeNet`` (a small fully convolutional network with a dilated
context module and two skip connections) is trained on the ``judge`` split, whose scenes
appear neither in the GAN's training set nor in its validation set. For real Cityscapes a user
plugs in their own 19-class model as a TorchScript file (``load_judge``), as pix2pix used a
pre-trained FCN-8s.
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from tralgo.experiments.io import atomic_torch_save, atomic_write_json
from tralgo.gan.data import NUM_CLASSES, ProceduralScenes
from tralgo.gan.metrics import fcn_score

JUDGE_FILE = "judge.pt"


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class JudgeNet(nn.Module):
    """Encoder to 1/4 resolution, dilated context (receptive field about 60 px), decoder with skips."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 32) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be an int >= 1, got {width!r}")
        w1, w2, w3 = width, 2 * width, 3 * width
        self.full, self.down_half = _conv(3, w1), _conv(w1, w2, stride=2)
        self.context = nn.Sequential(_conv(w2, w3, stride=2), _conv(w3, w3, dilation=2), _conv(w3, w3, dilation=4))
        self.up_half, self.up_full = _conv(w3 + w2, w2), _conv(w2 + w1, w1)
        self.classifier = nn.Conv2d(w1, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        full = self.full(x)
        half = self.down_half(full)
        deep = self.context(half)
        deep = F.interpolate(deep, size=half.shape[-2:], mode="bilinear", align_corners=False)
        half = self.up_half(torch.cat([deep, half], 1))
        half = F.interpolate(half, size=full.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.up_full(torch.cat([half, full], 1)))


def _batches(dataset, batch_size: int):
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield torch.stack([it["target"] for it in items]), torch.stack([it["label"] for it in items])


def train_judge(out_dir: str | Path, *, size: int = 64, num_images: int = 1000, iters: int = 1500,
                batch_size: int = 16, lr: float = 2e-3, width: int = 32, seed: int = 0, val_images: int = 200,
                log=print) -> dict:
    """Train ``JudgeNet`` on real photos of the judge split; save ``judge.pt`` and ``result.json``.

    Returns the result: the judge's FCN-score on the real photos of the validation split (the
    "GT" row of the tables).
    """
    out_dir = Path(out_dir)
    start = time.time()
    torch.manual_seed(seed)
    data = ProceduralScenes("judge", num_images, size)
    net = JudgeNet(width=width)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 0.5 * (1 + math.cos(math.pi * it / iters)))
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for it in range(iters):
        index = torch.randint(len(data), (batch_size,), generator=gen)
        photos, labels = data.targets[index], data.labels[index]
        flip = torch.rand(batch_size, generator=gen) < 0.5  # mirror half the batch
        photos = torch.where(flip[:, None, None, None], photos.flip(-1), photos)
        labels = torch.where(flip[:, None, None], labels.flip(-1), labels)
        loss = F.cross_entropy(net(photos), labels, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (it + 1) % max(1, iters // 10) == 0:
            log(f"judge iter {it + 1}/{iters} loss {loss.item():.4f}")
    net.eval()
    config = {"size": size, "num_images": num_images, "iters": iters, "batch_size": batch_size, "lr": lr,
              "width": width, "seed": seed, "num_classes": NUM_CLASSES}
    atomic_torch_save({"config": config, "state_dict": net.state_dict()}, out_dir / JUDGE_FILE)
    val = ProceduralScenes("val", val_images, size)
    gt = fcn_score(net, _batches(val, 50), NUM_CLASSES)
    result = {"status": "completed", "config": config, "gt_val": gt, "wall_s": time.time() - start}
    atomic_write_json(out_dir / "result.json", result)
    atomic_write_json(out_dir / "config.json", config)
    return result


class _Frozen(nn.Module):
    """The judge in eval mode with no gradients, whatever a caller does with ``.train()``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "_Frozen":
        return super().train(False)

    def forward(self, photos: Tensor) -> Tensor:
        return self.net(photos)


class _UnitRangeJudge(nn.Module):
    """A user's model takes RGB in [0, 1]; our photos are in [-1, 1]."""

    def __init__(self, model: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        # Not registered as a submodule: an exported program refuses .train()/.eval() calls; it
        # is loaded on its device, in inference mode, with gradients off (_load_user_model).
        object.__setattr__(self, "model", model)

    def forward(self, photos: Tensor) -> Tensor:
        return self.model((photos + 1.0) / 2.0)


def _load_user_model(path: Path, device) -> Callable[[Tensor], Tensor] | None:
    """A ``torch.export`` program (``*.pt2``) or a TorchScript file, else None."""
    if path.suffix == ".pt2":
        model = torch.export.load(str(path)).module().to(device)
    else:
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated but still what many users have
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError):
            return None
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_judge(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A frozen judge in eval mode: a ``tralgo gan judge`` folder (or its judge.pt), or a user's
    segmentation model saved with ``torch.export.save`` (``*.pt2``) or as TorchScript, mapping
    N x 3 x H x W RGB in [0, 1] to N x 19 x h x w Cityscapes trainId logits."""
    path = Path(path)
    if path.is_dir():
        path = path / JUDGE_FILE
    if not path.exists():
        raise FileNotFoundError(f"judge {str(path)!r} does not exist; train one with `tralgo gan judge --out DIR`")
    user_model = _load_user_model(path, device)
    if user_model is not None:
        return _Frozen(_UnitRangeJudge(user_model)).to(device)
    saved = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ValueError(f"{str(path)!r} is neither a tralgo judge checkpoint nor a TorchScript model")
    net = JudgeNet(num_classes=saved["config"]["num_classes"], width=saved["config"]["width"])
    net.load_state_dict(saved["state_dict"])
    judge = _Frozen(net).to(device)
    judge.config = saved["config"]
    return judge
