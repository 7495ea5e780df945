import statistics
import time

import pytest
import torch
import torch.nn.functional as F

from tralgo.experiments.augment import Augmentation, default_augmentation, prepare_batch

MEAN3, STD3 = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _images(batch=8, channels=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8, generator=g)


def _normalise(images, mean, std):
    mean = torch.tensor(mean).view(1, -1, 1, 1)
    std = torch.tensor(std).view(1, -1, 1, 1)
    return (images.double() / 255 - mean) / std


def _candidates(image, pad):
    """Every (row offset, col offset, flipped) -> crop of the zero-padded uint8 image."""
    padded = F.pad(image, (pad, pad, pad, pad))
    _, h, w = image.shape
    out = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            out[(dy, dx, False)] = crop
            out[(dy, dx, True)] = crop.flip(-1)
    return out


def _identify(output, image, pad, mean, std):
    """Which (dy, dx, flipped) produced ``output`` (a normalised crop), or None."""
    matches = [key for key, crop in _candidates(image, pad).items()
               if torch.allclose(output.double(), _normalise(crop[None], mean, std)[0], atol=1e-5)]
    return matches[0] if matches else None


def test_eval_mode_is_plain_normalisation():
    images = _images()
    out = prepare_batch(images, MEAN3, STD3, None, None)
    assert out.dtype == torch.float32 and out.shape == images.shape
    torch.testing.assert_close(out.double(), _normalise(images, MEAN3, STD3), atol=1e-6, rtol=0)
    # An identity augmentation is the same as evaluation and consumes no randomness.
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    assert torch.equal(prepare_batch(images, MEAN3, STD3, Augmentation(), g), out)
    assert torch.equal(g.get_state(), state)


def test_single_channel_28x28():
    images = _images(batch=5, channels=1, size=28)
    out = prepare_batch(images, (0.286,), (0.353,), Augmentation(crop_padding=2, hflip=True),
                        torch.Generator().manual_seed(0))
    assert out.shape == (5, 1, 28, 28) and out.dtype == torch.float32


def test_every_output_is_a_padded_crop_possibly_flipped():
    images = _images(batch=16)
    out = prepare_batch(images, MEAN3, STD3, Augmentation(crop_padding=4, hflip=True),
                        torch.Generator().manual_seed(1))
    found = [_identify(out[i], images[i], 4, MEAN3, STD3) for i in range(len(images))]
    assert None not in found
    # Offsets and flips actually vary across the batch.
    assert len({(dy, dx) for dy, dx, _ in found}) > 4
    assert {flipped for _, _, flipped in found} == {True, False}


