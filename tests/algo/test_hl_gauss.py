"""HL-Gauss encoding (spec section 4) against a brute-force float64 scipy reference."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from reppo.algo.hl_gauss import HLGauss

# (v_min, v_max, num_bins): the paper's layouts and two small ones.
LAYOUTS = [(0.0, 150.0, 151), (-10.0, 10.0, 151), (-1.0, 3.0, 11), (-5.0, 5.0, 41)]
SEEDS = st.integers(0, 2**32 - 1)
FEW = settings(max_examples=6, deadline=None, database=None)

# jit-compiled entry points: one compilation per (layout, shape) instead of one per primitive.
to_probs = jax.jit(lambda hl, g: hl.to_probs(g))
to_value = jax.jit(lambda hl, logits: hl.to_value(logits))
clipped_fraction = jax.jit(lambda hl, g: hl.clipped_fraction(g))
make_hl = functools.cache(HLGauss.create)


def ref_layout(v_min: float, v_max: float, num_bins: int, sigma_ratio: float = 0.75):
    width = (v_max - v_min) / (num_bins - 1)
    centres = np.array([v_min + i * width for i in range(num_bins)], dtype=np.float64)
    return centres, width, sigma_ratio * width


def ref_probs(g, v_min: float, v_max: float, num_bins: int, sigma_ratio: float = 0.75) -> np.ndarray:
    """Brute force, float64: the mass of N(clip(g), sigma) in each bin [z_i - w/2, z_i + w/2], one bin at a
    time, renormalised by the total mass over all bins. ``g`` scalar or 1-d -> (K,) or (n, K)."""
    centres, width, sigma = ref_layout(v_min, v_max, num_bins, sigma_ratio)
    g = np.clip(np.asarray(g, np.float64), v_min, v_max)
    mass = np.empty((*g.shape, num_bins))
    for i, c in enumerate(centres):
        lo, hi = c - width / 2, c + width / 2
        # Integrate on the side of the mean where the tail is small, to keep float64 precision far from g.
        upper = stats.norm.sf(lo, loc=g, scale=sigma) - stats.norm.sf(hi, loc=g, scale=sigma)
        lower = stats.norm.cdf(hi, loc=g, scale=sigma) - stats.norm.cdf(lo, loc=g, scale=sigma)
        mass[..., i] = np.where(lo >= g, upper, lower)
    return mass / mass.sum(axis=-1, keepdims=True)


def random_targets(rng: np.random.Generator, v_min: float, v_max: float) -> np.ndarray:
    """16 targets (a fixed shape keeps JAX's compile cache warm): inside, anywhere, and at the boundaries."""
    span = v_max - v_min
    inside = rng.uniform(v_min, v_max, 6)
    outside = rng.uniform(v_min - 0.3 * span, v_max + 0.3 * span, 6)
    edges = np.array([v_min, v_max, v_min + 1e-3 * span, v_max - 1e-3 * span])
    return np.concatenate([inside, outside, edges]).astype(np.float32)


def test_reference_matches_quadrature():
    """Sanity check of the reference itself: cdf differences equal numerical integration of the pdf."""
    v_min, v_max, k = -1.0, 3.0, 11
    centres, width, sigma = ref_layout(v_min, v_max, k)
    g = 0.37
    quad = np.array([integrate.quad(stats.norm(g, sigma).pdf, c - width / 2, c + width / 2)[0] for c in centres])
    np.testing.assert_allclose(ref_probs(g, v_min, v_max, k), quad / quad.sum(), atol=1e-10)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout(layout):
    v_min, v_max, k = layout
    hl = make_hl(v_min, v_max, k)
    centres, width, sigma = ref_layout(v_min, v_max, k)
    np.testing.assert_allclose(np.asarray(hl.centres), centres, rtol=1e-6, atol=1e-5)
    edges = np.append(centres - width / 2, centres[-1] + width / 2)
    np.testing.assert_allclose(np.asarray(hl.edges), edges, rtol=1e-6, atol=1e-5)
    assert hl.sigma == pytest.approx(0.75 * width, rel=1e-9)
    assert hl.centres.shape == (k,) and hl.edges.shape == (k + 1,)


@pytest.mark.parametrize("layout", LAYOUTS)
@FEW
@given(seed=SEEDS)
def test_probs_match_bruteforce_reference(layout, seed):
    v_min, v_max, k = layout
    rng = np.random.default_rng(seed)
    targets = random_targets(rng, v_min, v_max)
    hl = make_hl(v_min, v_max, k)
    got = np.asarray(to_probs(hl, jnp.asarray(targets)), dtype=np.float64)
    assert got.shape == (targets.size, k)
    ref = ref_probs(targets, v_min, v_max, k)
    np.testing.assert_allclose(got, ref, atol=2e-6, rtol=1e-4)
    assert np.all(got >= -1e-7)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, atol=1e-5)


