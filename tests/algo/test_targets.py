"""Soft TD(lambda) targets (spec section 3) against a brute-force lambda-mixture of soft n-step returns.

Conventions (time-major (T, N)): next_values[t] = V(x'_t), the soft value of the true next observation of
step t (= V(x_{t+1}) when the episode goes on); next_log_probs[t] = log pi(a_{t+1} | x_{t+1}). The rollout is
cut at t = T-1 and wherever truncated[t] = 1 (bootstrap from V(x'_t)); a terminated step never bootstraps.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reppo.algo.targets import soft_td_lambda

SEEDS = st.integers(0, 2**32 - 1)
FEW = settings(max_examples=10, deadline=None, database=None)
T, N = 10, 6

td = jax.jit(soft_td_lambda)


def n_step_return(r, d, logp_next, v_next, t, n, alpha, gamma):
    """Soft n-step return from step t of one env (no episode end strictly before step t+n-1):
    sum_{k<n} gamma^k r_{t+k} - alpha sum_{1<=k<n} gamma^k log pi(a_{t+k}|x_{t+k})
    + gamma^n (1-d_{t+n-1}) V(x_{t+n})."""
    g = 0.0
    for k in range(n):
        g += gamma**k * r[t + k]
        if k >= 1:
            g -= alpha * gamma**k * logp_next[t + k - 1]  # log pi(a_{t+k} | x_{t+k})
    last = t + n - 1
    g += gamma**n * (1.0 - d[last]) * v_next[last]  # V(x_{t+n}) = V(x'_{t+n-1})
    return g


def ref_soft_td_lambda(r, d, tr, v_next, logp_next, alpha, gamma, lam):
    """Brute force, float64: G_t = sum_{n<H} (1-lam) lam^{n-1} G^(n) + lam^{H-1} G^(H), where H is the number
    of steps from t up to and including the first step that terminates or is cut (truncated, or t = T-1)."""
    r, d, tr, v_next, logp_next = (np.asarray(x, np.float64) for x in (r, d, tr, v_next, logp_next))
    steps, envs = r.shape
    out = np.zeros((steps, envs))
    for e in range(envs):
        for t in range(steps):
            end = t
            while not (d[end, e] or tr[end, e] or end == steps - 1):
                end += 1
            horizon = end - t + 1
            args = (r[:, e], d[:, e], logp_next[:, e], v_next[:, e])
            returns = [n_step_return(*args, t, n, alpha, gamma) for n in range(1, horizon + 1)]
            weights = [(1.0 - lam) * lam ** (n - 1) for n in range(1, horizon)] + [lam ** (horizon - 1)]
            out[t, e] = float(np.dot(weights, returns))
    return out


def make_rollout(rng: np.random.Generator):
    r = rng.normal(0.0, 1.0, (T, N))
    v_next = rng.normal(3.0, 5.0, (T, N))
    logp_next = rng.normal(-1.0, 2.0, (T, N))
    d = (rng.random((T, N)) < 0.12).astype(np.float64)
    tr = (rng.random((T, N)) < 0.12).astype(np.float64)
    # Guarantee the interesting cases: episode ends in the middle and at the last step.
    mid = int(rng.integers(1, T - 2))
    d[:, 0] = 0.0
    tr[:, 0] = 0.0
    d[mid, 0] = 1.0
    d[:, 1] = 0.0
    tr[:, 1] = 0.0
    tr[mid, 1] = 1.0
    d[:, 2] = 0.0
    tr[:, 2] = 0.0
    d[T - 1, 2] = 1.0
    d[:, 3] = 0.0
    tr[:, 3] = 0.0
    tr[T - 1, 3] = 1.0
    d[:, 4] = 0.0
    tr[:, 4] = 0.0  # one env without any episode end
    return [x.astype(np.float32) for x in (r, d, tr, v_next, logp_next)]


def run(r, d, tr, v_next, logp_next, alpha, gamma, lam):
    return np.asarray(td(r, d, tr, v_next, logp_next, np.float32(alpha), gamma, lam), np.float64)


LAMBDAS = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.05, 0.99))


@FEW
@given(seed=SEEDS, lam=LAMBDAS)
def test_matches_bruteforce_mixture_of_soft_n_step_returns(seed, lam):
    rng = np.random.default_rng(seed)
    rollout = make_rollout(rng)
    alpha = float(rng.uniform(0.01, 1.0))
    gamma = float(rng.uniform(0.8, 0.999))
    got = run(*rollout, alpha, gamma, lam)
    ref = ref_soft_td_lambda(*rollout, alpha, gamma, lam)
    assert got.shape == (T, N)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


@FEW
@given(seed=SEEDS)
def test_lambda_zero_is_one_step_soft_target(seed):
    rng = np.random.default_rng(seed)
    r, d, tr, v_next, logp_next = make_rollout(rng)
    gamma = float(rng.uniform(0.8, 0.999))
    got = run(r, d, tr, v_next, logp_next, float(rng.uniform(0.01, 1.0)), gamma, 0.0)
    ref = r.astype(np.float64) + gamma * (1.0 - d) * v_next
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@FEW
@given(seed=SEEDS)
def test_lambda_one_is_soft_monte_carlo_return(seed):
    """G_t = sum_k gamma^k [r_{t+k} - alpha log pi(a_{t+k}) (k >= 1)] up to the episode end or cut, plus
    gamma^H V(x'_cut) when the segment ends at a cut rather than a termination. Computed forwards."""
    rng = np.random.default_rng(seed)
    r, d, tr, v_next, logp_next = make_rollout(rng)
    alpha = float(rng.uniform(0.01, 1.0))
    gamma = float(rng.uniform(0.8, 0.999))
    got = run(r, d, tr, v_next, logp_next, alpha, gamma, 1.0)
    ref = np.zeros((T, N))
    for e in range(N):
        for t in range(T):
            total, discount, s = 0.0, 1.0, t
            while True:
                total += discount * float(r[s, e])
                if d[s, e]:
                    break
                if tr[s, e] or s == T - 1:
                    total += discount * gamma * float(v_next[s, e])
                    break
                discount *= gamma
                total -= discount * alpha * float(logp_next[s, e])
                s += 1
            ref[t, e] = total
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


@FEW
@given(seed=SEEDS, lam=LAMBDAS)
def test_terminal_step_never_bootstraps(seed, lam):
    """At a terminated step (also t = T-1) G_t = r_t whatever V(x'_t) and the later data are."""
    rng = np.random.default_rng(seed)
    r, d, tr, v_next, logp_next = make_rollout(rng)
    d[T - 1, :] = 1.0
    alpha, gamma = float(rng.uniform(0.01, 1.0)), 0.99
    base = run(r, d, tr, v_next, logp_next, alpha, gamma, lam)
    mask = d > 0
    np.testing.assert_allclose(base[mask], r[mask], rtol=1e-6, atol=1e-6)
    v_changed = np.where(mask, v_next + rng.normal(0.0, 100.0, v_next.shape), v_next).astype(np.float32)
    changed = run(r, d, tr, v_changed, logp_next, alpha, gamma, lam)
    np.testing.assert_allclose(changed[mask], r[mask], rtol=1e-6, atol=1e-6)
    # V(x'_t) of a terminal step is never used anywhere.
    np.testing.assert_allclose(changed, base, rtol=1e-6, atol=1e-6)


@FEW
@given(seed=SEEDS, lam=LAMBDAS, kind=st.sampled_from(["terminated", "truncated"]))
def test_no_value_crosses_an_episode_boundary(seed, lam, kind):
    """Changing everything after an episode end at step k (rewards, flags, values, next-step log-probs) leaves
    G_t for t <= k unchanged; it does change the later targets."""
    rng = np.random.default_rng(seed)
    r, d, tr, v_next, logp_next = make_rollout(rng)
    k = int(rng.integers(1, T - 2))
    d[k, :] = 1.0 if kind == "terminated" else 0.0
    tr[k, :] = 1.0 if kind == "truncated" else 0.0
    alpha, gamma = float(rng.uniform(0.01, 1.0)), float(rng.uniform(0.8, 0.999))
    base = run(r, d, tr, v_next, logp_next, alpha, gamma, lam)

    r2, d2, tr2, v2, lp2 = (x.copy() for x in (r, d, tr, v_next, logp_next))
    r2[k + 1 :] += rng.normal(0.0, 10.0, r2[k + 1 :].shape).astype(np.float32)
    v2[k + 1 :] += rng.normal(0.0, 10.0, v2[k + 1 :].shape).astype(np.float32)
    lp2[k:] += rng.normal(0.0, 10.0, lp2[k:].shape).astype(np.float32)  # log pi(a_{k+1}) belongs to the next episode
    d2[k + 1 :] = (rng.random(d2[k + 1 :].shape) < 0.3).astype(np.float32)
    tr2[k + 1 :] = (rng.random(tr2[k + 1 :].shape) < 0.3).astype(np.float32)
    if kind == "terminated":
        v2[k] += 50.0  # V of the terminal observation must not matter either
    changed = run(r2, d2, tr2, v2, lp2, alpha, gamma, lam)
    np.testing.assert_allclose(changed[: k + 1], base[: k + 1], rtol=1e-6, atol=1e-6)
    assert np.all(np.abs(changed[k + 1 :] - base[k + 1 :]).max(axis=0) > 1e-3)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_truncation_bootstraps_from_true_next_value(lam):
    """A truncated (not terminated) step bootstraps from V(x'_t): G_t = r_t + gamma V(x'_t), any lambda."""
    rng = np.random.default_rng(0)
    r, d, tr, v_next, logp_next = make_rollout(rng)
    k = 4
    d[k, :] = 0.0
    tr[k, :] = 1.0
    gamma = 0.97
    got = run(r, d, tr, v_next, logp_next, 0.3, gamma, lam)
    np.testing.assert_allclose(got[k], r[k] + gamma * v_next[k].astype(np.float64), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(got[T - 1], r[T - 1] + gamma * (1 - d[T - 1]) * v_next[T - 1], rtol=1e-6, atol=1e-5)


@FEW
@given(seed=SEEDS)
def test_alpha_zero_is_plain_td_lambda(seed):
    """With alpha = 0 the entropy terms vanish: the standard recursion G_t = r_t + gamma (1-d_t)
    [(1-lam) V_{t+1} + lam G_{t+1}] (written here forwards as the weighted n-step mixture, independent of
    next_log_probs)."""
    rng = np.random.default_rng(seed)
    r, d, tr, v_next, logp_next = make_rollout(rng)
    lam, gamma = float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.8, 0.999))
    got = run(r, d, tr, v_next, logp_next, 0.0, gamma, lam)
    garbage = (logp_next + rng.normal(0.0, 100.0, logp_next.shape)).astype(np.float32)
    np.testing.assert_allclose(run(r, d, tr, v_next, garbage, 0.0, gamma, lam), got, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(
        got, ref_soft_td_lambda(r, d, tr, v_next, garbage, 0.0, gamma, lam), rtol=1e-5, atol=1e-4
    )