def test_crop_offsets_cover_the_whole_range_uniformly():
    # A ramp image (pixel value 1 + row*size + col) whose centre output pixel reveals the offset.
    size, pad, n = 8, 3, 2000
    image = (1 + torch.arange(size * size)).to(torch.uint8).view(1, 1, size, size)
    out = prepare_batch(image.expand(n, 1, size, size).contiguous(), (0.0,), (1 / 255,),
                        Augmentation(crop_padding=pad), torch.Generator().manual_seed(0))
    # With mean 0 and std 1/255 the output is the raw pixel value.
    centre = out[:, 0, size // 2, size // 2].round().long() - 1
    # Output (r, c) of a crop at offset (dy, dx) is source (r + dy - pad, c + dx - pad); the
    # centre never falls in the padding because pad < size / 2.
    dy = centre // size - size // 2 + pad
    dx = centre % size - size // 2 + pad
    counts = torch.bincount(dy * (2 * pad + 1) + dx, minlength=(2 * pad + 1) ** 2)
    assert counts.numel() == (2 * pad + 1) ** 2 and counts.sum() == n
    expected = n / counts.numel()  # ~41 per offset
    assert counts.min() > expected / 3 and counts.max() < expected * 2


def test_flip_only_mirrors_or_keeps_each_image():
    images = _images(batch=32)
    out = prepare_batch(images, MEAN3, STD3, Augmentation(hflip=True),
                        torch.Generator().manual_seed(0))
    plain = _normalise(images, MEAN3, STD3)
    flipped = [torch.allclose(out[i].double(), plain[i].flip(-1), atol=1e-5) for i in range(32)]
    kept = [torch.allclose(out[i].double(), plain[i], atol=1e-5) for i in range(32)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 4 <= sum(flipped) <= 28  # p = 0.5


def test_zero_padding_is_black_before_normalisation():
    images = torch.full((64, 3, 8, 8), 200, dtype=torch.uint8)
    out = prepare_batch(images, MEAN3, STD3, Augmentation(crop_padding=2),
                        torch.Generator().manual_seed(0))
    black = _normalise(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), MEAN3, STD3).float()
    grey = _normalise(torch.full((1, 3, 1, 1), 200, dtype=torch.uint8), MEAN3, STD3).float()
    is_black = torch.isclose(out, black.expand_as(out), atol=1e-5)
    is_grey = torch.isclose(out, grey.expand_as(out), atol=1e-5)
    assert torch.all(is_black | is_grey) and is_black.any()


def test_deterministic_per_seed():
    images = _images()
    aug = default_augmentation("cifar10")
    a = prepare_batch(images, MEAN3, STD3, aug, torch.Generator().manual_seed(7))
    b = prepare_batch(images, MEAN3, STD3, aug, torch.Generator().manual_seed(7))
    c = prepare_batch(images, MEAN3, STD3, aug, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Without a generator torch's global RNG is used, so torch.manual_seed reproduces.
    torch.manual_seed(5)
    d = prepare_batch(images, MEAN3, STD3, aug, None)
    torch.manual_seed(5)
    assert torch.equal(d, prepare_batch(images, MEAN3, STD3, aug, None))


def test_defaults_follow_the_authors():
    assert default_augmentation("cifar10") == Augmentation(crop_padding=4, hflip=True)
    assert default_augmentation("cifar100") == Augmentation(crop_padding=4, hflip=True)
    assert default_augmentation("fashion-mnist") == Augmentation()
    assert default_augmentation("mnist") == Augmentation()
    with pytest.raises(ValueError, match="dataset_name must be one of"):
        default_augmentation("svhn")


def test_bad_input_is_rejected_with_the_parameter_name():
    with pytest.raises(ValueError, match="crop_padding must be an integer >= 0"):
        Augmentation(crop_padding=-1)
    with pytest.raises(ValueError, match="hflip must be True or False"):
        Augmentation(hflip=1)
    with pytest.raises(ValueError, match="images must be a uint8 tensor"):
        prepare_batch(torch.zeros(2, 3, 4, 4), MEAN3, STD3, None, None)
    with pytest.raises(ValueError, match="one entry per channel"):
        prepare_batch(_images(), (0.5,), (0.5,), None, None)
    with pytest.raises(ValueError, match="std entries must be > 0"):
        prepare_batch(_images(), MEAN3, (0.2, 0.0, 0.2), None, None)


def test_augmenting_a_batch_of_8_costs_far_less_than_a_training_step():
    from tralgo.experiments.models import build_model

    images, aug, g = _images(), default_augmentation("cifar10"), torch.Generator().manual_seed(0)
    model = build_model("cnn", 10, in_channels=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    target = torch.zeros(8, dtype=torch.long)

    def augment():
        prepare_batch(images, MEAN3, STD3, aug, g)

    def train_step():
        opt.zero_grad()
        F.cross_entropy(model(prepare_batch(images, MEAN3, STD3, None, None)), target).backward()
        opt.step()

    def median_time(fn, repeats=7):
        fn()
        times = []
        for _ in range(repeats):
            start = time.process_time()
            for _ in range(3):
                fn()
            times.append(time.process_time() - start)
        return statistics.median(times)

    # Interleaved medians of CPU time, so load from other processes affects both alike.
    assert median_time(augment) < 0.25 * median_time(train_step)
