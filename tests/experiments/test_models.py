import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tralgo.experiments.models import MIN_CHANNELS, MODELS, build_model, count_parameters


# ------------------------------------------------------------------------------------------
# Parameter counts derived by hand from the architectures (conv k*k*in*out without bias,
# BN 2*c, linear in*out + out), independent of the model code.
# ------------------------------------------------------------------------------------------

def _bn(c):
    return 2 * c


def _resnet_count(block, num_blocks, classes, in_ch=3):
    total = 9 * in_ch * 64 + _bn(64)
    in_planes = 64
    for stage, blocks in enumerate(num_blocks):
        planes = 64 * 2 ** stage
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            if block == "basic":
                out = planes
                total += 9 * in_planes * planes + _bn(planes) + 9 * planes * planes + _bn(planes)
            else:
                out = 4 * planes
                total += (in_planes * planes + _bn(planes) + 9 * planes * planes + _bn(planes)
                          + planes * out + _bn(out))
            if stride != 1 or in_planes != out:
                total += in_planes * out + _bn(out)
            in_planes = out
    return total + in_planes * classes + classes


def _densenet_count(blocks, growth, classes, in_ch=3):
    planes = 2 * growth
    total = 9 * in_ch * planes
    for i, n in enumerate(blocks):
        for _ in range(n):
            total += _bn(planes) + planes * 4 * growth + _bn(4 * growth) + 9 * 4 * growth * growth
            planes += growth
        if i < len(blocks) - 1:
            out = planes // 2
            total += _bn(planes) + planes * out
            planes = out
    return total + _bn(planes) + planes * classes + classes


def test_hand_derived_counts_match_the_published_figures():
    # ResNet18 CIFAR with 10 classes: 11,173,962 (the widely used CIFAR ResNet18);
    # DenseNet121 CIFAR: the commonly cited ~6.96M.
    assert _resnet_count("basic", (2, 2, 2, 2), 10) == 11_173_962
    assert _resnet_count("bottleneck", (3, 4, 23, 3), 10) == 42_512_970
    assert _densenet_count((6, 12, 24, 16), 32, 10) == 6_956_298


def test_resnet18_counts():
    assert count_parameters(build_model("resnet18", 10)) == 11_173_962
    assert count_parameters(build_model("resnet18", 100)) == _resnet_count("basic", (2, 2, 2, 2), 100)
    assert count_parameters(build_model("resnet18", 10, in_channels=1)) == \
        _resnet_count("basic", (2, 2, 2, 2), 10, in_ch=1)


@pytest.fixture(scope="module")
def deep_models():
    """ResNet101 and DenseNet121 at width 1, built once for the whole module."""
    torch.manual_seed(0)
    return {"resnet101": build_model("resnet101", 10), "densenet121": build_model("densenet121", 10)}


def test_deep_model_counts_and_one_forward(deep_models):
    assert count_parameters(deep_models["resnet101"]) == 42_512_970
    assert count_parameters(deep_models["densenet121"]) == 6_956_298
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for model in deep_models.values():
            assert model.eval()(x).shape == (1, 10)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("in_channels, size", [(1, 28), (3, 32)])
def test_forward_shapes_and_backward(name, in_channels, size):
    torch.manual_seed(0)
    model = build_model(name, 7, in_channels=in_channels, width=0.125)
    out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_resnet18_width_one_accepts_fashion_mnist_shape():
    model = build_model("resnet18", 10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_adaptive_pool_equals_the_authors_4x4_average_pool_on_32x32(name):
    torch.manual_seed(0)
    model = build_model(name, 10, width=0.125).eval()
    captured = {}
    model.pool.register_forward_hook(lambda m, inp, out: captured.update(inp=inp[0], out=out))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert captured["inp"].shape[-2:] == (4, 4)
    torch.testing.assert_close(captured["out"], F.avg_pool2d(captured["inp"], 4))


def test_resnet_init_kaiming_fan_out_and_unit_batch_norm():
    torch.manual_seed(0)
    model = build_model("resnet18", 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    big = max(convs, key=lambda m: m.weight.numel())  # 512x512x3x3: 2.4M samples
    fan_out = big.out_channels * big.kernel_size[0] * big.kernel_size[1]
    assert big.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.01)
    assert big.weight.mean().abs().item() < 1e-3
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_width_scales_channels_with_a_floor():
    resnet = build_model("resnet18", 10, width=0.25)
    assert resnet.conv1.out_channels == 16 and resnet.linear.in_features == 128
    assert count_parameters(resnet) < count_parameters(build_model("resnet18", 10)) / 10
    tiny = build_model("resnet18", 10, width=0.001)
    assert tiny.conv1.out_channels == MIN_CHANNELS and tiny.linear.in_features == MIN_CHANNELS
    dense = build_model("densenet121", 10, width=0.5)  # growth 16: stem 32 channels
    assert dense.conv1.out_channels == 32
    assert count_parameters(dense) == _densenet_count((6, 12, 24, 16), 16, 10)
    bottleneck = build_model("resnet101", 10, width=0.125)
    assert bottleneck.linear.in_features == 4 * 64  # 512 * 0.125 planes, expansion 4


def test_cnn_architecture_and_count():
    model = build_model("cnn", 10, in_channels=1)
    # conv 1->32 (3x3+bias), conv 32->64, fc 64*7*7->128, fc 128->10
    expected = (9 * 32 + 32) + (9 * 32 * 64 + 64) + (64 * 49 * 128 + 128) + (128 * 10 + 10)
    assert count_parameters(model) == expected == 421_642
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_cnn_learns_a_fixed_batch():
    # Numerical sanity: plain SGD drives the loss on one batch far down.
    torch.manual_seed(0)
    model = build_model("cnn", 10, in_channels=1)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    first = None
    for _ in range(25):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


def test_models_are_deterministic_given_the_seed():
    torch.manual_seed(3)
    a = build_model("resnet18", 10, width=0.125)
    torch.manual_seed(3)
    b = build_model("resnet18", 10, width=0.125)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="vgg16", num_classes=10), "model name must be one of cnn, resnet18"),
    (dict(name="cnn", num_classes=0), "num_classes must be an integer >= 1"),
    (dict(name="cnn", num_classes=10, in_channels=0), "in_channels must be an integer >= 1"),
    (dict(name="cnn", num_classes=10, width=0), "width must be a finite number > 0"),
    (dict(name="cnn", num_classes=10, width=float("inf")), "width must be a finite number > 0"),
])
def test_bad_arguments_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)
