"""Running observation statistics (spec section 6) against numpy statistics of the concatenated data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from reppo.normalization import RunningStats

SIZE = 4
FEW = settings(max_examples=10, deadline=None, database=None)

normalize = jax.jit(lambda stats, x: stats.normalize(x))
# Batch sizes drawn from a small set (a few compiled shapes), size 1 always possible.
BATCH_SIZES = st.lists(st.sampled_from([1, 2, 3, 7, 64, 257]), min_size=1, max_size=8)


def test_create_starts_at_standard_normal_with_zero_count():
    stats = RunningStats.create(SIZE)
    np.testing.assert_array_equal(np.asarray(stats.mean), np.zeros(SIZE))
    np.testing.assert_array_equal(np.asarray(stats.var), np.ones(SIZE))
    assert float(stats.count) == 0.0
    assert stats.mean.shape == stats.var.shape == (SIZE,) and stats.count.shape == ()


@FEW
@given(seed=st.integers(0, 2**32 - 1), sizes=BATCH_SIZES)
def test_sequential_merge_equals_statistics_of_concatenation(seed, sizes):
    rng = np.random.default_rng(seed)
    loc = rng.uniform(-5.0, 5.0, SIZE)
    scale = rng.uniform(0.1, 3.0, SIZE)
    stats = RunningStats.create(SIZE)
    seen = []
    for n in sizes:
        batch = (loc + scale * rng.normal(size=(n, SIZE))).astype(np.float32)
        seen.append(batch)
        stats = stats.update(jnp.asarray(batch))
        data = np.concatenate(seen).astype(np.float64)
        np.testing.assert_allclose(np.asarray(stats.mean), data.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(stats.var), data.var(0), rtol=1e-4, atol=1e-5)
        assert float(stats.count) == data.shape[0]


@FEW
@given(seed=st.integers(0, 2**32 - 1))
def test_update_accepts_leading_batch_axes(seed):
    """A (T, N, size) batch is the same as its (T*N, size) flattening."""
    rng = np.random.default_rng(seed)
    first = rng.normal(2.0, 3.0, (5, SIZE)).astype(np.float32)
    batch = rng.normal(-1.0, 0.5, (3, 7, SIZE)).astype(np.float32)
    stats = RunningStats.create(SIZE).update(jnp.asarray(first)).update(jnp.asarray(batch))
    data = np.concatenate([first, batch.reshape(-1, SIZE)]).astype(np.float64)
    np.testing.assert_allclose(np.asarray(stats.mean), data.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.var), data.var(0), rtol=1e-4, atol=1e-5)
    assert float(stats.count) == 26.0


def test_large_offset_is_numerically_stable():
    """Chan's merge keeps the variance accurate when |mean| >> std (a naive E[x^2] - E[x]^2 would not)."""
    rng = np.random.default_rng(7)
    stats = RunningStats.create(SIZE)
    seen = []
    for n in (1, 100, 3, 500, 1, 64):
        batch = (1000.0 + 0.01 * rng.normal(size=(n, SIZE))).astype(np.float32)
        seen.append(batch)
        stats = stats.update(jnp.asarray(batch))
    data = np.concatenate(seen).astype(np.float64)
    np.testing.assert_allclose(np.asarray(stats.var), data.var(0), rtol=5e-3)


def ref_normalize(x, mean, var):
    """Spec section 6 with this project's floor and clip, in float64: clip((x - mean) / sqrt(max(var, 1e-4)),
    -10, 10)."""
    x, mean, var = (np.asarray(a, np.float64) for a in (x, mean, var))
    return np.clip((x - mean) / np.sqrt(np.maximum(var, 1e-4)), -10.0, 10.0)


@FEW
@given(seed=st.integers(0, 2**32 - 1))
def test_normalize(seed):
    """Variances on both sides of the floor, inputs on both sides of the clip."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.uniform(np.log(1e-4), np.log(10.0), SIZE))  # std from 1e-4 (below the floor's 1e-2) to 10
    stats = RunningStats.create(SIZE).update(jnp.asarray(rng.normal(3.0, scale, (17, SIZE)), jnp.float32))
    x = (np.asarray(stats.mean) + rng.normal(0.0, 20.0, (64, SIZE)) * np.sqrt(np.asarray(stats.var))).astype(np.float32)
    x[0] += 1.0  # a step of 1 away from the mean in every dimension (the floored ones go far past the clip)
    got = np.asarray(normalize(stats, jnp.asarray(x)))
    ref = ref_normalize(x, stats.mean, stats.var)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert np.any(np.abs(ref) == 10.0) and np.any(np.abs(ref) < 9.0)


def test_dimension_constant_at_reset_is_bounded():
    """Statistics from a reset batch in which one dimension is constant (a velocity that the env zeroes, variance 0)
    and another nearly so (variance 1e-8): the first rollout's observations of those dimensions are scaled by at most
    1 / sqrt(floor) = 100 and clipped to 10, not by 1 / sqrt(1e-8) = 1e4."""
    rng = np.random.default_rng()
    reset = rng.normal(0.0, 1.0, (256, SIZE)).astype(np.float32)
    reset[:, 0] = 0.0
    reset[:, 1] = rng.normal(0.0, 1e-4, 256)
    stats = RunningStats.create(SIZE).update(jnp.asarray(reset))
    assert float(stats.var[0]) == 0.0 and float(stats.var[1]) < 1e-7
    rollout = rng.normal(0.0, 1.0, (64, SIZE)).astype(np.float32)
    rollout[:3, 0] = [0.0, 0.05, -2.0]  # the velocity once the env moves: 0.05 -> 5, -2 -> -200 -> -10
    # dimension 1 at least 0.5 from its reset mean: scaled by 100, so clipped to 10 everywhere
    rollout[:, 1] = rng.choice([-1.0, 1.0], 64) * rng.uniform(0.5, 1.0, 64)
    got = np.asarray(normalize(stats, jnp.asarray(rollout)))
    np.testing.assert_allclose(got, ref_normalize(rollout, stats.mean, stats.var), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:3, 0], [0.0, 5.0, -10.0], rtol=1e-5, atol=1e-5)
    assert np.all(np.abs(got) <= 10.0) and np.all(np.abs(got[:, 1]) == 10.0)
