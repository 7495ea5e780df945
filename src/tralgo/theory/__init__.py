"""Numerical checks of Section 3 of the TRAlgo paper (``tralgo theory``).

``problems``: finite sums with computable constants; ``algorithms``: Algorithm 1 (TRSGD) and
Algorithm 2 (SGD) vectorised over repetitions; ``estimators``: means with standard errors and the
empirical constants; ``studies``: Lemma 2, Theorems 1-2, the variance claim; ``report``: the
Markdown report with plots; ``cli``: the command.
"""
