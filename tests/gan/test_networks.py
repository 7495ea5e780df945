"""pix2pix networks: shapes, parameter counts against an independent layer formula, init."""
import pytest
import torch
from torch import nn

from tralgo.gan.networks import (NLayerDiscriminator, UnetGenerator, count_parameters, expected_discriminator_params,
                                 expected_generator_params, init_weights, receptive_field)

# unet_256 / 70x70 PatchGAN as pix2pix builds them with BatchNorm: the convolutions followed by
# a norm have no bias. Worked out by hand from the layer list (see expected_*_params):
# G = 54,413,955 and D(6 input channels) = 2,768,705 (pix2pix prints them as 54.414 M / 2.769 M).
UNET_256_PARAMS = 54_413_955
PATCHGAN_70_PARAMS = 2_768_705


def test_unet_256_parameter_count():
    generator = UnetGenerator(3, 3, num_downs=8, ngf=64)  # the only full-size instance in the suite
    assert count_parameters(generator) == expected_generator_params(3, 3, 8, 64) == UNET_256_PARAMS
    # dropout sits in the 3 intermediate 8*ngf decoder levels only
    assert sum(isinstance(m, nn.Dropout) for m in generator.modules()) == 3


def test_patchgan_70_parameter_count_and_receptive_field():
    discriminator = NLayerDiscriminator(6, ndf=64, n_layers=3)
    assert count_parameters(discriminator) == expected_discriminator_params(6, 64, 3) == PATCHGAN_70_PARAMS
    assert receptive_field(3) == 70 and receptive_field(1) == 16
    assert discriminator(torch.zeros(1, 6, 256, 256)).shape == (1, 1, 30, 30)


@pytest.mark.parametrize("num_downs,ngf,in_c,out_c", [(5, 4, 3, 3), (6, 8, 3, 3), (7, 2, 1, 3), (6, 3, 3, 1)])
def test_small_generators_match_formula_and_keep_shape(num_downs, ngf, in_c, out_c):
    generator = UnetGenerator(in_c, out_c, num_downs=num_downs, ngf=ngf)
    assert count_parameters(generator) == expected_generator_params(in_c, out_c, num_downs, ngf)
    side = 2 ** num_downs
    out = generator(torch.randn(1, in_c, side, side))
    assert out.shape == (1, out_c, side, side)
    assert out.abs().max() <= 1.0  # tanh


@pytest.mark.parametrize("n_layers,ndf", [(1, 4), (2, 8), (4, 2), (5, 2)])
def test_small_discriminators_match_formula(n_layers, ndf):
    discriminator = NLayerDiscriminator(6, ndf=ndf, n_layers=n_layers)
    assert count_parameters(discriminator) == expected_discriminator_params(6, ndf, n_layers)


def test_skip_connections_carry_the_input_through():
    # The outermost level sees the input directly; changing one input pixel changes the output
    # at that pixel even with the bottleneck's contribution removed.
    torch.manual_seed(0)
    generator = init_weights(UnetGenerator(3, 3, num_downs=5, ngf=4)).eval()
    x = torch.zeros(1, 3, 32, 32)
    y = x.clone()
    y[0, :, 5, 7] = 1.0
    diff = (generator(x) - generator(y)).abs().sum(1)[0]
    assert diff[4:7, 6:9].sum() > 0


def test_init_weights_statistics():
    torch.manual_seed(0)
    net = init_weights(UnetGenerator(3, 3, num_downs=5, ngf=16))
    convs = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    norms = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(float(convs.mean())) < 1e-3 and abs(float(convs.std()) - 0.02) < 1e-3
    assert abs(float(norms.mean()) - 1.0) < 0.01 and abs(float(norms.std()) - 0.02) < 0.01


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="num_downs must be an int >= 5"):
        UnetGenerator(num_downs=4)
    with pytest.raises(ValueError, match="n_layers must be an int >= 1"):
        NLayerDiscriminator(n_layers=0)
    with pytest.raises(ValueError, match="divisible by 32"):
        UnetGenerator(num_downs=5, ngf=2)(torch.zeros(1, 3, 48, 40))