@FEW
@given(seed=SEEDS)
def test_probs_batch_shape(seed):
    """Arbitrary leading shapes (...) -> (..., K)."""
    rng = np.random.default_rng(seed)
    v_min, v_max, k = -5.0, 5.0, 41
    targets = rng.uniform(-7.0, 7.0, (3, 4)).astype(np.float32)
    got = np.asarray(to_probs(make_hl(v_min, v_max, k), jnp.asarray(targets)))
    assert got.shape == (3, 4, k)
    ref = ref_probs(targets.ravel(), v_min, v_max, k).reshape(3, 4, k)
    np.testing.assert_allclose(got, ref, atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize("layout", LAYOUTS)
@FEW
@given(seed=SEEDS)
def test_targets_outside_range_are_clipped(layout, seed):
    v_min, v_max, k = layout
    rng = np.random.default_rng(seed)
    span = v_max - v_min
    below = (v_min - rng.uniform(1e-3, 3.0, 8) * span).astype(np.float32)
    above = (v_max + rng.uniform(1e-3, 3.0, 8) * span).astype(np.float32)
    hl = make_hl(v_min, v_max, k)
    got = np.asarray(to_probs(hl, jnp.asarray(np.concatenate([below, above]))))
    got_below, got_above = got[:8], got[8:]
    ref_min, ref_max = ref_probs(v_min, v_min, v_max, k), ref_probs(v_max, v_min, v_max, k)
    np.testing.assert_allclose(got_below, np.broadcast_to(ref_min, got_below.shape), atol=2e-6, rtol=1e-4)
    np.testing.assert_allclose(got_above, np.broadcast_to(ref_max, got_above.shape), atol=2e-6, rtol=1e-4)
    # Identical to encoding the boundary itself.
    np.testing.assert_array_equal(got_below, np.broadcast_to(np.asarray(to_probs(hl, jnp.float32(v_min))), (8, k)))
    np.testing.assert_array_equal(got_above, np.broadcast_to(np.asarray(to_probs(hl, jnp.float32(v_max))), (8, k)))


@pytest.mark.parametrize("layout", LAYOUTS)
@FEW
@given(seed=SEEDS)
def test_decode_one_hot(layout, seed):
    v_min, v_max, k = layout
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, k, 8)
    logits = np.full((8, k), -5.0, np.float32) + rng.normal(0, 0.1, (8, k)).astype(np.float32)
    logits[np.arange(8), idx] = 60.0
    got = np.asarray(to_value(make_hl(v_min, v_max, k), jnp.asarray(logits)))
    centres, _, _ = ref_layout(v_min, v_max, k)
    np.testing.assert_allclose(got, centres[idx], atol=1e-5 * max(abs(v_min), abs(v_max), 1.0))


@pytest.mark.parametrize("layout", LAYOUTS)
@FEW
@given(seed=SEEDS)
def test_to_value_random_logits(layout, seed):
    v_min, v_max, k = layout
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (5, k))
    centres, _, _ = ref_layout(v_min, v_max, k)
    soft = np.exp(logits - logits.max(-1, keepdims=True))
    ref = (soft / soft.sum(-1, keepdims=True)) @ centres
    got = np.asarray(to_value(make_hl(v_min, v_max, k), jnp.asarray(logits, jnp.float32)))
    np.testing.assert_allclose(got, ref, atol=1e-5 * max(abs(v_min), abs(v_max), 1.0))


@pytest.mark.parametrize("layout", LAYOUTS)
@FEW
@given(seed=SEEDS)
def test_decode_projection_returns_truncated_mean(layout, seed):
    """to_value(log p(G)) is the mean of the truncated discretised Gaussian (reference computed from the
    reference probabilities); for interior G (>= 6 sigma from both ends) that mean is G up to a tiny
    discretisation error."""
    v_min, v_max, k = layout
    rng = np.random.default_rng(seed)
    centres, width, sigma = ref_layout(v_min, v_max, k)
    scale = max(abs(v_min), abs(v_max), 1.0)
    hl = make_hl(v_min, v_max, k)

    targets = random_targets(rng, v_min, v_max)
    ref_p = ref_probs(targets, v_min, v_max, k)
    ref_mean = ref_p @ centres
    # Decode the reference distribution and the code's own projection.
    from_ref = np.asarray(to_value(hl, jnp.asarray(np.log(np.maximum(ref_p, 1e-300)), jnp.float32)))
    from_code = np.asarray(to_value(hl, jnp.log(to_probs(hl, jnp.asarray(targets)))))
    np.testing.assert_allclose(from_ref, ref_mean, atol=1e-5 * scale)
    np.testing.assert_allclose(from_code, ref_mean, atol=1e-5 * scale)

    interior = rng.uniform(v_min + 6 * sigma, v_max - 6 * sigma, 16)
    ref_int = ref_probs(interior, v_min, v_max, k) @ centres
    assert np.max(np.abs(ref_int - interior)) < 1e-4 * width
    got_int = np.asarray(to_value(hl, jnp.log(to_probs(hl, jnp.asarray(interior, jnp.float32)))))
    np.testing.assert_allclose(got_int, interior, atol=1e-4 * width + 1e-5 * scale)


