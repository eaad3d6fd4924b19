"""Actor and critic networks (spec sections 2 and 4): shapes, std floor, zero-value critic initialisation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from reppo.nets import ZERO_VALUE_LOGIT_SCALE, Actor, Critic

FEW = settings(max_examples=5, deadline=None, database=None)
SEEDS = st.integers(0, 2**31 - 1)
OBS, ACT, WIDTH, B = 9, 4, 32, 64


def ref_layout(v_min, v_max, num_bins):
    width = (v_max - v_min) / (num_bins - 1)
    return v_min + width * np.arange(num_bins), width


def ref_hl_probs(g, v_min, v_max, num_bins):
    """float64 HL-Gauss encoding of a scalar g (sigma = 0.75 w), per bin, renormalised."""
    centres, width = ref_layout(v_min, v_max, num_bins)
    g = min(max(g, v_min), v_max)
    mass = stats.norm.cdf(centres + width / 2, g, 0.75 * width) - stats.norm.cdf(centres - width / 2, g, 0.75 * width)
    return mass / mass.sum()


@functools.cache
def critic_for(v_min, v_max, num_bins):
    critic = Critic(WIDTH, 2, tuple(float(p) for p in ref_hl_probs(0.0, v_min, v_max, num_bins)))
    init = jax.jit(critic.init)
    q_logits = jax.jit(functools.partial(critic.apply, method="q_logits"))
    return critic, init, q_logits, jax.jit(critic.apply)


@pytest.mark.parametrize("layout", [(0.0, 150.0, 151), (-10.0, 10.0, 151)])
@FEW
@given(seed=SEEDS)
def test_initial_critic_value_is_about_zero(layout, seed):
    v_min, v_max, k = layout
    critic, init, q_logits, apply = critic_for(*layout)
    rng = np.random.default_rng(seed)
    obs = jnp.asarray(rng.normal(0.0, 3.0, (B, OBS)), jnp.float32)
    act = jnp.asarray(rng.uniform(-1.0, 1.0, (B, ACT)), jnp.float32)
    params = init(jax.random.key(seed), obs[:1], act[:1])
    logits = np.asarray(q_logits(params, obs, act), np.float64)
    assert logits.shape == (B, k)
    centres, width = ref_layout(v_min, v_max, k)
    q = special.softmax(logits, axis=-1) @ centres
    # Far below the centre of the range ((v_min + v_max) / 2), within a fraction of a bin of 0.
    assert np.max(np.abs(q)) < min(0.5, 3.0 * width)
    # The Q-head bias is the documented constant times the HL-Gauss encoding of 0.
    bias = np.asarray(params["params"]["q_out"]["bias"])
    np.testing.assert_allclose(bias, ZERO_VALUE_LOGIT_SCALE * ref_hl_probs(0.0, v_min, v_max, k), rtol=1e-5, atol=1e-5)
    # The full forward pass gives the same logits and aux outputs of the right shapes.
    full_logits, (pred_r, pred_next) = apply(params, obs, act)
    np.testing.assert_allclose(np.asarray(full_logits), logits, rtol=1e-6, atol=1e-6)
    assert pred_r.shape == (B,) and pred_next.shape == (B, WIDTH)


ACTOR = Actor(action_size=ACT, width=WIDTH, depth=2, min_std=0.01)
actor_init = jax.jit(ACTOR.init)
actor_apply = jax.jit(ACTOR.apply)


@FEW
@given(seed=SEEDS, log_std_bias=st.sampled_from([None, -30.0, 30.0]))
def test_actor_outputs_and_std_bounds(seed, log_std_bias):
    """Shapes (B, d); min_std <= std <= exp(log_std_max) + min_std, also when the log-std head is pushed to
    extreme values."""
    rng = np.random.default_rng(seed)
    obs = jnp.asarray(rng.normal(0.0, 3.0, (B, OBS)), jnp.float32)
    params = actor_init(jax.random.key(seed), obs[:1])
    # Random weights (not the small initialisation) so the outputs vary.
    params = jax.tree.map(lambda x: jnp.asarray(np.asarray(x) + 0.5 * rng.normal(size=x.shape), x.dtype), params)
    heads = sorted(k for k in params["params"] if k.startswith("Dense"))
    assert len(heads) == 2
    if log_std_bias is not None:
        # The second Dense head produces log_std (mean head first, by construction order).
        p = jax.tree.map(lambda x: x, params)
        p["params"][heads[1]]["bias"] = jnp.full((ACT,), log_std_bias, jnp.float32)
        params = p
    mean, std = (np.asarray(x) for x in actor_apply(params, obs))
    assert mean.shape == std.shape == (B, ACT)
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(std))
    assert np.all(std >= np.float32(ACTOR.min_std))  # min_std as the float32 the network adds
    assert np.all(std <= np.exp(ACTOR.log_std_max) * (1 + 1e-6) + ACTOR.min_std)
    if log_std_bias == -30.0:
        np.testing.assert_allclose(std, ACTOR.min_std, rtol=1e-3)
    if log_std_bias == 30.0:
        np.testing.assert_allclose(std, np.exp(ACTOR.log_std_max) + ACTOR.min_std, rtol=1e-5)


def test_actor_initial_policy_is_broad_and_centred():
    """Small output initialisation: mean near 0 and std near exp(0) + min_std for random observations."""
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(0.0, 3.0, (B, OBS)), jnp.float32)
    params = actor_init(jax.random.key(3), obs[:1])
    mean, std = (np.asarray(x) for x in actor_apply(params, obs))
    assert np.max(np.abs(mean)) < 0.5
    np.testing.assert_allclose(std, 1.0 + ACTOR.min_std, atol=0.5)
