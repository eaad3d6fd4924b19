"""Running observation statistics (spec section 6) against numpy statistics of the concatenated data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reppo.normalization import RunningStats

SIZE = 4
FEW = settings(max_examples=10, deadline=None, database=None)

normalize = jax.jit(lambda stats, x, eps: stats.normalize(x, eps))
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


@FEW
@given(seed=st.integers(0, 2**32 - 1), eps=st.sampled_from([1e-8, 1e-3, 0.5]))
def test_normalize(seed, eps):
    rng = np.random.default_rng(seed)
    stats = RunningStats.create(SIZE).update(jnp.asarray(rng.normal(3.0, 2.0, (17, SIZE)), jnp.float32))
    x = rng.normal(0.0, 5.0, (6, SIZE)).astype(np.float32)
    got = np.asarray(normalize(stats, jnp.asarray(x), eps))
    mean, var = np.asarray(stats.mean, np.float64), np.asarray(stats.var, np.float64)
    np.testing.assert_allclose(got, (x - mean) / np.sqrt(var + eps), rtol=1e-5, atol=1e-5)


def test_normalize_default_eps_and_zero_variance():
    """After a single observation the variance is 0; normalisation stays finite: (x - mean) / sqrt(eps)."""
    x0 = np.array([[1.0, -2.0, 3.0, 0.5]], np.float32)
    stats = RunningStats.create(SIZE).update(jnp.asarray(x0))
    np.testing.assert_array_equal(np.asarray(stats.var), 0.0)
    x = np.array([[1.0, -2.0, 3.0, 0.5], [1.001, -2.0, 3.0, 0.5]], np.float32)
    got = np.asarray(stats.normalize(jnp.asarray(x)))
    assert np.all(np.isfinite(got))
    ref = (x.astype(np.float64) - x0) / np.sqrt(1e-8)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-6)
    assert got[1, 0] == pytest.approx(1e-3 / 1e-4, rel=1e-2)