def test_boundary_decoding_is_biased_inward():
    """At the boundaries the truncated mean lies strictly inside the range (truncation bias)."""
    v_min, v_max, k = 0.0, 150.0, 151
    hl = make_hl(v_min, v_max, k)
    centres, _, _ = ref_layout(v_min, v_max, k)
    lo = float(to_value(hl, jnp.log(to_probs(hl, jnp.float32(v_min)))))
    hi = float(to_value(hl, jnp.log(to_probs(hl, jnp.float32(v_max)))))
    assert lo == pytest.approx(ref_probs(v_min, v_min, v_max, k) @ centres, abs=1e-4)
    assert hi == pytest.approx(ref_probs(v_max, v_min, v_max, k) @ centres, abs=1e-4)
    assert v_min < lo < v_min + 1.0 and v_max - 1.0 < hi < v_max


@pytest.mark.parametrize("layout", LAYOUTS)
@FEW
@given(seed=SEEDS)
def test_clipped_fraction(layout, seed):
    v_min, v_max, k = layout
    rng = np.random.default_rng(seed)
    span = v_max - v_min
    # A random number of targets outside the range, at random positions (fixed array size for speed).
    targets = rng.uniform(v_min, v_max, 126)
    n_out = int(rng.integers(0, 127))
    pos = rng.choice(126, n_out, replace=False)
    targets[pos] = np.where(
        rng.random(n_out) < 0.5,
        v_min - rng.uniform(1e-4, 1.0, n_out) * span,
        v_max + rng.uniform(1e-4, 1.0, n_out) * span,
    )
    targets = targets.astype(np.float32)
    # Exact boundaries are inside the range (not clipped).
    targets = np.concatenate([targets, np.array([v_min, v_max], np.float32)])
    ref = np.count_nonzero((targets < v_min) | (targets > v_max)) / targets.size
    got = float(clipped_fraction(make_hl(v_min, v_max, k), jnp.asarray(targets)))
    assert got == pytest.approx(ref, abs=1e-6)


value_logit_grad = jax.jit(lambda hl, logits: hl.value_logit_grad(logits))


def ref_value(logits: np.ndarray, centres: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    return p @ centres


@pytest.mark.parametrize("layout", LAYOUTS)
@FEW
@given(seed=SEEDS)
def test_value_logit_grad_matches_finite_differences(layout, seed):
    """dQ/dl_j against float64 central differences of Q(l) = softmax(l) . z, logits spread (std 3) or peaked."""
    rng = np.random.default_rng(seed)
    centres, _, _ = ref_layout(*layout)
    logits = rng.normal(0.0, 3.0, (4, layout[2]))
    logits[1, rng.integers(layout[2])] += 40.0  # nearly one-hot (others below e^-20 of it): a saturated head
    got = np.asarray(value_logit_grad(make_hl(*layout), jnp.asarray(logits, jnp.float32)))
    h = 1e-5
    ref = np.empty_like(logits)
    for j in range(layout[2]):
        step = np.zeros(layout[2])
        step[j] = h
        ref[:, j] = (ref_value(logits + step, centres) - ref_value(logits - step, centres)) / (2 * h)
    scale = layout[1] - layout[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6 * scale)
    assert np.abs(got[1]).max() < 1e-3 * np.abs(got[0]).max()  # the saturated row gets almost no gradient


def test_head_saturation_at_initialisation():
    """The initial logits 40 p(0) (nets.ZERO_VALUE_LOGIT_SCALE) on the DM Control layout put the mass on the bins
    next to Q = 0: max |dQ/dl| is the closed form max_j p_j |z_j - Q| of that softmax, far below a uniform
    softmax's (v_max - v_min) / (2 K_b) x (1 - 1/K_b)."""
    from reppo.nets import ZERO_VALUE_LOGIT_SCALE

    hl = make_hl(0.0, 150.0, 151)
    centres, _, _ = ref_layout(0.0, 150.0, 151)
    logits = ZERO_VALUE_LOGIT_SCALE * ref_probs(0.0, 0.0, 150.0, 151)
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    closed_form = np.max(p * np.abs(centres - p @ centres))
    got = float(np.abs(np.asarray(value_logit_grad(hl, jnp.asarray(logits, jnp.float32)))).max())
    assert got == pytest.approx(closed_form, rel=1e-4)
    uniform = float(np.abs(np.asarray(value_logit_grad(hl, jnp.zeros(151)))).max())
    assert uniform == pytest.approx(75.0 / 151.0, rel=1e-5) and got < 0.5 * uniform
