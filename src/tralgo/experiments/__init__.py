"""The experiment harness: real data, the paper's models, a resumable trainer, sweeps, reports.

Needs the ``experiments`` extra (numpy, matplotlib); the optimizer library itself needs only torch.
"""
