"""pix2pix networks (Isola et al., CVPR 2017), written from the paper's description.

* ``UnetGenerator``: an encoder-decoder of ``num_downs`` stride-2 4x4 convolutions with skip
  connections between mirrored levels. Encoder: Conv-BatchNorm-LeakyReLU(0.2) (no norm on the
  first and the innermost level); decoder: ReLU-ConvTranspose-BatchNorm, dropout 0.5 in the
  intermediate ``8 * ngf`` levels, ``tanh`` output. ``unet_256`` is ``num_downs = 8``, which
  takes a 256x256 image down to 1x1. Convolutions followed by BatchNorm have no bias (the norm's
  shift makes it redundant); the last transposed convolution has one.
* ``NLayerDiscriminator``: the conditional PatchGAN. It sees ``cat(input, photo)`` and outputs
  a map of real/fake logits, one per overlapping patch; ``n_layers = 3`` gives 70x70 patches.
* ``init_weights``: N(0, 0.02) for convolutions, N(1, 0.02) scale and zero shift for BatchNorm.

``expected_generator_params`` / ``expected_discriminator_params`` count parameters from the
layer formulas alone, so tests can check the modules against an independent count.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

_KERNEL = 4  # every pix2pix convolution is 4x4


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


class _UnetBlock(nn.Module):
    """One U-Net level: down-sample, run the inner levels, up-sample, concatenate the skip.

    ``outer_nc`` channels come in (and go out before the skip concatenation); ``inner_nc`` is
    the width of this level's down-sampled feature map.
    """

    def __init__(self, outer_nc: int, inner_nc: int, *, in_nc: int | None = None, inner: nn.Module | None = None,
                 outermost: bool = False, dropout: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        in_nc = outer_nc if in_nc is None else in_nc
        innermost = inner is None
        down_conv = nn.Conv2d(in_nc, inner_nc, _KERNEL, stride=2, padding=1, bias=False)
        # The innermost level gets only its own features back; the others get their
        # features concatenated with the inner level's output (skip), hence 2 * inner_nc.
        up_in = inner_nc if innermost else 2 * inner_nc
        if outermost:
            layers = [down_conv, inner, nn.ReLU(True),
                      nn.ConvTranspose2d(up_in, outer_nc, _KERNEL, stride=2, padding=1), nn.Tanh()]
        else:
            down = [nn.LeakyReLU(0.2, True), down_conv]
            if not innermost:
                down += [nn.BatchNorm2d(inner_nc)]  # the 1x1 bottleneck is never normalised
            up = [nn.ReLU(True), nn.ConvTranspose2d(up_in, outer_nc, _KERNEL, stride=2, padding=1, bias=False),
                  nn.BatchNorm2d(outer_nc)]
            if dropout:
                up += [nn.Dropout(0.5)]
            layers = down + ([] if innermost else [inner]) + up
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


class UnetGenerator(nn.Module):
    """pix2pix U-Net generator.

    Args:
        in_channels / out_channels: image channels of the input (label map) and output (photo).
        num_downs: number of stride-2 levels (>= 5); the input side must be divisible by
            ``2 ** num_downs``. 8 for 256x256 (``unet_256``), 7 for 128x128, 6 for 64x64.
        ngf: filters of the outermost level; widths are ngf, 2ngf, 4ngf, then 8ngf.
        dropout: dropout 0.5 in the ``num_downs - 5`` intermediate 8*ngf decoder levels.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, num_downs: int = 8, ngf: int = 64,
                 dropout: bool = True) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        _check_int("out_channels", out_channels, 1)
        _check_int("num_downs", num_downs, 5)
        _check_int("ngf", ngf, 1)
        self.num_downs = num_downs
        block = _UnetBlock(8 * ngf, 8 * ngf)  # innermost
        for _ in range(num_downs - 5):
            block = _UnetBlock(8 * ngf, 8 * ngf, inner=block, dropout=dropout)
        for mult in (4, 2, 1):
            block = _UnetBlock(mult * ngf, 2 * mult * ngf, inner=block)
        self.model = _UnetBlock(out_channels, ngf, in_nc=in_channels, inner=block, outermost=True)

    def forward(self, x: Tensor) -> Tensor:
        factor = 2 ** self.num_downs
        if x.dim() != 4 or x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"UnetGenerator(num_downs={self.num_downs}) needs N x C x H x W input with H and W divisible "
                f"by {factor}, got shape {tuple(x.shape)}"
            )
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """Conditional PatchGAN: ``n_layers`` stride-2 convolutions, one stride-1, one to 1 channel.

    Args:
        in_channels: channels of ``cat(input, photo)`` (6 for RGB label map + RGB photo).
        ndf: filters of the first layer; doubled per layer up to 8 * ndf.
        n_layers: 3 gives 70x70 receptive fields (pix2pix's default), 1 gives 16x16, 2 gives 34x34.
    """

    def __init__(self, in_channels: int = 6, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        _check_int("ndf", ndf, 1)
        _check_int("n_layers", n_layers, 1)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, _KERNEL, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        for n in range(1, n_layers + 1):
            prev, cur = ndf * min(2 ** (n - 1), 8), ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(prev, cur, _KERNEL, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(cur), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * min(2 ** n_layers, 8), 1, _KERNEL, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """pix2pix's 'normal' init: conv weights N(0, gain), conv biases 0, BatchNorm scale N(1, gain)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def expected_generator_params(in_channels: int = 3, out_channels: int = 3, num_downs: int = 8, ngf: int = 64) -> int:
    """Parameter count of ``UnetGenerator`` from the layer list (weights k*k*in*out, biases, BN)."""
    kk = _KERNEL * _KERNEL
    conv = lambda cin, cout, bias=False: kk * cin * cout + (cout if bias else 0)  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    wide = 8 * ngf
    # innermost: down conv (no norm), up conv (no skip on its input) + BN
    total = conv(wide, wide) + conv(wide, wide) + bn(wide)
    # intermediate 8ngf levels: down conv + BN, up conv from the concatenated skip + BN
    total += (num_downs - 5) * (conv(wide, wide) + bn(wide) + conv(2 * wide, wide) + bn(wide))
    for mult in (4, 2, 1):
        outer, inner = mult * ngf, 2 * mult * ngf
        total += conv(outer, inner) + bn(inner) + conv(2 * inner, outer) + bn(outer)
    # outermost: down conv without norm or bias, up conv with bias to the output image
    total += conv(in_channels, ngf) + conv(2 * ngf, out_channels, bias=True)
    return total


def expected_discriminator_params(in_channels: int = 6, ndf: int = 64, n_layers: int = 3) -> int:
    """Parameter count of ``NLayerDiscriminator`` from the layer list."""
    kk = _KERNEL * _KERNEL
    total = kk * in_channels * ndf + ndf  # first conv has a bias (no norm after it)
    for n in range(1, n_layers + 1):
        prev, cur = ndf * min(2 ** (n - 1), 8), ndf * min(2 ** n, 8)
        total += kk * prev * cur + 2 * cur  # conv without bias + BatchNorm
    total += kk * ndf * min(2 ** n_layers, 8) + 1  # final 1-channel conv with bias
    return total


def receptive_field(n_layers: int) -> int:
    """Side of the input patch one PatchGAN output sees (70 for n_layers = 3)."""
    field = 1
    # walk back from the output: two stride-1 convs, then n_layers stride-2 convs
    for stride in [1, 1] + [2] * n_layers:
        field = (field - 1) * stride + _KERNEL
    return field
