"""The run comparison of ``tests/closeness.py`` passes rounding-sized differences and fails update-sized ones."""

from __future__ import annotations

import numpy as np
import pytest
from closeness import EPS32, assert_same_run


def _tree(rng):
    return {
        "w": rng.normal(size=(17, 5)).astype(np.float32),
        "scale": np.ones(9, np.float32),
        "count": np.asarray(rng.integers(100), np.int32),
    }


def test_rounding_passes_and_update_sized_differences_fail():
    rng = np.random.default_rng()
    start = _tree(rng)
    # w moves, scale does not (a frozen leaf), count is an integer
    update = {"w": rng.normal(size=(17, 5)).astype(np.float32) * 1e-2, "scale": np.float32(0), "count": 0}
    want = {k: (start[k] + update[k]).astype(start[k].dtype) for k in start}
    ulp = lambda x: (x * (1 + rng.choice([-2, 0, 2], size=x.shape) * EPS32)).astype(np.float32)
    assert_same_run({k: ulp(v) if k != "count" else v for k, v in want.items()}, want, start)
    # one element off by 1% of the update's norm: fails
    bad = {k: v.copy() for k, v in want.items()}
    bad["w"][rng.integers(17), rng.integers(5)] += 0.01 * np.linalg.norm(update["w"])
    with pytest.raises(AssertionError, match=r"\['w'\]"):
        assert_same_run(bad, want, start)
    # a leaf that did not move must stay within a few ulps of its size
    still = {k: v.copy() for k, v in want.items()}
    still["scale"] = still["scale"] + 1e-5
    with pytest.raises(AssertionError, match=r"\['scale'\]"):
        assert_same_run(still, want, start)
    # integers (keys, counters) must be equal
    with pytest.raises(AssertionError, match="integer leaf differs"):
        assert_same_run({**want, "count": want["count"] + 1}, want, start)
