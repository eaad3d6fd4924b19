"""One comparison for two runs of the same computation compiled as different programs (1 vs 2 devices, one vs two
processes, a scan vs a loop of steps, the fused vs the host rollout path).

Why not an elementwise tolerance. Such programs add the same numbers in another order, so they differ by float32
rounding from the first iteration on, and XLA compiles for the instruction set it finds, so by how much depends on
the processor. Adam then amplifies the difference where it is largest relative to the signal: an element whose
gradient is close to 0 (the HL-Gauss head's far bins) takes a step of ``lr * m / sqrt(v)`` whose sign rounding
decides. An elementwise bound of 1e-4 relative / 1e-5 absolute held on one Intel Xeon and failed on an AMD EPYC
(3 of 4,832 elements of the critic's output kernel, 2.0e-5 apart after 4 iterations).

What is compared instead. Integer leaves (PRNG keys, counters, reset-pool indices) must be equal. Each float leaf
must satisfy ``||got - want|| <= rtol * ||want - start|| + ulps * eps32 * ||want||`` (2-norms over the leaf): its
difference is small next to the distance the run moved it from the common ``start``, plus a few float32 units in
the last place of its size for leaves that barely move (a LayerNorm scale near 1 that moved by 5e-3 differs by one
ulp, 1.2e-7, a ratio of 2e-5 to its movement). A real fault (gradients or statistics taken from one device's half
of the batch, another shuffle, a missed minibatch) moves the state by the order of the update itself, a ratio near 1.

Measured on CartpoleBalance (``tests/test_parallel.py``'s config), 1 vs 2 devices, on a 2-core AMD EPYC (family 25,
model 17): the largest ratio over all leaves is 2.2e-5 after 1 iteration, 1.9e-5 after 4 and 6.4e-5 after 8 (the
critic's output layer). The default ``rtol`` 1e-3 leaves a factor of 50 at 4 iterations for other processors.
"""

from __future__ import annotations

import jax
import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def _leaves(tree) -> list[tuple[str, np.ndarray]]:
    return [(jax.tree_util.keystr(path), np.asarray(x)) for path, x in jax.tree_util.tree_leaves_with_path(tree)]


def run_distance(got, want, start) -> list[tuple[float, str]]:
    """(ratio of the difference to the allowance at rtol = 1, leaf name) for every float leaf, largest first;
    integer leaves that differ raise AssertionError."""
    rows = []
    for (name, g), (_, w), (_, s) in zip(_leaves(got), _leaves(want), _leaves(start), strict=True):
        assert g.shape == w.shape == s.shape, f"{name}: shapes {g.shape}, {w.shape}, {s.shape}"
        if not np.issubdtype(w.dtype, np.floating):
            assert np.array_equal(g, w), f"{name}: integer leaf differs"
            continue
        g, w, s = (x.astype(np.float64) for x in (g, w, s))
        diff = np.linalg.norm(g - w)
        moved = np.linalg.norm(w - s)
        rows.append((diff / moved if moved else (0.0 if diff == 0 else np.inf), diff, moved, np.linalg.norm(w), name))
    return sorted(rows, key=lambda r: -r[0])


def assert_same_run(got, want, start, rtol: float = 1e-3, ulps: float = 8.0) -> None:
    """``got`` and ``want`` (pytrees of one structure) are the same run from ``start`` up to float summation
    order, in the sense of the module docstring."""
    for ratio, diff, moved, size, name in run_distance(got, want, start):
        allowed = rtol * moved + ulps * EPS32 * size
        assert diff <= allowed, (
            f"{name}: |got - want| = {diff:.3e} > {allowed:.3e} (rtol {rtol:g} x moved {moved:.3e} + {ulps:g} ulps "
            f"of |want| {size:.3e}); ratio to the movement {ratio:.2e}"
        )
