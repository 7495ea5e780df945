"""Algorithms 1 and 2: Definition 1's step sizes, agreement with tralgo.TRSGD, Options I/II."""
import numpy as np
import pytest
import torch

import tralgo
from tralgo.theory.algorithms import draw_indices, sgd, sgd_on_prox, trsgd
from tralgo.theory.problems import FiniteSum


def tiny_ls(n=12, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return FiniteSum("ls", "ls", rng.standard_normal((n, d)), rng.standard_normal(n), "squared", 0.0,
                     w0=rng.standard_normal(d))


def test_trsgd_matches_tralgo_TRSGD_step_for_step():
    """Definition 1 (eta_k = 1/((lam - delta) k), k from 1) is TRSGD with lr = 1/(lam - delta),
    inner_lr_decay (lr/(k+1), k from 0) and a constant lam, here on least squares (delta = 0)."""
    p, lam, S, T, seed = tiny_ls(), 1.7, 4, 6, 11
    ours = trsgd(p, p.w0, lam, 0.0, S, T, np.random.default_rng(seed))[0]

    w = torch.tensor(p.w0, dtype=torch.float64, requires_grad=True)
    X, y = torch.tensor(p.X), torch.tensor(p.y)
    opt = tralgo.TRSGD([w], lr=1.0 / lam, lam=lam, inner_steps=S, inner_lr_decay=True, lam_scaling="constant")
    rng = np.random.default_rng(seed)  # the same draws, in the same order
    for _ in range(T * S):
        i = torch.as_tensor(draw_indices(rng, 1, 1, p.n)[0])
        opt.zero_grad()
        (0.5 * (X[i] @ w - y[i]) ** 2).mean().backward()
        opt.step()
    np.testing.assert_allclose(ours, w.detach().numpy(), rtol=1e-12, atol=1e-13)


def test_one_inner_step_is_sgd_with_step_one_over_lam_minus_delta():
    """With S = 1 the proximal term is zero at w_t: TRSGD is SGD with eta = 1/(lam - delta)."""
    p, lam, delta = tiny_ls(), 3.0, 0.5
    a = trsgd(p, p.w0, lam, delta, 1, 20, np.random.default_rng(5))
    b = sgd(p, p.w0, 1.0 / (lam - delta), 1, 20, np.random.default_rng(5))
    np.testing.assert_allclose(a, b, rtol=1e-13)


def test_inner_steps_follow_definition_1_by_hand():
    p, lam, delta = tiny_ls(), 2.0, 0.25
    anchor = np.tile(p.w0, (2, 1))
    got = sgd_on_prox(p, anchor, lam, delta, 3, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    W = anchor.copy()
    for k in (1, 2, 3):
        idx = rng.integers(0, p.n, size=(2, 1))
        grads = np.stack([p.per_sample_grads(W[r])[idx[r, 0]] for r in range(2)]) + lam * (W - anchor)
        W = W - grads / ((lam - delta) * k)
    np.testing.assert_allclose(got, W, rtol=1e-13)


def test_inner_option_II_returns_one_of_the_inner_iterates_uniformly():
    p, reps, S = tiny_ls(), 4000, 4
    anchor = np.tile(p.w0, (reps, 1))
    replay = []
    chosen = sgd_on_prox(p, anchor, 2.0, 0.0, S, np.random.default_rng(1), output="random",
                         observe_inner=lambda k, W, A: replay.append(W.copy()))
    picks = np.random.default_rng(1).integers(1, S + 1, size=reps)  # the pick is the stream's first draw
    np.testing.assert_allclose(chosen, np.stack(replay)[picks - 1, np.arange(reps)], rtol=0, atol=0)
    counts = np.bincount(picks, minlength=S + 1)[1:]
    assert np.all(np.abs(counts - reps / S) < 5 * np.sqrt(reps / S))


def test_bad_arguments_name_the_parameter():
    p = tiny_ls()
    with pytest.raises(ValueError, match="lam must exceed delta"):
        sgd_on_prox(p, p.w0, 0.5, 0.5, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="inner_steps"):
        sgd_on_prox(p, p.w0, 1.0, 0.0, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="output"):
        sgd_on_prox(p, p.w0, 1.0, 0.0, 2, np.random.default_rng(0), output="mean")
    with pytest.raises(ValueError, match="batch"):
        sgd(p, p.w0, 0.1, 0, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="step"):
        sgd(p, p.w0, -0.1, 1, 5, np.random.default_rng(0))
