"""tralgo: trajectory-regularized optimization (TRAlgo) for PyTorch.

Zhang, Qu, Chen & Metaxas, "Taming the Noisy Gradient: Train Deep Neural Networks with Small
Batch Sizes", IJCAI 2019. Every ``inner_steps`` steps the weights ``w_t`` become the anchor of a
proximal term ``lam/2 ||w - w_t||^2`` and a base optimizer runs on ``f(w)`` plus that term.
"""
from tralgo._trajectory import TrajectoryRegularized
from tralgo.tradam import TRAdam, TRAdamW
from tralgo.trsgd import TRSGD

__all__ = ["TrajectoryRegularized", "TRSGD", "TRAdam", "TRAdamW"]
__version__ = "0.1.0"
