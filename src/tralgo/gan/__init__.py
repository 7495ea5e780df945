"""pix2pix label -> photo with TRAdam (Section 4 of the paper): networks, data, FCN-score, training.

``tralgo gan --help`` lists the commands; docs/gan/README.md has the study and its commands.
"""
from tralgo.gan.metrics import ConfusionAccumulator, confusion_matrix, fcn_scores
from tralgo.gan.networks import NLayerDiscriminator, UnetGenerator, init_weights

__all__ = ["UnetGenerator", "NLayerDiscriminator", "init_weights", "confusion_matrix", "fcn_scores",
           "ConfusionAccumulator"]
